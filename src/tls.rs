//! TLS on the two HTTP listeners, and the one place that decides how this node
//! dials its peers.
//!
//! Both listeners serve plain HTTP unless configured otherwise:
//! - the public listener serves the chain of `public_tls_cert_file` with the key
//!   of `public_tls_key_file` (browsers and services verify it as they would any
//!   site; no client certificate is asked for);
//! - the internal listener serves `internal_tls_cert_file` and *requires* a client
//!   certificate issued by `internal_tls_ca_file` (mutual TLS); this node presents
//!   the same certificate when it dials a peer and trusts only that CA for the
//!   peer's answer. So a peer proves itself twice: by its certificate, then, as
//!   before, by the cluster secret that signs every request.
//!
//! rustls with the ring provider, named explicitly: no process-wide default is
//! installed or needed, so nodes of one test process and embedders with their
//! own rustls set-up do not interfere. PEM files are read and checked once, when
//! the configuration loads ([`crate::config`] turns every problem here into an
//! error naming the key); what the listeners and clients get is ready-built.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::Config;

/// The only ALPN protocol of the internal listener's clients: peers speak HTTP/1.1.
const HTTP1: &[u8] = b"http/1.1";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Which of a listener's PEM files a problem is about, so that the configuration
/// error can name its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemFile {
    Cert,
    Key,
    Ca,
}

/// A problem with one of the PEM files, in words.
#[derive(Debug)]
pub struct PemError {
    pub file: PemFile,
    pub problem: String,
}

impl PemError {
    fn new(file: PemFile, problem: impl Into<String>) -> PemError {
        PemError {
            file,
            problem: problem.into(),
        }
    }
}

/// Every certificate of a PEM file, in order (other PEM sections are skipped).
fn read_certs(path: &Path, file: PemFile) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes =
        std::fs::read(path).map_err(|e| PemError::new(file, format!("cannot read it: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::new(file, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(PemError::new(
            file,
            "no PEM certificate in it (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let bytes = std::fs::read(path)
        .map_err(|e| PemError::new(PemFile::Key, format!("cannot read it: {e}")))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => PemError::new(
            PemFile::Key,
            "no PEM private key in it (-----BEGIN PRIVATE KEY-----)",
        ),
        e => PemError::new(PemFile::Key, format!("not valid PEM: {e}")),
    })
}

/// The certificates of a PEM bundle as trust anchors.
fn read_roots(path: &Path) -> Result<Arc<RootCertStore>, PemError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, PemFile::Ca)? {
        roots
            .add(cert)
            .map_err(|e| PemError::new(PemFile::Ca, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// Reads a chain and its key, checked against each other.
fn read_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), PemError> {
    let chain = read_certs(cert, PemFile::Cert)?;
    let key = read_key(key)?;
    Ok((chain, key))
}

/// Which file a rustls error about a chain and its key is about.
fn identity_error(error: rustls::Error) -> PemError {
    match error {
        rustls::Error::InconsistentKeys(_) => PemError::new(
            PemFile::Key,
            "it does not match the certificate (the first of the chain)",
        ),
        rustls::Error::InvalidCertificate(e) => {
            PemError::new(PemFile::Cert, format!("not a usable certificate: {e}"))
        }
        e => PemError::new(PemFile::Key, format!("not a usable private key: {e}")),
    }
}

/// TLS of the public listener: its certificate chain and key.
#[derive(Clone)]
pub struct PublicTls {
    server: Arc<ServerConfig>,
}

impl PublicTls {
    /// Reads and checks `cert` (the chain, leaf first) and `key` (PEM).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<PublicTls, PemError> {
        let (chain, key) = read_identity(cert, key)?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(identity_error)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(identity_error)?;
        Ok(PublicTls {
            server: Arc::new(server),
        })
    }

    /// The rustls configuration of the listener.
    pub fn server_config(&self) -> ServerConfig {
        (*self.server).clone()
    }
}

impl fmt::Debug for PublicTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicTls").finish_non_exhaustive()
    }
}

