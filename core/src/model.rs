//! Validated Kubernetes objects: what the store keeps and the snapshot is built
//! from. A value of these types has passed every check in [`crate::validate`].

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use crate::health::OutlierDetection;
use crate::policy::LbPolicy;

// === Enums ===

/// A Service port's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// `TCP`, the default.
    Tcp,
    /// `UDP`.
    Udp,
    /// `SCTP`.
    Sctp,
}

impl Protocol {
    /// Every protocol, in the order an unqualified destination tries them.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// The Kubernetes spelling: `TCP`, `UDP`, `SCTP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// Parses `TCP`/`UDP`/`SCTP`, ignoring case.
    pub fn parse(s: &str) -> Option<Protocol> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The Kubernetes spelling: `IPv4`, `IPv6`.
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// `spec.type` of a Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceType {
    /// `ClusterIP` (the default), including headless Services.
    ClusterIp,
    /// `NodePort`.
    NodePort,
    /// `LoadBalancer`.
    LoadBalancer,
    /// `ExternalName`: a DNS alias, no virtual IP, no endpoints.
    ExternalName,
}

impl ServiceType {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIp => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::ExternalName => "ExternalName",
        }
    }
}

/// `internalTrafficPolicy` / `externalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TrafficPolicy {
    /// Any eligible endpoint in the cluster (the default).
    #[default]
    Cluster,
    /// Only endpoints on this node.
    Local,
}

/// `spec.sessionAffinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SessionAffinity {
    /// No affinity (the default).
    #[default]
    None,
    /// Client-IP affinity with its timeout.
    ClientIp {
        /// `sessionAffinityConfig.clientIP.timeoutSeconds`, 1..=86400, default 10800.
        timeout_seconds: u32,
    },
}

/// `targetPort` of a Service port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetPort {
    /// A port number.
    Number(u16),
    /// A container port name, resolved per EndpointSlice by the controller
    /// that writes the slices.
    Name(Arc<str>),
}

impl fmt::Display for TargetPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetPort::Number(n) => write!(f, "{n}"),
            TargetPort::Name(s) => f.write_str(s),
        }
    }
}

// === ServiceKey ===

/// A Service's identity, `namespace/name`, cheap to clone.
///
/// It hashes as the pair (namespace, name) (`ServiceKey::hash_parts`), so an
/// index keyed by `ServiceKey` can be searched with the two parts as they
/// arrive (a DNS name, a destination) without joining them first.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceKey {
    full: Arc<str>,
    slash: usize,
}

impl ServiceKey {
    /// A key from its parts (not validated).
    pub fn new(namespace: &str, name: &str) -> ServiceKey {
        ServiceKey {
            full: format!("{namespace}/{name}").into(),
            slash: namespace.len(),
        }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.full[..self.slash]
    }

    /// The Service name.
    pub fn name(&self) -> &str {
        &self.full[self.slash + 1..]
    }

    /// `namespace/name`.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl ServiceKey {
    /// What hashing a `ServiceKey` of these parts feeds `state`: the same
    /// bytes, so a lookup by parts finds the key.
    #[inline]
    pub(crate) fn hash_parts<H: Hasher>(namespace: &str, name: &str, state: &mut H) {
        namespace.hash(state);
        name.hash(state);
    }

    /// Whether this key is `namespace/name`.
    #[inline]
    pub(crate) fn is(&self, namespace: &str, name: &str) -> bool {
        self.slash == namespace.len()
            && self.full.len() == namespace.len() + 1 + name.len()
            && self.namespace() == namespace
            && self.name() == name
    }
}

impl Hash for ServiceKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        ServiceKey::hash_parts(self.namespace(), self.name(), state)
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.full)
    }
}

// === Service ===

