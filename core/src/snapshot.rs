//! The immutable, versioned view every pick reads: per-service-port endpoint
//! sets already filtered for this node, and the indexes that find them.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use crate::affinity::{self, Affinity, Clock};
use crate::balance::{with_local, Cursors, Slot};
use crate::config::MeshConfig;
use crate::dest::{Client, Destination, PortRef};
use crate::error::{Error, PickError};
use crate::hash::FoldHasher;
use crate::health::{Health, Outcome, OutlierDetection};
use crate::model::{
    EndpointMeta, EndpointSlice, IpFamily, Protocol, Service, ServiceKey, ServicePort,
    SessionAffinity, SliceEndpoint,
};
use crate::policy::{self, random_index, random_pair, stable_hash, LbPolicy, Seed, Table};
use crate::select::{self, Candidate, Locality};
use crate::shard::ShardedMap;
use crate::validate::DEFAULT_NAMESPACE;

// === Endpoint ===

const READY: u8 = 1;
const SERVING: u8 = 2;
const TERMINATING: u8 = 4;
const LOCAL: u8 = 8;

/// One backend of a service port, as the snapshot holds it: its address, its
/// conditions (after `publishNotReadyAddresses`), and where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    ip: IpAddr,
    port: u16,
    flags: u8,
    weight: u32,
    meta: Option<Arc<EndpointMeta>>,
}

impl Endpoint {
    /// The address to connect to.
    #[inline]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
    /// The IP address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
    /// The port (from the EndpointSlice).
    pub fn port(&self) -> u16 {
        self.port
    }
    /// The weight (1 unless an annotation or the API says otherwise; 0 drains:
    /// eligible, but never picked).
    pub fn weight(&self) -> u32 {
        self.weight
    }
    /// Ready (or the Service publishes not-ready addresses).
    pub fn is_ready(&self) -> bool {
        self.flags & READY != 0
    }
    /// Serving.
    pub fn is_serving(&self) -> bool {
        self.flags & SERVING != 0
    }
    /// Terminating.
    pub fn is_terminating(&self) -> bool {
        self.flags & TERMINATING != 0
    }
    /// On this node (the mesh's configured node).
    pub fn is_local(&self) -> bool {
        self.flags & LOCAL != 0
    }
    /// `nodeName`.
    pub fn node(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.node.as_deref())
    }
    /// `zone`.
    pub fn zone(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.zone.as_deref())
    }
    /// `hostname`.
    pub fn hostname(&self) -> Option<&str> {
        self.meta.as_ref().and_then(|m| m.hostname.as_deref())
    }
}

// === PortEntry ===

/// How a destination was addressed, which decides the traffic policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Traffic {
    /// By cluster IP or by name: `internalTrafficPolicy` applies.
    Internal,
    /// By node port, load-balancer IP or external IP: `externalTrafficPolicy` applies.
    External,
}

impl Traffic {
    /// `internal` or `external`.
    pub fn as_str(self) -> &'static str {
        match self {
            Traffic::Internal => "internal",
            Traffic::External => "external",
        }
    }
}

fn set_index(traffic: Traffic, family: IpFamily) -> usize {
    (traffic as usize) * 2 + family.index()
}

/// The inverse of [`set_index`].
const SETS: [(Traffic, IpFamily); 4] = [
    (Traffic::Internal, IpFamily::V4),
    (Traffic::Internal, IpFamily::V6),
    (Traffic::External, IpFamily::V4),
    (Traffic::External, IpFamily::V6),
];

/// One port of one Service with its endpoints and eligible sets.
#[derive(Debug)]
pub struct PortEntry {
    service: ServiceKey,
    spec: ServicePort,
    slot: Arc<Slot>,
    /// Every endpoint (merged across slices), IPv4 then IPv6, by address.
    endpoints: Box<[Endpoint]>,
    /// Indices into `endpoints`, by `set_index(traffic, family)`.
    sets: [Box<[u32]>; 4],
    /// Per endpoint (parallel to `endpoints`): bit `k` set when it is one of
    /// the members picks of set `k` choose from, so that an affinity hit
    /// checks its binding without a search.
    member_of: Box<[u8]>,
    policy: LbPolicy,
    /// `sessionAffinity: ClientIP` timeout, in nanoseconds as the affinity
    /// table keeps time.
    affinity: Option<NonZeroU64>,
    /// Per endpoint (parallel to `endpoints`): requests in flight and passive
    /// health, for least-request and outlier detection only.
    health: Option<Box<[Arc<Health>]>>,
    outlier: Option<OutlierDetection>,
    /// Members and tables, when a set's members differ from the set (a
    /// drained endpoint) or the policy has tables; `None` (8 bytes instead of
    /// 160 per port) for plain round robin, random and least-request.
    balancing: Option<Box<Balancing>>,
    /// The pick path's shortcut for this port, if it has one.
    shortcut: Shortcut,
}

/// A pick that skips the general path's dispatch on the policy and its
/// table: for ports without outlier detection (nothing ejected to pass
/// over) and, as each variant says, without drained members or session
/// affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shortcut {
    /// Every pick takes the general path.
    None,
    /// Round robin over `sets` (no tables, no drained members).
    RoundRobin,
    /// Smooth weighted round robin: the set's sequence, which holds
    /// positions in `endpoints`, in turn.
    Sequence,
    /// Maglev or ring hash, no affinity: a client with a hash key is picked
    /// by the table alone (no cursors, no clock).
    Hash,
    /// Least-request over `sets` (no drained members).
    LeastRequest,
}

