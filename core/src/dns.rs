//! DNS answers from the snapshot: the Kubernetes DNS-Based Service Discovery
//! specification (kubernetes/dns `docs/specification.md`, schema
//! [`SCHEMA_VERSION`]), and the search path a pod's resolver expands short
//! names with.
//!
//! [`Snapshot::lookup`] answers one fully qualified name, as the cluster DNS
//! server would; [`Snapshot::lookup_from`] answers a name as a pod's stub
//! resolver would find it (`search <ns>.svc.<zone> svc.<zone> <zone>`,
//! `ndots:5`). The same expansion ([`expand`]) finds the Service a by-name
//! [`crate::Destination`] reaches, so a name picks and resolves alike.
//!
//! | name | records |
//! |---|---|
//! | `<svc>.<ns>.svc.<zone>` | `A`/`AAAA`: the cluster IPs; headless: every ready endpoint address; ExternalName: `CNAME` |
//! | `<label>.<svc>.<ns>.svc.<zone>` | headless: `A`/`AAAA` of the endpoints whose hostname (else dashed address, `10-3-0-3`) is `<label>` |
//! | `_<port>._<proto>.<svc>.<ns>.svc.<zone>` | `SRV` per named port: target the Service, or each endpoint (headless) |
//! | `<d>.<c>.<b>.<a>.in-addr.arpa`, nibbles `.ip6.arpa` | `PTR` for cluster IPs and headless endpoint addresses |
//! | `dns-version.<zone>` | `TXT` `"1.1.0"` |
//! | `<a>-<b>-<c>-<d>.<ns>.pod.<zone>` | `A` (the specification's deprecated pod records; IPv6 with `-` for `:` gives `AAAA`) |
//!
//! Names compare case-insensitively. A name that does not exist is
//! `NXDOMAIN` (so is a headless Service with no ready endpoint, as the
//! specification says); a name that exists without records of the asked
//! type is `NOERROR` with no answers. Names outside the cluster zone and the
//! reverse zones are [`Rcode::Refused`]: pobox does not forward.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::model::Protocol;
use crate::snapshot::{ServiceEntry, Snapshot};

/// The schema version of the specification implemented, answered as the
/// `TXT` record of `dns-version.<zone>`.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// `ndots` in a pod's resolv.conf: a name with fewer dots is tried with the
/// search domains first.
pub const NDOTS: usize = 5;

/// The longest name handled, in presentation form without the trailing dot
/// (RFC 1035: 255 octets on the wire).
const MAX_NAME: usize = 253;

// === RecordType ===

/// A DNS record type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    /// `A` (1): an IPv4 address.
    A,
    /// `AAAA` (28): an IPv6 address.
    Aaaa,
    /// `CNAME` (5): an alias.
    Cname,
    /// `PTR` (12): the name of an address.
    Ptr,
    /// `SRV` (33): a service's port and target.
    Srv,
    /// `TXT` (16): text.
    Txt,
    /// Any other type, by number: never has records here.
    Other(u16),
}

impl RecordType {
    /// The type's number on the wire.
    pub fn code(self) -> u16 {
        match self {
            RecordType::A => 1,
            RecordType::Cname => 5,
            RecordType::Ptr => 12,
            RecordType::Txt => 16,
            RecordType::Aaaa => 28,
            RecordType::Srv => 33,
            RecordType::Other(n) => n,
        }
    }

    /// The type of a wire number.
    pub fn from_code(code: u16) -> RecordType {
        match code {
            1 => RecordType::A,
            5 => RecordType::Cname,
            12 => RecordType::Ptr,
            16 => RecordType::Txt,
            28 => RecordType::Aaaa,
            33 => RecordType::Srv,
            n => RecordType::Other(n),
        }
    }

