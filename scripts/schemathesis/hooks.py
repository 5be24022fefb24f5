"""Schemathesis hooks for the explorer API: how to generate an Address32 (docs/PROTOCOL.md §3.2).

A schema cannot say that the last six characters are a checksum; this strategy writes valid
addresses (ECDSA, MultiSig, HashLock and payment-channel types over random bodies), so positive
tests reach the routes' logic instead of the address parser. Loaded by scripts/schemathesis-run
through SCHEMATHESIS_HOOKS.
"""

import schemathesis
from hypothesis import strategies as st

ALPHABET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
GEN = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]


def polymod(values):
    chk = 1
    for v in values:
        top = chk >> 25
        chk = ((chk & 0x1FFFFFF) << 5) ^ v
        for i in range(5):
            if (top >> i) & 1:
                chk ^= GEN[i]
    return chk


def encode(kind, body):
    groups = [kind >> 3, (kind & 0x07) << 2]
    bits = int.from_bytes(body, "big")
    groups += [(bits >> (5 * (31 - k))) & 31 for k in range(32)]
    c = polymod(groups + [0] * 6) ^ 1
    groups += [(c >> (5 * (5 - k))) & 31 for k in range(6)]
    return "".join(ALPHABET[g] for g in groups)


# The §3.3 vector of the document: a check that this encoder is the protocol's.
assert encode(1, bytes.fromhex("cd09987ab8141ec5b3646962e6810671d8f82434")) == "qye5yes74czs0vtvmyd93wdqgxw8v0sfp53l5y30"

schemathesis.openapi.format(
    "address32",
    st.builds(encode, st.sampled_from([0x01, 0x02, 0x03, 0x06]), st.binary(min_size=20, max_size=20)),
)
