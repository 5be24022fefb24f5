//! What the fuzz targets check, and the small chain they check it against.
//!
//! Every decoder of bytes a peer sends has a target: frames and the hello of a connection
//! ([`frames`], [`hello`]), the consensus channel ([`consensus_message`]), the gossip and sync
//! channels with the ledgers and evidence they carry ([`sync_message`]), and the transactions
//! and ledger objects inside them ([`tx_decode`], [`ledger_decode`]); with the write-ahead log
//! and signing state a validator reads back at start ([`wal_record`]) and the state transition
//! behind the transaction decoder ([`tx_apply`]). [`TARGETS`] lists them.
//!
//! The checks live here rather than in `fuzz_targets/` so that `examples/replay.rs` can run any
//! input (a crash artifact, a whole corpus) through exactly the same code on a stable toolchain,
//! without libFuzzer; `examples/seeds.rs` writes seed corpora built from [`fixture`].
//!
//! Every check is an assertion: a panic is a bug in the engine (or in a check), never an
//! expected outcome of bad input — the engine refuses bad input with an error.

use std::{any::type_name, fmt::Debug, ops::Range, sync::LazyLock};

use caasiope_consensus::{
    CommittedLedger, Equivocation, Input, Message, MessageError, Pol, Proposal, SIGN_STATE_VOTES_MAX,
    SignState, SignedProposal, SignedVote, Slot, Timeout, TimeoutKind, Value, WalRecord, message_digest,
    wire::{
        FETCH_IDS_MAX, GOSSIP_TXS_MAX, SyncMessage, decode_txs, encode_txs, ledger_request, put_bodies,
        snapshot_request,
    },
};
use caasiope_engine::{
    Address, Backend, Currency, Declaration, Hash, HashType, MultiSig, SecretKey, ValidatorUpdate,
    account::Account,
    codec::{Decode, Encode, Reader, decode_exact},
    genesis::{BalanceSpec, CurrencySpec, Genesis, GenesisConfig},
    hash::sha256,
    ledger::{Certificate, LedgerHeader, Validator, ValidatorSet, Vote, VoteKind},
    limits::TX_BYTES_MAX,
    merkle::{StateTrie, tx_proof, tx_root, verify_state_proof, verify_tx_proof},
    proof::{AccountStateProof, ProofError, TxInclusionProof, verify_account_state, verify_tx_inclusion},
    state::{Applied, State},
    tx::{Fee, Leg, SignedTransaction, TX_VERSION, Transaction, TxId},
    validate::{TxError, VerifiedTx, check_stateless, verify_signatures},
};
use caasiope_net::{
    conn::{ConnConfig, ConnError, hello_payload, parse_hello},
    frame::{self, Channel, Decoder, Frame, FrameError, HEADER_LEN, PAYLOAD_MAX},
};

/// Chain id of the fixture chain.
pub const CHAIN: &str = "fuzz";
/// Genesis time of the fixture chain (2026-01-01).
pub const GENESIS_MS: i64 = 1_767_225_600_000;
/// Time of the fixture's first block, and of the block `tx_apply` opens.
pub const BLOCK_MS: i64 = GENESIS_MS + 1_000;
/// Expiration of the fixture's transactions: inside the TTL window of [`BLOCK_MS`].
pub const EXPIRATION_MS: i64 = BLOCK_MS + 60_000;
/// Minimum fee of the fixture chain.
pub const MIN_FEE: i64 = 1_000;
const COIN: i64 = 100_000_000;

/// A small chain: four validators of weight 1, three users, CAS and USD, and a first ledger of
/// valid transactions (transfer, swap, message, MultiSig and HashLock funding, validator update)
/// certified by every validator, with the state after it.
#[derive(Debug)]
pub struct Fixture {
    /// Genesis; `genesis.params` are the chain parameters of every check.
    pub genesis: Genesis,
    /// State of ledger 0.
    pub genesis_state: State,
    /// Validator keys, in the order of `genesis.validators` (the certificate's indices).
    pub validator_keys: Vec<SecretKey>,
    /// Funded users.
    pub users: Vec<SecretKey>,
    /// The second currency.
    pub usd: Currency,
    /// The transactions of ledger 1, in block order.
    pub block: Vec<SignedTransaction>,
    /// Ledger 1.
    pub applied: Applied,
    /// Ledger 1's certificate, signed by every validator of `genesis.validators`.
    pub certificate: Certificate,
    /// State after ledger 1.
    pub state: State,
}

/// The fixture, built once per process.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: LazyLock<Fixture> = LazyLock::new(build_fixture);
    &FIXTURE
}

fn key(byte: u8) -> SecretKey {
    SecretKey::from_bytes(&[byte; 32]).unwrap_or_else(|e| panic!("fixture key {byte}: {e}"))
}

fn address(k: &SecretKey) -> Address {
    k.public_key().address()
}

fn leg(address: Address, currency: Currency, amount: i64) -> Leg {
    Leg { address, currency, amount }
}

fn tx(inputs: Vec<Leg>, outputs: Vec<Leg>, payer: Address) -> Transaction {
    Transaction {
        version: TX_VERSION,
        expiration_ms: EXPIRATION_MS,
        declarations: vec![],
        inputs,
        outputs,
        message: vec![],
        fee: Fee { payer, amount: MIN_FEE },
    }
}

