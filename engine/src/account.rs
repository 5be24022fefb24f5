//! Accounts: balances per currency, the declaration that defines a special account, and the
//! amount already claimed from a payment channel.
//!
//! Canonical form (hashed into the state trie's leaf):
//! `address (21) | last_height u64 | n u16 | n × (currency, i64 amount) | declaration flag u8
//! [| declaration] | channel_claimed i64`, balances sorted by currency, zero balances omitted.

use smallvec::SmallVec;

use crate::{
    address::Address,
    codec::{CodecError, Decode, Encode, Reader, check_strictly_ascending},
    currency::Currency,
    declaration::Declaration,
    hash::{self, Domain, Hash},
    limits::ACCOUNT_CURRENCIES_MAX,
};

/// The state of one address.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    /// The address.
    pub address: Address,
    /// Height of the ledger that last changed the account.
    pub last_height: u64,
    /// Non-zero balances, sorted by currency. Only a currency's issuer may hold a negative one.
    /// Inline up to two currencies: most accounts hold one or two, and an allocation per
    /// account copy (the block journal copies every touched account) shows in profiles.
    #[serde(serialize_with = "serialize_balances")]
    balances: SmallVec<[(Currency, i64); 2]>,
    /// The declaration of a MultiSig, HashLock, PaymentChannel (or TimeLock) account, once
    /// published. Boxed: few accounts have one, and inline it tripled the size of every account
    /// (248 bytes instead of 88), which every state clone, journal entry and lookup paid for.
    pub declaration: Option<Box<Declaration>>,
    /// For a payment channel: the cumulative amount the payee has claimed.
    pub channel_claimed: i64,
}

// Every state clone, journal entry and account lookup moves this many bytes.
const _: () = assert!(size_of::<Account>() <= 96);

impl Account {
    /// An empty account.
    pub fn new(address: Address) -> Self {
        Self { address, last_height: 0, balances: SmallVec::new(), declaration: None, channel_claimed: 0 }
    }

    /// The balance in `currency` (0 if none).
    pub fn balance(&self, currency: &Currency) -> i64 {
        match self.balances.binary_search_by(|(c, _)| c.cmp(currency)) {
            Ok(i) => self.balances[i].1,
            Err(_) => 0,
        }
    }

    /// Every non-zero balance, sorted by currency.
    pub fn balances(&self) -> &[(Currency, i64)] {
        &self.balances
    }

    /// Sets the balance in `currency`, dropping the entry when it reaches zero (canonical form).
    pub fn set_balance(&mut self, currency: Currency, amount: i64) {
        match self.balances.binary_search_by(|(c, _)| c.cmp(&currency)) {
            Ok(i) if amount == 0 => {
                self.balances.remove(i);
            }
            Ok(i) => self.balances[i].1 = amount,
            Err(_) if amount == 0 => {}
            Err(i) => self.balances.insert(i, (currency, amount)),
        }
    }

    /// The state-trie leaf hash of this account.
    pub fn leaf_hash(&self) -> Hash {
        // One buffer per thread, reused: leaf hashing runs for every touched account of every
        // ledger, on the rayon pool.
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with(|buf| {
            let mut buf = buf.borrow_mut();
            buf.clear();
            self.encode(&mut buf);
            hash::keyed(Domain::StateLeaf, &buf)
        })
    }
}

fn serialize_balances<S: serde::Serializer>(b: &[(Currency, i64)], s: S) -> Result<S::Ok, S::Error> {
    serde::Serialize::serialize(b, s)
}

impl Encode for Account {
    fn encode(&self, out: &mut Vec<u8>) {
        self.address.encode(out);
        out.extend_from_slice(&self.last_height.to_le_bytes());
        out.extend_from_slice(&(self.balances.len() as u16).to_le_bytes());
        for (c, a) in &self.balances {
            c.encode(out);
            out.extend_from_slice(&a.to_le_bytes());
        }
        match &self.declaration {
            None => out.push(0),
            Some(d) => {
                out.push(1);
                d.encode(out);
            }
        }
        out.extend_from_slice(&self.channel_claimed.to_le_bytes());
    }
}

impl Decode for Account {
    fn decode(r: &mut Reader<'_>) -> Result<Self, CodecError> {
        let address = Address::decode(r)?;
        let last_height = r.u64("last height")?;
        let n = usize::from(r.u16("balance count")?);
        if n > ACCOUNT_CURRENCIES_MAX {
            return Err(CodecError::OverLimit { what: "balances", got: n, max: ACCOUNT_CURRENCIES_MAX });
        }
        if n > r.remaining() {
            return Err(CodecError::UnexpectedEnd("balances"));
        }
        let mut balances = SmallVec::with_capacity(n);
        for _ in 0..n {
            let c = Currency::decode(r)?;
            let a = r.i64("balance")?;
            if a == 0 {
                return Err(CodecError::Invalid { what: "balance", why: "zero balances are omitted" });
            }
            balances.push((c, a));
        }
        check_strictly_ascending(&balances, "balances", |(c, _)| *c)?;
        let declaration = if r.bool("declaration flag")? {
            let d = Declaration::decode(r)?;
            if d.address() != Some(address) {
                return Err(CodecError::Invalid {
                    what: "account",
                    why: "the declaration does not define this address",
                });
            }
            Some(Box::new(d))
        } else {
            None
        };
        let channel_claimed = r.i64("channel claimed")?;
        if channel_claimed < 0
            || (channel_claimed != 0 && address.kind() != crate::AddressType::PaymentChannel)
        {
            return Err(CodecError::Invalid {
                what: "account",
                why: "only a payment channel has a claimed amount",
            });
        }
        Ok(Self { address, last_height, balances, declaration, channel_claimed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AddressType, codec::decode_exact};

    #[test]
    fn balances_stay_canonical() {
        let mut a = Account::new(Address::new(AddressType::Ecdsa, [1; 20]));
        let btc = Currency::new("BTC").unwrap();
        a.set_balance(btc, 5);
        a.set_balance(Currency::CAS, -3);
        a.set_balance(Currency::new("ZZZ").unwrap(), 0);
        assert_eq!(a.balances(), &[(btc, 5), (Currency::CAS, -3)]);
        let h = a.leaf_hash();
        assert_eq!(decode_exact::<Account>(&a.to_bytes()).unwrap(), a);
        a.set_balance(btc, 0);
        assert_eq!(a.balances(), &[(Currency::CAS, -3)]);
        assert_ne!(a.leaf_hash(), h);
    }
}
