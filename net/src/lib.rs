//! The peer-to-peer network of a Caasiope node.
//!
//! Mutually authenticated TLS 1.3 (rustls) where a node's identity is the SHA-256 of its X.509
//! certificate's SubjectPublicKeyInfo; one connection per peer pair carrying multiplexed,
//! individually bounded channels (control, transaction gossip, consensus, ledger sync); an
//! io_uring transport where the kernel allows it and a portable epoll (tokio) fallback.
//!
//! The network knows nothing of ledger rules. It is filled in by the network issue.