    /// Parses a mnemonic (`A`, `aaaa`, `SRV`, ...) or `TYPE<n>` (RFC 3597).
    pub fn parse(s: &str) -> Option<RecordType> {
        let upper = s.to_ascii_uppercase();
        Some(match upper.as_str() {
            "A" => RecordType::A,
            "AAAA" => RecordType::Aaaa,
            "CNAME" => RecordType::Cname,
            "PTR" => RecordType::Ptr,
            "SRV" => RecordType::Srv,
            "TXT" => RecordType::Txt,
            _ => RecordType::from_code(upper.strip_prefix("TYPE")?.parse().ok()?),
        })
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordType::A => f.write_str("A"),
            RecordType::Aaaa => f.write_str("AAAA"),
            RecordType::Cname => f.write_str("CNAME"),
            RecordType::Ptr => f.write_str("PTR"),
            RecordType::Srv => f.write_str("SRV"),
            RecordType::Txt => f.write_str("TXT"),
            RecordType::Other(n) => write!(f, "TYPE{n}"),
        }
    }
}

// === Record ===

/// The data of a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordData {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// The canonical name, fully qualified with the trailing dot.
    Cname(String),
    /// The name of the address, fully qualified with the trailing dot.
    Ptr(String),
    /// A service location (RFC 2782).
    Srv {
        /// Priority: always 0 (every target is equally preferred).
        priority: u16,
        /// Weight: 100 split evenly across the targets of the answer.
        weight: u16,
        /// The Service port.
        port: u16,
        /// The target, fully qualified with the trailing dot.
        target: String,
    },
    /// One character-string.
    Txt(String),
}

impl RecordData {
    /// The record type.
    pub fn record_type(&self) -> RecordType {
        match self {
            RecordData::A(_) => RecordType::A,
            RecordData::Aaaa(_) => RecordType::Aaaa,
            RecordData::Cname(_) => RecordType::Cname,
            RecordData::Ptr(_) => RecordType::Ptr,
            RecordData::Srv { .. } => RecordType::Srv,
            RecordData::Txt(_) => RecordType::Txt,
        }
    }

    /// The data as text: the address, the target name, the text itself
    /// (unquoted), or `<priority> <weight> <port> <target>`.
    pub fn value(&self) -> String {
        match self {
            RecordData::A(ip) => ip.to_string(),
            RecordData::Aaaa(ip) => ip.to_string(),
            RecordData::Cname(n) | RecordData::Ptr(n) | RecordData::Txt(n) => n.clone(),
            RecordData::Srv {
                priority,
                weight,
                port,
                target,
            } => format!("{priority} {weight} {port} {target}"),
        }
    }
}

/// One resource record of class `IN`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    /// The owner name, lowercase, fully qualified with the trailing dot
    /// (shared by the records of one answer).
    pub name: Arc<str>,
    /// Time to live, in seconds ([`crate::MeshConfig::dns_ttl`]).
    pub ttl: u32,
    /// The data.
    pub data: RecordData,
}

/// Zone-file form: `name. TTL IN TYPE data`, tab-separated, TXT quoted.
impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\t{}\tIN\t{}\t",
            self.name,
            self.ttl,
            self.data.record_type()
        )?;
        match &self.data {
            RecordData::Txt(t) => write!(f, "\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\"")),
            other => f.write_str(&other.value()),
        }
    }
}

// === Answer ===

/// The response code of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rcode {
    /// The name exists (there may be no records of the asked type).
    NoError,
    /// The name does not exist.
    NxDomain,
    /// The name is outside the zones this snapshot answers for.
    Refused,
}

impl Rcode {
    /// `NOERROR`, `NXDOMAIN`, `REFUSED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rcode::NoError => "NOERROR",
            Rcode::NxDomain => "NXDOMAIN",
            Rcode::Refused => "REFUSED",
        }
    }
}

impl fmt::Display for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a lookup answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The response code.
    pub rcode: Rcode,
    /// The answer section, in a stable order (by address, then name).
    pub answers: Vec<Record>,
}

impl Answer {
    fn of(rcode: Rcode) -> Answer {
        Answer {
            rcode,
            answers: Vec::new(),
        }
    }
    fn records(answers: Vec<Record>) -> Answer {
        Answer {
            rcode: Rcode::NoError,
            answers,
        }
    }
}

// === search path ===

