//! What a running proxy reports: per listener, per endpoint.

use std::net::SocketAddr;

use serde::Serialize;

/// Counters of a running [`Proxy`](crate::runtime::Proxy), read with
/// [`Proxy::metrics`](crate::runtime::Proxy::metrics). Counters only grow,
/// except the `active` gauges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Metrics {
    /// One entry per listener, in the order they were given.
    pub listeners: Vec<ListenerMetrics>,
}

/// Counters of one listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ListenerMetrics {
    /// The address it listens on (with the port chosen when 0 was asked).
    pub listen: SocketAddr,
    /// The destination it forwards to.
    pub destination: String,
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open now (connected to an endpoint).
    pub active: u64,
    /// Connections reset at once because the listener was at its limit.
    pub rejected: u64,
    /// Connections reset because no endpoint was eligible or every one tried
    /// failed to connect.
    pub failed: u64,
    /// Per endpoint, by address: those the mesh still knows or that still
    /// have open connections.
    pub endpoints: Vec<EndpointMetrics>,
}

/// Counters of one endpoint, as seen by one listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct EndpointMetrics {
    /// The endpoint.
    pub addr: SocketAddr,
    /// Connections open now.
    pub active: u64,
    /// Connections made.
    pub connections: u64,
    /// Connects that were refused or timed out.
    pub connect_failures: u64,
    /// Bytes from clients to the endpoint.
    pub bytes_sent: u64,
    /// Bytes from the endpoint to clients.
    pub bytes_received: u64,
    /// Connections closed because the drain timeout passed.
    pub drained: u64,
    /// Whether it is draining: no longer eligible (terminating, removed, not
    /// ready), so it gets no new connections.
    pub draining: bool,
}
