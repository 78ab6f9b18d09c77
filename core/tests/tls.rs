//! mTLS between meshed peers: a good peer is accepted and forwarded; a
//! wrong CA, a wrong SPIFFE ID, an expired certificate, no certificate and
//! plaintext are refused, each with a log line naming the peer and the
//! reason; certificates rotate without dropping open connections.
#![cfg(feature = "tls")]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use pobox::tls::{
    serve_inbound, AllowList, Identity, IdentityFiles, Inbound, Refusal, SpiffeId, TlsClient,
    TlsServer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";
const FRONTEND: &str = "spiffe://cluster.local/ns/shop/sa/frontend";

// === certificates ===

#[path = "support/certs.rs"]
mod certs;
use certs::{identity, Ca};

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

/// A fresh directory for one test's PEM files.
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pobox-tls-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// === a logger that keeps the lines ===

struct Lines(Mutex<Vec<String>>);

impl log::Log for Lines {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}: {}", record.level(), record.target(), record.args());
        self.0.lock().unwrap().push(line);
    }

    fn flush(&self) {}
}

fn lines() -> &'static Lines {
    static LINES: OnceLock<&'static Lines> = OnceLock::new();
    LINES.get_or_init(|| {
        let lines: &'static Lines = Box::leak(Box::new(Lines(Mutex::new(Vec::new()))));
        log::set_logger(lines).unwrap();
        log::set_max_level(log::LevelFilter::Debug);
        lines
    })
}

/// The log line about `peer`, waiting up to 5 s for it.
async fn log_line_about(peer: SocketAddr) -> String {
    let needle = format!(" {peer}");
    for _ in 0..500 {
        let found = lines()
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(&needle))
            .cloned();
        if let Some(line) = found {
            return line;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no log line about {peer}");
}

// === an echo application behind an inbound mTLS listener ===

async fn echo_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

struct Inbound_ {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn inbound(server: TlsServer) -> Inbound_ {
    lines();
    let app = echo_app().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = Inbound {
        app,
        drain: Duration::from_secs(5),
    };
    let task = tokio::spawn(serve_inbound(listener, server, config, async {
        let _ = stopped.await;
    }));
    Inbound_ {
        addr,
        stop: Some(stop),
        task,
    }
}

impl Inbound_ {
    async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve_inbound stops")
            .unwrap()
            .unwrap();
    }
}

/// Writes `msg` and reads the echo back.
async fn echo<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    msg: &[u8],
) -> std::io::Result<Vec<u8>> {
    stream.write_all(msg).await?;
    stream.flush().await?;
    let mut got = vec![0; msg.len()];
    stream.read_exact(&mut got).await?;
    Ok(got)
}

fn web_server(ca: &Ca) -> TlsServer {
    TlsServer::new(
        identity(ca, ca.issue(WEB)),
        AllowList::Ids(vec![id(FRONTEND)]),
    )
    .unwrap()
}

#[tokio::test]
async fn good_peer_is_accepted_and_forwarded() {
    let ca = Ca::new("mesh CA");
    let inbound = inbound(web_server(&ca)).await;
    let client = TlsClient::new(identity(&ca, ca.issue(FRONTEND)));

    let tcp = TcpStream::connect(inbound.addr).await.unwrap();
    let peer = tcp.local_addr().unwrap();
    let mut tls = client.connect(tcp, &id(WEB)).await.unwrap();
    assert_eq!(echo(&mut tls, b"ping").await.unwrap(), b"ping");
    assert_eq!(echo(&mut tls, b"pong pong").await.unwrap(), b"pong pong");
    let line = log_line_about(peer).await;
    assert!(
        line.contains("accepted") && line.contains(FRONTEND),
        "{line}"
    );
    drop(tls);
    inbound.shutdown().await;
}

