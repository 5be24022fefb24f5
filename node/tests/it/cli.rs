//! The `caasiope` binary, run as scripts run it: exact stdout on success; on any invalid input,
//! status 2, empty stdout and exactly one `error: ` line on stderr.

use std::{
    io::Write,
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    process::{Command, Stdio},
};

use engine::{
    Address, Currency, Declaration, Encode, HashType, SecretKey,
    tx::{Fee, Leg, SignedTransaction, TX_VERSION, Transaction},
};
use serde_json::{Value, json};

const SECRET_HEX: &str = "eebee81712a185a1fb52f30ba545e5708124d165b1ee2e27c3a0559eb28298b9";
const PUBLIC_KEY_HEX: &str = "0456a26df82d7c9a4a0dc881eae4f3bd14665c64c128997808675e868af7b53a00b63dfe5bc756582505a56470e5ad800ec2685e6f496b995812fc2d52aefa56dd";
const ECDSA_ADDRESS: &str = "qyl68tygnjx6qqwrsmynmejmc9wxlw7almv3397j";

// ---- helpers -------------------------------------------------------------------------------

/// Bytes for the binary's stdin; `None` leaves stdin empty (`/dev/null`).
type Stdin<'a> = Option<&'a [u8]>;

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary with `args`, feeding `stdin` (closed at once when `Some(&[])`, absent when
/// `None`).
fn caasiope(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_caasiope"))
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_BACKTRACE", "1")
        .spawn()
        .expect("spawn caasiope");
    let writer = child.stdin.take().map(|mut pipe| {
        let bytes = stdin.unwrap_or_default().to_vec();
        // The binary may stop reading early (oversized input): a broken pipe is expected then.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        })
    });
    let out = child.wait_with_output().expect("wait for caasiope");
    if let Some(writer) = writer {
        writer.join().expect("stdin writer");
    }
    Run {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    }
}

/// Runs a command that must succeed and returns its stdout.
fn ok(args: &[&str], stdin: Option<&[u8]>) -> String {
    let run = caasiope(args, stdin);
    assert_eq!(run.code, Some(0), "{args:?}: {run:?}");
    assert_eq!(run.stderr, "", "{args:?}");
    run.stdout
}

/// Runs a command that must succeed and returns its stdout as JSON.
fn ok_json(args: &[&str], stdin: Option<&[u8]>) -> Value {
    let stdout = ok(args, stdin);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

/// Runs a command that must fail by the contract, and returns its one error line.
fn fails(args: &[&str], stdin: Option<&[u8]>) -> String {
    let run = caasiope(args, stdin);
    assert_eq!(run.code, Some(2), "{args:?}: {run:?}");
    assert_eq!(run.stdout, "", "{args:?}");
    assert!(run.stderr.starts_with("error: "), "{args:?}: {run:?}");
    assert!(
        run.stderr.ends_with('\n') && run.stderr.matches('\n').count() == 1,
        "{args:?}: not exactly one line: {:?}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked") && !run.stderr.contains("\x1b["), "{args:?}: {:?}", run.stderr);
    run.stderr
}

fn vectors() -> Value {
    // The vectors live beside the repository (../shared), or inside it when vendored.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path =
        [root.join("../../shared/vectors/address32.json"), root.join("../shared/vectors/address32.json")]
            .into_iter()
            .find(|p| p.exists())
            .expect("shared/vectors/address32.json beside the repository");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

fn vector_key() -> SecretKey {
    SecretKey::from_hex(SECRET_HEX).unwrap()
}

/// A transaction touching every field kind, signed by the vector key on `chain_id`.
fn signed_tx(chain_id: &str) -> SignedTransaction {
    let key = vector_key();
    let sender = key.public_key().address();
    Transaction {
        version: TX_VERSION,
        expiration_ms: 1_700_000_000_000,
        declarations: vec![Declaration::HashLock { hash_type: HashType::Sha256, hash: [0x42; 32] }],
        inputs: vec![Leg { address: sender, currency: Currency::CAS, amount: 150_000_000 }],
        outputs: vec![Leg {
            address: Address::timelock(1_546_300_800),
            currency: Currency::CAS,
            amount: 150_000_000,
        }],
        message: b"invoice 42".to_vec(),
        fee: Fee { payer: sender, amount: 1_000 },
    }
    .sign(chain_id, &[&key])
}

/// Deterministic pseudo-random bytes (xorshift64), for garbage input.
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

// ---- success paths -------------------------------------------------------------------------

#[test]
fn key_inspect_gives_the_vector_public_key_and_address() {
    for case in vectors()["ecdsa"].as_array().unwrap() {
        let stdout = ok(&["key", "inspect", "--secret-hex", s(&case["secret_hex"])], None);
        assert_eq!(
            stdout,
            format!(
                "{{\n  \"public_key\": \"{}\",\n  \"address\": \"{}\"\n}}\n",
                s(&case["public_key_hex"]),
                s(&case["address"])
            )
        );
    }
}

#[test]
fn key_new_writes_a_private_key_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("validator.key");
    let path_arg = path.to_str().unwrap();

    let stdout = ok(&["key", "new", "--out", path_arg], None);
    let address = stdout.strip_suffix('\n').expect("one line");
    assert!(!address.contains('\n'));
    assert!(address.parse::<Address>().is_ok(), "{address}");
    assert!(address.starts_with("qy"), "an ECDSA address: {address}");

    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    let content = std::fs::read_to_string(&path).unwrap();
    let secret_hex = content.strip_suffix('\n').expect("newline-terminated");
    assert_eq!(secret_hex.len(), 64);
    assert!(
        secret_hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "lowercase hex: {secret_hex}"
    );
    let info = ok_json(&["key", "inspect", "--secret-hex", secret_hex], None);
    assert_eq!(info["address"], address);

    // A second key to the same path is refused and the first key survives.
    let err = fails(&["key", "new", "--out", path_arg], None);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), content);

    // Two keys are different keys.
    let other = dir.path().join("other.key");
    let second = ok(&["key", "new", "--out", other.to_str().unwrap()], None);
    assert_ne!(second, stdout);
}

