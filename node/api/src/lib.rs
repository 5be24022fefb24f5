//! The explorer HTTP API's contract (docs/API.md): the request and response types of every
//! `/v1` route, their paths, and the OpenAPI document generated from them.
//!
//! The server (the node's explorer) serializes these types, the wallet and the load generator
//! deserialize them, and [`openapi`] describes them: the wire is written once. No HTTP stack
//! here — a client links this crate and brings its own.
//!
//! Amounts are raw integer units (10⁻⁸); addresses are Address32 text; hashes, ids and keys are
//! lower-case hex; engine payloads (proofs, validator sets) are their engine codec in hex.

mod account;
mod chain;
mod error;
mod evidence;
mod header;
mod openapi;
mod proof;
pub mod routes;
mod schema;
mod stream;
mod tx;
mod tx_schema;

pub use self::{
    account::{Account, Balance, HistoryPage, TxRef},
    chain::{Certificate, Ledger, Status, Validator, ValidatorChange, ValidatorList, ValidatorsNow},
    error::{ErrorBody, ErrorCode, ErrorDetail},
    evidence::{EvidenceItem, EvidenceKind, EvidencePage},
    header::{CertificateSignature, CertifiedHeader, HeaderPage, SetChange, SetChanges, SignedCertificate},
    openapi::openapi,
    proof::{Proof, ProofKind, Validators},
    schema::{AddressText, HashHex, Height, PublicKeyHex, TxBytes},
    stream::{StreamEnd, StreamEndReason},
    tx::{Accepted, AcceptedStatus, SubmitHex, TxState, TxStatus},
};
