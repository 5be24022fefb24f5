//! The application a validator's consensus runs on: the committed state, proposal building and
//! checking from the process's one [`Mempool`], and commit of decided or synced ledgers.
//!
//! Over 600 lines with its tests: the code is about 530; the tests drive the private executed
//! values they check.
//!
//! Values are executed on the committed state and sealed ([`engine::state::StateDiff`]): the
//! result holds what the block touched, never a copy of the state. Up to [`EXECUTED_MAX`]
//! results are kept per height, so the decision of a value this validator built or checked
//! costs no second execution; an older one evicted is executed again if it is decided. The
//! value executed last leaves its accounts in place, ahead of the committed state
//! ([`engine::state::BlockExecution::seal_ahead`]): the next execution puts them back first,
//! and committing that value — the common case, a validator's own proposal or the one it
//! checked — keeps them, so its accounts are written into the state once, not restored and
//! written again.

use std::{collections::VecDeque, sync::Arc};

// Keyed by transaction ids and ledger hashes; foldhash is seeded per process (no HashDoS from
// chosen ids) and several times cheaper than SipHash on 32-byte keys (the profile showed it).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use engine::{
    Backend, CodecError, Decode, Encode, Hash,
    codec::{Reader, put_count_u32},
    ledger::{Certificate, CertificateError, LedgerHeader, ValidatorSet},
    limits::BLOCK_TXS_MAX,
    merkle::tx_root,
    state::{Applied, BlockError, State, StateDiff, execute_build_ahead, execute_verified_ahead},
    tx::{SignedTransaction, TxId},
    validate::{TxError, VerifiedTx, verify},
};

pub use pipeline::{Mempool, MempoolConfig, PoolError};

use crate::{message::Value, wal::SharedTxs};

/// Limits and rules of the application. A node takes the limits from its limits module
/// (`caasiope-limits`), so there is no default here.
#[derive(Clone, Copy, Debug)]
pub struct ChainConfig {
    /// Signature backend for transactions that arrive with a synced ledger.
    pub backend: Backend,
    /// Most transactions a proposal carries.
    pub block_txs_max: usize,
    /// Most bytes of transactions (their canonical encodings) a proposal carries: a committed
    /// ledger travels to a peer that syncs it in one frame, so it must fit one (the node's
    /// limits module asserts it does).
    pub block_bytes_max: usize,
    /// How far a proposal's timestamp may lie from the voter's clock (DESIGN §4).
    pub drift_ms: i64,
}

/// Executed values kept per height (each costs what its block touched: see
/// [`Chain::executed_bytes`]). A height needs one in the common case; a round change or an
/// equivocating leader adds one each.
pub const EXECUTED_MAX: usize = 4;

/// A certified ledger as it travels over the sync channel and is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedLedger {
    /// Header.
    pub header: LedgerHeader,
    /// Precommits of one round.
    pub certificate: Certificate,
    /// Transactions in block order.
    pub transactions: Vec<SignedTransaction>,
}

impl Encode for CommittedLedger {
    fn encode(&self, out: &mut Vec<u8>) {
        self.header.encode(out);
        self.certificate.encode(out);
        put_count_u32(out, self.transactions.len());
        for tx in &self.transactions {
            tx.encode(out);
        }
    }
}

impl Decode for CommittedLedger {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let header = LedgerHeader::decode(r)?;
        let certificate = Certificate::decode(r)?;
        let n = r.count_u32("ledger transactions", 0, BLOCK_TXS_MAX)?;
        // Bounded count; each transaction decodes from bytes that must be present.
        let mut transactions = Vec::with_capacity(n.min(r.remaining() / 64));
        for _ in 0..n {
            transactions.push(SignedTransaction::decode(r)?);
        }
        Ok(Self { header, certificate, transactions })
    }
}

/// A ledger just committed: what to store.
#[derive(Clone, Debug)]
pub struct Committed {
    /// Header, certificate and transactions.
    pub ledger: CommittedLedger,
    /// What the engine applied (ids, receipts, touched accounts).
    pub applied: Applied,
    /// What the ledger changed, for another copy of the previous committed state to follow it
    /// ([`State::apply_diff`]) at the cost of what the block touched, not of the state (the
    /// intake's post-state follows the committed state this way).
    pub diff: Arc<StateDiff>,
}

