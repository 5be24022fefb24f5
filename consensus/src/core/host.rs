//! What the host and the core exchange: the [`Input`]s it feeds the core, the [`Effect`]s the
//! core asks of it, and what they carry (a [`Decision`], a proof of lock [`Pol`]).

use engine::{
    Hash,
    ledger::{Certificate, ValidatorSet},
};

use super::{PeerId, Timeout};
use crate::{
    evidence::Equivocation,
    message::{Message, SignedProposal, SignedVote, Value},
};

/// What the host tells the core.
#[derive(Clone, Debug)]
pub enum Input {
    /// Start `height` with its validator set (after the previous ledger is committed).
    Start {
        /// Height to decide.
        height: u64,
        /// The set that certifies it.
        validators: ValidatorSet,
    },
    /// A message from a peer (signatures are checked here).
    Message {
        /// Who delivered it (not necessarily its signer).
        from: PeerId,
        /// The message.
        message: Message,
    },
    /// A timer fired.
    Timeout(Timeout),
    /// The host's verdict on a proposed value (asked by [`Effect::Check`]).
    Checked {
        /// Height.
        height: u64,
        /// The value's id.
        value: Hash,
        /// Every transaction valid in order on the committed state, roots right, timestamp after
        /// the previous ledger's.
        valid: bool,
        /// The timestamp is within the drift of the host's clock (judged only of fresh
        /// proposals, line 22; a re-proposal's quorum of prevotes vouches for its time).
        timely: bool,
    },
    /// Resume the started height at `round` with this lock and valid value, holding nothing
    /// else: what a host logs when it compacts its write-ahead log (a round ahead, the lock and
    /// the valid value with the prevotes that made it valid kept: what liveness needs), or when
    /// it restarts without a log of the height but with the signing state it persisted (the
    /// round after the last one it signed in, and the value it was locked on). Ignored unless
    /// `round` is above the current one.
    Resume {
        /// Height (the current one).
        height: u64,
        /// The round to go to.
        round: u32,
        /// `(lockedRound, id(lockedValue))` of the paper, if locked.
        locked: Option<(u32, Hash)>,
        /// The valid value, its proposal and the prevotes that made it valid.
        valid: Option<Box<Pol>>,
    },
    /// The value the host built for this validator's proposal (asked by [`Effect::Build`]).
    Proposed {
        /// Height.
        height: u64,
        /// Round.
        round: u32,
        /// The value.
        value: Value,
    },
}

/// A proof of lock: a proposal and a quorum of its round's prevotes for its value (the paper's
/// `validValue` and `validRound`, with what justifies re-proposing it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pol {
    /// The proposal of round `proposal.proposal.round` (the valid round) carrying the value.
    pub proposal: SignedProposal,
    /// Prevotes of that round for the value, more than two thirds of the weight.
    pub prevotes: Vec<SignedVote>,
}

/// A decided ledger: its value and the certificate (a quorum of one round's precommits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Height.
    pub height: u64,
    /// The ledger hash.
    pub id: Hash,
    /// Header and transaction ids.
    pub value: Value,
    /// The precommits that make it final.
    pub certificate: Certificate,
}

/// What the core asks the host to do.
#[derive(Clone, Debug)]
pub enum Effect {
    /// Send to every peer.
    Broadcast(Message),
    /// Feed back `Input::Timeout(timeout)` after `after_ms`.
    Schedule {
        /// The timer.
        timeout: Timeout,
        /// Delay.
        after_ms: u64,
    },
    /// Check a proposed value (fetching missing bodies) and answer with `Input::Checked`.
    Check {
        /// Height.
        height: u64,
        /// Its id.
        id: Hash,
        /// The value.
        value: Value,
        /// Who delivered the proposal (ask it for missing bodies).
        from: PeerId,
    },
    /// Build a value for this validator's proposal and answer with `Input::Proposed`.
    Build {
        /// Height.
        height: u64,
        /// Round.
        round: u32,
    },
    /// The height is decided: commit the ledger, then start the next height.
    Decide(Decision),
    /// A validator equivocated: keep the proof.
    Evidence(Equivocation),
    /// Messages for this height that arrived before it started: feed each back as
    /// `Input::Message` (logging them like any input).
    Redeliver(Vec<(PeerId, Message)>),
    /// A peer sent a message for a decided height: send it that height's committed ledger.
    PeerBehind {
        /// The peer.
        peer: PeerId,
        /// The height it is at.
        height: u64,
    },
    /// A peer sent a message for a later height: fetch the current height's ledger from it.
    PeerAhead {
        /// The peer.
        peer: PeerId,
        /// The height it is at.
        height: u64,
    },
}
