//! mTLS between meshed peers with SPIFFE identities (feature `tls`: rustls
//! with the `ring` provider, tokio).
//!
//! Every workload has an X.509 certificate whose single URI SAN is its
//! SPIFFE ID, `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`
//! ([`SpiffeId`]), signed by a CA of the trust bundle. Both ends present
//! their certificate and verify the other's chain against the bundle; only
//! TLS 1.3 is spoken, and sessions are never resumed, so that every
//! connection is verified with the material in force when it opens.
//!
//! * [`Identity`]: this workload's certificate chain, key and trust bundle,
//!   from PEM files, re-read when they change ([`Identity::reload`],
//!   [`Identity::watch`]). Connections already open keep the material they
//!   were opened with; new handshakes use the new one.
//! * [`TlsClient::connect`]: originate mTLS over any stream (a TCP
//!   connection to the endpoint the mesh picked) and require the peer to be
//!   a given SPIFFE ID, e.g. [`SpiffeId::for_service`] of the Service picked
//!   through (its `pobox.io/service-account` annotation).
//! * [`TlsServer::accept`]: terminate mTLS and require the client to be on
//!   an [`AllowList`]; [`serve_inbound`] does it on a listener and forwards
//!   each accepted connection to the local application.
//!
//! A refused peer is named with its reason ([`Refusal`]): plaintext, no
//! certificate, unknown issuer (wrong CA), expired, wrong or unlisted
//! SPIFFE ID, handshake timeout. [`serve_inbound`] writes one `warn` line
//! per refused peer through the [`log`](https://docs.rs/log) facade (target
//! `pobox::tls`), so the embedder's logger (env_logger, tracing's `log`
//! bridge, ...) decides where it goes.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::model::Service;
use crate::validate::{is_dns1123_label, is_dns1123_subdomain};

pub use tokio_rustls::{
    client::TlsStream as ClientTlsStream, server::TlsStream as ServerTlsStream,
};

/// How long a handshake may take before the peer is refused.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const LOG_TARGET: &str = "pobox::tls";

// === SpiffeId ===

/// A workload identity: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
///
/// ```
/// use pobox::tls::SpiffeId;
///
/// let id: SpiffeId = "spiffe://cluster.local/ns/shop/sa/web".parse().unwrap();
/// assert_eq!((id.trust_domain(), id.namespace(), id.service_account()), ("cluster.local", "shop", "web"));
/// assert_eq!(id.to_string(), "spiffe://cluster.local/ns/shop/sa/web");
/// assert!("spiffe://cluster.local/web".parse::<SpiffeId>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// The canonical URI; the parts are found by position.
    uri: Arc<str>,
}

/// Why a SPIFFE ID, trust domain or identity setting is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeIdError {
    input: String,
    reason: &'static str,
}

impl fmt::Display for SpiffeIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad SPIFFE ID {:?}: {}", self.input, self.reason)
    }
}

impl std::error::Error for SpiffeIdError {}

/// A SPIFFE trust domain: lowercase letters, digits, `.`, `-` and `_`, at
/// most 255 characters (the SPIFFE ID specification).
fn check_trust_domain(td: &str) -> Result<(), &'static str> {
    if td.is_empty() {
        return Err("the trust domain is empty");
    }
    if td.len() > 255 {
        return Err("the trust domain is longer than 255 characters");
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("the trust domain may hold only lowercase letters, digits, '.', '-' and '_'");
    }
    Ok(())
}