/// The verdict on a proposed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Every transaction valid in order; header identical to the re-execution's. `timely`: the
    /// timestamp lies within the drift of this validator's clock — required only of a fresh
    /// proposal, since a re-proposed value's quorum of prevotes already vouched for its time,
    /// and a lock must never turn into a value that can no longer be prevoted.
    Valid {
        /// Within the drift of the clock.
        timely: bool,
    },
    /// Why not.
    Invalid(String),
    /// Bodies this validator lacks: fetch them and check again.
    Missing(Vec<TxId>),
}

/// Why a ledger could not be committed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChainError {
    /// Not the next height.
    #[error("ledger {got} does not follow {head}")]
    Height {
        /// Committed head.
        head: u64,
        /// The ledger's height.
        got: u64,
    },
    /// The certificate does not certify the ledger under the set in force.
    #[error("certificate: {0}")]
    Certificate(#[from] CertificateError),
    /// A transaction body is missing.
    #[error("transaction {0} is not known")]
    Missing(TxId),
    /// A transaction fails verification.
    #[error("transaction {0}: {1}")]
    Tx(TxId, TxError),
    /// The block does not apply.
    #[error("block: {0}")]
    Block(#[from] BlockError),
    /// A synced ledger's transactions are not those its certified header commits to (their ids
    /// do not hash to its transaction root, or their count differs): the sender altered them.
    #[error("the ledger's {count} transactions do not hash to its header's transaction root")]
    TxRoot {
        /// How many transactions came.
        count: usize,
    },
    /// Re-execution gives another header (state root, validator set or tx root): this node and
    /// the certifying quorum disagree on the state.
    #[error("re-execution gives header {local:?}, the ledger says {certified:?}")]
    Mismatch {
        /// What this node computed.
        local: Box<LedgerHeader>,
        /// What was certified.
        certified: Box<LedgerHeader>,
    },
}

impl ChainError {
    /// Whether the peer that sent a synced ledger is to blame: it sent what no honest peer sends
    /// (a certificate that does not verify, transactions altered from the certified ones). A
    /// stale ledger is nobody's fault; a certified one that does not re-execute here is the
    /// certifying quorum's or this node's, not the messenger's.
    pub const fn blames_sender(&self) -> bool {
        matches!(self, Self::Certificate(_) | Self::TxRoot { .. } | Self::Tx(..))
    }
}

struct Executed {
    diff: StateDiff,
    /// Shared with the pool and with the log record of the bodies, if any (dropped once
    /// written): held, not copied.
    transactions: SharedTxs,
    /// What the two above hold apart from the committed state: counted once, when kept (the
    /// committed state does not move before every execution of the height is dropped).
    bytes: usize,
}

impl Executed {
    fn new(diff: StateDiff, transactions: SharedTxs) -> Self {
        // Counted as if held here alone (the pool may let them go first).
        let bodies: usize =
            transactions.iter().map(|v| size_of::<VerifiedTx>() + v.tx.signatures.len() * 129).sum();
        let bytes = diff.bytes() + bodies;
        Self { diff, transactions, bytes }
    }
}

/// Committed state, the mempool and the executions of this height's values.
pub struct Chain {
    cfg: ChainConfig,
    state: State,
    /// Shared with the intake, which admits into it.
    pool: Arc<Mempool>,
    executed: HashMap<Hash, Executed>,
    /// The executed values' ids, oldest first (the first evicted past [`EXECUTED_MAX`]).
    executed_order: VecDeque<Hash>,
    /// Values never evicted (the consensus lock and valid value: what is likely decided).
    pinned: [Option<Hash>; 2],
    /// Transactions a build of this height found invalid at their turn: skipped by later
    /// builds, dropped from the pool at the commit — not before, as a value of the height
    /// holding them may still be decided and need their bodies.
    rejected: std::collections::HashSet<TxId, foldhash::fast::RandomState>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("height", &self.state.head().height)
            .field("pool", &self.pool.len())
            .finish_non_exhaustive()
    }
}

