//! The rows of the SQL tables, built from committed ledgers: pure functions, no I/O.
//!
//! Field names are the column names (the client writes `INSERT INTO t(fields…)`), field types
//! the column types of [`super::schema`]: `u64` UInt64, `u32` UInt32 (and DateTime, seconds),
//! `u16` UInt16, `i64` Int64, strings String.

use std::collections::BTreeMap;

use engine::{
    Address, Currency, Declaration,
    genesis::Genesis,
    ledger::{Certificate, LedgerHeader},
    tx::SignedTransaction,
};

use super::{AnalyticsError, Table};

/// What the rows need to know of the chain besides its ledgers.
#[derive(Debug)]
pub(crate) struct ChainInfo {
    /// Mixed into ledger hashes and transaction ids.
    pub(crate) chain_id: String,
    /// Credited with every fee.
    pub(crate) fee_account: Address,
    /// Every genesis balance, issuers' negative ones included: the height-0 balance changes.
    pub(crate) genesis_balances: Vec<(Address, Currency, i64)>,
    /// Declarations published at genesis.
    pub(crate) genesis_declarations: Vec<Declaration>,
}

impl ChainInfo {
    pub(crate) fn new(genesis: &Genesis) -> Self {
        Self {
            chain_id: genesis.params.chain_id.clone(),
            fee_account: genesis.params.fee_account,
            genesis_balances: genesis_balances(genesis),
            genesis_declarations: genesis.declarations.clone(),
        }
    }
}

/// Every genesis balance as the state holds it (listed, generated and the issuers' derived
/// ones), sorted by account and currency.
fn genesis_balances(genesis: &Genesis) -> Vec<(Address, Currency, i64)> {
    if genesis.config.generated.is_empty() {
        return genesis.balances.iter().map(|(&(a, c), &amount)| (a, c, amount)).collect();
    }
    let mut all = genesis.balances.clone();
    genesis.for_each_generated(|addresses, currency, amount| {
        for &a in addresses {
            let x = all.entry((a, currency)).or_insert(0);
            *x = x.saturating_add(amount);
        }
    });
    all.into_iter().map(|((a, c), amount)| (a, c, amount)).collect()
}

/// A `ledgers` row.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, serde::Serialize)]
pub(crate) struct LedgerRow {
    pub(crate) height: u64,
    pub(crate) hash: String,
    pub(crate) timestamp_ms: i64,
    pub(crate) time: u32,
    pub(crate) previous_hash: String,
    pub(crate) tx_root: String,
    pub(crate) state_root: String,
    pub(crate) validator_set_hash: String,
    pub(crate) tx_count: u32,
    pub(crate) certificate_round: u32,
    pub(crate) certificate_signers: u16,
}

/// A `transactions` row.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, serde::Serialize)]
pub(crate) struct TransactionRow {
    pub(crate) height: u64,
    pub(crate) tx_index: u32,
    pub(crate) id: String,
    pub(crate) expiration_ms: i64,
    pub(crate) fee_payer: String,
    pub(crate) fee_amount: i64,
    pub(crate) message_hex: String,
    pub(crate) input_count: u16,
    pub(crate) output_count: u16,
    pub(crate) declaration_count: u16,
    pub(crate) signature_count: u16,
    pub(crate) time: u32,
}

/// A `legs` row.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, serde::Serialize)]
pub(crate) struct LegRow {
    pub(crate) height: u64,
    pub(crate) tx_index: u32,
    pub(crate) leg_index: u16,
    pub(crate) tx_id: String,
    pub(crate) kind: &'static str,
    pub(crate) address: String,
    pub(crate) currency: String,
    pub(crate) amount: i64,
    pub(crate) time: u32,
}

