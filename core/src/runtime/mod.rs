//! The L4 forwarder (feature `runtime`): TCP listeners that forward each
//! connection to an endpoint the mesh picks, on tokio.
//!
//! * A listener maps a local address to a [`Destination`]
//!   (`127.0.0.1:15001=web.default:80`), or listens on a Service's own
//!   virtual IP when this process owns that address ([`Listen::vips`]).
//! * Balancing is per connection, through [`Mesh::begin`]: the client's IP
//!   feeds `ClientIP` affinity and the hash policies, and least-request
//!   counts open connections.
//! * A refused or timed-out connect is reported to passive health (outlier
//!   detection) and another endpoint is tried, up to
//!   [`ProxyConfig::connect_attempts`] in all, before the client is reset.
//! * Draining: an endpoint that leaves the eligible set (terminating while
//!   others are ready, not ready, removed) gets no new connections; its open
//!   connections run until they close, or until
//!   [`ProxyConfig::drain_timeout`] passes. The proxy learns of changes
//!   from [`Mesh::changed`], without polling.
//! * Bounds: at most [`ProxyConfig::max_connections`] connections per
//!   listener (more are reset at once); per connection and direction one
//!   buffer of at most [`ProxyConfig::buffer_size`] bytes.
//! * [`Proxy::shutdown`] stops accepting, lets open connections finish for a
//!   grace period, then closes the rest.
//!
//! UDP is not forwarded: per-flow affinity needs a flow table with idle
//! expiry and a socket per flow towards the endpoint, which is more than this
//! module does well yet.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use pobox::runtime::{Listen, Proxy, ProxyConfig};
//! use pobox::{Mesh, MeshConfig};
//!
//! let mesh = Mesh::new(MeshConfig::new()).unwrap();
//! mesh.apply(include_bytes!("../../../examples/k8s/demo.yaml")).unwrap();
//! let listen: Listen = "127.0.0.1:15001=web.default:80".parse().unwrap();
//! let proxy = Proxy::start(mesh, [listen], ProxyConfig::new()).await?;
//! println!("{:?}", proxy.metrics());
//! proxy.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

mod listener;
mod metrics;
mod relay;
mod upstream;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};

use crate::{Destination, Mesh, Protocol, Snapshot};
use listener::ListenerShared;
pub use metrics::{EndpointMetrics, ListenerMetrics, Metrics};

/// The default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default number of endpoints tried per connection.
pub const DEFAULT_CONNECT_ATTEMPTS: u32 = 3;
/// The default most connections per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// The default largest buffer per connection and direction.
pub const DEFAULT_BUFFER_SIZE: usize = 16 * 1024;

// === Listen ===

/// A listener: where to accept connections and where to send them.
///
/// Written `ADDR=DEST` (`127.0.0.1:15001=web.default:80`,
/// `[::1]:15001=10.96.0.10:80`), or `ADDR` alone to listen on a Service's
/// own address (`127.0.0.10:80`: the destination is that address). `DEST`
/// takes every form [`Destination`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// The local address to listen on (port 0: any free port).
    pub addr: SocketAddr,
    /// Where its connections go.
    pub dest: Destination,
}

/// Why a listener specification is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenError {
    spec: String,
    reason: String,
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad listener {:?}: {}", self.spec, self.reason)
    }
}

impl std::error::Error for ListenError {}

impl Listen {
    /// A listener on `addr` for `dest`.
    pub fn new(addr: SocketAddr, dest: Destination) -> Listen {
        Listen { addr, dest }
    }

    /// Parses `ADDR=DEST` or `ADDR`; see the type documentation.
    pub fn parse(spec: &str) -> Result<Listen, ListenError> {
        let bad = |reason: String| ListenError {
            spec: spec.to_owned(),
            reason,
        };
        let (addr_text, dest) = match spec.split_once('=') {
            Some((a, d)) => (a.trim(), Some(d.trim())),
            None => (spec.trim(), None),
        };
        let addr: SocketAddr = addr_text.parse().map_err(|_| {
            bad(format!(
                "{addr_text:?} is not a local IP:PORT to listen on (IPv6 as [IP]:PORT)"
            ))
        })?;
        let dest = match dest {
            Some(d) => Destination::parse(d).map_err(|e| bad(e.to_string()))?,
            None if addr.port() == 0 => {
                return Err(bad(
                    "a listener on a Service's own address needs its port, or give =DEST".into(),
                ))
            }
            None => Destination::Addr {
                addr,
                protocol: None,
            },
        };
        match dest.protocol() {
            None | Some(Protocol::Tcp) => Ok(Listen { addr, dest }),
            Some(p) => Err(bad(format!("only TCP is forwarded, not {p}"))),
        }
    }