fn build_fixture() -> Fixture {
    let mut validator_keys: Vec<SecretKey> = (1..=4).map(key).collect();
    validator_keys.sort_by_key(SecretKey::public_key);
    let users: Vec<SecretKey> = (0x11..=0x13).map(key).collect();
    let governance = address(&validator_keys[0]);
    let usd = Currency::new("USD").unwrap_or_else(|e| panic!("{e}"));
    let mut balances: Vec<BalanceSpec> = users
        .iter()
        .chain([&validator_keys[0]])
        .map(|k| BalanceSpec { address: address(k), currency: Currency::CAS, amount: 1_000 * COIN })
        .collect();
    balances.push(BalanceSpec { address: address(&users[1]), currency: usd, amount: 1_000_000 });
    let config = GenesisConfig {
 generated: vec![],
        chain_id: CHAIN.into(),
        timestamp_ms: GENESIS_MS,
        min_fee: MIN_FEE,
        max_ttl_ms: 3_600_000,
        fee_account: address(&key(0x21)),
        governance,
        validators: validator_keys
            .iter()
            .map(|k| Validator { public_key: k.public_key(), weight: 1 })
            .collect(),
        currencies: vec![
            CurrencySpec { symbol: Currency::CAS, issuer: Address::timelock(0) },
            CurrencySpec { symbol: usd, issuer: address(&key(0x20)) },
        ],
        declarations: vec![],
        balances,
    };
    let genesis = Genesis::new(config).unwrap_or_else(|e| panic!("fixture genesis: {e}"));
    let genesis_state = State::from_genesis(&genesis);

    let [a, b, c] = [&users[0], &users[1], &users[2]].map(address);
    let cas = Currency::CAS;
    let transfer = tx(vec![leg(a, cas, 5 * COIN)], vec![leg(b, cas, 5 * COIN)], a).sign(CHAIN, &[&users[0]]);
    let swap = tx(vec![leg(a, cas, COIN), leg(b, usd, 700)], vec![leg(b, cas, COIN), leg(a, usd, 700)], a)
        .sign(CHAIN, &[&users[0], &users[1]]);
    let mut with_message = tx(vec![leg(c, cas, 42)], vec![leg(a, cas, 42)], c);
    with_message.message = b"deposit ref 0001".to_vec();
    let with_message = with_message.sign(CHAIN, &[&users[2]]);
    let multisig = Declaration::MultiSig(MultiSig::new(vec![a, b], 2).unwrap_or_else(|e| panic!("{e}")));
    let multisig_address = multisig.address().unwrap_or_else(|| panic!("a MultiSig has an address"));
    let mut fund_multisig = tx(vec![leg(a, cas, COIN)], vec![leg(multisig_address, cas, COIN)], a);
    fund_multisig.declarations = vec![multisig];
    let fund_multisig = fund_multisig.sign(CHAIN, &[&users[0]]);
    let hashlock = Declaration::HashLock { hash_type: HashType::Sha256, hash: sha256(&[7; 32]) };
    let hashlock_address = hashlock.address().unwrap_or_else(|| panic!("a HashLock has an address"));
    let mut fund_hashlock = tx(vec![leg(b, usd, 10)], vec![leg(hashlock_address, usd, 10)], b);
    fund_hashlock.declarations = vec![hashlock];
    let fund_hashlock = fund_hashlock.sign(CHAIN, &[&users[1]]);
    let mut add_validator = tx(vec![], vec![], governance);
    add_validator.declarations =
        vec![Declaration::ValidatorUpdate(ValidatorUpdate { public_key: key(5).public_key(), weight: 1 })];
    let add_validator = add_validator.sign(CHAIN, &[&validator_keys[0]]);
    let block = vec![transfer, swap, with_message, fund_multisig, fund_hashlock, add_validator];

    let mut state = genesis_state.clone();
    let verified: Vec<VerifiedTx> = block
        .iter()
        .map(|t| {
            caasiope_engine::validate::verify(t.clone(), t.id(CHAIN), &genesis.params, Backend::K256)
                .unwrap_or_else(|e| panic!("fixture transaction: {e}"))
        })
        .collect();
    let applied = caasiope_engine::state::apply_verified(&mut state, BLOCK_MS, &verified)
        .unwrap_or_else(|e| panic!("fixture block: {e}"));
    let mut certificate = Certificate::new(0);
    for (i, k) in validator_keys.iter().enumerate() {
        certificate.add(CHAIN, i as u8, k, applied.header.height, &applied.hash);
    }
    Fixture { genesis, genesis_state, validator_keys, users, usd, block, applied, certificate, state }
}

/// Decodes `bytes` as exactly one `T`; when it is accepted, asserts it is the canonical encoding.
fn canonical<T: Decode + Encode>(bytes: &[u8]) -> Option<T> {
    let value = decode_exact::<T>(bytes).ok()?;
    assert!(value.to_bytes() == bytes, "{}: an accepted encoding is not the canonical one", type_name::<T>());
    Some(value)
}

/// Runs `f` with each signature backend and asserts they agree (the engine promises identical
/// verdicts on every input).
fn both_backends<T: PartialEq + Debug>(f: impl Fn(Backend) -> T) -> T {
    let k256 = f(Backend::K256);
    let libsecp = f(Backend::Libsecp256k1);
    assert_eq!(k256, libsecp, "the k256 and libsecp256k1 backends disagree");
    k256
}

/// `tx_decode`: `from_bytes` and `decode_with_id` accept and refuse the same bytes with the same
/// error; what they accept re-encodes to exactly the input and has the id `Transaction::id`
/// computes; the stateless rules and both signature backends run without panicking and agree.
pub fn tx_decode(data: &[u8]) {
    let (tx, id) = match (SignedTransaction::from_bytes(data), SignedTransaction::decode_with_id(data, CHAIN))
    {
        (Ok(tx), Ok((same, id))) => {
            assert_eq!(tx, same, "from_bytes and decode_with_id decode differently");
            (tx, id)
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "from_bytes and decode_with_id refuse with different errors");
            return;
        }
        (a, b) => panic!("from_bytes and decode_with_id disagree: {a:?} / {b:?}"),
    };
    assert!(tx.to_bytes() == data, "an accepted transaction is not in canonical form");
    assert_eq!(id, tx.id(CHAIN), "decode_with_id hashed something other than the unsigned prefix");
    let _ = check_stateless(&tx.tx, &fixture().genesis.params);
    for d in &tx.tx.declarations {
        let _ = d.address();
    }
    let _ = both_backends(|b| verify_signatures(&tx, &id, CHAIN, b));
}

/// Every account's canonical encoding, sorted: two states hold the same accounts iff equal.
fn snapshot(state: &State) -> Vec<Vec<u8>> {
    let mut accounts: Vec<Vec<u8>> = state.accounts().map(Encode::to_bytes).collect();
    accounts.sort();
    accounts
}