impl Chain {
    /// A chain at a committed state, proposing from `pool`.
    pub fn new(state: State, cfg: ChainConfig, pool: Arc<Mempool>) -> Self {
        Self {
            cfg,
            state,
            pool,
            executed: HashMap::default(),
            executed_order: VecDeque::new(),
            pinned: [None; 2],
            rejected: Default::default(),
        }
    }

    /// The signature backend.
    pub const fn backend(&self) -> Backend {
        self.cfg.backend
    }

    /// The committed state. Between an execution and the commit, the accounts of the value
    /// executed last may be ahead ([`State::is_ahead`]): its accounts are read after a commit
    /// (as the store and the explorer do), its head, validators, root and parameters at any
    /// time.
    pub const fn state(&self) -> &State {
        &self.state
    }

    /// Moves the replay ids of the ledgers the store holds out of the committed state's memory
    /// (into its filter: [`State::spill_replay`]); returns how many left. Called after each
    /// commit is stored.
    pub fn spill_replay(&mut self) -> Result<usize, String> {
        self.state.spill_replay()
    }

    /// The height consensus decides next.
    pub fn next_height(&self) -> u64 {
        self.state.head().height + 1
    }

    /// The set that certifies the next height.
    pub fn validators(&self) -> &ValidatorSet {
        self.state.validators()
    }