impl SpiffeId {
    /// The identity of `service_account` in `namespace` of `trust_domain`.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, SpiffeIdError> {
        let bad = |reason| SpiffeIdError {
            input: format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"),
            reason,
        };
        check_trust_domain(trust_domain).map_err(bad)?;
        if !is_dns1123_label(namespace) {
            return Err(bad("the namespace is not a DNS-1123 label"));
        }
        if !is_dns1123_subdomain(service_account) {
            return Err(bad("the service account is not a DNS-1123 subdomain"));
        }
        Ok(SpiffeId {
            uri: format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}").into(),
        })
    }

    /// Parses `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub fn parse(input: &str) -> Result<SpiffeId, SpiffeIdError> {
        let bad = |reason| SpiffeIdError {
            input: input.to_owned(),
            reason,
        };
        let rest = input
            .strip_prefix("spiffe://")
            .ok_or_else(|| bad("it must start with spiffe://"))?;
        if rest.contains(['?', '#']) {
            return Err(bad("a SPIFFE ID has no query or fragment"));
        }
        let (td, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("the path /ns/<namespace>/sa/<service-account> is missing"))?;
        if td.contains([':', '@']) {
            return Err(bad("the trust domain has no port or user info"));
        }
        check_trust_domain(td).map_err(bad)?;
        match path.split('/').collect::<Vec<_>>()[..] {
            ["ns", ns, "sa", sa] => SpiffeId::new(td, ns, sa).map_err(|e| bad(e.reason)),
            _ => Err(bad("the path must be /ns/<namespace>/sa/<service-account>")),
        }
    }

    /// The identity the pods of `service` present: its namespace and the
    /// service account its `pobox.io/service-account` annotation names;
    /// `None` when it has no such annotation (its peers are not meshed).
    pub fn for_service(
        service: &Service,
        trust_domain: &str,
    ) -> Result<Option<SpiffeId>, SpiffeIdError> {
        service
            .service_account()
            .map(|sa| SpiffeId::new(trust_domain, service.key().namespace(), sa))
            .transpose()
    }

    /// The part at `index` of `<trust-domain>/ns/<namespace>/sa/<sa>`.
    fn part(&self, index: usize) -> &str {
        self.uri["spiffe://".len()..]
            .split('/')
            .nth(index)
            .expect("a valid SPIFFE ID has five parts")
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        self.part(0)
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        self.part(2)
    }

    /// The service account.
    pub fn service_account(&self) -> &str {
        self.part(4)
    }

    /// The URI, `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub fn as_str(&self) -> &str {
        &self.uri
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::parse(s)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

// === URI SANs (a minimal DER walk) ===

/// The URI SANs of a DER certificate. webpki checks the chain but does not
/// expose URI names, and this walk beats an X.509 parser dependency.
fn uri_sans(cert: &[u8]) -> Option<Vec<&str>> {
    const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];
    let (_, certificate, _) = tlv(cert)?;
    let (_, mut tbs, _) = tlv(certificate)?;
    while !tbs.is_empty() {
        let (tag, value, rest) = tlv(tbs)?;
        tbs = rest;
        if tag != 0xa3 {
            continue;
        }
        let (_, mut extensions, _) = tlv(value)?;
        while !extensions.is_empty() {
            let (_, extension, rest) = tlv(extensions)?;
            extensions = rest;
            let (_, oid, mut fields) = tlv(extension)?;
            if oid != SAN_OID {
                continue;
            }
            let (mut tag, mut value, mut after) = tlv(fields)?;
            if tag == 0x01 {
                // `critical`
                fields = after;
                (tag, value, after) = tlv(fields)?;
            }
            let _ = after;
            if tag != 0x04 {
                return None;
            }
            let (_, mut names, _) = tlv(value)?;
            let mut uris = Vec::new();
            while !names.is_empty() {
                let (tag, name, rest) = tlv(names)?;
                names = rest;
                if tag == 0x86 {
                    uris.push(std::str::from_utf8(name).ok()?);
                }
            }
            return Some(uris);
        }
    }
    Some(Vec::new())
}

/// One DER tag-length-value: (tag, value, the rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || input.len() < n {
            return None;
        }
        let len = input[..n]
            .iter()
            .fold(0usize, |l, &b| (l << 8) | b as usize);
        input = &input[n..];
        len
    };
    (input.len() >= len).then(|| (tag, &input[..len], &input[len..]))
}

/// The SPIFFE ID of a certificate: its one `spiffe://` URI SAN.
fn spiffe_id_of(cert: &[u8]) -> Result<SpiffeId, Refusal> {
    let uris = uri_sans(cert).ok_or(Refusal::NoSpiffeId)?;
    let mut spiffe = uris.iter().filter(|u| u.starts_with("spiffe://"));
    match (spiffe.next(), spiffe.next()) {
        (Some(uri), None) => SpiffeId::parse(uri).map_err(|e| Refusal::BadSpiffeId(e.to_string())),
        (Some(_), Some(_)) => Err(Refusal::BadSpiffeId(
            "the certificate has more than one spiffe:// URI SAN".into(),
        )),
        (None, _) => Err(Refusal::NoSpiffeId),
    }
}