/// `tx_apply`: a transaction that decodes and passes the stateless rules is applied to the
/// genesis state with its signatures taken as given (the fuzzer cannot sign; what is under test
/// is what the stateful rules do with any set of signers). Applied: value is conserved, only
/// issuers go negative, a second application is a replay, and the sealed state root is the root
/// of the accounts rebuilt from scratch. Refused: the state is exactly as before. Returns whether
/// the transaction was applied.
pub fn tx_apply(data: &[u8]) -> bool {
    let Ok((tx, id)) = SignedTransaction::decode_with_id(data, CHAIN) else { return false };
    let f = fixture();
    let params = &f.genesis.params;
    if check_stateless(&tx.tx, params).is_err() {
        return false;
    }
    let signers = tx.signatures.iter().map(|s| s.public_key.address()).collect();
    let vtx = VerifiedTx { id, tx, signers };
    let mut state = f.genesis_state.clone();
    let before = snapshot(&state);
    let mut exec = state.begin_block(BLOCK_MS).unwrap_or_else(|e| panic!("begin: {e}"));
    let Ok(receipt) = exec.apply_tx(&vtx) else {
        drop(exec);
        assert!(snapshot(&state) == before, "a refused transaction changed the state");
        assert!(
            !state.is_included(&id, vtx.tx.tx.expiration_ms),
            "a refused transaction is in the replay set"
        );
        return false;
    };
    assert_eq!((receipt.id, receipt.index, receipt.fee), (id, 0, vtx.tx.tx.fee.amount));
    assert_eq!(exec.state().check_conservation(), Ok(()), "apply broke conservation");
    assert!(matches!(exec.apply_tx(&vtx), Err(TxError::Replayed(_))), "a transaction applied twice");
    let applied = exec.finish();
    assert_eq!(applied.tx_ids, vec![id]);
    for account in state.accounts() {
        for (currency, balance) in account.balances() {
            assert!(
                *balance > 0 || params.is_issuer(&account.address, currency),
                "{} holds {balance} {currency} and is not its issuer",
                account.address
            );
        }
    }
    let mut leaves: Vec<_> = state.accounts().map(|a| (*a.address.raw(), a.leaf_hash())).collect();
    assert_eq!(state.state_root(), StateTrie::from_entries(&mut leaves).root(), "incremental root drifted");
    true
}

/// `ledger_decode`: the first byte picks the type (modulo 6), the rest is decoded as exactly one
/// value of it — header, certificate, validator set, account, transaction-inclusion proof or
/// account-state proof. What decodes must be canonical, and is then used: certificates and
/// proofs are verified against the fixture's validator set with both backends, whose verdicts
/// must agree, and anything that verifies must be true of the fixture's ledger 1 (a forged
/// signature or Merkle branch would show here).
pub fn ledger_decode(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else { return };
    let f = fixture();
    let validators = &f.genesis.validators;
    match kind % 6 {
        0 => {
            if let Some(header) = canonical::<LedgerHeader>(bytes) {
                let _ = header.hash(CHAIN);
            }
        }
        1 => {
            if let Some(cert) = canonical::<Certificate>(bytes) {
                let verdict = both_backends(|b| {
                    cert.verify(validators, CHAIN, f.applied.header.height, &f.applied.hash, b)
                });
                if verdict.is_ok() {
                    certified_by_fixture(&cert);
                }
            }
        }
        2 => {
            if let Some(set) = canonical::<ValidatorSet>(bytes) {
                let _ = set.hash();
                let total: u64 = set.validators().iter().map(|v| v.weight).sum();
                assert_eq!(set.total_weight(), total);
                assert!(set.is_quorum(total) && !set.is_quorum(0));
                for (i, v) in set.validators().iter().enumerate() {
                    assert_eq!(set.index_of(&v.public_key), Some(i));
                }
                assert_eq!(ValidatorSet::new(set.validators().to_vec()).as_ref(), Ok(&set));
            }
        }
        3 => {
            if let Some(account) = canonical::<Account>(bytes) {
                let _ = account.leaf_hash();
            }
        }
        4 => {
            if let Some(proof) = canonical::<TxInclusionProof>(bytes) {
                let verdict = both_backends(|b| verify_tx_inclusion(CHAIN, validators, &proof, b));
                let branch = verify_tx_proof(&proof.header.tx_root, &proof.tx_id, &proof.branch);
                expect_verdict(&verdict, &proof.certificate, &proof.header, branch);
                if verdict.is_ok() {
                    certified_by_fixture(&proof.certificate);
                    assert_eq!(proof.header, f.applied.header);
                    let index = proof.branch.index() as usize;
                    assert_eq!(proof.branch.count() as usize, f.applied.tx_ids.len());
                    assert_eq!(f.applied.tx_ids.get(index), Some(&proof.tx_id), "a forged inclusion proof");
                }
            }
        }
        _ => {
            if let Some(proof) = canonical::<AccountStateProof>(bytes) {
                let verdict = both_backends(|b| verify_account_state(CHAIN, validators, &proof, b));
                let branch = verify_state_proof(
                    &proof.header.state_root,
                    proof.account.address.raw(),
                    &proof.account.leaf_hash(),
                    &proof.branch,
                );
                expect_verdict(&verdict, &proof.certificate, &proof.header, branch);
                if verdict.is_ok() {
                    certified_by_fixture(&proof.certificate);
                    assert_eq!(proof.header, f.applied.header);
                    assert_eq!(
                        f.state.account(&proof.account.address),
                        Some(&proof.account),
                        "a forged account-state proof"
                    );
                }
            }
        }
    }
}

/// A proof's verdict is the certificate's, then the branch's.
fn expect_verdict(verdict: &Result<(), ProofError>, cert: &Certificate, header: &LedgerHeader, branch: bool) {
    let validators = &fixture().genesis.validators;
    let expected = match cert.verify(validators, CHAIN, header.height, &header.hash(CHAIN), Backend::K256) {
        Err(e) => Err(ProofError::Certificate(e)),
        Ok(()) if !branch => Err(ProofError::Branch),
        Ok(()) => Ok(()),
    };
    assert_eq!(verdict, &expected);
}

/// Every signature of a certificate that verified is the one the fixture's validator made:
/// RFC 6979 signing and the low-S rule leave no other valid signature to find.
fn certified_by_fixture(cert: &Certificate) {
    let real = &fixture().certificate.signatures;
    for (index, signature) in &cert.signatures {
        let made = real.iter().find(|(i, _)| i == index).map(|(_, s)| s);
        assert_eq!(made, Some(signature), "validator {index} has a second valid signature");
    }
}

/// A target's checks: they panic on a violation.
pub type Check = fn(&[u8]);

/// Every target, by name, with its checks: what `examples/replay.rs` runs an input through and
/// `examples/seeds.rs` checks its seeds with (each `fuzz_targets/*.rs` calls its own).
pub const TARGETS: [(&str, Check); 8] = [
    ("tx_decode", tx_decode),
    ("ledger_decode", ledger_decode),
    ("tx_apply", |data| {
        tx_apply(data);
    }),
    ("frames", frames),
    ("hello", hello),
    ("consensus_message", consensus_message),
    ("sync_message", sync_message),
    ("wal_record", wal_record),
];

/// The checks of the target named `name`.
pub fn target(name: &str) -> Option<Check> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|&(_, check)| check)
}

/// The next `N` bytes of `data` (zeros past its end), and `data` moved past them.
fn take_array<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let mut out = [0; N];
    let n = N.min(data.len());
    out[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    out
}

