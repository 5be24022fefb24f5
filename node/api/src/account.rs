//! `GET /v1/accounts/{address}` and its history pages (whose entries are also the stream's
//! `transaction` events).

use engine::{Address, Currency, Hash};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::schema::{AddressText, HashHex};

/// An account at the latest ledger. An address never used answers with no balances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Account {
    /// The address, in lower case.
    #[schema(value_type = AddressText)]
    pub address: Address,
    /// The latest ledger's height: the state answered.
    pub height: u64,
    /// Non-zero balances.
    pub balances: Vec<Balance>,
    /// The ledger that last changed it (absent for an address never used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub last_height: Option<u64>,
    /// Its declaration, as the engine renders it in JSON, if declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, nullable = false)]
    pub declaration: Option<serde_json::Value>,
    /// For a payment channel, the cumulative amount its payee has claimed (absent when 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub channel_claimed: Option<i64>,
}

impl Account {
    /// The balance in `currency` (0 if none).
    pub fn balance(&self, currency: &Currency) -> i64 {
        self.balances.iter().find(|b| b.currency == *currency).map_or(0, |b| b.amount)
    }
}

/// One balance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Balance {
    /// Currency symbol.
    #[schema(value_type = String)]
    pub currency: Currency,
    /// Raw units (10⁻⁸); negative only for the currency's issuer.
    pub amount: i64,
}

/// A page of an account's transactions, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HistoryPage {
    /// The account.
    #[schema(value_type = AddressText)]
    pub address: Address,
    /// Its transactions.
    pub entries: Vec<TxRef>,
    /// Present when the page is full: pass it back as `cursor` for the next (opaque).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_cursor: Option<String>,
}

/// Where a committed transaction sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TxRef {
    /// The transaction id.
    #[schema(value_type = HashHex)]
    pub id: Hash,
    /// Height of its ledger.
    pub height: u64,
    /// Position in its block.
    pub index: u32,
}