impl PortEntry {
    /// The Service this port belongs to.
    pub fn service(&self) -> &ServiceKey {
        &self.service
    }
    /// The port as the Service declares it.
    pub fn spec(&self) -> &ServicePort {
        &self.spec
    }
    /// Every known endpoint of this port, eligible or not (what `--all` shows).
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }
    /// The endpoints eligible for `traffic` of `family` on this node.
    pub fn eligible(&self, traffic: Traffic, family: IpFamily) -> impl Iterator<Item = &Endpoint> {
        self.sets[set_index(traffic, family)]
            .iter()
            .map(|&i| &self.endpoints[i as usize])
    }

    /// `name/PROTO`, or `port/PROTO` for an unnamed port.
    pub fn label(&self) -> String {
        if self.spec.name().is_empty() {
            format!("{}/{}", self.spec.port(), self.spec.protocol())
        } else {
            format!("{}/{}", self.spec.name(), self.spec.protocol())
        }
    }

    /// The balancing policy.
    pub fn policy(&self) -> LbPolicy {
        self.policy
    }

    /// Whether a pick from this port reads the client's IP: for `ClientIP`
    /// session affinity, and as the hash key of Maglev and ring hash when
    /// the client brings no key of its own. The other policies never look
    /// at it.
    pub fn uses_client_ip(&self) -> bool {
        self.affinity.is_some() || self.policy.is_consistent()
    }

    /// The member of `set` at `addr`, if there is one (members are in
    /// address order).
    fn member(&self, set: usize, addr: SocketAddr) -> Option<&Endpoint> {
        let key = (addr.ip(), addr.port());
        let members = self.members(set);
        members
            .binary_search_by(|&i| {
                let e = &self.endpoints[i as usize];
                (e.ip, e.port).cmp(&key)
            })
            .ok()
            .map(|at| &self.endpoints[members[at] as usize])
    }

    /// [`PortEntry::member`] for a binding: when the endpoint at the bound
    /// position still has the bound address (the port's endpoints have not
    /// changed around it), membership is a bit of `member_of`, not a search
    /// of addresses.
    ///
    /// An endpoint that outlier detection has ejected is no member either,
    /// unless too few are healthy for ejections to count (the panic
    /// threshold), as for a pick by policy. `now` is in the clock's
    /// nanoseconds, as the affinity table keeps time.
    #[inline]
    fn bound_member(&self, set: usize, bound: affinity::Bound, now: u64) -> Option<&Endpoint> {
        let at = bound.position as usize;
        let endpoint = match self.endpoints.get(at) {
            Some(e) if e.port == bound.addr.port() && e.ip == bound.addr.ip() => {
                (self.member_of[at] >> set & 1 == 1).then_some(e)?
            }
            _ => self.member(set, bound.addr)?,
        };
        if self.outlier.is_some() && self.bound_ejected(set, endpoint, now) {
            return None;
        }
        Some(endpoint)
    }

    #[inline(never)]
    fn bound_ejected(&self, set: usize, endpoint: &Endpoint, now: u64) -> bool {
        let now = Duration::from_nanos(now);
        self.is_ejected(self.position_of(endpoint), now) && !self.panicking(self.members(set), now)
    }

    #[inline]
    fn members(&self, set: usize) -> &[u32] {
        match &self.balancing {
            Some(b) => b.members[set].as_deref().unwrap_or(&self.sets[set]),
            None => &self.sets[set],
        }
    }

    /// The position in `endpoints` of the endpoint at `addr`.
    fn position(&self, addr: SocketAddr) -> Option<usize> {
        let key = endpoint_order(addr.ip(), addr.port());
        self.endpoints
            .binary_search_by_key(&key, |e| endpoint_order(e.ip, e.port))
            .ok()
    }

    fn state_of(&self, addr: SocketAddr) -> Option<&Arc<Health>> {
        Some(&self.health.as_ref()?[self.position(addr)?])
    }

    /// Whether outcomes reported for this port change anything (passive
    /// health: outlier detection is on).
    pub(crate) fn records_outcomes(&self) -> bool {
        self.outlier.is_some()
    }

    /// The health of the endpoint at `position` in `endpoints`, for ports
    /// that track requests.
    pub(crate) fn health_at(&self, position: usize) -> Option<&Arc<Health>> {
        self.health.as_ref().map(|h| &h[position])
    }

    /// The position in `endpoints` of one of its endpoints (a reference a
    /// pick returned).
    pub(crate) fn position_of(&self, endpoint: &Endpoint) -> usize {
        let base = self.endpoints.as_ptr() as usize;
        let at = (endpoint as *const Endpoint as usize - base) / std::mem::size_of::<Endpoint>();
        debug_assert!(std::ptr::eq(&self.endpoints[at], endpoint));
        at
    }

    /// Records an outcome for the endpoint at `position`, ejecting it when
    /// outlier detection says so and the port's ejection budget allows.
    pub(crate) fn record_at(&self, position: usize, outcome: Outcome, clock: &dyn Clock) {
        let (Some(outlier), Some(health)) = (self.outlier, self.health.as_ref()) else {
            return;
        };
        let at = position;
        if !health[at].record(outcome, outlier.consecutive_failures) {
            return;
        }
        let now = clock.now();
        let ejected = health.iter().filter(|h| h.is_ejected(now)).count();
        let budget = (health.len() * outlier.max_ejection_percent as usize / 100).max(1);
        if ejected < budget && !health[at].is_ejected(now) {
            health[at].eject(now, outlier.base_ejection);
        }
    }

    pub(crate) fn state_of_endpoint(&self, addr: SocketAddr) -> Option<Arc<Health>> {
        self.state_of(addr).cloned()
    }

    /// The in-flight count of the endpoint at `addr` (least-request and
    /// outlier-detection Services only).
    pub fn in_flight(&self, addr: SocketAddr) -> Option<u32> {
        self.state_of(addr).map(|h| h.in_flight())
    }

    /// Picks a position in `endpoints` from `set`, by the policy, passing
    /// over ejected endpoints.
    #[inline(always)]
    fn pick(
        &self,
        set: usize,
        client: &Client<'_>,
        now: Duration,
        cursors: &mut Cursors,
    ) -> Option<usize> {
        match self.shortcut {
            Shortcut::RoundRobin => {
                let members = &self.sets[set];
                if members.is_empty() {
                    return None;
                }
                return Some(members[self.slot.next(cursors, set, members.len())] as usize);
            }
            Shortcut::Sequence => {
                // An empty set has no table (`Table::Members`).
                let Some(Table::Sequence(seq)) = self.balancing.as_ref().map(|b| &b.tables[set])
                else {
                    return None;
                };
                return Some(seq[self.slot.next(cursors, set, seq.len())] as usize);
            }
            Shortcut::Hash => {
                if let Some(at) = hash_key(client).and_then(|h| self.pick_hashed(set, h)) {
                    return Some(at);
                }
            }
            Shortcut::LeastRequest => {
                let (members, Some(health)) = (&self.sets[set], &self.health) else {
                    return None;
                };
                if members.is_empty() {
                    return None;
                }
                return Some(two_choices(members, health, cursors));
            }
            Shortcut::None => {}
        }
        self.pick_by_table(set, client, now, cursors)
    }

    /// [`PortEntry::pick`] for every policy.
    #[inline(never)]
    fn pick_by_table(
        &self,
        set: usize,
        client: &Client<'_>,
        now: Duration,
        cursors: &mut Cursors,
    ) -> Option<usize> {
        let members = self.members(set);
        if members.is_empty() {
            return None;
        }
        let table = self
            .balancing
            .as_ref()
            .map_or(&NO_TABLE, |b| &b.tables[set]);
        let at = match table {
            Table::Members if self.policy == LbPolicy::Random => {
                random_index(members.len(), cursors)
            }
            Table::Members if self.policy == LbPolicy::LeastRequest => {
                return Some(self.least_request(members, now, cursors));
            }
            Table::Members => {
                let at = self.slot.next(cursors, set, members.len());
                if self.outlier.is_some()
                    && self.is_ejected(members[at] as usize, now)
                    && !self.panicking(members, now)
                {
                    // Round robin passes over an ejected endpoint by moving
                    // on, so its share spreads over the others.
                    for _ in 1..members.len() {
                        let next = self.slot.next(cursors, set, members.len());
                        if !self.is_ejected(members[next] as usize, now) {
                            return Some(members[next] as usize);
                        }
                    }
                }
                at
            }
            // Tables hold positions in `endpoints`: the member index is
            // wanted only to walk past an ejected endpoint.
            Table::Sequence(seq) => {
                let first = seq[self.slot.next(cursors, set, seq.len())] as usize;
                match self.ejected_member(members, first, now) {
                    Some(at) => at,
                    None => return Some(first),
                }
            }
            Table::Maglev(_) | Table::Ring(_) => {
                match hash_key(client).and_then(|h| table.hashed(h)) {
                    Some(first) => match self.ejected_member(members, first, now) {
                        Some(at) => at,
                        None => return Some(first),
                    },
                    None => self.slot.next(cursors, set, members.len()),
                }
            }
        };
        Some(self.avoid_ejected(members, at, now))
    }

    /// The index among `members` of the endpoint at `position` (a table's
    /// pick) when outlier detection has ejected it, for the walk past it;
    /// `None` when the pick stands.
    #[inline]
    fn ejected_member(&self, members: &[u32], position: usize, now: Duration) -> Option<usize> {
        (self.outlier.is_some() && self.is_ejected(position, now))
            .then(|| members.partition_point(|&m| (m as usize) < position))
    }

    /// [`PortEntry::pick_by_table`] for a [`Shortcut::Hash`] port
    /// and a client with a hash key: its position in `endpoints`; `None`
    /// when the set has no table (it is empty), for the general path.
    #[inline(always)]
    fn pick_hashed(&self, set: usize, h: u64) -> Option<usize> {
        self.balancing.as_ref()?.tables[set].hashed(h)
    }

    #[inline]
    fn is_ejected(&self, position: usize, now: Duration) -> bool {
        match (&self.health, self.outlier) {
            (Some(h), Some(_)) => h[position].is_ejected(now),
            _ => false,
        }
    }

    /// `members[at]`, or the next member after it that is not ejected; when
    /// too few members are healthy (the panic threshold), ejections are ignored.
    #[inline]
    fn avoid_ejected(&self, members: &[u32], at: usize, now: Duration) -> usize {
        let first = members[at] as usize;
        if self.outlier.is_none() {
            return first;
        }
        self.avoid_ejected_slow(members, at, first, now)
    }

    #[inline(never)]
    fn avoid_ejected_slow(&self, members: &[u32], at: usize, first: usize, now: Duration) -> usize {
        if !self.is_ejected(first, now) || self.panicking(members, now) {
            return first;
        }
        (1..members.len())
            .map(|k| members[(at + k) % members.len()] as usize)
            .find(|&m| !self.is_ejected(m, now))
            .unwrap_or(first)
    }

    /// Whether too few members are healthy for ejections to count (Envoy's
    /// panic threshold): then every member takes traffic.
    fn panicking(&self, members: &[u32], now: Duration) -> bool {
        let Some(outlier) = self.outlier else {
            return false;
        };
        let healthy = members
            .iter()
            .filter(|&&m| !self.is_ejected(m as usize, now))
            .count();
        healthy == 0
            || (healthy as u64) * 100
                < outlier.panic_threshold_percent as u64 * members.len() as u64
    }

    /// Power of two choices: of two random members (distinct when there are
    /// two or more), the one with fewer requests in flight; the first on a tie.
    #[inline(always)]
    fn least_request(&self, members: &[u32], now: Duration, cursors: &mut Cursors) -> usize {
        let health = self
            .health
            .as_ref()
            .expect("least-request ports carry health");
        let (i, j) = random_pair(members.len(), cursors);
        if i == j {
            return self.avoid_ejected(members, i, now);
        }
        let a = self.avoid_ejected(members, i, now);
        let b = self.avoid_ejected(members, j, now);
        less_loaded(health, a, b)
    }
}

