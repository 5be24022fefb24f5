//! The canonical encoding of [`Input`]s and of the other records of a host's write-ahead log.
//!
//! ```text
//! WalRecord = Input
//!           | 0x10 n u32 | n × SignedTransaction                 the bodies of a value
//!           | 0x11 n u8 (1..=16) | n × digest [32]               messages about to be sent
//!
//! Input = 0x00 height u64 | ValidatorSet                       Start
//!       | 0x01 from u32 | Message                              Message
//!       | 0x02 kind u8 | height u64 | round u32                Timeout
//!       | 0x03 height u64 | value [32] | valid u8 | timely u8  Checked
//!       | 0x04 height u64 | round u32 | Value                  Proposed
//!       | 0x05 height u64 | round u32 | flag u8 (| round u32 | id [32])                 Resume
//!              | flag u8 (| SignedProposal | n u8 | n × SignedVote)      (locked; valid value, POL)
//! ```

use std::sync::Arc;

use engine::{
    CodecError, Decode, Encode, Hash,
    codec::{Reader, put_count_u8, put_count_u32},
    ledger::ValidatorSet,
    limits::{BLOCK_TXS_MAX, VALIDATORS_MAX},
    tx::SignedTransaction,
    validate::VerifiedTx,
};

use crate::{
    core::{Input, Pol, Timeout, TimeoutKind},
    message::{Message, SignedProposal, Value},
};

/// A record of the write-ahead log.
// Inputs are the records written one at a time (a boxed one would cost an allocation each);
// only a log read back at start is held as a whole, and it is bounded.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum WalRecord {
    /// An input of the core, in the order it was handled.
    Input(Input),
    /// The transactions of a value this validator judged valid or built, logged before its
    /// verdict: a validator that voted for a value can commit it (and serve it) after a
    /// restart, even if every pool that held the bodies was lost with its process.
    Bodies(Bodies),
    /// Digests of the messages this validator is about to send (logged, and synced, before
    /// they leave): what a replay may send again. A message the signing state held back is
    /// rebuilt by a replay too, and is not among them.
    Sent(Vec<Hash>),
}

/// Verified transactions of an executed value in block order, shared by reference counts.
pub type SharedTxs = Arc<Vec<Arc<VerifiedTx>>>;

/// The transactions of a `Bodies` record: those of an executed value, shared with it and with
/// the pool (logging them copies nothing), or those read back from the log.
#[derive(Clone, Debug)]
pub enum Bodies {
    /// Verified transactions of an executed value, in block order.
    Shared(SharedTxs),
    /// Read back from the log (not verified: the pool takes them only once verified again).
    Read(Vec<SignedTransaction>),
}

