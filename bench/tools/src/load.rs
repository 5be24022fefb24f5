//! `caasiope bench load --api URL --rate R --duration S --accounts N --key FILE --json`: the
//! load generator. Funds N fresh accounts from the key's account (one transaction per 63 of
//! them, waited for), pre-signs R × S transfers among them (not timed), then submits them to
//! the explorer API at R per second from several connections, and follows the API's event
//! stream to see each one committed. Reports submitted / accepted / committed / rejected (by
//! reason) / busy, committed tx/s against the offered rate (the bound, same run), finality
//! p50/p99 (submit → seen committed on the stream), and, with `--read-threads K`, account reads
//! per second served meanwhile. A progress bar shows on a terminal only.

use std::{
    collections::{BTreeMap, HashMap},
    io::Read,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use api::{TxState, routes};
use engine::{
    Address, Currency, Encode, SecretKey,
    limits::OUTPUTS_MAX,
    tx::{Fee, Leg, TX_VERSION, Transaction, TxId},
};
use exit::Output;
use rayon::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::stats::percentile;

/// Parameters of the load generator.
#[derive(Debug)]
pub(crate) struct LoadBench {
    pub(crate) api: String,
    pub(crate) rate: u64,
    pub(crate) duration_s: u64,
    pub(crate) accounts: usize,
    pub(crate) key: std::path::PathBuf,
    pub(crate) connections: usize,
    pub(crate) read_threads: usize,
    pub(crate) drain_s: u64,
    /// Each transfer's time to live after its scheduled send time (`None`: one expiration for
    /// the whole run); the schedule starts when pre-signing is expected to end.
    pub(crate) ttl_s: Option<u64>,
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(timeout)).build().into()
}

/// GETs `url`: its answer if 200, else the status and the body's text.
fn get_answer<T: DeserializeOwned>(
    agent: &ureq::Agent,
    url: &str,
) -> anyhow::Result<Result<T, (u16, String)>> {
    let mut r = agent.get(url).call().with_context(|| format!("GET {url}"))?;
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().with_context(|| format!("GET {url}: unreadable answer"))?;
    if status != 200 {
        return Ok(Err((status, text)));
    }
    serde_json::from_str(&text).map(Ok).with_context(|| format!("GET {url}: unexpected answer"))
}

/// GETs `url`, whose answer must be a 200.
fn get<T: DeserializeOwned>(agent: &ureq::Agent, url: &str) -> anyhow::Result<T> {
    get_answer(agent, url)?.or_else(|(status, text)| bail!("{url} answered {status}: {text}"))
}

/// What one POST answered.
enum Answer {
    Accepted,
    Rejected(String),
    Busy,
    Failed(String),
}

fn post(agent: &ureq::Agent, url: &str, bytes: &[u8]) -> Answer {
    match agent.post(url).header("content-type", "application/octet-stream").send(bytes) {
        Err(e) => Answer::Failed(e.to_string()),
        Ok(mut r) => {
            let status = r.status().as_u16();
            match status {
                202 => Answer::Accepted,
                503 => Answer::Busy,
                _ => {
                    let body = r.body_mut().read_json::<api::ErrorBody>().ok();
                    let message = body.as_ref().map_or("?", |b| b.error.message.as_str());
                    // The rule's name: the message up to its first detail.
                    let kind = message.split([':', '(']).next().unwrap_or(message).trim().to_owned();
                    Answer::Rejected(format!("{status} {kind}"))
                }
            }
        }
    }
}