#[test]
fn cert_new_and_init_write_an_identity_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node");
    let node_arg = node.to_str().unwrap();
    let identity = ok(&["cert", "new", "--dir", node_arg, "--days", "30"], None);
    let identity = identity.strip_suffix('\n').expect("one line");
    assert_eq!(identity.len(), 64);
    assert!(identity.bytes().all(|b| b.is_ascii_hexdigit()), "{identity}");
    let mode = std::fs::metadata(node.join("node.key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    assert!(
        std::fs::read_to_string(node.join("node.crt")).unwrap().starts_with("-----BEGIN CERTIFICATE-----")
    );
    let err = fails(&["cert", "new", "--dir", node_arg], None);
    assert!(err.contains("already exists"), "{err}");
    for days in ["0", "3651", "x"] {
        fails(&["cert", "new", "--dir", dir.path().join("d").to_str().unwrap(), "--days", days], None);
    }

    let full = dir.path().join("full");
    let report = ok_json(&["init", "--dir", full.to_str().unwrap()], None);
    assert_eq!(report["identity"].as_str().unwrap().len(), 64);
    assert_ne!(report["identity"], identity);
    assert!(s(&report["validator_address"]).parse::<Address>().is_ok());
    for file in ["node.crt", "node.key", "validator.key"] {
        assert!(full.join(file).is_file(), "{file}");
    }
    // A directory that already has an identity is left alone.
    let err = fails(&["init", "--dir", node_arg], None);
    assert!(err.contains("already exists"), "{err}");
    assert!(!node.join("validator.key").exists());
}

#[test]
fn bench_net_reports_tls_against_plain_tcp() {
    let report = ok_json(&["bench", "net", "--messages", "2000", "--rounds", "2", "--json"], None);
    for size in ["small", "small_unbatched", "large"] {
        for path in ["tls", "plain_tcp"] {
            assert!(report[size][path]["msgs_per_s"].as_f64().unwrap() > 0.0, "{size} {path}");
            assert!(report[size][path]["cpu_ns_per_message"].as_f64().unwrap() > 0.0, "{size} {path}");
        }
        assert!(report[size]["ratio"].as_f64().unwrap() > 0.0);
        assert_eq!(report[size]["ratios"].as_array().unwrap().len(), 2, "one ratio per round");
    }
    assert_eq!(report["small"]["messages"], 2000);
    assert_eq!(report["small"]["messages_per_frame"], 64, "batched as gossip is");
    assert_eq!(report["small_unbatched"]["messages_per_frame"], 1);
    assert!(report["k256_verify_ns"].as_f64().unwrap() > 0.0);
    assert!(report["transport"] == "epoll" || report["transport"] == "io_uring");
    if report["transport"] == "io_uring" {
        assert!(report["vs_epoll"]["small_ratio"].as_f64().unwrap() > 0.0, "{report}");
    }
    let epoll = ok_json(
        &["bench", "net", "--transport", "epoll", "--messages", "1000", "--rounds", "1", "--json"],
        None,
    );
    assert_eq!(epoll["transport"], "epoll");
    assert!(epoll.get("vs_epoll").is_none());
    fails(&["bench", "net", "--transport", "kqueue"], None);
    fails(&["bench", "net", "--messages", "10"], None);
    fails(&["bench", "net", "--rounds", "0"], None);
}

