//! The shared test vectors (`shared/vectors/`), which pin compatibility with the original network.

use std::path::PathBuf;

use caasiope_engine::{
    Address, AddressType, Declaration, HashType, MultiSig, SecretKey,
    address::{decode_text, encode_text},
};
use serde_json::Value;

fn vectors() -> Value {
    // The vectors live beside the repository (../shared), or inside it when vendored.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let candidates =
        [root.join("../../shared/vectors/address32.json"), root.join("../shared/vectors/address32.json")];
    let path =
        candidates.iter().find(|p| p.exists()).expect("shared/vectors/address32.json beside the repository");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap()
}

#[test]
fn ecdsa_vectors() {
    for case in vectors()["ecdsa"].as_array().unwrap() {
        let sk = SecretKey::from_hex(s(&case["secret_hex"])).unwrap();
        assert_eq!(sk.public_key().to_hex(), s(&case["public_key_hex"]));
        assert_eq!(sk.public_key().address().to_text(), s(&case["address"]));
        let parsed: Address = s(&case["address"]).parse().unwrap();
        assert_eq!(parsed, sk.public_key().address());
        assert_eq!(parsed.kind(), AddressType::Ecdsa);
    }
}

#[test]
fn zero_body_vectors() {
    for (t, text) in vectors()["zero_body"].as_object().unwrap() {
        let mut raw = [0u8; 21];
        raw[0] = t.parse().unwrap();
        assert_eq!(encode_text(&raw), s(text));
        assert_eq!(decode_text(s(text)).unwrap(), raw);
        // Type 5 has a text form but names no account type.
        assert_eq!(s(text).parse::<Address>().is_ok(), raw[0] != 5, "type {t}");
    }
}

#[test]
fn timelock_vectors() {
    for case in vectors()["timelock"].as_array().unwrap() {
        let secs = case["unix_seconds"].as_i64().unwrap();
        let a = Address::timelock(secs);
        assert_eq!(a.to_text(), s(&case["address"]));
        assert_eq!(Declaration::TimeLock { unix_seconds: secs }.address(), Some(a));
        assert_eq!(a.timelock_seconds(), Some(secs));
    }
}

#[test]
fn multisig_vectors() {
    for case in vectors()["multisig"].as_array().unwrap() {
        let signers = case["signers"].as_array().unwrap().iter().map(|a| s(a).parse().unwrap()).collect();
        let required = case["required"].as_i64().unwrap() as i16;
        let d = Declaration::MultiSig(MultiSig::new(signers, required).unwrap());
        assert_eq!(d.address().unwrap().to_text(), s(&case["address"]));
    }
}

#[test]
fn hashlock_vectors() {
    for case in vectors()["hashlock"].as_array().unwrap() {
        let hash_type = match s(&case["hash_type"]) {
            "keccak256" => HashType::Keccak256,
            "sha256" => HashType::Sha256,
            other => panic!("unknown hash type {other}"),
        };
        let mut hash = [0u8; 32];
        hex::decode_to_slice(s(&case["hash_hex"]), &mut hash).unwrap();
        let d = Declaration::HashLock { hash_type, hash };
        assert_eq!(d.address().unwrap().to_text(), s(&case["address"]));
    }
}

#[test]
fn invalid_vectors() {
    for text in vectors()["invalid"].as_array().unwrap() {
        assert!(s(text).parse::<Address>().is_err(), "{text} accepted");
    }
}
