//! The process edge: what a command prints, and how every failure becomes exit status 2 with
//! one `error: ` line, the last on stderr.
//!
//! Scripts drive this binary, so the contract is strict: on success stdout holds one line or one
//! JSON document and nothing else; on failure stdout is empty, the last line on stderr is the
//! `error: ` line and the status is 2 — whatever failed (usage, input, I/O, or a bug). Before it,
//! stderr carries only what a command reports as it goes (a process's log, progress, what
//! `wallet sign` is about to sign); a command that fails at once prints that one line alone.

use std::{
    io::{self, Read, Write},
    path::Path,
    process::ExitCode,
};

use anyhow::{Context, bail};

/// Status of every failure.
pub const FAILURE: u8 = 2;

/// What a successful command prints on stdout.
#[derive(Debug)]
pub enum Output {
    /// One line (an address).
    Line(String),
    /// One pretty-printed JSON document.
    Json(String),
    /// Nothing more (a long-running command that has printed as it went).
    Nothing,
}

impl Output {
    /// `value` as a pretty-printed JSON document.
    pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<Self> {
        Ok(Self::Json(serde_json::to_string_pretty(value)?))
    }
}

/// Reads a text file of at most `max` bytes (a config, a key, a genesis, a proof: input from
/// outside, so never read whole before its size is known to be sane).
pub fn read_text(path: &Path, max: u64, what: &str) -> anyhow::Result<String> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {what} {}", path.display()))?;
    let mut text = String::new();
    file.take(max + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    if text.len() as u64 > max {
        bail!("{what} {} is larger than {max} bytes", path.display());
    }
    Ok(text)
}

/// Prints the result of a command and gives the process status.
pub fn finish(result: anyhow::Result<Output>) -> ExitCode {
    let printed = result.and_then(|output| {
        let text = match output {
            Output::Line(line) | Output::Json(line) => line,
            Output::Nothing => return Ok(()),
        };
        // A closed stdout (`caasiope … | head -c0`) is an error like any other, not a panic.
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "{text}")?;
        stdout.flush()?;
        Ok(())
    });
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&chain_line(&e)),
    }
}

/// An error and its causes as `outer: inner: …`, each said once: some errors (thiserror's
/// `#[error("…: {0}")]` with `#[from]`) already end with their source's message.
fn chain_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Reports a failure on one stderr line and gives the failure status.
pub fn fail(message: &str) -> ExitCode {
    error_line(message);
    ExitCode::from(FAILURE)
}

/// Handles a command line clap refused: help and version are printed as clap prints them (exit
/// 0); every usage error is reduced to the first paragraph of clap's message, on one line.
pub fn clap_error(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => match err.print() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&format!("cannot print: {e}")),
        },
        // Not produced while `arg_required_else_help` is off everywhere (see `cli`), and its
        // message is the whole help text, so it gets a line of its own should that change.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => fail("a subcommand is required (see --help)"),
        _ => {
            let rendered = err.render().to_string();
            let body = rendered.trim_start();
            let body = body.strip_prefix("error:").unwrap_or(body);
            // The first paragraph says what is wrong, sometimes over two lines (the missing
            // argument is on the second); the rest is tips and usage.
            let first = body.split("\n\n").next().unwrap_or(body);
            fail(first)
        }
    }
}

/// Makes a panic end like any other failure.
///
/// Nothing here is meant to panic: inputs are checked and the engine returns errors on bad
/// data. This is the belt to those braces: a panic would otherwise print a multi-line message
/// (and maybe a backtrace) and exit with 101, breaking the one-line, status-2 contract scripts
/// rely on. Exiting from the hook, before unwinding, also keeps a half-finished command from
/// printing anything else.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        error_line(&format!("internal error: {info}"));
        std::process::exit(i32::from(FAILURE));
    }));
}

/// Writes `error: <message>` on one stderr line, whatever newlines the message holds.
fn error_line(message: &str) {
    let line = one_line(message);
    // Nothing better can be done if stderr itself is gone; the status still says it failed.
    let _ = writeln!(io::stderr().lock(), "error: {line}");
}

/// Joins the non-empty lines of `text`, trimmed, with single spaces.
fn one_line(text: &str) -> String {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_are_said_once() {
        let err =
            anyhow::Error::from(engine::keys::KeyError::Hex(hex::FromHexError::OddLength)).context("ctx");
        assert_eq!(
            chain_line(&err),
            "ctx: invalid hex (a secret key is 64 hex characters, a public key 130): Odd number of digits"
        );
        // A message that already ends with its cause's text does not repeat it.
        let err = anyhow::Error::from(hex::FromHexError::OddLength).context("bad: Odd number of digits");
        assert_eq!(chain_line(&err), "bad: Odd number of digits");
        let err = anyhow::Error::from(hex::FromHexError::OddLength).context("ctx");
        assert_eq!(chain_line(&err), "ctx: Odd number of digits");
    }

    #[test]
    fn a_file_over_its_bound_is_refused_unread() {
        let dir = std::env::temp_dir().join(format!("caasiope-exit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.txt");
        std::fs::write(&path, "12345").unwrap();
        assert_eq!(read_text(&path, 5, "file").unwrap(), "12345");
        let err = read_text(&path, 4, "file").unwrap_err().to_string();
        assert!(err.ends_with("is larger than 4 bytes"), "{err}");
        let err = read_text(&dir.join("absent"), 4, "key file").unwrap_err().to_string();
        assert!(err.starts_with("cannot open key file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn messages_become_one_line() {
        assert_eq!(one_line("a\n  b\r\n\nc  "), "a b c");
        assert_eq!(one_line(""), "");
    }
}
