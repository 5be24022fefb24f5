//! State sync over the peer network.
//!
//! Serving: a networked process takes a snapshot of its store every `snapshot_every_ledgers`
//! ledgers ([`storage::snapshot_of`], on a thread of its own, one at a time) into
//! `data_dir/snapshots/latest.snapshot`, replacing the last, and serves its records to peers
//! that ask (`SnapshotRequest` on the sync channel, answered by the connection's server within
//! the peer's budgets, like ledgers).
//!
//! Joining: a process with `state_sync = true` whose store does not exist yet asks its peers,
//! one at a time, for their latest snapshot, receives its records into a file and restores it
//! with every check of [`storage::restore`] against the chain from its own genesis file. A
//! peer that does not answer, answers wrongly, or whose snapshot does not restore is left for
//! the next; if none gives one, the process starts from genesis and re-executes the chain as
//! it would have without state sync. A peer's snapshot is trusted for nothing: it either
//! restores to what the certified chain says, or is refused.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

use anyhow::{Context, bail};
use net::{
    Identity, NodeCert,
    conn::{ConnConfig, connection},
    frame::Channel,
    secure,
    tls::client_config,
    transport::Transport,
};
use storage::{SnapshotFile, StoreReader};

use crate::{config::NodeConfig, wire::Sync as SyncMsg};

/// The file a process serves.
const LATEST: &str = "latest.snapshot";
/// The file a snapshot is written to before it replaces [`LATEST`].
const WRITING: &str = "latest.snapshot.part";

/// The snapshots a process takes of its store and serves.
pub(crate) struct Snapshots {
    dir: PathBuf,
    every: u64,
    current: RwLock<Option<Arc<SnapshotFile>>>,
    taking: AtomicBool,
    /// The head height at which the last snapshot was started, or [`NONE`]: none to serve yet,
    /// one is taken at the next commit.
    last: AtomicU64,
}

/// [`Snapshots::last`] of a process with no snapshot to serve.
const NONE: u64 = u64::MAX;

impl Snapshots {
    /// The snapshots kept in `data_dir/snapshots`, taken every `every` ledgers: the one left by
    /// an earlier run is served until a new one replaces it; without one, one is taken at the
    /// first commit (a process that just joined serves joiners at once, not `every` ledgers on).
    pub(crate) fn new(data_dir: &Path, every: u64) -> Arc<Self> {
        let dir = data_dir.join("snapshots");
        let current = SnapshotFile::open(dir.join(LATEST)).ok().map(Arc::new);
        let last = current.as_ref().map_or(NONE, |s| s.height());
        Arc::new(Self {
            dir,
            every,
            current: RwLock::new(current),
            taking: AtomicBool::new(false),
            last: AtomicU64::new(last),
        })
    }

    /// After a commit at `height`: starts taking a snapshot if one is due and none is being
    /// taken (on a thread of its own, reading through a reader of `store`).
    pub(crate) fn committed(self: &Arc<Self>, height: u64, store: &storage::Store) {
        let last = self.last.load(Ordering::Relaxed);
        if self.every == 0 || (last != NONE && height < last.saturating_add(self.every)) {
            return;
        }
        if self.taking.swap(true, Ordering::AcqRel) {
            return;
        }
        self.last.store(height, Ordering::Relaxed);
        let (me, reader) = (self.clone(), store.reader());
        let spawned = std::thread::Builder::new().name("snapshot".into()).spawn(move || {
            if let Err(e) = me.take(&reader) {
                eprintln!("caasiope: no snapshot taken at {height}: {e:#}");
            }
            me.taking.store(false, Ordering::Release);
        });
        if spawned.is_err() {
            self.taking.store(false, Ordering::Release);
        }
    }

    fn take(&self, reader: &StoreReader) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let (writing, latest) = (self.dir.join(WRITING), self.dir.join(LATEST));
        let _ = std::fs::remove_file(&writing);
        let report = storage::snapshot_of(reader, &writing)?;
        std::fs::rename(&writing, &latest)?;
        // The file replaced stays open for whoever still reads it, until they are done.
        let file = Arc::new(SnapshotFile::open(&latest)?);
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(file);
        eprintln!(
            "caasiope: snapshot of height {} taken ({} accounts, {} bytes, {:.1} s)",
            report.height, report.accounts, report.bytes, report.seconds
        );
        Ok(())
    }

    /// The answer to a request for record `record` of the snapshot of `height` (0: the
    /// latest): the record, or that there is no such one.
    pub(crate) fn record(&self, height: u64, record: u32) -> Vec<u8> {
        let current = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let found = current.filter(|s| height == 0 || s.height() == height).and_then(|s| {
            let bytes = s.record(record).ok().flatten()?;
            Some(SyncMsg::SnapshotRecord { height: s.height(), record, records: s.records(), bytes })
        });
        found.unwrap_or(SyncMsg::NoSnapshot).encode()
    }
}