/// [`PortEntry::least_request`] with nothing ejected: of two random
/// members, the position of the one with fewer requests in flight (the
/// first on a tie). When the set holds every endpoint, member `i` is
/// position `i`, and the members are not read: at 10,000 endpoints that
/// is one cache miss less per candidate.
#[inline(always)]
fn two_choices(members: &[u32], health: &[Arc<Health>], cursors: &mut Cursors) -> usize {
    let (i, j) = random_pair(members.len(), cursors);
    debug_assert!(members.len() != health.len() || members[i] as usize == i);
    let (a, b) = if members.len() == health.len() {
        (i, j)
    } else {
        (members[i] as usize, members[j] as usize)
    };
    less_loaded(health, a, b)
}

/// Of the endpoints at positions `a` and `b`, the one with fewer requests
/// in flight; `a` on a tie.
#[inline(always)]
fn less_loaded(health: &[Arc<Health>], a: usize, b: usize) -> usize {
    if health[b].in_flight() < health[a].in_flight() {
        b
    } else {
        a
    }
}

/// See [`PortEntry::balancing`].
#[derive(Debug)]
struct Balancing {
    /// Per set: the members picks choose from (the eligible endpoints of
    /// weight > 0), when that differs from the set.
    members: [Option<Box<[u32]>>; 4],
    /// Per set: the policy's table over its members.
    tables: [Table; 4],
    /// Maglev: each endpoint's seed (by position), for the next build.
    seeds: Box<[Seed]>,
}

/// The table of sets that need none.
static NO_TABLE: Table = Table::Members;

// === ServiceEntry ===

/// A Service as the snapshot holds it.
#[derive(Debug)]
pub struct ServiceEntry {
    service: Arc<Service>,
    ports: Box<[Arc<PortEntry>]>,
    /// The family a by-name destination resolves in.
    family: IpFamily,
    /// Headless Services only: the ready endpoint addresses DNS answers with
    /// (every slice, with or without ports), by address.
    dns: Box<[DnsEndpoint]>,
}

/// A ready address of a headless Service, as DNS publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsEndpoint {
    ip: IpAddr,
    /// The endpoint's `hostname`, else its address with `.`/`:` turned into
    /// `-` (`10-3-0-3`), as CoreDNS names endpoints that have no hostname.
    label: Arc<str>,
}

impl DnsEndpoint {
    /// The address.
    pub fn ip(&self) -> IpAddr {
        self.ip
    }
    /// The DNS label under the Service name: the endpoint's `hostname`, else
    /// the dashed address (`10-3-0-3`, `fd00--1`).
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl ServiceEntry {
    /// The validated Service.
    pub fn service(&self) -> &Service {
        &self.service
    }
    /// Its ports, in declaration order.
    pub fn ports(&self) -> &[Arc<PortEntry>] {
        &self.ports
    }
    /// The IP family a by-name destination resolves in: the primary family
    /// (`ipFamilies[0]`, or that of the first cluster IP), else the family of
    /// its endpoints (IPv4 first).
    pub fn family(&self) -> IpFamily {
        self.family
    }
    /// For a headless Service, the addresses DNS answers with: every ready
    /// endpoint (every endpoint with `publishNotReadyAddresses`) of every
    /// slice, whether or not the slice has ports, by address. Empty for
    /// other Services.
    pub fn dns_endpoints(&self) -> &[DnsEndpoint] {
        &self.dns
    }
}

// === Frontend ===

/// A virtual address traffic can be sent to, packed into two words so that
/// hashing and comparing it is cheap on the pick path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frontend {
    /// The IPv6 address, or the IPv4 address in the low 32 bits.
    ip: u128,
    /// port << 16 | protocol << 8 | 1 for IPv6.
    tail: u32,
}

impl Frontend {
    #[inline]
    fn new(ip: IpAddr, port: u16, protocol: Protocol) -> Frontend {
        let tail = ((port as u32) << 16) | ((protocol as u32) << 8);
        match ip {
            IpAddr::V4(v4) => Frontend {
                ip: u32::from(v4) as u128,
                tail,
            },
            IpAddr::V6(v6) => Frontend {
                ip: u128::from(v6),
                tail: tail | 1,
            },
        }
    }

    fn addr(&self) -> SocketAddr {
        let ip = if self.tail & 1 == 0 {
            IpAddr::from(std::net::Ipv4Addr::from(self.ip as u32))
        } else {
            IpAddr::from(std::net::Ipv6Addr::from(self.ip))
        };
        SocketAddr::new(ip, (self.tail >> 16) as u16)
    }

    fn protocol(&self) -> Protocol {
        Protocol::ALL[((self.tail >> 8) & 0xff) as usize]
    }
}

impl Hash for Frontend {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        if self.tail & 1 == 0 {
            h.write_u64(((self.ip as u64) << 32) | self.tail as u64);
        } else {
            h.write_u64(self.ip as u64 ^ self.tail as u64);
            h.write_u64((self.ip >> 64) as u64);
        }
    }
}

#[derive(Debug, Clone)]
struct FrontendEntry {
    service: Arc<ServiceEntry>,
    port: Arc<PortEntry>,
    set: u8,
}

impl FrontendEntry {
    fn owner(&self) -> &ServiceKey {
        self.service.service.key()
    }
}

/// Which field of a Service created a frontend, for conflict messages.
enum Origin {
    ClusterIp(usize),
    NodePort(usize),
    LoadBalancer(usize),
    ExternalIp(usize),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::ClusterIp(i) => write!(f, "spec.clusterIPs[{i}]"),
            Origin::NodePort(i) => write!(f, "spec.ports[{i}].nodePort"),
            Origin::LoadBalancer(i) => write!(f, "status.loadBalancer.ingress[{i}].ip"),
            Origin::ExternalIp(i) => write!(f, "spec.externalIPs[{i}]"),
        }
    }
}