/// A chunk length from one byte: 0 to 127 as is (0 is an empty push), above that in steps of
/// 64 up to 8 KiB, so that both byte-by-byte arrival and whole TLS records occur.
fn chunk_len(b: u8) -> usize {
    if b < 0x80 { usize::from(b) } else { usize::from(b - 0x7f) * 64 }
}

/// The frames of a stream (channel, and the range of the whole frame in the stream) and, if the
/// stream breaks, how many bytes it takes to see it and the error.
type Reading = (Vec<(Channel, Range<usize>)>, Option<(usize, FrameError)>);

/// How `stream` reads at once, by a decoder written for clarity rather than for bytes that
/// arrive in pieces: what [`frames`] holds `Decoder` to.
fn read_frames(stream: &[u8], payload_max: [usize; 4]) -> Reading {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(&[n, a, b, c, d]) = stream.get(at..at + HEADER_LEN) {
        let seen = at + HEADER_LEN;
        let Some(channel) = Channel::from_u8(n) else {
            return (frames, Some((seen, FrameError::UnknownChannel(n))));
        };
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        if len > PAYLOAD_MAX {
            return (frames, Some((seen, FrameError::TooLarge(len as u64))));
        }
        let max = payload_max[channel as usize];
        if len > max {
            return (frames, Some((seen, FrameError::ChannelTooLarge { channel, len, max })));
        }
        if stream.len() < seen + len {
            break;
        }
        frames.push((channel, at..seen + len));
        at = seen + len;
    }
    (frames, None)
}

/// `frames`: a byte stream fed to `net::frame::Decoder` in chunks. The first byte says how:
/// bits 0–2 the number of chunk lengths that follow (1 to 8, one byte each, used in turn, see
/// [`chunk_len`]), bit 3 that 8 bytes of per-channel maxima follow (u16 LE each, `0xffff` for
/// "above `PAYLOAD_MAX`") for `Decoder::with_payload_max`, bit 4 `push` rather than
/// `push_into`; the rest is the stream.
///
/// After every chunk the decoder must have yielded exactly the frames a one-shot reading of the
/// stream finds complete, each re-encoding (`frame::encode`) to the bytes it took; must hold
/// the rest of the stream as its pending frame; and must allocate at most twice the pending
/// bytes (a header's few bytes at least), never from a length a header claims. An error comes
/// with the chunk that completes the bad header, and stays: every later non-empty chunk is
/// refused the same way, and no frame comes out after it.
pub fn frames(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let lens_len = (usize::from(flags & 7) + 1).min(rest.len());
    let (lens, tail) = rest.split_at(lens_len);
    rest = tail;
    let payload_max = (flags & 8 != 0).then(|| {
        let maxes: [u8; 8] = take_array(&mut rest);
        [0, 1, 2, 3].map(|i| match u16::from_le_bytes([maxes[2 * i], maxes[2 * i + 1]]) {
            u16::MAX => usize::MAX,
            m => usize::from(m),
        })
    });
    let push_whole = flags & 0x10 != 0;
    let stream = rest;
    let mut decoder = payload_max.map_or_else(Decoder::new, Decoder::with_payload_max);
    let (expected, failure) =
        read_frames(stream, payload_max.unwrap_or([PAYLOAD_MAX; 4]).map(|m| m.min(PAYLOAD_MAX)));

    // Chunks in turn (a zero length is an empty push); if every length is zero, the stream in
    // one piece, then an empty push.
    let mut chunks = Vec::new();
    let mut at = 0;
    let stalled = lens.iter().all(|&b| chunk_len(b) == 0);
    for &b in lens.iter().cycle() {
        if at == stream.len() {
            break;
        }
        let end = if stalled { stream.len() } else { (at + chunk_len(b)).min(stream.len()) };
        chunks.push(at..end);
        if stalled {
            chunks.push(end..end);
        }
        at = end;
    }

    let mut got: Vec<Frame> = Vec::new();
    // Frames the decoder owes: with `push`, those completed by a chunk that fails are dropped
    // with the error (the connection ends), so they are owed no longer.
    let mut owed = 0;
    // Frames already compared (each once: a stream fed byte by byte has thousands of chunks).
    let mut checked = 0;
    // Frames of `expected` the bytes fed so far complete.
    let mut complete = 0;
    for chunk in chunks {
        let end = chunk.end;
        let bytes = &stream[chunk];
        let result = if push_whole {
            decoder.push(bytes).map(|frames| got.extend(frames))
        } else {
            decoder.push_into(bytes, &mut got)
        };
        let failed_by = failure.filter(|&(seen, _)| seen <= end).map(|(_, e)| e);
        while expected.get(complete).is_some_and(|(_, r)| r.end <= end) {
            complete += 1;
        }
        match (failed_by, result) {
            (Some(e), Err(refused)) => {
                assert!(!bytes.is_empty(), "an empty push failed");
                assert_eq!(refused, e, "the decoder refused the stream for another reason");
                if !push_whole {
                    owed = complete;
                }
            }
            (Some(e), Ok(())) => {
                // The chunk that completes a bad header is never empty: this one comes after.
                assert!(
                    bytes.is_empty(),
                    "a decoder went on after {e:?}, which its stream has by byte {end}"
                );
            }
            (None, Ok(())) => owed = complete,
            (None, Err(e)) => panic!("the decoder refused a valid stream at byte {end}: {e:?}"),
        }
        assert_eq!(got.len(), owed, "after byte {end}: {} frames out, {owed} owed", got.len());
        for (f, (channel, range)) in got.iter().zip(&expected).skip(checked) {
            let mut again = Vec::new();
            frame::encode(f.channel, &f.payload, &mut again)
                .unwrap_or_else(|e| panic!("a decoded frame: {e}"));
            assert!(again == stream[range.clone()], "a frame on {channel:?} does not re-encode to its bytes");
            // No spare room to go uncounted by the channel's budget, but for a payload shorter
            // than the buffer its header was read into (8 bytes): it keeps that buffer.
            assert!(
                f.payload.capacity() <= f.payload.len().max(2 * HEADER_LEN),
                "a payload of {} bytes has {} allocated",
                f.payload.len(),
                f.payload.capacity()
            );
        }
        checked = got.len();
        let last = expected[..complete].last().map_or(0, |(_, r)| r.end);
        let pending = end - last;
        let capacity = decoder.buffered_capacity();
        assert!(
            capacity <= (2 * decoder.buffered()).max(2 * HEADER_LEN),
            "{capacity} bytes allocated for {} pending",
            decoder.buffered()
        );
        if failed_by.is_some() {
            assert!(decoder.buffered() <= HEADER_LEN, "a failed decoder holds {} bytes", decoder.buffered());
        } else if pending < HEADER_LEN {
            assert_eq!(decoder.buffered(), pending, "a partial header");
        } else {
            assert_eq!(decoder.buffered(), pending - HEADER_LEN, "a partial payload");
            let head = &stream[last + 1..last + HEADER_LEN];
            let claimed = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            assert!(capacity <= claimed.max(2 * HEADER_LEN), "{capacity} bytes for a {claimed}-byte frame");
        }
    }
}

