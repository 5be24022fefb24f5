//! Generated genesis accounts: `count` funded ECDSA accounts whose keys follow from a public
//! seed, so a test or benchmark chain of millions of accounts fits in a few lines of genesis.
//!
//! Key `i` (from 0) of seed `s` is the scalar `k₀ + i mod n`, with
//! `k₀ = SHA-256("caasiope-generated/1" ‖ s) mod n` (big-endian) and `n` the secp256k1 group
//! order; its account is the ECDSA address of its public key (PROTOCOL.md §9). Consecutive
//! scalars make consecutive public keys one point addition apart, so the addresses of a range
//! cost an addition, a share of one batched inversion and a Keccak each instead of a scalar
//! multiplication — ten million in seconds on all cores. Anyone knowing the seed holds every
//! key: such accounts belong on test and benchmark chains only.

use k256::{
    AffinePoint, ProjectivePoint, Scalar, U256,
    elliptic_curve::{BatchNormalize, ops::Reduce, sec1::ToEncodedPoint},
};
use rayon::prelude::*;

use crate::{address::Address, keys::SecretKey};

/// Domain prefix of the seed hash.
const DOMAIN: &[u8] = b"caasiope-generated/1";
/// Keys derived from one scalar multiplication (one parallel task).
const TASK: u64 = 16_384;
/// Points normalized by one batched inversion.
const BATCH: usize = 1_024;

fn first_scalar(seed: &str) -> Scalar {
    let mut preimage = Vec::with_capacity(DOMAIN.len() + seed.len());
    preimage.extend_from_slice(DOMAIN);
    preimage.extend_from_slice(seed.as_bytes());
    <Scalar as Reduce<U256>>::reduce(U256::from_be_slice(&crate::hash::sha256(&preimage)))
}

/// Whether keys `0..count` of `seed` are all valid (none is the zero scalar). Fails for about
/// one seed in 2²²⁸ at the largest count: the genesis then names another seed.
pub fn seed_covers(seed: &str, count: u64) -> bool {
    let k0 = first_scalar(seed);
    if bool::from(k0.is_zero()) {
        return false;
    }
    // k₀ + i ≡ 0 exactly at i = n − k₀.
    let gap: [u8; 32] = (-k0).to_bytes().into();
    let high_zero = gap[..24].iter().all(|&b| b == 0);
    let low = u64::from_be_bytes(gap[24..].try_into().unwrap_or([0xff; 8]));
    !(high_zero && low < count)
}

/// Key `index` of `seed` (`None` only when it is the zero scalar; see [`seed_covers`]).
pub fn generated_key(seed: &str, index: u64) -> Option<SecretKey> {
    let scalar = first_scalar(seed) + Scalar::from(index);
    SecretKey::from_bytes(&scalar.to_bytes().into()).ok()
}

/// The addresses of keys `start..start + count` of `seed`, in index order, derived on the
/// global rayon pool. A zero key (a seed [`seed_covers`] refuses) yields no address, so the
/// result is shorter by one.
pub fn generated_addresses(seed: &str, start: u64, count: u64) -> Vec<Address> {
    let k0 = first_scalar(seed);
    let end = start.saturating_add(count);
    let tasks = count.div_ceil(TASK);
    let parts: Vec<Vec<Address>> = (0..tasks)
        .into_par_iter()
        .map(|t| {
            let from = start + t * TASK;
            addresses_from(k0, from, (from + TASK).min(end))
        })
        .collect();
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for part in parts {
        out.extend(part);
    }
    out
}

/// The addresses of keys `from..to`, walking the curve one generator at a time.
fn addresses_from(k0: Scalar, from: u64, to: u64) -> Vec<Address> {
    let mut out = Vec::with_capacity(usize::try_from(to - from).unwrap_or(0));
    let mut point = ProjectivePoint::GENERATOR * (k0 + Scalar::from(from));
    let mut batch: Vec<ProjectivePoint> = Vec::with_capacity(BATCH);
    let mut i = from;
    while i < to {
        batch.clear();
        while batch.len() < BATCH && i < to {
            batch.push(point);
            point += AffinePoint::GENERATOR;
            i += 1;
        }
        for affine in <ProjectivePoint as BatchNormalize<[ProjectivePoint]>>::batch_normalize(&batch) {
            let encoded = affine.to_encoded_point(false);
            // The identity (a zero key) has no 65-byte encoding: it is no account.
            if let Ok(public_key) = <[u8; 65]>::try_from(encoded.as_bytes()) {
                out.push(Address::from_public_key(&public_key));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_those_of_the_keys() {
        let seed = "bench";
        let all = generated_addresses(seed, 0, 3 * TASK / 2 + 7);
        assert_eq!(all.len() as u64, 3 * TASK / 2 + 7);
        for i in [0, 1, 2, BATCH as u64 - 1, BATCH as u64, TASK - 1, TASK, TASK + 1, 3 * TASK / 2 + 6] {
            let key = generated_key(seed, i).unwrap();
            assert_eq!(all[i as usize], key.public_key().address(), "key {i}");
        }
        // A range is the same slice of the whole.
        assert_eq!(generated_addresses(seed, TASK - 3, 10), all[(TASK - 3) as usize..(TASK + 7) as usize]);
        // Another seed, other accounts.
        assert_ne!(generated_addresses("other", 0, 1)[0], all[0]);
    }

    #[test]
    fn key_zero_follows_the_rule() {
        // k₀ = SHA-256(domain ‖ seed) mod n, key i = k₀ + i.
        let k0: [u8; 32] = crate::hash::sha256(b"caasiope-generated/1bench");
        assert_eq!(generated_key("bench", 0).unwrap().to_bytes(), k0, "a digest below n is k₀ itself");
        let mut k1 = k0;
        k1[31] = k1[31].wrapping_add(1);
        if k1[31] != 0 {
            assert_eq!(generated_key("bench", 1).unwrap().to_bytes(), k1);
        }
        assert!(seed_covers("bench", u64::MAX / 2));
        // The reference values of PROTOCOL.md §9.
        let k = generated_key("bench", 0).unwrap();
        assert_eq!(
            hex::encode(k.to_bytes()),
            "bc366d8e4790a9466989eec55740856fd1300ab9efa365e25f56f8ce104262da"
        );
        assert_eq!(k.public_key().address().to_text(), "qy9e8trgd0ezjhmc3jvd802qrcj4zln49nxxhrnr");
        assert_eq!(
            generated_addresses("bench", 1, 1)[0].to_text(),
            "qyn3gua9jvqjvqghaaxeg0nkqy8yc4pcgcyekx0v"
        );
    }
}
