//! The consensus write-ahead log on disk: the records of the height being decided
//! ([`consensus::WalRecord`]: the core's inputs and the bodies of the values this validator
//! judged valid), appended before they are handled, so a restarted validator replays into the
//! very state it had and signs nothing that contradicts what it already sent.
//!
//! File `consensus.wal` in the data directory: records `len u32 LE | check [4] | record`,
//! where `check` is the first 4 bytes of BLAKE3(record). At each new height it is truncated
//! and written in place ([`Wal::start`]: what it held is of a committed height, so a crash
//! before the next sync may leave it, harmlessly); at a compaction or a replay, whose records
//! are needed, it is replaced atomically ([`Wal::reset`]: a temporary file, fsynced, renamed
//! over it, the directory fsynced); it is appended to in between; appends are made durable
//! before any message this validator signed leaves it.
//!
//! Reading it back: a record cut by a crash at the end of the file (the part written after the
//! last sync) is a torn tail, dropped and reported. Anything else that does not read — a
//! record failing its check with more data after it, a file above [`limits::WAL_LOG_BYTES_MAX`] — is not
//! cut: the log is reported unreadable, and the validator does not sign until an operator has
//! looked at it and moved it aside.

use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Read, Write},
    path::{Path, PathBuf},
};

use anyhow::Context;
use consensus::{WalRead, WalRecord};
use engine::{Encode, codec::decode_exact};

#[derive(Debug)]
pub struct Wal {
    path: PathBuf,
    out: BufWriter<File>,
    bytes: u64,
    dirty: bool,
    /// Where records are encoded, kept from one to the next (a value's bodies are megabytes:
    /// a fresh buffer each time costs its growth and the kernel's zeroing of new pages).
    buf: Vec<u8>,
}

fn check(bytes: &[u8]) -> [u8; 4] {
    let h = blake3::hash(bytes);
    [h.as_bytes()[0], h.as_bytes()[1], h.as_bytes()[2], h.as_bytes()[3]]
}

/// Reads the records of a log's bytes: a torn tail is dropped (its length returned), any other
/// damage makes the log unreadable.
fn parse(bytes: &[u8]) -> Result<(Vec<WalRecord>, usize), String> {
    let mut records = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        let why = match read_record(rest) {
            Ok((record, len)) => {
                records.push(record);
                at += len;
                continue;
            }
            Err(why) => why,
        };
        // A record cut by a crash is the last thing in the file: what follows its start is
        // shorter than it claims, or the zeros of space allocated but never written.
        let claimed = rest.get(..4).map_or(0, |l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize);
        return if rest.len() < 8 + claimed || rest.iter().all(|b| *b == 0) {
            Ok((records, rest.len()))
        } else {
            Err(format!("record at byte {at}: {why}, with {} bytes after it", rest.len()))
        };
    }
    Ok((records, 0))
}

/// The record at the start of `rest` and the bytes it takes, or why it does not read.
fn read_record(rest: &[u8]) -> Result<(WalRecord, usize), String> {
    let head = rest.get(..8).ok_or("a header cut short")?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len > limits::WAL_RECORD_BYTES_MAX {
        return Err("a length above the largest record".into());
    }
    let record = rest.get(8..8 + len).ok_or("a record cut short")?;
    if check(record) != head[4..8] {
        return Err("a record that fails its check".into());
    }
    let decoded =
        decode_exact::<WalRecord>(record).map_err(|e| format!("a record that does not decode ({e})"))?;
    Ok((decoded, 8 + len))
}

impl Wal {
    /// Opens the log of `dir`, returning it and what it holds.
    pub fn open(dir: &Path) -> anyhow::Result<(Self, WalRead)> {
        let path = dir.join("consensus.wal");
        let mut read = WalRead::Records(Vec::new());
        if path.exists() {
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|f| f.take(limits::WAL_LOG_BYTES_MAX + 1).read_to_end(&mut bytes))
                .with_context(|| format!("reading {}", path.display()))?;
            read = if bytes.len() as u64 > limits::WAL_LOG_BYTES_MAX {
                WalRead::Unreadable(format!(
                    "{} is larger than {} bytes",
                    path.display(),
                    limits::WAL_LOG_BYTES_MAX
                ))
            } else {
                match parse(&bytes) {
                    Ok((records, torn)) => {
                        if torn > 0 {
                            eprintln!(
                                "caasiope: {}: dropped a torn tail of {torn} bytes (written after the last sync, before a crash)",
                                path.display()
                            );
                        }
                        WalRead::Records(records)
                    }
                    Err(why) => WalRead::Unreadable(format!("{}: {why}", path.display())),
                }
            };
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok((Self { path, out: BufWriter::new(file), bytes, dirty: false, buf: Vec::new() }, read))
    }

    /// Replaces the log with `records`, durably; returns its size.
    pub fn reset(&mut self, records: &[WalRecord]) -> anyhow::Result<u64> {
        let tmp = self.path.with_extension("wal.tmp");
        let bytes = {
            let mut f =
                BufWriter::new(File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?);
            let bytes = write_records(&mut f, records, &mut self.buf)?;
            f.flush()?;
            f.get_ref().sync_data()?;
            bytes
        };
        std::fs::rename(&tmp, &self.path).with_context(|| format!("replacing {}", self.path.display()))?;
        // The rename is durable once the directory is.
        sync_dir(&self.path)?;
        let file = OpenOptions::new().append(true).open(&self.path)?;
        self.out = BufWriter::new(file);
        self.bytes = bytes;
        self.dirty = false;
        Ok(bytes)
    }

