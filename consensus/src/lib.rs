//! Consensus for Caasiope node: post-synchronous federated BFT.
//!
//! * [`Core`]: Tendermint's algorithm (Buchman, Kwon, Milosevic 2018) with voting weights, as a
//!   pure state machine — `(state, input) → effects`, no I/O, no clock, no threads — so the
//!   real network and a seeded deterministic simulator drive the same code.
//! * [`Chain`]: the application side a validator host needs — the pool of validated
//!   transactions, building proposals, checking proposed values by re-executing them on the
//!   committed state, and committing decided or synced ledgers with their state root checked.
//! * [`Equivocation`]: a compact, offline-checkable proof that a validator signed two
//!   conflicting messages for one height and round.
//! * [`Driver`]: what turns the core's effects into actions — log, persist the signing state
//!   ([`SignState`]), send, check and build values, commit, sync — written once against small
//!   traits ([`Clock`], [`Network`], [`Timers`], [`Storage`]) that the node implements on
//!   threads, tokio and MDBX and the simulator on a virtual clock, network and storage.
//! * [`wire`]: the gossip and sync payloads peers exchange.
//!
//! The wire formats are in `docs/CONSENSUS.md`.

#![forbid(unsafe_code)]

mod chain;
mod core;
mod driver;
mod evidence;
mod message;
mod signer;
mod votes;
mod wal;
pub mod wire;

pub use crate::{
    chain::{
        Chain, ChainConfig, ChainError, CheckOutcome, Committed, CommittedLedger, EXECUTED_MAX, Mempool,
        MempoolConfig, PoolError,
    },
    core::{
        Config, Core, CoreStats, Decision, EVIDENCE_PER_VALIDATOR_MAX, Effect, FUTURE_FAILURES_PER_PEER_MAX,
        FUTURE_PER_SIGNER_MAX, Input, PROPOSAL_ROUNDS_AHEAD, PROPOSALS_PER_ROUND_MAX, PeerId, Pol,
        ROUND_WINDOW, Screen, Timeout, TimeoutKind, Timeouts,
    },
    driver::{
        Clock, Driver, DriverConfig, DriverError, DriverStats, Env, Fault, Network, Storage, StorageError,
        Timer, Timers, WAL_COMPACT_BYTES, WAL_HARD_FACTOR, WalRead,
    },
    evidence::{Equivocation, EvidenceError},
    message::{Message, MessageError, Proposal, SignedProposal, SignedVote, Value},
    signer::{SIGN_STATE_VOTES_MAX, SignState, Slot, message_digest},
    wal::{Bodies, SharedTxs, WalRecord},
};
