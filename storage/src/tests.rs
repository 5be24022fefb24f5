//! Store tests: round trips, readers, refusals, corruption and verification.

use std::path::Path;

use engine::{
    Backend, Encode,
    account::Account,
    ledger::Certificate,
    state::{Applied, Block, State, apply_block},
    tx::SignedTransaction,
};
use libmdbx::WriteFlags;

use crate::{
    Durability, HISTORY_PAGE_MAX, IndexBatch, LedgerToCommit, Store, StoreError, StoreOptions, TxLocation,
    layout::{self, ACCOUNTS, BLOCKS, HEADERS, META, SCHEMA_VERSION, TX_INDEX, height_key, meta},
    store::open_env,
    test_utils::{TestChain, fee_account},
    verify,
};

fn commit(
    store: &mut Store,
    chain: &TestChain,
    state: &mut State,
    txs: usize,
) -> (Applied, Vec<SignedTransaction>) {
    chain.commit_next(store, state, txs, 2)
}

/// A store whose index rows are written with every ledger, for tests that read or poke the
/// tables themselves.
fn create_every_ledger(dir: &Path, genesis_toml: &str) -> (Store, State) {
    let options = StoreOptions { index_batch: IndexBatch::EVERY_LEDGER, ..StoreOptions::default() };
    Store::create_with(dir, genesis_toml, options).unwrap()
}

/// The whole history of `address`, newest first, read in pages of `size`.
fn pages(store: &Store, address: &engine::Address, size: usize) -> Vec<(TxLocation, engine::Hash)> {
    let mut got = Vec::new();
    let mut before = None;
    loop {
        let page = store.history(address, before, size).unwrap();
        assert!(page.len() <= size);
        let Some(last) = page.last() else { break };
        before = Some(last.location);
        got.extend(page.iter().map(|e| (e.location, e.id)));
    }
    got
}

/// Overwrites one value of a closed store through a raw MDBX write transaction.
fn poke(dir: &Path, table: &str, key: &[u8], value: &[u8]) {
    let env = open_env(dir, Some(Durability::Durable)).unwrap();
    let txn = env.begin_rw_txn().unwrap();
    let t = txn.open_table(Some(table)).unwrap();
    txn.put(&t, key, value, WriteFlags::UPSERT).unwrap();
    txn.commit().unwrap();
}

fn accounts_sorted(state: &State) -> Vec<Account> {
    let mut v: Vec<Account> = state.accounts().cloned().collect();
    v.sort_by_key(|a| a.address);
    v
}

#[test]
fn create_then_open_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let chain = TestChain::new(4, 10);
    let (store, state) = Store::create(dir.path(), &chain.genesis_toml).unwrap();
    assert_eq!(store.chain_id(), crate::test_utils::CHAIN_ID);
    assert_eq!(store.head().unwrap(), *state.head());
    assert_eq!(store.header(0).unwrap(), Some((*state.head(), Certificate::default())));
    assert_eq!(store.block(0).unwrap(), Some(vec![]));
    drop(store);

    let (store, reopened) = Store::open(dir.path()).unwrap();
    assert_eq!(reopened.head(), state.head());
    assert_eq!(reopened.state_root(), state.state_root());
    assert_eq!(reopened.validators(), state.validators());
    assert_eq!(accounts_sorted(&reopened), accounts_sorted(&state));
    drop(store);

    assert!(matches!(Store::create(dir.path(), &chain.genesis_toml), Err(StoreError::AlreadyExists(_))));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(Store::open(empty.path()), Err(StoreError::NotAStore(_))));
    assert!(!empty.path().join("mdbx.dat").exists(), "open creates nothing");
    assert!(matches!(verify(empty.path()), Err(StoreError::NotAStore(_))));
    assert!(matches!(Store::create(empty.path(), "chain_id = 1"), Err(StoreError::Genesis(_))));
}