/// Every frontend of a Service. As kube-proxy runs one proxier per IP family
/// and a proxier serves a Service only if it has a cluster IP of that family,
/// node ports, load-balancer and external IPs are served only in the families
/// of the Service's cluster IPs (none for headless or unallocated Services).
fn frontends_of(
    entry: &Arc<ServiceEntry>,
    node_ips: &[IpAddr],
) -> Vec<(Frontend, FrontendEntry, Origin)> {
    let svc = &entry.service;
    let served = |ip: &IpAddr| {
        svc.cluster_ips()
            .iter()
            .any(|c| IpFamily::of(*c) == IpFamily::of(*ip))
    };
    let mut out = Vec::new();
    for (j, port) in entry.ports.iter().enumerate() {
        let spec = &port.spec;
        let mut add = |ip: IpAddr, number: u16, traffic: Traffic, origin: Origin| {
            out.push((
                Frontend::new(ip, number, spec.protocol()),
                FrontendEntry {
                    service: entry.clone(),
                    port: port.clone(),
                    set: set_index(traffic, IpFamily::of(ip)) as u8,
                },
                origin,
            ))
        };
        for (i, &ip) in svc.cluster_ips().iter().enumerate() {
            add(ip, spec.port(), Traffic::Internal, Origin::ClusterIp(i));
        }
        if let Some(node_port) = spec.node_port() {
            for &ip in node_ips.iter().filter(|ip| served(ip)) {
                add(ip, node_port, Traffic::External, Origin::NodePort(j));
            }
        }
        for (i, &ip) in svc
            .load_balancer_ips()
            .iter()
            .enumerate()
            .filter(|(_, ip)| served(ip))
        {
            add(ip, spec.port(), Traffic::External, Origin::LoadBalancer(i));
        }
        for (i, &ip) in svc
            .external_ips()
            .iter()
            .enumerate()
            .filter(|(_, ip)| served(ip))
        {
            add(ip, spec.port(), Traffic::External, Origin::ExternalIp(i));
        }
    }
    out
}

// === build ===

/// Builds a Service's entry from the Service and its slices (ordered by slice
/// name), merging slices as kube-proxy's `endpointslicecache.go` does.
pub(crate) fn build_service<'a>(
    service: &Arc<Service>,
    slices: impl Iterator<Item = &'a EndpointSlice> + Clone,
    slot_for: &mut dyn FnMut(&ServicePort) -> Arc<Slot>,
    config: &MeshConfig,
    previous: Option<&ServiceEntry>,
) -> ServiceEntry {
    let at = Locality {
        node: config.node_name().unwrap_or(""),
        zone: config.zone_name().unwrap_or(""),
    };
    let mut ports = Vec::with_capacity(service.ports().len());
    let mut families_seen = [false; 2];
    for spec in service.ports() {
        let old = previous.and_then(|p| {
            p.ports
                .iter()
                .find(|o| o.spec.name() == spec.name() && o.spec.protocol() == spec.protocol())
        });
        let entry = build_port(
            service,
            spec,
            slices.clone(),
            slot_for(spec),
            at,
            old.map(|o| &**o),
        );
        for e in entry.endpoints.iter() {
            families_seen[IpFamily::of(e.ip).index()] = true;
        }
        ports.push(Arc::new(entry));
    }
    let family = match service.ip_families().first() {
        Some(&f) => f,
        None if !families_seen[0] && families_seen[1] => IpFamily::V6,
        None => IpFamily::V4,
    };
    let dns = if service.is_headless() {
        dns_endpoints(service, slices)
    } else {
        Box::default()
    };
    ServiceEntry {
        service: service.clone(),
        ports: ports.into_boxed_slice(),
        family,
        dns,
    }
}

/// The ready addresses of a headless Service (kubernetes/dns specification
/// 2.4: _ready_ endpoints; `publishNotReadyAddresses` makes every endpoint
/// ready). An address in several slices is listed once; its first slice by
/// name gives the hostname, unless only a later one has one.
///
/// Every ready copy is sorted by address as [`merge_copies`] sorts its
/// copies (stably, so slice order stays among copies of one address), by
/// the same function: one sort in the JavaScript package's module for both,
/// and no map keyed by address.
fn dns_endpoints<'a>(
    service: &Service,
    slices: impl Iterator<Item = &'a EndpointSlice>,
) -> Box<[DnsEndpoint]> {
    let mut copies: Vec<SliceCopy<'a>> = Vec::new();
    for slice in slices {
        for ep in slice.endpoints() {
            if !(ep.ready() || service.publish_not_ready_addresses()) {
                continue;
            }
            copies.push(SliceCopy {
                ep,
                port: 0,
                flags: 0,
            });
        }
    }
    sort_by_address(&mut copies);
    let mut out: Vec<DnsEndpoint> = Vec::new();
    for group in copies.chunk_by(|a, b| a.ep.address() == b.ep.address()) {
        let ip = group[0].ep.address();
        out.push(DnsEndpoint {
            ip,
            label: match group.iter().find_map(|c| c.ep.hostname()) {
                Some(h) => Arc::from(h.to_ascii_lowercase()),
                None => Arc::from(crate::dns::dashed(ip)),
            },
        });
    }
    out.into_boxed_slice()
}

/// A sort key ordering endpoints as `(IpAddr, u16)` orders them (IPv4
/// before IPv6, then by address, then port), cheaper to compare.
fn endpoint_order(ip: IpAddr, port: u16) -> (u8, u128, u16) {
    match ip {
        IpAddr::V4(v4) => (0, u32::from(v4) as u128, port),
        IpAddr::V6(v6) => (1, u128::from(v6), port),
    }
}

/// Merges every copy of every endpoint (in slice order) into one per
/// ip:port, ordered as `(IpAddr, u16)` orders. Among copies of one
/// endpoint a non-terminating copy wins over a terminating one, then a
/// local copy (as kube-proxy prefers); otherwise the first slice by name
/// keeps it. A stable sort keeps slice order among copies (a map keyed by
/// address cost a third of a 10,000-endpoint publish).
fn merge_copies(mut copies: Vec<SliceCopy<'_>>) -> Vec<SliceCopy<'_>> {
    sort_by_address(&mut copies);
    // `kept` is the last copy kept, `copy` the next: dropped when it is
    // another copy of the same endpoint, after taking its place if it
    // ranks higher.
    copies.dedup_by(|copy, kept| {
        let same = copy.key() == kept.key();
        if same && copy.rank() > kept.rank() {
            *kept = *copy;
        }
        same
    });
    copies
}

/// Sorts copies by address and port, stably: the one sort of
/// [`merge_copies`] and [`dns_endpoints`].
fn sort_by_address(copies: &mut [SliceCopy<'_>]) {
    copies.sort_by_key(|c| endpoint_order(c.ep.address(), c.port));
}

/// One copy of an endpoint as a slice lists it: the slice's entry, the
/// number the slice gives the service port (0 for DNS names, which have
/// no port) and the endpoint's flags from this copy. Sixteen bytes: copies
/// are sorted and merged before the endpoints are made from the copies
/// kept. (Making every copy's endpoint first, 64 bytes with a reference
/// count to take, cost a fifth of a 10,000-endpoint publish.)
#[derive(Clone, Copy)]
struct SliceCopy<'a> {
    ep: &'a SliceEndpoint,
    port: u16,
    flags: u8,
}

impl SliceCopy<'_> {
    fn key(&self) -> (IpAddr, u16) {
        (self.ep.address(), self.port)
    }

    /// Which of two copies of an endpoint wins: a non-terminating one, then
    /// a local one.
    fn rank(&self) -> (bool, bool) {
        (self.flags & TERMINATING == 0, self.flags & LOCAL != 0)
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            ip: self.ep.address(),
            port: self.port,
            flags: self.flags,
            weight: self.ep.weight(),
            meta: self.ep.meta.clone(),
        }
    }
}

/// Each endpoint's Maglev [`Seed`] for a table of `m` slots: copied from
/// `previous` (a build of the same port with the same policy) for the
/// endpoints it had, computed for the others.
fn maglev_seeds(endpoints: &[Endpoint], m: u32, previous: Option<&PortEntry>) -> Box<[Seed]> {
    let (old, old_seeds) = previous
        .and_then(|p| Some((&*p.endpoints, &*p.balancing.as_ref()?.seeds)))
        .unwrap_or_default();
    let mut name = Vec::with_capacity(64);
    carry_over(endpoints, old, old_seeds, |e| {
        Seed::new(e.addr(), m, &mut name)
    })
}