#[tokio::test]
async fn bad_clients_are_refused_with_a_reason() {
    let ca = Ca::new("mesh CA");
    let other_ca = Ca::new("someone else's CA");
    let inbound = inbound(web_server(&ca)).await;

    // (what, the client's certificate and key, the trust bundle it has, the reason logged)
    let cases: Vec<(&str, (String, String), &Ca, &str)> = vec![
        ("wrong CA", other_ca.issue(FRONTEND), &ca, "unknown CA"),
        ("expired", ca.expired(FRONTEND), &ca, "certificate expired"),
        (
            "wrong SPIFFE ID",
            ca.issue("spiffe://cluster.local/ns/shop/sa/intruder"),
            &ca,
            "SPIFFE ID spiffe://cluster.local/ns/shop/sa/intruder is not on the allow-list",
        ),
        (
            "other trust domain",
            ca.issue("spiffe://other.example/ns/shop/sa/frontend"),
            &ca,
            "is not on the allow-list",
        ),
    ];
    for (what, material, bundle, reason) in cases {
        let client = TlsClient::new(Arc::new(
            Identity::from_pem(
                material.0.as_bytes(),
                material.1.as_bytes(),
                bundle.pem().as_bytes(),
            )
            .unwrap(),
        ));
        let tcp = TcpStream::connect(inbound.addr).await.unwrap();
        let peer = tcp.local_addr().unwrap();
        // TLS 1.3: the client may finish before the server has judged its
        // certificate; then the refusal arrives as an alert on first use.
        if let Ok(mut tls) = client.connect(tcp, &id(WEB)).await {
            assert!(
                echo(&mut tls, b"ping").await.is_err(),
                "{what}: no data flows"
            );
        }
        let line = log_line_about(peer).await;
        assert!(
            line.starts_with("WARN pobox::tls: refused") && line.contains(reason),
            "{what}: {line}"
        );
    }

    // Plaintext: an HTTP request where mTLS is required.
    let mut tcp = TcpStream::connect(inbound.addr).await.unwrap();
    let peer = tcp.local_addr().unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf).await;
    assert!(!buf.starts_with(b"GET"), "nothing is forwarded");
    let line = log_line_about(peer).await;
    assert!(
        line.contains("refused") && line.contains("plaintext"),
        "{line}"
    );

    // No client certificate at all.
    let tcp = TcpStream::connect(inbound.addr).await.unwrap();
    let peer = tcp.local_addr().unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyServer))
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("web").unwrap();
    if let Ok(mut tls) = connector.connect(name, tcp).await {
        assert!(echo(&mut tls, b"ping").await.is_err(), "no data flows");
    }
    let line = log_line_about(peer).await;
    assert!(
        line.contains("refused") && line.contains("no client certificate"),
        "{line}"
    );

    inbound.shutdown().await;
}

#[tokio::test]
async fn bad_servers_are_refused_by_the_client() {
    let ca = Ca::new("mesh CA");
    let other_ca = Ca::new("someone else's CA");
    let client = TlsClient::new(identity(&ca, ca.issue(FRONTEND)));
    let allow = AllowList::TrustDomain("cluster.local".into());
    let cases: Vec<(&str, Arc<Identity>, Refusal)> = vec![
        (
            "wrong SPIFFE ID",
            identity(&ca, ca.issue("spiffe://cluster.local/ns/shop/sa/db")),
            Refusal::WrongIdentity {
                got: id("spiffe://cluster.local/ns/shop/sa/db"),
                expected: id(WEB),
            },
        ),
        (
            "wrong CA",
            // It trusts our CA, so only our side objects.
            Arc::new(identity_other(&other_ca, &ca)),
            Refusal::UnknownIssuer,
        ),
        ("expired", identity(&ca, ca.expired(WEB)), Refusal::Expired),
    ];
    for (what, server_identity, want) in cases {
        let server = TlsServer::new(server_identity, allow.clone()).unwrap();
        let (a, b) = tokio::io::duplex(16 * 1024);
        let serving = tokio::spawn(async move { server.accept(b).await.map(|(_, id)| id) });
        let err = client.connect(a, &id(WEB)).await.unwrap_err();
        assert_eq!(Refusal::of(&err), Some(&want), "{what}: {err}");
        // The server hears why: the client's alert.
        let server_err = serving.await.unwrap().unwrap_err();
        let refusal = Refusal::of(&server_err).unwrap().to_string();
        assert!(refusal.contains("TLS alert"), "{what}: {refusal}");
    }
}

