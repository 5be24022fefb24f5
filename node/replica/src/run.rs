//! `caasiope run --config FILE`: one process in its role (the host, `crate::host`), its store,
//! and its submit port.
//!
//! A validator whose configuration has no network (a validator set where it alone is a quorum)
//! runs the same path as a networked one — consensus over a set of one: transactions arrive on
//! the submit port (or the explorer API), the intake admits them into the mempool, and a ledger
//! is proposed, prevoted, precommitted and committed to MDBX every `block_interval_ms`, one line
//! printed per ledger. SIGINT/SIGTERM stop it cleanly after the ledger in hand (what is pending
//! and not yet in a ledger is dropped, as on any validator); a restart resumes from the last
//! committed ledger.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use engine::{
    genesis::Genesis,
    limits::{GENESIS_BYTES_MAX, TX_BYTES_MAX},
    state::State,
    tx::{SignedTransaction, TxId},
    validate::TxError,
};
use exit::{Output, read_text};
use pipeline::Verdict;
use storage::{Durability, IndexBatch, Store, StoreOptions};

use crate::config::{NodeConfig, Role, Sync};

/// Turns transparent huge pages off for this process (Linux `PR_SET_THP_DISABLE`; elsewhere,
/// nothing). A node frees and allocates its large per-height buffers (a block's bodies, the
/// admission journal, executions) every block interval; with huge pages each fresh 2 MiB of them
/// is zeroed whole at its first touch after the allocator returned it to the kernel. Measured on
/// the 4-validator localnet (docs/PERFORMANCE.md): page faults were ~4 % of the machine's busy
/// time, and with them off the same binary committed 3 % more at the peak (4 pairs, each pair
/// better). Best effort: a kernel that refuses leaves the process as it was.
pub fn transparent_huge_pages_off() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments only and touches no memory of
    // this process; it sets a flag the kernel reads at page-fault time.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Opens (or creates from the genesis file) the store of `cfg`, checking it is that chain.
pub(crate) fn open_store(cfg: &NodeConfig) -> anyhow::Result<(Store, State)> {
    let genesis_text = read_text(&cfg.genesis, GENESIS_BYTES_MAX as u64, "genesis file")?;
    let genesis = Genesis::from_toml(&genesis_text)?;
    let options = StoreOptions {
        durability: match cfg.sync {
            Sync::Durable => Durability::Durable,
            Sync::SafeNoSync => Durability::SafeNoSync,
        },
        // The explorer API reads the index tables from other threads: they are written with
        // every ledger there. Elsewhere batches are sized by the state once it is open (below).
        index_batch: if cfg.api_listen.is_some() { IndexBatch::EVERY_LEDGER } else { IndexBatch::default() },
        // Elsewhere a batch (~100,000 transactions' rows, 0.6 s here) is written beside the
        // next heights instead of holding up the commit of the ledger that completes it:
        // measured on the localnet, every validator's batch lengthened that height's interval
        // by 0.4–1.6 s (docs/PERFORMANCE.md).
        index_in_background: cfg.api_listen.is_none(),
        // The transaction index and account history serve the explorer's API alone: a
        // validator or node keeps neither (a store that had them drops them at open).
        without_query_indexes: cfg.role != Role::Explorer,
        replay_filter_bytes: limits::REPLAY_FILTER_BYTES,
        retention: cfg.retention,
    };
    let exists = cfg.data_dir.join("mdbx.dat").exists();
    let (mut store, state) = if exists {
        Store::open_with(&cfg.data_dir, options)?
    } else {
        std::fs::create_dir_all(&cfg.data_dir)
            .with_context(|| format!("cannot create {}", cfg.data_dir.display()))?;
        Store::create_with(&cfg.data_dir, &genesis_text, options)?
    };
    // The same genesis: the store's own genesis text says the same, parsed (so the file may be
    // laid out differently). Not the genesis ledger's hash: it does not commit the chain's
    // parameters (min_fee, max_ttl_ms, issuers …) that validation depends on, and rebuilding the
    // genesis state for it took 19 s and 3 GB at ten million generated accounts.
    let stored = Genesis::from_toml(&store.reader().genesis_toml()?)?;
    if stored.config != genesis.config {
        bail!(
            "{} was made from another genesis than the file {} (their chain parameters, validators, \
             currencies, declarations or balances differ)",
            cfg.data_dir.display(),
            cfg.genesis.display()
        );
    }
    // A batch writes each account it changed once, but a B-tree page whole: over a large state
    // larger batches rewrite fewer pages per account (`IndexBatch::for_accounts`).
    if cfg.api_listen.is_none() {
        store.set_index_batch(IndexBatch::for_accounts(state.account_count()));
    }
    Ok((store, state))
}