// === Refusal ===

/// Why a peer was refused. It is the inner error of the `io::Error` that
/// [`TlsClient::connect`] and [`TlsServer::accept`] return
/// ([`Refusal::of`]), and its `Display` is the reason in the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The peer did not start a TLS handshake: plaintext where mTLS is required.
    Plaintext,
    /// The client presented no certificate.
    NoCertificate,
    /// The peer's chain does not lead to the trust bundle: a wrong CA.
    UnknownIssuer,
    /// The peer's certificate has expired.
    Expired,
    /// The peer's certificate is not valid yet.
    NotYetValid,
    /// The peer's certificate is unusable for another reason (bad signature,
    /// wrong key usage, revoked, ...).
    BadCertificate(String),
    /// The peer's certificate has no `spiffe://` URI SAN.
    NoSpiffeId,
    /// The peer's SPIFFE URI SAN is malformed.
    BadSpiffeId(String),
    /// The server is not the identity the client expected.
    WrongIdentity {
        /// What the peer is.
        got: SpiffeId,
        /// What it had to be.
        expected: SpiffeId,
    },
    /// The client's identity is not on the server's allow-list.
    NotAllowed(SpiffeId),
    /// The peer refused us with this TLS alert (it did not accept our
    /// certificate, say).
    Alert(String),
    /// The handshake did not finish in time.
    Timeout(Duration),
    /// The connection closed or failed during the handshake.
    Closed(String),
    /// Any other TLS error.
    Tls(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Plaintext => f.write_str(
                "plaintext: the peer did not start a TLS handshake, and mTLS is required",
            ),
            Refusal::NoCertificate => f.write_str("no client certificate"),
            Refusal::UnknownIssuer => {
                f.write_str("certificate not issued by the trust bundle (unknown CA)")
            }
            Refusal::Expired => f.write_str("certificate expired"),
            Refusal::NotYetValid => f.write_str("certificate not valid yet"),
            Refusal::BadCertificate(why) => write!(f, "bad certificate: {why}"),
            Refusal::NoSpiffeId => f.write_str("certificate has no spiffe:// URI SAN"),
            Refusal::BadSpiffeId(why) => write!(f, "certificate SPIFFE ID: {why}"),
            Refusal::WrongIdentity { got, expected } => {
                write!(f, "wrong SPIFFE ID: peer is {got}, expected {expected}")
            }
            Refusal::NotAllowed(id) => write!(f, "SPIFFE ID {id} is not on the allow-list"),
            Refusal::Alert(alert) => {
                write!(f, "the peer refused the handshake (TLS alert {alert})")
            }
            Refusal::Timeout(after) => write!(f, "handshake timed out after {after:?}"),
            Refusal::Closed(why) => write!(f, "connection lost during the handshake: {why}"),
            Refusal::Tls(why) => write!(f, "TLS error: {why}"),
        }
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    /// The refusal inside an error from [`TlsClient::connect`] or
    /// [`TlsServer::accept`].
    pub fn of(error: &io::Error) -> Option<&Refusal> {
        error.get_ref()?.downcast_ref::<Refusal>()
    }

    fn into_io(self) -> io::Error {
        let kind = match self {
            Refusal::Plaintext => io::ErrorKind::InvalidData,
            Refusal::Timeout(_) => io::ErrorKind::TimedOut,
            Refusal::Closed(_) => io::ErrorKind::ConnectionAborted,
            _ => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, self)
    }

    /// Classifies a handshake failure.
    fn from_handshake(error: io::Error) -> Refusal {
        let Some(tls) = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        else {
            return Refusal::Closed(error.to_string());
        };
        use rustls::Error as E;
        match tls {
            E::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
            | E::InvalidMessage(rustls::InvalidMessage::UnknownProtocolVersion)
            | E::InvalidMessage(rustls::InvalidMessage::MessageTooLarge) => Refusal::Plaintext,
            E::NoCertificatesPresented => Refusal::NoCertificate,
            E::InvalidCertificate(e) => Refusal::from_certificate(e),
            E::AlertReceived(alert) => Refusal::Alert(format!("{alert:?}")),
            other => Refusal::Tls(other.to_string()),
        }
    }

    fn from_certificate(error: &CertificateError) -> Refusal {
        match error {
            CertificateError::UnknownIssuer => Refusal::UnknownIssuer,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Refusal::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Refusal::NotYetValid
            }
            CertificateError::Other(OtherError(inner)) => match inner.downcast_ref::<Refusal>() {
                Some(refusal) => refusal.clone(),
                None => Refusal::BadCertificate(inner.to_string()),
            },
            other => Refusal::BadCertificate(format!("{other:?}")),
        }
    }

    fn into_rustls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(self))))
    }
}