#[test]
fn address_decode_gives_type_and_body() {
    let v = vectors();
    let zero = "0".repeat(40);
    for case in v["ecdsa"].as_array().unwrap() {
        assert_eq!(
            ok(&["address", "decode", s(&case["address"])], None),
            "{\n  \"type\": \"ecdsa\",\n  \"body_hex\": \"fe8eb222723680070e1b24f7996f0571beef77fb\"\n}\n"
        );
    }
    for (byte, name) in [(1, "ecdsa"), (2, "multisig"), (3, "hashlock")] {
        let address = s(&v["zero_body"][byte.to_string()]);
        assert_eq!(
            ok(&["address", "decode", address], None),
            format!("{{\n  \"type\": \"{name}\",\n  \"body_hex\": \"{zero}\"\n}}\n")
        );
        // Upper case is the same address.
        let upper = address.to_ascii_uppercase();
        assert_eq!(ok(&["address", "decode", &upper], None), ok(&["address", "decode", address], None));
    }
    for (address, body_hex, unix_seconds) in [
        (s(&v["zero_body"]["4"]), zero, 0),
        ("qsszkj5hqqqqqqqqqqqqqqqqqqqqqqqqqqnzqvg5", format!("80ad2a5c{}", "0".repeat(32)), 1_546_300_800),
    ] {
        assert_eq!(
            ok(&["address", "decode", address], None),
            format!(
                "{{\n  \"type\": \"timelock\",\n  \"body_hex\": \"{body_hex}\",\n  \"unix_seconds\": {unix_seconds}\n}}\n"
            )
        );
    }
    // A payment channel address (type 0x06).
    let channel = Address::new(engine::AddressType::PaymentChannel, [0xab; 20]).to_text();
    assert_eq!(
        ok_json(&["address", "decode", &channel], None),
        json!({"type": "channel", "body_hex": "ab".repeat(20)})
    );
}

#[test]
fn address_multisig_gives_the_vector_address_in_any_signer_order() {
    for case in vectors()["multisig"].as_array().unwrap() {
        let required = case["required"].to_string();
        let mut signers: Vec<&str> = case["signers"].as_array().unwrap().iter().map(s).collect();
        for _ in 0..signers.len() {
            let mut args = vec!["address", "multisig", "--required", &required];
            for signer in &signers {
                args.extend(["--signer", signer]);
            }
            assert_eq!(ok(&args, None), format!("{}\n", s(&case["address"])));
            signers.rotate_left(1);
        }
    }
    assert_eq!(
        ok(
            &[
                "address",
                "multisig",
                "--required",
                "2",
                "--signer",
                "qyl68tygnjx6qqwrsmynmejmc9wxlw7almv3397j",
                "--signer",
                "qyaj20aksyvxlfmznyjdqzxrvvf0w7ca7mamwzll",
                "--signer",
                "qymcnhdqy2qth0ls0pel7ln4gmps2vkxcaq78kcn",
            ],
            None
        ),
        "qgtjx6dskzfjq4kjkhlfymvnqdq0qk5z2cp729j3\n"
    );
}

#[test]
fn address_hashlock_gives_the_vector_address() {
    for case in vectors()["hashlock"].as_array().unwrap() {
        assert_eq!(s(&case["hash_type"]), "keccak256");
        assert_eq!(
            ok(&["address", "hashlock", "--keccak256", s(&case["hash_hex"])], None),
            format!("{}\n", s(&case["address"]))
        );
    }
    let hash = "290decd9548b62a8d60345a988386fc84ba6bc95484008f6362f93160ef3e563";
    assert_eq!(
        ok(&["address", "hashlock", "--keccak256", hash], None),
        "qvmcvgqu7j2ladufdwj5uk73m5kgq80nw4cavmcy\n"
    );
    // The same hash under SHA-256 is another lock, with its own address.
    let expected = Declaration::HashLock { hash_type: HashType::Sha256, hash: [0x29; 32] }.address().unwrap();
    let sha = ok(&["address", "hashlock", "--sha256", &"29".repeat(32)], None);
    assert_eq!(sha, format!("{expected}\n"));
    assert!(sha.starts_with("qv"));
    assert_ne!(
        ok(&["address", "hashlock", "--sha256", hash], None),
        "qvmcvgqu7j2ladufdwj5uk73m5kgq80nw4cavmcy\n"
    );
}