/// `hello`: `net::conn::parse_hello` on any payload refuses with `ConnError::Hello` or accepts
/// exactly what `hello_payload` sends for the chain it read; and the input taken as a chain id
/// (lossy UTF-8) reads back from the hello a node sends for it (cut to 64 bytes).
pub fn hello(data: &[u8]) {
    // net::conn's bound on a hello's chain id (private there).
    const CHAIN_ID_MAX: usize = 64;
    match parse_hello(data) {
        Ok(chain) => {
            assert!(
                hello_payload(&ConnConfig::new(chain)) == data,
                "an accepted hello no node sends: {data:?}"
            );
        }
        Err(e) => assert!(matches!(e, ConnError::Hello(_)), "a hello refused as {e:?}"),
    }
    let chain = String::from_utf8_lossy(data);
    let payload = hello_payload(&ConnConfig::new(chain.as_ref()));
    assert!(payload.len() <= 4 + CHAIN_ID_MAX, "a hello of {} bytes", payload.len());
    let read = parse_hello(&payload);
    if chain.len() <= CHAIN_ID_MAX {
        assert_eq!(read, Ok(chain.as_ref()), "the hello of chain {chain:?} does not read back");
    } else if let Ok(read) = read {
        // A cut inside a character makes it unreadable, which no genesis allows (32 ASCII bytes).
        assert!(
            read.len() == CHAIN_ID_MAX && chain.starts_with(read),
            "a long chain id read back as {read:?}"
        );
    }
}

/// `consensus_message`: `Message` bytes, canonical; checked against the fixture's validator set
/// (see [`check_message`]).
pub fn consensus_message(data: &[u8]) {
    if let Some(message) = canonical::<Message>(data) {
        check_message(&message);
    }
}

/// A decoded consensus message verified against the fixture's genesis set (the height does not
/// matter to a signature): both backends agree, a proposal that verifies has its ids under its
/// header's root at its own height, and whatever verifies was signed by the fixture's key of its
/// signer (RFC 6979 and low S leave no second valid signature to find).
fn check_message(message: &Message) {
    let set = &fixture().genesis.validators;
    let _ = (Slot::of(message), message_digest(message), message.height(), message.round());
    let verdict = both_backends(|b| message.verify(CHAIN, set, b));
    if usize::from(message.signer()) >= set.validators().len() {
        assert_eq!(verdict, Err(MessageError::UnknownValidator));
    }
    if verdict.is_err() {
        return;
    }
    if let Message::Proposal(p) = message {
        assert_eq!(
            p.proposal.value.header.height, p.proposal.height,
            "a proposal for another height verified"
        );
        assert!(p.proposal.value.ids_match_root(), "a proposal with altered ids verified");
    }
    signed_by_fixture(message);
}

/// The message's signature is the one the fixture's key of its signer makes.
fn signed_by_fixture(message: &Message) {
    let signer = message.signer();
    let key = fixture()
        .validator_keys
        .get(usize::from(signer))
        .unwrap_or_else(|| panic!("validator {signer} is not in the fixture"));
    let (made, carried) = match message {
        Message::Vote(v) => (SignedVote::sign(v.vote, CHAIN, signer, key).signature, v.signature),
        Message::Proposal(p) => (p.proposal.clone().sign(CHAIN, signer, key).signature, p.signature),
    };
    assert_eq!(made, carried, "validator {signer} has a second valid signature on {message:?}");
}

/// `sync_message`: the input as a sync-channel payload (`SyncMessage::decode`) and as a gossip
/// payload (`decode_txs`), as the node reads them.
///
/// Sync: what decodes re-encodes exactly and keeps its counts within the protocol's bounds;
/// `ledger_request` and `snapshot_request` (what a connection's server reads first) find a request exactly when the
/// decoder does, for the same height; bodies go through [`tx_decode`], a ledger's certificate
/// and transactions are checked against the fixture's ledger 1, evidence as in [`wal_record`].
/// Gossip: a batch of 1 to `GOSSIP_TXS_MAX` bodies of 1 to `TX_BYTES_MAX` bytes, whose bytes
/// `put_bodies` (and `encode_txs`, for bodies that decode) writes back exactly.
pub fn sync_message(data: &[u8]) {
    let decoded = SyncMessage::decode(data);
    let request = match &decoded {
        Ok(SyncMessage::LedgerRequest(height)) => Some(*height),
        _ => None,
    };
    assert_eq!(ledger_request(data), request, "ledger_request and the decoder disagree");
    let snapshot = match &decoded {
        Ok(SyncMessage::SnapshotRequest { height, record }) => Some((*height, *record)),
        _ => None,
    };
    assert_eq!(snapshot_request(data), snapshot, "snapshot_request and the decoder disagree");
    if let Ok(message) = &decoded {
        assert!(message.encode() == data, "an accepted sync message is not in canonical form");
        match message {
            SyncMessage::LedgerRequest(_) => {}
            SyncMessage::Ledger(ledger) => check_ledger(ledger),
            SyncMessage::Fetch(ids) => assert!((1..=FETCH_IDS_MAX).contains(&ids.len()), "{} ids", ids.len()),
            SyncMessage::Bodies(bodies) => {
                assert!((1..=FETCH_IDS_MAX).contains(&bodies.len()), "{} bodies", bodies.len());
                check_bodies(bodies);
            }
            SyncMessage::Evidence(proof) => check_equivocation(proof),
            // Two heights, any: the asker only counts and logs it (docs/CONSENSUS.md).
            SyncMessage::NotKept { .. } => {
                assert_eq!(data.len(), 17, "a not-kept answer is a tag and two heights")
            }
            SyncMessage::SnapshotRequest { .. } => assert_eq!(data.len(), 13, "a tag, a height, a record"),
            // The record's bytes are the receiver's restore's to check, as it reads them.
            SyncMessage::SnapshotRecord { bytes, .. } => assert_eq!(data.len(), 21 + bytes.len()),
            SyncMessage::NoSnapshot => assert_eq!(data.len(), 1),
        }
    }
    let mut r = Reader::new(data);
    if let Ok(bodies) = decode_txs(&mut r, GOSSIP_TXS_MAX) {
        assert!((1..=GOSSIP_TXS_MAX).contains(&bodies.len()), "{} gossip bodies", bodies.len());
        let read = &data[..data.len() - r.remaining()];
        let mut again = Vec::new();
        put_bodies(bodies.iter().map(Vec::as_slice), &mut again);
        assert!(again == read, "put_bodies does not write back the gossip it read");
        let txs: Result<Vec<SignedTransaction>, _> = bodies.iter().map(|b| decode_exact(b)).collect();
        if let Ok(txs) = txs {
            assert!(encode_txs(&txs) == read, "encode_txs does not write back the gossip it read");
        }
        check_bodies(&bodies);
    }
}

