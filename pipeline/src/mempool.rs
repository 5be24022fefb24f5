//! The one mempool of a process: the validated transactions waiting for a ledger, in fee order,
//! with admission against the post-state, the rebase onto each committed state, and the busy
//! check clients are refused by.
//!
//! Shared (`Arc<Mempool>`) by two threads, each its only writer of one kind: the intake's
//! admission stage ([`crate::Intake`]) admits client and peer transactions against its
//! post-state and rebases, and the consensus host (`consensus::Chain`) builds proposals from it, adds the bodies it fetched for a proposal (verified, not admitted), and removes what
//! a committed ledger included. Each transaction is held once, behind an [`Arc`]: a proposal's
//! candidates and a check's bodies are reference counts, not copies.
//!
//! [chain]: https://docs.rs/ "consensus::Chain (the host's side)"

use std::{
    cmp::Reverse,
    collections::BTreeSet,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicI64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use engine::{
    Encode,
    state::BlockExecution,
    tx::TxId,
    validate::{TxError, VerifiedTx},
};

// Keyed by transaction ids; foldhash is seeded per process (no HashDoS from chosen ids) and
// several times cheaper than SipHash on 32-byte keys (the profile showed it).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Bounds of a mempool. A node takes them from its limits module (`caasiope-limits`), so there
/// is no default here.
#[derive(Clone, Copy, Debug)]
pub struct MempoolConfig {
    /// Most transactions held: past it, what arrives is dropped unjudged.
    pub txs_max: usize,
    /// Most bytes of canonical encodings held (the pool's memory is a small multiple of it):
    /// past it too, what arrives is dropped unjudged.
    pub bytes_max: usize,
    /// Pending transactions at which clients are refused as busy (below `txs_max`, so the
    /// other validators' gossip and the bodies a proposal names still find room): the most,
    /// whatever `busy_wait` says.
    pub busy_txs: usize,
    /// Refuse clients by the rate ledgers commit at, so that a transaction admitted waits a
    /// bounded time rather than behind seconds of others (`None`: by `busy_txs` alone).
    pub busy_wait: Option<BusyWait>,
    /// Transactions waiting for verification at which clients are refused as busy (the other
    /// validators' gossip waits in the same queue: a deep one means proposals name transactions
    /// this validator has not verified yet).
    pub busy_queued: usize,
}

/// Admission by the commit rate: clients are refused as busy while more transactions wait
/// (pending, and received but not yet verified) than `intervals` times what commits in an
/// `interval` at the rate the last ledgers committed (measured on this process's clock over
/// the last [`DRAIN_LEDGERS`] commits) or `intervals` times the last ledger's count, whichever
/// is more — never fewer than `floor_txs`, nor more than `busy_txs`.
///
/// `intervals` must be more than one: a ledger may then take all that waited, and the next
/// `intervals` times as many, so when the load grows admission grows with it, ledger after
/// ledger, up to what the network can commit, and stops there: past it, transactions wait about
/// `intervals` intervals (plus the ledger deciding them) before they commit, and the rest are
/// refused with a reason the client can retry on. The last ledger's count is what keeps that
/// growth when ledgers come slower than configured (large blocks at the peak).
#[derive(Clone, Copy, Debug)]
pub struct BusyWait {
    /// The configured interval between ledgers.
    pub interval: Duration,
    /// How many intervals a client's transaction should wait for its ledger at most.
    pub intervals: f64,
    /// Transactions admitted whatever the rate (an idle network takes a burst; the rate has
    /// room to grow from nothing).
    pub floor_txs: usize,
}

/// Commits the rate is measured over: the last three, so the estimate spans two intervals.
pub const DRAIN_LEDGERS: usize = 3;

/// The last commits' times and sizes, and the admission limit they give.
#[derive(Debug, Default)]
struct Drain {
    commits: std::collections::VecDeque<(Instant, usize)>,
}

impl Drain {
    /// Records a commit of `txs` at `at`; the transactions waiting at which clients are
    /// refused, by `rule`, within `[floor_txs, cap]`.
    fn record(&mut self, at: Instant, txs: usize, rule: BusyWait, cap: usize) -> usize {
        if self.commits.len() == DRAIN_LEDGERS {
            self.commits.pop_front();
        }
        self.commits.push_back((at, txs));
        let floor = rule.floor_txs.min(cap);
        // Not empty: a commit was just pushed.
        let (first, _) = self.commits[0];
        let span = at.saturating_duration_since(first).as_secs_f64();
        if span <= 0.0 {
            return floor;
        }
        // The first commit only opens the span: what committed after it, over it.
        let committed: usize = self.commits.iter().skip(1).map(|(_, n)| n).sum();
        let limit = (committed as f64 / span * rule.interval.as_secs_f64()).max(txs as f64) * rule.intervals;
        // `as` saturates: an endless wait is the cap.
        (limit as usize).clamp(floor, cap)
    }
}

/// Why the pool did not take a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Already in the pool.
    #[error("already pending")]
    Known,
    /// Already in a committed ledger.
    #[error("already committed")]
    Included,
    /// Expired at the last committed ledger's time.
    #[error("expired")]
    Expired,
    /// The pool is at its limit.
    #[error("pool full")]
    Full,
}