#[test]
fn commit_then_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let chain = TestChain::new(3, 20);
    let (mut store, mut state) = Store::create(dir.path(), &chain.genesis_toml).unwrap();
    let mut ledgers = Vec::new();
    for _ in 0..3 {
        ledgers.push(commit(&mut store, &chain, &mut state, 12));
    }
    assert_eq!(store.head().unwrap(), *state.head());
    for (applied, transactions) in &ledgers {
        let h = applied.header.height;
        assert_eq!(store.header(h).unwrap(), Some((applied.header, chain.certify(applied))));
        assert_eq!(store.block(h).unwrap().as_ref(), Some(transactions));
        for (i, id) in applied.tx_ids.iter().enumerate() {
            assert_eq!(store.tx_location(id).unwrap(), Some(TxLocation { height: h, index: i as u32 }));
        }
        for a in &applied.touched {
            assert_eq!(store.account(a).unwrap().as_ref(), state.account(a));
        }
    }
    assert_eq!(store.header(4).unwrap(), None);
    assert_eq!(store.block(4).unwrap(), None);
    assert_eq!(store.tx_location(&engine::Hash([7; 32])).unwrap(), None);

    // A sender's history: every transaction it sent, newest first, paged.
    let sender = chain.sender(0);
    let mut expected = Vec::new();
    for (applied, transactions) in &ledgers {
        for (i, tx) in transactions.iter().enumerate() {
            if tx.tx.fee.payer == sender {
                expected
                    .push((TxLocation { height: applied.header.height, index: i as u32 }, applied.tx_ids[i]));
            }
        }
    }
    assert!(expected.len() > 4);
    expected.reverse();
    assert_eq!(pages(&store, &sender, 3), expected);
    let before_2 = store.history(&sender, Some(TxLocation::at_height(2)), HISTORY_PAGE_MAX + 5).unwrap();
    assert_eq!(before_2.len(), expected.iter().filter(|(at, _)| at.height < 2).count());
    assert!(before_2.iter().all(|e| e.location.height < 2));
    // The fee account is credited by every transaction but has no history of them.
    assert!(store.history(&fee_account(), None, 10).unwrap().is_empty());
    drop(store);

    let (_store, reopened) = Store::open(dir.path()).unwrap();
    assert_eq!(reopened.head(), state.head());
    assert_eq!(accounts_sorted(&reopened), accounts_sorted(&state));
    let mut window: Vec<_> = reopened.replay_entries().collect();
    let mut expected_window: Vec<_> = state.replay_entries().collect();
    window.sort_unstable();
    expected_window.sort_unstable();
    assert_eq!(window, expected_window);
    assert_eq!(window.len(), 36);
}

#[test]
fn the_space_a_store_takes_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let chain = TestChain::new(3, 20);
    let (mut store, mut state) = create_every_ledger(dir.path(), &chain.genesis_toml);
    let before = store.reader().space().unwrap();
    assert!(before.used_bytes > 0 && before.used_bytes <= before.file_bytes, "{before:?}");
    let mut block_bytes = 0;
    for _ in 0..20 {
        let (_, transactions) = commit(&mut store, &chain, &mut state, 50);
        block_bytes += transactions.iter().map(|t| t.to_bytes().len() as u64).sum::<u64>();
    }
    let after = store.reader().space().unwrap();
    assert!(after.used_bytes <= after.file_bytes, "{after:?}");
    // At least the blocks' canonical bytes were added (and the indexes besides).
    assert!(after.used_bytes >= before.used_bytes + block_bytes, "{before:?} {after:?} {block_bytes}");
    // The file is what is on disk.
    let file = std::fs::metadata(dir.path().join("mdbx.dat")).unwrap().len();
    assert_eq!(after.file_bytes, file);

    // Table by table (read-only; MDBX opens an environment once per process: the store is
    // closed first, a node beside `caasiope db stats` is another process): a block a ledger,
    // a row an id.
    store.flush().unwrap();
    drop(store);
    let stats = crate::stats(dir.path()).unwrap();
    assert_eq!(stats.head_height, 20);
    let table = |name| stats.tables.iter().find(|t| t.name == name).unwrap();
    assert_eq!(table("blocks").entries, 21, "genesis and 20 ledgers");
    assert_eq!(table("tx_index").entries, 20 * 50);
    assert!(table("blocks").bytes >= block_bytes);
    assert_eq!(table("replay").entries, 20 * 50);
    let in_tables: u64 = stats.tables.iter().map(|t| t.bytes).sum();
    assert!(in_tables <= stats.used_bytes && stats.used_bytes <= stats.file_bytes, "{stats:?}");
    assert!(crate::stats(dir.path().join("nothing")).is_err());
}

#[test]
fn a_store_without_query_indexes_keeps_the_state_and_drops_them_at_open() {
    let entries = |dir: &Path, name: &str| {
        crate::stats(dir).unwrap().tables.iter().find(|t| t.name == name).unwrap().entries
    };
    let without = StoreOptions {
        index_batch: IndexBatch::EVERY_LEDGER,
        without_query_indexes: true,
        ..StoreOptions::default()
    };
    let chain = TestChain::new(3, 20);

    // Made with them, then opened without: they are dropped, the state and window stay.
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut state) = create_every_ledger(dir.path(), &chain.genesis_toml);
    for _ in 0..5 {
        commit(&mut store, &chain, &mut state, 12);
    }
    drop(store);
    assert_eq!(entries(dir.path(), "tx_index"), 60);
    let (mut store, reopened) = Store::open_with(dir.path(), without).unwrap();
    assert_eq!(reopened.head(), state.head());
    for _ in 0..5 {
        commit(&mut store, &chain, &mut state, 12);
    }
    assert_eq!(store.account(&chain.sender(0)).unwrap().as_ref(), state.account(&chain.sender(0)));
    drop(store);
    let report = verify(dir.path()).unwrap();
    assert!(!report.query_indexes);
    assert_eq!(report.tx_count, 120);
    for name in ["tx_index", "history", "history_heads"] {
        assert_eq!(entries(dir.path(), name), 0, "{name}");
    }
    assert_eq!(entries(dir.path(), "replay"), 120);
    // An explorer's open is refused, with the reason.
    let refused = Store::open(dir.path()).unwrap_err();
    assert!(matches!(refused, StoreError::NoQueryIndexes(_)), "{refused}");

    // Made without them, with index batches: a restart re-executes the ungathered ledgers.
    let dir = tempfile::tempdir().unwrap();
    let batches = StoreOptions { index_batch: IndexBatch::default(), ..without };
    let (mut store, mut state) = Store::create_with(dir.path(), &chain.genesis_toml, batches).unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.extend(commit(&mut store, &chain, &mut state, 12).0.tx_ids);
    }
    assert_eq!(store.tx_location(&ids[0]).unwrap(), None, "no index kept");
    drop(store);
    let (store, reopened) = Store::open_with(dir.path(), batches).unwrap();
    assert_eq!(reopened.head(), state.head());
    assert_eq!(accounts_sorted(&reopened), accounts_sorted(&state));
    drop(store);
    assert!(!verify(dir.path()).unwrap().query_indexes);
    assert!(matches!(Store::open(dir.path()), Err(StoreError::NoQueryIndexes(_))));
}

