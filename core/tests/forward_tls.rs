//! The forwarder originating mTLS to endpoints: a client's plain TCP
//! connection is carried over mTLS to the endpoint's inbound side, which
//! terminates it and forwards to the application; an endpoint presenting
//! another identity, or a Service naming none, gets no bytes.

use std::net::SocketAddr;
use std::time::Duration;

use pobox::runtime::{Listen, Proxy, ProxyConfig};
use pobox::tls::{serve_inbound, AllowList, Inbound, TlsClient, TlsServer};
use pobox::{Mesh, MeshConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[path = "support/certs.rs"]
mod certs;
use certs::{identity, Ca};

const WEB: &str = "spiffe://cluster.local/ns/default/sa/web";
const FRONTEND: &str = "spiffe://cluster.local/ns/default/sa/frontend";

/// The application: answers each connection's first line with
/// `web says: <line>` and closes.
async fn app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let line = String::from_utf8_lossy(&buf[..n]).trim().to_owned();
                let _ = s.write_all(format!("web says: {line}\n").as_bytes()).await;
            });
        }
    });
    addr
}

/// The Service `web` whose one endpoint is `inbound`, with `annotation`
/// (the `pobox.io/service-account` line, or nothing).
fn web(inbound: SocketAddr, service_account: Option<&str>) -> String {
    let annotations = service_account
        .map(|sa| format!(r#","annotations":{{"pobox.io/service-account":"{sa}"}}"#))
        .unwrap_or_default();
    format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[
          {{"apiVersion":"v1","kind":"Service","metadata":{{"name":"web","namespace":"default"{annotations}}},
            "spec":{{"clusterIP":"10.96.0.10","ports":[{{"port":80,"targetPort":{port}}}]}}}},
          {{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
            "metadata":{{"name":"web-1","namespace":"default","labels":{{"kubernetes.io/service-name":"web"}}}},
            "addressType":"IPv4","ports":[{{"port":{port}}}],
            "endpoints":[{{"addresses":["127.0.0.1"]}}]}}]}}"#,
        port = inbound.port()
    )
}

/// What a client gets through the proxy for `ping`, within 5 s. A refused
/// connection is reset by the proxy, which can happen before `connect`
/// returns: that gets nothing too.
async fn ask(proxy: SocketAddr) -> String {
    let Ok(mut s) = TcpStream::connect(proxy).await else {
        return String::new();
    };
    let _ = s.write_all(b"ping\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("the proxy answers or closes within 5 s");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_carried_over_mtls_to_the_expected_identity() {
    let ca = Ca::new("mesh CA");
    let app = app().await;
    let inbound = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let inbound_addr = inbound.local_addr().unwrap();
    let server = TlsServer::new(
        identity(&ca, ca.issue(WEB)),
        AllowList::Ids(vec![FRONTEND.parse().unwrap()]),
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let inbound_task = tokio::spawn(serve_inbound(
        inbound,
        server,
        Inbound {
            app,
            drain: Duration::from_secs(1),
        },
        async {
            let _ = stopped.await;
        },
    ));

    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    mesh.apply(web(inbound_addr, Some("web")).as_bytes())
        .unwrap();
    let client = TlsClient::new(identity(&ca, ca.issue(FRONTEND)));
    let proxy = Proxy::start(
        mesh.clone(),
        [Listen::parse("127.0.0.1:0=web.default:80").unwrap()],
        ProxyConfig::new()
            .connect_attempts(1)
            .upstream_tls(client, "cluster.local"),
    )
    .await
    .unwrap();
    let addr = proxy.local_addrs()[0];

    // The right identity: the bytes arrive, through mTLS and the inbound side.
    assert_eq!(ask(addr).await, "web says: ping\n");
    let endpoint = &proxy.metrics().listeners[0].endpoints[0];
    assert_eq!((endpoint.connections, endpoint.connect_failures), (1, 0));

    // The endpoint presents `web`, but the Service now says `db`: the
    // handshake fails, the client gets nothing, and it counts as a failure.
    mesh.apply(web(inbound_addr, Some("db")).as_bytes())
        .unwrap();
    assert_eq!(ask(addr).await, "");
    let endpoint = &proxy.metrics().listeners[0].endpoints[0];
    assert_eq!(endpoint.connect_failures, 1);

    // A Service naming no identity cannot be verified: refused, never plaintext.
    mesh.apply(web(inbound_addr, None).as_bytes()).unwrap();
    let failed_before = proxy.metrics().listeners[0].failed;
    assert_eq!(ask(addr).await, "");
    assert_eq!(proxy.metrics().listeners[0].failed, failed_before + 1);

    proxy.shutdown(Duration::from_secs(1)).await;
    let _ = stop.send(());
    inbound_task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_upstream_tls_the_inbound_side_refuses_the_plaintext() {
    let ca = Ca::new("mesh CA");
    let app = app().await;
    let inbound = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let inbound_addr = inbound.local_addr().unwrap();
    let server = TlsServer::new(
        identity(&ca, ca.issue(WEB)),
        AllowList::TrustDomain("cluster.local".into()),
    )
    .unwrap();
    tokio::spawn(serve_inbound(
        inbound,
        server,
        Inbound {
            app,
            drain: Duration::from_secs(1),
        },
        std::future::pending::<()>(),
    ));
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    mesh.apply(web(inbound_addr, Some("web")).as_bytes())
        .unwrap();
    let proxy = Proxy::start(
        mesh,
        [Listen::parse("127.0.0.1:0=web.default:80").unwrap()],
        ProxyConfig::new(),
    )
    .await
    .unwrap();
    assert!(!ask(proxy.local_addrs()[0]).await.contains("web says"));
    proxy.shutdown(Duration::from_secs(1)).await;
}