/// Calls `f` with each fully qualified name (lowercase, no trailing dot) a
/// pod in `namespace` would try for `name`, in order, until `f` returns
/// `Some`: glibc's `res_search` with `search <ns>.svc.<zone> svc.<zone>
/// <zone>` and `ndots:5`. A name ending in `.` is tried only as it is; a name
/// with at least [`NDOTS`] dots is tried as it is first, then with each
/// search domain; any other name with each search domain first, then as it is.
pub fn expand<R>(
    name: &str,
    namespace: &str,
    zone: &str,
    mut f: impl FnMut(&str) -> Option<R>,
) -> Option<R> {
    let mut buf = [0u8; MAX_NAME + 1];
    candidates(name).find_map(|candidate| {
        let (bare, _) = split_absolute(name);
        let suffix = candidate.suffix(namespace, zone);
        let mut len = 0;
        for (i, part) in std::iter::once(bare)
            .chain(suffix.into_iter().filter(|p| !p.is_empty()))
            .enumerate()
        {
            let sep = usize::from(i > 0);
            if len + sep + part.len() > buf.len() {
                return None;
            }
            if sep == 1 {
                buf[len] = b'.';
            }
            buf[len + sep..len + sep + part.len()].copy_from_slice(part.as_bytes());
            len += sep + part.len();
        }
        buf[..len].make_ascii_lowercase();
        f(std::str::from_utf8(&buf[..len]).ok()?)
    })
}

/// One name of the search path: the name as it is, or with search domain
/// `n` appended (0: `<ns>.svc.<zone>`, 1: `svc.<zone>`, 2: `<zone>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Candidate {
    AsIs,
    Search(usize),
}

impl Candidate {
    fn suffix<'a>(self, namespace: &'a str, zone: &'a str) -> [&'a str; 3] {
        match self {
            Candidate::AsIs => ["", "", ""],
            Candidate::Search(0) => [namespace, "svc", zone],
            Candidate::Search(1) => ["svc", zone, ""],
            Candidate::Search(_) => [zone, "", ""],
        }
    }
}

fn split_absolute(name: &str) -> (&str, bool) {
    match name.strip_suffix('.') {
        Some(b) => (b, true),
        None => (name, false),
    }
}

/// The order of the search path for `name` (the one rule [`expand`] and
/// by-name destinations share). No allocation: it is on the pick path.
pub(crate) fn candidates(name: &str) -> impl Iterator<Item = Candidate> {
    use Candidate::{AsIs, Search};
    let (bare, absolute) = split_absolute(name);
    let order: [Option<Candidate>; 4] = if bare.is_empty() {
        [None; 4]
    } else if absolute {
        [Some(AsIs), None, None, None]
    } else if bare.bytes().filter(|&b| b == b'.').count() >= NDOTS {
        [
            Some(AsIs),
            Some(Search(0)),
            Some(Search(1)),
            Some(Search(2)),
        ]
    } else {
        [
            Some(Search(0)),
            Some(Search(1)),
            Some(Search(2)),
            Some(AsIs),
        ]
    };
    order.into_iter().flatten()
}

/// `(service, namespace)` when `candidate` of the lowercase `name` spells
/// `<svc>.<ns>.svc.<zone>`, worked out from the parts without building the
/// name (what [`service_name`] answers for the built name).
pub(crate) fn service_name_of<'n>(
    candidate: Candidate,
    name: &'n str,
    namespace: &'n str,
    zone: &str,
) -> Option<(&'n str, &'n str)> {
    let (bare, _) = split_absolute(name);
    let two_labels = |s: &'n str| {
        let (svc, ns) = s.split_once('.')?;
        (!svc.is_empty() && !ns.is_empty() && !ns.contains('.')).then_some((svc, ns))
    };
    match candidate {
        Candidate::AsIs => service_name(bare, zone),
        Candidate::Search(0) => {
            (!bare.contains('.') && !namespace.is_empty()).then_some((bare, namespace))
        }
        Candidate::Search(1) => two_labels(bare),
        Candidate::Search(_) => two_labels(bare.strip_suffix(".svc")?),
    }
}

/// The names [`expand`] tries, in order, each with its trailing dot.
pub fn search_names(name: &str, namespace: &str, zone: &str) -> Vec<String> {
    let mut names = Vec::new();
    expand(name, namespace, zone, |n| {
        names.push(format!("{n}."));
        None::<()>
    });
    names
}