/// For each of `endpoints`, what `values` holds for the same ip:port in
/// `old` (the endpoints of an earlier build of the port, `values` one for
/// each; when it has another length, as when that build kept no seeds,
/// nothing is carried over), or `fresh` of it when `old` does not have it.
/// Both lists are in address order ([`endpoint_order`]), so one merge finds
/// them all. (A binary search for each endpoint, as the in-flight counts
/// were carried over before, made a 10,000-endpoint least-request publish
/// three times as slow.)
fn carry_over<T: Clone>(
    endpoints: &[Endpoint],
    old: &[Endpoint],
    values: &[T],
    mut fresh: impl FnMut(&Endpoint) -> T,
) -> Box<[T]> {
    let (old, values) = if old.len() == values.len() {
        (old, values)
    } else {
        (&[][..], &[][..])
    };
    let mut j = 0;
    endpoints
        .iter()
        .map(|e| {
            let key = endpoint_order(e.ip, e.port);
            while j < old.len() && endpoint_order(old[j].ip, old[j].port) < key {
                j += 1;
            }
            match old.get(j) {
                Some(o) if (o.ip, o.port) == (e.ip, e.port) => values[j].clone(),
                _ => fresh(e),
            }
        })
        .collect()
}

fn build_port<'a>(
    service: &Service,
    spec: &ServicePort,
    slices: impl Iterator<Item = &'a EndpointSlice> + Clone,
    slot: Arc<Slot>,
    at: Locality<'_>,
    previous: Option<&PortEntry>,
) -> PortEntry {
    // Every copy of every endpoint, in slice order; sorted by address and
    // merged below. Room for all at once (a slice has the port at most
    // once): growing it copied 10,000 copies a dozen times.
    let mut copies: Vec<SliceCopy<'a>> =
        Vec::with_capacity(slices.clone().map(|s| s.endpoints().len()).sum());
    for slice in slices {
        for sp in slice.ports() {
            // kube-proxy ignores ports without a number ("all ports").
            let (true, true, Some(number)) = (
                sp.name() == spec.name(),
                sp.protocol() == spec.protocol(),
                sp.port(),
            ) else {
                continue;
            };
            for ep in slice.endpoints() {
                let local = !at.node.is_empty() && ep.node_name() == Some(at.node);
                let mut flags = 0;
                if ep.ready() || service.publish_not_ready_addresses() {
                    flags |= READY;
                }
                if ep.serving() {
                    flags |= SERVING;
                }
                if ep.terminating() {
                    flags |= TERMINATING;
                }
                if local {
                    flags |= LOCAL;
                }
                copies.push(SliceCopy {
                    ep,
                    port: number,
                    flags,
                });
            }
        }
    }

    let merged = merge_copies(copies);
    let split = merged.partition_point(|c| c.ep.address().is_ipv4());
    let mut sets: [Box<[u32]>; 4] = Default::default();
    for (family, range) in [
        (IpFamily::V4, 0..split),
        (IpFamily::V6, split..merged.len()),
    ] {
        let candidates: Vec<Candidate<'_>> = merged[range.clone()]
            .iter()
            .map(|c| Candidate {
                ready: c.flags & READY != 0,
                serving: c.flags & SERVING != 0,
                terminating: c.flags & TERMINATING != 0,
                local: c.flags & LOCAL != 0,
                zone_hints: c.ep.zone_hints(),
                node_hints: c.ep.node_hints(),
            })
            .collect();
        let offset = range.start as u32;
        let shift = |v: Vec<u32>| -> Box<[u32]> { v.into_iter().map(|i| i + offset).collect() };
        sets[set_index(Traffic::Internal, family)] = shift(select::eligible(
            &candidates,
            service.internal_traffic_policy(),
            at,
        ));
        if service.is_externally_accessible() {
            sets[set_index(Traffic::External, family)] = shift(select::eligible(
                &candidates,
                service.external_traffic_policy(),
                at,
            ));
        }
    }
    let endpoints: Box<[Endpoint]> = merged.iter().map(SliceCopy::endpoint).collect();
    let policy = service.lb_policy();
    let seeds = match policy {
        LbPolicy::Maglev { table_size } => maglev_seeds(
            &endpoints,
            table_size,
            previous.filter(|p| p.policy == policy),
        ),
        _ => Box::default(),
    };
    let mut members: [Option<Box<[u32]>>; 4] = Default::default();
    let mut tables: [Table; 4] = [
        Table::Members,
        Table::Members,
        Table::Members,
        Table::Members,
    ];
    for (i, set) in sets.iter().enumerate() {
        if set.iter().any(|&e| endpoints[e as usize].weight == 0) {
            members[i] = Some(
                set.iter()
                    .copied()
                    .filter(|&e| endpoints[e as usize].weight > 0)
                    .collect(),
            );
        }
        let of = members[i].as_deref().unwrap_or(set);
        let weighted: Vec<(SocketAddr, u32)> = of
            .iter()
            .map(|&e| (endpoints[e as usize].addr(), endpoints[e as usize].weight))
            .collect();
        // Positions in `endpoints`, one step less for every pick.
        tables[i] = policy::build(policy, &weighted, of, endpoints.len(), &seeds);
    }
    // State for least-request and outlier detection; an endpoint that stays
    // keeps its state object.
    let needs_health = policy == LbPolicy::LeastRequest || service.outlier_detection().is_some();
    let health = needs_health.then(|| {
        let (old, states) = previous
            .and_then(|p| Some((&*p.endpoints, &**p.health.as_ref()?)))
            .unwrap_or_default();
        carry_over(&endpoints, old, states, |_| Arc::default())
    });
    let mut member_of = vec![0u8; endpoints.len()].into_boxed_slice();
    for (k, set) in sets.iter().enumerate() {
        for &e in members[k].as_deref().unwrap_or(set) {
            member_of[e as usize] |= 1 << k;
        }
    }
    let balancing = (members.iter().any(Option::is_some)
        || tables.iter().any(|t| *t != Table::Members))
    .then(|| {
        Box::new(Balancing {
            members,
            tables,
            seeds,
        })
    });
    let outlier = service.outlier_detection();
    PortEntry {
        shortcut: match policy {
            _ if outlier.is_some() => Shortcut::None,
            LbPolicy::RoundRobin if balancing.is_none() => Shortcut::RoundRobin,
            LbPolicy::WeightedRoundRobin => Shortcut::Sequence,
            LbPolicy::LeastRequest if balancing.is_none() => Shortcut::LeastRequest,
            _ if policy.is_consistent() && service.session_affinity() == SessionAffinity::None => {
                Shortcut::Hash
            }
            _ => Shortcut::None,
        },
        service: service.key().clone(),
        spec: spec.clone(),
        slot,
        health,
        outlier,
        endpoints,
        sets,
        member_of,
        policy,
        affinity: match service.session_affinity() {
            SessionAffinity::ClientIp { timeout_seconds } => {
                NonZeroU64::new(u64::from(timeout_seconds).saturating_mul(1_000_000_000))
            }
            SessionAffinity::None => None,
        },
        balancing,
    }
}

// === Snapshot ===

/// An immutable view of the mesh at one version. Cheap to hold; never changes.
pub struct Snapshot {
    version: u64,
    config: Arc<MeshConfig>,
    /// `by_name`: every Service by `namespace/name`.
    services: ShardedMap<ServiceKey, Arc<ServiceEntry>>,
    /// `by_frontend`: (IP, port, protocol) of every cluster IP, node port,
    /// load-balancer IP and external IP. One owner per frontend: a second
    /// Service claiming one is refused at apply time.
    frontends: ShardedMap<Frontend, FrontendEntry>,
    /// Session-affinity bindings, shared by every snapshot of the mesh.
    affinity: Arc<Affinity>,
    clock: Arc<dyn Clock>,
    /// `by_ip`, for PTR answers: every cluster IP and every ready address of
    /// a headless Service, to the Services (and endpoint labels) that own
    /// it, ordered by Service key. An address can have several owners (a pod
    /// behind two headless Services); each gets a PTR record.
    by_ip: ShardedMap<IpAddr, PtrOwners>,
    /// `by_namespace`: how many Services each namespace has, so that
    /// `<ns>.svc.<zone>` exists (NOERROR, no data) exactly when it has one.
    namespaces: ShardedMap<Arc<str>, u32>,
}