/// Transaction bodies from a peer: each within its bounds, then through [`tx_decode`].
fn check_bodies(bodies: &[Vec<u8>]) {
    for body in bodies {
        assert!((1..=TX_BYTES_MAX).contains(&body.len()), "a body of {} bytes", body.len());
        tx_decode(body);
    }
}

/// A committed ledger from a peer: a certificate that verifies (both backends agreeing) is the
/// fixture's, for the fixture's ledger 1; transactions whose ids hash to ledger 1's root are
/// ledger 1's (no second list under one Merkle root).
fn check_ledger(ledger: &CommittedLedger) {
    let f = fixture();
    let id = ledger.header.hash(CHAIN);
    let verdict = both_backends(|b| {
        ledger.certificate.verify(&f.genesis.validators, CHAIN, ledger.header.height, &id, b)
    });
    if verdict.is_ok() {
        certified_by_fixture(&ledger.certificate);
        assert_eq!(ledger.header, f.applied.header, "a certificate verified for a ledger never signed");
    }
    let ids: Vec<TxId> = ledger.transactions.iter().map(|t| t.id(CHAIN)).collect();
    if tx_root(&ids) == f.applied.header.tx_root {
        assert_eq!(ids, f.applied.tx_ids, "two lists of transactions under one root");
    }
}

/// An equivocation proof: its kind's name and code agree, and [`Equivocation::check`] against
/// the fixture's genesis set gives one verdict with both backends. A proof that holds names the
/// offender's key, and its two messages are the offender's, verify, conflict in one slot, and
/// are signed by the fixture's key (the seeds hold such proofs: the fixture's validators
/// equivocate on purpose there).
fn check_equivocation(proof: &Equivocation) {
    let set = &fixture().genesis.validators;
    assert_eq!(Equivocation::kind_name(proof.kind_code()), proof.kind());
    let _ = (proof.slot(), proof.digest());
    let Ok(key) = both_backends(|b| proof.check(CHAIN, set, b)) else { return };
    let offender = proof.offender();
    assert_eq!(set.validators().get(usize::from(offender)).map(|v| v.public_key), Some(key));
    let [a, b] = proof.messages();
    assert_eq!(Slot::of(&a), Slot::of(&b), "a proof of two messages for different slots held");
    assert_ne!(a, b, "a proof of one message twice held");
    for m in [&a, &b] {
        assert_eq!(m.signer(), offender);
        assert_eq!(both_backends(|backend| m.verify(CHAIN, set, backend)), Ok(()), "{m:?}");
        signed_by_fixture(m);
    }
}

/// `wal_record`: the first byte picks the type (modulo 3), the rest is decoded as exactly one
/// `WalRecord` (what a validator reads back from its log at start), `SignState` (its signing
/// state) or `Equivocation` (evidence, as peers push it and explorers serve it). Each must be
/// canonical; the consensus messages inside a record or a signing state, and a proof, are then
/// checked against the fixture's validator set ([`check_message`], [`check_equivocation`]).
pub fn wal_record(data: &[u8]) {
    let Some((&kind, bytes)) = data.split_first() else { return };
    match kind % 3 {
        0 => match canonical::<WalRecord>(bytes) {
            Some(WalRecord::Input(Input::Message { message, .. })) => check_message(&message),
            Some(WalRecord::Input(Input::Resume { valid: Some(pol), .. })) => {
                check_message(&Message::Proposal(pol.proposal.clone()));
                for v in &pol.prevotes {
                    check_message(&Message::Vote(*v));
                }
            }
            _ => {}
        },
        1 => {
            if let Some(state) = canonical::<SignState>(bytes) {
                assert!(state.slot.step <= 2 && state.votes.len() <= SIGN_STATE_VOTES_MAX);
                for v in state.votes.iter().chain(&state.commit) {
                    check_message(&Message::Vote(*v));
                }
            }
        }
        _ => {
            if let Some(proof) = canonical::<Equivocation>(bytes) {
                check_equivocation(&proof);
            }
        }
    }
}

/// Seed inputs per target, built from the fixture: every transaction of ledger 1 and one that
/// carries a declaration of each kind (`tx_decode`, `tx_apply`); each ledger type, and the
/// inclusion proof of every transaction and the state proof of every touched account, all valid
/// (`ledger_decode`).
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let f = fixture();
    let mut out = Vec::new();
    let named = f.block.iter().enumerate().map(|(i, t)| (format!("block-tx-{i}"), t.clone()));
    for (name, t) in named.chain([("every-declaration".to_owned(), every_declaration(f))]) {
        for target in ["tx_decode", "tx_apply"] {
            out.push((target, name.clone(), t.to_bytes()));
        }
    }
    let mut ledger = |kind: u8, name: String, value: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = vec![kind];
        value(&mut bytes);
        out.push(("ledger_decode", name, bytes));
    };
    ledger(0, "header".into(), &|b| f.applied.header.encode(b));
    ledger(1, "certificate".into(), &|b| f.certificate.encode(b));
    ledger(2, "validators-1".into(), &|b| f.genesis.validators.encode(b));
    ledger(2, "validators-2".into(), &|b| f.state.validators().encode(b));
    for (i, id) in f.applied.tx_ids.iter().enumerate() {
        let branch = tx_proof(&f.applied.tx_ids, i).unwrap_or_else(|| panic!("tx {i} is in the block"));
        let proof = TxInclusionProof {
            header: f.applied.header,
            certificate: f.certificate.clone(),
            tx_id: *id,
            branch,
        };
        assert_eq!(verify_tx_inclusion(CHAIN, &f.genesis.validators, &proof, Backend::K256), Ok(()));
        ledger(4, format!("tx-proof-{i}"), &|b| proof.encode(b));
    }
    let mut touched: Vec<&Account> = f.state.accounts().filter(|a| a.last_height == 1).collect();
    touched.sort_by_key(|a| a.address);
    for (i, account) in touched.iter().enumerate() {
        ledger(3, format!("account-{i}"), &|b| account.encode(b));
        let (account, branch) =
            f.state.prove_account(&account.address).unwrap_or_else(|| panic!("account {i} exists"));
        let proof = AccountStateProof {
            header: f.applied.header,
            certificate: f.certificate.clone(),
            account,
            branch,
        };
        assert_eq!(verify_account_state(CHAIN, &f.genesis.validators, &proof, Backend::K256), Ok(()));
        ledger(5, format!("state-proof-{i}"), &|b| proof.encode(b));
    }
    out.extend(peer_seeds(f));
    out
}

