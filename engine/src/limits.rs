//! Every bound of the protocol in one place, with compile-time checks of how they relate.
//!
//! Decoders read these before allocating, so an attacker's length field never sizes a buffer.

/// Longest chain id, in bytes (ASCII `[a-z0-9-]`).
pub const CHAIN_ID_LEN_MAX: usize = 32;
/// Longest currency symbol, in characters `[A-Z0-9]`.
pub const CURRENCY_LEN_MAX: usize = 8;
/// Longest transaction message, in bytes.
pub const MESSAGE_LEN_MAX: usize = 128;
/// Most inputs of one transaction.
pub const INPUTS_MAX: usize = 64;
/// Most outputs of one transaction.
pub const OUTPUTS_MAX: usize = 64;
/// Most declarations carried by one transaction.
pub const DECLARATIONS_MAX: usize = 32;
/// Most signatures on one transaction.
pub const SIGNATURES_MAX: usize = 32;
/// Most signers of one MultiSig declaration.
pub const MULTISIG_SIGNERS_MAX: usize = 20;
/// Deepest nesting of spend rules (a MultiSig whose signer is a MultiSig … counts each level).
pub const SPEND_DEPTH_MAX: usize = 5;
/// Most spend-rule evaluations one transaction may cause (bounds the work of nested rules).
pub const SPEND_EVALUATIONS_MAX: usize = 512;
/// Largest canonical transaction, signatures included, in bytes.
pub const TX_BYTES_MAX: usize = 32 * 1024;
/// Most transactions in one block.
pub const BLOCK_TXS_MAX: usize = 100_000;
/// Most validators in a set.
pub const VALIDATORS_MAX: usize = 128;
/// Largest voting weight of one validator (keeps every sum of weights far from overflow).
pub const VALIDATOR_WEIGHT_MAX: u64 = 1 << 40;
/// Longest Merkle branch of the transaction tree (2^32 leaves would be far past BLOCK_TXS_MAX).
pub const TX_PROOF_DEPTH_MAX: usize = 32;
/// Longest path in the state trie: one branch per nibble of a 21-byte raw address.
pub const STATE_PROOF_DEPTH_MAX: usize = 42;
/// Most distinct currencies one account may hold (bounds account size and leaf hashing).
pub const ACCOUNT_CURRENCIES_MAX: usize = 256;
/// Largest genesis file, in bytes.
pub const GENESIS_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most accounts a genesis may generate from seeds (`[[generated]]`, all entries together).
pub const GENERATED_ACCOUNTS_MAX: u64 = 16 * 1024 * 1024;
/// Longest seed of generated genesis accounts, in bytes.
pub const GENERATED_SEED_LEN_MAX: usize = 64;

const _: () = {
    assert!(CHAIN_ID_LEN_MAX <= u8::MAX as usize);
    assert!(MESSAGE_LEN_MAX <= u8::MAX as usize);
    assert!(CURRENCY_LEN_MAX <= u8::MAX as usize);
    assert!(INPUTS_MAX <= u8::MAX as usize && OUTPUTS_MAX <= u8::MAX as usize);
    assert!(DECLARATIONS_MAX <= u8::MAX as usize && SIGNATURES_MAX <= u8::MAX as usize);
    assert!(MULTISIG_SIGNERS_MAX <= u8::MAX as usize);
    // A multisig of MULTISIG_SIGNERS_MAX signers must be spendable by one transaction.
    assert!(MULTISIG_SIGNERS_MAX <= SIGNATURES_MAX);
    // The worst-case transaction fits under TX_BYTES_MAX.
    let leg = 21 + 1 + CURRENCY_LEN_MAX + 8;
    let multisig = 1 + 1 + MULTISIG_SIGNERS_MAX * 21 + 2;
    let worst = 1
        + 8
        + 1
        + DECLARATIONS_MAX * multisig
        + 2
        + (INPUTS_MAX + OUTPUTS_MAX) * leg
        + 1
        + MESSAGE_LEN_MAX
        + 21
        + 8
        + 1
        + SIGNATURES_MAX * (65 + 64);
    assert!(worst <= TX_BYTES_MAX);
    // Sums of all weights stay below u64::MAX / 3 so quorum arithmetic never overflows.
    assert!((VALIDATORS_MAX as u64) * VALIDATOR_WEIGHT_MAX < u64::MAX / 3);
    assert!(BLOCK_TXS_MAX < (1 << TX_PROOF_DEPTH_MAX));
};