/// One owner of an address, for PTR answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PtrOwner {
    pub(crate) service: ServiceKey,
    /// The endpoint label under the Service name, for a headless Service.
    pub(crate) label: Option<Arc<str>>,
}

/// The owners of one address: almost always one, kept inline (no
/// allocation of its own), so the index costs one hash-table slot per address.
#[derive(Debug, Clone)]
pub(crate) enum PtrOwners {
    One(PtrOwner),
    Many(Box<[PtrOwner]>),
}

impl PtrOwners {
    fn as_slice(&self) -> &[PtrOwner] {
        match self {
            PtrOwners::One(o) => std::slice::from_ref(o),
            PtrOwners::Many(all) => all,
        }
    }

    fn from_vec(mut owners: Vec<PtrOwner>) -> Option<PtrOwners> {
        match owners.len() {
            0 => None,
            1 => owners.pop().map(PtrOwners::One),
            _ => Some(PtrOwners::Many(owners.into_boxed_slice())),
        }
    }
}

/// The addresses a Service owns for PTR answers.
fn ptr_addresses(entry: &ServiceEntry) -> Vec<(IpAddr, Option<Arc<str>>)> {
    let mut out: Vec<(IpAddr, Option<Arc<str>>)> = entry
        .service
        .cluster_ips()
        .iter()
        .map(|&ip| (ip, None))
        .collect();
    out.extend(entry.dns.iter().map(|e| (e.ip, Some(e.label.clone()))));
    out
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("version", &self.version)
            .field("services", &self.services.len())
            .field("frontends", &self.frontends.len())
            .finish()
    }
}

/// A destination resolved to a service port, with the traffic kind and
/// family that select its eligible set.
#[derive(Debug, Clone, Copy)]
pub struct Resolved<'s> {
    /// The Service.
    pub service: &'s ServiceEntry,
    /// The port.
    pub port: &'s PortEntry,
    /// How it was addressed.
    pub traffic: Traffic,
    /// The IP family of the eligible set.
    pub family: IpFamily,
    affinity: &'s Affinity,
    /// Behind its `Arc`: the pick path reaches the clock only for affinity
    /// and outlier detection, and a `&dyn` would be worked out on every pick.
    clock: &'s Arc<dyn Clock>,
}

impl<'s> Resolved<'s> {
    /// The eligible endpoints, in address order.
    pub fn eligible(&self) -> impl Iterator<Item = &'s Endpoint> {
        self.port.eligible(self.traffic, self.family)
    }

    pub(crate) fn port_arc(&self) -> Arc<PortEntry> {
        self.service
            .ports
            .iter()
            .find(|p| std::ptr::eq(&***p, self.port))
            .cloned()
            .expect("a resolved port belongs to its Service")
    }

    /// Picks one eligible endpoint by the Service's policy (and its
    /// `ClientIP` session affinity, when the client IP is known), or says
    /// why there is none.
    #[inline(always)]
    pub fn pick(&self, client: &Client<'_>) -> Result<&'s Endpoint, PickError> {
        // A table pick needs none of the thread's state: inlined into the
        // caller, it is a hash and two reads.
        if let Some(endpoint) = pick_plain_hash(self.port, self.set(), client) {
            return Ok(endpoint);
        }
        self.pick_local(client)
    }

    /// [`Resolved::pick`] with the thread's state (cursors, random
    /// numbers, the affinity table).
    #[inline(never)]
    fn pick_local(&self, client: &Client<'_>) -> Result<&'s Endpoint, PickError> {
        let mut picked = None;
        with_local(|local| picked = self.try_pick(client, &mut local.cursors));
        picked.ok_or_else(|| self.no_endpoints())
    }

    #[cold]
    #[inline(never)]
    fn no_endpoints(&self) -> PickError {
        PickError::NoEndpoints {
            service: self.port.service.to_string(),
            port: self.port.label(),
        }
    }

    /// [`Resolved::pick`], `None` when no endpoint is eligible: the error
    /// is built only off the hot path.
    #[inline(always)]
    pub(crate) fn try_pick(
        &self,
        client: &Client<'_>,
        cursors: &mut Cursors,
    ) -> Option<&'s Endpoint> {
        let set = set_index(self.traffic, self.family);
        pick_in(self.port, set, self.affinity, self.clock, client, cursors)
    }

    /// The index of the eligible set this destination picks from.
    pub(crate) fn set(&self) -> usize {
        set_index(self.traffic, self.family)
    }
}

/// Picks from `set` of `port`: `ClientIP` session affinity first (when the
/// port has it and the client IP is known), else the port's policy. The one
/// pick rule, shared by [`Resolved`] and [`crate::Route`].
#[inline(always)]
pub(crate) fn pick_in<'p>(
    port: &'p PortEntry,
    set: usize,
    affinity: &Affinity,
    clock: &Arc<dyn Clock>,
    client: &Client<'_>,
    cursors: &mut Cursors,
) -> Option<&'p Endpoint> {
    match (port.affinity, client.ip) {
        (Some(timeout), Some(ip)) => {
            pick_with_affinity(port, set, timeout, ip, affinity, clock, client, cursors)
        }
        _ => pick_by_policy(port, set, clock, client, cursors),
    }
}

/// The shortcut of [`PortEntry::pick`] for a [`Shortcut::Hash`] port
/// and a client with a hash key, taken by [`Resolved::pick`] before it
/// fetches the thread's state, which the table does not need. `None` sends
/// the pick down the general path (which also says when the set is empty).
#[inline(always)]
fn pick_plain_hash<'p>(
    port: &'p PortEntry,
    set: usize,
    client: &Client<'_>,
) -> Option<&'p Endpoint> {
    if port.shortcut != Shortcut::Hash {
        return None;
    }
    let at = port.pick_hashed(set, hash_key(client)?)?;
    Some(&port.endpoints[at])
}

/// [`pick_in`] for a client bound (or to be bound) to an endpoint: out of
/// line, so that the plain pick stays small enough to inline.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn pick_with_affinity<'p>(
    port: &'p PortEntry,
    set: usize,
    timeout: NonZeroU64,
    ip: IpAddr,
    affinity: &Affinity,
    clock: &Arc<dyn Clock>,
    client: &Client<'_>,
    cursors: &mut Cursors,
) -> Option<&'p Endpoint> {
    let probe = affinity::Probe::new(&affinity::Key {
        slot: port.slot.identity(),
        lane: set as u8,
        client: ip,
    });
    // One hash and one clock read for the lookup and, on a miss, the
    // insert; one search for the bound endpoint, whose result is the answer.
    let now = affinity.now();
    if let Some(endpoint) = affinity.get(&probe, timeout.get(), now, |b| {
        port.bound_member(set, b, now)
    }) {
        return Some(endpoint);
    }
    let at = pick_position(port, set, clock, client, cursors)?;
    let endpoint = &port.endpoints[at];
    let bound = affinity::Bound {
        addr: endpoint.addr(),
        position: at as u32,
    };
    affinity.insert(&probe, bound, now);
    Some(endpoint)
}

#[inline(always)]
fn pick_by_policy<'p>(
    port: &'p PortEntry,
    set: usize,
    clock: &Arc<dyn Clock>,
    client: &Client<'_>,
    cursors: &mut Cursors,
) -> Option<&'p Endpoint> {
    pick_position(port, set, clock, client, cursors).map(|at| &port.endpoints[at])
}

/// The position in `port.endpoints` the policy picks from `set`.
#[inline(always)]
fn pick_position(
    port: &PortEntry,
    set: usize,
    clock: &Arc<dyn Clock>,
    client: &Client<'_>,
    cursors: &mut Cursors,
) -> Option<usize> {
    // Only outlier detection needs the time: reading the clock costs as
    // much as the rest of a pick.
    let now = if port.outlier.is_some() {
        clock.now()
    } else {
        Duration::ZERO
    };
    port.pick(set, client, now, cursors)
}