    /// Transactions pending.
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }

    /// The mempool.
    pub const fn mempool(&self) -> &Arc<Mempool> {
        &self.pool
    }

    /// A pending transaction.
    pub fn pending(&self, id: &TxId) -> Option<Arc<VerifiedTx>> {
        self.pool.get(id)
    }

    /// Adds a verified transaction that was not admitted against the post-state (a body a
    /// proposal names, one restored from the log, a simulated client's) to the pool.
    pub fn add(&mut self, vtx: VerifiedTx) -> Result<(), PoolError> {
        if self.state.is_included(&vtx.id, vtx.tx.tx.expiration_ms) {
            return Err(PoolError::Included);
        }
        if vtx.tx.tx.expiration_ms <= self.state.head().timestamp_ms {
            return Err(PoolError::Expired);
        }
        self.pool.insert(vtx)
    }

    /// Builds the value of this validator's proposal at `now_ms`: pool transactions in fee
    /// order up to the block's byte limit, those invalid at their turn skipped and dropped from
    /// the pool.
    pub fn build(&mut self, now_ms: i64) -> Value {
        let timestamp_ms = now_ms.max(self.state.head().timestamp_ms + 1);
        // The candidates' bytes stay within the limit, so the bytes of those applied do too.
        let rejected_before = &self.rejected;
        let candidates = self.pool.candidates(self.cfg.block_bytes_max, |id| rejected_before.contains(id));
        let built = execute_build_ahead(
            &mut self.state,
            timestamp_ms,
            candidates.iter().map(|v| &**v),
            self.cfg.block_txs_max,
        );
        let (diff, rejected) = match built {
            Ok(x) => x,
            // Only a timestamp at or below the head's fails, and it was raised above it.
            Err(e) => unreachable!("building on the committed state: {e}"),
        };
        self.rejected.extend(rejected.iter().map(|(id, _)| *id));
        let applied = diff.applied();
        // Those applied are the candidates less those skipped, in the candidates' order.
        let mut rest = candidates.iter();
        let transactions =
            Arc::new(applied.tx_ids.iter().filter_map(|id| rest.find(|v| v.id == *id).cloned()).collect());
        let value = Value { header: applied.header, tx_ids: applied.tx_ids.clone() };
        self.keep(Executed::new(diff, transactions));
        value
    }

    /// Keeps the executions of these values whatever else is executed (the host passes its
    /// consensus lock and valid value: what the height most likely decides).
    pub fn pin(&mut self, ids: [Option<Hash>; 2]) {
        self.pinned = ids;
    }

    /// Keeps an executed value for the height, evicting the oldest unpinned past
    /// [`EXECUTED_MAX`].
    fn keep(&mut self, executed: Executed) {
        let id = executed.diff.applied().hash;
        if self.executed.insert(id, executed).is_none() {
            self.executed_order.push_back(id);
        }
        while self.executed_order.len() > EXECUTED_MAX {
            let Some(at) = self.executed_order.iter().position(|h| !self.pinned.contains(&Some(*h))) else {
                break;
            };
            if let Some(old) = self.executed_order.remove(at) {
                self.executed.remove(&old);
            }
        }
    }

    /// The transactions of an executed value of the height and their ids, in block order.
    pub fn executed_transactions(&self, id: &Hash) -> Option<(&[TxId], &SharedTxs)> {
        self.executed.get(id).map(|e| (e.diff.applied().tx_ids.as_slice(), &e.transactions))
    }

    /// Puts back in the pool the bodies of a value logged before a restart (verified again:
    /// the log is this node's own, but the pool holds only verified transactions). Those that
    /// no longer verify, or that are already committed or expired, are skipped.
    pub fn restore_bodies(&mut self, txs: Vec<SignedTransaction>) {
        let chain_id = self.state.params().chain_id.clone();
        for tx in txs {
            let id = tx.id(&chain_id);
            if self.pool.contains(&id) {
                continue;
            }
            if let Ok(vtx) = verify(tx, id, self.state.params(), self.cfg.backend) {
                let _ = self.add(vtx);
            }
        }
    }

    /// The ids of a value's transactions the pool lacks (what committing it would need).
    pub fn missing(&self, value: &Value) -> Vec<TxId> {
        self.pool.missing(&value.tx_ids)
    }

    /// Bytes the executed values of the height hold apart from the committed state (their
    /// diffs and transaction bodies): bounded by [`EXECUTED_MAX`] blocks. Counted when each was
    /// kept, since the host reads it after every event.
    pub fn executed_bytes(&self) -> usize {
        self.executed.values().map(|e| e.bytes).sum::<usize>() + self.state.ahead_bytes()
    }

    /// Checks a proposed value at `now_ms` by re-executing it on the committed state.
    pub fn check(&mut self, value: &Value, now_ms: i64) -> CheckOutcome {
        let h = &value.header;
        let head = self.state.head();
        if h.height != head.height + 1 {
            return CheckOutcome::Invalid(format!("height {} does not follow {}", h.height, head.height));
        }
        if h.previous != self.state.head_hash() {
            return CheckOutcome::Invalid("previous ledger hash differs".into());
        }
        if h.timestamp_ms <= head.timestamp_ms {
            return CheckOutcome::Invalid(format!(
                "timestamp {} not after the previous ledger's",
                h.timestamp_ms
            ));
        }
        let timely = h.timestamp_ms.abs_diff(now_ms) <= self.cfg.drift_ms.unsigned_abs();
        if value.tx_ids.len() > self.cfg.block_txs_max.min(BLOCK_TXS_MAX) {
            return CheckOutcome::Invalid(format!("{} transactions over the limit", value.tx_ids.len()));
        }
        let id = value.header.hash(&self.state.params().chain_id);
        if self.executed.contains_key(&id) {
            return CheckOutcome::Valid { timely };
        }
        let Ok((txs, bytes)) = self.pool.bodies(&value.tx_ids) else {
            return CheckOutcome::Missing(self.pool.missing(&value.tx_ids));
        };
        if bytes > self.cfg.block_bytes_max {
            return CheckOutcome::Invalid(format!(
                "{bytes} bytes of transactions over the limit of {}",
                self.cfg.block_bytes_max
            ));
        }
        match self.execute_bodies(value, &txs) {
            Ok(()) => CheckOutcome::Valid { timely },
            Err(e) => CheckOutcome::Invalid(e.to_string()),
        }
    }

    /// Executes `value` from the pool in place (only the bodies kept with the result are
    /// copied) and keeps the result if it reproduces its header exactly.
    fn execute_pooled(&mut self, value: &Value) -> Result<(), ChainError> {
        let (txs, _) = self.pool.bodies(&value.tx_ids).map_err(ChainError::Missing)?;
        self.execute_bodies(value, &txs)
    }

    /// Executes `value` with its bodies `txs` and keeps the result if it reproduces its header
    /// exactly.
    fn execute_bodies(&mut self, value: &Value, txs: &[Arc<VerifiedTx>]) -> Result<(), ChainError> {
        let diff = execute_exactly(&mut self.state, &value.header, txs)?;
        self.keep(Executed::new(diff, Arc::new(txs.to_vec())));
        Ok(())
    }

    /// Executes `txs` at `header`'s time on the committed state (sealed, its accounts left ahead)
    /// and keeps the result if it reproduces `header` exactly.
    fn execute(&mut self, header: &LedgerHeader, txs: Vec<Arc<VerifiedTx>>) -> Result<(), ChainError> {
        let diff = execute_exactly(&mut self.state, header, &txs)?;
        self.keep(Executed::new(diff, Arc::new(txs)));
        Ok(())
    }

    /// Commits a decided value: installs the executed state (executing it if this validator did
    /// not check it yet) and returns the ledger to store.
    pub fn commit(&mut self, value: &Value, certificate: Certificate) -> Result<Committed, ChainError> {
        let head = self.state.head().height;
        if value.header.height != head + 1 {
            return Err(ChainError::Height { head, got: value.header.height });
        }
        let id = value.header.hash(&self.state.params().chain_id);
        if !self.executed.contains_key(&id) {
            self.execute_pooled(value)?;
        }
        Ok(self.install(id, certificate))
    }

    /// Commits a ledger received over the sync channel: checks its certificate against the set
    /// in force, verifies the transactions this node has not verified, re-executes, and checks
    /// the header (so the state root) is reproduced.
    pub fn apply_synced(&mut self, ledger: &CommittedLedger) -> Result<Committed, ChainError> {
        let head = self.state.head().height;
        if ledger.header.height != head + 1 {
            return Err(ChainError::Height { head, got: ledger.header.height });
        }
        let chain_id = self.state.params().chain_id.clone();
        let id = ledger.header.hash(&chain_id);
        ledger.certificate.verify(
            self.state.validators(),
            &chain_id,
            ledger.header.height,
            &id,
            self.cfg.backend,
        )?;
        if !self.executed.contains_key(&id) {
            // The certificate vouches for the header only: the transactions came from the
            // sender and must be the ones the header commits to before anything runs on them.
            let ids: Vec<TxId> = ledger.transactions.iter().map(|tx| tx.id(&chain_id)).collect();
            if tx_root(&ids) != ledger.header.tx_root {
                return Err(ChainError::TxRoot { count: ids.len() });
            }
            let mut txs = Vec::with_capacity(ledger.transactions.len());
            for (tx, tx_id) in ledger.transactions.iter().zip(ids) {
                let vtx = match self.pool.get(&tx_id) {
                    Some(v) => v,
                    None => Arc::new(
                        verify(tx.clone(), tx_id, self.state.params(), self.cfg.backend)
                            .map_err(|e| ChainError::Tx(tx_id, e))?,
                    ),
                };
                txs.push(vtx);
            }
            self.execute(&ledger.header, txs)?;
        }
        Ok(self.install(id, ledger.certificate.clone()))
    }

    fn install(&mut self, id: Hash, certificate: Certificate) -> Committed {
        let Some(executed) = self.executed.remove(&id) else { unreachable!("executed by the caller") };
        // Shared with the intake (the touched accounts' new values and a shared trie: what the
        // block touched); the value executed last has its accounts in place already.
        let diff = Arc::new(executed.diff);
        let applied = match self.state.apply_shared_diff(&diff) {
            Ok(applied) => applied,
            // Every kept diff was executed on the committed state, which has not moved since:
            // the cache is cleared at each commit.
            Err(e) => unreachable!("an executed value of another height: {e}"),
        };
        self.executed.clear();
        self.executed_order.clear();
        self.pinned = [None; 2];
        self.pool.remove(applied.tx_ids.iter().chain(std::mem::take(&mut self.rejected).iter()));
        self.pool.remove_expired(self.state.head().timestamp_ms);
        // The commit rate clients are admitted by.
        self.pool.committed(applied.tx_ids.len());
        let ledger = CommittedLedger {
            header: applied.header,
            certificate,
            // The pool let them go above: the bodies move into the ledger, uncopied.
            transactions: Arc::unwrap_or_clone(executed.transactions)
                .into_iter()
                .map(|v| Arc::try_unwrap(v).map_or_else(|shared| shared.tx.clone(), |v| v.tx))
                .collect(),
        };
        Committed { ledger, applied, diff }
    }
}

