//! Schemas of the wire's text forms of engine types (the engine's serde forms), named once in
//! the document's components. Each is a marker: fields holding the engine type point their
//! schema here with `#[schema(value_type = …)]`.

use std::borrow::Cow;

use utoipa::openapi::{
    RefOr,
    schema::{ObjectBuilder, Schema, Type},
};

/// A 32-byte hash or transaction id: 64 lower-case hex characters.
#[derive(Debug)]
pub struct HashHex;

/// An address: Address32 text, 40 characters (answered in lower case).
#[derive(Debug)]
pub struct AddressText;

/// A consensus public key: 65-byte SEC1, 130 lower-case hex characters.
#[derive(Debug)]
pub struct PublicKeyHex;

fn string(description: &str) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).description(Some(description))
}

impl utoipa::PartialSchema for HashHex {
    fn schema() -> RefOr<Schema> {
        string("32 bytes, lower-case hex").pattern(Some("^[0-9a-f]{64}$")).into()
    }
}

impl utoipa::ToSchema for HashHex {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Hash")
    }
}

impl utoipa::PartialSchema for AddressText {
    fn schema() -> RefOr<Schema> {
        // No pattern: the checksum cannot be one. Clients generating addresses for tests use
        // the format (scripts/schemathesis/hooks.py).
        string(
            "Address32 text: 40 characters of the bech32 alphabet `qpzry9x8gf2tvdw0s3jn54khce6mua7l`, \
             the last six a checksum (docs/PROTOCOL.md §3.2); answered in lower case, all upper case accepted",
        )
        .format(Some(utoipa::openapi::SchemaFormat::Custom("address32".into())))
        .into()
    }
}

impl utoipa::ToSchema for AddressText {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Address")
    }
}

impl utoipa::PartialSchema for PublicKeyHex {
    fn schema() -> RefOr<Schema> {
        string("consensus key, 65-byte SEC1, lower-case hex").pattern(Some("^[0-9a-f]{130}$")).into()
    }
}

impl utoipa::ToSchema for PublicKeyHex {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("PublicKey")
    }
}

/// A ledger height: an unsigned 64-bit integer (JSON Schema's `int64` format would stop at
/// 2⁶³ − 1).
#[derive(Debug)]
pub struct Height;

impl utoipa::PartialSchema for Height {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .maximum(Some(u64::MAX))
            .description(Some("ledger height, 0 to 2^64 − 1"))
            .into()
    }
}

impl utoipa::ToSchema for Height {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Height")
    }
}

/// A signed transaction's canonical bytes, as a request body.
#[derive(Debug)]
pub struct TxBytes;

impl utoipa::PartialSchema for TxBytes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Binary)))
            .description(Some("the signed transaction's canonical bytes (engine codec)"))
            .into()
    }
}

impl utoipa::ToSchema for TxBytes {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("TxBytes")
    }
}
