//! The peer-to-peer network of a Caasiope node.
//!
//! Mutually authenticated TLS 1.3 (rustls) where a node's identity is the SHA-256 of its X.509
//! certificate's SubjectPublicKeyInfo; one connection per peer pair carrying multiplexed,
//! individually bounded channels (control, transaction gossip, consensus, ledger sync); an
//! io_uring transport where the kernel allows it and a portable epoll (tokio) fallback.
//!
//! Built so far: node identities ([`identity`]), the TLS configurations whose certificate
//! verifiers accept exactly the configured peers ([`tls`]), the handshake in rustls and the
//! records sealed and opened in place after it ([`secure`]), the frame codec of the multiplexed
//! channels ([`frame`]), and the connection over any async byte stream — hello, bounded
//! per-channel queues, priority writer, disconnect of flooding, malformed, silent or
//! non-reading peers ([`conn`]) — redialing with exponential back-off ([`dial`]), and two
//! transports under TLS chosen at start-up ([`transport`]): tokio's epoll reactor, and an
//! io_uring one ([`uring`]) that `auto` takes where the kernel allows it.
//!
//! The network knows nothing of ledger rules.

pub mod conn;
pub mod dial;
pub mod frame;
pub mod identity;
pub mod secure;
pub mod tls;
pub mod transport;
pub mod uring;

use std::path::{Path, PathBuf};

pub use identity::{CertInfo, Identity, NodeCert};

/// Errors of the network layer.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A certificate or key that cannot be made, read or used.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A malformed identity.
    #[error("identity: {0}")]
    Identity(String),
    /// A file that would be overwritten.
    #[error("{} already exists; refusing to overwrite it", .0.display())]
    Exists(PathBuf),
    /// An I/O error on a path.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// A TLS configuration rustls refuses.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
}

impl NetError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), error }
    }
}
