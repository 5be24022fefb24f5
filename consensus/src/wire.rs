//! Payloads of the gossip and sync channels of the peer protocol (the consensus channel carries
//! [`crate::Message`] bytes): what a node's host decodes from untrusted peers, and sends.
//!
//! ```text
//! Gossip = n u32 (1..=GOSSIP_TXS_MAX) | n × (len u32 | SignedTransaction)
//! Sync   = 0x00 height u64                               ledger request
//!        | 0x01 CommittedLedger                          ledger
//!        | 0x02 n u32 (1..=FETCH_IDS_MAX) | n × id [32]  body request
//!        | 0x03 Gossip                                   bodies
//!        | 0x04 Equivocation                             a proof a validator found
//!        | 0x05 height u64 | first_kept u64              not kept (pruned)
//!        | 0x06 height u64 | record u32                  snapshot record request (height 0:
//!                                                        the latest snapshot's)
//!        | 0x07 height u64 | record u32 | records u32 | len u32 | bytes
//!                                                        a snapshot record (docs/PROTOCOL.md §4.15)
//!        | 0x08                                          no such snapshot (none, or replaced)
//! ```

use engine::{
    CodecError, Decode, Encode, Hash,
    codec::{Reader, decode_exact, put_count_u32},
    limits::TX_BYTES_MAX,
    tx::{SignedTransaction, TxId},
};

use crate::{chain::CommittedLedger, evidence::Equivocation};

/// Transactions per gossip frame (64 KiB-ish frames at typical sizes, far below the 4 MiB cap
/// even at the largest transactions: 64 × 32 KiB = 2 MiB).
pub const GOSSIP_TXS_MAX: usize = 64;
/// Ids per body request.
pub const FETCH_IDS_MAX: usize = 4096;

/// Encodes a batch of transactions (each encoded in place behind its length).
pub fn encode_txs(txs: &[SignedTransaction]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + txs.len() * 300);
    out.extend_from_slice(&(txs.len() as u32).to_le_bytes());
    for tx in txs {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        tx.encode(&mut out);
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    out
}

/// Appends a batch of transaction bytes in the layout of [`encode_txs`].
pub fn put_bodies<'a>(bodies: impl ExactSizeIterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    out.extend_from_slice(&(bodies.len() as u32).to_le_bytes());
    for b in bodies {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
}

/// Decodes a batch of transactions, keeping each one's bytes (for its id) — at most `max`.
pub fn decode_txs(r: &mut Reader<'_>, max: usize) -> Result<Vec<Vec<u8>>, CodecError> {
    let n = r.count_u32("gossip transactions", 1, max)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.count_u32("transaction length", 1, TX_BYTES_MAX)?;
        out.push(r.take(len, "transaction")?.to_vec());
    }
    Ok(out)
}

/// The height a sync payload asks for, if it is a ledger request (read without decoding the
/// rest: the connection's server takes these before the host sees them).
pub fn ledger_request(payload: &[u8]) -> Option<u64> {
    match payload {
        [0, rest @ ..] if rest.len() == 8 => rest.try_into().ok().map(u64::from_le_bytes),
        _ => None,
    }
}

/// A sync-channel message.
#[derive(Debug)]
pub enum SyncMessage {
    /// Send me the ledger at this height.
    LedgerRequest(u64),
    /// A committed ledger.
    Ledger(Box<CommittedLedger>),
    /// Send me these transaction bodies.
    Fetch(Vec<TxId>),
    /// Transaction bodies (undecoded; verified by the receiver).
    Bodies(Vec<Vec<u8>>),
    /// An equivocation proof a validator found, pushed to the nodes and explorers that keep and
    /// serve evidence.
    Evidence(Box<Equivocation>),
    /// The answer to a request for a ledger this peer's store no longer keeps (it prunes): it
    /// keeps genesis and the ledgers from `first_kept` on. Ask another peer, or an archive.
    NotKept {
        /// The height asked for.
        height: u64,
        /// The lowest height above 0 it keeps.
        first_kept: u64,
    },
    /// Send me record `record` of your snapshot of `height` (0: of your latest snapshot).
    SnapshotRequest {
        /// The snapshot's height, or 0.
        height: u64,
        /// The record's index in the file.
        record: u32,
    },
    /// One record of a state snapshot (the file's record, checked by the receiver against the
    /// chain when the whole file is restored).
    SnapshotRecord {
        /// The snapshot's height.
        height: u64,
        /// The record's index.
        record: u32,
        /// How many records the file holds.
        records: u32,
        /// The record's bytes.
        bytes: Vec<u8>,
    },
    /// The answer to a snapshot request this peer cannot serve: it has no snapshot, not of that
    /// height (replaced by a newer one), or not that record.
    NoSnapshot,
}

/// The height and record a sync payload asks for, if it is a snapshot request (read without
/// decoding the rest: the connection's server takes these before the host sees them).
pub fn snapshot_request(payload: &[u8]) -> Option<(u64, u32)> {
    match payload {
        [6, rest @ ..] if rest.len() == 12 => {
            let (height, record) = rest.split_at(8);
            Some((u64::from_le_bytes(height.try_into().ok()?), u32::from_le_bytes(record.try_into().ok()?)))
        }
        _ => None,
    }
}

