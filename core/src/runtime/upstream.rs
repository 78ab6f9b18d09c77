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

use tokio::net::TcpStream;

use crate::runtime::listener::{EndpointStats, ListenerShared};
use crate::runtime::ProxyConfig;
use crate::{Client, Mesh, Outcome, Request};

/// The stream to an endpoint.
pub(crate) type Upstream = TcpStream;

/// Opens the connection to the chosen endpoint, within the connect timeout.
pub(crate) async fn connect_endpoint(
    addr: SocketAddr,
    config: &ProxyConfig,
) -> io::Result<Upstream> {
    let stream = tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Why no endpoint took a connection.
#[derive(Debug)]
pub(crate) enum ConnectError {
    /// The mesh had no endpoint to offer (no such Service, port or eligible
    /// endpoint).
    NoEndpoint,
    /// Every endpoint tried refused or timed out.
    Exhausted,
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
        match connect_endpoint(addr, config).await {
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