/// A `declarations` row.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, serde::Serialize)]
pub(crate) struct DeclarationRow {
    pub(crate) height: u64,
    pub(crate) tx_index: u32,
    pub(crate) decl_index: u16,
    pub(crate) tx_id: String,
    pub(crate) kind: &'static str,
    pub(crate) address: String,
    pub(crate) json: String,
    pub(crate) time: u32,
}

/// A `balance_changes` row.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, serde::Serialize)]
pub(crate) struct BalanceChangeRow {
    pub(crate) height: u64,
    pub(crate) address: String,
    pub(crate) currency: String,
    pub(crate) delta: i64,
    pub(crate) time: u32,
}

/// A `replication_progress` row: `table_name` holds every ledger up to `height`.
#[derive(Clone, Debug, PartialEq, Eq, clickhouse::Row, serde::Serialize)]
pub(crate) struct ProgressRow {
    pub(crate) table_name: &'static str,
    pub(crate) height: u64,
}

/// Leg kinds. Debits are negative, credits positive: per transaction and currency the legs sum
/// to zero.
pub(crate) mod kind {
    /// An input: `−amount` from the input's address.
    pub(crate) const INPUT: &str = "input";
    /// An output: `+amount` to the output's address.
    pub(crate) const OUTPUT: &str = "output";
    /// The fee: `−fee` from the payer, in CAS.
    pub(crate) const FEE: &str = "fee";
    /// The fee's credit: `+fee` to the chain's fee account, in CAS.
    pub(crate) const FEE_CREDIT: &str = "fee_credit";
}

/// The rows of a run of consecutive ledgers, for the tables asked for.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    pub(crate) ledgers: Vec<LedgerRow>,
    pub(crate) transactions: Vec<TransactionRow>,
    pub(crate) legs: Vec<LegRow>,
    pub(crate) declarations: Vec<DeclarationRow>,
    pub(crate) balance_changes: Vec<BalanceChangeRow>,
}

impl Rows {
    /// The rows of one table.
    pub(crate) fn len(&self, table: Table) -> usize {
        match table {
            Table::Ledgers => self.ledgers.len(),
            Table::Transactions => self.transactions.len(),
            Table::Legs => self.legs.len(),
            Table::Declarations => self.declarations.len(),
            Table::BalanceChanges => self.balance_changes.len(),
        }
    }

    /// Height of the last row of `table`, if it has rows (rows are appended in height order).
    pub(crate) fn last_height(&self, table: Table) -> Option<u64> {
        match table {
            Table::Ledgers => self.ledgers.last().map(|r| r.height),
            Table::Transactions => self.transactions.last().map(|r| r.height),
            Table::Legs => self.legs.last().map(|r| r.height),
            Table::Declarations => self.declarations.last().map(|r| r.height),
            Table::BalanceChanges => self.balance_changes.last().map(|r| r.height),
        }
    }
}

/// Seconds of a unix-ms timestamp as a ClickHouse DateTime (UInt32), clamped to its range.
pub(crate) fn datetime(timestamp_ms: i64) -> u32 {
    timestamp_ms.div_euclid(1000).clamp(0, i64::from(u32::MAX)) as u32
}

/// The `kind` column of a declaration (the tag of its JSON rendering).
pub(crate) const fn declaration_kind(d: &Declaration) -> &'static str {
    match d {
        Declaration::MultiSig(_) => "multisig",
        Declaration::HashLock { .. } => "hashlock",
        Declaration::Secret { .. } => "secret",
        Declaration::TimeLock { .. } => "timelock",
        Declaration::PaymentChannel(_) => "payment_channel",
        Declaration::Voucher(_) => "voucher",
        Declaration::ValidatorUpdate(_) => "validator_update",
    }
}

/// The `address` column of a declaration: the account it defines, or for a voucher the channel
/// it draws on; empty for a secret or a validator update.
pub(crate) fn declaration_address(d: &Declaration) -> String {
    match d {
        Declaration::Voucher(v) => v.channel.to_text(),
        _ => d.address().map(|a| a.to_text()).unwrap_or_default(),
    }
}