impl Bodies {
    /// How many transactions.
    pub fn len(&self) -> usize {
        match self {
            Self::Shared(txs) => txs.len(),
            Self::Read(txs) => txs.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` on each transaction, in order.
    pub fn for_each(&self, mut f: impl FnMut(&SignedTransaction)) {
        match self {
            Self::Shared(txs) => txs.iter().for_each(|v| f(&v.tx)),
            Self::Read(txs) => txs.iter().for_each(f),
        }
    }

    /// The transactions, owned (those shared are copied).
    pub fn into_transactions(self) -> Vec<SignedTransaction> {
        match self {
            Self::Shared(txs) => txs.iter().map(|v| v.tx.clone()).collect(),
            Self::Read(txs) => txs,
        }
    }
}

const BODIES: u8 = 0x10;
const SENT: u8 = 0x11;
/// Digests per `Sent` record (a batch of effects signs a proposal and two votes at most).
pub(crate) const SENT_PER_RECORD_MAX: usize = 16;

impl Encode for WalRecord {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Input(i) => i.encode(out),
            Self::Bodies(txs) => {
                out.push(BODIES);
                put_count_u32(out, txs.len());
                txs.for_each(|tx| tx.encode(out));
            }
            Self::Sent(digests) => {
                out.push(SENT);
                let digests = &digests[..digests.len().min(SENT_PER_RECORD_MAX)];
                put_count_u8(out, digests.len());
                for d in digests {
                    out.extend_from_slice(&d.0);
                }
            }
        }
    }
}

impl Decode for WalRecord {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        if r.peek_u8() == Some(BODIES) {
            r.u8("record tag")?;
            let n = r.count_u32("logged bodies", 0, BLOCK_TXS_MAX)?;
            let mut txs = Vec::with_capacity(n.min(r.remaining() / 64));
            for _ in 0..n {
                txs.push(SignedTransaction::decode(r)?);
            }
            return Ok(Self::Bodies(Bodies::Read(txs)));
        }
        if r.peek_u8() == Some(SENT) {
            r.u8("record tag")?;
            let n = r.count_u8("sent digests", 1, SENT_PER_RECORD_MAX)?;
            return Ok(Self::Sent(r.items(n)?));
        }
        Input::decode(r).map(Self::Input)
    }
}

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
            Self::Resume { height, round, locked, valid } => {
                out.push(5);
                out.extend_from_slice(&height.to_le_bytes());
                out.extend_from_slice(&round.to_le_bytes());
                match locked {
                    None => out.push(0),
                    Some((r, id)) => {
                        out.push(1);
                        out.extend_from_slice(&r.to_le_bytes());
                        out.extend_from_slice(&id.0);
                    }
                }
                match valid {
                    None => out.push(0),
                    Some(pol) => {
                        out.push(1);
                        pol.proposal.encode(out);
                        put_count_u8(out, pol.prevotes.len());
                        for v in &pol.prevotes {
                            v.encode(out);
                        }
                    }
                }
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
            5 => {
                let (height, round) = (r.u64("height")?, r.u32("round")?);
                let locked = match r.u8("locked flag")? {
                    0 => None,
                    1 => Some((r.u32("locked round")?, Hash::decode(r)?)),
                    tag => return Err(CodecError::UnknownTag { what: "locked flag", tag }),
                };
                let valid = match r.u8("valid flag")? {
                    0 => None,
                    1 => {
                        let proposal = SignedProposal::decode(r)?;
                        let n = r.count_u8("proof-of-lock prevotes", 0, VALIDATORS_MAX)?;
                        Some(Box::new(Pol { proposal, prevotes: r.items(n)? }))
                    }
                    tag => return Err(CodecError::UnknownTag { what: "valid flag", tag }),
                };
                Self::Resume { height, round, locked, valid }
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
            Input::Proposed { height: 4, round: 1, value: value.clone() },
            Input::Resume { height: 4, round: 3, locked: None, valid: None },
            Input::Resume {
                height: 4,
                round: 3,
                locked: Some((1, Hash([6; 32]))),
                valid: Some(Box::new(Pol {
                    proposal: crate::message::Proposal { height: 4, round: 1, valid_round: None, value }
                        .sign("c", 0, &key),
                    prevotes: vec![crate::message::SignedVote::sign(
                        engine::ledger::Vote {
                            kind: engine::ledger::VoteKind::Prevote,
                            height: 4,
                            round: 1,
                            value: Some(Hash([6; 32])),
                        },
                        "c",
                        0,
                        &key,
                    )],
                })),
            },
        ];
        for input in inputs {
            let bytes = input.to_bytes();
            assert_eq!(decode_exact::<Input>(&bytes).unwrap().to_bytes(), bytes);
        }
        assert!(decode_exact::<Input>(&[9]).is_err());
        let sent = WalRecord::Sent(vec![Hash([1; 32]), Hash([2; 32])]);
        let bytes = sent.to_bytes();
        assert!(matches!(decode_exact::<WalRecord>(&bytes), Ok(WalRecord::Sent(d)) if d.len() == 2));
        assert!(decode_exact::<WalRecord>(&[0x11, 0]).is_err(), "an empty Sent record");
    }
}
