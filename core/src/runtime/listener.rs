//! One listener: its accept loop, its connections, and the watcher that
//! drains connections to endpoints that are no longer eligible.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::runtime::metrics::{EndpointMetrics, ListenerMetrics};
use crate::runtime::relay::{relay, RelayError};
use crate::runtime::upstream::{self, ConnectError};
use crate::runtime::{Phase, ProxyConfig};
use crate::{Client, Destination, Mesh, Outcome};

/// Counters and the drain signal of one endpoint, shared by the
/// connections of one listener to it.
#[derive(Debug)]
pub(crate) struct EndpointStats {
    pub(crate) active: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) drained: AtomicU64,
    /// When this endpoint's open connections are closed: `None` while it is
    /// eligible, `Some(deadline)` once it drains (`Instant::MAX`-like far
    /// future when there is no drain timeout).
    drain: watch::Sender<Option<Instant>>,
    draining: AtomicBool,
}

impl EndpointStats {
    fn new() -> Self {
        EndpointStats {
            active: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            drained: AtomicU64::new(0),
            drain: watch::Sender::new(None),
            draining: AtomicBool::new(false),
        }
    }
}

/// What every connection of a listener shares.
#[derive(Debug)]
pub(crate) struct ListenerShared {
    pub(crate) local: SocketAddr,
    pub(crate) dest: Destination,
    accepted: AtomicU64,
    active: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    /// `by_endpoint`: stats of every endpoint this listener connected (or
    /// tried to connect) to that is still known to the mesh or still has
    /// open connections.
    by_endpoint: Mutex<HashMap<SocketAddr, Arc<EndpointStats>>>,
}

impl ListenerShared {
    pub(crate) fn new(local: SocketAddr, dest: Destination) -> Self {
        ListenerShared {
            local,
            dest,
            accepted: AtomicU64::new(0),
            active: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            by_endpoint: Mutex::new(HashMap::new()),
        }
    }

    fn endpoints(&self) -> MutexGuard<'_, HashMap<SocketAddr, Arc<EndpointStats>>> {
        self.by_endpoint.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stats of `addr`, created on first use.
    pub(crate) fn endpoint(&self, addr: SocketAddr) -> Arc<EndpointStats> {
        self.endpoints()
            .entry(addr)
            .or_insert_with(|| Arc::new(EndpointStats::new()))
            .clone()
    }

    pub(crate) fn metrics(&self) -> ListenerMetrics {
        let mut endpoints: Vec<EndpointMetrics> = self
            .endpoints()
            .iter()
            .map(|(addr, s)| EndpointMetrics {
                addr: *addr,
                active: s.active.load(Ordering::Relaxed),
                connections: s.connections.load(Ordering::Relaxed),
                connect_failures: s.failures.load(Ordering::Relaxed),
                bytes_sent: s.sent.load(Ordering::Relaxed),
                bytes_received: s.received.load(Ordering::Relaxed),
                drained: s.drained.load(Ordering::Relaxed),
                draining: s.draining.load(Ordering::Relaxed),
            })
            .collect();
        endpoints.sort_by_key(|e| e.addr);
        ListenerMetrics {
            listen: self.local,
            destination: self.dest.to_string(),
            accepted: self.accepted.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            endpoints,
        }
    }

    /// Marks the endpoints that left the eligible set as draining (and
    /// those that came back as not), and forgets idle endpoints the mesh no
    /// longer knows.
    fn update_draining(&self, mesh: &Mesh, drain_timeout: Option<Duration>) {
        let snapshot = mesh.snapshot();
        let resolved = snapshot.resolve(&self.dest, &Client::new()).ok();
        let eligible: HashSet<SocketAddr> = resolved
            .iter()
            .flat_map(|r| r.eligible().map(|e| e.addr()))
            .collect();
        let known: HashSet<SocketAddr> = resolved
            .iter()
            .flat_map(|r| r.port.endpoints().iter().map(|e| e.addr()))
            .collect();
        let now = Instant::now();
        let mut endpoints = self.endpoints();
        endpoints.retain(|addr, stats| {
            let draining = !eligible.contains(addr);
            stats.draining.store(draining, Ordering::Relaxed);
            stats
                .drain
                .send_if_modified(|deadline| match (draining, *deadline) {
                    (true, None) => {
                        *deadline = Some(match drain_timeout {
                            Some(t) => now + t,
                            None => far_future(now),
                        });
                        true
                    }
                    (false, Some(_)) => {
                        *deadline = None;
                        true
                    }
                    _ => false,
                });
            // A connection holding the stats keeps them (it may not have
            // counted itself active yet).
            known.contains(addr) || Arc::strong_count(stats) > 1
        });
    }
}