#[test]
fn address_timelock_gives_the_vector_addresses() {
    for case in vectors()["timelock"].as_array().unwrap() {
        let seconds = case["unix_seconds"].to_string();
        assert_eq!(
            ok(&["address", "timelock", "--unix-seconds", &seconds], None),
            format!("{}\n", s(&case["address"]))
        );
    }
    assert_eq!(
        ok(&["address", "timelock", "--unix-seconds", "0"], None),
        "qsqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqxdpx0l\n"
    );
    assert_eq!(
        ok(&["address", "timelock", "--unix-seconds", "1546300800"], None),
        "qsszkj5hqqqqqqqqqqqqqqqqqqqqqqqqqqnzqvg5\n"
    );
    // Negative lock times are valid (and long past), as in the engine.
    assert_eq!(
        ok(&["address", "timelock", "--unix-seconds", "-1"], None),
        format!("{}\n", Address::timelock(-1))
    );
}

#[test]
fn tx_decode_prints_the_transaction_and_its_id() {
    let stx = signed_tx("localnet");
    let bytes = stx.to_bytes();

    let decoded = ok_json(&["tx", "decode"], Some(&bytes));
    assert_eq!(decoded, serde_json::to_value(&stx).unwrap());
    assert!(decoded.get("id").is_none(), "no id without a chain");
    assert_eq!(decoded["version"], 1);
    assert_eq!(decoded["expiration_ms"], 1_700_000_000_000_i64);
    assert_eq!(
        decoded["declarations"],
        json!([{"type": "hashlock", "hash_type": "sha256", "hash": "42".repeat(32)}])
    );
    assert_eq!(
        decoded["inputs"],
        json!([{"address": ECDSA_ADDRESS, "currency": "CAS", "amount": 150_000_000}])
    );
    assert_eq!(
        decoded["outputs"],
        json!([{
            "address": "qsszkj5hqqqqqqqqqqqqqqqqqqqqqqqqqqnzqvg5",
            "currency": "CAS",
            "amount": 150_000_000
        }])
    );
    assert_eq!(decoded["message"], hex::encode("invoice 42"));
    assert_eq!(decoded["fee"], json!({"payer": ECDSA_ADDRESS, "amount": 1_000}));
    let signatures = decoded["signatures"].as_array().unwrap();
    assert_eq!(signatures.len(), 1);
    assert_eq!(signatures[0]["public_key"], PUBLIC_KEY_HEX);
    assert_eq!(signatures[0]["signature"], hex::encode(stx.signatures[0].signature.0));

    let with_id = ok_json(&["tx", "decode", "--chain-id", "localnet"], Some(&bytes));
    let id = stx.id("localnet").to_hex();
    assert_eq!(with_id["id"], id.as_str());
    let mut expected = serde_json::to_value(&stx).unwrap();
    expected["id"] = json!(id);
    assert_eq!(with_id, expected);

    // The id depends on the chain; the transaction does not.
    let other = ok_json(&["tx", "decode", "--chain-id", "testnet-2"], Some(&bytes));
    assert_eq!(other["id"], stx.id("testnet-2").to_hex().as_str());
    assert_ne!(other["id"], with_id["id"]);

    // Hex text, line-wrapped and with surrounding whitespace, decodes to the same document.
    let wrapped: Vec<String> =
        hex::encode(&bytes).as_bytes().chunks(60).map(|c| String::from_utf8(c.to_vec()).unwrap()).collect();
    let text = format!("  {}\n\n", wrapped.join("\n"));
    assert_eq!(
        ok(&["tx", "decode", "--hex", "--chain-id", "localnet"], Some(text.as_bytes())),
        ok(&["tx", "decode", "--chain-id", "localnet"], Some(&bytes))
    );
}

#[test]
fn help_and_version_succeed() {
    for args in [
        &["--help"][..],
        &["help"],
        &["key", "--help"],
        &["address", "hashlock", "--help"],
        &["tx", "decode", "--help"],
    ] {
        let stdout = ok(args, None);
        assert!(stdout.contains("Usage: caasiope"), "{args:?}: {stdout}");
    }
    assert_eq!(ok(&["--version"], None), format!("caasiope {}\n", env!("CARGO_PKG_VERSION")));
}

// ---- failures ------------------------------------------------------------------------------

