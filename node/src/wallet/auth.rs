//! Who must sign: the wallet's reading of a transaction's spend rules (DESIGN §3.3), so that
//! `wallet sign` refuses a key no rule needs and `wallet submit` refuses an incomplete
//! transaction before the explorer does.
//!
//! This mirrors the engine's rule evaluation (private to `engine::state`) for that purpose
//! only: the engine stays the judge — the explorer re-checks every submission against its state,
//! and the tests apply what the wallet builds to a real engine state. It evaluates like the
//! engine: every signer of a MultiSig (so any of them may sign), payment-channel inputs by
//! their own rule, the fee payer unless it is also an input, with the same depth and work
//! bounds. Declarations come from the transaction and from the chain (resolved when the file
//! was built); an account whose declaration is known to neither is unsatisfiable, as on chain.

use std::collections::BTreeSet;

use engine::{
    Address, AddressType, Declaration,
    limits::{SPEND_DEPTH_MAX, SPEND_EVALUATIONS_MAX},
    tx::{Leg, Transaction},
};

/// The verdict on a transaction and its signers so far.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Verdict {
    /// Every input and the fee payer are satisfied and no signature is superfluous.
    pub(crate) complete: bool,
    /// Accounts whose rule is not satisfied yet.
    pub(crate) unsatisfied: Vec<Address>,
    /// Signers no rule uses (the chain would reject the transaction for them).
    pub(crate) unneeded: Vec<Address>,
    /// Every ECDSA address whose signature some rule can use.
    pub(crate) eligible: BTreeSet<Address>,
}

/// Evaluates `tx` with signatures by `signers` at ledger time `now_ms`, knowing `context`
/// declarations besides the transaction's own.
pub(crate) fn evaluate(
    tx: &Transaction,
    context: &[Declaration],
    signers: &[Address],
    now_ms: i64,
) -> Verdict {
    let mut rules = Rules::new(tx, context, signers, now_ms);
    let mut unsatisfied = Vec::new();
    for (i, leg) in tx.inputs.iter().enumerate() {
        let ok = if leg.address.kind() == AddressType::PaymentChannel {
            rules.channel_input(leg, tx)
        } else {
            tx.inputs[..i].iter().any(|l| l.address == leg.address) || rules.satisfied(&leg.address, 0)
        };
        if !ok && !unsatisfied.contains(&leg.address) {
            unsatisfied.push(leg.address);
        }
    }
    let payer = tx.fee.payer;
    let payer_checked =
        payer.kind() != AddressType::PaymentChannel && tx.inputs.iter().any(|l| l.address == payer);
    if !payer_checked && !rules.satisfied(&payer, 0) && !unsatisfied.contains(&payer) {
        unsatisfied.push(payer);
    }
    let unneeded: Vec<Address> = signers.iter().filter(|s| !rules.eligible.contains(s)).copied().collect();
    Verdict {
        complete: unsatisfied.is_empty() && unneeded.is_empty(),
        unsatisfied,
        unneeded,
        eligible: rules.eligible,
    }
}

struct Rules<'a> {
    declared: Vec<(Address, &'a Declaration)>,
    secrets: Vec<&'a [u8; 32]>,
    signers: &'a [Address],
    eligible: BTreeSet<Address>,
    now_ms: i64,
    evaluations: usize,
}

impl<'a> Rules<'a> {
    fn new(tx: &'a Transaction, context: &'a [Declaration], signers: &'a [Address], now_ms: i64) -> Self {
        let mut declared = Vec::new();
        let mut secrets = Vec::new();
        // The transaction's own declarations first: like the engine, they win over the chain's.
        for d in tx.declarations.iter().chain(context) {
            match d {
                Declaration::Secret { preimage } => secrets.push(preimage),
                _ if d.is_account_definition() => {
                    if let Some(a) = d.address() {
                        declared.push((a, d));
                    }
                }
                _ => {}
            }
        }
        Self { declared, secrets, signers, eligible: BTreeSet::new(), now_ms, evaluations: 0 }
    }

    fn declaration(&self, address: &Address) -> Option<&'a Declaration> {
        self.declared.iter().find(|(a, _)| a == address).map(|(_, d)| *d)
    }

    fn satisfied(&mut self, address: &Address, depth: usize) -> bool {
        self.evaluations += 1;
        if depth > SPEND_DEPTH_MAX || self.evaluations > SPEND_EVALUATIONS_MAX {
            return false;
        }
        match address.kind() {
            AddressType::Ecdsa => {
                self.eligible.insert(*address);
                self.signers.contains(address)
            }
            AddressType::MultiSig => match self.declaration(address) {
                Some(Declaration::MultiSig(ms)) => {
                    let mut count = 0usize;
                    for s in ms.signers() {
                        if self.satisfied(s, depth + 1) {
                            count += 1;
                        }
                    }
                    count >= ms.required() as usize
                }
                _ => false,
            },
            AddressType::HashLock => match self.declaration(address) {
                Some(Declaration::HashLock { hash_type, hash }) => {
                    self.secrets.iter().any(|p| hash_type.digest(p.as_slice()) == *hash)
                }
                _ => false,
            },
            AddressType::TimeLock => address
                .timelock_seconds()
                .filter(|&secs| secs > 0)
                .and_then(|secs| secs.checked_mul(1000))
                .is_some_and(|lock_ms| self.now_ms >= lock_ms),
            AddressType::PaymentChannel => match self.declaration(address) {
                Some(Declaration::PaymentChannel(ch)) if self.now_ms >= ch.expiry_ms => {
                    self.satisfied(&ch.payer, depth + 1)
                }
                _ => false,
            },
        }
    }

    /// A channel input: the payee with a voucher before expiry, the payer after.
    fn channel_input(&mut self, leg: &Leg, tx: &Transaction) -> bool {
        let Some(Declaration::PaymentChannel(ch)) = self.declaration(&leg.address) else { return false };
        if self.now_ms >= ch.expiry_ms {
            return self.satisfied(&ch.payer, 1);
        }
        let has_voucher =
            tx.declarations.iter().any(|d| matches!(d, Declaration::Voucher(v) if v.channel == leg.address));
        self.satisfied(&ch.payee, 1) && has_voucher && leg.currency == ch.currency
    }
}