/// Runs one process until SIGINT or SIGTERM.
pub fn run(config_path: &std::path::Path) -> anyhow::Result<Output> {
    transparent_huge_pages_off();
    // Every connection is a descriptor: the listeners are sized above the usual soft limit.
    if let Err(e) = edge::raise_open_files_limit() {
        eprintln!("caasiope: cannot raise the open-files limit: {e}");
    }
    let cfg = NodeConfig::load(config_path)?;
    crate::host::run(&cfg, config_path)
}

/// A flag SIGHUP sets: the configuration file is read again for new peers.
pub(crate) fn reload_on_sighup() -> anyhow::Result<Arc<AtomicBool>> {
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .context("installing signal handlers")?;
    Ok(reload)
}

/// A flag SIGINT and SIGTERM set: what a process stops on.
pub(crate) fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }
    Ok(stop)
}

/// What a batch of submitted frames is answered with, one line per frame: computed when the
/// connection's answers reach it, in order (it may wait for the intake's verdicts).
pub(crate) type Answer = Box<dyn FnOnce() -> Vec<String> + Send>;

/// An [`Answer`] known already.
pub(crate) fn ready(lines: Vec<String>) -> Answer {
    Box::new(move || lines)
}

/// Submits a batch of frames (decoded, or refused at once as busy) as soon as it is read: its
/// [`Answer`].
pub(crate) type Accept = dyn Fn(Vec<Vec<u8>>) -> Answer + std::marker::Sync;

/// Accepts submissions until `stop`; each connection is served on its own threads, at most
/// [`limits::SUBMIT_CONNECTIONS_MAX`] at once and [`limits::SUBMIT_CONNECTIONS_PER_SOURCE`] from
/// one source (an IPv4 address or an IPv6 /64); a connection past either bound is told why and
/// closed at once, counted in `stats`.
pub(crate) fn serve_submissions(
    addr: std::net::SocketAddr,
    accept: &Accept,
    stop: &AtomicBool,
    stats: Arc<edge::Stats>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    if let Err(e) = edge::widen_backlog(&listener, limits::LISTEN_BACKLOG) {
        eprintln!("caasiope: cannot widen the accept queue: {e}");
    }
    serve_submissions_on(&listener, accept, stop, stats, limits::SUBMIT_FRAME_DEADLINE)
}

/// [`serve_submissions`] on a bound listener, with a frame deadline.
fn serve_submissions_on(
    listener: &TcpListener,
    accept: &Accept,
    stop: &AtomicBool,
    stats: Arc<edge::Stats>,
    frame_deadline: Duration,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let slots =
        edge::Slots::new(limits::SUBMIT_CONNECTIONS_MAX, limits::SUBMIT_CONNECTIONS_PER_SOURCE, stats);
    std::thread::scope(|scope| {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((stream, from)) => match slots.admit(from.ip()) {
                    Ok(slot) => {
                        scope.spawn(move || {
                            if let Err(e) = serve_connection(&stream, accept, stop, frame_deadline)
                                && e.kind() == std::io::ErrorKind::TimedOut
                            {
                                slot.stats().deadline_missed();
                            }
                        });
                    }
                    Err(edge::Refusal::Full) => {
                        let _ = reply(&stream, "error: too many connections");
                    }
                    Err(edge::Refusal::Source) => {
                        let _ = reply(&stream, "error: too many connections from this address");
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => {
                    eprintln!("caasiope: accept failed: {e}");
                    std::thread::sleep(edge::accept_backoff(&e));
                }
            }
        }
    });
    Ok(())
}

fn reply(mut stream: &TcpStream, line: &str) -> std::io::Result<()> {
    stream.write_all(line.as_bytes())?;
    stream.write_all(b"\n")
}