/// The replay window behind a filter (a validator's store): once the store holds a ledger and
/// the state spills it, its ids leave memory and are still refused as replays (read from the
/// table), after a reopen too; `verify` still checks the table.
#[test]
fn a_replay_window_in_the_table_still_refuses_replays() {
    use engine::{state::BlockError, validate::TxError};
    let dir = tempfile::tempdir().unwrap();
    let chain = TestChain::new(8, 50);
    let options = StoreOptions {
        index_batch: IndexBatch::EVERY_LEDGER,
        replay_filter_bytes: 64 << 10,
        ..StoreOptions::default()
    };
    let (mut store, mut state) = Store::create_with(dir.path(), &chain.genesis_toml, options).unwrap();
    // Enough ids to seal a generation of the window (16,384), then a small ledger.
    let (first, first_txs) = commit(&mut store, &chain, &mut state, 16_500);
    let (second, second_txs) = commit(&mut store, &chain, &mut state, 20);
    let in_memory = state.replay_entries().count();
    let spilled = state.spill_replay().unwrap();
    assert!(spilled >= 16_384, "a sealed generation left memory ({spilled})");
    assert_eq!(state.replay_entries().count(), in_memory - spilled);
    assert_eq!(state.replay_memory().1, Some(64 << 10));
    let replay = |state: &mut State, tx: &SignedTransaction, id| {
        let height = state.head().height + 1;
        let block =
            Block { height, timestamp_ms: TestChain::timestamp(height), transactions: vec![tx.clone()] };
        let got = apply_block(state, &block, Backend::Libsecp256k1);
        assert_eq!(got, Err(BlockError::InvalidTx { index: 0, error: TxError::Replayed(id) }));
    };
    for i in [0, 7_000, 16_499] {
        assert!(state.is_included(&first.tx_ids[i], first_txs[i].tx.expiration_ms));
        replay(&mut state, &first_txs[i], first.tx_ids[i]);
    }
    drop(store);
    let (store, mut reopened) = Store::open_with(dir.path(), options).unwrap();
    assert_eq!(reopened.replay_entries().count(), 0, "the stored window is in the table, not in memory");
    for (applied, txs) in [(&first, &first_txs), (&second, &second_txs)] {
        for (id, tx) in applied.tx_ids.iter().zip(txs.iter()).step_by(997) {
            assert!(reopened.is_included(id, tx.tx.expiration_ms));
        }
    }
    replay(&mut reopened, &second_txs[3], second.tx_ids[3]);
    replay(&mut reopened, &first_txs[12_345], first.tx_ids[12_345]);
    // A transaction never included is not.
    let fresh = chain.transfers(9, 1, 1).remove(0);
    assert!(!reopened.is_included(&fresh.id(crate::test_utils::CHAIN_ID), fresh.tx.expiration_ms));
    drop(store);
    verify(dir.path()).unwrap();
}

