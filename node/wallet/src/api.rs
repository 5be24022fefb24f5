//! The explorer's HTTP API (docs/API.md), as the wallet uses it: a thin blocking client.
//!
//! Only plain `http://` is spoken (ureq without TLS): the wallet talks to an explorer on loopback
//! or a trusted network. Nothing the explorer says is trusted for safety: transactions are built
//! and signed locally, declarations fetched from it are checked against their addresses, and
//! proofs are verified offline against the genesis validators.

use std::{collections::BTreeMap, io::IsTerminal, time::Duration};

use anyhow::{Context, bail};
use engine::{Address, Currency, Hash, genesis::ChainParams};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::Value;

/// Largest answer read: a history page of 1000 entries or a proof is well under it.
const ANSWER_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Whole-request timeout: every call is one small request to a nearby explorer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `--wait` asks for a transaction's status.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// `GET /v1/status`, the fields the wallet uses.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Status {
    /// Chain id.
    pub(crate) chain_id: String,
    /// Latest ledger time, unix ms: the base of expirations and lock times.
    pub(crate) timestamp_ms: i64,
    /// Minimum fee, raw CAS units.
    pub(crate) min_fee: i64,
    /// Longest allowed time to expiration.
    pub(crate) max_ttl_ms: i64,
    /// Fee account.
    pub(crate) fee_account: Address,
    /// Governance account.
    pub(crate) governance: Address,
    /// Issuer of each currency.
    pub(crate) issuers: BTreeMap<Currency, Address>,
}

impl Status {
    /// The chain as a transaction builder sees it.
    pub(crate) fn chain(&self) -> super::build::ChainView {
        super::build::ChainView {
            params: ChainParams {
                chain_id: self.chain_id.clone(),
                min_fee: self.min_fee,
                max_ttl_ms: self.max_ttl_ms,
                fee_account: self.fee_account,
                governance: self.governance,
                issuers: self.issuers.clone(),
            },
            now_ms: self.timestamp_ms,
        }
    }
}

/// `GET /v1/accounts/{address}`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct AccountAnswer {
    /// The address.
    pub(crate) address: Address,
    /// Non-zero balances.
    pub(crate) balances: Vec<Balance>,
    /// The account's declaration (engine JSON), if declared.
    #[serde(default)]
    pub(crate) declaration: Option<Value>,
    /// For a payment channel, what the payee has claimed so far (0 when absent).
    #[serde(default)]
    pub(crate) channel_claimed: i64,
}

impl AccountAnswer {
    /// The balance in `currency`.
    pub(crate) fn balance(&self, currency: &Currency) -> i64 {
        self.balances.iter().find(|b| b.currency == *currency).map_or(0, |b| b.amount)
    }
}

/// One balance.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
pub(crate) struct Balance {
    /// Currency.
    pub(crate) currency: Currency,
    /// Raw units.
    pub(crate) amount: i64,
}

/// `GET /v1/transactions/{id}`, the fields the wallet uses.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct TxStatus {
    /// `pending`, `committed`, `rejected` or `expired`.
    pub(crate) status: String,
    /// Height, once committed.
    #[serde(default)]
    pub(crate) height: Option<u64>,
    /// Position in its ledger, once committed.
    #[serde(default)]
    pub(crate) index: Option<u32>,
    /// Why it was rejected.
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

/// `{height, proof}` and `{height, validators}` answers, and files.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct HexAt {
    /// Height.
    pub(crate) height: u64,
    /// The hex payload, under `proof` or `validators`.
    #[serde(alias = "proof", alias = "validators")]
    pub(crate) hex: String,
}

/// A client of one explorer.
#[derive(Debug)]
pub(crate) struct Api {
    base: String,
    agent: ureq::Agent,
}

impl Api {
    /// A client of the explorer at `base` (`http://host:port`).
    pub(crate) fn new(base: &str) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            bail!("--api {base:?}: give the explorer's http:// URL (https is not supported by this wallet)");
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // Error answers carry a JSON body worth reading.
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        Ok(Self { base, agent })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GETs `path` and returns the status and the JSON body (None for a 404).
    fn get_value(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let response = self.agent.get(&self.url(path)).call();
        answer(response, &self.url(path))
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let value = self.get_value(path)?.with_context(|| format!("{} answered 404", self.url(path)))?;
        parse(value, path)
    }

    /// `GET /v1/status` as JSON.
    pub(crate) fn status_value(&self) -> anyhow::Result<Value> {
        self.get("/v1/status")
    }

    /// `GET /v1/status`.
    pub(crate) fn status(&self) -> anyhow::Result<Status> {
        self.get("/v1/status")
    }

    /// `GET /v1/accounts/{address}` as JSON.
    pub(crate) fn account_value(&self, address: &Address) -> anyhow::Result<Value> {
        self.get(&format!("/v1/accounts/{address}"))
    }

    /// `GET /v1/accounts/{address}`.
    pub(crate) fn account(&self, address: &Address) -> anyhow::Result<AccountAnswer> {
        let answer: AccountAnswer = self.get(&format!("/v1/accounts/{address}"))?;
        if answer.address != *address {
            bail!("the explorer answered for {} when asked for {address}", answer.address);
        }
        Ok(answer)
    }