/// What admission made of one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Valid on the post-state: pooled (and gossiped on, if a client's).
    Admitted,
    /// Invalid: the rule it breaks.
    Refused(TxError),
    /// Not judged: the pool was full, or the process is stopping.
    Dropped,
}

/// A pending transaction.
#[derive(Debug)]
struct Entry {
    tx: Arc<VerifiedTx>,
    /// Arrival number: the order of admission, and the tie-break of equal fees.
    seq: u64,
    /// Length of the canonical encoding (at most `TX_BYTES_MAX`: it was decoded within it).
    bytes: u32,
    /// Admitted against the post-state (so applied again at each rebase); a body fetched for
    /// a proposal or restored from the log is not — it may rightly be the other half of a
    /// double spend this node refused — and leaves only when committed or expired.
    admitted: bool,
}

#[derive(Debug, Default)]
struct Pool {
    entries: HashMap<TxId, Entry>,
    /// Fee priority (DESIGN §4), then arrival.
    order: BTreeSet<(Reverse<i64>, u64, TxId)>,
    next_seq: u64,
    /// Entries admitted against the post-state.
    admitted: usize,
    /// Bytes of the entries' canonical encodings.
    bytes: usize,
}

impl Pool {
    /// Pools `tx`, whose canonical encoding is `bytes` long.
    fn insert(&mut self, tx: Arc<VerifiedTx>, admitted: bool, bytes: u32) -> Result<(), PoolError> {
        if let Some(e) = self.entries.get_mut(&tx.id) {
            if admitted && !e.admitted {
                e.admitted = true;
                self.admitted += 1;
            }
            return Err(PoolError::Known);
        }
        self.admitted += usize::from(admitted);
        self.bytes += bytes as usize;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert((Reverse(tx.tx.tx.fee.amount), seq, tx.id));
        self.entries.insert(tx.id, Entry { tx, seq, bytes, admitted });
        Ok(())
    }

    fn remove(&mut self, id: &TxId) -> bool {
        match self.entries.remove(id) {
            Some(e) => {
                self.admitted -= usize::from(e.admitted);
                self.bytes -= e.bytes as usize;
                self.order.remove(&(Reverse(e.tx.tx.tx.fee.amount), e.seq, *id));
                true
            }
            None => false,
        }
    }
}

/// The mempool (see the module's documentation).
#[derive(Debug)]
pub struct Mempool {
    cfg: MempoolConfig,
    pool: Mutex<Pool>,
    /// The pool's size, read without the lock (busy checks, metrics).
    len: AtomicUsize,
    /// The bytes of its entries' encodings, read without the lock (admission's room).
    bytes: AtomicUsize,
    /// Transactions submitted to the intake and not yet verified.
    queued: AtomicI64,
    /// Transactions waiting at which clients are refused now (`busy_txs`, or by the commit
    /// rate: [`BusyWait`]).
    admit_txs: AtomicUsize,
    drain: Mutex<Drain>,
}