/// One client: frames of `u32 big-endian length ‖ signed transaction bytes`; each is answered
/// with the line `accept` returns, `accepted <id>` or `rejected <kind>: <reason>`, in the
/// frames' order. Acceptance means the transaction passed what intake checks (decoding, its
/// signatures, admission against the pending state).
///
/// Pipelined: this thread reads, and submits each batch of frames as soon as it is whole —
/// so a node with no room answers `busy` at once rather than leaving a client's frames to
/// wait in the socket behind the verdicts of earlier ones (measured: up to 1.6 MB, seconds of
/// transactions, per connection at the peak) — while a second thread writes the answers in
/// order as their verdicts come. At most [`limits::SUBMIT_BATCHES_IN_FLIGHT`] batches wait for
/// theirs; past it the connection is not read.
///
/// Reads poll every 250 ms so a stop request or an idle client ends the connection promptly.
/// A frame must arrive whole within `frame_deadline` of its first byte, and the client must take
/// each answer within it too: past it the connection ends with
/// [`std::io::ErrorKind::TimedOut`] (a late frame is told so first).
fn serve_connection(
    stream: &TcpStream,
    accept: &Accept,
    stop: &AtomicBool,
    frame_deadline: Duration,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(250)))?;
    // A client that does not read its answers holds the connection no longer than a frame
    // may take to arrive (else the writer would wait in a write, past the idle timeout and a
    // stop; the reader waits on it once the answers in flight are at their bound).
    stream.set_write_timeout(Some(frame_deadline))?;
    let (answers, to_write) = crossbeam_channel::bounded::<Answer>(limits::SUBMIT_BATCHES_IN_FLIGHT);
    std::thread::scope(|scope| {
        let s = stream;
        // The writer owns the receiving end: when it stops, a reader waiting to hand it an
        // answer is told at once.
        let writer = scope.spawn(move || write_answers(s, to_write));
        let read = read_frames(stream, accept, stop, frame_deadline, &answers);
        // The writer writes what was read, then ends.
        drop(answers);
        let written = writer.join().unwrap_or_else(|_| Err(std::io::Error::other("answer writer panicked")));
        // The writer's failure is the connection's (the reader only saw it end).
        written.and(read)
    })
}

/// The reading half of [`serve_connection`]: every batch of whole frames to `accept`, its
/// answer to the writer; a line of its own (a refused frame) goes the same way.
fn read_frames(
    mut stream: &TcpStream,
    accept: &Accept,
    stop: &AtomicBool,
    frame_deadline: Duration,
    answers: &crossbeam_channel::Sender<Answer>,
) -> std::io::Result<()> {
    // The writer ended (the client does not take its answers): so does the connection.
    let send =
        |answer: Answer| answers.send(answer).map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut));
    // Bounded: a frame longer than TX_BYTES_MAX is refused as soon as its length is read.
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut idle = Duration::ZERO;
    // When the first byte of the frame not yet whole arrived.
    let mut frame_started: Option<std::time::Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        // Every complete frame read so far goes in as one batch (a client that pipelines gets
        // batched intake), answered in order with one line each.
        let (frames, oversized) = take_frames(&mut buf);
        if !frames.is_empty() {
            // The frame in progress, if any, is a new one: its deadline starts when it is seen.
            frame_started = None;
            send(accept(frames))?;
        }
        if let Some(len) = oversized {
            send(ready(vec![format!(
                "rejected too_large: frame of {len} bytes is over the limit of {TX_BYTES_MAX}"
            )]))?;
            return Ok(());
        }
        if buf.len() >= 4 && buf.len() >= 4 + (u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize)
        {
            // More complete frames than one batch takes: go round again before reading.
            continue;
        }
        // What is left in the buffer is the start of a frame not yet whole.
        if buf.is_empty() {
            frame_started = None;
        } else if frame_started.get_or_insert_with(std::time::Instant::now).elapsed() >= frame_deadline {
            send(ready(vec![format!(
                "rejected timeout: frame not received whole within {frame_deadline:?}"
            )]))?;
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                idle = Duration::ZERO;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                idle += Duration::from_millis(250);
                if idle >= limits::SUBMIT_IDLE_TIMEOUT && answers.is_empty() {
                    return Ok(());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The writing half of [`serve_connection`]: each answer in order, once computed. A write
/// that fails or waits past the write timeout closes the socket, which ends the reader.
fn write_answers(
    mut stream: &TcpStream,
    answers: crossbeam_channel::Receiver<Answer>,
) -> std::io::Result<()> {
    for answer in answers {
        let mut out = answer().join("\n");
        out.push('\n');
        if let Err(e) = stream.write_all(out.as_bytes()) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return Err(match e.kind() {
                // The write timeout: the client did not take its answers in time.
                std::io::ErrorKind::WouldBlock => std::io::ErrorKind::TimedOut.into(),
                _ => e,
            });
        }
    }
    Ok(())
}

/// Takes the complete frames at the start of `buf` (at most
/// [`limits::SUBMIT_BATCH_FRAMES_MAX`]), and the length a frame announced over
/// `TX_BYTES_MAX`, if one did (those before it are taken).
fn take_frames(buf: &mut Vec<u8>) -> (Vec<Vec<u8>>, Option<usize>) {
    let mut frames = Vec::new();
    let mut at = 0;
    let mut oversized = None;
    while let Some(len) = buf.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) {
        if len > TX_BYTES_MAX {
            oversized = Some(len);
            break;
        }
        if buf.len() < at + 4 + len || frames.len() >= limits::SUBMIT_BATCH_FRAMES_MAX {
            break;
        }
        frames.push(buf[at + 4..at + 4 + len].to_vec());
        at += 4 + len;
    }
    buf.drain(..at);
    (frames, oversized)
}