/// A store with a retention keeps the last ledgers and genesis's, deletes the rest a few at a
/// commit, never above the indexed height, reuses the freed pages (the bytes in use stop
/// growing), reopens, and verifies what it keeps; a kept ledger tampered with is caught.
#[test]
fn a_pruning_store_keeps_the_last_ledgers_and_verifies_them() {
    use crate::{PRUNE_LEDGERS_PER_COMMIT, Retention};
    let dir = tempfile::tempdir().unwrap();
    let chain = TestChain::new(4, 50);
    let retention = Retention { ledgers: 5, bytes: u64::MAX };
    let options = StoreOptions {
        index_batch: IndexBatch { txs: 1_000_000, ledgers: 4 },
        without_query_indexes: true,
        retention: Some(retention),
        ..StoreOptions::default()
    };
    let (mut store, mut state) = Store::create_with(dir.path(), &chain.genesis_toml, options).unwrap();
    let mut used = Vec::new();
    for _ in 0..60 {
        commit(&mut store, &chain, &mut state, 40);
        used.push(store.reader().space().unwrap().used_bytes);
        let (head, indexed, first) =
            (state.head().height, store.indexed_height().unwrap(), store.reader().first_kept().unwrap());
        assert!(first <= indexed.max(1), "never above the indexed height ({first} > {indexed})");
        assert_eq!(store.first_kept(), first);
        assert_eq!(first, head.saturating_sub(4).min(indexed.max(1)).max(1), "head {head}");
        assert!(store.header(first).unwrap().is_some() && store.block(head).unwrap().is_some());
        if first > 1 {
            assert!(store.header(first - 1).unwrap().is_none() && store.block(first - 1).unwrap().is_none());
        }
        assert!(store.header(0).unwrap().is_some(), "genesis is kept");
    }
    // Once pruning keeps up, the ledgers deleted free as many pages as the new ones take.
    let (early, late) = (used[20], used[59]);
    assert!(late <= early + early / 5, "bytes in use grew from {early} to {late}");
    store.flush().unwrap();
    drop(store);
    let report = verify(dir.path()).unwrap();
    assert_eq!((report.first_kept, report.heights_checked, report.tx_count), (56, 6, 5 * 40));
    // Reopened with a smaller retention: it catches up a few ledgers at a commit.
    let smaller = StoreOptions { retention: Some(Retention { ledgers: 1, bytes: u64::MAX }), ..options };
    let (mut store, mut state) = Store::open_with(dir.path(), smaller).unwrap();
    commit(&mut store, &chain, &mut state, 5);
    assert!(store.reader().first_kept().unwrap() > 56 && PRUNE_LEDGERS_PER_COMMIT >= 5);
    // By bytes: a small budget keeps fewer ledgers than the count allows.
    let by_bytes = StoreOptions { retention: Some(Retention { ledgers: 1_000, bytes: 1 }), ..options };
    drop(store);
    let (mut store, mut state) = Store::open_with(dir.path(), by_bytes).unwrap();
    for _ in 0..6 {
        commit(&mut store, &chain, &mut state, 5);
    }
    let (first, indexed) = (store.reader().first_kept().unwrap(), store.indexed_height().unwrap());
    assert_eq!(first, indexed, "over its bytes, it keeps only what it must");
    store.flush().unwrap();
    drop(store);
    verify(dir.path()).unwrap();
    // A kept block replaced by another ledger's is caught.
    let env = open_env(dir.path(), Some(Durability::Durable)).unwrap();
    let txn = env.begin_rw_txn().unwrap();
    let blocks = txn.open_table(Some(BLOCKS)).unwrap();
    let other: Vec<u8> = txn.get(&blocks, height_key(0)).unwrap().unwrap();
    txn.put(&blocks, height_key(first), other, WriteFlags::UPSERT).unwrap();
    txn.commit().unwrap();
    drop(env);
    assert!(matches!(verify(dir.path()), Err(StoreError::Verify { .. })));
}

/// An explorer's store (with the query indexes) keeps every ledger: no retention.
#[test]
fn a_store_with_query_indexes_refuses_a_retention() {
    let dir = tempfile::tempdir().unwrap();
    let chain = TestChain::new(2, 5);
    let options = StoreOptions {
        retention: Some(crate::Retention { ledgers: 5, bytes: u64::MAX }),
        ..StoreOptions::default()
    };
    let got = Store::create_with(dir.path(), &chain.genesis_toml, options);
    assert!(matches!(got, Err(StoreError::RetentionWithQueryIndexes)));
}

#[test]
fn replay_window_is_pruned_as_time_passes() {
    let dir = tempfile::tempdir().unwrap();
    let chain = TestChain::new(2, 5);
    let (mut store, mut state) = create_every_ledger(dir.path(), &chain.genesis_toml);
    let (applied, _) = commit(&mut store, &chain, &mut state, 5);
    let id = applied.tx_ids[0];
    let expiration_ms = store.block(1).unwrap().unwrap()[0].tx.expiration_ms;
    // An empty ledger far past every expiration.
    let block = Block {
        height: 2,
        timestamp_ms: state.head().timestamp_ms + crate::test_utils::TX_TTL_MS,
        transactions: vec![],
    };
    let applied = apply_block(&mut state, &block, Backend::Libsecp256k1).unwrap();
    let certificate = Certificate::default();
    store
        .commit(LedgerToCommit {
            applied: &applied,
            transactions: &[],
            certificate: &certificate,
            state: &state,
        })
        .unwrap();
    drop(store);
    let (store, reopened) = Store::open(dir.path()).unwrap();
    assert_eq!(reopened.replay_entries().count(), 0);
    assert!(!reopened.is_included(&id, expiration_ms));
    assert_eq!(
        store.tx_location(&id).unwrap(),
        Some(TxLocation { height: 1, index: 0 }),
        "the index keeps it"
    );
    drop(store);
    assert_eq!(verify(dir.path()).unwrap().heights_checked, 3);
}