impl Mempool {
    /// An empty mempool.
    pub fn new(cfg: MempoolConfig) -> Self {
        Self {
            cfg,
            pool: Mutex::default(),
            len: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            queued: AtomicI64::new(0),
            admit_txs: AtomicUsize::new(match cfg.busy_wait {
                Some(rule) => rule.floor_txs.min(cfg.busy_txs),
                None => cfg.busy_txs,
            }),
            drain: Mutex::default(),
        }
    }

    /// The pool; a thread that panicked holding it left it consistent (every method finishes
    /// its change before it can panic), so the poison is cleared.
    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_len(&self, pool: &Pool) {
        self.len.store(pool.entries.len(), Ordering::Relaxed);
        self.bytes.store(pool.bytes, Ordering::Relaxed);
    }

    /// Bytes of the pending transactions' canonical encodings.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Transactions pending.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Transactions submitted to the intake and not yet verified: how far verification is
    /// behind.
    pub fn queued_txs(&self) -> u64 {
        u64::try_from(self.queued.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Counts transactions into (`n` > 0) or out of (`n` < 0) the verification queue.
    pub(crate) fn queue(&self, n: i64) {
        self.queued.fetch_add(n, Ordering::Relaxed);
    }

    /// Tells the pool a ledger committed `txs` transactions now (the consensus host, at each
    /// commit): the commit rate that admission by [`BusyWait`] follows.
    pub fn committed(&self, txs: usize) {
        let Some(rule) = self.cfg.busy_wait else { return };
        let limit = self.drain.lock().unwrap_or_else(std::sync::PoisonError::into_inner).record(
            Instant::now(),
            txs,
            rule,
            self.cfg.busy_txs,
        );
        self.admit_txs.store(limit, Ordering::Relaxed);
    }

    /// Transactions waiting (pending, and received but not verified) at which client
    /// submissions are refused now.
    pub fn admit_limit(&self) -> usize {
        self.admit_txs.load(Ordering::Relaxed)
    }

    /// Why client submissions are refused now, if they are: more transactions wait for a
    /// ledger than commit within the wait admission allows ([`BusyWait`]; or than `busy_txs`),
    /// or verification is behind.
    pub fn busy(&self) -> Option<String> {
        let (pool, queued) = (self.len(), self.queued_txs());
        let limit = self.admit_limit();
        let waiting = pool.saturating_add(usize::try_from(queued).unwrap_or(usize::MAX));
        if waiting >= limit {
            Some(format!(
                "{waiting} transactions waiting for a ledger (admitting up to {limit} now), retry later"
            ))
        } else if queued >= self.cfg.busy_queued as u64 {
            Some(format!("{queued} transactions waiting for verification, retry later"))
        } else {
            None
        }
    }

    /// A pending transaction.
    pub fn get(&self, id: &TxId) -> Option<Arc<VerifiedTx>> {
        self.pool().entries.get(id).map(|e| e.tx.clone())
    }

    /// Whether a transaction is pending.
    pub fn contains(&self, id: &TxId) -> bool {
        self.pool().entries.contains_key(id)
    }

    /// Whether `refusal` of transaction `id` only says it is already pending: a second copy,
    /// whose fate is the first one's (a client that sends it again is answered as accepted).
    pub fn pending_again(&self, id: &TxId, refusal: &TxError) -> bool {
        matches!(refusal, TxError::Replayed(_)) && self.contains(id)
    }

    /// Those of `ids` not pending, in their order.
    pub fn missing(&self, ids: &[TxId]) -> Vec<TxId> {
        let pool = self.pool();
        ids.iter().filter(|id| !pool.entries.contains_key(id)).copied().collect()
    }

    /// The pending transactions of `ids` in their order and the bytes of their encodings, or
    /// the first id not pending.
    pub fn bodies(&self, ids: &[TxId]) -> Result<(Vec<Arc<VerifiedTx>>, usize), TxId> {
        let pool = self.pool();
        let mut bytes = 0;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let e = pool.entries.get(id).ok_or(*id)?;
            bytes += e.bytes as usize;
            out.push(e.tx.clone());
        }
        Ok((out, bytes))
    }

    /// A proposal's candidates: pending transactions in fee order (then arrival) while their
    /// encodings stay within `bytes_max`, those `skip` names left out.
    pub fn candidates(&self, bytes_max: usize, skip: impl Fn(&TxId) -> bool) -> Vec<Arc<VerifiedTx>> {
        let pool = self.pool();
        let mut bytes = 0;
        pool.order
            .iter()
            .filter(|(_, _, id)| !skip(id))
            .filter_map(|(_, _, id)| pool.entries.get(id))
            .take_while(|e| {
                bytes += e.bytes as usize;
                bytes <= bytes_max
            })
            .map(|e| e.tx.clone())
            .collect()
    }

    /// Adds a verified transaction that was not admitted against the post-state (a body a
    /// proposal names, one restored from the log): it stays until committed or expired.
    pub fn insert(&self, tx: VerifiedTx) -> Result<(), PoolError> {
        let bytes = encoded_len(&tx, &mut Vec::new());
        let mut pool = self.pool();
        let full = pool.entries.len() >= self.cfg.txs_max || pool.bytes + bytes as usize > self.cfg.bytes_max;
        if full && !pool.entries.contains_key(&tx.id) {
            return Err(PoolError::Full);
        }
        let result = pool.insert(Arc::new(tx), false, bytes);
        self.set_len(&pool);
        result
    }

    /// Removes these transactions (committed, or found invalid by a build of the height).
    pub fn remove<'a>(&self, ids: impl IntoIterator<Item = &'a TxId>) {
        let mut pool = self.pool();
        for id in ids {
            pool.remove(id);
        }
        self.set_len(&pool);
    }

