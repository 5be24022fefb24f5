//! `caasiope tx …`: decode signed transactions.

use std::io::{self, Read};

use anyhow::{Context, bail};
use engine::{genesis::check_chain_id, limits::TX_BYTES_MAX, tx::SignedTransaction};
use exit::Output;

use crate::cli::TxCommand;

/// Runs one `tx` command.
pub(crate) fn run(command: TxCommand) -> anyhow::Result<Output> {
    match command {
        TxCommand::Decode { chain_id, hex } => decode(&mut io::stdin().lock(), chain_id, hex),
    }
}

#[derive(Debug, serde::Serialize)]
struct Decoded<'a> {
    /// Only with `--chain-id`: the id depends on the chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(flatten)]
    tx: &'a SignedTransaction,
}

fn decode(input: &mut impl Read, chain_id: Option<String>, hex: bool) -> anyhow::Result<Output> {
    // Checked before reading, so a typo does not wait for (or swallow) the input.
    if let Some(chain_id) = &chain_id {
        check_chain_id(chain_id)?;
    }
    let bytes = if hex {
        let text = read_bounded(input, limits::TX_HEX_TEXT_MAX_BYTES, "hex text")?;
        let digits: Vec<u8> = text.into_iter().filter(|b| !b.is_ascii_whitespace()).collect();
        if digits.len() > 2 * TX_BYTES_MAX {
            bail!("a transaction is at most {TX_BYTES_MAX} bytes; the hex on stdin is longer");
        }
        hex::decode(&digits).context("invalid hex on stdin")?
    } else {
        read_bounded(input, TX_BYTES_MAX, "transaction")?
    };
    if bytes.is_empty() {
        bail!("no transaction on stdin");
    }
    let tx = SignedTransaction::from_bytes(&bytes).context("cannot decode the transaction")?;
    let id = chain_id.map(|chain_id| tx.id(&chain_id).to_hex());
    Output::json(&Decoded { id, tx: &tx })
}

/// Reads all of `input` if it is at most `max` bytes; refuses it after reading `max + 1`.
fn read_bounded(input: &mut impl Read, max: usize, what: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    input.take(max as u64 + 1).read_to_end(&mut bytes).context("cannot read stdin")?;
    if bytes.len() > max {
        bail!("the {what} on stdin is over the limit of {max} bytes");
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_is_read_only_up_to_one_byte_past_the_limit() {
        let mut endless = io::repeat(0);
        let err = read_bounded(&mut endless, 10, "x").unwrap_err();
        assert!(err.to_string().contains("over the limit of 10"));
        assert_eq!(read_bounded(&mut &[1u8; 10][..], 10, "x").unwrap().len(), 10);
    }

    struct Unread;

    impl Read for Unread {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            panic!("input read although the chain id is invalid")
        }
    }

    #[test]
    fn bad_chain_id_is_refused_before_reading() {
        let err = decode(&mut Unread, Some("Bad Id".into()), false).unwrap_err();
        assert!(err.to_string().contains("chain id"), "{err}");
    }
}