/// Before a joining process opens its store: if `state_sync` is set, the process is networked
/// and its store does not exist yet, restores a peer's snapshot into `data_dir` (see the module
/// docs). Returns whether it did; on `false` the process starts from genesis.
pub(crate) fn join(cfg: &NodeConfig) -> anyhow::Result<bool> {
    let Some(net) = cfg.net.as_ref().filter(|_| cfg.state_sync) else { return Ok(false) };
    if cfg.data_dir.join("mdbx.dat").exists() {
        return Ok(false);
    }
    let genesis = exit::read_text(&cfg.genesis, engine::limits::GENESIS_BYTES_MAX as u64, "genesis file")?;
    let node = Arc::new(NodeCert::load(&net.node_dir).context("the node's TLS identity")?);
    let chain_id = engine::genesis::Genesis::from_toml(&genesis)?.params.chain_id;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let transport = Transport::start(net.transport)?;
    for (spec, id) in &net.peers {
        // The records go to the restore as they arrive, which checks each one: a wrong one
        // ends both at once.
        let (records, received) =
            std::sync::mpsc::sync_channel::<Vec<u8>>(limits::SNAPSHOT_RECORDS_IN_FLIGHT);
        let (dir, genesis_text) = (cfg.data_dir.clone(), genesis.clone());
        let restoring = std::thread::Builder::new().name("state-sync".into()).spawn(move || {
            storage::restore_from(
                Received::new(received),
                &dir,
                &genesis_text,
                None,
                storage::Durability::Durable,
            )
        })?;
        let fetched = runtime.block_on(async {
            let fetching = fetch(spec.addr, *id, &node, &chain_id, transport.clone(), records);
            tokio::time::timeout(limits::SNAPSHOT_FETCH_TIMEOUT, fetching).await.context("too slow")?
        });
        let restored = restoring.join().map_err(|_| anyhow::anyhow!("the restore panicked"))?;
        match (fetched, restored) {
            (Ok(_), Ok(r)) => {
                eprintln!(
                    "caasiope: state sync: restored {}'s snapshot of height {} ({} accounts, {} bytes) in {:.1} s",
                    spec.name, r.height, r.accounts, r.bytes, r.seconds
                );
                return Ok(true);
            }
            (Err(e), Ok(_)) => eprintln!("caasiope: state sync: {} : {e:#}", spec.name),
            (Ok(height), Err(e)) => {
                eprintln!("caasiope: state sync: {}'s snapshot of height {height} refused: {e}", spec.name);
            }
            (Err(fetch), Err(restore)) => {
                eprintln!("caasiope: state sync: no snapshot from {}: {fetch:#} ({restore})", spec.name);
            }
        }
    }
    eprintln!("caasiope: state sync: no peer gave a snapshot that restores; syncing from genesis");
    Ok(false)
}

/// The records a fetch hands over, read as the snapshot file's bytes; the end of the file when
/// the fetch ends (whole or not: the restore tells).
struct Received {
    records: std::sync::mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
}

impl Received {
    const fn new(records: std::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        Self { records, current: Vec::new(), at: 0 }
    }
}