#[test]
fn refuses_a_ledger_that_does_not_extend_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let chain = TestChain::new(3, 10);
    let (mut store, mut state) = Store::create(dir.path(), &chain.genesis_toml).unwrap();
    let genesis_state = state.clone();
    let (applied, transactions) = chain.apply_next(&mut state, 4, 1);
    let certificate = Certificate::default();
    let ledger = LedgerToCommit {
        applied: &applied,
        transactions: &transactions,
        certificate: &certificate,
        state: &state,
    };

    // Parts that do not describe one ledger.
    let fewer = LedgerToCommit { transactions: &transactions[1..], ..ledger };
    assert!(matches!(store.commit(fewer), Err(StoreError::InconsistentLedger(_))));
    let mut swapped = transactions.clone();
    swapped.swap(0, 1);
    let swapped = LedgerToCommit { transactions: &swapped, ..ledger };
    assert!(matches!(store.commit(swapped), Err(StoreError::InconsistentLedger(_))));
    let stale = LedgerToCommit { state: &genesis_state, ..ledger };
    assert!(matches!(store.commit(stale), Err(StoreError::InconsistentLedger(_))));

    store.commit(ledger).unwrap();
    assert!(matches!(store.commit(ledger), Err(StoreError::WrongHeight { head: 1, got: 1 })));

    // A fork: another ledger 1, then its child 2, whose parent is not the stored 1.
    let mut fork = genesis_state;
    let _ = chain.apply_next(&mut fork, 3, 1);
    let (applied2, transactions2) = chain.apply_next(&mut fork, 3, 1);
    let err = store
        .commit(LedgerToCommit {
            applied: &applied2,
            transactions: &transactions2,
            certificate: &certificate,
            state: &fork,
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::WrongParent { height: 2, .. }), "{err}");
    // Ledger 3 of the fork skips a height.
    let (applied3, transactions3) = chain.apply_next(&mut fork, 1, 1);
    let err = store
        .commit(LedgerToCommit {
            applied: &applied3,
            transactions: &transactions3,
            certificate: &certificate,
            state: &fork,
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::WrongHeight { head: 1, got: 3 }), "{err}");

    // Nothing of the refused ledgers was written.
    assert_eq!(store.head().unwrap(), applied.header);
    assert_eq!(store.tx_location(&applied2.tx_ids[0]).unwrap(), None);
    drop(store);
    assert_eq!(verify(dir.path()).unwrap().heights_checked, 2);
}

#[test]
fn corrupted_values_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let chain = TestChain::new(2, 4);
    let (mut store, mut state) = create_every_ledger(dir.path(), &chain.genesis_toml);
    let (applied, _) = commit(&mut store, &chain, &mut state, 3);
    drop(store);
    let sender = chain.sender(0);
    let garbage: &[&[u8]] = &[b"", b"\x01", &[0xff; 40], &[0; 300]];

    for bytes in garbage {
        poke(dir.path(), ACCOUNTS, sender.raw(), bytes);
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Decode { table: ACCOUNTS, .. }), "{err}");
        assert!(verify(dir.path()).is_err());
    }
    // An account stored under another's key.
    let other = state.account(&crate::test_utils::filler(0)).unwrap().to_bytes();
    poke(dir.path(), ACCOUNTS, sender.raw(), &other);
    assert!(matches!(Store::open(dir.path()), Err(StoreError::Corrupt { table: ACCOUNTS, .. })));
    poke(dir.path(), ACCOUNTS, sender.raw(), &state.account(&sender).unwrap().to_bytes());

    // The head's header: open refuses; the other tables: their readers report the table.
    for bytes in garbage {
        poke(dir.path(), HEADERS, &height_key(1), bytes);
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Decode { table: HEADERS, .. }), "{err}");
        assert!(verify(dir.path()).is_err());
    }
    poke(
        dir.path(),
        HEADERS,
        &height_key(1),
        &layout::encode_header(&applied.header, &Certificate::default()),
    );
    for bytes in garbage {
        poke(dir.path(), BLOCKS, &height_key(1), bytes);
        poke(dir.path(), TX_INDEX, &applied.tx_ids[0].0, bytes);
        let (store, _) = Store::open(dir.path()).unwrap();
        assert!(matches!(store.block(1), Err(StoreError::Decode { table: BLOCKS, .. })));
        assert!(matches!(
            store.tx_location(&applied.tx_ids[0]),
            Err(StoreError::Corrupt { table: TX_INDEX, .. })
        ));
        drop(store);
        assert!(verify(dir.path()).is_err());
    }
    // A header stored at the wrong height.
    poke(dir.path(), HEADERS, &height_key(0), &layout::encode_header(state.head(), &Certificate::default()));
    assert!(matches!(Store::open(dir.path()).map(|_| ()), Ok(())), "the head is still fine");
    assert!(matches!(verify(dir.path()), Err(StoreError::Corrupt { table: HEADERS, .. })));

    // Meta.
    poke(dir.path(), META, meta::HEAD_HEIGHT, b"\x01\x02");
    assert!(matches!(Store::open(dir.path()), Err(StoreError::Decode { table: META, .. })));
    poke(dir.path(), META, meta::HEAD_HEIGHT, &7u64.to_bytes());
    assert!(matches!(Store::open(dir.path()), Err(StoreError::Corrupt { table: HEADERS, .. })));
    poke(dir.path(), META, meta::SCHEMA_VERSION, &1u64.to_bytes());
    assert!(matches!(
        Store::open(dir.path()),
        Err(StoreError::SchemaVersion { found: 1, expected: SCHEMA_VERSION })
    ));
    poke(dir.path(), META, meta::HEAD_HEIGHT, &1u64.to_bytes());
    poke(dir.path(), META, meta::INDEXED_HEIGHT, &2u64.to_bytes());
    poke(dir.path(), META, meta::SCHEMA_VERSION, &SCHEMA_VERSION.to_bytes());
    assert!(
        matches!(Store::open(dir.path()), Err(StoreError::Corrupt { table: META, .. })),
        "indexed above head"
    );
    poke(dir.path(), META, meta::INDEXED_HEIGHT, &1u64.to_bytes());
    poke(dir.path(), META, meta::GENESIS, b"\xff\xfe");
    assert!(matches!(Store::open(dir.path()), Err(StoreError::Corrupt { table: META, .. })));
}