impl SyncMessage {
    /// The bytes of `Ledger(l)`, made from a borrowed ledger.
    pub fn encode_ledger(l: &CommittedLedger) -> Vec<u8> {
        let mut out = vec![1];
        l.encode(&mut out);
        out
    }

    /// The message's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::LedgerRequest(h) => {
                out.push(0);
                out.extend_from_slice(&h.to_le_bytes());
            }
            Self::Ledger(l) => return Self::encode_ledger(l),
            Self::Fetch(ids) => {
                out.push(2);
                out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
                for id in ids {
                    out.extend_from_slice(&id.0);
                }
            }
            Self::Bodies(bodies) => {
                out.push(3);
                put_bodies(bodies.iter().map(Vec::as_slice), &mut out);
            }
            Self::Evidence(proof) => {
                out.push(4);
                proof.encode(&mut out);
            }
            Self::NotKept { height, first_kept } => {
                out.push(5);
                out.extend_from_slice(&height.to_le_bytes());
                out.extend_from_slice(&first_kept.to_le_bytes());
            }
            Self::SnapshotRequest { height, record } => {
                out.push(6);
                out.extend_from_slice(&height.to_le_bytes());
                out.extend_from_slice(&record.to_le_bytes());
            }
            Self::SnapshotRecord { height, record, records, bytes } => {
                out.push(7);
                out.extend_from_slice(&height.to_le_bytes());
                out.extend_from_slice(&record.to_le_bytes());
                out.extend_from_slice(&records.to_le_bytes());
                put_count_u32(&mut out, bytes.len());
                out.extend_from_slice(bytes);
            }
            Self::NoSnapshot => out.push(8),
        }
        out
    }

    /// Decodes a whole payload (every count checked before allocating; trailing bytes refused).
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        let msg = match r.u8("sync tag")? {
            0 => Self::LedgerRequest(r.u64("height")?),
            1 => {
                let rest = r.take(r.remaining(), "ledger")?;
                return Ok(Self::Ledger(Box::new(decode_exact::<CommittedLedger>(rest)?)));
            }
            2 => {
                let n = r.count_u32("fetch ids", 1, FETCH_IDS_MAX)?;
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(Hash::decode(&mut r)?);
                }
                Self::Fetch(ids)
            }
            3 => Self::Bodies(decode_txs(&mut r, FETCH_IDS_MAX)?),
            4 => Self::Evidence(Box::new(Equivocation::decode(&mut r)?)),
            5 => Self::NotKept { height: r.u64("height")?, first_kept: r.u64("first kept height")? },
            6 => Self::SnapshotRequest { height: r.u64("height")?, record: r.u32("record")? },
            7 => {
                let (height, record, records) = (r.u64("height")?, r.u32("record")?, r.u32("records")?);
                let n = r.count_u32("record bytes", 0, r.remaining())?;
                Self::SnapshotRecord { height, record, records, bytes: r.take(n, "record bytes")?.to_vec() }
            }
            8 => Self::NoSnapshot,
            tag => return Err(CodecError::UnknownTag { what: "sync tag", tag }),
        };
        r.finish()?;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gossip_batches_round_trip_with_each_transaction_encoded_in_place() {
        let w = bench::workload::workload(3, 3);
        let txs: Vec<SignedTransaction> = (0..3)
            .map(|j| decode_exact(&bench::workload::transfer_bytes(&w, j, 3, 60_000)).unwrap())
            .collect();
        let bytes: Vec<Vec<u8>> = txs.iter().map(Encode::to_bytes).collect();
        let encoded = encode_txs(&txs);
        assert_eq!(decode_txs(&mut Reader::new(&encoded), GOSSIP_TXS_MAX).unwrap(), bytes);
        let mut raw = Vec::new();
        put_bodies(bytes.iter().map(Vec::as_slice), &mut raw);
        assert_eq!(raw, encoded, "one layout for transactions and raw bodies");
        assert!(decode_txs(&mut Reader::new(&encoded), 2).is_err(), "more than the limit");
    }

    #[test]
    fn sync_messages_round_trip_and_garbage_is_an_error() {
        for m in [
            SyncMessage::LedgerRequest(7),
            SyncMessage::Fetch(vec![Hash([1; 32])]),
            SyncMessage::Bodies(vec![vec![1, 2, 3]]),
            SyncMessage::NotKept { height: 3, first_kept: 90 },
            SyncMessage::SnapshotRequest { height: 0, record: 7 },
            SyncMessage::SnapshotRecord { height: 9, record: 1, records: 4, bytes: vec![1, 2, 3] },
            SyncMessage::NoSnapshot,
        ] {
            let bytes = m.encode();
            assert_eq!(SyncMessage::decode(&bytes).unwrap().encode(), bytes);
        }
        assert_eq!(
            snapshot_request(&SyncMessage::SnapshotRequest { height: 5, record: 2 }.encode()),
            Some((5, 2))
        );
        assert_eq!(snapshot_request(&SyncMessage::LedgerRequest(5).encode()), None);
        for garbage in [
            &[][..],
            &[9],
            &[2, 0, 0, 0, 0],
            &[2, 255, 255, 255, 255],
            &[0, 1],
            &[5, 1, 0, 0, 0, 0, 0, 0, 0],
            &[6, 1, 0],
            &[7, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 1],
            &[8, 0],
        ] {
            assert!(SyncMessage::decode(garbage).is_err(), "{garbage:?}");
        }
    }
}