/// `(service, namespace)` of a lowercase `<svc>.<ns>.svc.<zone>`.
pub(crate) fn service_name<'n>(fqdn: &'n str, zone: &str) -> Option<(&'n str, &'n str)> {
    let rel = fqdn.strip_suffix(zone)?.strip_suffix(".svc.")?;
    let (svc, ns) = rel.split_once('.')?;
    (!svc.is_empty() && !ns.is_empty() && !ns.contains('.')).then_some((svc, ns))
}

/// The label CoreDNS gives an endpoint without a hostname: its address with
/// `.` or `:` replaced by `-` (`10-3-0-3`, `fd00--1`).
pub(crate) fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The reverse-lookup name of an address, with the trailing dot:
/// `4.3.2.1.in-addr.arpa.`, or 32 nibbles and `ip6.arpa.`.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(73);
            for byte in v6.octets().iter().rev() {
                for nibble in [byte & 0xf, byte >> 4] {
                    s.push(char::from_digit(u32::from(nibble), 16).expect("a nibble"));
                    s.push('.');
                }
            }
            s.push_str("ip6.arpa.");
            s
        }
    }
}

/// The address a full reverse name (lowercase, no trailing dot) stands for.
fn parse_reverse(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let mut octets = [0u8; 4];
        let mut labels = rest.split('.');
        for o in octets.iter_mut().rev() {
            let label = labels.next()?;
            if label.is_empty() || label.len() > 3 || (label.len() > 1 && label.starts_with('0')) {
                return None;
            }
            *o = label.parse().ok()?;
        }
        return labels.next().is_none().then(|| IpAddr::from(octets));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let b = rest.as_bytes();
    if b.len() != 63 {
        return None;
    }
    let mut bits = 0u128;
    for (i, chunk) in b.chunks(2).enumerate() {
        if chunk.len() == 2 && chunk[1] != b'.' {
            return None;
        }
        let nibble = char::from(chunk[0]).to_digit(16)?;
        bits |= u128::from(nibble) << (4 * i);
    }
    Some(IpAddr::V6(Ipv6Addr::from(bits)))
}

/// The address of a pod label: `10-3-0-3`, or an IPv6 address with `-` for `:`.
fn parse_dashed(label: &str) -> Option<IpAddr> {
    if label.contains('.') || label.contains(':') {
        return None;
    }
    let v4: String = label.replace('-', ".");
    if let Ok(ip) = v4.parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(ip));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// An owner name (lowercase, with its trailing dot), in one allocation
/// shared by every record of the answer.
fn absolute(dotted: &str) -> Arc<str> {
    debug_assert!(dotted.ends_with('.'), "{dotted}");
    Arc::from(dotted)
}

/// The labels of a name from the last to the first, as `str::rsplit('.')`
/// yields them, found by a plain byte scan: the labels are short, and
/// `memrchr`'s setup per label cost more than the scan (callgrind).
struct RevLabels<'a>(Option<&'a str>);

impl<'a> Iterator for RevLabels<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let rest = self.0?;
        match rest.bytes().rposition(|b| b == b'.') {
            Some(dot) => {
                self.0 = Some(&rest[..dot]);
                Some(&rest[dot + 1..])
            }
            None => {
                self.0 = None;
                Some(rest)
            }
        }
    }
}

/// The `A` or `AAAA` records (by `qtype`) of `ips` for the name `owner`
/// gives (called only when there is a record).
fn address_records(
    owner: impl FnOnce() -> Arc<str>,
    ttl: u32,
    ips: impl Iterator<Item = IpAddr>,
    qtype: RecordType,
) -> Vec<Record> {
    let capacity = ips.size_hint().1.unwrap_or(1);
    let mut data = ips
        .filter_map(|ip| match (ip, qtype) {
            (IpAddr::V4(v4), RecordType::A) => Some(RecordData::A(v4)),
            (IpAddr::V6(v6), RecordType::Aaaa) => Some(RecordData::Aaaa(v6)),
            _ => None,
        })
        .peekable();
    if data.peek().is_none() {
        return Vec::new();
    }
    let mut name = Some(owner());
    let mut records = Vec::with_capacity(capacity);
    while let Some(d) = data.next() {
        // The last record takes the name: the usual answer of one record
        // touches no reference count.
        let this = if data.peek().is_some() {
            name.clone()
        } else {
            name.take()
        };
        records.push(Record {
            name: this.expect("taken only by the last record"),
            ttl,
            data: d,
        });
    }
    records
}