#[test]
fn verify_replays_the_chain_and_catches_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let chain = TestChain::new(4, 30);
    let (mut store, mut state) = create_every_ledger(dir.path(), &chain.genesis_toml);
    let mut ledgers = Vec::new();
    for _ in 0..4 {
        ledgers.push(commit(&mut store, &chain, &mut state, 10));
    }
    drop(store);
    let report = verify(dir.path()).unwrap();
    assert_eq!(report.heights_checked, 5);
    assert_eq!(report.tx_count, 40);
    assert_eq!(report.state_root, state.state_root());
    assert_eq!(report.head_hash, state.head_hash());
    assert_eq!(report.accounts, state.accounts().count() as u64);

    // A tampered account: still a valid encoding, one unit richer.
    let sender = chain.sender(1);
    let honest = state.account(&sender).unwrap().clone();
    let mut rich = honest.clone();
    rich.set_balance(engine::Currency::CAS, honest.balance(&engine::Currency::CAS) + 1);
    poke(dir.path(), ACCOUNTS, sender.raw(), &rich.to_bytes());
    let err = verify(dir.path()).unwrap_err();
    assert!(matches!(&err, StoreError::Verify { what, .. } if what.contains("differs")), "{err}");
    assert!(matches!(Store::open(dir.path()), Err(StoreError::Restore(_))));
    poke(dir.path(), ACCOUNTS, sender.raw(), &honest.to_bytes());
    verify(dir.path()).unwrap();

    // A tampered block: one transaction dropped from ledger 2.
    let (applied, transactions) = &ledgers[1];
    let mut block = Vec::new();
    layout::begin_block(transactions.len() - 1, &mut block);
    for tx in &transactions[1..] {
        tx.encode(&mut block);
    }
    poke(dir.path(), BLOCKS, &height_key(2), &block);
    let err = verify(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Verify { height: 2, .. }), "{err}");
    // … or a signature changed.
    let mut forged = transactions.clone();
    forged[3].signatures[0].signature.0[10] ^= 1;
    let mut block = Vec::new();
    layout::begin_block(forged.len(), &mut block);
    for tx in &forged {
        tx.encode(&mut block);
    }
    poke(dir.path(), BLOCKS, &height_key(2), &block);
    let err = verify(dir.path()).unwrap_err();
    assert!(
        matches!(&err, StoreError::Verify { height: 2, what } if what.contains("does not apply")),
        "{err}"
    );
    // Restored, the chain verifies again; an extra index row does not.
    let mut block = Vec::new();
    layout::begin_block(transactions.len(), &mut block);
    for tx in transactions {
        tx.encode(&mut block);
    }
    poke(dir.path(), BLOCKS, &height_key(2), &block);
    assert_eq!(verify(dir.path()).unwrap(), report);
    poke(dir.path(), TX_INDEX, &[9; 32], &TxLocation { height: 2, index: 0 }.to_bytes());
    assert!(matches!(verify(dir.path()), Err(StoreError::Verify { .. })));
    assert!(Store::open(dir.path()).is_ok(), "open does not scan the index");
    // A block past the head: a ledger half written is what the store must never show.
    let mut empty = Vec::new();
    layout::begin_block(0, &mut empty);
    poke(dir.path(), BLOCKS, &height_key(applied.header.height + 3), &empty);
    assert!(matches!(Store::open(dir.path()), Err(StoreError::Corrupt { table: BLOCKS, .. })));
    assert!(matches!(verify(dir.path()), Err(StoreError::Verify { .. })));
}