fn declaration_row(
    height: u64,
    tx_index: u32,
    decl_index: usize,
    tx_id: &str,
    d: &Declaration,
    time: u32,
) -> DeclarationRow {
    DeclarationRow {
        height,
        tx_index,
        decl_index: decl_index as u16,
        tx_id: tx_id.to_owned(),
        kind: declaration_kind(d),
        address: declaration_address(d),
        // Serializing engine types to JSON cannot fail (no maps with non-string keys).
        json: serde_json::to_string(d).unwrap_or_default(),
        time,
    }
}

/// Which of the per-transaction tables a batch fills.
#[derive(Clone, Copy)]
struct Wanted {
    txs: bool,
    legs: bool,
    decls: bool,
    balances: bool,
}

/// Net change per (address, currency) over a ledger; i128 so no sum of i64 overflows.
type Deltas = BTreeMap<(Address, Currency), i128>;

/// Appends the rows of ledger `header` (with `certificate` and `transactions`) to `out`, for
/// the tables in `tables` only. Height 0 also yields the genesis balances and declarations.
pub(crate) fn add_ledger(
    chain: &ChainInfo,
    tables: &[Table],
    header: &LedgerHeader,
    certificate: &Certificate,
    transactions: &[SignedTransaction],
    out: &mut Rows,
) -> Result<(), AnalyticsError> {
    let time = datetime(header.timestamp_ms);
    let want = |t: Table| tables.contains(&t);
    if want(Table::Ledgers) {
        out.ledgers.push(ledger_row(chain, header, certificate, transactions.len(), time));
    }
    let wanted = Wanted {
        txs: want(Table::Transactions),
        legs: want(Table::Legs),
        decls: want(Table::Declarations),
        balances: want(Table::BalanceChanges),
    };
    let at = At { chain, wanted, height: header.height, time };
    let mut deltas = Deltas::new();
    if header.height == 0 {
        at.add_genesis(&mut deltas, out);
    }
    if wanted.txs || wanted.legs || wanted.decls || wanted.balances {
        for (i, stx) in transactions.iter().enumerate() {
            at.add_transaction(i as u32, stx, &mut deltas, out);
        }
    }
    add_balance_changes(header.height, deltas, time, out)
}

/// The ledger whose rows are being built: its chain, height and time, and the tables wanted.
struct At<'a> {
    chain: &'a ChainInfo,
    wanted: Wanted,
    height: u64,
    time: u32,
}

fn ledger_row(
    chain: &ChainInfo,
    header: &LedgerHeader,
    certificate: &Certificate,
    tx_count: usize,
    time: u32,
) -> LedgerRow {
    LedgerRow {
        height: header.height,
        hash: header.hash(&chain.chain_id).to_hex(),
        timestamp_ms: header.timestamp_ms,
        time,
        previous_hash: header.previous.to_hex(),
        tx_root: header.tx_root.to_hex(),
        state_root: header.state_root.to_hex(),
        validator_set_hash: header.validator_set_hash.to_hex(),
        tx_count: tx_count as u32,
        certificate_round: certificate.round,
        certificate_signers: certificate.signatures.len() as u16,
    }
}

