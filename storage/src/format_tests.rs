//! The bytes on disk of schema version 4, pinned: a store written by this build must hold, byte
//! for byte, what the hand-written encoders of that version wrote (the digest below was taken
//! from them), so a data directory written before opens and reads the same after. A change of
//! any key, value, table name or table flag fails here; a deliberate one bumps
//! [`crate::layout::SCHEMA_VERSION`] and this digest together.

use std::{borrow::Cow, fmt::Write as _, path::Path};

use engine::{SecretKey, state::State};

use crate::{
    EvidenceKey, IndexBatch, LedgerToCommit, Store, StoreOptions, store::open_env, test_utils::TestChain,
};

/// SHA-256 of [`dump`] of the store [`write_store`] makes. Changed once without a version bump,
/// when the (empty here) `set_changes` table was added: an addition older stores gain at open,
/// every existing table's rows as before (the counts above).
const DUMP_SHA256: &str = "8b71d6f04df61d2e8c3344a54b4840bafcff59c3fb4a0284906fc5ef29ee5420";

/// Rows per table in that store, for a readable failure before the digest's.
const ROWS: [(&str, usize); 11] = [
    ("accounts", 9),
    ("blocks", 26),
    ("evidence", 2),
    ("evidence_counts", 1),
    ("headers", 26),
    ("history", 195),
    ("history_heads", 7),
    ("meta", 6),
    ("replay", 56),
    ("set_changes", 0),
    ("tx_index", 70),
];

fn commit(store: &mut Store, chain: &TestChain, state: &mut State, txs: usize) {
    let (applied, transactions) = chain.apply_next(state, txs, 2);
    let certificate = chain.certify(&applied);
    let ledger =
        LedgerToCommit { applied: &applied, transactions: &transactions, certificate: &certificate, state };
    store.commit(ledger).unwrap();
}

/// A store that exercises every table: index batches of two ledgers (so history rows link across
/// batches and the replay window is pruned), a last ledger written by `flush`, two proofs.
fn write_store(dir: &Path) {
    let chain = TestChain::new(3, 4);
    let options =
        StoreOptions { index_batch: IndexBatch { txs: 1_000, ledgers: 2 }, ..StoreOptions::default() };
    let (mut store, mut state) = Store::create_with(dir, &chain.genesis_toml, options).unwrap();
    // 25 ledgers, a second apart: the replay window (20 s) drops the first ledgers' ids.
    for txs in [3, 0, 5, 2, 4].repeat(5) {
        commit(&mut store, &chain, &mut state, txs);
    }
    store.flush().unwrap();
    let offender = SecretKey::from_bytes(&[7; 32]).unwrap().public_key();
    for (height, proof) in [(3, &b"first proof"[..]), (4, b"second")] {
        let key = EvidenceKey { height, round: 1, validator: 0, kind: 2 };
        assert!(store.add_evidence(key, &offender, proof).unwrap());
    }
}

/// Every named table of the store in `dir`, in name order: its name, flags and every row, in hex.
fn dump(dir: &Path) -> (String, Vec<(String, usize)>) {
    let env = open_env(dir, None).unwrap();
    let txn = env.begin_ro_txn().unwrap();
    let main = txn.open_table(None).unwrap();
    let names: Vec<String> = txn
        .cursor(&main)
        .unwrap()
        .iter_start::<Cow<'_, [u8]>, ()>()
        .map(|row| String::from_utf8(row.unwrap().0.into_owned()).unwrap())
        .collect();
    let mut out = String::new();
    let mut rows = Vec::new();
    for name in names {
        let table = txn.open_table(Some(&name)).unwrap();
        let flags = txn.table_flags(&table).unwrap();
        writeln!(out, "table {name} flags {:#x}", flags.bits()).unwrap();
        let mut count = 0;
        for row in txn.cursor(&table).unwrap().iter_start::<Cow<'_, [u8]>, Cow<'_, [u8]>>() {
            let (key, value) = row.unwrap();
            writeln!(out, "{} {}", hex::encode(&key), hex::encode(&value)).unwrap();
            count += 1;
        }
        rows.push((name, count));
    }
    (out, rows)
}

#[test]
fn the_bytes_on_disk_are_those_of_schema_version_4() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path());
    let (dump, rows) = dump(dir.path());
    let expected: Vec<(String, usize)> = ROWS.iter().map(|(n, c)| ((*n).to_owned(), *c)).collect();
    assert_eq!(rows, expected, "rows per table");
    assert_eq!(hex::encode(engine::hash::sha256(dump.as_bytes())), DUMP_SHA256, "the dump:\n{dump}");
    // And this build reads it back.
    let (store, state) = Store::open(dir.path()).unwrap();
    assert_eq!(store.head().unwrap(), *state.head());
    drop(store);
    assert_eq!(crate::verify(dir.path()).unwrap().heights_checked, 26);
}
