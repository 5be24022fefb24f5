//! The signing state on disk ([`consensus::SignState`]): `data_dir/signer.state`, two slots of
//! 512 bytes written in turn, each `seq u64 | len u16 | state | check [8]` (`check` the first
//! bytes of BLAKE3 over what precedes it). A write goes to the older slot and is made durable
//! (`fdatasync`) before any signature it covers leaves the process; a write torn by a power
//! loss leaves the other slot, the state before it, which covered everything sent. Reading
//! takes the valid slot with the higher sequence; a file with no valid slot (both damaged) is
//! an error the operator must look at, never a reason to sign afresh.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    path::Path,
};

use anyhow::{Context, bail};
use consensus::SignState;
use engine::{Encode, codec::decode_exact};

const SLOT_BYTES: usize = 512;

// The largest state (a lock and two votes) and its framing fit a slot.
const _: () = assert!(
    8 + 2 + (1 + 8 + 4 + 1 + 32 + 1 + 4 + 32 + 1 + consensus::SIGN_STATE_VOTES_MAX * 115) + 8 <= SLOT_BYTES
);
const FILE_NAME: &str = "signer.state";

#[derive(Debug)]
pub struct SignerFile {
    file: File,
    seq: u64,
}

fn check(bytes: &[u8]) -> [u8; 8] {
    let h = blake3::hash(bytes);
    let mut out = [0; 8];
    out.copy_from_slice(&h.as_bytes()[..8]);
    out
}

/// The state in a slot, if the slot is valid.
fn read_slot(slot: &[u8]) -> Option<(u64, SignState)> {
    let seq = u64::from_le_bytes(slot.get(..8)?.try_into().ok()?);
    let len = usize::from(u16::from_le_bytes(slot.get(8..10)?.try_into().ok()?));
    let body = slot.get(10..10 + len)?;
    let sum = slot.get(10 + len..18 + len)?;
    if seq == 0 || check(&slot[..10 + len]) != sum {
        return None;
    }
    decode_exact::<SignState>(body).ok().map(|s| (seq, s))
}

impl SignerFile {
    /// Opens (or creates) the signing state of `dir`; returns it and the state it holds.
    pub fn open(dir: &Path) -> anyhow::Result<(Self, Option<SignState>)> {
        let path = dir.join(FILE_NAME);
        let exists = path.exists();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if !exists {
            file.write_all(&[0; 2 * SLOT_BYTES])?;
            file.sync_all()?;
            crate::wal::sync_dir(&path)?;
            return Ok((Self { file, seq: 0 }, None));
        }
        let mut bytes = Vec::new();
        (&mut file).take(2 * SLOT_BYTES as u64 + 1).read_to_end(&mut bytes)?;
        if bytes.len() != 2 * SLOT_BYTES {
            bail!(
                "{} is {} bytes, not {}: look at it before this validator signs again",
                path.display(),
                bytes.len(),
                2 * SLOT_BYTES
            );
        }
        let slots = [read_slot(&bytes[..SLOT_BYTES]), read_slot(&bytes[SLOT_BYTES..])];
        let newest = slots.into_iter().flatten().max_by_key(|(seq, _)| *seq);
        match newest {
            Some((seq, state)) => Ok((Self { file, seq }, Some(state))),
            None if bytes.iter().all(|b| *b == 0) => Ok((Self { file, seq: 0 }, None)),
            None => bail!(
                "{} holds no valid signing state: both copies are damaged; look at it before this validator signs again",
                path.display()
            ),
        }
    }

    /// Persists `state` durably, in the slot the last write did not use.
    pub fn save(&mut self, state: &SignState) -> anyhow::Result<()> {
        let seq = self.seq + 1;
        let body = state.to_bytes();
        let mut slot = Vec::with_capacity(SLOT_BYTES);
        slot.extend_from_slice(&seq.to_le_bytes());
        slot.extend_from_slice(&(body.len() as u16).to_le_bytes());
        slot.extend_from_slice(&body);
        let sum = check(&slot);
        slot.extend_from_slice(&sum);
        if slot.len() > SLOT_BYTES {
            bail!("a signing state of {} bytes does not fit its {SLOT_BYTES}-byte slot", slot.len());
        }
        slot.resize(SLOT_BYTES, 0);
        let at = (seq % 2) * SLOT_BYTES as u64;
        self.file.seek(SeekFrom::Start(at))?;
        self.file.write_all(&slot)?;
        self.file.sync_data().context("syncing the signing state")?;
        self.seq = seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use consensus::Slot;
    use engine::Hash;

    use super::*;

    fn state(round: u32) -> SignState {
        SignState {
            slot: Slot { height: 5, round, step: 1 },
            digest: Hash([round as u8; 32]),
            locked: Some((0, Hash([9; 32]))),
            votes: vec![],
            commit: None,
        }
    }

    #[test]
    fn the_newest_valid_copy_is_read_and_a_torn_write_leaves_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let (mut f, s) = SignerFile::open(dir.path()).unwrap();
        assert_eq!(s, None);
        for r in 1..=3 {
            f.save(&state(r)).unwrap();
        }
        drop(f);
        assert_eq!(SignerFile::open(dir.path()).unwrap().1, Some(state(3)));
        // The last write (seq 3, slot 1) torn: the copy before it is read.
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT_BYTES + 20] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let (mut f, s) = SignerFile::open(dir.path()).unwrap();
        assert_eq!(s, Some(state(2)));
        // The next write goes after the copy read, into the damaged slot.
        f.save(&state(4)).unwrap();
        drop(f);
        assert_eq!(SignerFile::open(dir.path()).unwrap().1, Some(state(4)));
        // Both copies damaged: an error, never "nothing signed".
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 0xff;
        bytes[SLOT_BYTES + 20] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(SignerFile::open(dir.path()).is_err());
    }
}