// === Identity ===

/// Where an [`Identity`] is read from: PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFiles {
    /// This workload's certificate, then any intermediates.
    pub cert_chain: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA certificates peers must chain to.
    pub trust_bundle: PathBuf,
}

/// An error loading identity material, naming the file and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityError(String);

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IdentityError {}

/// Material in force: parsed once per load, shared by every handshake that
/// starts while it is current.
struct Material {
    /// The PEM bytes it was parsed from, to tell whether the files changed.
    source: [Vec<u8>; 3],
    id: SpiffeId,
    certified: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    client_verifier: Arc<dyn ClientCertVerifier>,
}

/// This workload's certificate chain, key and trust bundle, reloadable.
///
/// Readers load the material once per handshake (lock-free); a reload
/// swaps it atomically, so open connections are untouched and new
/// handshakes use the new material. A reload that fails keeps the last
/// good material.
pub struct Identity {
    files: Option<IdentityFiles>,
    current: ArcSwap<Material>,
    provider: Arc<CryptoProvider>,
    /// The last reload error logged, to log each distinct one once.
    last_error: Mutex<Option<String>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.current.load().id)
            .field("files", &self.files)
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Identity {
    /// An identity from PEM text that never changes.
    pub fn from_pem(
        cert_chain: &[u8],
        key: &[u8],
        trust_bundle: &[u8],
    ) -> Result<Identity, IdentityError> {
        let provider = provider();
        let names = ["certificate chain", "key", "trust bundle"];
        let material = Material::parse(
            [cert_chain.to_vec(), key.to_vec(), trust_bundle.to_vec()],
            names,
            &provider,
        )?;
        Ok(Identity {
            files: None,
            current: ArcSwap::from_pointee(material),
            provider,
            last_error: Mutex::new(None),
        })
    }

    /// Loads an identity from PEM files; [`reload`](Self::reload) and
    /// [`watch`](Self::watch) re-read them.
    pub fn load(files: IdentityFiles) -> Result<Identity, IdentityError> {
        let provider = provider();
        let material = Material::read(&files, None, &provider)?.expect("no previous material");
        Ok(Identity {
            files: Some(files),
            current: ArcSwap::from_pointee(material),
            provider,
            last_error: Mutex::new(None),
        })
    }

    /// This workload's SPIFFE ID, from its certificate.
    pub fn id(&self) -> SpiffeId {
        self.current.load().id.clone()
    }

    /// The DER certificate presented now (the chain's first).
    pub fn certificate(&self) -> CertificateDer<'static> {
        self.current.load().certified.cert[0].clone()
    }

    /// Re-reads the files; `Ok(true)` when they changed and the new
    /// material is now in force, `Ok(false)` when they are unchanged (or the
    /// identity has no files). On error the current material stays.
    pub fn reload(&self) -> Result<bool, IdentityError> {
        let Some(files) = &self.files else {
            return Ok(false);
        };
        let current = self.current.load();
        match Material::read(files, Some(&current.source), &self.provider)? {
            None => Ok(false),
            Some(material) => {
                self.current.store(Arc::new(material));
                Ok(true)
            }
        }
    }

    /// Re-reads the files every `interval` on the current tokio runtime
    /// until the identity is dropped; logs (target `pobox::tls`) each
    /// rotation at `info` and each distinct reload error at `warn`. A
    /// rotation written file by file may fail once (a new certificate with
    /// the old key) and succeed at the next tick.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Identity> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(identity) = weak.upgrade() else {
                    return;
                };
                identity.reload_and_log();
            }
        })
    }

    fn reload_and_log(&self) {
        let result = self.reload();
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(true) => {
                *last = None;
                log::info!(target: LOG_TARGET, "identity {} reloaded from its files", self.id());
            }
            Ok(false) => {}
            Err(e) => {
                let message = e.to_string();
                if last.as_deref() != Some(message.as_str()) {
                    log::warn!(target: LOG_TARGET, "identity reload failed, keeping the current one: {message}");
                    *last = Some(message);
                }
            }
        }
    }

    fn material(&self) -> Arc<Material> {
        self.current.load_full()
    }
}

