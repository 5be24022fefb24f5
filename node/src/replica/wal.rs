//! The consensus write-ahead log: every input of the height being decided, appended before it
//! is handled, so a restarted validator replays into the very state it had and signs nothing
//! that contradicts what it already sent.
//!
//! File `consensus.wal` in the data directory: records `len u32 LE | check [4] | Input bytes`,
//! where `check` is the first 4 bytes of BLAKE3(bytes). A record cut by a crash (short, or
//! failing its check) ends the log; the file is rewritten at each new height.

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Read, Write},
    path::{Path, PathBuf},
};

use anyhow::Context;
use consensus::Input;
use engine::{Encode, codec::decode_exact};

/// Largest record read back (a proposal of `BLOCK_TXS_MAX` ids is 3.2 MB).
const RECORD_BYTES_MAX: usize = 8 << 20;
/// Largest log read back.
const LOG_BYTES_MAX: u64 = 1 << 30;

#[derive(Debug)]
pub(crate) struct Wal {
    path: PathBuf,
    out: BufWriter<File>,
    dirty: bool,
}

fn check(bytes: &[u8]) -> [u8; 4] {
    let h = blake3::hash(bytes);
    [h.as_bytes()[0], h.as_bytes()[1], h.as_bytes()[2], h.as_bytes()[3]]
}

impl Wal {
    /// Opens the log of `dir`, returning it and the inputs it holds (up to the first torn or
    /// corrupt record).
    pub(crate) fn open(dir: &Path) -> anyhow::Result<(Self, Vec<Input>)> {
        let path = dir.join("consensus.wal");
        let mut inputs = Vec::new();
        if path.exists() {
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|f| f.take(LOG_BYTES_MAX).read_to_end(&mut bytes))
                .with_context(|| format!("reading {}", path.display()))?;
            let mut at = 0;
            while let Some(head) = bytes.get(at..at + 8) {
                let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
                if len > RECORD_BYTES_MAX {
                    break;
                }
                let Some(record) = bytes.get(at + 8..at + 8 + len) else { break };
                if check(record) != head[4..8] {
                    break;
                }
                match decode_exact::<Input>(record) {
                    Ok(input) => inputs.push(input),
                    Err(_) => break,
                }
                at += 8 + len;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut wal = Self { path, out: BufWriter::new(file), dirty: false };
        // Rewrite what was read: a torn tail must not sit before the records appended next.
        wal.reset(&inputs)?;
        Ok((wal, inputs))
    }

    /// Replaces the log with `inputs` (a new height starts with its `Start`).
    pub(crate) fn reset(&mut self, inputs: &[Input]) -> anyhow::Result<()> {
        let tmp = self.path.with_extension("wal.tmp");
        {
            let mut f =
                BufWriter::new(File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?);
            for input in inputs {
                write_record(&mut f, input)?;
            }
            f.flush()?;
            f.get_ref().sync_data()?;
        }
        std::fs::rename(&tmp, &self.path).with_context(|| format!("replacing {}", self.path.display()))?;
        let file = OpenOptions::new().append(true).open(&self.path)?;
        self.out = BufWriter::new(file);
        self.dirty = false;
        Ok(())
    }

    /// Appends one input (buffered).
    pub(crate) fn append(&mut self, input: &Input) -> anyhow::Result<()> {
        write_record(&mut self.out, input)?;
        self.dirty = true;
        Ok(())
    }

    /// Makes every appended input durable: called before a message this validator signed
    /// leaves the process.
    pub(crate) fn sync(&mut self) -> anyhow::Result<()> {
        if self.dirty {
            self.out.flush()?;
            self.out.get_ref().sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }
}

fn write_record(out: &mut impl Write, input: &Input) -> anyhow::Result<()> {
    let bytes = input.to_bytes();
    out.write_all(&(bytes.len() as u32).to_le_bytes())?;
    out.write_all(&check(&bytes))?;
    out.write_all(&bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use consensus::{Timeout, TimeoutKind};

    use super::*;

    #[test]
    fn a_torn_tail_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let t = |round| Input::Timeout(Timeout { kind: TimeoutKind::Propose, height: 3, round });
        {
            let (mut wal, read) = Wal::open(dir.path()).unwrap();
            assert!(read.is_empty());
            for r in 0..3 {
                wal.append(&t(r)).unwrap();
            }
            wal.sync().unwrap();
        }
        let path = dir.path().join("consensus.wal");
        let len = std::fs::metadata(&path).unwrap().len();
        // Cut the last record in half.
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 5).unwrap();
        let (mut wal, read) = Wal::open(dir.path()).unwrap();
        assert_eq!(read.len(), 2);
        wal.append(&t(9)).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, read) = Wal::open(dir.path()).unwrap();
        assert_eq!(read.len(), 3);
        assert!(matches!(read[2], Input::Timeout(Timeout { round: 9, .. })));
        // A flipped byte ends the log at that record.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[12] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(Wal::open(dir.path()).unwrap().1.is_empty());
    }
}