/// Executes `txs` at `header`'s time on the committed state (sealed, its accounts left ahead): the
/// diff, if it reproduces `header` exactly.
fn execute_exactly<T: std::borrow::Borrow<VerifiedTx>>(
    state: &mut State,
    header: &LedgerHeader,
    txs: &[T],
) -> Result<StateDiff, ChainError> {
    let diff = execute_verified_ahead(state, header.timestamp_ms, txs)?;
    if diff.applied().header != *header {
        // Not kept: its accounts go back now rather than at the next execution.
        state.settle();
        return Err(ChainError::Mismatch {
            local: Box::new(diff.applied().header),
            certified: Box::new(*header),
        });
    }
    Ok(diff)
}

#[cfg(test)]
mod tests {
    use engine::{
        Address, Currency, SecretKey,
        genesis::{BalanceSpec, CurrencySpec, Genesis, GenesisConfig},
        ledger::Validator,
        tx::{Fee, Leg, TX_VERSION, Transaction},
    };

    use super::*;

    const CHAIN: &str = "limits";

    /// The limits these tests run with (a node's come from its limits module).
    fn config() -> ChainConfig {
        ChainConfig {
            backend: Backend::Libsecp256k1,
            block_txs_max: 20_000,
            block_bytes_max: (4 << 20) - (64 << 10),
            drift_ms: 5_000,
        }
    }

