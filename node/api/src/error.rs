//! The body of every error answer: `{"error": {"code", "message"}}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// An error answer (any 4xx, 500 or 503).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable class (the HTTP status's meaning).
    pub code: ErrorCode,
    /// Machine-readable cause: for a transaction the rules refuse (`rejected`), the rule's
    /// label (docs/PROTOCOL.md §7: `insufficient_balance`, `bad_signature`, `expired`, …);
    /// otherwise the code again.
    #[serde(default)]
    #[schema(schema_with = kind_schema)]
    pub kind: String,
    /// For people; its wording is not part of the contract.
    pub message: String,
}

/// The kinds of error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A path, query or body that does not parse (400).
    BadRequest,
    /// No such route, ledger, transaction, account state or validator set (404).
    NotFound,
    /// A transaction the rules refuse (400).
    Rejected,
    /// Overloaded: too many transactions pending or live streams (503).
    Busy,
    /// A body larger than a transaction may be (413), a request target over 8 KiB (414), or
    /// header fields over 64 or 16 KiB (431).
    TooLarge,
    /// A request body that did not arrive whole within the deadline (408).
    Timeout,
    /// The process is stopping (503).
    Unavailable,
    /// The store cannot be read (500).
    Internal,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [Self; 8] = [
        Self::BadRequest,
        Self::NotFound,
        Self::Rejected,
        Self::Busy,
        Self::TooLarge,
        Self::Timeout,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::NotFound => "not_found",
            Self::Rejected => "rejected",
            Self::Busy => "busy",
            Self::TooLarge => "too_large",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl ErrorBody {
    /// An error of `code` (its kind the code again) saying `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::of_kind(code, code.as_str(), message)
    }

    /// An error of `code` and `kind` saying `message`.
    pub fn of_kind(code: ErrorCode, kind: &str, message: impl Into<String>) -> Self {
        Self { error: ErrorDetail { code, kind: kind.to_owned(), message: message.into() } }
    }
}

/// The schema of [`ErrorDetail::kind`]: every code's name and every rule's label.
fn kind_schema() -> utoipa::openapi::schema::Object {
    let kinds: Vec<&str> =
        ErrorCode::ALL.iter().map(|c| c.as_str()).chain(engine::validate::TxError::KINDS).collect();
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some("the rule's label for `rejected` (docs/PROTOCOL.md §7), else the code"))
        .enum_values(Some(kinds))
        .build()
}
