//! Crash safety: a writer process committing ledgers at full speed is SIGKILLed at random
//! moments, again and again, on one store. After every kill the store must open and verify —
//! a whole prefix of heights, no partial ledger, accounts equal to the re-executed chain — hold
//! every ledger whose commit returned, and the next writer must continue from its head.
//!
//! The writer is this test binary run again (`writer_process`, a no-op unless the parent sets
//! `CRASH_WRITER_DIR`). Its ledgers depend only on their height, so it needs no input. Rounds
//! alternate durable and `SafeNoSync` writers (a process kill must lose nothing in either), go
//! two by two from writers that write index batches inline to writers that write them on a
//! thread of their own, and cycle through killing 20–300 ms after spawn (possibly while
//! opening), after the store is open, and just after the writer announced a commit (inside the write transaction). Delays
//! come from a seeded RNG; the seed is printed, and `CRASH_SEED=<seed>` replays the schedule
//! (the writer's own speed still varies). The parent creates the store: `create` is one write
//! transaction too, but a kill while MDBX initialises a brand-new file is not what this tests.

use std::{
    env,
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use caasiope_storage::{
    Durability, IndexBatch, LedgerToCommit, Store, StoreOptions, test_utils::TestChain, verify,
};
use rand::{Rng, SeedableRng, rngs::StdRng};

const WRITER_DIR: &str = "CRASH_WRITER_DIR";
const WRITER_DURABILITY: &str = "CRASH_WRITER_DURABILITY";
/// Set to `1`: the writer writes its index batches on a thread of their own.
const WRITER_BACKGROUND: &str = "CRASH_WRITER_BACKGROUND";
/// Kills per run.
const KILLS: usize = 24;
/// Kill delays, ms (see [`Kill`]).
const DELAY_MS: std::ops::RangeInclusive<u64> = 20..=300;
/// Delays after a writer announced a commit, µs: committing a ledger here takes a few ms.
const COMMIT_DELAY_US: std::ops::RangeInclusive<u64> = 0..=3_000;
const TXS_PER_LEDGER: usize = 300;
/// Index rows are written every 4 ledgers, so kills land both in ledgers that write them and in
/// ledgers that only gather them (which the next open re-executes).
const INDEX_BATCH: IndexBatch = IndexBatch { txs: 4 * TXS_PER_LEDGER, ledgers: 4 };
const OUTPUTS_PER_TX: usize = 2;
const SENDERS: usize = 64;
const FILLERS: u64 = 1_000;
/// A writer stops by itself after this long, should nobody kill it.
const WRITER_LIFETIME_MAX: Duration = Duration::from_secs(30);
/// Longest wait for a writer to open the store.
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn chain() -> TestChain {
    TestChain::new(SENDERS, FILLERS)
}

/// The writer: opens the store and commits ledgers until killed. Prints `start H` once open at
/// head H, `begin H` before committing ledger H and `committed H` once the commit returned.
#[test]
fn writer_process() {
    let Some(dir) = env::var_os(WRITER_DIR) else { return };
    let durability = match env::var(WRITER_DURABILITY).as_deref() {
        Ok("safe-nosync") => Durability::SafeNoSync,
        _ => Durability::Durable,
    };
    let chain = chain();
    let (mut store, mut state) = Store::open_with(
        &dir,
        StoreOptions {
            durability,
            index_batch: INDEX_BATCH,
            index_in_background: env::var(WRITER_BACKGROUND).as_deref() == Ok("1"),
            without_query_indexes: false,
            // As a node's store: the replay window's stored ids in the table, behind a filter.
            replay_filter_bytes: 1 << 20,
            retention: None,
        },
    )
    .unwrap_or_else(|e| panic!("writer: open: {e}"));
    println!("start {}", state.head().height);
    let started = Instant::now();
    while started.elapsed() < WRITER_LIFETIME_MAX {
        let (applied, transactions) = chain.apply_next(&mut state, TXS_PER_LEDGER, OUTPUTS_PER_TX);
        let certificate = chain.certify(&applied);
        let height = applied.header.height;
        println!("begin {height}");
        store
            .commit(LedgerToCommit {
                applied: &applied,
                transactions: &transactions,
                certificate: &certificate,
                state: &state,
            })
            .unwrap_or_else(|e| panic!("writer: commit {height}: {e}"));
        state.spill_replay().unwrap_or_else(|e| panic!("writer: spill {height}: {e}"));
        println!("committed {height}");
    }
}

/// What one writer run printed.
#[derive(Debug, Default)]
struct Run {
    start: Option<u64>,
    committed: Option<u64>,
    /// Killed between `begin` and `committed`.
    in_commit: bool,
}

#[test]
fn killed_writer_leaves_a_whole_prefix() {
    let seed = env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    println!("crash test seed {seed} (replay with CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let t0 = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = Store::create(dir.path(), &chain().genesis_toml).unwrap();
    drop(store);

    let exe = env::current_exe().unwrap();
    let mut head = 0u64;
    let mut acknowledged = 0u64;
    let mut in_commit = 0usize;
    let mut background_before = false;
    for round in 0..KILLS {
        let durability = if round % 2 == 0 { "durable" } else { "safe-nosync" };
        // Index batches written inline, then on their own thread, two rounds each: with the
        // kill kinds below every combination comes up.
        let background = (round / 2) % 2 == 1;
        let delay = Duration::from_millis(rng.gen_range(DELAY_MS));
        let kill = match round % 3 {
            0 => Kill::FromSpawn(delay),
            1 => Kill::AfterStart(delay),
            _ => Kill::InCommit(delay, Duration::from_micros(rng.gen_range(COMMIT_DELAY_US))),
        };
        let run = run_and_kill(&exe, dir.path(), durability, background, kill);

        if let Some(start) = run.start {
            assert_eq!(start, head, "round {round}: the writer must continue from the verified head");
        }
        if let Some(c) = run.committed {
            acknowledged = c;
        }
        in_commit += usize::from(run.in_commit);
        let report = match verify(dir.path()) {
            Ok(r) => r,
            Err(e) => panic!("round {round} (seed {seed}): store does not verify after a kill: {e}"),
        };
        let verified = report.heights_checked - 1;
        // A batch on its own thread may not have landed when the next is gathered: two batches
        // behind at most (until a writer that writes them inline commits once).
        let behind_max = INDEX_BATCH.ledgers * if background || background_before { 2 } else { 1 };
        assert!(
            report.indexed_height <= verified && verified - report.indexed_height < behind_max,
            "round {round}: indexed height {} with head {verified}",
            report.indexed_height
        );
        // A writer that committed inline caught the tables up; one on its own thread that may
        // have committed may have left a batch unwritten.
        if background && (run.committed.is_some() || run.in_commit) {
            background_before = true;
        } else if !background && run.committed.is_some() {
            background_before = false;
        }
        assert!(verified >= head, "round {round}: head went back from {head} to {verified}");
        assert!(
            verified == acknowledged || (verified == acknowledged + 1 && run.in_commit),
            "round {round}: head {verified}, last acknowledged commit {acknowledged} ({run:?})"
        );
        let (store, state) = match Store::open(dir.path()) {
            Ok(s) => s,
            Err(e) => panic!("round {round} (seed {seed}): store does not open after a kill: {e}"),
        };
        assert_eq!(state.head_hash(), report.head_hash);
        assert_eq!(store.head().unwrap().height, verified);
        drop(store);
        head = verified;
        acknowledged = verified;
        println!(
            "round {round:2}: {durability:11} {}{kill:?}: head {head}{}",
            if background { "background " } else { "" },
            if run.in_commit { " (killed inside a commit)" } else { "" },
        );
    }
    // Vacuous unless writers got somewhere between kills.
    assert!(head >= KILLS as u64 / 4, "writers made too little progress: head {head} after {KILLS} kills");
    println!(
        "{KILLS} kills, {in_commit} inside a commit, {head} ledgers of {TXS_PER_LEDGER} transfers, {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// When to kill a writer.
#[derive(Clone, Copy, Debug)]
enum Kill {
    /// This long after spawning it (it may still be opening the store).
    FromSpawn(Duration),
    /// This long after it opened the store.
    AfterStart(Duration),
    /// At its first commit after the first delay, the second delay after it announced it: aims
    /// inside the write transaction.
    InCommit(Duration, Duration),
}

/// Runs a writer on `dir` and SIGKILLs it as `kill` says.
fn run_and_kill(exe: &Path, dir: &Path, durability: &str, background: bool, kill: Kill) -> Run {
    let mut child = Command::new(exe)
        .args(["--exact", "writer_process", "--nocapture", "--test-threads=1", "-q"])
        .env(WRITER_DIR, dir)
        .env(WRITER_DURABILITY, durability)
        .env(WRITER_BACKGROUND, if background { "1" } else { "0" })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut run = Run::default();
    let record = |line: &str, run: &mut Run| {
        let mut words = line.split_whitespace();
        let (Some(word), Some(height)) = (words.next(), words.next().and_then(|h| h.parse::<u64>().ok()))
        else {
            return;
        };
        match word {
            "start" => run.start = Some(height),
            "begin" => run.in_commit = true,
            "committed" => {
                run.committed = Some(height);
                run.in_commit = false;
            }
            _ => {}
        }
    };
    let mut wait_for = |what: &str, run: &mut Run| {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    record(&line, run);
                    if line.starts_with(what) {
                        return;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("the writer printed no {what:?} line within {START_TIMEOUT:?}");
                }
            }
        }
    };
    match kill {
        Kill::FromSpawn(delay) => thread::sleep(delay),
        Kill::AfterStart(delay) => {
            wait_for("start", &mut run);
            thread::sleep(delay);
        }
        Kill::InCommit(delay, in_commit) => {
            wait_for("start", &mut run);
            thread::sleep(delay);
            // Catch up with what it printed meanwhile, then aim at the commit under way or the
            // next one.
            for line in lines.try_iter() {
                record(&line, &mut run);
            }
            if !run.in_commit {
                wait_for("begin", &mut run);
            }
            thread::sleep(in_commit);
        }
    }
    if let Ok(Some(status)) = child.try_wait() {
        panic!("the writer exited by itself ({status}) before it was killed");
    }
    child.kill().unwrap(); // SIGKILL on Unix.
    let status = child.wait().unwrap();
    assert!(!status.success(), "the writer was killed");
    reader.join().unwrap();
    for line in lines.try_iter() {
        record(&line, &mut run);
    }
    run
}