#[test]
fn invalid_addresses_are_refused() {
    for invalid in vectors()["invalid"].as_array().unwrap() {
        fails(&["address", "decode", s(invalid)], None);
        fails(&["address", "multisig", "--required", "1", "--signer", s(invalid)], None);
    }
}

#[test]
fn invalid_inputs_fail_with_one_error_line() {
    let hash = "290decd9548b62a8d60345a988386fc84ba6bc95484008f6362f93160ef3e563";
    let dir = tempfile::tempdir().unwrap();
    let missing_dir_key = dir.path().join("no/such/dir/k.key");
    let stx = signed_tx("localnet").to_bytes();
    let truncated = &stx[..stx.len() - 1];
    let mut trailing = stx.clone();
    trailing.push(0);
    let oversized = vec![0u8; 40 * 1024];
    let oversized_hex = hex::encode(&oversized);
    let huge_hex = vec![b'0'; 200 * 1024];
    // A signature count of 2 followed by one signature.
    let mut missing_signature = stx.clone();
    let count_at = stx.len() - (65 + 64) - 1;
    missing_signature[count_at] = 2;

    let (zz32, zero32, ff32, ab33) = ("zz".repeat(32), "00".repeat(32), "ff".repeat(32), "ab".repeat(33));
    let (hash_g, hash_long, a33) = (hash.replace('2', "g"), format!("{hash}00"), "a".repeat(33));
    let garbage_long = garbage(1000, 0x9e37_79b9_7f4a_7c15);
    let garbage_short = garbage(7, 42);

    let cases: Vec<(Vec<&str>, Stdin<'_>)> = vec![
        // Addresses.
        (vec!["address", "decode", "QYL68TYGNJX6QQWRSMYNMEJMC9WXLW7ALMV3397j"], None),
        (vec!["address", "decode", "qyl68tygnjx6qqwrsmynmejmc9wxlw7almv3397b"], None),
        (vec!["address", "decode", ""], None),
        (vec!["address", "decode", "é"], None),
        (vec!["address", "decode", "line\nbreak"], None),
        // A valid checksum over an unknown type byte (0x05).
        (vec!["address", "decode", "q5qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqrw0rj6"], None),
        (vec!["address", "decode"], None),
        (vec!["address", "decode", ECDSA_ADDRESS, ECDSA_ADDRESS], None),
        // Keys.
        (vec!["key", "inspect", "--secret-hex", "zz"], None),
        (vec!["key", "inspect", "--secret-hex", &zz32], None),
        (vec!["key", "inspect", "--secret-hex", &zero32], None),
        (vec!["key", "inspect", "--secret-hex", &ff32], None),
        (vec!["key", "inspect", "--secret-hex", &ab33], None),
        (vec!["key", "inspect"], None),
        (vec!["key", "new"], None),
        (vec!["key", "new", "--out", missing_dir_key.to_str().unwrap()], None),
        // The directory itself exists: it is not overwritten either.
        (vec!["key", "new", "--out", dir.path().to_str().unwrap()], None),
        // MultiSig.
        (vec!["address", "multisig", "--signer", ECDSA_ADDRESS], None),
        (vec!["address", "multisig", "--required", "0", "--signer", ECDSA_ADDRESS], None),
        (vec!["address", "multisig", "--required", "2", "--signer", ECDSA_ADDRESS], None),
        (vec!["address", "multisig", "--required", "-1", "--signer", ECDSA_ADDRESS], None),
        (vec!["address", "multisig", "--required", "x", "--signer", ECDSA_ADDRESS], None),
        (vec!["address", "multisig", "--required", "99999", "--signer", ECDSA_ADDRESS], None),
        (vec!["address", "multisig", "--required", "1"], None),
        (
            vec![
                "address",
                "multisig",
                "--required",
                "1",
                "--signer",
                ECDSA_ADDRESS,
                "--signer",
                ECDSA_ADDRESS,
            ],
            None,
        ),
        // HashLock.
        (vec!["address", "hashlock", "--keccak256", hash, "--sha256", hash], None),
        (vec!["address", "hashlock"], None),
        (vec!["address", "hashlock", "--keccak256", "zz"], None),
        (vec!["address", "hashlock", "--keccak256", &hash[2..]], None),
        (vec!["address", "hashlock", "--sha256", &hash_long], None),
        (vec!["address", "hashlock", "--sha256", &hash_g], None),
        // TimeLock.
        (vec!["address", "timelock"], None),
        (vec!["address", "timelock", "--unix-seconds", "soon"], None),
        (vec!["address", "timelock", "--unix-seconds", "9223372036854775808"], None),
        // Command structure.
        (vec![], None),
        (vec!["frobnicate"], None),
        (vec!["key"], None),
        (vec!["key", "frobnicate"], None),
        (vec!["address", "encode"], None),
        (vec!["tx"], None),
        (vec!["--nope"], None),
        (vec!["address", "timelock", "--unix-seconds", "0", "--nope"], None),
        // Transactions.
        (vec!["tx", "decode"], Some(&[])),
        (vec!["tx", "decode"], None),
        (vec!["tx", "decode", "--hex"], Some(b" \n\t")),
        (vec!["tx", "decode"], Some(&garbage_long)),
        (vec!["tx", "decode"], Some(&garbage_short)),
        (vec!["tx", "decode"], Some(truncated)),
        (vec!["tx", "decode"], Some(&trailing)),
        (vec!["tx", "decode"], Some(&missing_signature)),
        (vec!["tx", "decode"], Some(&oversized)),
        (vec!["tx", "decode", "--hex"], Some(oversized_hex.as_bytes())),
        (vec!["tx", "decode", "--hex"], Some(&huge_hex)),
        (vec!["tx", "decode", "--hex"], Some(b"zz")),
        (vec!["tx", "decode", "--hex"], Some(b"abc")),
        (vec!["tx", "decode", "--chain-id", "Local Net"], Some(&stx)),
        (vec!["tx", "decode", "--chain-id", ""], Some(&stx)),
        (vec!["tx", "decode", "--chain-id", &a33], Some(&stx)),
        (vec!["tx", "decode", "--chain-id"], Some(&stx)),
    ];
    for (args, stdin) in cases {
        fails(&args, stdin);
    }
}