impl Snapshot {
    pub(crate) fn empty(
        config: Arc<MeshConfig>,
        affinity: Arc<Affinity>,
        clock: Arc<dyn Clock>,
    ) -> Snapshot {
        Snapshot {
            version: 0,
            config,
            affinity,
            clock,
            services: ShardedMap::default(),
            frontends: ShardedMap::default(),
            by_ip: ShardedMap::default(),
            namespaces: ShardedMap::default(),
        }
    }

    /// The version: 0 when empty, one more for every apply that changed something.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The configuration this snapshot was built for.
    pub fn config(&self) -> &MeshConfig {
        &self.config
    }

    /// Records an outcome for the endpoint at `addr` of `port`, ejecting it
    /// when outlier detection says so and the port's ejection budget allows.
    pub(crate) fn record(&self, port: &PortEntry, addr: SocketAddr, outcome: Outcome) {
        if let Some(at) = port.position(addr) {
            port.record_at(at, outcome, &*self.clock);
        }
    }

    pub(crate) fn affinity_entries(&self) -> usize {
        self.affinity.len()
    }

    /// The mesh's clock, which every snapshot shares.
    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The mesh's affinity table and clock, which every snapshot shares.
    pub(crate) fn shared_parts(&self) -> (Arc<Affinity>, Arc<dyn Clock>) {
        (self.affinity.clone(), self.clock.clone())
    }

    /// The number of Services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether there are no Services.
    pub fn is_empty(&self) -> bool {
        self.services.len() == 0
    }

    /// A Service by namespace and name.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&ServiceEntry> {
        let mut hasher = FoldHasher::default();
        ServiceKey::hash_parts(namespace, name, &mut hasher);
        self.services
            .get_hashed(hasher.finish(), |k| k.is(namespace, name))
            .map(|e| &**e)
    }

    /// Every Service, ordered by namespace and name.
    pub fn services(&self) -> Vec<&ServiceEntry> {
        let mut all: Vec<&ServiceEntry> = self.services_unordered().collect();
        // Keys are unique: an unstable sort gives the same order.
        all.sort_unstable_by(|a, b| a.service.key().cmp(b.service.key()));
        all
    }

    /// Every Service, in no particular order: for visits whose result does
    /// not depend on it (no sort).
    pub(crate) fn services_unordered(&self) -> impl Iterator<Item = &ServiceEntry> {
        self.services.iter().map(|(_, e)| &**e)
    }

    /// Resolves a destination to a service port without picking.
    pub fn resolve(
        &self,
        dest: &Destination,
        client: &Client<'_>,
    ) -> Result<Resolved<'_>, PickError> {
        match dest {
            Destination::Addr { addr, protocol } => {
                self.resolve_addr(*addr, *protocol)
                    .ok_or_else(|| PickError::NoService {
                        destination: dest.to_string(),
                    })
            }
            Destination::Name {
                name,
                port,
                protocol,
            } => {
                let no_service = || PickError::NoService {
                    destination: dest.to_string(),
                };
                let entry = self
                    .service_by_name(name, client.namespace.unwrap_or(DEFAULT_NAMESPACE))
                    .ok_or_else(no_service)?;
                if let Some(target) = entry.service.external_name() {
                    return Err(PickError::ExternalName {
                        service: entry.service.key().to_string(),
                        target: target.to_owned(),
                    });
                }
                let port = find_port(entry, port, *protocol)?;
                Ok(Resolved {
                    service: entry,
                    port,
                    traffic: Traffic::Internal,
                    family: entry.family,
                    affinity: &self.affinity,
                    clock: &self.clock,
                })
            }
        }
    }

    /// Resolves a destination and picks an eligible endpoint.
    #[inline]
    pub fn pick(&self, dest: &Destination, client: &Client<'_>) -> Result<&Endpoint, PickError> {
        let resolved = self.resolve(dest, client)?;
        resolved.pick(client)
    }

    /// [`Snapshot::pick`], `None` on any failure (the caller asks
    /// [`Snapshot::pick`] for the reason, off the hot path).
    #[inline]
    pub(crate) fn try_pick(
        &self,
        dest: &Destination,
        client: &Client<'_>,
        cursors: &mut Cursors,
    ) -> Option<&Endpoint> {
        let resolved = match dest {
            Destination::Addr { addr, protocol } => self.resolve_addr(*addr, *protocol)?,
            Destination::Name { .. } => self.resolve(dest, client).ok()?,
        };
        resolved.try_pick(client, cursors)
    }

    /// The service port behind a frontend address, with any protocol when
    /// `protocol` is `None`.
    #[inline(always)]
    fn resolve_addr(&self, addr: SocketAddr, protocol: Option<Protocol>) -> Option<Resolved<'_>> {
        let fe = match protocol {
            Some(p) => self.frontend(addr, p),
            None => Protocol::ALL
                .into_iter()
                .find_map(|p| self.frontend(addr, p)),
        }?;
        let (traffic, family) = SETS[fe.set as usize & 3];
        Some(Resolved {
            service: &fe.service,
            port: &fe.port,
            traffic,
            family,
            affinity: &self.affinity,
            clock: &self.clock,
        })
    }

    #[inline]
    fn frontend(&self, addr: SocketAddr, protocol: Protocol) -> Option<&FrontendEntry> {
        self.frontends
            .get(&Frontend::new(addr.ip(), addr.port(), protocol))
    }

    /// The Service a name reaches from a pod in `namespace`, expanding it
    /// with the pod's search path as its resolver would ([`crate::dns`]):
    /// `svc`, `svc.ns`, `svc.ns.svc` and `svc.ns.svc.<zone>` all work.
    pub fn service_by_name(&self, name: &str, namespace: &str) -> Option<&ServiceEntry> {
        let zone = self.config.cluster_domain_name();
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            return crate::dns::expand(name, namespace, zone, |fqdn| {
                let (svc, ns) = crate::dns::service_name(fqdn, zone)?;
                self.service(ns, svc)
            });
        }
        // The same candidates in the same order, without building each name.
        crate::dns::candidates(name).find_map(|candidate| {
            let (svc, ns) = crate::dns::service_name_of(candidate, name, namespace, zone)?;
            self.service(ns, svc)
        })
    }

    pub(crate) fn owners_of(&self, ip: IpAddr) -> &[PtrOwner] {
        self.by_ip.get(&ip).map_or(&[], PtrOwners::as_slice)
    }

    pub(crate) fn has_namespace(&self, namespace: &str) -> bool {
        self.namespaces.get(namespace).is_some()
    }

    /// This snapshot with the given Services replaced (`None`: removed), as
    /// the next version. Fails, changing nothing, when a Service would claim
    /// a frontend another Service owns.
    pub(crate) fn with_services(
        &self,
        changes: Vec<(ServiceKey, Option<ServiceEntry>)>,
    ) -> Result<Snapshot, Error> {
        let mut services = self.services.clone();
        let mut frontends = self.frontends.clone();
        let mut by_ip = self.by_ip.clone();
        let mut namespaces = self.namespaces.clone();
        let node_ips = self.config.node_ips();
        for (key, _) in &changes {
            if let Some(old) = self.services.get(key) {
                for (fe, _, _) in frontends_of(old, node_ips) {
                    if frontends.get(&fe).is_some_and(|e| e.owner() == key) {
                        frontends.remove(&fe);
                    }
                }
                for (ip, _) in ptr_addresses(old) {
                    remove_owner(&mut by_ip, ip, key);
                }
                count_namespace(&mut namespaces, key.namespace(), -1);
            }
        }
        // Frontends a Service already owned are claimed back first, so that
        // when a newcomer in the same batch claims one, the newcomer is refused.
        let mut claims = Vec::new();
        for (key, entry) in changes {
            let Some(entry) = entry else {
                services.remove(&key);
                continue;
            };
            let entry = Arc::new(entry);
            for (fe, value, origin) in frontends_of(&entry, node_ips) {
                let kept = self.frontends.get(&fe).is_some_and(|e| e.owner() == &key);
                claims.push((!kept, key.clone(), fe, value, origin));
            }
            for (ip, label) in ptr_addresses(&entry) {
                add_owner(&mut by_ip, ip, &key, label);
            }
            count_namespace(&mut namespaces, key.namespace(), 1);
            services.insert(key, entry);
        }
        // Claims back first, each group in the order made (a stable
        // partition: no sort needed for a boolean key).
        let (new_claims, kept_claims): (Vec<_>, Vec<_>) = claims.into_iter().partition(|c| c.0);
        for (_, key, fe, value, origin) in kept_claims.into_iter().chain(new_claims) {
            if let Some(existing) = frontends.get(&fe) {
                if existing.owner() == &key {
                    // The same Service reaches this address twice (say, an
                    // external IP that is also its load-balancer IP): one entry.
                    continue;
                }
                return Err(Error::Conflict {
                    object: format!("Service {key}"),
                    field: origin.to_string(),
                    message: format!(
                        "{}/{} is already used by Service {}",
                        fe.addr(),
                        fe.protocol(),
                        existing.owner()
                    ),
                });
            }
            frontends.insert(fe, value);
        }
        Ok(Snapshot {
            version: self.version + 1,
            config: self.config.clone(),
            affinity: self.affinity.clone(),
            clock: self.clock.clone(),
            services,
            frontends,
            by_ip,
            namespaces,
        })
    }
}