#[test]
fn gathered_index_rows_are_read_reexecuted_on_open_and_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let chain = TestChain::new(3, 20);
    let options =
        StoreOptions { index_batch: IndexBatch { txs: 1_000, ledgers: 3 }, ..StoreOptions::default() };
    let (mut store, mut state) = Store::create_with(dir.path(), &chain.genesis_toml, options).unwrap();
    let mut ledgers = Vec::new();
    for _ in 0..5 {
        ledgers.push(commit(&mut store, &chain, &mut state, 8));
    }
    // Ledgers 1–3 were written by the third commit; 4 and 5 are gathered.
    assert_eq!(store.indexed_height().unwrap(), 3);
    let check_reads = |store: &Store, state: &State| {
        for (applied, _) in &ledgers {
            for (i, id) in applied.tx_ids.iter().enumerate() {
                let at = TxLocation { height: applied.header.height, index: i as u32 };
                assert_eq!(store.tx_location(id).unwrap(), Some(at));
            }
            for a in &applied.touched {
                assert_eq!(store.account(a).unwrap().as_ref(), state.account(a));
            }
        }
        let sender = chain.sender(1);
        let history = store.history(&sender, None, HISTORY_PAGE_MAX).unwrap();
        let mut expected = ledgers
            .iter()
            .flat_map(|(applied, txs)| {
                txs.iter().enumerate().filter(|(_, tx)| tx.tx.fee.payer == sender).map(|(i, _)| {
                    (TxLocation { height: applied.header.height, index: i as u32 }, applied.tx_ids[i])
                })
            })
            .collect::<Vec<_>>();
        expected.reverse();
        let got: Vec<_> = history.iter().map(|e| (e.location, e.id)).collect();
        assert_eq!(got, expected, "history spans the gathered and the written rows");
        assert_eq!(pages(store, &sender, 2), expected, "pages cross from gathered to written rows");
        // A bound that is no entry of the address: the walk starts below it.
        let below_5 = store.history(&sender, Some(TxLocation::at_height(5)), 4).unwrap();
        assert_eq!(
            below_5.iter().map(|e| (e.location, e.id)).collect::<Vec<_>>(),
            expected.iter().copied().filter(|(at, _)| at.height < 5).take(4).collect::<Vec<_>>()
        );
        let below_3 = store.history(&sender, Some(TxLocation::at_height(3)), 4).unwrap();
        assert_eq!(
            below_3.iter().map(|e| (e.location, e.id)).collect::<Vec<_>>(),
            expected.iter().copied().filter(|(at, _)| at.height < 3).take(4).collect::<Vec<_>>()
        );
    };
    check_reads(&store, &state);
    drop(store);
    // The tables hold ledgers 1–3; verify re-executes all five.
    let report = verify(dir.path()).unwrap();
    assert_eq!((report.heights_checked, report.indexed_height, report.tx_count), (6, 3, 40));
    assert_eq!(report.state_root, state.state_root());

    // Open re-executes 4 and 5 from their blocks and gathers their rows again.
    let (mut store, reopened) = Store::open_with(dir.path(), options).unwrap();
    assert_eq!(reopened.head_hash(), state.head_hash());
    assert_eq!(accounts_sorted(&reopened), accounts_sorted(&state));
    check_reads(&store, &reopened);
    store.flush().unwrap();
    assert_eq!(store.indexed_height().unwrap(), 5);
    check_reads(&store, &reopened);
    drop(store);
    assert_eq!(verify(dir.path()).unwrap().indexed_height, 5);

    // A block above the indexed height that does not re-execute to its header is refused.
    let mut store = Store::open_with(dir.path(), options).unwrap().0;
    let mut state = reopened;
    let (applied, transactions) = commit(&mut store, &chain, &mut state, 8);
    drop(store);
    let mut block = Vec::new();
    layout::begin_block(transactions.len() - 1, &mut block);
    for tx in &transactions[1..] {
        tx.encode(&mut block);
    }
    poke(dir.path(), BLOCKS, &height_key(applied.header.height), &block);
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { table: HEADERS, .. }), "{err}");
}