impl Material {
    /// Reads the files; `None` when they hold exactly `previous`.
    fn read(
        files: &IdentityFiles,
        previous: Option<&[Vec<u8>; 3]>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Option<Material>, IdentityError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| IdentityError(format!("{}: {e}", path.display())))
        };
        let source = [
            read(&files.cert_chain)?,
            read(&files.key)?,
            read(&files.trust_bundle)?,
        ];
        if previous == Some(&source) {
            return Ok(None);
        }
        let names =
            [&files.cert_chain, &files.key, &files.trust_bundle].map(|p| p.display().to_string());
        Material::parse(source, names, provider).map(Some)
    }

    fn parse(
        source: [Vec<u8>; 3],
        names: [impl fmt::Display; 3],
        provider: &Arc<CryptoProvider>,
    ) -> Result<Material, IdentityError> {
        let [chain_name, key_name, bundle_name] = names;
        let certs = |pem: &[u8], name: &dyn fmt::Display| {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| IdentityError(format!("{name}: not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(IdentityError(format!("{name}: no CERTIFICATE in it")));
            }
            Ok(certs)
        };
        let chain = certs(&source[0], &chain_name)?;
        let key = PrivateKeyDer::from_pem_slice(&source[1])
            .map_err(|e| IdentityError(format!("{key_name}: no private key: {e}")))?;
        let bundle = certs(&source[2], &bundle_name)?;

        let id = spiffe_id_of(&chain[0])
            .map_err(|e| IdentityError(format!("{chain_name}: its first certificate: {e}")))?;
        let certified = CertifiedKey::from_der(chain, key, provider)
            .map_err(|e| IdentityError(format!("{key_name}: does not fit {chain_name}: {e}")))?;
        let mut roots = RootCertStore::empty();
        for (i, ca) in bundle.into_iter().enumerate() {
            roots
                .add(ca)
                .map_err(|e| IdentityError(format!("{bundle_name}: certificate {}: {e}", i + 1)))?;
        }
        let roots = Arc::new(roots);
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| IdentityError(format!("{bundle_name}: {e}")))?;
        Ok(Material {
            source,
            id,
            certified: Arc::new(certified),
            roots,
            client_verifier,
        })
    }
}

// === verifiers and resolvers over the current material ===

/// Presents the identity's current certificate, on either side.
#[derive(Debug)]
struct Presenter(Arc<Identity>);

impl ResolvesServerCert for Presenter {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.material().certified.clone())
    }
}

impl ResolvesClientCert for Presenter {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.material().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn algorithms(identity: &Identity) -> WebPkiSupportedAlgorithms {
    identity.provider.signature_verification_algorithms
}

/// The client's check of the server: chain to the current bundle, then
/// exactly the expected SPIFFE ID.
#[derive(Debug)]
struct ServerVerifier {
    identity: Arc<Identity>,
    expected: SpiffeId,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.identity.material().roots,
            intermediates,
            now,
            algorithms(&self.identity).all,
        )?;
        let got = spiffe_id_of(end_entity).map_err(Refusal::into_rustls)?;
        if got != self.expected {
            return Err(Refusal::WrongIdentity {
                got,
                expected: self.expected.clone(),
            }
            .into_rustls());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms(&self.identity))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms(&self.identity))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms(&self.identity).supported_schemes()
    }
}

/// Which client identities a [`TlsServer`] accepts (after their chain is
/// verified against the trust bundle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowList {
    /// Any workload of this trust domain.
    TrustDomain(String),
    /// Exactly these identities.
    Ids(Vec<SpiffeId>),
}

impl AllowList {
    /// Whether `id` may connect.
    pub fn allows(&self, id: &SpiffeId) -> bool {
        match self {
            AllowList::TrustDomain(td) => id.trust_domain() == td,
            AllowList::Ids(ids) => ids.contains(id),
        }
    }

