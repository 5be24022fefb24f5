//! The canonical encoding of [`Input`]s, for a host's write-ahead log.
//!
//! ```text
//! Input = 0x00 height u64 | ValidatorSet                       Start
//!       | 0x01 from u32 | Message                              Message
//!       | 0x02 kind u8 | height u64 | round u32                Timeout
//!       | 0x03 height u64 | value [32] | valid u8 | timely u8  Checked
//!       | 0x04 height u64 | round u32 | Value                  Proposed
//! ```

use engine::{CodecError, Decode, Encode, Hash, codec::Reader, ledger::ValidatorSet};

use crate::{
    core::{Input, Timeout, TimeoutKind},
    message::{Message, Value},
};

impl Encode for Input {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Start { height, validators } => {
                out.push(0);
                out.extend_from_slice(&height.to_le_bytes());
                validators.encode(out);
            }
            Self::Message { from, message } => {
                out.push(1);
                out.extend_from_slice(&from.to_le_bytes());
                message.encode(out);
            }
            Self::Timeout(t) => {
                out.push(2);
                out.push(match t.kind {
                    TimeoutKind::Propose => 0,
                    TimeoutKind::Prevote => 1,
                    TimeoutKind::Precommit => 2,
                    TimeoutKind::Rebroadcast => 3,
                });
                out.extend_from_slice(&t.height.to_le_bytes());
                out.extend_from_slice(&t.round.to_le_bytes());
            }
            Self::Checked { height, value, valid, timely } => {
                out.push(3);
                out.extend_from_slice(&height.to_le_bytes());
                out.extend_from_slice(&value.0);
                out.push(u8::from(*valid));
                out.push(u8::from(*timely));
            }
            Self::Proposed { height, round, value } => {
                out.push(4);
                out.extend_from_slice(&height.to_le_bytes());
                out.extend_from_slice(&round.to_le_bytes());
                value.encode(out);
            }
        }
    }
}

impl Decode for Input {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(match r.u8("input tag")? {
            0 => Self::Start { height: r.u64("height")?, validators: ValidatorSet::decode(r)? },
            1 => Self::Message { from: r.u32("peer")?, message: Message::decode(r)? },
            2 => {
                let kind = match r.u8("timeout kind")? {
                    0 => TimeoutKind::Propose,
                    1 => TimeoutKind::Prevote,
                    2 => TimeoutKind::Precommit,
                    3 => TimeoutKind::Rebroadcast,
                    tag => return Err(CodecError::UnknownTag { what: "timeout kind", tag }),
                };
                Self::Timeout(Timeout { kind, height: r.u64("height")?, round: r.u32("round")? })
            }
            3 => Self::Checked {
                height: r.u64("height")?,
                value: Hash::decode(r)?,
                valid: r.bool("valid")?,
                timely: r.bool("timely")?,
            },
            4 => {
                Self::Proposed { height: r.u64("height")?, round: r.u32("round")?, value: Value::decode(r)? }
            }
            tag => return Err(CodecError::UnknownTag { what: "input tag", tag }),
        })
    }
}

#[cfg(test)]
mod tests {
    use engine::{
        SecretKey,
        codec::decode_exact,
        ledger::{LEDGER_VERSION, LedgerHeader, Validator},
        merkle::tx_root,
    };

    use super::*;

    #[test]
    fn inputs_round_trip() {
        let key = SecretKey::from_bytes(&[3; 32]).unwrap();
        let set = ValidatorSet::new(vec![Validator { public_key: key.public_key(), weight: 2 }]).unwrap();
        let header = LedgerHeader {
            version: LEDGER_VERSION,
            height: 4,
            timestamp_ms: 9,
            previous: Hash([1; 32]),
            tx_root: tx_root(&[]),
            state_root: Hash([2; 32]),
            validator_set_hash: Hash([3; 32]),
        };
        let value = Value { header, tx_ids: vec![] };
        let proposal =
            crate::message::Proposal { height: 4, round: 1, valid_round: None, value: value.clone() };
        let inputs = [
            Input::Start { height: 4, validators: set },
            Input::Message { from: 7, message: Message::Proposal(proposal.sign("c", 0, &key)) },
            Input::Timeout(Timeout { kind: TimeoutKind::Rebroadcast, height: 4, round: 2 }),
            Input::Checked { height: 4, value: Hash([5; 32]), valid: true, timely: false },
            Input::Proposed { height: 4, round: 1, value },
        ];
        for input in inputs {
            let bytes = input.to_bytes();
            assert_eq!(decode_exact::<Input>(&bytes).unwrap().to_bytes(), bytes);
        }
        assert!(decode_exact::<Input>(&[9]).is_err());
    }
}
