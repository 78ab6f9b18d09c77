//! Where the mesh runs: the node, its zone, its addresses, the cluster domain.

use std::net::IpAddr;

use crate::affinity::DEFAULT_AFFINITY_CAPACITY;
use crate::error::Error;
use crate::validate::is_dns1123_subdomain;

/// The cluster domain when none is configured.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// The TTL of DNS answers when none is configured: 5 seconds, CoreDNS's
/// `kubernetes` plugin default. Short, because the records follow endpoints
/// that come and go (a client caching a headless answer for minutes would
/// keep dialing pods that are gone), and long enough that a client resolving
/// per request does not ask for every connection.
pub const DEFAULT_DNS_TTL: u32 = 5;

/// Where this process runs, as kube-proxy knows its own node.
///
/// ```
/// let config = pobox::MeshConfig::new()
///     .node("node-a")
///     .zone("zone-a")
///     .node_ip("10.0.0.5".parse().unwrap());
/// let mesh = pobox::Mesh::new(config).unwrap();
/// assert_eq!(mesh.config().node_name(), Some("node-a"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshConfig {
    node: Option<String>,
    zone: Option<String>,
    node_ips: Vec<IpAddr>,
    cluster_domain: String,
    affinity_capacity: usize,
    dns_ttl: u32,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            node: None,
            zone: None,
            node_ips: Vec::new(),
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
            affinity_capacity: DEFAULT_AFFINITY_CAPACITY,
            dns_ttl: DEFAULT_DNS_TTL,
        }
    }
}

impl MeshConfig {
    /// No node, no zone, no node IPs, `cluster.local`, DNS TTL 5 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// The node this process runs on: endpoints whose `nodeName` matches are
    /// local (for `trafficPolicy: Local`), and node hints are read for it.
    pub fn node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }

    /// The node's zone (`topology.kubernetes.io/zone`), for zone hints.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Adds an address of this node: NodePorts are reachable on it.
    pub fn node_ip(mut self, ip: IpAddr) -> Self {
        if !self.node_ips.contains(&ip) {
            self.node_ips.push(ip);
        }
        self
    }

    /// The cluster DNS domain (default `cluster.local`).
    pub fn cluster_domain(mut self, domain: impl Into<String>) -> Self {
        self.cluster_domain = domain.into();
        self
    }

    /// The most session-affinity entries kept (default 262,144); past it the
    /// least recently used entry is evicted.
    pub fn affinity_capacity(mut self, entries: usize) -> Self {
        self.affinity_capacity = entries;
        self
    }

    /// The session-affinity capacity.
    pub fn affinity_capacity_entries(&self) -> usize {
        self.affinity_capacity
    }

    /// The TTL, in seconds, of every DNS answer (default [`DEFAULT_DNS_TTL`]).
    pub fn dns_ttl(mut self, seconds: u32) -> Self {
        self.dns_ttl = seconds;
        self
    }

    /// The TTL of DNS answers, in seconds.
    pub fn dns_ttl_seconds(&self) -> u32 {
        self.dns_ttl
    }

    /// The configured node name.
    pub fn node_name(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// The configured zone.
    pub fn zone_name(&self) -> Option<&str> {
        self.zone.as_deref()
    }

    /// The node's addresses.
    pub fn node_ips(&self) -> &[IpAddr] {
        &self.node_ips
    }

    /// The cluster domain, without a trailing dot.
    pub fn cluster_domain_name(&self) -> &str {
        &self.cluster_domain
    }

    pub(crate) fn validated(mut self) -> Result<Self, Error> {
        if let Some(node) = &self.node {
            if !is_dns1123_subdomain(node) {
                return Err(Error::Config(format!(
                    "node {node:?} is not a valid node name (a DNS-1123 subdomain)"
                )));
            }
        }
        if self.zone.as_deref() == Some("") {
            self.zone = None;
        }
        let domain = self
            .cluster_domain
            .strip_suffix('.')
            .unwrap_or(&self.cluster_domain)
            .to_ascii_lowercase();
        if !is_dns1123_subdomain(&domain) {
            return Err(Error::Config(format!(
                "cluster domain {:?} is not a valid DNS name",
                self.cluster_domain
            )));
        }
        self.cluster_domain = domain;
        if self.affinity_capacity == 0 {
            return Err(Error::Config(
                "the affinity capacity must be at least 1 entry".to_owned(),
            ));
        }
        for ip in &self.node_ips {
            if ip.is_unspecified() {
                return Err(Error::Config(format!(
                    "node IP {ip} is not a usable address"
                )));
            }
        }
        Ok(self)
    }
}