/// Messages of the fixture's validators at height 1, all valid: votes of each kind and
/// proposals of ledger 1 (as [`Value`]); and a second value of the same height (one timestamp
/// later), to equivocate with.
struct Signed<'f> {
    f: &'f Fixture,
    value: Value,
    other: Value,
}

impl Signed<'_> {
    fn vote(&self, kind: VoteKind, round: u32, value: Option<Hash>, signer: u8) -> SignedVote {
        let key = &self.f.validator_keys[usize::from(signer)];
        SignedVote::sign(Vote { kind, height: 1, round, value }, CHAIN, signer, key)
    }

    fn proposal(&self, value: &Value, round: u32, valid_round: Option<u32>, signer: u8) -> SignedProposal {
        let key = &self.f.validator_keys[usize::from(signer)];
        Proposal { height: 1, round, valid_round, value: value.clone() }.sign(CHAIN, signer, key)
    }
}

/// Seeds of the peer-input targets (see [`seeds`]): frame streams of every channel, split
/// every way and refused for each reason; hellos; signed votes and proposals of every
/// validator, and refused ones; every sync message and a gossip batch; a write-ahead record of
/// every `Input` and of bodies, signing states, and an equivocation proof of each kind.
fn peer_seeds(f: &Fixture) -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let value = Value { header: f.applied.header, tx_ids: f.applied.tx_ids.clone() };
    let mut other = value.clone();
    other.header.timestamp_ms += 1;
    let s = Signed { f, value, other };
    let set = &f.genesis.validators;
    let hash = f.applied.hash;

    // consensus_message
    let mut messages = Vec::new();
    for i in 0..4u8 {
        let votes = [
            ("prevote", s.vote(VoteKind::Prevote, 0, Some(hash), i)),
            ("precommit", s.vote(VoteKind::Precommit, 0, Some(hash), i)),
            ("nil-prevote", s.vote(VoteKind::Prevote, 1, None, i)),
        ];
        for (name, v) in votes {
            messages.push((format!("{name}-{i}"), Message::Vote(v)));
        }
        messages.push((format!("proposal-{i}"), Message::Proposal(s.proposal(&s.value, 0, None, i))));
    }
    messages.push(("reproposal-2".into(), Message::Proposal(s.proposal(&s.value, 2, Some(0), 2))));
    for (name, m) in &messages {
        assert_eq!(m.verify(CHAIN, set, Backend::K256), Ok(()), "seed {name}");
        out.push(("consensus_message", name.clone(), m.to_bytes()));
    }
    let mut forged = s.vote(VoteKind::Prevote, 0, Some(hash), 0);
    forged.validator = 1;
    let mut unknown = forged;
    unknown.validator = 9;
    let mut altered = s.proposal(&s.value, 0, None, 0);
    altered.proposal.value.tx_ids.swap(0, 1);
    let refused = [
        ("refused-forged-vote", Message::Vote(forged), MessageError::BadSignature),
        ("refused-unknown-validator", Message::Vote(unknown), MessageError::UnknownValidator),
        ("refused-altered-ids", Message::Proposal(altered), MessageError::IdsMismatch),
    ];
    for (name, m, error) in refused {
        assert_eq!(m.verify(CHAIN, set, Backend::K256), Err(error), "seed {name}");
        out.push(("consensus_message", name.into(), m.to_bytes()));
    }

    // frames: every channel's payloads in one stream, fed whole, byte by byte, in mixed chunks,
    // by `push`, and under channel maxima; and streams that break.
    let mut stream = Vec::new();
    let payloads = [
        (Channel::Control, hello_payload(&ConnConfig::new(CHAIN))),
        (Channel::Control, vec![2]),
        (Channel::Consensus, messages[0].1.to_bytes()),
        (Channel::Consensus, messages[3].1.to_bytes()),
        (Channel::Gossip, encode_txs(&f.block)),
        (Channel::Sync, SyncMessage::LedgerRequest(1).encode()),
        (Channel::Sync, vec![]),
    ];
    for (channel, payload) in &payloads {
        frame::encode(*channel, payload, &mut stream).unwrap_or_else(|e| panic!("seed frame: {e}"));
    }
    let max = |m: [u16; 4]| m.iter().flat_map(|m| m.to_le_bytes()).collect::<Vec<u8>>();
    let headed = [
        ("whole", vec![0x00, 0xff]),
        ("bytewise", vec![0x00, 1]),
        ("mixed", vec![0x02, 3, 0, 0x90]),
        ("push", [vec![0x11, 7, 0x81], max([u16::MAX; 4])].concat()),
        ("channel-max", [vec![0x08, 0x85], max([u16::MAX, 100, u16::MAX, 0])].concat()),
    ];
    for (name, head) in headed {
        out.push(("frames", format!("stream-{name}"), [head, stream.clone()].concat()));
    }
    let too_large = (PAYLOAD_MAX as u32 + 1).to_be_bytes();
    let claim_max = (PAYLOAD_MAX as u32).to_be_bytes();
    let broken = [
        ("unknown-channel", [vec![0x00, 2], stream[..40].to_vec(), vec![4, 0, 0, 0, 0]].concat()),
        ("too-large", [&[0x00, 3, Channel::Sync as u8][..], &too_large, &[7; 16]].concat()),
        ("pending-4mib", [&[0x00, 0x83, Channel::Sync as u8][..], &claim_max, &[7; 1000]].concat()),
    ];
    for (name, bytes) in broken {
        out.push(("frames", format!("stream-{name}"), bytes));
    }

    // hello
    let hellos = [
        ("fixture", hello_payload(&ConnConfig::new(CHAIN))),
        ("localnet", hello_payload(&ConnConfig::new("localnet"))),
        ("longest", hello_payload(&ConnConfig::new("c".repeat(64)))),
        ("refused-version-2", [&[1, 0, 2, 4][..], CHAIN.as_bytes()].concat()),
        ("refused-short", vec![1, 0, 1]),
        ("refused-ping", vec![2]),
    ];
    for (name, bytes) in hellos {
        assert_eq!(parse_hello(&bytes).is_ok(), !name.starts_with("refused-"), "seed {name}");
        out.push(("hello", name.into(), bytes));
    }

    // Equivocations (sync_message, wal_record): one of each kind, by validators 1, 2 and 0.
    let proofs = [
        (
            "double-prevote",
            Equivocation::Votes(
                Box::new(s.vote(VoteKind::Prevote, 0, Some(hash), 1)),
                Box::new(s.vote(VoteKind::Prevote, 0, None, 1)),
            ),
        ),
        (
            "double-precommit",
            Equivocation::Votes(
                Box::new(s.vote(VoteKind::Precommit, 0, Some(hash), 2)),
                Box::new(s.vote(VoteKind::Precommit, 0, Some(s.other.id(CHAIN)), 2)),
            ),
        ),
        (
            "double-proposal",
            Equivocation::Proposals(
                Box::new(s.proposal(&s.value, 0, None, 0)),
                Box::new(s.proposal(&s.other, 0, None, 0)),
            ),
        ),
    ];
    for (name, proof) in &proofs {
        assert!(proof.check(CHAIN, set, Backend::K256).is_ok(), "seed {name}");
        out.push(("wal_record", format!("equivocation-{name}"), [&[2][..], &proof.to_bytes()].concat()));
    }

    // sync_message
    let ledger = CommittedLedger {
        header: f.applied.header,
        certificate: f.certificate.clone(),
        transactions: f.block.clone(),
    };
    let syncs = [
        ("ledger-request", SyncMessage::LedgerRequest(1)),
        ("ledger", SyncMessage::Ledger(Box::new(ledger))),
        ("fetch", SyncMessage::Fetch(f.applied.tx_ids.clone())),
        ("bodies", SyncMessage::Bodies(f.block.iter().map(Encode::to_bytes).collect())),
        ("evidence", SyncMessage::Evidence(Box::new(proofs[0].1.clone()))),
    ];
    for (name, m) in syncs {
        out.push(("sync_message", name.into(), m.encode()));
    }
    out.push(("sync_message", "gossip".into(), encode_txs(&f.block)));

    // wal_record: every input, bodies, signing states.
    let prevotes: Vec<SignedVote> = (0..3).map(|i| s.vote(VoteKind::Prevote, 0, Some(hash), i)).collect();
    let mut records = vec![
        ("start", WalRecord::Input(Input::Start { height: 1, validators: set.clone() })),
        ("message-vote", WalRecord::Input(Input::Message { from: 3, message: messages[0].1.clone() })),
        ("message-proposal", WalRecord::Input(Input::Message { from: 0, message: messages[3].1.clone() })),
        ("checked", WalRecord::Input(Input::Checked { height: 1, value: hash, valid: true, timely: false })),
        ("proposed", WalRecord::Input(Input::Proposed { height: 1, round: 0, value: s.value.clone() })),
        ("resume", WalRecord::Input(Input::Resume { height: 1, round: 2, locked: None, valid: None })),
        (
            "resume-locked",
            WalRecord::Input(Input::Resume {
                height: 1,
                round: 1,
                locked: Some((0, hash)),
                valid: Some(Box::new(Pol { proposal: s.proposal(&s.value, 0, None, 0), prevotes })),
            }),
        ),
        ("bodies", WalRecord::Bodies(caasiope_consensus::Bodies::Read(f.block.clone()))),
        ("sent", WalRecord::Sent(messages.iter().take(3).map(|(_, m)| message_digest(m)).collect())),
    ];
    for (name, kind) in [
        ("propose", TimeoutKind::Propose),
        ("prevote", TimeoutKind::Prevote),
        ("precommit", TimeoutKind::Precommit),
        ("rebroadcast", TimeoutKind::Rebroadcast),
    ] {
        records.push((name, WalRecord::Input(Input::Timeout(Timeout { kind, height: 1, round: 0 }))));
    }
    for (name, record) in records {
        out.push(("wal_record", format!("record-{name}"), [&[0][..], &record.to_bytes()].concat()));
    }
    let precommit = Message::Vote(s.vote(VoteKind::Precommit, 0, Some(hash), 3));
    let sign_states = [
        (
            "voted",
            SignState {
                slot: Slot::of(&precommit),
                digest: message_digest(&precommit),
                locked: Some((0, hash)),
                votes: vec![
                    s.vote(VoteKind::Prevote, 0, Some(hash), 3),
                    s.vote(VoteKind::Precommit, 0, Some(hash), 3),
                ],
                commit: None,
            },
        ),
        (
            "proposed",
            SignState {
                slot: Slot::of(&messages[3].1),
                digest: message_digest(&messages[3].1),
                locked: None,
                votes: vec![],
                commit: Some(s.vote(VoteKind::Precommit, 0, Some(hash), 3)),
            },
        ),
    ];
    for (name, state) in sign_states {
        out.push(("wal_record", format!("sign-state-{name}"), [&[1][..], &state.to_bytes()].concat()));
    }
    out
}