#[test]
fn error_lines_say_what_is_wrong() {
    let hash = "290decd9548b62a8d60345a988386fc84ba6bc95484008f6362f93160ef3e563";
    let cases: Vec<(Vec<&str>, Stdin<'_>, &str)> = vec![
        (vec!["address", "decode", "qyl68tygnjx6qqwrsmynmejmc9wxlw7almv3397k"], None, "checksum"),
        (vec!["address", "decode", "QYl68tygnjx6qqwrsmynmejmc9wxlw7almv3397j"], None, "mixed"),
        (vec!["address", "hashlock", "--keccak256", hash, "--sha256", hash], None, "cannot be used with"),
        (vec!["address", "multisig", "--signer", ECDSA_ADDRESS], None, "--required"),
        (vec!["address", "multisig", "--required", "0", "--signer", ECDSA_ADDRESS], None, "required"),
        (vec!["frobnicate"], None, "unrecognized subcommand 'frobnicate'"),
        (vec!["key"], None, "requires a subcommand"),
        (vec!["tx", "decode"], Some(&[]), "no transaction"),
        (vec!["tx", "decode"], Some(&[0u8; 40 * 1024]), "over the limit"),
        (vec!["tx", "decode", "--chain-id", "Local Net"], Some(&[]), "chain id"),
    ];
    for (args, stdin, needle) in cases {
        let line = fails(&args, stdin);
        assert!(line.contains(needle), "{args:?}: {line:?} lacks {needle:?}");
        assert!(!line.starts_with("error: error:"), "{line:?}");
    }
}

#[test]
fn demo_applies_certifies_and_conserves() {
    for backend in ["k256", "libsecp256k1"] {
        let out = ok_json(&["demo", "--json", "--backend", backend], None);
        assert_eq!(out["conservation"], "ok");
        assert_eq!(out["account_proof"], "verified");
        let ledgers = out["ledgers"].as_array().unwrap();
        assert_eq!(ledgers.len(), 6);
        for (i, l) in ledgers.iter().enumerate() {
            assert_eq!(l["header"]["height"], i as u64 + 1);
            assert_eq!(l["certificate_signers"], 1);
        }
        // Every currency sums to zero across the listed accounts (which are all that hold any).
        let mut sums = std::collections::BTreeMap::<String, i128>::new();
        for (_, account) in out["balances"].as_object().unwrap() {
            for (c, v) in account["balances"].as_object().unwrap() {
                *sums.entry(c.clone()).or_default() += i128::from(v.as_i64().unwrap());
            }
        }
        assert!(sums.values().all(|s| *s == 0), "{sums:?}");
    }
    // Deterministic: the same ledgers every run, whatever the backend.
    let a = ok_json(&["demo", "--json", "--backend", "k256"], None);
    let b = ok_json(&["demo", "--json"], None);
    assert_eq!(a["ledgers"], b["ledgers"]);
    assert!(fails(&["demo", "--backend", "openssl"], None).contains("openssl"));
}