/// About thirty years on: a deadline that never comes.
fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(86_400 * 365 * 30)
}

/// Accepts until the proxy stops, one task per connection.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<ListenerShared>,
    mesh: Mesh,
    config: Arc<ProxyConfig>,
    mut phase: watch::Receiver<Phase>,
    done: mpsc::Sender<()>,
) {
    let limit = Arc::new(Semaphore::new(config.max_connections));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = phase.wait_for(|p| *p != Phase::Running) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(_) => {
                // Out of file descriptors, or the peer gave up before the
                // accept: back off a little instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            shared.rejected.fetch_add(1, Ordering::Relaxed);
            reset(stream);
            continue;
        };
        tokio::spawn(connection(
            stream,
            peer,
            shared.clone(),
            mesh.clone(),
            config.clone(),
            phase.clone(),
            permit,
            done.clone(),
        ));
    }
}

/// Closes a connection with a reset, as kube-proxy's reject rule does.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<ListenerShared>,
    mesh: Mesh,
    config: Arc<ProxyConfig>,
    mut phase: watch::Receiver<Phase>,
    _permit: OwnedSemaphorePermit,
    _done: mpsc::Sender<()>,
) {
    let _ = stream.set_nodelay(true);
    let (request, mut upstream, stats) =
        match upstream::connect(&mesh, &shared, peer.ip(), &config).await {
            Ok(connected) => connected,
            Err(ConnectError::NoEndpoint | ConnectError::Exhausted | ConnectError::NoIdentity) => {
                shared.failed.fetch_add(1, Ordering::Relaxed);
                reset(stream);
                return;
            }
        };
    shared.active.fetch_add(1, Ordering::Relaxed);
    stats.active.fetch_add(1, Ordering::Relaxed);
    if request.version() != mesh.version() {
        // The mesh changed since the pick: the watcher may have passed over
        // this endpoint before this connection registered its stats.
        shared.update_draining(&mesh, config.drain_timeout);
    }
    stats.connections.fetch_add(1, Ordering::Relaxed);
    let mut drain = stats.drain.subscribe();
    let outcome = tokio::select! {
        // The relay first: it is the branch that is ready on almost every wake.
        biased;
        relayed = relay(&mut stream, &mut upstream, config.buffer_size, &stats.sent, &stats.received) => {
            match relayed {
                Err(RelayError::Upstream) => Outcome::Failure,
                Ok(()) | Err(RelayError::Client) => Outcome::Success,
            }
        }
        _ = drained(&mut drain) => {
            stats.drained.fetch_add(1, Ordering::Relaxed);
            Outcome::Success
        }
        _ = phase.wait_for(|p| *p == Phase::Closed) => Outcome::Success,
    };
    request.finish(outcome);
    stats.active.fetch_sub(1, Ordering::Relaxed);
    shared.active.fetch_sub(1, Ordering::Relaxed);
}

/// Resolves when the endpoint's drain deadline passes (a deadline that is
/// lifted before it passes, because the endpoint came back, is forgotten).
async fn drained(drain: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *drain.borrow_and_update();
        match deadline {
            Some(deadline) => tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return,
                changed = drain.changed() => if changed.is_err() { std::future::pending::<()>().await },
            },
            None => {
                if drain.changed().await.is_err() {
                    std::future::pending::<()>().await
                }
            }
        }
    }
}

/// Follows the mesh: after every publish, updates which endpoints drain.
pub(crate) async fn watch_endpoints(
    shared: Arc<ListenerShared>,
    mesh: Mesh,
    config: Arc<ProxyConfig>,
    mut phase: watch::Receiver<Phase>,
) {
    let mut seen = mesh.version();
    shared.update_draining(&mesh, config.drain_timeout);
    loop {
        tokio::select! {
            biased;
            _ = phase.wait_for(|p| *p == Phase::Closed) => return,
            version = mesh.changed(seen) => {
                seen = version;
                shared.update_draining(&mesh, config.drain_timeout);
            }
        }
    }
}
