//! What the host thread times for the histograms: when each client's transaction was admitted
//! here (until its ledger commits), the last commit, the round in progress.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use engine::tx::TxId;

use super::Metrics;

/// The host's clocks (owned by the host thread: no lock).
#[derive(Debug, Default)]
pub(crate) struct Clocks {
    /// Client transactions admitted here and not yet seen committed, with when.
    admitted: HashMap<TxId, Instant>,
    /// The same in admission order, for forgetting the oldest (an entry may outlive its
    /// transaction's commit: it is then skipped).
    order: VecDeque<(TxId, Instant)>,
    last_commit: Option<Instant>,
    /// The (height, round) in progress and when it started.
    round: Option<((u64, u32), Instant)>,
}

impl Clocks {
    /// Client transactions admitted now.
    pub(crate) fn admitted(&mut self, ids: impl IntoIterator<Item = TxId>) {
        let now = Instant::now();
        for id in ids {
            if self.admitted.insert(id, now).is_none() {
                self.order.push_back((id, now));
            }
        }
        // Forget what can no longer commit (past the longest time to live) and, under a flood,
        // the oldest beyond the bound.
        let old = now.checked_sub(limits::SUBMIT_CLOCK_AGE_MAX);
        while let Some(&(id, at)) = self.order.front() {
            if self.order.len() <= limits::SUBMIT_CLOCK_TXS_MAX && old.is_none_or(|old| at > old) {
                break;
            }
            self.order.pop_front();
            if self.admitted.get(&id) == Some(&at) {
                self.admitted.remove(&id);
            }
        }
    }

    /// A ledger of `ids` committed now.
    pub(crate) fn committed(&mut self, ids: &[TxId], m: &Metrics) {
        let now = Instant::now();
        for id in ids {
            if let Some(at) = self.admitted.remove(id) {
                m.submit_to_commit.observe(now - at);
            }
        }
        if let Some(last) = self.last_commit.replace(now) {
            m.height_duration.observe(now - last);
        }
    }

    /// Consensus is at `(height, round)` now: a round that ended is observed.
    pub(crate) fn at_round(&mut self, at: (u64, u32), m: &Metrics) {
        let now = Instant::now();
        match self.round {
            Some((current, _)) if current == at => {}
            Some((_, since)) => {
                m.round_duration.observe(now - since);
                self.round = Some((at, now));
            }
            None => self.round = Some((at, now)),
        }
    }

    /// Transactions whose admission time is kept.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.admitted.len()
    }
}

/// The time a closure took, observed.
pub(crate) fn timed<T>(observe: impl FnOnce(Duration), f: impl FnOnce() -> T) -> T {
    let at = Instant::now();
    let out = f();
    observe(at.elapsed());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_transaction_is_timed_to_its_commit_once() {
        let (m, mut c) = (Metrics::default(), Clocks::default());
        let ids: Vec<TxId> = (0..3u8).map(|i| engine::Hash([i; 32])).collect();
        c.admitted(ids.clone());
        c.committed(&ids[..2], &m);
        assert_eq!(m.submit_to_commit.count(), 2);
        // The first commit has no height before it.
        assert_eq!(m.height_duration.count(), 0);
        c.committed(&ids, &m);
        assert_eq!(m.submit_to_commit.count(), 3, "each once");
        assert_eq!(m.height_duration.count(), 1);
        assert_eq!(c.kept(), 0);
    }

    #[test]
    fn the_clock_of_admissions_is_bounded() {
        let (m, mut c) = (Metrics::default(), Clocks::default());
        let n = limits::SUBMIT_CLOCK_TXS_MAX + 10;
        c.admitted((0..n as u64).map(|i| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&i.to_be_bytes());
            engine::Hash(b)
        }));
        assert_eq!(c.kept(), limits::SUBMIT_CLOCK_TXS_MAX);
        assert!(c.order.len() <= limits::SUBMIT_CLOCK_TXS_MAX);
        c.committed(&[], &m);
    }

    #[test]
    fn rounds_are_timed_when_they_change() {
        let (m, mut c) = (Metrics::default(), Clocks::default());
        c.at_round((5, 0), &m);
        c.at_round((5, 0), &m);
        assert_eq!(m.round_duration.count(), 0);
        c.at_round((5, 1), &m);
        c.at_round((6, 0), &m);
        assert_eq!(m.round_duration.count(), 2);
    }
}