/// A transaction (not valid on the chain) that carries one declaration of each kind.
fn every_declaration(f: &Fixture) -> SignedTransaction {
    let a = address(&f.users[0]);
    let channel = caasiope_engine::PaymentChannel {
        payer: a,
        payee: address(&f.users[1]),
        currency: f.usd,
        expiry_ms: EXPIRATION_MS,
    };
    let channel_address = Declaration::PaymentChannel(channel.clone())
        .address()
        .unwrap_or_else(|| panic!("a channel has an address"));
    let mut t = tx(vec![leg(a, Currency::CAS, 1)], vec![leg(Address::timelock(1), Currency::CAS, 1)], a);
    t.declarations = vec![
        Declaration::MultiSig(
            MultiSig::new(vec![a, Address::timelock(2)], 1).unwrap_or_else(|e| panic!("{e}")),
        ),
        Declaration::HashLock { hash_type: HashType::Keccak256, hash: [3; 32] },
        Declaration::Secret { preimage: [7; 32] },
        Declaration::TimeLock { unix_seconds: 1 },
        Declaration::PaymentChannel(channel),
        Declaration::Voucher(caasiope_engine::Voucher::sign(CHAIN, channel_address, 5, &f.users[0])),
        Declaration::ValidatorUpdate(ValidatorUpdate { public_key: key(6).public_key(), weight: 0 }),
    ];
    t.message = vec![0xff; 128];
    t.sign(CHAIN, &[&f.users[0], &f.users[1]])
}