impl At<'_> {
    /// The genesis balances (as changes at height 0) and declarations.
    fn add_genesis(&self, deltas: &mut Deltas, out: &mut Rows) {
        let (chain, wanted, time) = (self.chain, self.wanted, self.time);
        if wanted.balances {
            for &(address, currency, amount) in &chain.genesis_balances {
                *deltas.entry((address, currency)).or_insert(0) += i128::from(amount);
            }
        }
        if wanted.decls {
            for (i, d) in chain.genesis_declarations.iter().enumerate() {
                out.declarations.push(declaration_row(0, 0, i, "", d, time));
            }
        }
    }

    /// The rows of one transaction: itself, its legs (inputs, outputs, the fee and its credit),
    /// its declarations; its legs' amounts added to `deltas`.
    fn add_transaction(&self, tx_index: u32, stx: &SignedTransaction, deltas: &mut Deltas, out: &mut Rows) {
        let (chain, wanted, height, time) = (self.chain, self.wanted, self.height, self.time);
        let tx = &stx.tx;
        let id = if wanted.txs || wanted.legs || wanted.decls {
            tx.id(&chain.chain_id).to_hex()
        } else {
            String::new()
        };
        if wanted.txs {
            out.transactions.push(TransactionRow {
                height,
                tx_index,
                id: id.clone(),
                expiration_ms: tx.expiration_ms,
                fee_payer: tx.fee.payer.to_text(),
                fee_amount: tx.fee.amount,
                message_hex: hex::encode(&tx.message),
                input_count: tx.inputs.len() as u16,
                output_count: tx.outputs.len() as u16,
                declaration_count: tx.declarations.len() as u16,
                signature_count: stx.signatures.len() as u16,
                time,
            });
        }
        let legs = tx
            .inputs
            .iter()
            .map(|l| (kind::INPUT, l.address, l.currency, -l.amount))
            .chain(tx.outputs.iter().map(|l| (kind::OUTPUT, l.address, l.currency, l.amount)))
            .chain([
                (kind::FEE, tx.fee.payer, Currency::CAS, -tx.fee.amount),
                (kind::FEE_CREDIT, chain.fee_account, Currency::CAS, tx.fee.amount),
            ]);
        for (leg_index, (kind, address, currency, amount)) in legs.enumerate() {
            if wanted.legs {
                out.legs.push(LegRow {
                    height,
                    tx_index,
                    leg_index: leg_index as u16,
                    tx_id: id.clone(),
                    kind,
                    address: address.to_text(),
                    currency: currency.as_str().to_owned(),
                    amount,
                    time,
                });
            }
            if wanted.balances {
                *deltas.entry((address, currency)).or_insert(0) += i128::from(amount);
            }
        }
        if wanted.decls {
            for (d_index, d) in tx.declarations.iter().enumerate() {
                out.declarations.push(declaration_row(height, tx_index, d_index, &id, d, time));
            }
        }
    }
}

/// One row per (address, currency) whose net change over the ledger is not zero.
fn add_balance_changes(height: u64, deltas: Deltas, time: u32, out: &mut Rows) -> Result<(), AnalyticsError> {
    for ((address, currency), delta) in deltas {
        if delta == 0 {
            continue;
        }
        let delta = i64::try_from(delta).map_err(|_| AnalyticsError::InvalidLedger {
            height,
            why: format!("the net change of {address} in {currency} overflows i64"),
        })?;
        out.balance_changes.push(BalanceChangeRow {
            height,
            address: address.to_text(),
            currency: currency.as_str().to_owned(),
            delta,
            time,
        });
    }
    Ok(())
}