fn srv_weight(targets: usize) -> u16 {
    (100 / targets.max(1)).max(1) as u16
}

// === impl Snapshot ===

impl Snapshot {
    /// Answers a query for a fully qualified name (a trailing dot is
    /// optional) as the cluster DNS server would. See the module
    /// documentation for the records.
    ///
    /// ```
    /// use pobox::{Mesh, MeshConfig, Rcode, RecordType};
    ///
    /// let mesh = Mesh::new(MeshConfig::new()).unwrap();
    /// mesh.apply(include_bytes!("../../examples/k8s/demo.yaml")).unwrap();
    /// let answer = mesh.snapshot().lookup("Web.Default.svc.cluster.local.", RecordType::A);
    /// assert_eq!(answer.rcode, Rcode::NoError);
    /// assert_eq!(
    ///     answer.answers[0].to_string(),
    ///     "web.default.svc.cluster.local.\t5\tIN\tA\t10.96.0.10"
    /// );
    /// ```
    pub fn lookup(&self, name: &str, qtype: RecordType) -> Answer {
        let bare = name.strip_suffix('.').unwrap_or(name);
        if bare.len() > MAX_NAME || bare.is_empty() {
            return Answer::of(Rcode::Refused);
        }
        // The name lowercase with its trailing dot, as records own it. Most
        // names arrive that way (a resolver's query): copy only the others.
        let mut buf: [u8; MAX_NAME + 1];
        // A fold, not `any`: no branch per byte, and the compiler vectorises it.
        let upper = bare
            .bytes()
            .fold(false, |up, b| up | b.is_ascii_uppercase());
        let dotted = if name.len() > bare.len() && !upper {
            name
        } else {
            buf = [0u8; MAX_NAME + 1];
            buf[..bare.len()].copy_from_slice(bare.as_bytes());
            buf[..bare.len()].make_ascii_lowercase();
            buf[bare.len()] = b'.';
            match std::str::from_utf8(&buf[..=bare.len()]) {
                Ok(dotted) => dotted,
                Err(_) => return Answer::of(Rcode::Refused),
            }
        };
        let lower = &dotted[..bare.len()];
        let zone = self.config().cluster_domain_name();
        let ttl = self.config().dns_ttl_seconds();
        if lower == zone {
            return Answer::of(Rcode::NoError);
        }
        if let Some(rel) = lower.strip_suffix(zone).and_then(|r| r.strip_suffix('.')) {
            return self.lookup_in_zone(dotted, rel, qtype, ttl);
        }
        if lower.ends_with(".in-addr.arpa") || lower.ends_with(".ip6.arpa") {
            return self.lookup_reverse(dotted, qtype, ttl);
        }
        if matches!(lower, "in-addr.arpa" | "ip6.arpa") {
            return Answer::of(Rcode::NoError);
        }
        Answer::of(Rcode::Refused)
    }

    /// Answers a name as a pod in `namespace` resolves it: each name of the
    /// search path ([`expand`]) in turn; the first with records answers. If
    /// none has records, a name that exists answers `NOERROR` with no
    /// records; otherwise a single label is `NXDOMAIN` and any other name
    /// answers as itself (`NXDOMAIN`, or `REFUSED` outside the cluster).
    pub fn lookup_from(&self, namespace: &str, name: &str, qtype: RecordType) -> Answer {
        let zone = self.config().cluster_domain_name();
        let mut exists = None;
        let found = expand(name, namespace, zone, |fqdn| {
            let answer = self.lookup(fqdn, qtype);
            if !answer.answers.is_empty() {
                return Some(answer);
            }
            if answer.rcode == Rcode::NoError && exists.is_none() {
                exists = Some(answer);
            }
            None
        });
        found.or(exists).unwrap_or_else(|| {
            let bare = name.strip_suffix('.').unwrap_or(name);
            if bare.contains('.') || name.ends_with('.') {
                self.lookup(name, qtype)
            } else {
                // A single label only ever meant a name in the search path.
                Answer::of(Rcode::NxDomain)
            }
        })
    }

