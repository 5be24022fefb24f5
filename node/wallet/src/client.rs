//! The explorer's HTTP API (docs/API.md), as the wallet uses it: a thin blocking client whose
//! answers are the contract's types (the `api` crate), as the explorer serializes them.
//!
//! Only plain `http://` is spoken (ureq without TLS): the wallet talks to an explorer on loopback
//! or a trusted network. Nothing the explorer says is trusted for safety: transactions are built
//! and signed locally, declarations fetched from it are checked against their addresses, and
//! proofs are verified offline against the genesis validators.

use std::{io::IsTerminal, time::Duration};

use anyhow::{Context, bail};
use api::{TxState, TxStatus, routes};
use engine::{Address, Hash};
use serde::de::DeserializeOwned;

/// Largest answer read: a history page of 1000 entries or a proof is well under it.
const ANSWER_BYTES_MAX: u64 = 8 * 1024 * 1024;
/// Whole-request timeout: every call is one small request to a nearby explorer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `--wait` asks for a transaction's status.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

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

    /// GETs `path` and returns its answer (None for a 404).
    fn get_optional<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<Option<T>> {
        let url = self.url(path);
        answer(self.agent.get(&url).call(), &url)
    }

    fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.get_optional(path)?.with_context(|| format!("{} answered 404", self.url(path)))
    }

    /// `GET /v1/status`.
    pub(crate) fn status(&self) -> anyhow::Result<api::Status> {
        self.get(routes::STATUS)
    }

    /// The chain as a transaction builder sees it, from `GET /v1/status`.
    pub(crate) fn chain(&self) -> anyhow::Result<super::build::ChainView> {
        let status = self.status()?;
        Ok(super::build::ChainView { params: status.params(), now_ms: status.timestamp_ms })
    }

    /// `GET /v1/accounts/{address}`.
    pub(crate) fn account(&self, address: &Address) -> anyhow::Result<api::Account> {
        let answer: api::Account = self.get(&format!("/v1/accounts/{address}"))?;
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
    ) -> anyhow::Result<api::HistoryPage> {
        let mut path = format!("/v1/accounts/{address}/history?limit={limit}");
        if let Some(cursor) = cursor {
            path.push_str("&cursor=");
            path.push_str(&percent_encode(cursor));
        }
        self.get(&path)
    }

    /// `GET /v1/transactions/{id}`; None if the explorer does not know it.
    pub(crate) fn tx_status(&self, id: &Hash) -> anyhow::Result<Option<TxStatus>> {
        self.get_optional(&format!("/v1/transactions/{id}"))
    }

    /// `POST /v1/transactions` with the signed bytes; returns the id the explorer computed.
    pub(crate) fn submit(&self, bytes: &[u8]) -> anyhow::Result<Hash> {
        let url = self.url(routes::TRANSACTIONS);
        let response = self.agent.post(&url).header("Content-Type", "application/octet-stream").send(bytes);
        let accepted: api::Accepted =
            answer(response, &url)?.context("the explorer answered 404 to a submission")?;
        Ok(accepted.id)
    }

    /// `GET /v1/proofs/transactions/{id}`.
    pub(crate) fn tx_proof(&self, id: &Hash) -> anyhow::Result<api::Proof> {
        self.get(&format!("/v1/proofs/transactions/{id}"))
    }

    /// `GET /v1/proofs/accounts/{address}`.
    pub(crate) fn account_proof(&self, address: &Address) -> anyhow::Result<api::Proof> {
        self.get(&format!("/v1/proofs/accounts/{address}"))
    }

    /// `GET /v1/validators/{height}`.
    pub(crate) fn validators(&self, height: u64) -> anyhow::Result<api::Validators> {
        self.get(&format!("/v1/validators/{height}"))
    }

    /// Every validator-set change named by a header below `height`, oldest first (all pages).
    pub(crate) fn set_changes_below(&self, height: u64) -> anyhow::Result<Vec<api::SetChange>> {
        let mut out = Vec::new();
        let mut from = 0u64;
        loop {
            let page: api::SetChanges =
                self.get(&format!("{}?from={from}&limit=1000", api::routes::VALIDATOR_SETS))?;
            out.extend(page.changes.into_iter().filter(|c| c.header.height < height));
            match page.next {
                Some(next) if next < height && next > from => from = next,
                _ => return Ok(out),
            }
        }
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
            let label = status.as_ref().map_or("unknown", |s| s.status.as_str());
            spinner.set_message(format!("transaction {short}…: {label} ({}s)", started.elapsed().as_secs()));
            if let Some(s) = status
                && s.status != TxState::Pending
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

/// The answer of a 2xx, None for a 404, an error with the explorer's message otherwise.
fn answer<T: DeserializeOwned>(
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    url: &str,
) -> anyhow::Result<Option<T>> {
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
            .with_context(|| format!("unexpected answer from {url}"));
    }
    if status == 404 {
        return Ok(None);
    }
    match serde_json::from_slice::<api::ErrorBody>(&body) {
        Ok(api::ErrorBody { error }) => {
            bail!("the explorer refused ({status} {}): {}", error.code.as_str(), error.message)
        }
        Err(_) => bail!("{url} answered {status}"),
    }
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