/// An upper bound of the rows one ledger adds to any table but `ledgers`: the batch limit is
/// checked against it before the rows are built.
pub(crate) fn rows_estimate(transactions: &[SignedTransaction]) -> usize {
    1 + transactions
        .iter()
        .map(|t| (t.tx.inputs.len() + t.tx.outputs.len() + 2).max(t.tx.declarations.len()))
        .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use engine::genesis::Genesis;

    use super::*;
    use crate::test_utils::{TestChain, fee_account};

    #[test]
    fn legs_balance_and_balance_changes_are_their_net_per_ledger() {
        let chain = TestChain::new(3, 6);
        let genesis = Genesis::from_toml(&chain.genesis_toml).unwrap();
        let info = ChainInfo::new(&genesis);
        let mut state = engine::state::State::from_genesis(&genesis);
        let mut rows = Rows::default();
        let zero = *state.head();
        add_ledger(&info, &Table::ALL, &zero, &Certificate::default(), &[], &mut rows).unwrap();
        assert_eq!(rows.ledgers.len(), 1);
        assert_eq!(rows.balance_changes.len(), genesis.balances.len(), "genesis balances at height 0");
        assert!(rows.transactions.is_empty() && rows.legs.is_empty());
        for _ in 0..3 {
            let (applied, txs) = chain.apply_next(&mut state, 5, 3);
            let certificate = chain.certify(&applied);
            add_ledger(&info, &Table::ALL, &applied.header, &certificate, &txs, &mut rows).unwrap();
        }
        assert_eq!(rows.ledgers.iter().map(|r| r.height).collect::<Vec<_>>(), [0, 1, 2, 3]);
        // The hashes are the chain's: each ledger names the previous one's as its parent.
        for w in rows.ledgers.windows(2) {
            assert_eq!(w[1].previous_hash, w[0].hash);
        }
        assert_eq!(rows.transactions.len(), 15);
        // Per transaction and currency, the signed legs sum to zero; the fee is a debit of the
        // payer and a credit of the fee account.
        let mut sums: BTreeMap<(u64, u32, String), i64> = BTreeMap::new();
        for leg in &rows.legs {
            *sums.entry((leg.height, leg.tx_index, leg.currency.clone())).or_default() += leg.amount;
            match leg.kind {
                kind::INPUT | kind::FEE => assert!(leg.amount < 0),
                kind::OUTPUT | kind::FEE_CREDIT => assert!(leg.amount > 0),
                other => panic!("leg kind {other}"),
            }
            if leg.kind == kind::FEE_CREDIT {
                assert_eq!(leg.address, fee_account().to_text());
            }
        }
        assert!(sums.values().all(|&s| s == 0));
        // Balance changes: one row per changed (ledger, address, currency), the net of the legs;
        // with the genesis rows, each account's sum is its balance.
        let mut balances: BTreeMap<(String, String), i64> = BTreeMap::new();
        for row in &rows.balance_changes {
            assert_ne!(row.delta, 0);
            *balances.entry((row.address.clone(), row.currency.clone())).or_default() += row.delta;
        }
        let expected: BTreeMap<(String, String), i64> = state
            .accounts()
            .flat_map(|a| a.balances().iter().map(|(c, b)| ((a.address.to_text(), c.to_string()), *b)))
            .collect();
        balances.retain(|_, b| *b != 0);
        assert_eq!(balances, expected);

        // Only the tables asked for get rows.
        let mut some = Rows::default();
        let (applied, txs) = chain.apply_next(&mut state, 2, 1);
        add_ledger(&info, &[Table::Legs], &applied.header, &Certificate::default(), &txs, &mut some).unwrap();
        assert_eq!(some.len(Table::Legs), 2 * 4);
        assert_eq!(some.last_height(Table::Legs), Some(4));
        for t in [Table::Ledgers, Table::Transactions, Table::Declarations, Table::BalanceChanges] {
            assert_eq!(some.len(t), 0, "{t}");
        }
    }

    #[test]
    fn declarations_render_kind_address_and_json() {
        let a = crate::test_utils::filler(1);
        let b = crate::test_utils::filler(2);
        let ms = Declaration::MultiSig(engine::MultiSig::new(vec![a, b], 1).unwrap());
        assert_eq!(declaration_kind(&ms), "multisig");
        assert_eq!(declaration_address(&ms), ms.address().unwrap().to_text());
        let json: serde_json::Value =
            serde_json::from_str(&declaration_row(1, 2, 3, "id", &ms, 9).json).unwrap();
        assert_eq!(json["type"], "multisig");
        let secret = Declaration::Secret { preimage: [7; 32] };
        assert_eq!((declaration_kind(&secret), declaration_address(&secret)), ("secret", String::new()));
        assert_eq!(datetime(1_767_225_600_999), 1_767_225_600);
        assert_eq!(datetime(-5), 0);
    }
}