    /// `fqdn`: lowercase, with the trailing dot; `rel`: its labels below the
    /// zone, without the dot.
    fn lookup_in_zone(&self, fqdn: &str, rel: &str, qtype: RecordType, ttl: u32) -> Answer {
        let mut labels = RevLabels(Some(rel));
        match (labels.next(), labels.next()) {
            (Some("dns-version"), None) => {
                if qtype != RecordType::Txt {
                    return Answer::of(Rcode::NoError);
                }
                Answer::records(vec![Record {
                    name: absolute(fqdn),
                    ttl,
                    data: RecordData::Txt(SCHEMA_VERSION.to_owned()),
                }])
            }
            (Some("svc"), None) => Answer::of(Rcode::NoError),
            (Some("svc"), Some(ns)) => {
                let Some(svc) = labels.next() else {
                    return Answer::of(if self.has_namespace(ns) {
                        Rcode::NoError
                    } else {
                        Rcode::NxDomain
                    });
                };
                let Some(entry) = self.service(ns, svc) else {
                    return Answer::of(Rcode::NxDomain);
                };
                let (first, second) = (labels.next(), labels.next());
                if labels.next().is_some() {
                    return Answer::of(Rcode::NxDomain);
                }
                // `<svc>.<ns>.svc.<zone>` ends `fqdn`, before its dot.
                let zone = self.config().cluster_domain_name();
                let tail = svc.len() + 1 + ns.len() + ".svc.".len() + zone.len();
                let end = fqdn.len() - 1;
                let service_fqdn = &fqdn[end - tail..end];
                service_records(entry, fqdn, service_fqdn, first, second, qtype, ttl)
            }
            (Some("pod"), None) => Answer::of(Rcode::NoError),
            (Some("pod"), Some(ns)) => match (labels.next(), labels.next()) {
                (None, _) => Answer::of(if self.has_namespace(ns) {
                    Rcode::NoError
                } else {
                    Rcode::NxDomain
                }),
                (Some(label), None) => match parse_dashed(label) {
                    Some(ip) => Answer::records(address_records(
                        || absolute(fqdn),
                        ttl,
                        std::iter::once(ip),
                        qtype,
                    )),
                    None => Answer::of(Rcode::NxDomain),
                },
                _ => Answer::of(Rcode::NxDomain),
            },
            _ => Answer::of(Rcode::NxDomain),
        }
    }

    /// `name`: lowercase, with the trailing dot.
    fn lookup_reverse(&self, name: &str, qtype: RecordType, ttl: u32) -> Answer {
        let Some(ip) = parse_reverse(&name[..name.len() - 1]) else {
            return Answer::of(Rcode::NxDomain);
        };
        let owners = self.owners_of(ip);
        if owners.is_empty() {
            return Answer::of(Rcode::NxDomain);
        }
        if qtype != RecordType::Ptr {
            return Answer::of(Rcode::NoError);
        }
        let zone = self.config().cluster_domain_name();
        let owner = absolute(name);
        let answers = owners
            .iter()
            .map(|o| {
                let target = match &o.label {
                    Some(label) => format!(
                        "{label}.{}.{}.svc.{zone}.",
                        o.service.name(),
                        o.service.namespace()
                    ),
                    None => format!("{}.{}.svc.{zone}.", o.service.name(), o.service.namespace()),
                };
                Record {
                    name: owner.clone(),
                    ttl,
                    data: RecordData::Ptr(target),
                }
            })
            .collect();
        Answer::records(answers)
    }
}

