//! The transport under TLS, chosen at start-up: io_uring, or tokio's epoll reactor.
//!
//! `auto` takes io_uring when a ring can be set up and falls back to epoll where the kernel or
//! a container forbids it (seccomp profiles often do), saying which one runs and why.

use std::{fmt, io, str::FromStr};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::uring::{self, Uring};

/// A byte stream a connection runs over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What the configuration asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportChoice {
    /// io_uring if available, else epoll.
    Auto,
    /// io_uring or fail.
    IoUring,
    /// tokio's epoll reactor.
    Epoll,
}

impl FromStr for TransportChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "io_uring" => Ok(Self::IoUring),
            "epoll" => Ok(Self::Epoll),
            other => Err(format!("transport {other:?}: one of auto, io_uring, epoll")),
        }
    }
}

/// The running transport.
#[derive(Clone, Debug)]
pub struct Transport {
    uring: Option<Uring>,
    /// Why this transport runs (for the start-up log).
    pub reason: String,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Transport {
    /// Starts the transport `choice` names.
    pub fn start(choice: TransportChoice) -> io::Result<Self> {
        match choice {
            TransportChoice::Epoll => Ok(Self { uring: None, reason: "configured".into() }),
            TransportChoice::IoUring => Ok(Self { uring: Some(Uring::new()?), reason: "configured".into() }),
            TransportChoice::Auto => match uring::available().and_then(|()| Uring::new()) {
                Ok(u) => Ok(Self { uring: Some(u), reason: "auto: io_uring available".into() }),
                Err(e) => Ok(Self { uring: None, reason: format!("auto: io_uring unavailable ({e})") }),
            },
        }
    }

    /// `io_uring` or `epoll`.
    pub fn name(&self) -> &'static str {
        if self.uring.is_some() { "io_uring" } else { "epoll" }
    }

    /// Puts a connected socket on this transport.
    pub fn wrap(&self, tcp: tokio::net::TcpStream) -> io::Result<Box<dyn Stream>> {
        tcp.set_nodelay(true)?;
        Ok(match &self.uring {
            Some(u) => Box::new(u.stream(tcp)?),
            None => Box::new(tcp),
        })
    }
}
