//! Spend rules (DESIGN §3.3): who must sign for an account, judged by one piece of code for the
//! ledger (every transaction a state applies) and for a wallet gathering signatures
//! ([`verdict`]: who may sign, what is missing, which signature no rule uses).
//!
//! A rule is judged against the declarations the transaction carries first, then those
//! published on chain, reached through [`Published`]: the state's accounts for the ledger, the
//! declarations a wallet resolved when it built the transaction. The evaluation is bounded the
//! same way everywhere ([`SPEND_DEPTH_MAX`], [`SPEND_EVALUATIONS_MAX`]).

use std::collections::BTreeSet;

use crate::{
    address::{Address, AddressType},
    declaration::{Declaration, Voucher},
    limits::{SPEND_DEPTH_MAX, SPEND_EVALUATIONS_MAX},
    tx::{Leg, Transaction},
    validate::TxError,
};

/// What the rules of a transaction may need besides what it carries.
pub trait Published {
    /// The declaration published for `address`, if any.
    fn declaration(&self, address: &Address) -> Option<&Declaration>;
    /// The total claimed so far from payment channel `address` (0 if unknown).
    fn channel_claimed(&self, address: &Address) -> i64;
}

/// Account-defining declarations with their addresses, each address derived (hashed) once.
#[derive(Clone, Debug, Default)]
pub struct Declared<'a>(Vec<(Address, &'a Declaration)>);

impl<'a> Declared<'a> {
    /// The account definitions among `declarations` (the others define no account).
    pub fn new(declarations: &'a [Declaration]) -> Self {
        Self(declarations.iter().filter_map(|d| Some((d.address()?, d))).collect())
    }

    fn get(&self, address: &Address) -> Option<&'a Declaration> {
        self.0.iter().find(|(a, _)| a == address).map(|(_, d)| *d)
    }
}

/// Declarations known off chain (a wallet's context): no channel has claims on record, so a
/// claim is judged against its voucher alone — the ledger also counts what was claimed before.
impl Published for Declared<'_> {
    fn declaration(&self, address: &Address) -> Option<&Declaration> {
        self.get(address)
    }

    fn channel_claimed(&self, _: &Address) -> i64 {
        0
    }
}

/// The judgement of a transaction's spend rules for the signatures it has so far.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Each account whose rule is not satisfied, with the ledger's reason, in the order the
    /// ledger judges them (inputs, fee payer, governance).
    pub unsatisfied: Vec<(Address, TxError)>,
    /// Signers no rule uses (the ledger rejects the transaction for each).
    pub unneeded: Vec<Address>,
    /// Every ECDSA address whose signature some rule of the transaction uses.
    pub eligible: BTreeSet<Address>,
}

impl Verdict {
    /// Every rule is satisfied and every signature used: as far as signatures go, the ledger
    /// accepts the transaction.
    pub fn complete(&self) -> bool {
        self.unsatisfied.is_empty() && self.unneeded.is_empty()
    }
}

/// Judges `tx` with signatures by `signers` at ledger time `now_ms` as the ledger does, knowing
/// the `published` declarations, and reports every rule that fails rather than the first. The
/// chain's `governance` account must also be satisfied when the transaction changes the
/// validator set (`None`: not judged, the caller does not know it).
pub fn verdict<P: Published + ?Sized>(
    tx: &Transaction,
    published: &P,
    signers: &[Address],
    now_ms: i64,
    governance: Option<&Address>,
) -> Verdict {
    let mut rules = SpendRules::new(published, &tx.declarations, signers, now_ms);
    rules.eligible = Some(BTreeSet::new());
    let mut unsatisfied: Vec<(Address, TxError)> = Vec::new();
    let judged = rules.judge(tx, governance, |address, why| {
        if !unsatisfied.iter().any(|(a, _)| *a == address) {
            unsatisfied.push((address, why));
        }
        Ok(())
    });
    debug_assert!(judged.is_ok(), "a verdict collects failures instead of stopping at one");
    Verdict {
        unsatisfied,
        unneeded: rules.unneeded().collect(),
        eligible: rules.eligible.unwrap_or_default(),
    }
}

