//! `caasiope submit --to HOST:PORT`: sends signed transaction bytes read from stdin to a running
//! validator's submit port and prints its answer (the id, or the rejection reason).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpStream, ToSocketAddrs},
    time::Duration,
};

use anyhow::{Context, bail};
use engine::limits::TX_BYTES_MAX;

use exit::Output;

/// Reads at most `TX_BYTES_MAX` bytes of stdin, sends them as one frame, prints the answer.
pub(crate) fn run(to: &str, input: &mut impl Read) -> anyhow::Result<Output> {
    let mut bytes = Vec::new();
    input.take(TX_BYTES_MAX as u64 + 1).read_to_end(&mut bytes).context("reading stdin")?;
    if bytes.is_empty() {
        bail!("no transaction on stdin");
    }
    if bytes.len() > TX_BYTES_MAX {
        bail!("a transaction is at most {TX_BYTES_MAX} bytes; stdin is longer");
    }
    let addr =
        to.to_socket_addrs().with_context(|| format!("bad address {to:?}"))?.next().context("no address")?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("cannot connect to {to}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(&(bytes.len() as u32).to_be_bytes())?;
    stream.write_all(&bytes)?;
    let mut line = String::new();
    BufReader::new(stream.take(4096)).read_line(&mut line).context("reading the answer")?;
    let line = line.trim_end();
    match line.split_once(' ') {
        Some(("accepted", id)) => Ok(Output::Line(id.to_owned())),
        Some(("rejected", why)) => bail!("rejected: {why}"),
        _ => bail!("unexpected answer {line:?}"),
    }
}