/// Index batches written inline and on a thread of their own, the first one staggered to half
/// a batch: right after every commit — whatever the thread has written yet — every transaction,
/// touched account and history entry reads back, each once (the history neither loses nor
/// repeats an entry across the batch being written); the batches land at heights 2 and 6; and
/// both ways end in the same verified tables.
#[test]
fn index_batches_on_their_own_thread_read_back_and_stagger() {
    let chain = TestChain::new(3, 20);
    let sender = chain.sender(1);
    let batch = IndexBatch { txs: 1_000, ledgers: 4 };
    let mut reports = Vec::new();
    for background in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let options =
            StoreOptions { index_batch: batch, index_in_background: background, ..StoreOptions::default() };
        let (mut store, mut state) = Store::create_with(dir.path(), &chain.genesis_toml, options).unwrap();
        store.stagger_index_batch(0.5);
        let mut ledgers = Vec::new();
        // The sender's history, newest first.
        let mut expected: Vec<(TxLocation, engine::Hash)> = Vec::new();
        let check =
            |store: &Store, state: &State, ledgers: &[(Applied, Vec<SignedTransaction>)], expected: &[_]| {
                for (applied, _) in ledgers {
                    for (i, id) in applied.tx_ids.iter().enumerate() {
                        let at = TxLocation { height: applied.header.height, index: i as u32 };
                        assert_eq!(store.tx_location(id).unwrap(), Some(at));
                    }
                    for a in &applied.touched {
                        assert_eq!(store.account(a).unwrap().as_ref(), state.account(a));
                    }
                }
                let history = store.history(&sender, None, HISTORY_PAGE_MAX).unwrap();
                assert_eq!(history.iter().map(|e| (e.location, e.id)).collect::<Vec<_>>(), expected);
                assert_eq!(pages(store, &sender, 3), expected);
            };
        for height in 1..=9u64 {
            let (applied, txs) = commit(&mut store, &chain, &mut state, 8);
            for (i, tx) in txs.iter().enumerate() {
                if tx.tx.fee.payer == sender {
                    expected.insert(0, (TxLocation { height, index: i as u32 }, applied.tx_ids[i]));
                }
            }
            ledgers.push((applied, txs));
            check(&store, &state, &ledgers, &expected);
            store.join_batch().unwrap();
            check(&store, &state, &ledgers, &expected);
            let indexed = match height {
                1 => 0,
                2..=5 => 2,
                _ => 6,
            };
            assert_eq!(store.indexed_height().unwrap(), indexed, "background {background}, height {height}");
        }
        assert!(!expected.is_empty());
        drop(store);
        let report = verify(dir.path()).unwrap();
        assert_eq!((report.heights_checked, report.indexed_height), (10, 6));
        assert_eq!(report.state_root, state.state_root());
        reports.push(report.head_hash);
    }
    assert_eq!(reports[0], reports[1]);
}

#[test]
fn verify_checks_the_history_links() {
    let dir = tempfile::tempdir().unwrap();
    let chain = TestChain::new(2, 10);
    let (mut store, mut state) = create_every_ledger(dir.path(), &chain.genesis_toml);
    let (first, txs) = commit(&mut store, &chain, &mut state, 4);
    commit(&mut store, &chain, &mut state, 4);
    drop(store);
    verify(dir.path()).unwrap();
    // The payer's row of the first transaction, made to link to a later entry.
    let at = TxLocation { height: 1, index: 0 };
    let payer = txs[0].tx.fee.payer;
    let forged =
        layout::HistoryValue { id: first.tx_ids[0], previous: Some(TxLocation { height: 2, index: 0 }) };
    poke(dir.path(), layout::HISTORY, &layout::history_key(at, &payer), &forged.to_bytes());
    let err = verify(dir.path()).unwrap_err();
    assert!(matches!(&err, StoreError::Verify { height: 1, what } if what.contains("history")), "{err}");
}

/// The commit stage's cost: ledgers of 10,000 transfers on a store of 101,000 accounts, in both
/// durability modes. A measurement, not a check: run it in release,
/// `cargo test --release -p caasiope-storage --lib -- --ignored --nocapture commit_cost`.
#[test]
#[ignore = "a measurement; run in release"]
fn commit_cost_of_large_ledgers() {
    use std::time::{Duration, Instant};
    const TXS: usize = 10_000;
    const LEDGERS: usize = 6;
    let t = Instant::now();
    let chain = TestChain::new(1_000, 100_000);
    println!("genesis of 101,000 accounts built in {:?}", t.elapsed());
    for durability in [Durability::Durable, Durability::SafeNoSync] {
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let (store, _) = Store::create(dir.path(), &chain.genesis_toml).unwrap();
        drop(store);
        let (mut store, mut state) =
            Store::open_with(dir.path(), crate::StoreOptions { durability, ..Default::default() }).unwrap();
        println!("{durability:?}: create + open in {:?}", t.elapsed());
        let mut commits = Vec::new();
        let mut rows = Vec::new();
        for _ in 0..LEDGERS {
            let (applied, transactions) = chain.apply_next(&mut state, TXS, 1);
            let certificate = chain.certify(&applied);
            let t = Instant::now();
            let prepared =
                crate::store::LedgerRows::new(&applied, &transactions, store.chain_id(), true).unwrap();
            rows.push(t.elapsed());
            drop(prepared);
            let t = Instant::now();
            store
                .commit(LedgerToCommit {
                    applied: &applied,
                    transactions: &transactions,
                    certificate: &certificate,
                    state: &state,
                })
                .unwrap();
            commits.push(t.elapsed());
            println!(
                "  ledger {}: {} touched accounts, commit {:?}",
                applied.header.height,
                applied.touched.len(),
                commits.last().unwrap()
            );
        }
        commits.sort();
        rows.sort();
        let median = |v: &[Duration]| v[v.len() / 2];
        let per_tx_us = |d: Duration| d.as_secs_f64() * 1e6 / TXS as f64;
        println!(
            "{durability:?}: commit of {TXS} transfers: median {:?} = {:.1} µs/tx (min {:?}); \
             of which encoding and sorting rows {:?} = {:.1} µs/tx; data file {} MB",
            median(&commits),
            per_tx_us(median(&commits)),
            commits[0],
            median(&rows),
            per_tx_us(median(&rows)),
            std::fs::metadata(dir.path().join("mdbx.dat")).unwrap().len() >> 20,
        );
    }
}