/// A server identity issued by `issuer` that trusts `trusted`.
fn identity_other(issuer: &Ca, trusted: &Ca) -> Identity {
    let (cert, key) = issuer.issue(WEB);
    Identity::from_pem(cert.as_bytes(), key.as_bytes(), trusted.pem().as_bytes()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_times_out() {
    let ca = Ca::new("mesh CA");
    let server = web_server(&ca).handshake_timeout(Duration::from_secs(3));
    let (_client, stream) = tokio::io::duplex(1024);
    let started = tokio::time::Instant::now();
    let err = server.accept(stream).await.unwrap_err();
    assert_eq!(
        Refusal::of(&err),
        Some(&Refusal::Timeout(Duration::from_secs(3)))
    );
    assert_eq!(started.elapsed(), Duration::from_secs(3));
}

#[tokio::test]
async fn rotation_keeps_open_connections() {
    let ca = Ca::new("mesh CA");
    let dir = temp_dir("rotation");
    let files = IdentityFiles {
        cert_chain: dir.join("cert.pem"),
        key: dir.join("key.pem"),
        trust_bundle: dir.join("ca.pem"),
    };
    let write = |(cert, key): (String, String)| {
        std::fs::write(&files.cert_chain, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
    };
    std::fs::write(&files.trust_bundle, ca.pem()).unwrap();
    write(ca.issue(WEB));
    let server_identity = Arc::new(Identity::load(files.clone()).unwrap());
    let first_cert = server_identity.certificate();
    assert_eq!(server_identity.reload(), Ok(false), "unchanged files");
    let inbound = inbound(
        TlsServer::new(server_identity.clone(), AllowList::Ids(vec![id(FRONTEND)])).unwrap(),
    )
    .await;
    let client = TlsClient::new(identity(&ca, ca.issue(FRONTEND)));
    let connect = || async {
        let tcp = TcpStream::connect(inbound.addr).await.unwrap();
        client.connect(tcp, &id(WEB)).await.unwrap()
    };
    let seen = |tls: &pobox::tls::ClientTlsStream<TcpStream>| {
        tls.get_ref().1.peer_certificates().unwrap()[0].clone()
    };

    let mut old = connect().await;
    assert_eq!(seen(&old), first_cert);

    // Rotate by hand.
    write(ca.issue(WEB));
    assert_eq!(server_identity.reload(), Ok(true));
    let second_cert = server_identity.certificate();
    assert_ne!(second_cert, first_cert);
    let mut new = connect().await;
    assert_eq!(
        seen(&new),
        second_cert,
        "new handshakes use the new certificate"
    );
    assert_eq!(echo(&mut old, b"still here").await.unwrap(), b"still here");
    assert_eq!(echo(&mut new, b"new").await.unwrap(), b"new");

    // A broken rotation keeps the last good material.
    std::fs::write(&files.key, "not a key").unwrap();
    let err = server_identity.reload().unwrap_err().to_string();
    assert!(err.contains("key.pem"), "{err}");
    assert_eq!(server_identity.certificate(), second_cert);

    // The watcher picks up the next rotation by itself.
    let watcher = server_identity.watch(Duration::from_millis(20));
    write(ca.issue(WEB));
    let mut waited = 0;
    while server_identity.certificate() == second_cert {
        assert!(waited < 500, "the watcher reloads within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    let third_cert = server_identity.certificate();
    let mut newest = connect().await;
    assert_eq!(seen(&newest), third_cert);
    for conn in [&mut old, &mut new, &mut newest] {
        assert_eq!(echo(conn, b"all open").await.unwrap(), b"all open");
    }
    watcher.abort();
    drop((old, new, newest));
    inbound.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn shutdown_drains_open_connections() {
    let ca = Ca::new("mesh CA");
    let inbound = inbound(web_server(&ca)).await;
    let client = TlsClient::new(identity(&ca, ca.issue(FRONTEND)));
    let tcp = TcpStream::connect(inbound.addr).await.unwrap();
    let mut tls = client.connect(tcp, &id(WEB)).await.unwrap();
    assert_eq!(echo(&mut tls, b"before").await.unwrap(), b"before");
    let addr = inbound.addr;
    let stop = tokio::spawn(inbound.shutdown());
    // The listener closes, but the open connection keeps working until it ends.
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "no new connections after shutdown");
    assert_eq!(echo(&mut tls, b"during").await.unwrap(), b"during");
    assert!(
        !stop.is_finished(),
        "shutdown waits for the open connection"
    );
    tls.shutdown().await.unwrap();
    drop(tls);
    tokio::time::timeout(Duration::from_secs(5), stop)
        .await
        .expect("shutdown ends when the connection does")
        .unwrap();
}

#[test]
fn identity_from_a_service_annotation() {
    let mesh = pobox::Mesh::new(pobox::MeshConfig::new()).unwrap();
    mesh.apply(
        b"apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop, annotations: {pobox.io/service-account: web}}\nspec: {clusterIP: 10.96.0.10, ports: [{port: 80}]}\n",
    )
    .unwrap();
    let snapshot = mesh.snapshot();
    let service = snapshot.service("shop", "web").unwrap().service();
    assert_eq!(
        SpiffeId::for_service(service, "cluster.local").unwrap(),
        Some(id(WEB))
    );
    let err = SpiffeId::for_service(service, "Cluster.Local")
        .unwrap_err()
        .to_string();
    assert!(err.contains("trust domain"), "{err}");
}

/// Accepts any server certificate: a client without mesh credentials.
#[derive(Debug)]
struct AnyServer;

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The README's openssl commands make certificates pobox accepts.
#[tokio::test]
async fn readme_openssl_certificates_work() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("openssl not found: the README's certificate commands are not checked");
        return;
    }
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let block = readme
        .split_once("<!-- tls-certs -->\n```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the README has the tls-certs block")
        .0;
    let dir = temp_dir("readme");
    let out = std::process::Command::new("bash")
        .args(["-euc", block])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let load = |name: &str| {
        let certs = dir.join("certs");
        Arc::new(
            Identity::load(IdentityFiles {
                cert_chain: certs.join(format!("{name}.pem")),
                key: certs.join(format!("{name}.key")),
                trust_bundle: certs.join("ca.pem"),
            })
            .unwrap(),
        )
    };
    let (web, frontend) = (load("web"), load("frontend"));
    assert_eq!(web.id(), id(WEB));
    let server = TlsServer::new(web, AllowList::Ids(vec![id(FRONTEND)])).unwrap();
    let (a, b) = tokio::io::duplex(16 * 1024);
    let serving = tokio::spawn(async move { server.accept(b).await.map(|(_, id)| id) });
    TlsClient::new(frontend).connect(a, &id(WEB)).await.unwrap();
    assert_eq!(serving.await.unwrap().unwrap(), id(FRONTEND));
    let _ = std::fs::remove_dir_all(&dir);
}