    /// Removes what expired at `now_ms` (a committed ledger's time).
    pub fn remove_expired(&self, now_ms: i64) {
        let mut pool = self.pool();
        let expired: Vec<TxId> =
            pool.entries.values().filter(|e| e.tx.tx.tx.expiration_ms <= now_ms).map(|e| e.tx.id).collect();
        for id in &expired {
            pool.remove(id);
        }
        self.set_len(&pool);
    }

    /// Admits a batch against the post-state `exec` in order: each transaction is applied to
    /// it and, if valid there, pooled. Returns those admitted, and the verdict on each of the
    /// batch in its order; what arrives while the pool is full is dropped, not judged.
    pub fn admit(
        &self,
        exec: &mut BlockExecution<'_>,
        batch: Vec<VerifiedTx>,
    ) -> (Vec<Arc<VerifiedTx>>, Vec<(TxId, Verdict)>) {
        let room = self.cfg.txs_max.saturating_sub(self.len());
        let mut room_bytes = self.cfg.bytes_max.saturating_sub(self.bytes());
        let mut admitted = Vec::with_capacity(batch.len().min(room));
        let mut sizes = Vec::with_capacity(batch.len().min(room));
        let mut verdicts = Vec::with_capacity(batch.len());
        let mut scratch = Vec::new();
        for v in batch {
            let bytes = encoded_len(&v, &mut scratch);
            if admitted.len() >= room || bytes as usize > room_bytes {
                verdicts.push((v.id, Verdict::Dropped));
                continue;
            }
            match exec.apply_tx(&v) {
                Ok(_) => {
                    verdicts.push((v.id, Verdict::Admitted));
                    admitted.push(Arc::new(v));
                    sizes.push(bytes);
                    room_bytes -= bytes as usize;
                }
                Err(e) => verdicts.push((v.id, Verdict::Refused(e))),
            }
        }
        if !admitted.is_empty() {
            let mut pool = self.pool();
            for (tx, bytes) in admitted.iter().zip(sizes) {
                // A body fetched earlier is now admitted too (the post-state holds it).
                let _ = pool.insert(tx.clone(), true, bytes);
            }
            self.set_len(&pool);
        }
        (admitted, verdicts)
    }

    /// Whether the admitted transactions are exactly `ids` (the rest of a post-state whose
    /// first transactions a committed ledger included: nothing admitted left the pool since,
    /// so the post-state can move onto the ledger without applying them again).
    pub fn admitted_are(&self, ids: &[TxId]) -> bool {
        let pool = self.pool();
        pool.admitted == ids.len() && ids.iter().all(|id| pool.entries.get(id).is_some_and(|e| e.admitted))
    }