/// Evaluates the spend rules of one transaction.
pub(crate) struct SpendRules<'a, P: Published + ?Sized> {
    published: &'a P,
    /// Account-defining declarations carried by the transaction.
    declared: Declared<'a>,
    secrets: Vec<&'a [u8; 32]>,
    vouchers: Vec<&'a Voucher>,
    signers: &'a [Address],
    /// Which signers some rule needed.
    used: Vec<bool>,
    /// Every ECDSA address a rule evaluated, when asked for ([`verdict`]).
    eligible: Option<BTreeSet<Address>>,
    now_ms: i64,
    evaluations: usize,
}

impl<'a, P: Published + ?Sized> SpendRules<'a, P> {
    pub(crate) fn new(
        published: &'a P,
        declarations: &'a [Declaration],
        signers: &'a [Address],
        now_ms: i64,
    ) -> Self {
        let mut secrets = Vec::new();
        let mut vouchers = Vec::new();
        for d in declarations {
            match d {
                Declaration::Secret { preimage } => secrets.push(preimage),
                Declaration::Voucher(v) => vouchers.push(v),
                _ => {}
            }
        }
        Self {
            published,
            declared: Declared::new(declarations),
            secrets,
            vouchers,
            signers,
            used: vec![false; signers.len()],
            eligible: None,
            now_ms,
            evaluations: 0,
        }
    }

    /// Judges every rule of `tx` in the ledger's order — each input (a repeated one once), the
    /// fee payer unless it is also an input, the governance account if the transaction updates
    /// validators — calling `fail` for each one not satisfied (stop by returning its error).
    /// Returns the payment channels' new claimed totals.
    pub(crate) fn judge(
        &mut self,
        tx: &Transaction,
        governance: Option<&Address>,
        mut fail: impl FnMut(Address, TxError) -> Result<(), TxError>,
    ) -> Result<Vec<(Address, i64)>, TxError> {
        let mut claims = Vec::new();
        for (i, leg) in tx.inputs.iter().enumerate() {
            if leg.address.kind() == AddressType::PaymentChannel {
                match self.channel_input(leg) {
                    Ok(Some(claim)) => claims.push(claim),
                    Ok(None) => {}
                    Err(why) => fail(leg.address, why)?,
                }
            } else if !tx.inputs[..i].iter().any(|l| l.address == leg.address) {
                self.require(&leg.address, &mut fail)?;
            }
        }
        let payer = tx.fee.payer;
        let payer_checked =
            payer.kind() != AddressType::PaymentChannel && tx.inputs.iter().any(|l| l.address == payer);
        if !payer_checked {
            self.require(&payer, &mut fail)?;
        }
        let updates_validators = tx.declarations.iter().any(|d| matches!(d, Declaration::ValidatorUpdate(_)));
        if let Some(governance) = governance.filter(|_| updates_validators) {
            self.require(governance, &mut fail)?;
        }
        Ok(claims)
    }

    /// The rule of `address`, through `fail` if not satisfied.
    fn require(
        &mut self,
        address: &Address,
        fail: &mut impl FnMut(Address, TxError) -> Result<(), TxError>,
    ) -> Result<(), TxError> {
        match self.satisfied(address, 0) {
            Ok(true) => Ok(()),
            Ok(false) => fail(*address, TxError::Unsatisfied(*address)),
            Err(why) => fail(*address, why),
        }
    }