    /// `GET /v1/accounts/{address}/history`.
    pub(crate) fn history(
        &self,
        address: &Address,
        limit: u32,
        cursor: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut path = format!("/v1/accounts/{address}/history?limit={limit}");
        if let Some(cursor) = cursor {
            path.push_str("&cursor=");
            path.push_str(&percent_encode(cursor));
        }
        self.get(&path)
    }

    /// `GET /v1/transactions/{id}` as JSON; None if the explorer does not know it.
    pub(crate) fn tx_value(&self, id: &Hash) -> anyhow::Result<Option<Value>> {
        self.get_value(&format!("/v1/transactions/{id}"))
    }

    /// `GET /v1/transactions/{id}`; None if the explorer does not know it.
    pub(crate) fn tx_status(&self, id: &Hash) -> anyhow::Result<Option<TxStatus>> {
        self.tx_value(id)?.map(|v| parse(v, "transaction status")).transpose()
    }

    /// `POST /v1/transactions` with the signed bytes; returns the id the explorer computed.
    pub(crate) fn submit(&self, bytes: &[u8]) -> anyhow::Result<Hash> {
        let url = self.url("/v1/transactions");
        let response = self.agent.post(&url).header("Content-Type", "application/octet-stream").send(bytes);
        let value = answer(response, &url)?.context("the explorer answered 404 to a submission")?;
        let id = value.get("id").and_then(Value::as_str).context("the submission answer has no id")?;
        Hash::from_hex(id).context("the submission answer's id is not 64 hex characters")
    }

    /// `GET /v1/proofs/transactions/{id}`.
    pub(crate) fn tx_proof(&self, id: &Hash) -> anyhow::Result<HexAt> {
        self.get(&format!("/v1/proofs/transactions/{id}"))
    }

    /// `GET /v1/proofs/accounts/{address}`.
    pub(crate) fn account_proof(&self, address: &Address) -> anyhow::Result<HexAt> {
        self.get(&format!("/v1/proofs/accounts/{address}"))
    }

    /// `GET /v1/validators/{height}`.
    pub(crate) fn validators(&self, height: u64) -> anyhow::Result<HexAt> {
        self.get(&format!("/v1/validators/{height}"))
    }

    /// Polls a submitted transaction until it is committed, rejected or expired, or `timeout`
    /// passes; a spinner shows progress when stderr is a terminal.
    pub(crate) fn wait(&self, id: &Hash, timeout: Duration) -> anyhow::Result<TxStatus> {
        let spinner = if std::io::stderr().is_terminal() {
            let s = indicatif::ProgressBar::new_spinner();
            s.enable_steady_tick(Duration::from_millis(120));
            s
        } else {
            indicatif::ProgressBar::hidden()
        };
        let short = &id.to_hex()[..16];
        let started = std::time::Instant::now();
        let result = loop {
            let status = self.tx_status(id)?;
            let label = status.as_ref().map_or_else(|| "unknown".to_owned(), |s| s.status.clone());
            spinner.set_message(format!("transaction {short}…: {label} ({}s)", started.elapsed().as_secs()));
            if let Some(s) = status
                && s.status != "pending"
            {
                break Ok(s);
            }
            if started.elapsed() >= timeout {
                break Err(anyhow::anyhow!(
                    "transaction {id} is still {label} after {}s (it may still be committed: ask `wallet tx`)",
                    timeout.as_secs()
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        };
        spinner.finish_and_clear();
        result
    }
}

/// The JSON body of a 2xx answer, None for a 404, an error with the explorer's message otherwise.
fn answer(
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    url: &str,
) -> anyhow::Result<Option<Value>> {
    let mut response = response.with_context(|| format!("cannot reach {url}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(ANSWER_BYTES_MAX)
        .read_to_vec()
        .with_context(|| format!("cannot read the answer of {url}"))?;
    if (200..300).contains(&status) {
        return serde_json::from_slice(&body)
            .map(Some)
            .with_context(|| format!("{url} answered with invalid JSON"));
    }
    if status == 404 {
        return Ok(None);
    }
    let error: Option<(String, String)> = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        let e = v.get("error")?;
        Some((e.get("code")?.as_str()?.to_owned(), e.get("message")?.as_str()?.to_owned()))
    });
    match error {
        Some((code, message)) => bail!("the explorer refused ({status} {code}): {message}"),
        None => bail!("{url} answered {status}"),
    }
}

fn parse<T: DeserializeOwned>(value: Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(value).with_context(|| format!("unexpected answer to {what}"))
}

/// Percent-encodes everything but unreserved characters (cursors are opaque).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_encoded_and_urls_checked() {
        assert_eq!(percent_encode("12.3"), "12.3");
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
        assert!(Api::new("https://example.org").is_err());
        assert_eq!(
            Api::new("http://127.0.0.1:7400/").unwrap().url("/v1/status"),
            "http://127.0.0.1:7400/v1/status"
        );
    }
}
