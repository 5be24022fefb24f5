//! The ledger protocol core of Caasiope node.
//!
//! Everything a validator, node or light client needs to agree on, and nothing else: the types
//! and their canonical codec, Address32, keys and signatures (two interchangeable backends),
//! account types and spend rules, transaction validation, the deterministic state transition,
//! the state and transaction Merkle trees with offline-verifiable proofs, and genesis.
//!
//! This crate does no I/O (its one reading of the wall clock, [`clock`], is for its hosts: no
//! rule reads it), spawns no threads of its own (CPU-heavy work runs on the caller's
//! rayon pool) and forbids `unsafe`. Untrusted bytes are decoded against the bounds in
//! [`limits`] and refused with an error, never a panic.

#![forbid(unsafe_code)]

pub mod account;
pub mod address;
pub mod clock;
pub mod codec;
pub mod currency;
pub mod declaration;
pub mod genesis;
pub mod hash;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod merkle;
pub mod proof;
pub mod spend;
pub mod state;
pub mod tx;
pub mod validate;

pub use address::{Address, AddressError, AddressType};
pub use codec::{CodecError, Decode, Encode};
pub use currency::Currency;
pub use declaration::{Declaration, HashType, MultiSig, PaymentChannel, ValidatorUpdate, Voucher};
pub use hash::Hash;
pub use keys::{Backend, PublicKey, SecretKey, Signature};
pub use merkle::{StateProof, StateTrie, TxProof};