    /// One listener per cluster IP and TCP port of the Service
    /// `namespace/name`, each on that address: for a process that owns the
    /// Service's virtual IPs (on loopback, 127.0.0.x). Empty when the
    /// Service does not exist or has no cluster IP.
    pub fn vips(snapshot: &Snapshot, namespace: &str, name: &str) -> Vec<Listen> {
        let Some(entry) = snapshot.service(namespace, name) else {
            return Vec::new();
        };
        let service = entry.service();
        let mut out = Vec::new();
        for &ip in service.cluster_ips() {
            for port in service.ports() {
                if port.protocol() == Protocol::Tcp {
                    let addr = SocketAddr::new(ip, port.port());
                    out.push(Listen {
                        addr,
                        dest: Destination::Addr {
                            addr,
                            protocol: Some(Protocol::Tcp),
                        },
                    });
                }
            }
        }
        out
    }
}

impl FromStr for Listen {
    type Err = ListenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Listen::parse(s)
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.addr, self.dest)
    }
}

// === ProxyConfig ===

/// How a [`Proxy`] behaves. [`ProxyConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    connect_timeout: Duration,
    connect_attempts: u32,
    drain_timeout: Option<Duration>,
    max_connections: usize,
    buffer_size: usize,
    /// mTLS to every endpoint (feature `tls`).
    #[cfg(feature = "tls")]
    upstream_tls: Option<UpstreamTls>,
}

/// Originating mTLS to endpoints: the client identity and the trust domain
/// of the identities endpoints must present.
#[cfg(feature = "tls")]
#[derive(Debug, Clone)]
pub(crate) struct UpstreamTls {
    pub(crate) client: crate::tls::TlsClient,
    pub(crate) trust_domain: String,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig::new()
    }
}

impl ProxyConfig {
    /// The defaults: connect timeout [`DEFAULT_CONNECT_TIMEOUT`],
    /// [`DEFAULT_CONNECT_ATTEMPTS`] endpoints tried, no drain timeout,
    /// [`DEFAULT_MAX_CONNECTIONS`] per listener, buffers up to
    /// [`DEFAULT_BUFFER_SIZE`].
    pub const fn new() -> Self {
        ProxyConfig {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            connect_attempts: DEFAULT_CONNECT_ATTEMPTS,
            drain_timeout: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            buffer_size: DEFAULT_BUFFER_SIZE,
            #[cfg(feature = "tls")]
            upstream_tls: None,
        }
    }

    /// How long a connect to an endpoint may take before it counts as
    /// failed (and the next endpoint is tried).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many endpoints a connection tries, the first included (at least 1).
    pub fn connect_attempts(mut self, attempts: u32) -> Self {
        self.connect_attempts = attempts.max(1);
        self
    }

    /// How long connections to a draining endpoint may stay open; `None`:
    /// until they close.
    pub fn drain_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The most connections a listener holds open; more are reset at once
    /// (at least 1).
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// The largest buffer per connection and direction, in bytes (at least
    /// 64). Buffers start small and grow to this size under bulk transfer.
    pub fn buffer_size(mut self, bytes: usize) -> Self {
        self.buffer_size = bytes.max(64);
        self
    }

    /// Requires mTLS to every endpoint (feature `tls`): each connection is
    /// originated with `client`'s identity, and the endpoint must present
    /// the SPIFFE ID of its Service, `spiffe://<trust_domain>/ns/<ns>/sa/<sa>`
    /// from the Service's `pobox.io/service-account` annotation
    /// ([`crate::tls::SpiffeId::for_service`]). A Service without that
    /// annotation cannot be verified, so its connections are refused, never
    /// sent in plaintext. A failed handshake counts as a failed connect: it
    /// is reported to passive health and the next endpoint is tried.
    #[cfg(feature = "tls")]
    pub fn upstream_tls(
        mut self,
        client: crate::tls::TlsClient,
        trust_domain: impl Into<String>,
    ) -> Self {
        self.upstream_tls = Some(UpstreamTls {
            client,
            trust_domain: trust_domain.into(),
        });
        self
    }
}

// === Proxy ===

/// What the tasks of a proxy are told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Accepting and relaying.
    Running,
    /// No longer accepting; open connections run on.
    Stopping,
    /// Every connection closes now.
    Closed,
}