    fn pool() -> Arc<Mempool> {
        Arc::new(Mempool::new(pipeline::MempoolConfig {
            txs_max: 200_000,
            bytes_max: usize::MAX,
            busy_txs: 15_000,
            busy_queued: 4_000,
            busy_wait: None,
        }))
    }

    fn key(i: u8) -> SecretKey {
        SecretKey::from_bytes(&[i; 32]).unwrap()
    }

    /// A one-validator chain (key 1) where user key 2 holds CAS, and `n` verified transfers.
    fn chain_and_transfers(n: u64) -> (State, Vec<VerifiedTx>) {
        let (validator, user) = (key(1), key(2));
        let (from, to) = (user.public_key().address(), key(3).public_key().address());
        let genesis = Genesis::new(GenesisConfig {
            generated: vec![],
            chain_id: CHAIN.into(),
            timestamp_ms: 1_000,
            min_fee: 1,
            max_ttl_ms: 3_600_000,
            fee_account: from,
            governance: from,
            validators: vec![Validator { public_key: validator.public_key(), weight: 1 }],
            currencies: vec![CurrencySpec { symbol: Currency::CAS, issuer: Address::timelock(0) }],
            declarations: vec![],
            balances: vec![BalanceSpec { address: from, currency: Currency::CAS, amount: 1_000_000 }],
        })
        .unwrap();
        let state = State::from_genesis(&genesis);
        let txs: Vec<VerifiedTx> = (0..n)
            .map(|i| {
                let stx = Transaction {
                    version: TX_VERSION,
                    expiration_ms: 60_000,
                    declarations: vec![],
                    inputs: vec![Leg { address: from, currency: Currency::CAS, amount: 10 }],
                    outputs: vec![Leg { address: to, currency: Currency::CAS, amount: 10 }],
                    message: i.to_be_bytes().to_vec(),
                    fee: Fee { payer: from, amount: 1 },
                }
                .sign(CHAIN, &[&user]);
                let id = stx.tx.id(CHAIN);
                verify(stx, id, state.params(), Backend::Libsecp256k1).unwrap()
            })
            .collect();
        (state, txs)
    }