/// The hash key of a client for the consistent policies.
#[inline]
fn hash_key(client: &Client<'_>) -> Option<u64> {
    match (client.key, client.ip) {
        (Some(key), _) => Some(stable_hash(key, 2)),
        (None, Some(IpAddr::V4(v4))) => Some(stable_hash(&v4.octets(), 2)),
        (None, Some(IpAddr::V6(v6))) => Some(stable_hash(&v6.octets(), 2)),
        (None, None) => None,
    }
}

fn remove_owner(by_ip: &mut ShardedMap<IpAddr, PtrOwners>, ip: IpAddr, key: &ServiceKey) {
    let Some(owners) = by_ip.get(&ip) else {
        return;
    };
    let before = owners.as_slice().len();
    let kept: Vec<PtrOwner> = owners
        .as_slice()
        .iter()
        .filter(|o| o.service != *key)
        .cloned()
        .collect();
    if kept.len() == before {
        return;
    }
    match PtrOwners::from_vec(kept) {
        Some(owners) => by_ip.insert(ip, owners),
        None => by_ip.remove(&ip),
    };
}

fn add_owner(
    by_ip: &mut ShardedMap<IpAddr, PtrOwners>,
    ip: IpAddr,
    key: &ServiceKey,
    label: Option<Arc<str>>,
) {
    let mut owners: Vec<PtrOwner> = by_ip
        .get(&ip)
        .map(|o| o.as_slice().to_vec())
        .unwrap_or_default();
    // Ordered by (Service, label), each once: the new owner goes where a
    // binary search puts it, unless it is there already.
    let at = match owners.binary_search_by(|o| (&o.service, &o.label).cmp(&(key, &label))) {
        Ok(_) => return,
        Err(at) => at,
    };
    owners.insert(
        at,
        PtrOwner {
            service: key.clone(),
            label,
        },
    );
    if let Some(owners) = PtrOwners::from_vec(owners) {
        by_ip.insert(ip, owners);
    }
}

fn count_namespace(namespaces: &mut ShardedMap<Arc<str>, u32>, namespace: &str, delta: i32) {
    let now = namespaces.get(namespace).copied().unwrap_or(0) as i64 + delta as i64;
    if now <= 0 {
        namespaces.remove(namespace);
    } else {
        namespaces.insert(Arc::from(namespace), now as u32);
    }
}

fn find_port<'s>(
    entry: &'s ServiceEntry,
    port: &PortRef,
    protocol: Option<Protocol>,
) -> Result<&'s PortEntry, PickError> {
    let proto_ok = |p: &PortEntry| protocol.is_none_or(|want| p.spec.protocol() == want);
    let found = match port {
        PortRef::Number(n) => Protocol::ALL.into_iter().find_map(|proto| {
            entry
                .ports
                .iter()
                .find(|p| p.spec.port() == *n && p.spec.protocol() == proto && proto_ok(p))
        }),
        PortRef::Name(name) => entry
            .ports
            .iter()
            .find(|p| p.spec.name() == name && proto_ok(p)),
        PortRef::Only => {
            let mut matching = entry.ports.iter().filter(|p| proto_ok(p));
            match (matching.next(), matching.next()) {
                (Some(only), None) => Some(only),
                (None, _) => None,
                (Some(_), Some(_)) => {
                    return Err(PickError::NoPort {
                        service: entry.service.key().to_string(),
                        reason: format!("it has several ports ({}): name one", port_list(entry)),
                    })
                }
            }
        }
    };
    found.map(|p| &**p).ok_or_else(|| PickError::NoPort {
        service: entry.service.key().to_string(),
        reason: if entry.ports.is_empty() {
            "it has no ports".to_owned()
        } else {
            format!("no port matches (it has {})", port_list(entry))
        },
    })
}

fn port_list(entry: &ServiceEntry) -> String {
    entry
        .ports
        .iter()
        .map(|p| {
            let s = &p.spec;
            if s.name().is_empty() {
                format!("{}/{}", s.port(), s.protocol())
            } else {
                format!("{} {}/{}", s.name(), s.port(), s.protocol())
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The merge as a map keyed by address did it, before `merge_copies`:
    /// the reference the sort-and-merge must agree with.
    fn merge_by_map(copies: Vec<SliceCopy<'_>>) -> Vec<(IpAddr, u16, u8, u32)> {
        let mut map: BTreeMap<(IpAddr, u16), SliceCopy<'_>> = BTreeMap::new();
        for copy in copies {
            match map.get(&copy.key()) {
                Some(kept) if copy.rank() <= kept.rank() => {}
                _ => {
                    map.insert(copy.key(), copy);
                }
            }
        }
        map.into_values().map(|c| describe(&c)).collect()
    }

    fn describe(c: &SliceCopy<'_>) -> (IpAddr, u16, u8, u32) {
        let e = c.endpoint();
        (e.ip, e.port, e.flags, e.weight)
    }

    #[test]
    fn merging_copies_agrees_with_a_map_keyed_by_address() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for round in 0..500 {
            let count = next(40) as usize;
            let copies = || {
                let mut copies = Vec::new();
                for i in 0..count {
                    // Few addresses, both families, two ports: many copies.
                    let ip = if i % 3 == 0 {
                        IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, (i % 5) as u16])
                    } else {
                        IpAddr::from([10, 0, (i % 2) as u8, (i % 7) as u8])
                    };
                    copies.push((ip, 8080 + (i % 2) as u16, (i * 7 % 16) as u8, i as u32));
                }
                copies
            };
            // The same copies in a random order, standing for slice order.
            let mut order = copies();
            for i in (1..order.len()).rev() {
                order.swap(i, next(i as u64 + 1) as usize);
            }
            let entries: Vec<SliceEndpoint> = order
                .iter()
                .map(|&(address, _, _, weight)| SliceEndpoint {
                    address,
                    ready: true,
                    serving: true,
                    terminating: false,
                    meta: None,
                    weight,
                    zone_hints: Box::default(),
                    node_hints: Box::default(),
                })
                .collect();
            let make = || -> Vec<SliceCopy<'_>> {
                order
                    .iter()
                    .zip(&entries)
                    .map(|(&(_, port, flags, _), ep)| SliceCopy { ep, port, flags })
                    .collect()
            };
            let got: Vec<_> = merge_copies(make()).iter().map(describe).collect();
            assert_eq!(got, merge_by_map(make()), "round {round}");
        }
    }
}