    /// The signers no rule judged so far used.
    pub(crate) fn unneeded(&self) -> impl Iterator<Item = Address> + '_ {
        self.signers.iter().zip(&self.used).filter(|(_, used)| !**used).map(|(s, _)| *s)
    }

    /// The declaration of `address`: carried by the transaction, or published earlier.
    fn declaration(&self, address: &Address) -> Option<&'a Declaration> {
        self.declared.get(address).or_else(|| self.published.declaration(address))
    }

    /// Whether the rule of `address` is satisfied. Undeclared special accounts are simply
    /// unsatisfied (a MultiSig may reveal only the signers it needs).
    fn satisfied(&mut self, address: &Address, depth: usize) -> Result<bool, TxError> {
        if depth > SPEND_DEPTH_MAX {
            return Err(TxError::TooDeep(*address));
        }
        self.evaluations += 1;
        if self.evaluations > SPEND_EVALUATIONS_MAX {
            return Err(TxError::TooComplex);
        }
        Ok(match address.kind() {
            AddressType::Ecdsa => {
                if let Some(eligible) = &mut self.eligible {
                    eligible.insert(*address);
                }
                let mut found = false;
                for (signer, used) in self.signers.iter().zip(self.used.iter_mut()) {
                    if signer == address {
                        *used = true;
                        found = true;
                    }
                }
                found
            }
            AddressType::MultiSig => match self.declaration(address) {
                Some(Declaration::MultiSig(ms)) => {
                    // Every signer is evaluated, not just the first `required`: a signature
                    // given for any of them is then "needed", whatever the order.
                    let mut count = 0usize;
                    for s in ms.signers() {
                        if self.satisfied(s, depth + 1)? {
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
                // TimeLock(0) (the CAS issuer) and earlier are never spendable.
                .filter(|&secs| secs > 0)
                .and_then(|secs| secs.checked_mul(1000))
                .is_some_and(|lock_ms| self.now_ms >= lock_ms),
            AddressType::PaymentChannel => match self.declaration(address) {
                // Outside of a claim (see `channel_input`), only the payer after expiry.
                Some(Declaration::PaymentChannel(ch)) if self.now_ms >= ch.expiry_ms => {
                    self.satisfied(&ch.payer, depth + 1)?
                }
                _ => false,
            },
        })
    }
    /// The rule of an input from a payment channel. Before expiry the payee claims, in the
    /// channel's currency, up to the payer's latest voucher; after expiry the payer takes the
    /// rest. Returns the channel's new claimed total for a claim.
    fn channel_input(&mut self, leg: &Leg) -> Result<Option<(Address, i64)>, TxError> {
        let Some(Declaration::PaymentChannel(ch)) = self.declaration(&leg.address) else {
            return Err(TxError::Unsatisfied(leg.address));
        };
        if self.now_ms >= ch.expiry_ms {
            return if self.satisfied(&ch.payer, 1)? {
                Ok(None)
            } else {
                Err(TxError::Unsatisfied(leg.address))
            };
        }
        if leg.currency != ch.currency {
            return Err(TxError::ChannelCurrency(leg.address));
        }
        if !self.satisfied(&ch.payee, 1)? {
            return Err(TxError::Unsatisfied(leg.address));
        }
        let voucher = self
            .vouchers
            .iter()
            .find(|v| v.channel == leg.address)
            .ok_or(TxError::VoucherMissing(leg.address))?;
        if voucher.public_key.address() != ch.payer {
            return Err(TxError::VoucherWrongPayer(leg.address));
        }
        let claimed = self.published.channel_claimed(&leg.address);
        let total = claimed.checked_add(leg.amount).ok_or(TxError::Overflow)?;
        if total > voucher.cumulative {
            return Err(TxError::VoucherExceeded {
                claimed,
                amount: leg.amount,
                cumulative: voucher.cumulative,
            });
        }
        Ok(Some((leg.address, total)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Currency, MultiSig, PaymentChannel, SecretKey, tx::Fee};

    fn ecdsa(n: u8) -> Address {
        Address::new(AddressType::Ecdsa, [n; 20])
    }

    fn multisig(signers: Vec<Address>, required: i16) -> (Address, Declaration) {
        let d = Declaration::MultiSig(MultiSig::new(signers, required).unwrap());
        (d.address().unwrap(), d)
    }

    fn spend(from: Address, declarations: Vec<Declaration>) -> Transaction {
        let leg = |address| Leg { address, currency: Currency::CAS, amount: 5 };
        Transaction {
            version: crate::tx::TX_VERSION,
            expiration_ms: 10_000,
            declarations,
            inputs: vec![leg(from)],
            outputs: vec![leg(ecdsa(99))],
            message: vec![],
            fee: Fee { payer: from, amount: 1 },
        }
    }

    /// A 2-of-3 published on chain: who may sign, what is missing, which signature is unused.
    #[test]
    fn a_verdict_names_what_is_missing_and_what_is_not_needed() {
        let (treasury, published) = multisig(vec![ecdsa(1), ecdsa(2), ecdsa(3)], 2);
        let tx = spend(treasury, vec![]);
        let context = [published];
        let v = verdict(&tx, &Declared::new(&context), &[ecdsa(1)], 0, None);
        assert_eq!(v.unsatisfied, [(treasury, TxError::Unsatisfied(treasury))]);
        assert_eq!(v.eligible, [ecdsa(1), ecdsa(2), ecdsa(3)].into_iter().collect());
        assert!(!v.complete());
        let v = verdict(&tx, &Declared::new(&context), &[ecdsa(3), ecdsa(1), ecdsa(7)], 0, None);
        assert_eq!((v.unsatisfied.as_slice(), v.unneeded.as_slice()), ([].as_slice(), [ecdsa(7)].as_slice()));
        let v = verdict(&tx, &Declared::new(&context), &[ecdsa(2), ecdsa(3)], 0, None);
        assert!(v.complete());
        // Unknown to the context, as on chain: the account cannot be spent.
        let v = verdict(&tx, &Declared::default(), &[ecdsa(2), ecdsa(3)], 0, None);
        assert_eq!(v.unsatisfied, [(treasury, TxError::Unsatisfied(treasury))]);
        assert_eq!(v.unneeded, [ecdsa(2), ecdsa(3)]);
    }

    /// The rules the wallet's former copy judged otherwise: the depth bound is an error of the
    /// transaction, a voucher must be the payer's, and validator updates need governance.
    #[test]
    fn a_verdict_judges_as_the_ledger_does() {
        // MultiSigs nested deeper than the bound.
        let (mut inner, mut declarations) = (ecdsa(1), Vec::new());
        for _ in 0..=SPEND_DEPTH_MAX {
            let (outer, d) = multisig(vec![inner], 1);
            declarations.push(d);
            inner = outer;
        }
        let v = verdict(&spend(inner, declarations), &Declared::default(), &[ecdsa(1)], 0, None);
        assert!(matches!(v.unsatisfied.as_slice(), [(a, TxError::TooDeep(_))] if *a == inner), "{v:?}");

        // A channel claim with a voucher signed by someone else than the payer.
        let (payer, other) =
            (SecretKey::from_bytes(&[4; 32]).unwrap(), SecretKey::from_bytes(&[5; 32]).unwrap());
        let open = Declaration::PaymentChannel(PaymentChannel {
            payer: payer.public_key().address(),
            payee: ecdsa(2),
            currency: Currency::CAS,
            expiry_ms: 5_000,
        });
        let channel = open.address().unwrap();
        let mut tx =
            spend(channel, vec![Declaration::Voucher(crate::Voucher::sign("t", channel, 5, &other))]);
        tx.fee.payer = ecdsa(2);
        let context = [open];
        let v = verdict(&tx, &Declared::new(&context), &[ecdsa(2)], 0, None);
        assert_eq!(v.unsatisfied, [(channel, TxError::VoucherWrongPayer(channel))]);
        tx.declarations = vec![Declaration::Voucher(crate::Voucher::sign("t", channel, 5, &payer))];
        assert!(verdict(&tx, &Declared::new(&context), &[ecdsa(2)], 0, None).complete());
        // After expiry the payer takes the rest, and the payee's signature is not needed.
        tx.declarations.clear();
        let v =
            verdict(&tx, &Declared::new(&context), &[ecdsa(2), payer.public_key().address()], 5_000, None);
        assert!(v.complete(), "{v:?}");

        // A validator update needs the governance account, when the caller knows it.
        let (governance, rule) = multisig(vec![ecdsa(8), ecdsa(9)], 2);
        let mut tx = spend(ecdsa(1), vec![rule]);
        tx.declarations.push(Declaration::ValidatorUpdate(crate::ValidatorUpdate {
            public_key: payer.public_key(),
            weight: 1,
        }));
        let v = verdict(&tx, &Declared::default(), &[ecdsa(1), ecdsa(8)], 0, Some(&governance));
        assert_eq!(v.unsatisfied, [(governance, TxError::Unsatisfied(governance))]);
        assert!(
            verdict(&tx, &Declared::default(), &[ecdsa(1), ecdsa(8), ecdsa(9)], 0, Some(&governance))
                .complete()
        );
        assert!(verdict(&tx, &Declared::default(), &[ecdsa(1)], 0, None).complete(), "governance not judged");
    }
}
