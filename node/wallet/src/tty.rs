//! Reading a secret from the controlling terminal without echo.
//!
//! The terminal is `/dev/tty`, not stdin, so a passphrase can be asked while stdin carries data
//! (`wallet import` reads the secret key there). Echo is switched off with termios and switched
//! back on by a guard, whatever happens while reading.

use std::{
    fs::{File, OpenOptions},
    io::{BufRead, BufReader, Write},
    os::fd::AsRawFd,
};

use anyhow::{Context, bail};

/// Longest line read from the terminal: no passphrase or hex key is anywhere near it, and a
/// bound keeps a stuck paste from growing without limit.
const LINE_BYTES_MAX: usize = 4096;

/// Restores the terminal's attributes when dropped.
struct EchoOff {
    fd: i32,
    original: libc::termios,
}

impl EchoOff {
    fn new(tty: &File) -> anyhow::Result<Self> {
        let fd = tty.as_raw_fd();
        // SAFETY: an all-zero `termios` is a valid value of this plain C struct; it is only an
        // out-parameter that `tcgetattr` fills in.
        let mut attrs: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open for as long as `tty` lives, which outlives this call, and
        // `attrs` is a valid, writable `termios`.
        if unsafe { libc::tcgetattr(fd, &mut attrs) } != 0 {
            return Err(std::io::Error::last_os_error()).context("cannot read the terminal's settings");
        }
        let original = attrs;
        attrs.c_lflag &= !libc::ECHO;
        // Still echo the newline, so what is printed next starts on its own line.
        attrs.c_lflag |= libc::ECHONL;
        // SAFETY: as above; `attrs` is a valid `termios` obtained from `tcgetattr`.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &attrs) } != 0 {
            return Err(std::io::Error::last_os_error()).context("cannot switch terminal echo off");
        }
        Ok(Self { fd, original })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: `fd` belongs to the `File` borrowed by `read_hidden`, still open here (the
        // guard is dropped before it); `original` is the value `tcgetattr` returned.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.original);
        }
    }
}

/// Prints `prompt` on the terminal and reads one line with echo off. The returned bytes hold no
/// line ending; the caller wipes them after use.
pub(crate) fn read_hidden(prompt: &str) -> anyhow::Result<Vec<u8>> {
    let tty = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to ask on (set CAASIOPE_WALLET_PASSPHRASE for scripts)")?;
    let mut out = &tty;
    out.write_all(prompt.as_bytes()).and_then(|()| out.flush()).context("cannot write to the terminal")?;
    let guard = EchoOff::new(&tty)?;
    let mut line = Vec::new();
    let read = read_line(BufReader::new(&tty), &mut line);
    drop(guard);
    if let Err(e) = read {
        line.fill(0);
        return Err(e);
    }
    Ok(line)
}

/// Reads one line of at most [`LINE_BYTES_MAX`] bytes, without its line ending.
fn read_line(input: impl BufRead, line: &mut Vec<u8>) -> anyhow::Result<()> {
    let n =
        input.take(LINE_BYTES_MAX as u64 + 1).read_until(b'\n', line).context("cannot read the terminal")?;
    if n == 0 {
        bail!("the terminal was closed before a line was typed");
    }
    if line.len() > LINE_BYTES_MAX {
        bail!("the line typed is longer than {LINE_BYTES_MAX} bytes");
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(())
}