/// Answers for a name at or under an existing Service: the Service itself
/// (`first` = None), `<label>.<svc>` or `_<proto>.<svc>` (`second` = None),
/// or `_<port>._<proto>.<svc>`.
fn service_records(
    entry: &ServiceEntry,
    fqdn: &str,
    service_fqdn: &str,
    first: Option<&str>,
    second: Option<&str>,
    qtype: RecordType,
    ttl: u32,
) -> Answer {
    let svc = entry.service();
    let owner = || absolute(fqdn);
    if let Some(target) = svc.external_name() {
        if first.is_some() {
            return Answer::of(Rcode::NxDomain);
        }
        return Answer::records(vec![Record {
            name: owner(),
            ttl,
            data: RecordData::Cname(format!("{}.", target.to_ascii_lowercase())),
        }]);
    }
    let headless = svc.is_headless();
    if headless && entry.dns_endpoints().is_empty() {
        return Answer::of(Rcode::NxDomain);
    }
    match (first, second) {
        (None, _) => Answer::records(if headless {
            address_records(
                owner,
                ttl,
                entry.dns_endpoints().iter().map(|e| e.ip()),
                qtype,
            )
        } else {
            address_records(owner, ttl, svc.cluster_ips().iter().copied(), qtype)
        }),
        (Some(proto), None) if proto.starts_with('_') => {
            // `_tcp.<svc>...`: exists when a named port uses the protocol.
            let exists = Protocol::parse(&proto[1..]).is_some_and(|p| {
                svc.ports()
                    .iter()
                    .any(|sp| !sp.name().is_empty() && sp.protocol() == p)
            });
            Answer::of(if exists {
                Rcode::NoError
            } else {
                Rcode::NxDomain
            })
        }
        (Some(label), None) => {
            if !headless {
                return Answer::of(Rcode::NxDomain);
            }
            let named = || entry.dns_endpoints().iter().filter(|e| e.label() == label);
            if named().next().is_none() {
                return Answer::of(Rcode::NxDomain);
            }
            Answer::records(address_records(owner, ttl, named().map(|e| e.ip()), qtype))
        }
        (Some(proto), Some(port)) => {
            let (Some(proto), Some(port)) = (proto.strip_prefix('_'), port.strip_prefix('_'))
            else {
                return Answer::of(Rcode::NxDomain);
            };
            let Some(protocol) = Protocol::parse(proto) else {
                return Answer::of(Rcode::NxDomain);
            };
            let ports: Vec<u16> = svc
                .ports()
                .iter()
                .filter(|sp| {
                    !sp.name().is_empty()
                        && sp.protocol() == protocol
                        && sp.name().eq_ignore_ascii_case(port)
                })
                .map(|sp| sp.port())
                .collect();
            if ports.is_empty() {
                return Answer::of(Rcode::NxDomain);
            }
            if qtype != RecordType::Srv {
                return Answer::of(Rcode::NoError);
            }
            let targets: Vec<String> = if headless {
                let mut labels: Vec<&str> =
                    entry.dns_endpoints().iter().map(|e| e.label()).collect();
                labels.sort_unstable();
                labels.dedup();
                labels
                    .into_iter()
                    .map(|l| format!("{l}.{service_fqdn}."))
                    .collect()
            } else {
                vec![format!("{service_fqdn}.")]
            };
            let weight = srv_weight(targets.len() * ports.len());
            let name = owner();
            let answers = ports
                .iter()
                .flat_map(|&port| targets.iter().map(move |target| (port, target)))
                .map(|(port, target)| Record {
                    name: name.clone(),
                    ttl,
                    data: RecordData::Srv {
                        priority: 0,
                        weight,
                        port,
                        target: target.clone(),
                    },
                })
                .collect();
            Answer::records(answers)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rev_labels_split_as_rsplit_does() {
        for name in [
            "",
            ".",
            "a",
            "a.",
            ".a",
            "a..b",
            "web.default.svc",
            "_http._tcp.web.default.svc",
            "10-1-2-3.web.ns.svc",
            "a.b.c.d.e.f.g.h",
        ] {
            let ours: Vec<&str> = RevLabels(Some(name)).collect();
            let std: Vec<&str> = name.rsplit('.').collect();
            assert_eq!(ours, std, "{name:?}");
        }
        assert_eq!(RevLabels(None).next(), None);
    }

    use super::*;

    #[test]
    fn reverse_names_round_trip() {
        for ip in ["10.3.0.1", "2001:db8::1", "fd00:10:96::53", "::"] {
            let ip: IpAddr = ip.parse().unwrap();
            let name = reverse_name(ip);
            assert_eq!(
                parse_reverse(name.strip_suffix('.').unwrap()),
                Some(ip),
                "{name}"
            );
        }
        assert_eq!(
            reverse_name("10.3.0.1".parse().unwrap()),
            "1.0.3.10.in-addr.arpa."
        );
        assert_eq!(
            reverse_name("2001:db8::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
        );
        for bad in [
            "1.0.3.in-addr.arpa",
            "1.0.3.10.1.in-addr.arpa",
            "01.0.3.10.in-addr.arpa",
            "256.0.3.10.in-addr.arpa",
            "1.0.ip6.arpa",
            "x.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
        ] {
            assert_eq!(parse_reverse(bad), None, "{bad}");
        }
    }

    #[test]
    fn search_path_order() {
        let names = |n: &str| search_names(n, "shop", "cluster.local");
        assert_eq!(
            names("web"),
            [
                "web.shop.svc.cluster.local.",
                "web.svc.cluster.local.",
                "web.cluster.local.",
                "web."
            ]
        );
        assert_eq!(
            names("web.default.svc.cluster.local.")[..],
            ["web.default.svc.cluster.local."]
        );
        assert_eq!(
            names("a.b.c.d.e.f"),
            [
                "a.b.c.d.e.f.",
                "a.b.c.d.e.f.shop.svc.cluster.local.",
                "a.b.c.d.e.f.svc.cluster.local.",
                "a.b.c.d.e.f.cluster.local."
            ]
        );
        assert_eq!(
            names("WEB.Default")[0],
            "web.default.shop.svc.cluster.local."
        );
        assert!(names("").is_empty());
        assert!(names(".").is_empty());
    }

    #[test]
    fn service_names_from_parts_agree_with_built_names() {
        let zone = "cluster.local";
        for name in [
            "web",
            "web.shop",
            "web.shop.svc",
            "web.shop.svc.cluster.local",
            "web.shop.svc.cluster.local.",
            "a.web.shop",
            "web.shop.pod",
            "a.b.c.d.e.f",
            "web.shop.svc.cluster.local.x",
            "svc",
            "web.",
        ] {
            let built: Vec<Option<(String, String)>> = {
                let mut all = Vec::new();
                expand(name, "ns", zone, |fqdn| {
                    all.push(service_name(fqdn, zone).map(|(s, n)| (s.to_owned(), n.to_owned())));
                    None::<()>
                });
                all
            };
            let parts: Vec<Option<(String, String)>> = candidates(name)
                .map(|c| {
                    service_name_of(c, name, "ns", zone).map(|(s, n)| (s.to_owned(), n.to_owned()))
                })
                .collect();
            assert_eq!(parts, built, "{name}");
        }
    }

    #[test]
    fn service_names() {
        let z = "cluster.local";
        assert_eq!(
            service_name("web.default.svc.cluster.local", z),
            Some(("web", "default"))
        );
        assert_eq!(service_name("a.web.default.svc.cluster.local", z), None);
        assert_eq!(service_name("web.svc.cluster.local", z), None);
        assert_eq!(service_name("web.default.svc.cluster.localx", z), None);
        assert_eq!(service_name(".default.svc.cluster.local", z), None);
    }

    #[test]
    fn dashed_labels() {
        assert_eq!(dashed("10.3.0.3".parse().unwrap()), "10-3-0-3");
        assert_eq!(dashed("fd00::1".parse().unwrap()), "fd00--1");
        assert_eq!(parse_dashed("10-3-0-3"), Some("10.3.0.3".parse().unwrap()));
        assert_eq!(parse_dashed("fd00--1"), Some("fd00::1".parse().unwrap()));
        assert_eq!(parse_dashed("10-3-0"), None);
        assert_eq!(parse_dashed("web"), None);
    }

    #[test]
    fn record_types() {
        for t in ["A", "AAAA", "CNAME", "PTR", "SRV", "TXT", "TYPE99"] {
            let parsed = RecordType::parse(t).unwrap();
            assert_eq!(parsed.to_string(), t);
            assert_eq!(RecordType::from_code(parsed.code()), parsed);
        }
        assert_eq!(RecordType::parse("srv"), Some(RecordType::Srv));
        assert_eq!(RecordType::parse("MX"), None);
    }
}