/// A running forwarder: its listeners and their connections, on the tokio
/// runtime that started it.
///
/// Dropping it closes every listener and connection at once; prefer
/// [`Proxy::shutdown`].
#[derive(Debug)]
pub struct Proxy {
    listeners: Vec<Arc<ListenerShared>>,
    phase: watch::Sender<Phase>,
    done: Option<mpsc::Sender<()>>,
    finished: mpsc::Receiver<()>,
}

impl Proxy {
    /// Binds every listener, then starts serving them on the current tokio
    /// runtime (it must have I/O and time enabled). Fails, serving nothing,
    /// if any address cannot be bound; the error names it.
    pub async fn start(
        mesh: Mesh,
        listens: impl IntoIterator<Item = Listen>,
        config: ProxyConfig,
    ) -> io::Result<Proxy> {
        let mut bound = Vec::new();
        for listen in listens {
            let listener = TcpListener::bind(listen.addr).await.map_err(|e| {
                io::Error::new(e.kind(), format!("listening on {}: {e}", listen.addr))
            })?;
            let local = listener.local_addr()?;
            bound.push((listener, Arc::new(ListenerShared::new(local, listen.dest))));
        }
        let config = Arc::new(config);
        let (phase, _) = watch::channel(Phase::Running);
        let (done, finished) = mpsc::channel(1);
        let mut listeners = Vec::new();
        for (listener, shared) in bound {
            tokio::spawn(listener::watch_endpoints(
                shared.clone(),
                mesh.clone(),
                config.clone(),
                phase.subscribe(),
            ));
            tokio::spawn(listener::accept_loop(
                listener,
                shared.clone(),
                mesh.clone(),
                config.clone(),
                phase.subscribe(),
                done.clone(),
            ));
            listeners.push(shared);
        }
        Ok(Proxy {
            listeners,
            phase,
            done: Some(done),
            finished,
        })
    }

    /// The addresses listened on, in the order given (with the ports chosen
    /// for port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.local).collect()
    }

    /// The counters now.
    pub fn metrics(&self) -> Metrics {
        Metrics {
            listeners: self.listeners.iter().map(|l| l.metrics()).collect(),
        }
    }

    /// Stops accepting (the listening sockets close), lets open connections
    /// run for up to `grace`, then closes the rest; returns when every
    /// connection is closed.
    pub async fn shutdown(mut self, grace: Duration) {
        self.phase.send_replace(Phase::Stopping);
        self.done = None;
        if tokio::time::timeout(grace, self.finished.recv())
            .await
            .is_err()
        {
            self.phase.send_replace(Phase::Closed);
            self.finished.recv().await;
        }
        self.phase.send_replace(Phase::Closed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.phase.send_replace(Phase::Closed);
    }
}

// === StandaloneProxy ===

/// A [`Proxy`] on a tokio runtime of its own, for hosts without one: a
/// synchronous program, or C and Go through the C ABI.
///
/// Its methods block; do not call them (or drop it) from async code.
#[derive(Debug)]
pub struct StandaloneProxy {
    proxy: Option<Proxy>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl StandaloneProxy {
    /// Starts a runtime with `worker_threads` threads (at least 1), named
    /// `pobox-proxy`, and the proxy on it; see [`Proxy::start`].
    pub fn start(
        mesh: Mesh,
        listens: impl IntoIterator<Item = Listen>,
        config: ProxyConfig,
        worker_threads: usize,
    ) -> io::Result<StandaloneProxy> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads.max(1))
            .thread_name("pobox-proxy")
            .enable_io()
            .enable_time()
            .build()?;
        let proxy = runtime.block_on(Proxy::start(mesh, listens, config))?;
        Ok(StandaloneProxy {
            proxy: Some(proxy),
            runtime: Some(runtime),
        })
    }

    fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("a running proxy until stopped")
    }

    /// See [`Proxy::local_addrs`].
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.proxy().local_addrs()
    }

    /// See [`Proxy::metrics`].
    pub fn metrics(&self) -> Metrics {
        self.proxy().metrics()
    }

    /// Shuts the proxy down as [`Proxy::shutdown`] does, then stops the
    /// runtime and its threads.
    pub fn stop(mut self, grace: Duration) {
        self.stop_now(grace);
    }

    fn stop_now(&mut self, grace: Duration) {
        if let (Some(proxy), Some(runtime)) = (self.proxy.take(), self.runtime.take()) {
            runtime.block_on(proxy.shutdown(grace));
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for StandaloneProxy {
    /// Stops at once: open connections are closed.
    fn drop(&mut self) {
        self.stop_now(Duration::ZERO);
    }
}