impl std::io::Read for Received {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.current.len() {
            match self.records.recv() {
                Ok(next) => (self.current, self.at) = (next, 0),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A record, or that there is none, from the peer's sync channel (other sync messages are not
/// answers: skipped), within [`limits::SNAPSHOT_RECORD_TIMEOUT`].
async fn next_answer(
    sync: &mut tokio::sync::mpsc::Receiver<net::conn::Payload>,
) -> anyhow::Result<Option<(u64, u32, u32, Vec<u8>)>> {
    let deadline = Instant::now() + limits::SNAPSHOT_RECORD_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let payload = tokio::time::timeout(left, sync.recv())
            .await
            .context("no answer in time")?
            .context("the connection ended")?;
        match SyncMsg::decode(&payload) {
            Ok(SyncMsg::SnapshotRecord { height, record, records, bytes }) => {
                return Ok(Some((height, record, records, bytes)));
            }
            Ok(SyncMsg::NoSnapshot) => return Ok(None),
            // Ledgers pushed to a follower, its own requests: not what is asked here.
            Ok(_) => {}
            Err(e) => bail!("a malformed sync message: {e}"),
        }
    }
}

/// Receives the latest snapshot of the peer at `addr` (proven to be `id`) into `file`,
/// asking for up to [`limits::SNAPSHOT_RECORDS_IN_FLIGHT`] records at a time, each within
/// [`limits::SNAPSHOT_RECORD_TIMEOUT`]; its height.
async fn fetch(
    addr: SocketAddr,
    id: Identity,
    node: &NodeCert,
    chain_id: &str,
    transport: Transport,
    records: std::sync::mpsc::SyncSender<Vec<u8>>,
) -> anyhow::Result<u64> {
    let conn_cfg = ConnConfig::new(chain_id);
    let tls = tokio::time::timeout(conn_cfg.hello_timeout, async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let stream = transport.wrap(tcp)?;
        anyhow::Ok(secure::connect(client_config(node, [id])?, stream).await?)
    })
    .await
    .context("connecting: timed out")??;
    let (handle, inbound, driver) = connection(conn_cfg);
    // The connection ends with this function, however it ends (an error, a timeout).
    let _driven = AbortOnDrop(tokio::spawn(driver.run(tls)));
    let [_, gossip, consensus, mut sync] = inbound.channels;
    // What else the peer sends (it takes this connection for a peer's) is read and dropped, so
    // that it never waits on us.
    for mut rx in [gossip, consensus] {
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
    }
    let ask = |height: u64, record: u32| {
        handle
            .send(Channel::Sync, SyncMsg::SnapshotRequest { height, record }.encode())
            .map_err(|e| anyhow::anyhow!("sending a request: {e:?}"))
    };
    ask(0, 0)?;
    let Some((height, 0, total, preamble)) = next_answer(&mut sync).await? else {
        bail!("it has no snapshot, or answered another record");
    };
    // Each record framed as in the file; a refused one has ended the restore, which drops the
    // receiver: the fetch stops there.
    let hand_over = |bytes: &[u8]| {
        let mut framed = Vec::with_capacity(4 + bytes.len());
        storage::append_record(&mut framed, bytes)?;
        records.send(framed).map_err(|_| anyhow::anyhow!("the snapshot was refused"))
    };
    hand_over(&preamble)?;
    let mut asked = 1u32;
    while asked < total && asked < 1 + limits::SNAPSHOT_RECORDS_IN_FLIGHT as u32 {
        ask(height, asked)?;
        asked += 1;
    }
    for expected in 1..total {
        match next_answer(&mut sync).await? {
            Some((h, record, n, bytes)) if h == height && record == expected && n == total => {
                hand_over(&bytes)?;
            }
            Some(_) => bail!("record {expected} of the snapshot of {height}: another answered"),
            None => bail!("its snapshot of {height} is gone (replaced by a newer one)"),
        }
        if asked < total {
            ask(height, asked)?;
            asked += 1;
        }
    }
    Ok(height)
}

/// A task aborted when this is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use storage::{Store, test_utils::TestChain};

    use super::*;

    /// Commits the next ledger of `chain` (2 transfers) to `store` and flushes it; its height.
    fn commit_next(chain: &TestChain, store: &mut Store, state: &mut engine::state::State) -> u64 {
        let (applied, _) = chain.commit_next(store, state, 2, 1);
        store.flush().unwrap();
        applied.header.height
    }

    /// Waits for the snapshot thread to finish; the height served then.
    fn served(snapshots: &Snapshots) -> Option<u64> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while snapshots.taking.load(Ordering::Acquire) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        snapshots.current.read().unwrap().as_ref().map(|s| s.height())
    }

    #[test]
    fn a_process_with_none_to_serve_takes_one_at_its_first_commit_then_every_n_ledgers() {
        let dir = tempfile::tempdir().unwrap();
        let chain = TestChain::new(2, 4);
        let (mut store, mut state) = Store::create(dir.path().join("db"), &chain.genesis_toml).unwrap();
        let snapshots = Snapshots::new(dir.path(), 3);
        assert_eq!(served(&snapshots), None);
        let h = commit_next(&chain, &mut store, &mut state);
        snapshots.committed(h, &store);
        assert_eq!(served(&snapshots), Some(1), "taken at the first commit");
        for _ in 0..2 {
            let h = commit_next(&chain, &mut store, &mut state);
            snapshots.committed(h, &store);
            assert_eq!(served(&snapshots), Some(1), "not due before 3 ledgers");
        }
        let h = commit_next(&chain, &mut store, &mut state);
        snapshots.committed(h, &store);
        assert_eq!(served(&snapshots), Some(4));
        // The next process on the same directory serves the file left and keeps the rhythm.
        let again = Snapshots::new(dir.path(), 3);
        assert_eq!(served(&again), Some(4));
        let h = commit_next(&chain, &mut store, &mut state);
        again.committed(h, &store);
        assert_eq!(served(&again), Some(4));
    }
}
