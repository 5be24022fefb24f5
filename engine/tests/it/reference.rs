//! The reference values of docs/PROTOCOL.md §10 that concern consensus — a vote's bytes and
//! digest, its signature, a certificate — computed here and looked up in the document, so the
//! document an outside implementation is written from stays true.

use caasiope_engine::{
    Backend, Encode, Hash, SecretKey,
    ledger::{Certificate, Validator, ValidatorSet, Vote, VoteKind},
};

const PROTOCOL: &str = include_str!("../../../docs/PROTOCOL.md");

fn key(byte: u8) -> SecretKey {
    SecretKey::from_hex(&hex::encode([byte; 32])).unwrap()
}

/// `value` (hex) is written in docs/PROTOCOL.md.
#[track_caller]
fn documented(what: &str, value: &str) {
    println!("{what}: {value}");
    assert!(PROTOCOL.contains(value), "docs/PROTOCOL.md §10 lacks {what} {value}");
}

#[test]
fn vote_digest_signature_and_certificate_vectors() {
    let (a, b) = (key(1), key(2));
    let set = ValidatorSet::new(vec![
        Validator { public_key: a.public_key(), weight: 1 },
        Validator { public_key: b.public_key(), weight: 2 },
    ])
    .unwrap();
    documented("set hash", &set.hash().to_hex());
    // The ledger of §10.5.
    let ledger = Hash::from_hex("2ea31c7913bcc03ccf803edfb9f2d395e29a842156cad9566390906697289581").unwrap();
    let vote = Vote { kind: VoteKind::Precommit, height: 1, round: 0, value: Some(ledger) };
    documented("precommit bytes", &hex::encode(vote.to_bytes()));
    let digest = vote.digest("localnet");
    documented("precommit digest", &digest.to_hex());
    // The digest is chain-bound: another chain's is another.
    assert_ne!(vote.digest("other"), digest);
    let nil = Vote { kind: VoteKind::Prevote, height: 1, round: 2, value: None };
    documented("nil prevote bytes", &hex::encode(nil.to_bytes()));
    documented("nil prevote digest", &nil.digest("localnet").to_hex());
    let sig_a = vote.sign("localnet", &a);
    documented("A's signature", &hex::encode(sig_a.0));
    let mut cert = Certificate::new(0);
    cert.add("localnet", 0, &a, 1, &ledger);
    // A alone holds 1 of 3: no quorum; with B (2) it is.
    assert!(cert.verify(&set, "localnet", 1, &ledger, Backend::Libsecp256k1).is_err());
    cert.add("localnet", 1, &b, 1, &ledger);
    cert.verify(&set, "localnet", 1, &ledger, Backend::Libsecp256k1).unwrap();
    cert.verify(&set, "localnet", 1, &ledger, Backend::K256).unwrap();
    let sig_b = vote.sign("localnet", &b);
    documented("B's signature", &hex::encode(sig_b.0));
    // round u32 | n u8 | (index u8 | signature) in index order.
    let expected =
        format!("00000000 02 00{} 01{}", hex::encode(sig_a.0), hex::encode(sig_b.0)).replace(' ', "");
    assert_eq!(hex::encode(cert.to_bytes()), expected);
}
