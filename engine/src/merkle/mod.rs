//! The two Merkle structures a ledger header commits to, and their offline-verifiable proofs.
//!
//! **Transaction tree** (`tx root`): a binary tree over the block's transaction ids in block order.
//! - leaf = BLAKE3 keyed [`Domain::TxLeaf`](crate::hash::Domain::TxLeaf) of the 32-byte id;
//! - inner node = [`Domain::TxNode`](crate::hash::Domain::TxNode) of `left ‖ right`;
//! - a lone last node of a level is promoted unchanged (never paired with itself, so no two id
//!   lists share a root the way Bitcoin's duplicated-node rule allowed, CVE-2012-2459); the tree
//!   is therefore the same as RFC 6962's (split at the largest power of two below the size);
//! - the empty tree's root is [`Hash::ZERO`](crate::Hash::ZERO).
//!
//! **State trie** (`state root`): a 16-ary radix trie keyed by the 21-byte raw address, nibble `i`
//! of a key being the high nibble of byte `i / 2` for even `i` and the low one for odd `i`. Its
//! hash is a function of the set of `(key, leaf hash)` alone:
//! - the empty set hashes to [`Hash::ZERO`](crate::Hash::ZERO);
//! - a one-entry set hashes to its leaf hash (leaves sit at the shallowest depth where their
//!   prefix is unique);
//! - otherwise a branch at `depth`: [`Domain::StateNode`](crate::hash::Domain::StateNode) of
//!   `depth (u8) ‖ child bitmap (u16 LE, bit n = nibble n) ‖ the non-empty children's hashes in
//!   nibble order`. There are no extension nodes, so where all the keys of a branch share the
//!   next nibble the branch has a single child (every ECDSA address starts with byte `0x01`: the
//!   root and the branch below it have one child each).
//!
//! The leaf hash is the caller's (the engine hashes the canonical account, address included, with
//! `Domain::StateLeaf`); the trie never looks inside it. Because the trie stops at the shallowest
//! unique prefix, a state proof binds only the first nibbles of the key: **the leaf hash must
//! commit to the whole key**, and a verifier must check that the account it hashed carries the
//! address it asked for.

mod chunks;
mod state;
mod tx;

pub use chunks::{
    CHUNK_DEPTH, CHUNK_PREFIXES, ChunkError, ChunkSummary, chunk_of, chunk_summary, root_of_chunks,
};

pub use state::{StateKey, StateProof, StateProofLevel, StateTrie, verify_state_proof};
pub use tx::{TxProof, tx_proof, tx_root, verify_tx_proof};