// ---- single-validator mode ------------------------------------------------------------------

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Node {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Node {
    fn start(config: &std::path::Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_caasiope"))
            .args(["run", "--config", config.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn caasiope run");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// Waits until the committed ledgers printed so far hold `txs` transactions in all.
    fn wait_for_txs(&self, txs: usize, seen: &mut usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while *seen < txs {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                .expect("ledgers with the submitted transactions in time");
            // "ledger H txs N hash … state …"
            let n: usize = line.split_whitespace().nth(3).and_then(|n| n.parse().ok()).unwrap_or(0);
            *seen += n;
        }
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "caasiope run exited with {status}");
    }
}

fn submit_tx(port: u16, tx: &SignedTransaction) -> Run {
    caasiope(&["submit", "--to", &format!("127.0.0.1:{port}")], Some(&tx.to_bytes()))
}

#[test]
fn single_validator_commits_submissions_and_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let validator = SecretKey::from_bytes(&[41; 32]).unwrap();
    let alice = SecretKey::from_bytes(&[42; 32]).unwrap();
    let bob = SecretKey::from_bytes(&[43; 32]).unwrap().public_key().address();
    let genesis = engine::genesis::Genesis::new(engine::genesis::GenesisConfig {
        generated: vec![],
        chain_id: "single".into(),
        timestamp_ms: now_ms() - 60_000,
        min_fee: 10,
        max_ttl_ms: 3_600_000,
        fee_account: bob,
        governance: bob,
        validators: vec![engine::ledger::Validator { public_key: validator.public_key(), weight: 1 }],
        currencies: vec![engine::genesis::CurrencySpec {
            symbol: Currency::CAS,
            issuer: Address::timelock(0),
        }],
        declarations: vec![],
        balances: vec![engine::genesis::BalanceSpec {
            address: alice.public_key().address(),
            currency: Currency::CAS,
            amount: 1_000_000,
        }],
    })
    .unwrap();
    std::fs::write(dir.path().join("genesis.toml"), genesis.to_toml()).unwrap();
    std::fs::write(dir.path().join("validator.key"), hex::encode(validator.to_bytes())).unwrap();
    let port = free_port();
    let config = dir.path().join("validator.toml");
    std::fs::write(
        &config,
        format!(
            "role = \"validator\"\ndata_dir = \"data\"\ngenesis = \"genesis.toml\"\nvalidator_key = \"validator.key\"\n\
             block_interval_ms = 100\nsubmit_listen = \"127.0.0.1:{port}\"\n"
        ),
    )
    .unwrap();
    let transfer_until = |amount: i64, expiration_ms: i64| {
        Transaction {
            version: TX_VERSION,
            expiration_ms,
            declarations: vec![],
            inputs: vec![Leg { address: alice.public_key().address(), currency: Currency::CAS, amount }],
            outputs: vec![Leg { address: bob, currency: Currency::CAS, amount }],
            message: vec![],
            fee: Fee { payer: alice.public_key().address(), amount: 10 },
        }
        .sign("single", &[&alice])
    };
    let transfer = |amount: i64| transfer_until(amount, now_ms() + 600_000);
    let wait_port = || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "submit port never opened");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };

    let node = Node::start(&config);
    wait_port();
    let mut seen = 0;
    let sent: Vec<_> = [100, 200, 300].map(transfer).into();
    for tx in &sent {
        let out = submit_tx(port, tx);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(out.stdout.trim(), tx.id("single").to_hex());
    }
    let garbage = caasiope(&["submit", "--to", &format!("127.0.0.1:{port}")], Some(b"not a transaction"));
    assert_eq!(garbage.code, Some(2));
    assert!(garbage.stderr.starts_with("error: rejected"), "{}", garbage.stderr);
    node.wait_for_txs(3, &mut seen);
    // The port answers with the admission's verdict, as the API does: a transaction already
    // committed, or expired, is refused with its reason and the command exits 2.
    let again = submit_tx(port, &sent[0]);
    assert_eq!(again.code, Some(2), "a committed transaction submitted again: {}", again.stdout);
    assert!(again.stderr.starts_with("error: rejected"), "{}", again.stderr);
    let expired = submit_tx(port, &transfer_until(500, now_ms() - 1_000));
    assert_eq!(expired.code, Some(2), "an expired transaction: {}", expired.stdout);
    assert!(expired.stderr.contains("expired"), "{}", expired.stderr);
    node.stop();

    let data = dir.path().join("data");
    let report = ok_json(&["db", "verify", "--dir", data.to_str().unwrap()], None);
    assert_eq!(report["tx_count"], 3);
    let height = report["heights_checked"].as_u64().unwrap();
    assert!(height >= 2, "{report}");

    // Restarted, it resumes from its last ledger and keeps committing.
    let node = Node::start(&config);
    wait_port();
    let tx = transfer(400);
    assert_eq!(submit_tx(port, &tx).code, Some(0));
    let mut seen = 0;
    node.wait_for_txs(1, &mut seen);
    node.stop();
    let report = ok_json(&["db", "verify", "--dir", data.to_str().unwrap()], None);
    assert_eq!(report["tx_count"], 4);
    assert!(report["heights_checked"].as_u64().unwrap() > height);

    // A snapshot of the store restores into a new one at the same ledger, which verifies.
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let genesis = path("genesis.toml");
    let taken = ok_json(&["db", "snapshot", "--dir", data.to_str().unwrap(), "--out", &path("snap")], None);
    let head = report["heights_checked"].as_u64().unwrap() - 1;
    assert_eq!(taken["height"].as_u64(), Some(head), "{taken}");
    assert_eq!(taken["ledger_hash"], report["head_hash"]);
    let trust = format!("{head}:{}", s(&taken["ledger_hash"]));
    // `db restore` of snapshot file FROM into DIR, with the genesis and, if given, a pin.
    let restore = |from: &str, into: &str, trust: Option<&str>| -> Vec<String> {
        let mut args = ["db", "restore", "--from", &path(from), "--dir", &path(into), "--genesis", &genesis]
            .map(str::to_owned)
            .to_vec();
        args.extend(trust.map(|t| ["--trust".to_owned(), t.to_owned()]).into_iter().flatten());
        args
    };
    let args = restore("snap", "restored", Some(&trust));
    let restored = ok_json(&args.iter().map(String::as_str).collect::<Vec<_>>(), None);
    assert_eq!(restored["ledger_hash"], taken["ledger_hash"]);
    assert_eq!(restored["accounts"], taken["accounts"]);
    let check = ok_json(&["db", "verify", "--dir", &path("restored")], None);
    assert_eq!(check["head_hash"], report["head_hash"]);
    assert_eq!(check["first_kept"].as_u64(), Some(head));
    // What is refused, with its reason.
    let again = fails(&["db", "snapshot", "--dir", data.to_str().unwrap(), "--out", &path("snap")], None);
    assert!(again.contains("exists"), "{again}");
    let pinned = format!("{head}:{}", "ab".repeat(32));
    std::fs::write(path("cut"), &std::fs::read(path("snap")).unwrap()[..100]).unwrap();
    for (from, into, trust, says) in [
        ("snap", "restored", None, "already holds a store"),
        ("snap", "other", Some(pinned.as_str()), "not the trusted ledger"),
        ("snap", "other", Some("7"), "HEIGHT:HASH"),
        ("cut", "other", None, "error: snapshot:"),
    ] {
        let args = restore(from, into, trust);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(&args, None);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert!(!dir.path().join("other").exists(), "a refused restore left its directory");
}

/// `bench pipeline` over a generated genesis of 100,000 accounts (a few lines of TOML), both
/// ends of each transfer drawn over all of them or the hot set: everything commits, the same
/// figures as ever are reported, and a share outside 0 to 1 is refused.
#[test]
fn bench_pipeline_runs_on_a_generated_state() {
    let run = caasiope(
        &[
            "bench",
            "pipeline",
            "--txs",
            "2000",
            "--accounts",
            "100000",
            "--hot-share",
            "0.3",
            "--block-txs",
            "500",
        ],
        None,
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let r: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(r["committed"], 2000, "{r}");
    assert_eq!(r["accounts"], 100_000);
    assert_eq!(r["hot_share"], 0.3);
    assert!(r["ratio"].as_f64().unwrap() > 0.0 && r["ledgers"].as_u64().unwrap() >= 4, "{r}");
    for bad in ["1.5", "-0.1", "half"] {
        let share = format!("--hot-share={bad}");
        let run = caasiope(&["bench", "pipeline", "--txs", "10", "--accounts", "10", &share], None);
        assert_eq!(run.code, Some(2), "{bad}: {}", run.stderr);
        assert!(run.stderr.contains("0 to 1"), "{}", run.stderr);
    }
}