/// Submits `txs` and waits until every one is committed (funding, not measured).
fn fund(
    agent: &ureq::Agent,
    api: &str,
    txs: &[(TxId, Vec<u8>)],
    progress: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let url = format!("{api}{}", routes::TRANSACTIONS);
    for (id, bytes) in txs {
        match post(agent, &url, bytes) {
            Answer::Accepted => {}
            Answer::Rejected(why) => bail!("funding transaction {id} refused: {why}"),
            Answer::Busy => bail!("funding transaction {id} refused: the explorer is busy"),
            Answer::Failed(e) => bail!("funding transaction {id}: {e}"),
        }
    }
    let until = Instant::now() + Duration::from_secs(120);
    for (id, _) in txs {
        loop {
            // Not known yet (or the explorer is busy): asked again.
            let answer = get_answer::<api::TxStatus>(agent, &format!("{api}/v1/transactions/{id}"))?.ok();
            match answer.as_ref().map(|a| a.status) {
                Some(TxState::Committed) => break,
                Some(TxState::Rejected) => {
                    let reason = answer.and_then(|a| a.reason).unwrap_or_default();
                    bail!("funding transaction {id} rejected: {reason:?}")
                }
                Some(TxState::Expired) => bail!("funding transaction {id} expired"),
                _ if Instant::now() > until => bail!("funding transaction {id} not committed after 120 s"),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        progress.inc(1);
    }
    Ok(())
}

/// Follows `/v1/stream` from `from`, recording when each transaction of `wanted` is seen.
fn follow(
    api: &str,
    from: u64,
    wanted: &HashMap<TxId, usize>,
    seen: &Mutex<Vec<Option<Instant>>>,
    seen_count: &AtomicU64,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_recv_body(Some(Duration::from_secs(60)))
        .build()
        .into();
    // The id of the last event seen: a stream that breaks resumes right after it.
    let mut last: Option<String> = None;
    let url = format!("{api}{}?from={from}", routes::STREAM);
    while !stop.load(Ordering::Relaxed) {
        let mut request = agent.get(&url);
        if let Some(id) = &last {
            request = request.header("last-event-id", id);
        }
        let Ok(mut r) = request.call() else {
            std::thread::sleep(Duration::from_millis(200));
            continue;
        };
        if r.status() != 200 {
            bail!("GET {url}: status {}", r.status());
        }
        let mut reader = r.body_mut().as_reader();
        let mut text = String::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let n = match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            while let Some(end) = text.find("\n\n") {
                let event: String = text.drain(..end + 2).collect();
                let now = Instant::now();
                let field = |name: &str| {
                    event.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim_start().to_owned())
                };
                if let Some(id) = field("id:") {
                    last = Some(id);
                }
                if field("event:").as_deref() == Some(routes::STREAM_EVENT_TRANSACTION) {
                    let Some(data) = field("data:") else { continue };
                    let Ok(tx) = serde_json::from_str::<api::TxRef>(&data) else { continue };
                    if let Some(&j) = wanted.get(&tx.id) {
                        if let Ok(mut s) = seen.lock() {
                            if s[j].is_none() {
                                s[j] = Some(now);
                                seen_count.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The progress bar (drawn on a terminal only).
fn progress_bar() -> indicatif::ProgressBar {
    let progress = indicatif::ProgressBar::new(0);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress
}

/// What every transaction of a run shares: its chain, fee and expiration (or how the
/// transfers' expirations follow their send times).
struct Terms<'a> {
    chain_id: &'a str,
    min_fee: i64,
    expiration_ms: i64,
    per_transfer: Option<PerTransfer>,
}

/// Transfer j expires `ttl_ms` after its scheduled send time, `start_ms + j / rate`.
struct PerTransfer {
    start_ms: i64,
    rate: u64,
    ttl_ms: i64,
}

impl Terms<'_> {
    /// The expiration of transfer `j`.
    fn transfer_expiration(&self, j: usize) -> i64 {
        self.per_transfer.as_ref().map_or(self.expiration_ms, |p| {
            let sent = p.start_ms.saturating_add(i64::try_from(j as u64 * 1000 / p.rate).unwrap_or(i64::MAX));
            sent.saturating_add(p.ttl_ms)
        })
    }
}

/// One transfer of CAS from `payer` (who pays the fee) to `to`, signed by `key`.
fn signed(
    terms: &Terms<'_>,
    expiration_ms: i64,
    payer: Address,
    to: Vec<Leg>,
    message: Vec<u8>,
    key: &SecretKey,
) -> (TxId, Vec<u8>) {
    let amount = to.iter().map(|l| l.amount).sum();
    let tx = Transaction {
        version: TX_VERSION,
        expiration_ms,
        declarations: vec![],
        inputs: vec![Leg { address: payer, currency: Currency::CAS, amount }],
        outputs: to,
        message,
        fee: Fee { payer, amount: terms.min_fee },
    };
    let id = tx.id(terms.chain_id);
    (id, tx.sign(terms.chain_id, &[key]).to_bytes())
}

/// The funding transactions: `per_account` to each of `addresses` from the key's account, as
/// many to a transaction as its outputs allow.
fn funding(
    terms: &Terms<'_>,
    key: &SecretKey,
    addresses: &[Address],
    per_account: i64,
) -> Vec<(TxId, Vec<u8>)> {
    let payer = key.public_key().address();
    addresses
        .chunks(OUTPUTS_MAX - 1)
        .enumerate()
        .map(|(i, chunk)| {
            let to = chunk
                .iter()
                .map(|a| Leg { address: *a, currency: Currency::CAS, amount: per_account })
                .collect();
            signed(terms, terms.expiration_ms, payer, to, format!("bench load funding {i}").into_bytes(), key)
        })
        .collect()
}

/// The `total` transfers the run submits, signed in parallel before it starts. Transfer j:
/// account j % n pays 1 + j / n units to another; distinct amounts per sender keep every id
/// distinct.
fn presign(
    terms: &Terms<'_>,
    keys: &[SecretKey],
    addresses: &[Address],
    total: usize,
) -> Vec<(TxId, Vec<u8>)> {
    let n = keys.len();
    (0..total)
        .into_par_iter()
        .map(|j| {
            let from = j % n;
            let to = (j.wrapping_mul(7919) + 1) % n;
            let to = if to == from { (to + 1) % n } else { to };
            let amount = 1 + (j / n) as i64;
            let to = vec![Leg { address: addresses[to], currency: Currency::CAS, amount }];
            signed(terms, terms.transfer_expiration(j), addresses[from], to, vec![], &keys[from])
        })
        .collect()
}

/// What the stream follower records, shared with the run.
struct Seen {
    /// When each transfer was seen committed, by index.
    at: Mutex<Vec<Option<Instant>>>,
    count: AtomicU64,
    stop: AtomicBool,
}

/// Starts following the stream after ledger `head` for the transfers of `signed`.
fn start_follower(
    api: &str,
    head: u64,
    signed: &[(TxId, Vec<u8>)],
) -> anyhow::Result<(Arc<Seen>, std::thread::JoinHandle<anyhow::Result<()>>)> {
    let wanted: HashMap<TxId, usize> = signed.iter().enumerate().map(|(j, (id, _))| (*id, j)).collect();
    let seen = Arc::new(Seen {
        at: Mutex::new(vec![None::<Instant>; signed.len()]),
        count: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let (api, shared) = (api.to_owned(), seen.clone());
    let follower = std::thread::Builder::new()
        .name("load-follow".into())
        .spawn(move || follow(&api, head + 1, &wanted, &shared.at, &shared.count, &shared.stop))?;
    Ok((seen, follower))
}

/// The account readers (`--read-threads`) and what they counted.
struct Readers {
    reads: Arc<AtomicU64>,
    latencies_ms: Arc<Mutex<Vec<f64>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Readers {
    /// Starts `threads` readers of the funded accounts' balances, as fast as the API answers.
    fn start(api: &str, addresses: &[Address], threads: usize) -> Self {
        let reads = Arc::new(AtomicU64::new(0));
        let latencies_ms = Arc::new(Mutex::new(Vec::<f64>::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let addresses = addresses.to_vec();
        let threads = (0..threads)
            .map(|t| {
                let (api, addresses, reads, lat, stop) =
                    (api.to_owned(), addresses.clone(), reads.clone(), latencies_ms.clone(), stop.clone());
                std::thread::spawn(move || read_accounts(&api, &addresses, t, &reads, &lat, &stop))
            })
            .collect();
        Self { reads, latencies_ms, stop, threads }
    }

    /// Stops the readers and returns their latencies (ms, unsorted).
    fn stop(self) -> Vec<f64> {
        self.stop.store(true, Ordering::Relaxed);
        for r in self.threads {
            let _ = r.join();
        }
        self.latencies_ms.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// One reader: reads accounts from the `t`-th on until `stop`, counting the good answers.
fn read_accounts(
    api: &str,
    addresses: &[Address],
    t: usize,
    reads: &AtomicU64,
    lat: &Mutex<Vec<f64>>,
    stop: &AtomicBool,
) {
    let agent = agent(Duration::from_secs(10));
    let mut local = Vec::new();
    let mut i = t * 7;
    while !stop.load(Ordering::Relaxed) {
        let url = format!("{api}/v1/accounts/{}", addresses[i % addresses.len()]);
        let t0 = Instant::now();
        // The whole answer is read (not parsed: the client's cost is not the API's).
        let ok = agent.get(&url).call().is_ok_and(|mut r| {
            r.status() == 200 && r.body_mut().read_to_string().is_ok_and(|b| b.contains("balances"))
        });
        if ok {
            reads.fetch_add(1, Ordering::Relaxed);
            local.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        i += 1;
    }
    if let Ok(mut l) = lat.lock() {
        l.extend(local);
    }
}

/// What the submission recorded, shared by the sender threads.
struct Submissions {
    /// When each transfer was sent, by index.
    at: Vec<Mutex<Option<Instant>>>,
    /// The answers other than accepted, by kind.
    answers: Mutex<BTreeMap<String, u64>>,
    accepted: AtomicU64,
    sent: AtomicU64,
}

/// The submission's span, as the report uses it.
struct Offered {
    start: Instant,
    seconds: f64,
    /// Account reads done while the load was offered.
    reads: u64,
}

/// Submits `signed` at `b.rate` per second over `b.connections` connections (connection t
/// sends transfers t, t + connections, …), until the last is sent.
fn submit(
    b: &LoadBench,
    api: &str,
    signed: Vec<(TxId, Vec<u8>)>,
    subs: &Arc<Submissions>,
    seen: &Seen,
    reads: &AtomicU64,
    progress: &indicatif::ProgressBar,
) -> Offered {
    let signed = Arc::new(signed);
    let start = Instant::now();
    let reads_before = reads.load(Ordering::Relaxed);
    let interval = 1.0 / b.rate as f64;
    let senders: Vec<_> = (0..b.connections)
        .map(|t| {
            let (api, signed, subs) = (api.to_owned(), signed.clone(), subs.clone());
            let connections = b.connections;
            std::thread::spawn(move || send_share(&api, &signed, t, connections, start, interval, &subs))
        })
        .collect();
    while senders.iter().any(|s| !s.is_finished()) {
        progress.set_position(subs.sent.load(Ordering::Relaxed));
        progress.set_message(format!("submitting, {} committed", seen.count.load(Ordering::Relaxed)));
        std::thread::sleep(Duration::from_millis(100));
    }
    for s in senders {
        let _ = s.join();
    }
    Offered {
        start,
        seconds: start.elapsed().as_secs_f64(),
        reads: reads.load(Ordering::Relaxed) - reads_before,
    }
}

/// One connection's share: transfers `t`, `t + connections`, … each at its due time.
fn send_share(
    api: &str,
    signed: &[(TxId, Vec<u8>)],
    t: usize,
    connections: usize,
    start: Instant,
    interval: f64,
    subs: &Submissions,
) {
    let agent = agent(Duration::from_secs(30));
    let url = format!("{api}{}", routes::TRANSACTIONS);
    let mut j = t;
    while j < signed.len() {
        let due = start + Duration::from_secs_f64(j as f64 * interval);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        if let Ok(mut s) = subs.at[j].lock() {
            *s = Some(Instant::now());
        }
        let answer = post(&agent, &url, &signed[j].1);
        subs.sent.fetch_add(1, Ordering::Relaxed);
        let key = match answer {
            Answer::Accepted => {
                subs.accepted.fetch_add(1, Ordering::Relaxed);
                None
            }
            Answer::Rejected(why) => Some(format!("rejected {why}")),
            Answer::Busy => Some("busy".to_owned()),
            Answer::Failed(e) => Some(format!("failed {e}")),
        };
        if let (Some(k), Ok(mut a)) = (key, subs.answers.lock()) {
            *a.entry(k).or_default() += 1;
        }
        j += connections;
    }
}

/// Waits up to `drain_s` for what was accepted to commit, then stops the follower.
fn drain(seen: &Seen, accepted: u64, drain_s: u64, progress: &indicatif::ProgressBar) {
    progress.set_message("waiting for commits");
    let until = Instant::now() + Duration::from_secs(drain_s);
    while seen.count.load(Ordering::Relaxed) < accepted && Instant::now() < until {
        progress.set_position(seen.count.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(100));
    }
    seen.stop.store(true, Ordering::Relaxed);
    progress.finish_and_clear();
}

/// What the stream showed of the submitted transfers.
struct Finality {
    /// Submit → seen committed of every transfer seen committed, ms, sorted.
    latencies_ms: Vec<f64>,
    last_commit: Instant,
}

/// The finality of every transfer seen committed.
fn finality(seen: &Seen, subs: &Submissions, start: Instant) -> Finality {
    let seen = seen.at.lock().map(|s| s.clone()).unwrap_or_default();
    let mut latencies = Vec::new();
    let mut last_commit = start;
    for (j, s) in seen.iter().enumerate() {
        if let (Some(s), Some(at)) = (s, subs.at[j].lock().ok().and_then(|a| *a)) {
            latencies.push(s.saturating_duration_since(at).as_secs_f64() * 1e3);
            last_commit = last_commit.max(*s);
        }
    }
    latencies.sort_by(f64::total_cmp);
    Finality { latencies_ms: latencies, last_commit }
}

/// Runs the load generator: fund the accounts, pre-sign, follow the stream, submit at the
/// rate (with the readers on), drain, report.
pub(crate) fn run(b: &LoadBench) -> anyhow::Result<Output> {
    let api = b.api.trim_end_matches('/').to_owned();
    let http = agent(Duration::from_secs(30));
    let api::Status { chain_id, min_fee, max_ttl_ms, timestamp_ms: head_ms, .. } =
        get(&http, &format!("{api}{}", routes::STATUS))?;
    let key = replica::identity::read_key_file(&b.key, "key file").with_context(|| {
        format!("the funding key {} (--key FILE: a funded account's secret key)", b.key.display())
    })?;
    let total = usize::try_from(b.rate.saturating_mul(b.duration_s)).context("too many transactions")?;
    let n = b.accounts;
    let rounds = total.div_ceil(n) as i64;
    // Each account pays 1 to `rounds` units (see presign), a fee for each, and one fee more.
    let per_account = rounds * (rounds + 1) / 2 + rounds * min_fee + min_fee;
    let progress = progress_bar();
    progress.set_message("keys and funding");
    let keys: Vec<SecretKey> = (0..n).into_par_iter().map(|_| SecretKey::generate()).collect();
    let addresses: Vec<Address> = keys.par_iter().map(|k| k.public_key().address()).collect();
    let now = engine::clock::now_ms().max(head_ms);
    // Ledger times trail the clock a little: an expiration is kept a minute inside the longest
    // time to live after now (a 60-minute run's transfers would be refused at exactly it).
    let ttl_max_ms = (max_ttl_ms - 60_000).max(max_ttl_ms / 2);
    let expiration_ms = now + ttl_max_ms.min(((b.duration_s + b.drain_s) * 1000 + 120_000) as i64);
    if let Some(ttl) = b.ttl_s.filter(|ttl| ttl.saturating_mul(1000) > ttl_max_ms as u64) {
        anyhow::bail!(
            "--ttl {ttl}: at most {} s on this chain (its longest time to live less a minute)",
            ttl_max_ms / 1000
        )
    }
    let terms = Terms { chain_id: &chain_id, min_fee, expiration_ms, per_transfer: None };
    let funding = funding(&terms, &key, &addresses, per_account);
    progress.set_length(funding.len() as u64);
    fund(&http, &api, &funding, &progress)?;
    // With --ttl, transfer j is scheduled at start + j / rate, `start` being when pre-signing
    // should end (a long run's takes minutes): timed on a sample, with a margin; the run waits
    // for it if pre-signing ends sooner, so every transfer leaves with its whole TTL ahead.
    let terms = match b.ttl_s {
        Some(ttl) => {
            let sample = total.min(20_000);
            let timer = Instant::now();
            drop(presign(&terms, &keys, &addresses, sample));
            let estimate_s =
                timer.elapsed().as_secs_f64() * total as f64 / sample.max(1) as f64 * 1.25 + 10.0;
            let start_ms = engine::clock::now_ms() + (estimate_s * 1000.0) as i64;
            Terms {
                per_transfer: Some(PerTransfer { start_ms, rate: b.rate, ttl_ms: ttl as i64 * 1000 }),
                ..terms
            }
        }
        None => terms,
    };
    progress.set_message("pre-signing");
    progress.set_position(0);
    progress.set_length(total as u64);
    let signed = presign(&terms, &keys, &addresses, total);
    if let Some(p) = &terms.per_transfer {
        let early = p.start_ms - engine::clock::now_ms();
        if early > 0 {
            std::thread::sleep(Duration::from_millis(early as u64));
        }
    }
    let head = get::<api::Ledger>(&http, &format!("{api}{}", routes::LEDGER_LATEST))?.height;
    let (seen, follower) = start_follower(&api, head, &signed)?;
    let readers = Readers::start(&api, &addresses, b.read_threads);
    progress.set_message("submitting");
    let subs = Arc::new(Submissions {
        at: (0..total).map(|_| Mutex::new(None)).collect(),
        answers: Mutex::new(BTreeMap::new()),
        accepted: AtomicU64::new(0),
        sent: AtomicU64::new(0),
    });
    let offered = submit(b, &api, signed, &subs, &seen, &readers.reads, &progress);
    let mut read_lat = readers.stop();
    drain(&seen, subs.accepted.load(Ordering::Relaxed), b.drain_s, &progress);
    let finality = finality(&seen, &subs, offered.start);
    read_lat.sort_by(f64::total_cmp);
    drop(follower);
    Output::json(&report(b, &api, &chain_id, &subs, &offered, &finality, &read_lat))
}

/// The JSON report of a run.
fn report(
    b: &LoadBench,
    api: &str,
    chain_id: &str,
    subs: &Submissions,
    offered: &Offered,
    finality: &Finality,
    read_lat: &[f64],
) -> serde_json::Value {
    let (latencies, last_commit) = (finality.latencies_ms.as_slice(), finality.last_commit);
    let committed = latencies.len() as u64;
    let commit_window =
        last_commit.saturating_duration_since(offered.start).as_secs_f64().max(offered.seconds);
    let committed_per_s = committed as f64 / commit_window;
    let answers = subs.answers.lock().map(|a| a.clone()).unwrap_or_default();
    let sent = subs.sent.load(Ordering::Relaxed);
    json!({
        "bench": "load",
        "api": api,
        "chain_id": chain_id,
        "accounts": b.accounts,
        "connections": b.connections,
        "offered_rate_tx_per_s": b.rate,
        "offered_duration_s": b.duration_s,
        "submitted": sent,
        "submit_rate_achieved_tx_per_s": sent as f64 / offered.seconds,
        "accepted": subs.accepted.load(Ordering::Relaxed),
        "not_accepted": answers,
        "committed": committed,
        "committed_tx_per_s": committed_per_s,
        "bound_tx_per_s": b.rate,
        "ratio": committed_per_s / b.rate as f64,
        "finality_ms": { "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99), "max": latencies.last().copied().unwrap_or(0.0) },
        "reads": {
            "threads": b.read_threads,
            "count": offered.reads,
            "per_s": offered.reads as f64 / offered.seconds,
            "latency_ms": { "p50": percentile(read_lat, 0.5), "p99": percentile(read_lat, 0.99) },
        },
    })
}
