//! The driver's side of the core: an input logged, handed to the core and its effects
//! executed — this validator's signed messages leaving only once the log is durable and the
//! signing state covers them — and the log compacted past its bound.

use engine::{Hash, ledger::VoteKind};

use super::{Driver, DriverError, Env, Timer, WAL_HARD_FACTOR, values::unlogged_bodies};
use crate::{
    core::{Core, Effect, Input},
    message::{Message, SignedVote},
    signer::{SIGN_STATE_VOTES_MAX, SignState, Slot, message_digest},
    wal::WalRecord,
};

impl Driver {
    /// Logs an input (if it changes the core, and is of the height being decided), hands it to
    /// the core, and executes the effects.
    pub(super) fn input<E: Env>(&mut self, env: &mut E, input: Input, log: bool) -> Result<(), DriverError> {
        let next = self.chain.next_height();
        let Some(core) = self.core.as_mut() else { return Ok(()) };
        let input = if let Input::Start { .. } = &input {
            // A new height: the log before is of a committed one.
            self.wal_base_bytes = env.wal_start(&[WalRecord::Input(input.clone())])?;
            self.logged_bodies.clear();
            self.start = Some(input.clone());
            input
        } else if log && core.height() == next {
            let record = WalRecord::Input(input);
            let bytes = env.wal_append(&record)?;
            let WalRecord::Input(input) = record else { unreachable!("made above") };
            let grown = bytes.saturating_sub(self.wal_base_bytes);
            let mut out = Vec::new();
            core.handle(input, &mut out);
            // Compacted once this validator has signed both votes of the round (the next round
            // is where a compacted core resumes anyway): leaving a round before prevoting and
            // precommitting in it could leave the others waiting for a quorum of that round for
            // ever. At `WAL_HARD_FACTOR` times the bound the log is compacted whatever the step.
            let due = grown > self.cfg.wal_compact_bytes
                && (core.precommitted()
                    || grown > self.cfg.wal_compact_bytes.saturating_mul(WAL_HARD_FACTOR));
            let height = core.height();
            self.execute(env, out)?;
            return if due { self.compact(env, height) } else { Ok(()) };
        } else {
            input
        };
        let mut out = Vec::new();
        core.handle(input, &mut out);
        self.execute(env, out)
    }

    /// Rewrites the log as the height's `Start` and a `Resume` at the next round (the lock
    /// kept), and resumes the core the same way: a replay of the new log ends where it is.
    pub(super) fn compact<E: Env>(&mut self, env: &mut E, height: u64) -> Result<(), DriverError> {
        let (Some(core), Some(start)) = (self.core.as_mut(), self.start.clone()) else { return Ok(()) };
        if core.is_decided() || core.height() != height || self.chain.next_height() != height {
            return Ok(());
        }
        let resume = Input::Resume {
            height: core.height(),
            round: core.round() + 1,
            locked: core.locked(),
            valid: core.pol().map(Box::new),
        };
        // The bodies of the lock and of the valid value go on with them: a decision of either
        // must commit.
        let mut records = vec![WalRecord::Input(start)];
        self.logged_bodies.clear();
        for id in [core.locked(), core.valid()].into_iter().flatten().map(|(_, id)| id) {
            if let Some(fresh) = unlogged_bodies(&self.chain, &mut self.logged_bodies, &id) {
                records.push(WalRecord::Bodies(fresh));
            }
        }
        records.push(WalRecord::Input(resume.clone()));
        self.wal_base_bytes = env.wal_reset(&records)?;
        // What it signed in the round it leaves goes on being re-broadcast: the others may not
        // have it yet and need it to finish that round.
        let own = core.own_messages(core.round());
        self.resent = own;
        self.stats.wal_compactions += 1;
        let mut out = Vec::new();
        core.handle(resume, &mut out);
        self.execute(env, out)
    }

