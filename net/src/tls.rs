//! Mutual TLS 1.3 between nodes that know each other's identities.
//!
//! Both sides present their node certificate and check the other's inside rustls's certificate
//! verification: a certificate is accepted only if its identity (SHA-256 of its
//! SubjectPublicKeyInfo) is in the configured set and it is valid at the handshake's time. No CA
//! and no name is involved. The handshake signature is still verified against the certificate's
//! key, so presenting a listed certificate without its private key fails.

use std::{
    collections::HashSet,
    sync::{Arc, PoisonError, RwLock},
};

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, ServerConfig,
    SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature},
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};

use crate::{CertInfo, Identity, NetError, NodeCert, identity::CERT_NAME};

/// The server name a node dials: every node certificate carries it, and it is not checked.
pub fn peer_server_name() -> ServerName<'static> {
    ServerName::try_from(CERT_NAME)
        .unwrap_or_else(|_| ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into()))
}

/// The identities a listener accepts, shared with whoever adds peers while it runs (a reloaded
/// configuration): a handshake checks the set as it is then.
#[derive(Clone, Debug, Default)]
pub struct AllowList(Arc<RwLock<HashSet<Identity>>>);

impl AllowList {
    /// A list of `identities`.
    pub fn new(identities: impl IntoIterator<Item = Identity>) -> Self {
        Self(Arc::new(RwLock::new(identities.into_iter().collect())))
    }

    /// Accepts `identity` from now on; whether it is new.
    pub fn add(&self, identity: Identity) -> bool {
        self.0.write().unwrap_or_else(PoisonError::into_inner).insert(identity)
    }

    /// Whether `identity` is accepted.
    pub fn contains(&self, identity: &Identity) -> bool {
        self.0.read().unwrap_or_else(PoisonError::into_inner).contains(identity)
    }
}

/// Accepts exactly the certificates of a set of identities, valid at the handshake's time.
#[derive(Debug)]
pub struct PeerVerifier {
    allowed: AllowList,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    /// A verifier accepting `allowed`.
    pub fn new(allowed: impl IntoIterator<Item = Identity>) -> Self {
        Self::allowing(AllowList::new(allowed))
    }

    /// A verifier accepting the identities of `allowed` at each handshake.
    pub fn allowing(allowed: AllowList) -> Self {
        Self { allowed, algorithms: provider().signature_verification_algorithms }
    }

    /// The identity of `cert` if it is one of the allowed and valid at `now`.
    pub fn check(&self, cert: &CertificateDer<'_>, now: UnixTime) -> Result<Identity, Error> {
        let info =
            CertInfo::parse(cert).map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if !self.allowed.contains(&info.identity) {
            return Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
        }
        if !info.valid_at(now) {
            let now_s = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
            return Err(Error::InvalidCertificate(if now_s < info.not_before {
                CertificateError::NotValidYet
            } else {
                CertificateError::Expired
            }));
        }
        Ok(info.identity)
    }

    fn tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
}

/// The configurations offer TLS 1.3 only.
fn no_tls12() -> Result<HandshakeSignatureValid, Error> {
    Err(Error::PeerIncompatible(rustls::PeerIncompatible::Tls12NotOffered))
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if !intermediates.is_empty() {
            return Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
        }
        self.check(end_entity, now).map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PeerVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        if !intermediates.is_empty() {
            return Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
        }
        self.check(end_entity, now).map(|_| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        no_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// aws-lc-rs, TLS 1.3 suites only, AES-128-GCM first.
///
/// Both ends of every connection are Caasiope nodes, so the preference decides the suite. On
/// this project's machines (x86-64 with VAES and VPCLMULQDQ) aws-lc's AES-128-GCM seals
/// 16 KiB records at ~9 GB/s per core, AES-256-GCM at 4–8 GB/s and ring's at 2.5–4.5 GB/s
/// (docs/PERFORMANCE.md): the record encryption is most of TLS's cost on bulk gossip and sync.
fn provider() -> CryptoProvider {
    use rustls::crypto::aws_lc_rs::{cipher_suite, default_provider};
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..default_provider()
    }
}

/// The server side's TLS configuration ([`server_config`]), for callers that hand it on.
pub type Acceptor = Arc<ServerConfig>;

/// The configuration that accepts connections from `peers`, presenting `node`'s certificate.
pub fn server_config(
    node: &NodeCert,
    peers: impl IntoIterator<Item = Identity>,
) -> Result<Arc<ServerConfig>, NetError> {
    server_config_allowing(node, AllowList::new(peers))
}

/// As [`server_config`], accepting the peers `allowed` holds at each handshake.
pub fn server_config_allowing(node: &NodeCert, allowed: AllowList) -> Result<Arc<ServerConfig>, NetError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(Arc::new(PeerVerifier::allowing(allowed)))
        .with_single_cert(vec![node.cert_der()], node.key_der())?;
    // The records after the handshake are sealed and opened by `crate::secure`, which takes the
    // traffic secrets from rustls.
    config.enable_secret_extraction = true;
    // No session tickets: every connection makes a full handshake, so every certificate is
    // checked (validity included) each time; and no post-handshake message but key updates.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// The configuration that dials `peers`, presenting `node`'s certificate.
pub fn client_config(
    node: &NodeCert,
    peers: impl IntoIterator<Item = Identity>,
) -> Result<Arc<ClientConfig>, NetError> {
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerVerifier::new(peers)))
        .with_client_auth_cert(vec![node.cert_der()], node.key_der())?;
    // As for the server: secrets handed to `crate::secure`, and a full handshake every time.
    config.enable_secret_extraction = true;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

/// The identity of the peer of an established connection, from its certificate.
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Option<Identity> {
    certs.and_then(|c| c.first()).and_then(|c| CertInfo::parse(c).ok()).map(|i| i.identity)
}
