//! Where the mesh runs: the node, its zone, its addresses, the cluster domain.

use std::net::IpAddr;

use crate::affinity::DEFAULT_AFFINITY_CAPACITY;
use crate::error::Error;
use crate::limits::Limits;
use crate::typed;
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
    limits: Limits,
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
            limits: Limits::default(),
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

    /// The most session-affinity entries kept (default 262,144); past it a
    /// new client evicts the least recently used entry of its set (the
    /// table is set-associative, 8 entries to a set).
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

    /// Bounds on inputs and on the endpoints held (default [`Limits::new`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits in force.
    pub fn configured_limits(&self) -> &Limits {
        &self.limits
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

    /// Reads the mesh options every binding takes as a JSON object (the C
    /// ABI's `pobox_mesh_new`, the JavaScript `new Mesh(options)`):
    /// `{"node":"n1","zone":"z1","nodeIPs":["10.0.0.5"],"clusterDomain":"cluster.local"}`,
    /// each field optional, unknown fields refused. `"limits"` sets the
    /// [`Limits`] and the affinity capacity:
    /// `{"limits":{"maxInputBytes":67108864,"maxDepth":64,"maxValues":8000000,"maxObjects":100000,"maxEndpoints":500000,"affinityCapacity":262144}`,
    /// each optional, an omitted one keeping its default. The values are checked
    /// when the mesh is made ([`crate::Mesh::new`]).
    ///
    /// ```
    /// let config = pobox::MeshConfig::from_options_json(r#"{"node":"n1","nodeIPs":["10.0.0.5"]}"#).unwrap();
    /// assert_eq!(config.node_name(), Some("n1"));
    /// assert!(pobox::MeshConfig::from_options_json(r#"{"nodes":"n1"}"#).is_err());
    /// ```
    pub fn from_options_json(json: &str) -> Result<MeshConfig, Error> {
        let options = typed::options(json).map_err(|e| Error::Config(format!("options: {e}")))?;
        let mut config = MeshConfig::new();
        if let Some(node) = options.node {
            config = config.node(node);
        }
        if let Some(zone) = options.zone {
            config = config.zone(zone);
        }
        for ip in options.node_ips {
            let parsed = ip.parse().map_err(|_| {
                Error::Config(format!("options: nodeIPs: {ip:?} is not an IP address"))
            })?;
            config = config.node_ip(parsed);
        }
        if let Some(domain) = options.cluster_domain {
            config = config.cluster_domain(domain);
        }
        if let Some(l) = options.limits {
            let mut limits = Limits::new();
            if let Some(v) = l.max_input_bytes {
                limits = limits.max_input_bytes(v);
            }
            if let Some(v) = l.max_depth {
                limits = limits.max_depth(v);
            }
            if let Some(v) = l.max_values {
                limits = limits.max_values(v);
            }
            if let Some(v) = l.max_objects {
                limits = limits.max_objects(v);
            }
            if let Some(v) = l.max_endpoints {
                limits = limits.max_endpoints(v);
            }
            if let Some(v) = l.affinity_capacity {
                config = config.affinity_capacity(v);
            }
            config = config.limits(limits);
        }
        Ok(config)
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
        let l = &self.limits;
        for (name, value) in [
            ("maxInputBytes", l.input_bytes_limit()),
            ("maxDepth", l.depth_limit()),
            ("maxValues", l.values_limit()),
            ("maxObjects", l.objects_limit()),
            ("maxEndpoints", l.endpoints_limit()),
        ] {
            if value == 0 {
                return Err(Error::Config(format!(
                    "the limit {name} must be at least 1"
                )));
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_json_sets_every_field() {
        let config = MeshConfig::from_options_json(
            r#"{"node":"n1","zone":"z1","nodeIPs":["10.0.0.5","fd00::5"],"clusterDomain":"example.org"}"#,
        )
        .unwrap();
        assert_eq!(config.node_name(), Some("n1"));
        assert_eq!(config.zone_name(), Some("z1"));
        let ips: Vec<String> = config.node_ips().iter().map(|ip| ip.to_string()).collect();
        assert_eq!(ips, ["10.0.0.5", "fd00::5"]);
        assert_eq!(config.cluster_domain_name(), "example.org");
        assert_eq!(
            MeshConfig::from_options_json("{}").unwrap(),
            MeshConfig::new()
        );
    }

    #[test]
    fn options_json_sets_limits_and_keeps_defaults_for_the_rest() {
        let config = MeshConfig::from_options_json(
            r#"{"limits":{"maxInputBytes":1000,"maxDepth":8,"maxValues":90,"maxObjects":7,"maxEndpoints":6,"affinityCapacity":5}}"#,
        )
        .unwrap();
        let l = config.configured_limits();
        assert_eq!(
            (
                l.input_bytes_limit(),
                l.depth_limit(),
                l.values_limit(),
                l.objects_limit(),
                l.endpoints_limit(),
                config.affinity_capacity_entries()
            ),
            (1000, 8, 90, 7, 6, 5)
        );
        let config = MeshConfig::from_options_json(r#"{"limits":{"maxDepth":8}}"#).unwrap();
        assert_eq!(
            *config.configured_limits(),
            Limits::new().max_depth(8),
            "omitted limits keep their defaults"
        );
        assert_eq!(
            config.affinity_capacity_entries(),
            crate::DEFAULT_AFFINITY_CAPACITY
        );
    }

    #[test]
    fn a_zero_limit_is_refused_when_the_mesh_is_made() {
        let config = MeshConfig::from_options_json(r#"{"limits":{"maxObjects":0}}"#).unwrap();
        assert_eq!(
            config.validated().unwrap_err().to_string(),
            "configuration: the limit maxObjects must be at least 1"
        );
    }

    #[test]
    fn options_json_refuses_bad_input_with_a_message() {
        for (json, message) in [
            (
                r#"{"nodes":"n1"}"#,
                "configuration: options: unknown field `nodes`",
            ),
            (
                r#"{"nodeIPs":["x"]}"#,
                r#"configuration: options: nodeIPs: "x" is not an IP address"#,
            ),
            (
                r#"{"node":5}"#,
                "configuration: options: invalid type: integer `5`",
            ),
            (
                r#""n1""#,
                r#"configuration: options: invalid type: string "n1", expected struct Options"#,
            ),
            ("{", "configuration: options: EOF while parsing"),
            (
                r#"{"limits":{"maxBytes":1}}"#,
                "configuration: options: unknown field `maxBytes`",
            ),
            (
                r#"{"limits":{"maxDepth":-1}}"#,
                "configuration: options: invalid value: integer `-1`",
            ),
            (
                r#"{"limits":5}"#,
                "configuration: options: invalid type: integer `5`, expected struct LimitOptions",
            ),
        ] {
            let err = MeshConfig::from_options_json(json).unwrap_err();
            assert!(
                err.to_string().starts_with(message),
                "{json}: {err} does not start with {message}"
            );
        }
    }
}