    /// Executes the core's effects in order; this validator's signed messages leave only once
    /// the log is durable and the signing state covers them.
    pub(super) fn execute<E: Env>(&mut self, env: &mut E, effects: Vec<Effect>) -> Result<(), DriverError> {
        if let Some(core) = &self.core {
            self.chain.pin([core.locked().map(|(_, id)| id), core.valid().map(|(_, id)| id)]);
        }
        let sends = self.clear_to_send(env, &effects)?;
        for (e, send) in effects.into_iter().zip(sends) {
            match e {
                Effect::Broadcast(m) => {
                    if send {
                        env.broadcast(&m);
                    }
                }
                Effect::Schedule { timeout, after_ms } => env.schedule(Timer::Consensus(timeout), after_ms),
                Effect::Check { height, id, value, from } => self.check(env, height, id, value, from)?,
                // A value for a round the core has left (a start resumed at a later round, a
                // replay) would be ignored by it: nothing is built.
                Effect::Build { round, .. } if self.core.as_ref().is_none_or(|c| c.round() != round) => {}
                Effect::Build { height, round } => {
                    let value = self.chain.build(env.now_ms());
                    self.log_bodies(env, &value.id(self.chain.state().params().chain_id.as_str()))?;
                    self.input(env, Input::Proposed { height, round, value }, true)?;
                }
                Effect::Decide(d) => self.decide(env, d)?,
                Effect::Redeliver(messages) => {
                    for (from, message) in messages {
                        self.on_message(env, from, message)?;
                    }
                }
                Effect::Evidence(proof) => {
                    self.stats.equivocations += 1;
                    let offender = self
                        .core
                        .as_ref()
                        .and_then(Core::validators)
                        .and_then(|set| set.validators().get(usize::from(proof.offender())))
                        .map(|v| v.public_key);
                    if let Some(key) = offender {
                        env.evidence(&proof, &key)?;
                    }
                }
                Effect::PeerBehind { peer, height } => env.send_ledger(peer, height),
                Effect::PeerAhead { peer, .. } => {
                    if self.stuck.is_some() || self.core.as_ref().is_some_and(|c| !c.is_decided()) {
                        env.request_ledger(Some(peer), self.chain.next_height());
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the core is at the height the chain commits next (the height the log is of).
    pub(super) fn deciding(&self) -> bool {
        self.core.as_ref().is_some_and(|c| c.height() == self.chain.next_height())
    }

    /// While its store is below the height it signed at: the precommit it signed at the
    /// height it last committed, if that is the height the store is missing next. The ledger
    /// may have been committed by this validator alone (its precommit lost on the way to the
    /// others) and lost with its store since: the others then need this precommit to decide it.
    /// The very bytes signed then: sending them again signs nothing new.
    pub(super) fn resend_commit<E: Env>(&self, env: &mut E) {
        let next = self.chain.next_height();
        if let Some(c) = self.signer.as_ref().and_then(|s| s.commit).filter(|c| c.vote.height == next) {
            env.broadcast(&Message::Vote(c));
        }
    }

    /// Which effects may be executed (only broadcasts of this validator's own messages can be
    /// held back), after making the log durable and persisting the signing state they need.
    pub(super) fn clear_to_send<E: Env>(
        &mut self,
        env: &mut E,
        effects: &[Effect],
    ) -> Result<Vec<bool>, DriverError> {
        let me = self.core.as_ref().and_then(Core::me);
        let mut sends = vec![true; effects.len()];
        let mut newest: Option<(Slot, Hash)> = None;
        let mut leaving: Vec<Hash> = Vec::new();
        let mut any_own = false;
        for (e, send) in effects.iter().zip(sends.iter_mut()) {
            let Effect::Broadcast(m) = e else { continue };
            if me != Some(m.signer()) {
                continue;
            }
            any_own = true;
            let (slot, digest) = (Slot::of(m), message_digest(m));
            let fresh = self.signer.as_ref().is_none_or(|s| slot > s.slot);
            let resent = self.sent.contains(&digest)
                || self.signer.as_ref().is_some_and(|s| s.slot == slot && s.digest == digest);
            *send = fresh || resent;
            if !*send {
                // Counted once per message, however often the core re-broadcasts it.
                if self.held.insert(digest) {
                    self.stats.refused_signatures += 1;
                }
                continue;
            }
            if !self.sent.contains(&digest) {
                leaving.push(digest);
            }
            if fresh && newest.is_none_or(|(n, _)| slot > n) {
                newest = Some((slot, digest));
            }
        }
        if self.deciding() && !leaving.is_empty() {
            for chunk in leaving.chunks(crate::wal::SENT_PER_RECORD_MAX) {
                env.wal_append(&WalRecord::Sent(chunk.to_vec()))?;
            }
        }
        if any_own {
            // The inputs that made these messages are on disk before they leave: a restart
            // replays them and signs the same bytes. (A decision signs nothing: a restart that
            // lost what made it decides again from the votes the others re-send, or syncs the
            // ledger.)
            env.wal_sync()?;
        }
        if let Some((slot, digest)) = newest {
            self.save_sign_state(env, slot, digest, effects, &sends)?;
        }
        self.sent.extend(leaving);
        Ok(sends)
    }

    /// Persists the signing state of the newest slot about to be signed (`slot`, the message
    /// `digest`), with the votes of its round that leave — those of `effects` cleared to send
    /// and those saved before in the same round — before any of them leaves.
    pub(super) fn save_sign_state<E: Env>(
        &mut self,
        env: &mut E,
        slot: Slot,
        digest: Hash,
        effects: &[Effect],
        sends: &[bool],
    ) -> Result<(), DriverError> {
        let me = self.core.as_ref().and_then(Core::me);
        let locked = self.core.as_ref().and_then(Core::locked);
        let mut votes: Vec<SignedVote> = self
            .signer
            .iter()
            .flat_map(|s| s.votes.iter().copied())
            .chain(effects.iter().zip(sends).filter_map(|(e, send)| match e {
                Effect::Broadcast(Message::Vote(v)) if *send && me == Some(v.validator) => Some(*v),
                _ => None,
            }))
            .filter(|v| v.vote.height == slot.height && v.vote.round == slot.round)
            .collect();
        votes.dedup_by_key(|v| v.vote.kind);
        votes.truncate(SIGN_STATE_VOTES_MAX);
        // The last precommit of the height below, carried while this validator signs at the
        // next one.
        let commit = self.signer.as_ref().and_then(|s| {
            if s.slot.height == slot.height {
                s.commit
            } else if s.slot.height + 1 == slot.height {
                s.votes.iter().find(|v| v.vote.kind == VoteKind::Precommit).copied()
            } else {
                None
            }
        });
        let state = SignState { slot, digest, locked, votes, commit };
        env.save_signer(&state)?;
        self.signer = Some(state);
        Ok(())
    }
}