    fn check(&self) -> Result<(), SpiffeIdError> {
        match self {
            AllowList::TrustDomain(td) => check_trust_domain(td).map_err(|reason| SpiffeIdError {
                input: format!("spiffe://{td}"),
                reason,
            }),
            AllowList::Ids(_) => Ok(()),
        }
    }
}

/// The server's check of a client: chain to the current bundle, then a
/// SPIFFE ID on the allow-list.
#[derive(Debug)]
struct ClientVerifier {
    identity: Arc<Identity>,
    allow: AllowList,
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.identity
            .material()
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)?;
        let id = spiffe_id_of(end_entity).map_err(Refusal::into_rustls)?;
        if !self.allow.allows(&id) {
            return Err(Refusal::NotAllowed(id).into_rustls());
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms(&self.identity))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms(&self.identity))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms(&self.identity).supported_schemes()
    }
}

async fn handshake<T>(
    timeout: Duration,
    handshake: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(Refusal::from_handshake(e).into_io()),
        Err(_) => Err(Refusal::Timeout(timeout).into_io()),
    }
}

// === TlsClient ===

/// Originates mTLS to meshed peers.
#[derive(Debug, Clone)]
pub struct TlsClient {
    identity: Arc<Identity>,
    base: Arc<ClientConfig>,
    handshake_timeout: Duration,
}

impl TlsClient {
    /// A client presenting `identity`.
    pub fn new(identity: Arc<Identity>) -> TlsClient {
        let placeholder = ServerVerifier {
            identity: identity.clone(),
            expected: identity.id(),
        };
        let mut base = ClientConfig::builder_with_provider(identity.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("the ring provider supports TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(placeholder))
            .with_client_cert_resolver(Arc::new(Presenter(identity.clone())));
        // Identity is the SPIFFE ID, not a host name: no SNI, and no
        // resumption, so every connection is verified against the material
        // in force when it opens.
        base.enable_sni = false;
        base.resumption = Resumption::disabled();
        TlsClient {
            identity,
            base: Arc::new(base),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// How long a handshake may take (default [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn handshake_timeout(mut self, timeout: Duration) -> TlsClient {
        self.handshake_timeout = timeout;
        self
    }

    /// The identity presented.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// Runs the client handshake over `stream` and requires the server to
    /// be `expected` (its chain verified against the trust bundle, its URI
    /// SAN equal to `expected`). An error's [`Refusal::of`] says why.
    pub async fn connect<S>(&self, stream: S, expected: &SpiffeId) -> io::Result<ClientTlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut config = (*self.base).clone();
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(ServerVerifier {
                identity: self.identity.clone(),
                expected: expected.clone(),
            }));
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from("pobox.mesh.invalid").expect("a valid DNS name");
        handshake(self.handshake_timeout, connector.connect(name, stream)).await
    }
}

// === TlsServer ===

/// Terminates mTLS from meshed peers.
#[derive(Debug, Clone)]
pub struct TlsServer {
    config: Arc<ServerConfig>,
    handshake_timeout: Duration,
}

impl TlsServer {
    /// A server presenting `identity` and accepting the clients `allow`
    /// lets in.
    pub fn new(identity: Arc<Identity>, allow: AllowList) -> Result<TlsServer, SpiffeIdError> {
        allow.check()?;
        let verifier = ClientVerifier {
            identity: identity.clone(),
            allow,
        };
        let mut config = ServerConfig::builder_with_provider(identity.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("the ring provider supports TLS 1.3")
            .with_client_cert_verifier(Arc::new(verifier))
            .with_cert_resolver(Arc::new(Presenter(identity)));
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(TlsServer {
            config: Arc::new(config),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }

    /// How long a handshake may take (default [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn handshake_timeout(mut self, timeout: Duration) -> TlsServer {
        self.handshake_timeout = timeout;
        self
    }

    /// Runs the server handshake over `stream`; returns the TLS stream and
    /// the client's verified SPIFFE ID. An error's [`Refusal::of`] says why
    /// the client was refused.
    pub async fn accept<S>(&self, stream: S) -> io::Result<(ServerTlsStream<S>, SpiffeId)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.clone());
        let tls = handshake(self.handshake_timeout, acceptor.accept(stream)).await?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| Refusal::NoCertificate.into_io())?;
        let id = spiffe_id_of(leaf).map_err(Refusal::into_io)?;
        Ok((tls, id))
    }
}