/// A validated `v1 Service`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub(crate) key: ServiceKey,
    pub(crate) service_type: ServiceType,
    /// Allocated cluster IPs, primary first; empty when headless, ExternalName
    /// or not allocated (e.g. `kubectl create --dry-run` output).
    pub(crate) cluster_ips: Vec<IpAddr>,
    /// `spec.clusterIP` as written when that is not how the address prints
    /// (kubelet's environment variables copy it verbatim, e.g. `2001:DB8::`);
    /// `None` for the usual canonical spelling, so that it costs nothing.
    pub(crate) cluster_ip_text: Option<Arc<str>>,
    pub(crate) headless: bool,
    pub(crate) ip_families: Vec<IpFamily>,
    pub(crate) ports: Vec<ServicePort>,
    pub(crate) external_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[].ip` whose `ipMode` is not `Proxy`.
    pub(crate) load_balancer_ips: Vec<IpAddr>,
    /// `status.loadBalancer.ingress[]` as kubectl shows them (IPs and hostnames).
    pub(crate) load_balancer_ingress: Vec<String>,
    pub(crate) external_name: Option<Arc<str>>,
    pub(crate) internal_traffic_policy: TrafficPolicy,
    pub(crate) external_traffic_policy: TrafficPolicy,
    pub(crate) publish_not_ready_addresses: bool,
    pub(crate) session_affinity: SessionAffinity,
    pub(crate) traffic_distribution: Option<Arc<str>>,
    pub(crate) lb_policy: LbPolicy,
    pub(crate) outlier_detection: Option<OutlierDetection>,
    /// `pobox.io/service-account`: the service account of the pods behind
    /// it, which names their mTLS identity.
    pub(crate) service_account: Option<Arc<str>>,
}

impl Service {
    /// `namespace/name`.
    pub fn key(&self) -> &ServiceKey {
        &self.key
    }
    /// `spec.type`.
    pub fn service_type(&self) -> ServiceType {
        self.service_type
    }
    /// The allocated cluster IPs, primary first (empty for headless Services).
    pub fn cluster_ips(&self) -> &[IpAddr] {
        &self.cluster_ips
    }
    /// The primary cluster IP as the object spells it (`spec.clusterIP`,
    /// else `spec.clusterIPs[0]`), for consumers that copy it verbatim.
    pub fn cluster_ip_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        match (&self.cluster_ip_text, self.cluster_ips.first()) {
            (Some(text), _) => Some(std::borrow::Cow::Borrowed(text)),
            (None, Some(ip)) => Some(std::borrow::Cow::Owned(ip.to_string())),
            (None, None) => None,
        }
    }
    /// `clusterIP: None`.
    pub fn is_headless(&self) -> bool {
        self.headless
    }
    /// The ports.
    pub fn ports(&self) -> &[ServicePort] {
        &self.ports
    }
    /// `spec.externalIPs`.
    pub fn external_ips(&self) -> &[IpAddr] {
        &self.external_ips
    }
    /// Load-balancer ingress IPs that pobox routes (those whose `ipMode` is not `Proxy`).
    pub fn load_balancer_ips(&self) -> &[IpAddr] {
        &self.load_balancer_ips
    }
    /// Every load-balancer ingress (IP or hostname), as `kubectl get svc` lists them.
    pub fn load_balancer_ingress(&self) -> &[String] {
        &self.load_balancer_ingress
    }
    /// `spec.externalName` of an ExternalName Service.
    pub fn external_name(&self) -> Option<&str> {
        self.external_name.as_deref()
    }
    /// `spec.internalTrafficPolicy`.
    pub fn internal_traffic_policy(&self) -> TrafficPolicy {
        self.internal_traffic_policy
    }
    /// `spec.externalTrafficPolicy` (always `Cluster` when not externally accessible).
    pub fn external_traffic_policy(&self) -> TrafficPolicy {
        self.external_traffic_policy
    }
    /// `spec.publishNotReadyAddresses`.
    pub fn publish_not_ready_addresses(&self) -> bool {
        self.publish_not_ready_addresses
    }
    /// `spec.sessionAffinity` with its timeout.
    pub fn session_affinity(&self) -> SessionAffinity {
        self.session_affinity
    }
    /// `spec.trafficDistribution`.
    pub fn traffic_distribution(&self) -> Option<&str> {
        self.traffic_distribution.as_deref()
    }
    /// The balancing policy (annotation `pobox.io/lb-policy`).
    pub fn lb_policy(&self) -> LbPolicy {
        self.lb_policy
    }
    /// Outlier detection, when turned on by `pobox.io/outlier-consecutive-failures`.
    pub fn outlier_detection(&self) -> Option<OutlierDetection> {
        self.outlier_detection
    }

    /// The service account of the pods behind it, from the annotation
    /// [`ANNOTATION_SERVICE_ACCOUNT`](crate::ANNOTATION_SERVICE_ACCOUNT):
    /// their mTLS identity is
    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
    pub fn service_account(&self) -> Option<&str> {
        self.service_account.as_deref()
    }
    /// The IP families, primary first: `spec.ipFamilies`, or those of the cluster IPs.
    pub fn ip_families(&self) -> &[IpFamily] {
        &self.ip_families
    }

    /// Reachable from outside the cluster: NodePort, LoadBalancer, or any
    /// external IP (kube-proxy's `ExternallyAccessible`).
    pub fn is_externally_accessible(&self) -> bool {
        matches!(
            self.service_type,
            ServiceType::NodePort | ServiceType::LoadBalancer
        ) || !self.external_ips.is_empty()
    }
}

/// A validated Service port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePort {
    pub(crate) name: Arc<str>,
    pub(crate) port: u16,
    pub(crate) protocol: Protocol,
    pub(crate) target_port: TargetPort,
    pub(crate) node_port: Option<u16>,
}

impl ServicePort {
    /// The port name (`""` when the Service's only port is unnamed).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The Service port number.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
    /// `targetPort` (defaults to `port`).
    pub fn target_port(&self) -> &TargetPort {
        &self.target_port
    }
    /// `nodePort`, for NodePort and LoadBalancer Services.
    pub fn node_port(&self) -> Option<u16> {
        self.node_port
    }
}

// === EndpointSlice ===

/// A validated `discovery.k8s.io/v1 EndpointSlice` of address type IPv4 or IPv6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlice {
    pub(crate) namespace: Arc<str>,
    pub(crate) name: Arc<str>,
    /// The `kubernetes.io/service-name` label; a slice without it serves no Service.
    pub(crate) service: Option<Arc<str>>,
    pub(crate) family: IpFamily,
    pub(crate) ports: Vec<SlicePort>,
    pub(crate) endpoints: Vec<SliceEndpoint>,
}

impl EndpointSlice {
    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    /// The slice name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The Service it belongs to (label `kubernetes.io/service-name`).
    pub fn service(&self) -> Option<&str> {
        self.service.as_deref()
    }
    /// `addressType`.
    pub fn family(&self) -> IpFamily {
        self.family
    }
    /// The ports.
    pub fn ports(&self) -> &[SlicePort] {
        &self.ports
    }
    /// The endpoints.
    pub fn endpoints(&self) -> &[SliceEndpoint] {
        &self.endpoints
    }
    /// The key of the Service this slice belongs to.
    pub fn service_key(&self) -> Option<ServiceKey> {
        self.service
            .as_deref()
            .map(|s| ServiceKey::new(&self.namespace, s))
    }
}

/// A port of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SlicePort {
    pub(crate) name: Arc<str>,
    /// `None` (or 0) means "all ports"; kube-proxy ignores such ports, so does pobox.
    pub(crate) port: Option<u16>,
    pub(crate) protocol: Protocol,
}

impl SlicePort {
    /// The name, matched against the Service port name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The endpoint port number.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
}

/// One endpoint of a slice. Only its first address is used, as kube-proxy does
/// (the API says consumers must treat the others as interchangeable).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SliceEndpoint {
    pub(crate) address: IpAddr,
    /// `conditions.ready`; unset means ready.
    pub(crate) ready: bool,
    /// `conditions.serving`; unset means serving.
    pub(crate) serving: bool,
    /// `conditions.terminating`; unset means not terminating.
    pub(crate) terminating: bool,
    /// Node, zone and hostname, shared by every endpoint that has the same.
    pub(crate) meta: Option<Arc<EndpointMeta>>,
    /// From the slice's `pobox.io/weights` annotation; 1 when not given.
    pub(crate) weight: u32,
    pub(crate) zone_hints: Box<[Arc<str>]>,
    pub(crate) node_hints: Box<[Arc<str>]>,
}

impl SliceEndpoint {
    /// The address used (`addresses[0]`).
    pub fn address(&self) -> IpAddr {
        self.address
    }
    /// `conditions.ready` (unset reads as true).
    pub fn ready(&self) -> bool {
        self.ready
    }
    /// `conditions.serving` (unset reads as true).
    pub fn serving(&self) -> bool {
        self.serving
    }
    /// `conditions.terminating` (unset reads as false).
    pub fn terminating(&self) -> bool {
        self.terminating
    }
    /// `hostname`.
    pub fn hostname(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.hostname.as_deref())
    }
    /// `nodeName`.
    pub fn node_name(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.node.as_deref())
    }
    /// `zone`.
    pub fn zone(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.zone.as_deref())
    }
    /// The weight (annotation `pobox.io/weights` on the slice; 1 by default, 0 drains).
    pub fn weight(&self) -> u32 {
        self.weight
    }
    /// `hints.forZones[].name`.
    pub fn zone_hints(&self) -> &[Arc<str>] {
        &self.zone_hints
    }
    /// `hints.forNodes[].name`.
    pub fn node_hints(&self) -> &[Arc<str>] {
        &self.node_hints
    }
}

/// Where an endpoint runs, and its DNS hostname. Interned: the thousands of
/// endpoints on one node in one zone share one allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct EndpointMeta {
    pub node: Option<Arc<str>>,
    pub zone: Option<Arc<str>>,
    pub hostname: Option<Arc<str>>,
}

// === Object ===

/// A validated object pobox understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// A Service.
    Service(Arc<Service>),
    /// An EndpointSlice.
    EndpointSlice(Arc<EndpointSlice>),
}

/// The kinds an object reference can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `Service`.
    Service,
    /// `EndpointSlice`.
    EndpointSlice,
}

impl Kind {
    /// Parses `Service`/`EndpointSlice` (also `svc`, `endpointslice(s)`, case-insensitive).
    pub fn parse(s: &str) -> Option<Kind> {
        match s.to_ascii_lowercase().as_str() {
            "service" | "services" | "svc" => Some(Kind::Service),
            "endpointslice" | "endpointslices" => Some(Kind::EndpointSlice),
            _ => None,
        }
    }

    /// The Kubernetes kind name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change to the mesh's desired state (linkerd's `Update`, for
/// Kubernetes objects). Applying the same update twice changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Create or replace an object.
    Apply(Object),
    /// Remove an object; removing one that is not there is a no-op.
    Delete {
        /// Its kind.
        kind: Kind,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// Replace everything with exactly these objects.
    Reset(Vec<Object>),
}