    /// Starts the log of a new height with `records` (the log before is of a committed
    /// height): truncated and written in place, durable at the next [`Wal::sync`]. A crash
    /// before it leaves the old log (of a height the store has: skipped), an empty one, or
    /// the new one with a torn tail — no rename, so no file or directory sync per height.
    pub fn start(&mut self, records: &[WalRecord]) -> anyhow::Result<u64> {
        self.out.flush()?;
        self.out.get_ref().set_len(0).with_context(|| format!("truncating {}", self.path.display()))?;
        self.bytes = write_records(&mut self.out, records, &mut self.buf)?;
        self.dirty = true;
        Ok(self.bytes)
    }

    /// Appends one record (buffered); returns the log's size.
    pub fn append(&mut self, record: &WalRecord) -> anyhow::Result<u64> {
        self.bytes += write_record(&mut self.out, record, &mut self.buf)?;
        self.dirty = true;
        Ok(self.bytes)
    }

    /// Makes every appended record durable: called before a message this validator signed
    /// leaves the process.
    pub fn sync(&mut self) -> anyhow::Result<()> {
        if self.dirty {
            self.out.flush()?;
            self.out.get_ref().sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }
}

/// Makes the entries of the directory holding `path` durable (a rename, a creation).
pub(crate) fn sync_dir(path: &Path) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing the directory {}", dir.display()))
}

fn write_records(out: &mut impl Write, records: &[WalRecord], buf: &mut Vec<u8>) -> anyhow::Result<u64> {
    records.iter().try_fold(0, |bytes, record| Ok(bytes + write_record(out, record, buf)?))
}

fn write_record(out: &mut impl Write, record: &WalRecord, buf: &mut Vec<u8>) -> anyhow::Result<u64> {
    buf.clear();
    record.encode(buf);
    out.write_all(&(buf.len() as u32).to_le_bytes())?;
    out.write_all(&check(buf))?;
    out.write_all(buf)?;
    Ok(8 + buf.len() as u64)
}

#[cfg(test)]
mod tests {
    use consensus::{Input, Timeout, TimeoutKind};

    use super::*;

    fn records(read: WalRead) -> Vec<WalRecord> {
        match read {
            WalRead::Records(r) => r,
            WalRead::Unreadable(why) => panic!("unreadable: {why}"),
        }
    }

    fn t(round: u32) -> WalRecord {
        WalRecord::Input(Input::Timeout(Timeout { kind: TimeoutKind::Propose, height: 3, round }))
    }

    #[test]
    fn a_new_height_rewrites_the_log_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consensus.wal");
        let (mut wal, _) = Wal::open(dir.path()).unwrap();
        for r in 0..5 {
            wal.append(&t(r)).unwrap();
        }
        wal.sync().unwrap();
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
        // Some of the old height appended but not synced, then the new height.
        wal.append(&t(5)).unwrap();
        let bytes = wal.start(&[t(7)]).unwrap();
        wal.append(&t(8)).unwrap();
        wal.sync().unwrap();
        // Two records of one size: the old ones are gone.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * bytes);
        drop(wal);
        let read = records(Wal::open(dir.path()).unwrap().1);
        let rounds: Vec<u32> = read
            .iter()
            .map(|r| match r {
                WalRecord::Input(Input::Timeout(Timeout { round, .. })) => *round,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(rounds, [7, 8]);
        // The same file, written in place: no rename (so no directory to sync).
        assert_eq!(std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap()), inode);
        assert!(!path.with_extension("wal.tmp").exists());
    }

    #[test]
    fn a_torn_tail_is_dropped_and_damage_before_the_end_is_not_cut() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, read) = Wal::open(dir.path()).unwrap();
            assert!(records(read).is_empty());
            for r in 0..3 {
                wal.append(&t(r)).unwrap();
            }
            wal.sync().unwrap();
        }
        let path = dir.path().join("consensus.wal");
        let len = std::fs::metadata(&path).unwrap().len();
        // Cut the last record in half: a torn tail.
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 5).unwrap();
        let (mut wal, read) = Wal::open(dir.path()).unwrap();
        assert_eq!(records(read).len(), 2);
        // The torn bytes are rewritten away by the next reset (a replay does it first).
        let kept: Vec<WalRecord> = (0..2).map(t).collect();
        wal.reset(&kept).unwrap();
        wal.append(&t(9)).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let read = records(Wal::open(dir.path()).unwrap().1);
        assert_eq!(read.len(), 3);
        assert!(matches!(read[2], WalRecord::Input(Input::Timeout(Timeout { round: 9, .. }))));
        // Zeros after the last record (space allocated, never written): a torn tail too.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0; 100]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(records(Wal::open(dir.path()).unwrap().1).len(), 3);
        // A flipped byte in the first record, with records after it: unreadable, not cut.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[12] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let (_, read) = Wal::open(dir.path()).unwrap();
        assert!(matches!(read, WalRead::Unreadable(ref why) if why.contains("byte 0")), "{read:?}");
        // Too large to be a log the driver writes: unreadable.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(limits::WAL_LOG_BYTES_MAX + 1).unwrap();
        assert!(matches!(Wal::open(dir.path()).unwrap().1, WalRead::Unreadable(_)));
    }
}