/// Per submitted frame, its id or why it does not decode.
pub(crate) type FrameIds = Vec<Result<TxId, TxError>>;

/// Decodes submitted frames: per frame its id or why it does not decode, and those that
/// decoded (the transaction and its id), to submit as one batch.
pub(crate) fn decode_frames(
    frames: &[Vec<u8>],
    chain_id: &str,
) -> (FrameIds, Vec<(SignedTransaction, TxId)>) {
    let mut ids = Vec::with_capacity(frames.len());
    let mut batch = Vec::with_capacity(frames.len());
    for bytes in frames {
        match SignedTransaction::decode_with_id(bytes, chain_id) {
            Ok((stx, id)) => {
                ids.push(Ok(id));
                batch.push((stx, id));
            }
            Err(e) => ids.push(Err(TxError::Decode(e))),
        }
    }
    (ids, batch)
}

/// The answer line of each frame: `accepted <id>` when admission admitted it (or it is already
/// pending), `rejected <kind>: <reason>` otherwise — what the API answers 202 and 4xx/503 for,
/// with the same `kind` (the rule's label, PROTOCOL.md §7, or `busy`).
pub(crate) fn answer_lines(
    ids: FrameIds,
    verdicts: Option<&[(TxId, Verdict)]>,
    pending_again: impl Fn(&TxId, &TxError) -> bool,
) -> Vec<String> {
    let refused = |e: &TxError| format!("rejected {}: {e}", e.kind());
    ids.into_iter()
        .map(|id| match id {
            Err(e) => refused(&e),
            Ok(id) => match verdicts.and_then(|v| v.iter().find(|(v, _)| *v == id)).map(|(_, v)| v) {
                None => "rejected busy: no verdict in time, the node is far behind; retry later".to_owned(),
                Some(Verdict::Admitted) => format!("accepted {id}"),
                // Sent again while pending: the first copy's fate is the transaction's.
                Some(Verdict::Refused(e)) if pending_again(&id, e) => format!("accepted {id}"),
                Some(Verdict::Refused(e)) => refused(e),
                Some(Verdict::Dropped) => "rejected busy: the pool is full, retry later".to_owned(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read, Write};

    use super::*;

    /// A submit server answering `accepted <n bytes>` per frame, on an ephemeral port: its
    /// address and stats; it stops when `stop` is set.
    fn submit_server(
        stop: &'static AtomicBool,
        frame_deadline: Duration,
    ) -> (std::net::SocketAddr, Arc<edge::Stats>, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(edge::Stats::default());
        let s = stats.clone();
        let server = std::thread::spawn(move || {
            let accept = |frames: Vec<Vec<u8>>| {
                ready(frames.iter().map(|f| format!("accepted {}", f.len())).collect())
            };
            serve_submissions_on(&listener, &accept, stop, s, frame_deadline).unwrap();
        });
        (addr, stats, server)
    }

    /// A blocking connection to `addr` from the loopback address `source`.
    fn connect_from(addr: std::net::SocketAddr, source: [u8; 4]) -> TcpStream {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind((std::net::Ipv4Addr::from(source), 0).into()).unwrap();
            let stream = socket.connect(addr).await.unwrap().into_std().unwrap();
            stream.set_nonblocking(false).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            stream
        })
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut f = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    }

    fn line(s: &TcpStream) -> String {
        let mut line = String::new();
        let _ = BufReader::new(s).read_line(&mut line);
        line.trim_end().to_owned()
    }

    /// One source holds its share of the port and is told when it asks for more; another
    /// source is served meanwhile.
    #[test]
    fn every_frame_is_answered_with_its_verdict_and_kind() {
        let (admitted, refused, pending, late) =
            (engine::Hash([1; 32]), engine::Hash([2; 32]), engine::Hash([3; 32]), engine::Hash([4; 32]));
        let (garbage, _) = decode_frames(&[b"garbage".to_vec()], "localnet");
        let ids = garbage.into_iter().chain([Ok(admitted), Ok(refused), Ok(pending), Ok(late)]).collect();
        let verdicts = [
            (admitted, Verdict::Admitted),
            (refused, Verdict::Refused(TxError::Replayed(refused))),
            (pending, Verdict::Refused(TxError::Replayed(pending))),
        ];
        let lines = answer_lines(ids, Some(&verdicts), |id, _| *id == pending);
        assert!(lines[0].starts_with("rejected decode: "), "{}", lines[0]);
        assert_eq!(lines[1], format!("accepted {admitted}"));
        assert!(lines[2].starts_with("rejected replayed: "), "{}", lines[2]);
        // Sent again while pending: its first copy's fate.
        assert_eq!(lines[3], format!("accepted {pending}"));
        // No verdict in time.
        assert!(lines[4].starts_with("rejected busy: "), "{}", lines[4]);
    }

    #[test]
    fn a_source_past_its_share_of_the_submit_port_is_told_and_closed() {
        static STOP: AtomicBool = AtomicBool::new(false);
        let (addr, stats, server) = submit_server(&STOP, Duration::from_secs(600));
        let held: Vec<TcpStream> =
            (0..limits::SUBMIT_CONNECTIONS_PER_SOURCE).map(|_| connect_from(addr, [127, 0, 0, 1])).collect();
        let over = connect_from(addr, [127, 0, 0, 1]);
        assert_eq!(line(&over), "error: too many connections from this address");
        let mut other = connect_from(addr, [127, 0, 0, 2]);
        other.write_all(&frame(b"abc")).unwrap();
        assert_eq!(line(&other), "accepted 3");
        assert_eq!(stats.refused_source.load(Ordering::Relaxed), 1);
        STOP.store(true, Ordering::Relaxed);
        drop(held);
        server.join().unwrap();
    }

    /// A connection is pipelined: a batch read while an earlier one still waits for its
    /// verdicts is submitted at once (so a node with no room refuses it at once, rather than
    /// leaving it in the socket), and the answers still come in the frames' order. The first
    /// batch's answer here waits until the second batch was submitted: served one batch at a
    /// time (as before), the first would never see it and say so.
    #[test]
    fn a_batch_is_submitted_while_an_earlier_one_waits_and_answers_keep_their_order() {
        static STOP: AtomicBool = AtomicBool::new(false);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let submitted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let accept = move |frames: Vec<Vec<u8>>| -> Answer {
                let nth = submitted.fetch_add(1, Ordering::SeqCst) + 1;
                let submitted = submitted.clone();
                Box::new(move || {
                    let until = std::time::Instant::now() + Duration::from_secs(5);
                    while nth == 1
                        && submitted.load(Ordering::SeqCst) < 2
                        && std::time::Instant::now() < until
                    {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    let seen = submitted.load(Ordering::SeqCst);
                    frames
                        .iter()
                        .map(|f| format!("accepted {} (batch {nth}, {seen} submitted)", f.len()))
                        .collect()
                })
            };
            serve_submissions_on(&listener, &accept, &STOP, Arc::default(), Duration::from_secs(5)).unwrap();
        });
        let mut s = connect_from(addr, [127, 0, 0, 1]);
        s.write_all(&frame(b"first")).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        s.write_all(&frame(b"second!")).unwrap();
        let mut r = BufReader::new(s);
        let mut lines = [String::new(), String::new()];
        for l in &mut lines {
            r.read_line(l).unwrap();
        }
        assert_eq!(lines[0].trim_end(), "accepted 5 (batch 1, 2 submitted)");
        assert_eq!(lines[1].trim_end(), "accepted 7 (batch 2, 2 submitted)");
        STOP.store(true, Ordering::Relaxed);
        drop(r);
        server.join().unwrap();
    }

    /// A client streaming frames without pause, so that the buffer always holds the start of
    /// the next one, is served for longer than the frame deadline: the deadline is per frame.
    #[test]
    fn a_steady_stream_of_frames_outlives_the_frame_deadline() {
        static STOP: AtomicBool = AtomicBool::new(false);
        let (addr, stats, server) = submit_server(&STOP, Duration::from_millis(300));
        let s = connect_from(addr, [127, 0, 0, 1]);
        let stream: Vec<u8> = (0..40).flat_map(|_| frame(&[1u8; 100])).collect();
        let mut w = s.try_clone().unwrap();
        // A frame and a half every 50 ms: 2 s of frames, a partial one always in flight.
        let writer = std::thread::spawn(move || {
            // 150 bytes a write, frames of 104: the buffer holds a partial frame throughout.
            for chunk in stream.chunks(150) {
                w.write_all(chunk).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let mut r = BufReader::new(s);
        for i in 0..40 {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert_eq!(line.trim_end(), "accepted 100", "frame {i}");
        }
        writer.join().unwrap();
        assert_eq!(stats.deadline_closed.load(Ordering::Relaxed), 0);
        STOP.store(true, Ordering::Relaxed);
        drop(r);
        server.join().unwrap();
    }

    /// A client that sends frames and never reads the answers is cut once a write waits past
    /// the deadline (counted), instead of holding its connection's thread in a write for ever.
    #[test]
    fn a_client_that_never_reads_its_answers_is_cut() {
        static STOP: AtomicBool = AtomicBool::new(false);
        let (addr, stats, server) = submit_server(&STOP, Duration::from_millis(300));
        let s = connect_from(addr, [127, 0, 0, 1]);
        let mut w = s.try_clone().unwrap();
        // A million empty frames: far more answers than the sockets' buffers hold.
        let writer = std::thread::spawn(move || {
            let frames = vec![0u8; 4_000_000];
            let _ = w.write_all(&frames);
        });
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while stats.deadline_closed.load(Ordering::Relaxed) == 0 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(stats.deadline_closed.load(Ordering::Relaxed), 1, "the writing connection was not cut");
        drop(s);
        writer.join().unwrap();
        STOP.store(true, Ordering::Relaxed);
        server.join().unwrap();
    }

    /// A frame trickled in (each byte well inside the idle timeout) is cut at the frame
    /// deadline, told so and counted; whole frames before it were answered.
    #[test]
    fn a_trickled_frame_is_cut_at_its_deadline() {
        static STOP: AtomicBool = AtomicBool::new(false);
        let (addr, stats, server) = submit_server(&STOP, Duration::from_millis(500));
        let mut s = connect_from(addr, [127, 0, 0, 1]);
        s.write_all(&frame(b"whole")).unwrap();
        assert_eq!(line(&s), "accepted 5");
        let slow = frame(&[7u8; 64]);
        for b in &slow {
            if s.write_all(std::slice::from_ref(b)).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut rest = String::new();
        let _ = s.read_to_string(&mut rest);
        assert_eq!(rest.trim_end(), "rejected timeout: frame not received whole within 500ms");
        assert_eq!(stats.deadline_closed.load(Ordering::Relaxed), 1);
        STOP.store(true, Ordering::Relaxed);
        server.join().unwrap();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn transparent_huge_pages_are_off_after_the_call() {
        super::transparent_huge_pages_off();
        // SAFETY: prctl(PR_GET_THP_DISABLE) takes integer arguments only and reads a flag.
        let disabled = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(disabled, 1, "the kernel reports transparent huge pages still on for this process");
    }
}