/// Mutual TLS between peers: the internal listener's configuration (which asks
/// every client for a certificate issued by the CA) and the client side.
#[derive(Clone)]
pub struct InternalTls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl InternalTls {
    /// Reads and checks this node's chain and key and the CA bundle that issues
    /// the certificates of the cluster's nodes. The node's own certificate must be
    /// one that the CA accepts for a client: otherwise every peer would refuse it.
    pub fn from_pem_files(cert: &Path, key: &Path, ca: &Path) -> Result<InternalTls, PemError> {
        let (chain, key) = read_identity(cert, key)?;
        let roots = read_roots(ca)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| PemError::new(PemFile::Ca, format!("not a usable CA bundle: {e}")))?;
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or_else(|| PemError::new(PemFile::Cert, "no certificate in it"))?;
        verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| {
                PemError::new(
                    PemFile::Cert,
                    format!(
                        "not accepted by the CA bundle of `internal_tls_ca_file` \
                         (peers would refuse this node): {e}"
                    ),
                )
            })?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(identity_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(identity_error)?;
        let mut client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(identity_error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(identity_error)?;
        client.alpn_protocols = vec![HTTP1.to_vec()];
        Ok(InternalTls {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// The rustls configuration of the internal listener.
    pub fn server_config(&self) -> ServerConfig {
        (*self.server).clone()
    }

    /// The rustls configuration for dialing peers.
    pub fn client_config(&self) -> ClientConfig {
        (*self.client).clone()
    }
}

impl fmt::Debug for InternalTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InternalTls").finish_non_exhaustive()
    }
}

/// A client configuration that trusts only the CA certificates of the PEM bundle
/// at `ca` and presents no certificate (the command-line tools use it for a
/// node's public listener).
pub fn client_config_trusting(ca: &Path) -> Result<ClientConfig, PemError> {
    let roots = read_roots(ca)?;
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| PemError::new(PemFile::Ca, e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    /// `<scheme>://<addr><path>`; `addr` is `host:port`, `path` empty or starting with `/`.
    pub fn url(self, addr: &str, path: &str) -> String {
        format!("{}://{addr}{path}", self.as_str())
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How this node reaches peers' internal listeners, decided once from the
/// configuration: every node-to-node client is built from here and every URL to
/// a peer made here, so none can fall back to plain HTTP when TLS is on.
#[derive(Clone, Debug)]
pub struct PeerTransport {
    tls: Option<Arc<InternalTls>>,
    /// Where connections to peers leave from: the internal listener's address
    /// when it is a specific one (on a host with several, peers then see this
    /// node's traffic come from the address they dial it at).
    source: Option<std::net::IpAddr>,
}

impl PeerTransport {
    pub fn new(config: &Config) -> PeerTransport {
        let ip = config.internal_addr.ip();
        PeerTransport {
            tls: config.internal_tls.clone().map(Arc::new),
            source: (!ip.is_unspecified()).then_some(ip),
        }
    }

    pub fn scheme(&self) -> Scheme {
        match self.tls {
            Some(_) => Scheme::Https,
            None => Scheme::Http,
        }
    }

    /// The URL of `path` on the internal listener at `internal_addr` (`host:port`).
    pub fn url(&self, internal_addr: &str, path: &str) -> String {
        self.scheme().url(internal_addr, path)
    }

    /// A client builder with this transport's TLS (and no proxy: peers are
    /// dialed directly); the caller adds timeouts and pool settings.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let builder = reqwest::Client::builder()
            .no_proxy()
            .local_address(self.source);
        match &self.tls {
            Some(tls) => builder
                .use_preconfigured_tls(tls.client_config())
                .https_only(true),
            None => builder,
        }
    }
}

/// True when `error` (a failed request) failed in TLS: a certificate that the
/// CA did not issue, a peer that refused ours, or a peer that does not speak TLS.
pub fn is_tls_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<rustls::Error>() {
            return true;
        }
        // tokio-rustls wraps the rustls error in an io::Error (which reqwest's
        // connector wraps again), and io::Error's `source()` skips the error it
        // wraps: look inside instead.
        next = match error
            .downcast_ref::<std::io::Error>()
            .and_then(|e| e.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    false
}

/// An error and its causes, `: `-separated: reqwest's own text hides why a
/// handshake failed.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