    /// A doctored synced ledger — transactions dropped, reordered or re-signed — is refused as
    /// the sender's fault before anything runs on it, and the genuine one is then taken. Before
    /// the transactions were checked against the header's root, re-execution reported a
    /// `Mismatch` (the host exited on it).
    #[test]
    fn a_synced_ledger_whose_transactions_were_altered_is_the_senders_fault() {
        let (state, txs) = chain_and_transfers(4);
        let mut leader = Chain::new(state.clone(), config(), pool());
        for v in &txs {
            leader.add(v.clone()).unwrap();
        }
        let value = leader.build(2_000);
        assert_eq!(value.tx_ids.len(), 4);
        let id = value.id(CHAIN);
        let mut certificate = Certificate::new(0);
        certificate.add(CHAIN, 0, &key(1), 1, &id);
        let genuine = leader.commit(&value, certificate).unwrap().ledger;

        let mut follower = Chain::new(state, config(), pool());
        let root = follower.state().state_root();
        let mut dropped = genuine.clone();
        dropped.transactions.pop();
        let mut reordered = genuine.clone();
        reordered.transactions.swap(0, 1);
        let mut resigned = genuine.clone();
        resigned.transactions[2].signatures[0].signature.0[5] ^= 1;
        let mut forged = genuine.clone();
        forged.certificate.signatures[0].1.0[7] ^= 1;
        for (what, doctored) in
            [("dropped", dropped), ("reordered", reordered), ("re-signed", resigned), ("forged", forged)]
        {
            let e = follower.apply_synced(&doctored).unwrap_err();
            assert!(e.blames_sender(), "{what}: {e}");
            assert!(!matches!(e, ChainError::Mismatch { .. }), "{what}: {e}");
            assert_eq!(follower.state().state_root(), root, "{what}: the state is untouched");
        }
        let c = follower.apply_synced(&genuine).unwrap();
        assert_eq!(c.ledger.header, genuine.header);
        assert_eq!(follower.state().state_root(), genuine.header.state_root);
        // Stale: nobody's fault.
        assert!(!follower.apply_synced(&genuine).unwrap_err().blames_sender());
    }

    #[test]
    fn executing_a_value_copies_what_its_block_touched_and_keeps_a_bounded_number() {
        let (state, txs) = chain_and_transfers(6);
        let mut chain = Chain::new(state.clone(), config(), pool());
        for v in &txs {
            chain.add(v.clone()).unwrap();
        }
        // Distinct values of one height: as many as an equivocating leader could sign.
        let first = chain.build(2_000);
        for t in 1..(EXECUTED_MAX as i64 + 3) {
            let value = chain.build(2_000 + t);
            assert_eq!(chain.check(&value, 2_000 + t), CheckOutcome::Valid { timely: true });
            assert_eq!(chain.state().head().height, 0, "checking leaves the committed state");
            assert_eq!(chain.state().state_root(), state.state_root());
        }
        assert_eq!(chain.executed.len(), EXECUTED_MAX);
        assert!(!chain.executed.contains_key(&first.id(CHAIN)), "the oldest was evicted");
        // Each kept value holds its block (a few accounts and trie paths), not the state.
        assert!(chain.executed_bytes() < EXECUTED_MAX * 64 * 1024, "{}", chain.executed_bytes());
        // An evicted value, once decided, is executed again.
        let mut certificate = Certificate::new(0);
        certificate.add(CHAIN, 0, &key(1), 1, &first.id(CHAIN));
        let c = chain.commit(&first, certificate).unwrap();
        assert_eq!(c.ledger.header, first.header);
        assert_eq!(chain.state().head_hash(), first.id(CHAIN));
        assert_eq!(chain.pool_len(), 0);
    }

    #[test]
    fn a_block_keeps_to_its_byte_limit_and_a_larger_proposal_is_refused() {
        let (state, txs) = chain_and_transfers(10);
        let size = txs[0].tx.to_bytes().len();
        assert!(txs.iter().all(|v| v.tx.to_bytes().len() == size));
        let chain_with = |block_bytes_max: usize| {
            let mut chain = Chain::new(state.clone(), ChainConfig { block_bytes_max, ..config() }, pool());
            for v in &txs {
                chain.add(v.clone()).unwrap();
            }
            chain
        };

        let value = chain_with(3 * size + size / 2).build(2_000);
        assert_eq!(value.tx_ids.len(), 3, "as many as fit the bytes");
        assert!(matches!(chain_with(3 * size).check(&value, 2_000), CheckOutcome::Valid { .. }));
        match chain_with(3 * size - 1).check(&value, 2_000) {
            CheckOutcome::Invalid(why) => assert!(why.contains("bytes"), "{why}"),
            other => panic!("a proposal over the byte limit was not refused: {other:?}"),
        }
        assert_eq!(chain_with(usize::MAX).build(2_000).tx_ids.len(), 10);
    }
}
