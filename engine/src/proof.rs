//! Simple payment verification: proofs a light client checks offline.
//!
//! A proof carries a ledger header, its certificate and a Merkle branch. The verifier needs only
//! the chain id and the validator set that certifies that ledger — the set committed to by the
//! previous header's `validator_set_hash` — and no state, network or storage.

use crate::{
    account::Account,
    codec::{CodecError, Decode, Encode, Reader},
    keys::Backend,
    ledger::{Certificate, CertificateError, LedgerHeader, ValidatorSet},
    merkle::{StateProof, TxProof, verify_state_proof, verify_tx_proof},
    tx::TxId,
};

/// Why a proof does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The certificate does not certify the header under the given validator set.
    #[error("certificate: {0}")]
    Certificate(#[from] CertificateError),
    /// The Merkle branch does not lead from the item to the header's root.
    #[error("the Merkle branch does not lead to the header's root")]
    Branch,
}

/// A transaction was included in a certified ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxInclusionProof {
    /// The ledger's header.
    pub header: LedgerHeader,
    /// Its certificate.
    pub certificate: Certificate,
    /// The transaction id.
    pub tx_id: TxId,
    /// Branch from the id to `header.tx_root`.
    pub branch: TxProof,
}

/// An account had this state after a certified ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountStateProof {
    /// The ledger's header.
    pub header: LedgerHeader,
    /// Its certificate.
    pub certificate: Certificate,
    /// The account's full state.
    pub account: Account,
    /// Branch from the account's leaf to `header.state_root`.
    pub branch: StateProof,
}

/// Checks a transaction-inclusion proof.
pub fn verify_tx_inclusion(
    chain_id: &str,
    validators: &ValidatorSet,
    proof: &TxInclusionProof,
    backend: Backend,
) -> Result<(), ProofError> {
    proof.certificate.verify_header(validators, chain_id, &proof.header, backend)?;
    if verify_tx_proof(&proof.header.tx_root, &proof.tx_id, &proof.branch) {
        Ok(())
    } else {
        Err(ProofError::Branch)
    }
}

/// Checks an account-state proof.
pub fn verify_account_state(
    chain_id: &str,
    validators: &ValidatorSet,
    proof: &AccountStateProof,
    backend: Backend,
) -> Result<(), ProofError> {
    proof.certificate.verify_header(validators, chain_id, &proof.header, backend)?;
    let leaf = proof.account.leaf_hash();
    if verify_state_proof(&proof.header.state_root, proof.account.address.raw(), &leaf, &proof.branch) {
        Ok(())
    } else {
        Err(ProofError::Branch)
    }
}

impl Encode for TxInclusionProof {
    fn encode(&self, out: &mut Vec<u8>) {
        self.header.encode(out);
        self.certificate.encode(out);
        self.tx_id.encode(out);
        self.branch.encode(out);
    }
}

impl Decode for TxInclusionProof {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Self {
            header: LedgerHeader::decode(r)?,
            certificate: Certificate::decode(r)?,
            tx_id: TxId::decode(r)?,
            branch: TxProof::decode(r)?,
        })
    }
}

impl Encode for AccountStateProof {
    fn encode(&self, out: &mut Vec<u8>) {
        self.header.encode(out);
        self.certificate.encode(out);
        self.account.encode(out);
        self.branch.encode(out);
    }
}

impl Decode for AccountStateProof {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        Ok(Self {
            header: LedgerHeader::decode(r)?,
            certificate: Certificate::decode(r)?,
            account: Account::decode(r)?,
            branch: StateProof::decode(r)?,
        })
    }
}