    /// Rebase: applies the admitted transactions again, in admission order, to `exec` (a new
    /// post-state on the newly committed state) and removes those no longer valid there,
    /// returned with their rule.
    pub fn readmit(&self, exec: &mut BlockExecution<'_>) -> Vec<(TxId, TxError)> {
        let mut pending: Vec<(u64, Arc<VerifiedTx>)> = {
            let pool = self.pool();
            pool.entries.values().filter(|e| e.admitted).map(|e| (e.seq, e.tx.clone())).collect()
        };
        pending.sort_unstable_by_key(|(seq, _)| *seq);
        let mut refused = Vec::new();
        for (_, v) in &pending {
            if let Err(e) = exec.apply_tx(v) {
                refused.push((v.id, e));
            }
        }
        if !refused.is_empty() {
            self.remove(refused.iter().map(|(id, _)| id));
        }
        refused
    }
}

/// The length of `tx`'s canonical encoding (at most `TX_BYTES_MAX`: it was decoded within it),
/// measured in `scratch`.
fn encoded_len(tx: &VerifiedTx, scratch: &mut Vec<u8>) -> u32 {
    scratch.clear();
    tx.tx.encode(scratch);
    u32::try_from(scratch.len()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use engine::{
        Address, Backend, Currency, SecretKey,
        genesis::{BalanceSpec, CurrencySpec, Genesis, GenesisConfig},
        ledger::Validator,
        state::State,
        tx::{Fee, Leg, TX_VERSION, Transaction},
        validate::verify,
    };

    use super::*;

    const CHAIN: &str = "mempool";

    fn key(i: u8) -> SecretKey {
        SecretKey::from_bytes(&[i; 32]).unwrap()
    }

    fn config(txs_max: usize) -> MempoolConfig {
        MempoolConfig { txs_max, bytes_max: usize::MAX, busy_txs: txs_max, busy_queued: 100, busy_wait: None }
    }

    /// A chain where key 2 holds 100 CAS, and transfers of `amount` from it with fee `fee`.
    fn state() -> State {
        let from = key(2).public_key().address();
        let genesis = Genesis::new(GenesisConfig {
            generated: vec![],
            chain_id: CHAIN.into(),
            timestamp_ms: 1_000,
            min_fee: 1,
            max_ttl_ms: 3_600_000,
            fee_account: from,
            governance: from,
            validators: vec![Validator { public_key: key(1).public_key(), weight: 1 }],
            currencies: vec![CurrencySpec { symbol: Currency::CAS, issuer: Address::timelock(0) }],
            declarations: vec![],
            balances: vec![BalanceSpec { address: from, currency: Currency::CAS, amount: 100 }],
        })
        .unwrap();
        State::from_genesis(&genesis)
    }

    fn transfer(state: &State, nonce: u8, amount: i64, fee: i64) -> VerifiedTx {
        let from = key(2).public_key().address();
        let to = key(3).public_key().address();
        let stx = Transaction {
            version: TX_VERSION,
            expiration_ms: 60_000,
            declarations: vec![],
            inputs: vec![Leg { address: from, currency: Currency::CAS, amount }],
            outputs: vec![Leg { address: to, currency: Currency::CAS, amount }],
            message: vec![nonce],
            fee: Fee { payer: from, amount: fee },
        }
        .sign(CHAIN, &[&key(2)]);
        let id = stx.tx.id(CHAIN);
        verify(stx, id, state.params(), Backend::Libsecp256k1).unwrap()
    }

    /// A double spend is refused at admission, the candidates come in fee order, and a rebase
    /// onto a state where an admitted transaction no longer applies removes it (and only the
    /// admitted: a fetched body stays).
    #[test]
    fn admission_fee_order_and_rebase() {
        let mut state = state();
        let pool = Mempool::new(config(10));
        let (a, b, c) = (transfer(&state, 1, 60, 1), transfer(&state, 2, 60, 5), transfer(&state, 3, 10, 3));
        {
            let mut exec = state.begin_block(2_000).unwrap();
            let (admitted, verdicts) = pool.admit(&mut exec, vec![a.clone(), b.clone(), c.clone()]);
            assert_eq!(admitted.iter().map(|v| v.id).collect::<Vec<_>>(), vec![a.id, c.id]);
            assert_eq!(verdicts[0], (a.id, Verdict::Admitted));
            assert!(
                matches!(verdicts[1], (id, Verdict::Refused(_)) if id == b.id),
                "the second 60 of 100 (plus fees) is a double spend: {verdicts:?}"
            );
            assert_eq!(verdicts[2], (c.id, Verdict::Admitted));
        }
        assert_eq!(pool.len(), 2);
        // The refused one arrives as a body a proposal names: pooled, not admitted.
        pool.insert(b.clone()).unwrap();
        assert_eq!(pool.insert(b.clone()), Err(PoolError::Known));
        let order: Vec<TxId> = pool.candidates(usize::MAX, |_| false).iter().map(|v| v.id).collect();
        assert_eq!(order, vec![b.id, c.id, a.id], "fee order");
        let one = pool.candidates(a.tx.to_bytes().len(), |_| false);
        assert_eq!(one.len(), 1, "within the bytes");
        // Commit a ledger holding `b` only: `a` no longer applies, `c` still does.
        let diff = engine::state::execute_verified(&mut state, 2_000, std::slice::from_ref(&b)).unwrap();
        state.apply_diff(diff).unwrap();
        pool.remove([&b.id]);
        let mut exec = state.begin_block(3_000).unwrap();
        let refused = pool.readmit(&mut exec);
        assert_eq!(refused.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![a.id]);
        assert!(pool.contains(&c.id) && !pool.contains(&a.id));
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn a_full_pool_drops_unjudged_and_the_busy_check_reads_it() {
        let state = state();
        let pool = Mempool::new(MempoolConfig {
            txs_max: 2,
            bytes_max: usize::MAX,
            busy_txs: 2,
            busy_queued: 1,
            busy_wait: None,
        });
        assert!(pool.busy().is_none());
        let txs: Vec<VerifiedTx> = (0..4).map(|i| transfer(&state, i, 1, 1)).collect();
        let mut s = state;
        let mut exec = s.begin_block(2_000).unwrap();
        let (admitted, verdicts) = pool.admit(&mut exec, txs.clone());
        assert_eq!(admitted.len(), 2);
        assert_eq!(verdicts[2..].iter().filter(|(_, v)| *v == Verdict::Dropped).count(), 2, "unjudged");
        assert!(pool.busy().is_some_and(|why| why.contains("waiting for a ledger")));
        assert_eq!(pool.insert(txs[3].clone()), Err(PoolError::Full));
        pool.remove_expired(60_000);
        assert!(pool.is_empty());
        pool.queue(1);
        assert!(pool.busy().is_some_and(|why| why.contains("verification")));
    }

    /// The pool is bounded in bytes too: a batch past them is dropped unjudged, a body past
    /// them refused, and removing entries gives the bytes back.
    #[test]
    fn a_pool_full_in_bytes_drops_unjudged() {
        let state = state();
        let txs: Vec<VerifiedTx> = (0..4).map(|i| transfer(&state, i, 1, 1)).collect();
        let one = txs[0].tx.to_bytes().len();
        let pool = Mempool::new(MempoolConfig {
            txs_max: 100,
            bytes_max: 2 * one + one / 2,
            busy_txs: 100,
            busy_queued: 5,
            busy_wait: None,
        });
        let mut s = state;
        let mut exec = s.begin_block(2_000).unwrap();
        let (admitted, verdicts) = pool.admit(&mut exec, txs[..3].to_vec());
        assert_eq!(admitted.len(), 2);
        assert_eq!(verdicts[2], (txs[2].id, Verdict::Dropped));
        assert_eq!(pool.bytes(), 2 * one);
        assert_eq!(pool.insert(txs[3].clone()), Err(PoolError::Full));
        pool.remove([&txs[0].id]);
        assert_eq!(pool.bytes(), one);
        assert_eq!(pool.insert(txs[3].clone()), Ok(()));
        assert_eq!(pool.bytes(), 2 * one);
    }

    /// Admission by the commit rate: an idle pool takes the floor; the limit is what the last
    /// ledgers committed in the wait allowed, measured over the last commits' span; it grows
    /// when ledgers take all that waited (each can take more than the last), and stays within
    /// the cap.
    #[test]
    fn admission_follows_the_commit_rate_within_its_floor_and_cap() {
        let rule = BusyWait { interval: Duration::from_millis(250), intervals: 2.0, floor_txs: 1_000 };
        let (cap, t0) = (15_000, Instant::now());
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut d = Drain::default();
        assert_eq!(d.record(at(0), 0, rule, cap), 1_000, "one commit: no span yet");
        assert_eq!(d.record(at(250), 0, rule, cap), 1_000, "nothing committed: the floor");
        // 1,000 over the 500 ms of three commits: 2,000/s, 500 in an interval; the last ledger
        // took 1,000.
        assert_eq!(d.record(at(500), 1_000, rule, cap), 2_000, "twice the last ledger");
        // Ledgers taking all that waited: the limit grows ledger after ledger.
        assert_eq!(d.record(at(750), 2_000, rule, cap), 4_000);
        assert_eq!(d.record(at(1_000), 4_000, rule, cap), 8_000);
        // A ledger that left some: the rate decides when it is above the last ledger (4,000 +
        // 3,000 over the last two intervals' 500 ms: 3,500 an interval, the last 3,000).
        assert_eq!(d.record(at(1_250), 3_000, rule, cap), 2 * (7_000 * 250 / 500));
        // Ledgers slower than configured (1 s): the last ledger's count keeps room for the
        // next to take twice as many.
        assert_eq!(d.record(at(2_250), 4_000, rule, cap), 8_000);
        // Faster than configured (125 ms): two intervals at the rate measured.
        let mut fast = Drain::default();
        fast.record(at(0), 0, rule, cap);
        fast.record(at(125), 1_000, rule, cap);
        assert_eq!(fast.record(at(250), 1_000, rule, cap), 2 * (2_000 * 250 / 250));
        // Never above the cap, and an endless wait is the cap.
        assert_eq!(d.record(at(2_251), 100_000, rule, cap), cap);
        let endless = BusyWait { interval: Duration::MAX, intervals: 2.0, floor_txs: 0 };
        assert_eq!(Drain::default().record(at(0), 1, endless, cap), 0);
        let mut d = Drain::default();
        d.record(at(0), 1, endless, cap);
        assert_eq!(d.record(at(1), 1, endless, cap), cap);
        // A floor above the cap is the cap.
        let high = BusyWait { interval: Duration::from_secs(1), intervals: 2.0, floor_txs: 20_000 };
        assert_eq!(Drain::default().record(at(0), 0, high, cap), cap);
    }

    /// The pool refuses clients by that limit, counting what waits for verification too, and
    /// moves it at each commit; without the rule, by `busy_txs` alone.
    #[test]
    fn the_busy_check_reads_the_limit_the_commits_set() {
        let state = state();
        let rule = BusyWait { interval: Duration::from_secs(3_600), intervals: 2.0, floor_txs: 2 };
        let pool = Mempool::new(MempoolConfig {
            txs_max: 100,
            bytes_max: usize::MAX,
            busy_txs: 50,
            busy_queued: 100,
            busy_wait: Some(rule),
        });
        assert_eq!(pool.admit_limit(), 2);
        let txs: Vec<VerifiedTx> = (0..4).map(|i| transfer(&state, i, 1, 1)).collect();
        let mut s = state;
        let mut exec = s.begin_block(2_000).unwrap();
        let (admitted, _) = pool.admit(&mut exec, txs[..1].to_vec());
        assert_eq!(admitted.len(), 1);
        assert!(pool.busy().is_none());
        pool.queue(1);
        assert!(pool.busy().is_some_and(|why| why.contains("2 transactions waiting")), "queued counts");
        pool.queue(-1);
        // Commits a moment apart at an hour's wait: the cap.
        pool.committed(1);
        std::thread::sleep(Duration::from_millis(2));
        pool.committed(1);
        assert_eq!(pool.admit_limit(), 50);
        assert!(pool.busy().is_none());
        let off = Mempool::new(config(10));
        off.committed(1_000);
        assert_eq!(off.admit_limit(), 10, "no rule: busy_txs");
    }
}
