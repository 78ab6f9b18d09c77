//! Choosing and connecting to an endpoint, with failover.
//!
//! [`connect_endpoint`] is the one place a connection to a chosen endpoint
//! is opened: originating TLS (mTLS between meshed peers) wraps the stream
//! there, and [`Upstream`] becomes the wrapped type; the relay is generic
//! over it.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::runtime::listener::{EndpointStats, ListenerShared};
use crate::runtime::ProxyConfig;
use crate::{Client, Mesh, Outcome, Request};

/// The stream to an endpoint: plain TCP, or mTLS over it.
pub(crate) enum Upstream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<crate::tls::ClientTlsStream<TcpStream>>),
}

impl AsyncRead for Upstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            #[cfg(feature = "tls")]
            Upstream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Upstream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            #[cfg(feature = "tls")]
            Upstream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(s) => Pin::new(s).poll_flush(cx),
            #[cfg(feature = "tls")]
            Upstream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Upstream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            #[cfg(feature = "tls")]
            Upstream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// What an endpoint must prove before bytes flow: nothing (plain TCP), or
/// an mTLS handshake with this identity.
pub(crate) enum Expect {
    Plain,
    #[cfg(feature = "tls")]
    Identity(crate::tls::SpiffeId),
}

/// Opens the connection to the chosen endpoint, within the connect timeout
/// (and, with mTLS, the handshake within the TLS client's timeout).
pub(crate) async fn connect_endpoint(
    addr: SocketAddr,
    config: &ProxyConfig,
    expect: &Expect,
) -> io::Result<Upstream> {
    let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    match expect {
        Expect::Plain => Ok(Upstream::Plain(stream)),
        #[cfg(feature = "tls")]
        Expect::Identity(id) => {
            let tls = config
                .upstream_tls
                .as_ref()
                .expect("an identity is expected only with mTLS");
            Ok(Upstream::Tls(Box::new(
                tls.client.connect(stream, id).await?,
            )))
        }
    }
}

/// What the endpoints of the listener's Service must prove: with upstream
/// mTLS, the SPIFFE ID of the Service; `None` when mTLS is required and the
/// Service names no identity (the connection is refused).
fn expectation(mesh: &Mesh, listener: &ListenerShared, config: &ProxyConfig) -> Option<Expect> {
    #[cfg(feature = "tls")]
    if let Some(tls) = &config.upstream_tls {
        let snapshot = mesh.snapshot();
        let resolved = snapshot.resolve(&listener.dest, &Client::new()).ok()?;
        let id = crate::tls::SpiffeId::for_service(resolved.service.service(), &tls.trust_domain)
            .ok()
            .flatten()?;
        return Some(Expect::Identity(id));
    }
    let _ = (mesh, listener, config);
    Some(Expect::Plain)
}

/// Why no endpoint took a connection.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The mesh had no endpoint to offer (no such Service, port or eligible
    /// endpoint).
    NoEndpoint,
    /// Every endpoint tried refused or timed out.
    Exhausted,
    /// mTLS is required and the Service names no identity to verify.
    NoIdentity,
}

/// Picks an endpoint for a client at `client_ip` and connects to it. A
/// connect failure is reported to passive health (outlier detection) and
/// another endpoint is tried, at most `connect_attempts` in all, never the
/// same one twice. The first pick uses the client's IP (affinity, hashing);
/// failover picks do not, so that a hash policy moves on too.
///
/// The returned [`Request`] counts the connection in flight (least-request)
/// until it is finished or dropped.
pub(crate) async fn connect(
    mesh: &Mesh,
    listener: &ListenerShared,
    client_ip: IpAddr,
    config: &ProxyConfig,
) -> Result<(Request, Upstream, Arc<EndpointStats>), ConnectError> {
    let expect = expectation(mesh, listener, config).ok_or(ConnectError::NoIdentity)?;
    let mut tried: Vec<SocketAddr> = Vec::new();
    let first = Client::new().ip(client_ip);
    let any = Client::new();
    for attempt in 0..config.connect_attempts.max(1) {
        let client = if attempt == 0 { &first } else { &any };
        let Some(request) = pick_untried(mesh, listener, client, &tried)? else {
            break;
        };
        let addr = request.addr();
        let stats = listener.endpoint(addr);
        match connect_endpoint(addr, config, &expect).await {
            Ok(stream) => return Ok((request, stream, stats)),
            Err(_) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                request.finish(Outcome::Failure);
                tried.push(addr);
            }
        }
    }
    Err(ConnectError::Exhausted)
}

/// A pick that is not in `tried`, or `None` when the picks keep landing on
/// tried endpoints.
fn pick_untried(
    mesh: &Mesh,
    listener: &ListenerShared,
    client: &Client<'_>,
    tried: &[SocketAddr],
) -> Result<Option<Request>, ConnectError> {
    // Round robin reaches every member within a set's size; random and
    // least-request almost always do within a few times more.
    let tries = if tried.is_empty() {
        1
    } else {
        4 * tried.len() + 4
    };
    for _ in 0..tries {
        let request = mesh
            .begin(&listener.dest, client)
            .map_err(|_| ConnectError::NoEndpoint)?;
        if !tried.contains(&request.addr()) {
            return Ok(Some(request));
        }
    }
    Ok(None)
}