// === the inbound side ===

/// What [`serve_inbound`] forwards to, and how it stops.
#[derive(Debug, Clone)]
pub struct Inbound {
    /// The local application's address.
    pub app: SocketAddr,
    /// How long open connections may run on after shutdown begins; then
    /// they are cut.
    pub drain: Duration,
}

/// Terminates mTLS on `listener` and forwards each accepted connection to
/// the local application, until `shutdown` resolves; then stops accepting
/// and lets open connections finish for up to `inbound.drain`.
///
/// Logs (target `pobox::tls`) one `warn` line per refused peer, naming its
/// address and the [`Refusal`], and one `debug` line per accepted one.
pub async fn serve_inbound(
    listener: TcpListener,
    server: TlsServer,
    inbound: Inbound,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: the listener
                        // itself is fine; try again shortly.
                        log::warn!(target: LOG_TARGET, "accept on {:?}: {e}", listener.local_addr());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let server = server.clone();
                let app = inbound.app;
                connections.spawn(async move { forward(stream, peer, &server, app).await });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(inbound.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        log::warn!(
            target: LOG_TARGET,
            "shutdown: {} connections still open after {:?}, closing them",
            connections.len(),
            inbound.drain
        );
        connections.shutdown().await;
    }
    Ok(())
}

async fn forward(stream: TcpStream, peer: SocketAddr, server: &TlsServer, app: SocketAddr) {
    let (mut tls, id) = match server.accept(stream).await {
        Ok(accepted) => accepted,
        Err(e) => {
            match Refusal::of(&e) {
                Some(refusal) => log::warn!(target: LOG_TARGET, "refused {peer}: {refusal}"),
                None => log::warn!(target: LOG_TARGET, "refused {peer}: {e}"),
            }
            return;
        }
    };
    log::debug!(target: LOG_TARGET, "accepted {peer} as {id}");
    let mut upstream = match TcpStream::connect(app).await {
        Ok(upstream) => upstream,
        Err(e) => {
            log::warn!(target: LOG_TARGET, "{peer} ({id}): cannot reach the application at {app}: {e}");
            return;
        }
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await {
        log::debug!(target: LOG_TARGET, "{peer} ({id}): {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids() {
        let ok = "spiffe://cluster.local/ns/default/sa/web.v2";
        assert_eq!(SpiffeId::parse(ok).unwrap().to_string(), ok);
        let cases = [
            (
                "http://cluster.local/ns/a/sa/b",
                "must start with spiffe://",
            ),
            ("spiffe://cluster.local", "path"),
            ("spiffe:///ns/a/sa/b", "trust domain is empty"),
            ("spiffe://Cluster.local/ns/a/sa/b", "lowercase"),
            ("spiffe://td:8080/ns/a/sa/b", "no port"),
            ("spiffe://td/ns/a/sa/b?x=1", "no query"),
            (
                "spiffe://td/ns/a/sa",
                "/ns/<namespace>/sa/<service-account>",
            ),
            (
                "spiffe://td/ns/a/sa/b/c",
                "/ns/<namespace>/sa/<service-account>",
            ),
            ("spiffe://td/ns/A/sa/b", "namespace"),
            ("spiffe://td/ns/a/sa/b_c", "service account"),
        ];
        for (input, reason) in cases {
            let err = SpiffeId::parse(input).unwrap_err().to_string();
            assert!(
                err.contains(input) && err.contains(reason),
                "{input}: {err}"
            );
        }
    }

    #[test]
    fn tlv_lengths() {
        assert_eq!(
            tlv(&[0x04, 0x01, 0xaa, 0xbb]),
            Some((0x04, &[0xaa][..], &[0xbb][..]))
        );
        let long = [&[0x04, 0x81, 0x80][..], &[7; 0x80]].concat();
        assert_eq!(tlv(&long).map(|t| t.1.len()), Some(0x80));
        assert_eq!(tlv(&[0x04, 0x05, 0x00]), None, "truncated");
        assert_eq!(tlv(&[0x04, 0x80]), None, "indefinite length is not DER");
    }
}
