//! The paths of the API, as the server routes them and the OpenAPI document lists them
//! (`{name}` is a path parameter, in both axum's and OpenAPI's syntax).

/// `GET`: chain parameters and the latest ledger ([`crate::Status`]).
pub const STATUS: &str = "/v1/status";
/// `GET`: the latest committed ledger ([`crate::Ledger`]).
pub const LEDGER_LATEST: &str = "/v1/ledgers/latest";
/// `GET`: a committed ledger by height ([`crate::Ledger`]).
pub const LEDGER: &str = "/v1/ledgers/{height}";
/// `POST`: submit a signed transaction ([`crate::SubmitHex`] or bytes → [`crate::Accepted`]).
pub const TRANSACTIONS: &str = "/v1/transactions";
/// `GET`: a transaction's status ([`crate::TxStatus`]).
pub const TRANSACTION: &str = "/v1/transactions/{id}";
/// `GET`: an account at the latest ledger ([`crate::Account`]).
pub const ACCOUNT: &str = "/v1/accounts/{address}";
/// `GET`: an account's transactions by pages ([`crate::HistoryPage`]).
pub const HISTORY: &str = "/v1/accounts/{address}/history";
/// `GET`: inclusion proof of a committed transaction ([`crate::Proof`]).
pub const PROOF_TRANSACTION: &str = "/v1/proofs/transactions/{id}";
/// `GET`: state proof of an account ([`crate::Proof`]).
pub const PROOF_ACCOUNT: &str = "/v1/proofs/accounts/{address}";
/// `GET`: the validator set in force and the next one ([`crate::ValidatorsNow`]).
pub const VALIDATORS_NOW: &str = "/v1/validators";
/// `GET`: the validator set certifying a height ([`crate::Validators`]).
pub const VALIDATORS: &str = "/v1/validators/{height}";
/// `GET`: certified headers by pages ([`crate::HeaderPage`]).
pub const HEADERS: &str = "/v1/headers";
/// `GET`: a certified header by height ([`crate::CertifiedHeader`], or its canonical bytes).
pub const HEADER: &str = "/v1/headers/{height}";
/// `GET`: the validator-set changes since genesis by pages ([`crate::SetChanges`]).
pub const VALIDATOR_SETS: &str = "/v1/validator-sets";
/// `GET`: equivocation proofs by pages ([`crate::EvidencePage`]).
pub const EVIDENCE: &str = "/v1/evidence";
/// `GET`: server-sent events ([`STREAM_EVENT_LEDGER`], [`STREAM_EVENT_TRANSACTION`]).
pub const STREAM: &str = "/v1/stream";
/// `GET`: the OpenAPI document ([`crate::openapi`]).
pub const OPENAPI: &str = "/v1/openapi.json";
/// `GET`: liveness (`ok`).
pub const HEALTHZ: &str = "/healthz";
/// `GET`: the process's metrics, Prometheus text (docs/METRICS.md).
pub const METRICS: &str = "/metrics";

/// Every route of the API (the `/v1` routes, liveness and metrics).
pub const ALL: [&str; 19] = [
    STATUS,
    LEDGER_LATEST,
    LEDGER,
    TRANSACTIONS,
    TRANSACTION,
    ACCOUNT,
    HISTORY,
    PROOF_TRANSACTION,
    PROOF_ACCOUNT,
    VALIDATORS_NOW,
    VALIDATORS,
    HEADERS,
    HEADER,
    VALIDATOR_SETS,
    EVIDENCE,
    STREAM,
    OPENAPI,
    HEALTHZ,
    METRICS,
];

/// Stream event of a ledger; its data is a [`crate::Ledger`], its id the ledger's height (`H`).
pub const STREAM_EVENT_LEDGER: &str = "ledger";
/// Stream event of a transaction of the ledger before it; its data is a [`crate::TxRef`], its
/// id the ledger's height and the transaction's index in its block (`H:I`).
pub const STREAM_EVENT_TRANSACTION: &str = "transaction";
/// Last event of a stream the server ends; its data is a [`crate::StreamEnd`], it has no id.
pub const STREAM_EVENT_END: &str = "end";

/// The route a request path is served by (its pattern in [`ALL`]: a literal route before a
/// pattern with parameters), if any: what the API's metrics label a request with.
pub fn template_of(path: &str) -> Option<&'static str> {
    route_index(path).map(|i| ALL[i])
}

/// The index in [`ALL`] of the route a request path is served by ([`template_of`]): looked up
/// in the same kind of tree axum routes with (built once), a literal route before a pattern.
pub fn route_index(path: &str) -> Option<usize> {
    static TREE: std::sync::LazyLock<matchit::Router<usize>> = std::sync::LazyLock::new(|| {
        let mut tree = matchit::Router::new();
        for (i, template) in ALL.iter().enumerate() {
            // The routes are distinct and well formed (the test of every route checks the tree).
            let _ = tree.insert(*template, i);
        }
        tree
    });
    TREE.at(path).ok().map(|found| *found.value)
}

/// Largest page of headers or set changes (`limit`).
pub const HEADERS_LIMIT_MAX: usize = 1_000;
/// Default page of headers or set changes.
pub const HEADERS_LIMIT_DEFAULT: usize = 100;

/// Largest history page (`limit`).
pub const HISTORY_LIMIT_MAX: usize = 1000;
/// History page when no `limit` is given.
pub const HISTORY_LIMIT_DEFAULT: usize = 100;
/// Largest evidence page (`limit`), and the page given when no `limit` is.
pub const EVIDENCE_LIMIT_MAX: usize = 100;
