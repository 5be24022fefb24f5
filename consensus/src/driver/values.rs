//! Values: a proposal checked (or waiting for its bodies), a bodies record logged, a decision
//! committed (or synced), and what the log already holds.

use std::{collections::HashSet, sync::Arc};

use engine::{Hash, tx::TxId};

use super::{Decision, Driver, DriverError, Env, FETCH_RETRY_MAX_MS, StorageError, Timer, Waiting};
use crate::{
    chain::{Chain, ChainError, CheckOutcome, Committed},
    core::{Input, PeerId},
    message::Value,
    wal::{Bodies, WalRecord},
    wire::FETCH_IDS_MAX,
};

impl Driver {
    pub(super) fn check<E: Env>(
        &mut self,
        env: &mut E,
        height: u64,
        id: Hash,
        value: Value,
        from: PeerId,
    ) -> Result<(), DriverError> {
        match self.chain.check(&value, env.now_ms()) {
            CheckOutcome::Valid { timely } => {
                self.log_bodies(env, &id)?;
                self.input(env, Input::Checked { height, value: id, valid: true, timely }, true)
            }
            CheckOutcome::Invalid(_) => {
                self.input(env, Input::Checked { height, value: id, valid: false, timely: false }, true)
            }
            CheckOutcome::Missing(ids) => {
                // Most missing bodies are on their way by gossip: fetch only what has not
                // arrived after a moment, so nothing is verified twice.
                if self.waiting.len() < self.cfg.waiting_checks_max {
                    let missing = ids.iter().copied().collect();
                    self.waiting.push(Waiting { height, id, value, from, missing, fetches: 0 });
                    env.schedule(Timer::Fetch(height, id), self.cfg.fetch_delay_ms);
                } else {
                    env.fetch(Some(from), &ids);
                }
                Ok(())
            }
        }
    }

    /// Logs the bodies of an executed value of the height being decided (before the verdict or
    /// the proposal that lets this validator vote for it).
    pub(super) fn log_bodies<E: Env>(&mut self, env: &mut E, id: &Hash) -> Result<(), DriverError> {
        if !self.deciding() {
            return Ok(());
        }
        if let Some(fresh) = unlogged_bodies(&self.chain, &mut self.logged_bodies, id) {
            env.wal_append(&WalRecord::Bodies(fresh))?;
        }
        Ok(())
    }

    /// `arrived`: ids just added to the pool.
    pub(super) fn recheck_waiting<E: Env>(
        &mut self,
        env: &mut E,
        arrived: &[TxId],
    ) -> Result<(), DriverError> {
        let next = self.chain.next_height();
        for mut w in std::mem::take(&mut self.waiting) {
            if w.height != next {
                continue;
            }
            for id in arrived {
                w.missing.remove(id);
            }
            if w.missing.is_empty() {
                self.check(env, w.height, w.id, w.value, w.from)?;
            } else {
                self.waiting.push(w);
            }
        }
        Ok(())
    }

    pub(super) fn decide<E: Env>(&mut self, env: &mut E, d: Decision) -> Result<(), DriverError> {
        let next = self.chain.next_height();
        if d.height < next {
            // Taken from a peer (sync) before the core decided: it must be the same ledger.
            let state = self.chain.state();
            if d.height == state.head().height && d.id != state.head_hash() {
                return Err(DriverError::Fork {
                    height: d.height,
                    decided: d.id,
                    committed: state.head_hash(),
                });
            }
            return Ok(());
        }
        match self.chain.commit(&d.value, d.certificate.clone()) {
            Ok(c) => {
                self.stats.certified_ledgers += 1;
                self.committed(env, &c)?;
                // Heights start a block interval apart: the time consensus took counts against
                // it (at least a tenth of it still separates them).
                let elapsed = u64::try_from(env.now_ms().saturating_sub(self.height_started_ms)).unwrap_or(0);
                let wait =
                    self.cfg.block_interval_ms.saturating_sub(elapsed).max(self.cfg.block_interval_ms / 10);
                env.schedule(Timer::StartNext(self.chain.next_height()), wait);
                self.start_due_ms =
                    Some(env.now_ms().saturating_add(i64::try_from(wait).unwrap_or(i64::MAX)));
                Ok(())
            }
            Err(ChainError::Missing(_)) => {
                // Decided on bodies this process no longer has (it restarted, or dropped them
                // from its pool while building another value): fetch them, and ask for the
                // certified ledger, whichever comes first.
                let missing = self.chain.missing(&d.value);
                for chunk in missing.chunks(FETCH_IDS_MAX) {
                    env.fetch(None, chunk);
                }
                env.request_ledger(None, d.height);
                if self.stuck.is_none() {
                    env.schedule(Timer::Fetch(d.height, d.id), FETCH_RETRY_MAX_MS);
                }
                self.stuck = Some(d);
                Ok(())
            }
            Err(error) => Err(DriverError::Commit { height: d.height, error }),
        }
    }

    pub(super) fn committed<E: Env>(&mut self, env: &mut E, c: &Committed) -> Result<(), DriverError> {
        env.commit(c, self.chain.state())?;
        // The committed state's replay ids of stored ledgers leave memory for the store.
        self.chain.spill_replay().map_err(|e| StorageError(format!("the replay window's store: {e}")))?;
        self.waiting.clear();
        self.stuck = None;
        Ok(())
    }
}

/// The bodies of an executed value the log of this height does not hold yet (marked as held
/// from now on); `None` if there are none. A value's bodies logged for the first time (the
/// common case) are shared with its execution, not copied.
pub(super) fn unlogged_bodies(chain: &Chain, logged: &mut HashSet<TxId>, id: &Hash) -> Option<Bodies> {
    let (ids, txs) = chain.executed_transactions(id)?;
    let fresh: Vec<bool> = ids.iter().map(|id| logged.insert(*id)).collect();
    match fresh.iter().filter(|f| **f).count() {
        0 => None,
        n if n == txs.len() => Some(Bodies::Shared(Arc::clone(txs))),
        _ => Some(Bodies::Shared(Arc::new(
            txs.iter().zip(fresh).filter(|(_, f)| *f).map(|(tx, _)| Arc::clone(tx)).collect(),
        ))),
    }
}
