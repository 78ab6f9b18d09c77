//! From the wire form ([`crate::k8s`]) to validated objects ([`crate::model`]):
//! every check the API server makes that pobox relies on, each failure naming
//! the object and field (`Service default/web: spec.ports[1].port: 70000 is out
//! of range 1-65535`).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use crate::error::Error;
use crate::health::{
    OutlierDetection, ANNOTATION_OUTLIER_BASE_EJECTION, ANNOTATION_OUTLIER_FAILURES,
    ANNOTATION_OUTLIER_MAX_PERCENT, ANNOTATION_OUTLIER_PANIC_PERCENT,
};
use crate::k8s;
use crate::model::{
    EndpointMeta, EndpointSlice, IpFamily, Protocol, Service, ServiceKey, ServicePort, ServiceType,
    SessionAffinity, SliceEndpoint, SlicePort, TargetPort, TrafficPolicy,
};
use crate::policy::{
    is_prime, LbPolicy, ANNOTATION_LB_POLICY, ANNOTATION_MAGLEV_TABLE_SIZE, ANNOTATION_RING_SIZE,
    ANNOTATION_WEIGHTS, DEFAULT_MAGLEV_TABLE_SIZE, DEFAULT_RING_SIZE, MAX_MAGLEV_TABLE_SIZE,
    MAX_RING_SIZE, MAX_WEIGHT,
};
use crate::read::Json;
use crate::typed;

/// The namespace of an object that has none (as `kubectl create --dry-run`
/// writes them): kubectl would use the context's namespace, pobox uses `default`.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The label that ties an EndpointSlice to its Service.
pub const LABEL_SERVICE_NAME: &str = "kubernetes.io/service-name";

const MAX_SLICE_ENDPOINTS: usize = 1000;
const MAX_SLICE_PORTS: usize = 100;
const MAX_ADDRESSES: usize = 100;
const MAX_HINTS: usize = 8;
const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;
const MAX_AFFINITY_TIMEOUT: i64 = 86400;

// === names ===

pub(crate) fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// A DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// An IANA service name, as a named `targetPort` must be.
fn is_iana_svc_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 15
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b.iter().any(|c| c.is_ascii_lowercase())
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
        && !b.windows(2).any(|w| w == b"--")
}

fn port_number(value: i64) -> Result<u16, String> {
    if (1..=65535).contains(&value) {
        Ok(value as u16)
    } else {
        Err(format!("{value} is out of range 1-65535"))
    }
}

fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| format!("{s:?} is not a valid IP address"))
}

fn protocol(value: Option<&str>) -> Result<Protocol, String> {
    match value {
        None | Some("") => Ok(Protocol::Tcp),
        Some(s) => match s {
            "TCP" => Ok(Protocol::Tcp),
            "UDP" => Ok(Protocol::Udp),
            "SCTP" => Ok(Protocol::Sctp),
            other => Err(format!(
                "unsupported value {other:?}: supported values are \"SCTP\", \"TCP\", \"UDP\""
            )),
        },
    }
}

fn family(s: &str) -> Result<IpFamily, String> {
    match s {
        "IPv4" => Ok(IpFamily::V4),
        "IPv6" => Ok(IpFamily::V6),
        other => Err(format!(
            "unsupported value {other:?}: supported values are \"IPv4\", \"IPv6\""
        )),
    }
}

fn traffic_policy(value: Option<&str>) -> Result<Option<TrafficPolicy>, String> {
    match value {
        None | Some("") => Ok(None),
        Some("Cluster") => Ok(Some(TrafficPolicy::Cluster)),
        Some("Local") => Ok(Some(TrafficPolicy::Local)),
        Some(other) => Err(format!(
            "unsupported value {other:?}: supported values are \"Cluster\", \"Local\""
        )),
    }
}

/// Names the object in messages as far as it is known.
fn describe(kind: &str, meta: &k8s::ObjectMeta) -> String {
    let ns = match meta.namespace.as_deref() {
        None | Some("") => DEFAULT_NAMESPACE,
        Some(ns) => ns,
    };
    match meta.name.as_deref() {
        Some(name) if !name.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {ns}/<unnamed>"),
    }
}

/// Validates `metadata.name` and `metadata.namespace`, defaulting the namespace.
fn name_and_namespace(
    object: &str,
    meta: &k8s::ObjectMeta,
    name_ok: fn(&str) -> bool,
    name_rule: &str,
) -> Result<(String, String), Error> {
    let name = match meta.name.as_deref() {
        None | Some("") => return Err(Error::invalid(object, "metadata.name", "is required")),
        Some(n) => n,
    };
    if !name_ok(name) {
        return Err(Error::invalid(
            object,
            "metadata.name",
            format!("{name:?} is not a valid name: {name_rule}"),
        ));
    }
    let namespace = match meta.namespace.as_deref() {
        None | Some("") => DEFAULT_NAMESPACE,
        Some(ns) => ns,
    };
    if !is_dns1123_label(namespace) {
        return Err(Error::invalid(
            object,
            "metadata.namespace",
            format!("{namespace:?} is not a valid namespace: must be a DNS-1123 label"),
        ));
    }
    Ok((name.to_owned(), namespace.to_owned()))
}

// === Service ===

/// Validates a Service as the API server would.
pub(crate) fn service(raw: k8s::Service) -> Result<Service, Error> {
    let object = describe("Service", &raw.metadata);
    let (name, namespace) = name_and_namespace(
        &object,
        &raw.metadata,
        is_dns1035_label,
        "must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter, at most 63 characters)",
    )?;
    let inv = |field: &str, message: String| Error::invalid(&object, field, message);
    let spec = raw.spec.unwrap_or_default();

    let service_type = match spec.type_.as_deref() {
        None | Some("") | Some("ClusterIP") => ServiceType::ClusterIp,
        Some("NodePort") => ServiceType::NodePort,
        Some("LoadBalancer") => ServiceType::LoadBalancer,
        Some("ExternalName") => ServiceType::ExternalName,
        Some(other) => {
            return Err(inv(
                "spec.type",
                format!("unsupported value {other:?}: supported values are \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
            ))
        }
    };

    // --- cluster IPs and families ---
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
    let cluster_ips_raw: Vec<&str> = spec
        .cluster_ips
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .collect();
    if !cluster_ip.is_empty() && !cluster_ips_raw.is_empty() && cluster_ips_raw[0] != cluster_ip {
        return Err(inv(
            "spec.clusterIPs[0]",
            format!(
                "{:?} must match spec.clusterIP {cluster_ip:?}",
                cluster_ips_raw[0]
            ),
        ));
    }
    let first = if cluster_ip.is_empty() {
        cluster_ips_raw.first().copied().unwrap_or("")
    } else {
        cluster_ip
    };
    let headless = first == "None";
    let mut cluster_ips = Vec::new();
    let mut cluster_ip_text = None;
    if service_type == ServiceType::ExternalName {
        if !first.is_empty() {
            return Err(inv(
                "spec.clusterIP",
                "must be empty for type ExternalName".into(),
            ));
        }
    } else if headless {
        if cluster_ips_raw.len() > 1 {
            return Err(inv(
                "spec.clusterIPs",
                "must have exactly one value, \"None\", for a headless Service".into(),
            ));
        }
        if service_type != ServiceType::ClusterIp {
            return Err(inv(
                "spec.clusterIP",
                format!("may not be \"None\" for type {}", service_type.as_str()),
            ));
        }
    } else {
        let list: Vec<&str> = if cluster_ips_raw.is_empty() && !first.is_empty() {
            vec![first]
        } else {
            cluster_ips_raw.clone()
        };
        if list.len() > 2 {
            return Err(inv(
                "spec.clusterIPs",
                "may hold at most two addresses, one per IP family".into(),
            ));
        }
        for (i, s) in list.iter().enumerate() {
            let field = if cluster_ips_raw.is_empty() {
                "spec.clusterIP".to_owned()
            } else {
                format!("spec.clusterIPs[{i}]")
            };
            let ip = parse_ip(s).map_err(|m| inv(&field, m))?;
            if ip.is_unspecified() {
                return Err(inv(&field, format!("{ip} is not a usable address")));
            }
            if cluster_ips.is_empty() && ip.to_string() != *s {
                cluster_ip_text = Some(Arc::from(*s));
            }
            cluster_ips.push(ip);
        }
        if cluster_ips.len() == 2 && IpFamily::of(cluster_ips[0]) == IpFamily::of(cluster_ips[1]) {
            return Err(inv(
                "spec.clusterIPs[1]",
                "must be of a different IP family than spec.clusterIPs[0]".into(),
            ));
        }
    }

    let mut ip_families = Vec::new();
    for (i, f) in spec
        .ip_families
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let fam = family(f).map_err(|m| inv(&format!("spec.ipFamilies[{i}]"), m))?;
        if ip_families.contains(&fam) {
            return Err(inv(
                &format!("spec.ipFamilies[{i}]"),
                format!("duplicate value {f:?}"),
            ));
        }
        ip_families.push(fam);
    }
    for (i, ip) in cluster_ips.iter().enumerate() {
        match ip_families.get(i) {
            Some(&f) if f != IpFamily::of(*ip) => {
                return Err(inv(
                    &if cluster_ips_raw.is_empty() {
                        "spec.clusterIP".to_owned()
                    } else {
                        format!("spec.clusterIPs[{i}]")
                    },
                    format!("{ip} does not match spec.ipFamilies[{i}] {:?}", f.as_str()),
                ))
            }
            Some(_) => {}
            None => ip_families.push(IpFamily::of(*ip)),
        }
    }
    if let Some(policy) = spec.ip_family_policy.as_deref() {
        if !matches!(
            policy,
            "" | "SingleStack" | "PreferDualStack" | "RequireDualStack"
        ) {
            return Err(inv(
                "spec.ipFamilyPolicy",
                format!("unsupported value {policy:?}: supported values are \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\""),
            ));
        }
        if policy == "SingleStack" && ip_families.len() > 1 {
            return Err(inv(
                "spec.ipFamilies",
                "must hold one family when spec.ipFamilyPolicy is SingleStack".into(),
            ));
        }
    }

    // --- ExternalName ---
    let external_name = match (service_type, spec.external_name.as_deref()) {
        (ServiceType::ExternalName, None | Some("")) => {
            return Err(inv(
                "spec.externalName",
                "is required for type ExternalName".into(),
            ))
        }
        (ServiceType::ExternalName, Some(n)) => {
            let trimmed = n.strip_suffix('.').unwrap_or(n);
            if !is_dns1123_subdomain(&trimmed.to_ascii_lowercase()) {
                return Err(inv(
                    "spec.externalName",
                    format!("{n:?} is not a valid DNS name"),
                ));
            }
            Some(Arc::<str>::from(n))
        }
        _ => None,
    };

    // --- ports ---
    let raw_ports = spec.ports.unwrap_or_default();
    if raw_ports.is_empty() && service_type != ServiceType::ExternalName && !headless {
        return Err(inv("spec.ports", "is required".into()));
    }
    let mut ports: Vec<ServicePort> = Vec::with_capacity(raw_ports.len());
    let mut used = UsedPorts::new(raw_ports.len());
    for (i, p) in raw_ports.iter().enumerate() {
        let at = |f: &str| format!("spec.ports[{i}].{f}");
        let name = p.name.as_deref().unwrap_or("");
        if name.is_empty() {
            if raw_ports.len() > 1 {
                return Err(inv(
                    &at("name"),
                    "is required when a Service has more than one port".into(),
                ));
            }
        } else if !is_dns1123_label(name) {
            return Err(inv(
                &at("name"),
                format!("{name:?} is not a valid port name: must be a DNS-1123 label"),
            ));
        }
        let name: Arc<str> = name.into();
        if used.name(&ports, &name) {
            return Err(inv(&at("name"), format!("duplicate value {name:?}")));
        }
        let port = match p.port {
            None => return Err(inv(&at("port"), "is required".into())),
            Some(v) => port_number(v).map_err(|m| inv(&at("port"), m))?,
        };
        let proto = protocol(p.protocol.as_deref()).map_err(|m| inv(&at("protocol"), m))?;
        if used.port(&ports, port, proto, false) {
            return Err(inv(
                &format!("spec.ports[{i}]"),
                format!("duplicate port {port}/{proto}"),
            ));
        }
        // IntOrString: a number, or a name (which needs a letter, so "8080"
        // as a string is refused, as the API server refuses it). Unset or 0
        // defaults to `port`.
        let target_port = match &p.target_port {
            None | Some(serde_json::Value::Null) => TargetPort::Number(port),
            Some(serde_json::Value::Number(n)) => match n.as_i64() {
                Some(0) => TargetPort::Number(port),
                Some(v) => {
                    TargetPort::Number(port_number(v).map_err(|m| inv(&at("targetPort"), m))?)
                }
                None => {
                    return Err(inv(
                        &at("targetPort"),
                        format!("{n} is not a whole number: must be a port number or a port name"),
                    ))
                }
            },
            Some(serde_json::Value::String(s)) if s.is_empty() => TargetPort::Number(port),
            Some(serde_json::Value::String(s)) if is_iana_svc_name(s) => {
                TargetPort::Name(s.as_str().into())
            }
            Some(serde_json::Value::String(s)) => {
                return Err(inv(
                    &at("targetPort"),
                    format!("{s:?} is not a valid port name: at most 15 lowercase letters, digits and '-', with at least one letter"),
                ))
            }
            Some(other) => {
                return Err(inv(
                    &at("targetPort"),
                    format!("{} must be a port number or a port name", Json(other)),
                ))
            }
        };
        let node_port = match p.node_port {
            None | Some(0) => None,
            Some(v) => {
                if !matches!(
                    service_type,
                    ServiceType::NodePort | ServiceType::LoadBalancer
                ) {
                    return Err(inv(
                        &at("nodePort"),
                        format!("may not be used when type is {}", service_type.as_str()),
                    ));
                }
                let np = port_number(v).map_err(|m| inv(&at("nodePort"), m))?;
                if used.port(&ports, np, proto, true) {
                    return Err(inv(
                        &at("nodePort"),
                        format!("duplicate value {np}/{proto}"),
                    ));
                }
                Some(np)
            }
        };
        ports.push(ServicePort {
            name,
            port,
            protocol: proto,
            target_port,
            node_port,
        });
    }
    if service_type == ServiceType::ExternalName {
        // Ports of an ExternalName Service have no meaning for routing.
        ports.clear();
    }

    // --- external IPs and load balancer ---
    let mut external_ips = Vec::new();
    for (i, s) in spec
        .external_ips
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let ip = parse_ip(s).map_err(|m| inv(&format!("spec.externalIPs[{i}]"), m))?;
        if ip.is_unspecified() {
            return Err(inv(
                &format!("spec.externalIPs[{i}]"),
                format!("{ip} is not a usable address"),
            ));
        }
        external_ips.push(ip);
    }
    if service_type == ServiceType::ExternalName {
        external_ips.clear();
    }
    let mut load_balancer_ips = Vec::new();
    let mut load_balancer_ingress = Vec::new();
    let ingress = raw
        .status
        .and_then(|s| s.load_balancer)
        .and_then(|lb| lb.ingress)
        .unwrap_or_default();
    for (i, ing) in ingress.iter().enumerate() {
        let at = |f: &str| format!("status.loadBalancer.ingress[{i}].{f}");
        if let Some(mode) = ing.ip_mode.as_deref() {
            if !matches!(mode, "VIP" | "Proxy") {
                return Err(inv(
                    &at("ipMode"),
                    format!("unsupported value {mode:?}: supported values are \"Proxy\", \"VIP\""),
                ));
            }
        }
        match (ing.ip.as_deref(), ing.hostname.as_deref()) {
            (Some(ip), _) if !ip.is_empty() => {
                let addr = parse_ip(ip).map_err(|m| inv(&at("ip"), m))?;
                load_balancer_ingress.push(addr.to_string());
                // kube-proxy routes an ingress IP itself only in VIP mode; with
                // `ipMode: Proxy` traffic must go through the load balancer.
                if service_type == ServiceType::LoadBalancer
                    && ing.ip_mode.as_deref() != Some("Proxy")
                {
                    load_balancer_ips.push(addr);
                }
            }
            (_, Some(h)) if !h.is_empty() => load_balancer_ingress.push(h.to_owned()),
            _ => {}
        }
    }

    // --- policies ---
    let externally_accessible = matches!(
        service_type,
        ServiceType::NodePort | ServiceType::LoadBalancer
    ) || !external_ips.is_empty();
    let internal_traffic_policy = traffic_policy(spec.internal_traffic_policy.as_deref())
        .map_err(|m| inv("spec.internalTrafficPolicy", m))?
        .unwrap_or_default();
    let etp = traffic_policy(spec.external_traffic_policy.as_deref())
        .map_err(|m| inv("spec.externalTrafficPolicy", m))?;
    if etp.is_some() && !externally_accessible {
        return Err(inv(
            "spec.externalTrafficPolicy",
            "may only be set for externally-accessible services (NodePort, LoadBalancer, or with externalIPs)".into(),
        ));
    }
    let external_traffic_policy = etp.unwrap_or_default();

    let session_affinity = match spec.session_affinity.as_deref() {
        None | Some("") | Some("None") => {
            if spec
                .session_affinity_config
                .as_ref()
                .is_some_and(|c| c.client_ip.is_some())
            {
                return Err(inv(
                    "spec.sessionAffinityConfig",
                    "must not be set when spec.sessionAffinity is None".into(),
                ));
            }
            SessionAffinity::None
        }
        Some("ClientIP") => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds);
            let timeout_seconds = match timeout {
                None => DEFAULT_AFFINITY_TIMEOUT,
                Some(t) if (1..=MAX_AFFINITY_TIMEOUT).contains(&t) => t as u32,
                Some(t) => {
                    return Err(inv(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        format!("{t} is out of range 1-{MAX_AFFINITY_TIMEOUT}"),
                    ))
                }
            };
            SessionAffinity::ClientIp { timeout_seconds }
        }
        Some(other) => {
            return Err(inv(
                "spec.sessionAffinity",
                format!("unsupported value {other:?}: supported values are \"ClientIP\", \"None\""),
            ))
        }
    };

    let traffic_distribution = match spec.traffic_distribution.as_deref() {
        None | Some("") => None,
        Some(v @ ("PreferClose" | "PreferSameZone" | "PreferSameNode")) => Some(v.into()),
        Some(other) => {
            return Err(inv(
                "spec.trafficDistribution",
                format!("unsupported value {other:?}: supported values are \"PreferClose\", \"PreferSameNode\", \"PreferSameZone\""),
            ))
        }
    };

    let lb_policy = lb_policy(&object, raw.metadata.annotations.as_ref())?;
    let outlier_detection = outlier_detection(&object, raw.metadata.annotations.as_ref())?;
    let service_account = service_account(&object, raw.metadata.annotations.as_ref())?;

    Ok(Service {
        key: ServiceKey::new(&namespace, &name),
        service_type,
        cluster_ips,
        cluster_ip_text,
        headless,
        ip_families,
        ports,
        external_ips,
        load_balancer_ips,
        load_balancer_ingress,
        external_name,
        internal_traffic_policy,
        external_traffic_policy,
        publish_not_ready_addresses: spec.publish_not_ready_addresses.unwrap_or(false),
        session_affinity,
        traffic_distribution,
        lb_policy,
        outlier_detection,
        service_account,
    })
}

/// The annotation naming the service account of a Service's pods: their
/// mTLS identity is `spiffe://<trust-domain>/ns/<namespace>/sa/<value>`.
pub const ANNOTATION_SERVICE_ACCOUNT: &str = "pobox.io/service-account";

/// The service account from `pobox.io/service-account`, a DNS-1123
/// subdomain as Kubernetes requires of ServiceAccount names.
fn service_account(
    object: &str,
    annotations: Option<&k8s::StringMap>,
) -> Result<Option<Arc<str>>, Error> {
    match annotations.and_then(|a| a.get(ANNOTATION_SERVICE_ACCOUNT)) {
        None => Ok(None),
        Some(v) if is_dns1123_subdomain(v) => Ok(Some(v.into())),
        Some(v) => Err(Error::invalid(
            object,
            annotation_field(ANNOTATION_SERVICE_ACCOUNT),
            format!("{v:?} is not a service account name (a DNS-1123 subdomain: lowercase letters, digits, '-' and '.')"),
        )),
    }
}

fn annotation_number(
    object: &str,
    annotations: Option<&k8s::StringMap>,
    key: &str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
) -> Result<u32, Error> {
    match annotations.and_then(|a| a.get(key)) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<u32>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(Error::invalid(
                object,
                annotation_field(key),
                format!("{v:?} is not a number in {}-{}", range.start(), range.end()),
            )),
        },
    }
}

/// Outlier detection from a Service's annotations: on when
/// `pobox.io/outlier-consecutive-failures` is set.
fn outlier_detection(
    object: &str,
    annotations: Option<&k8s::StringMap>,
) -> Result<Option<OutlierDetection>, Error> {
    let n = |key, default, range| annotation_number(object, annotations, key, default, range);
    let base = n(ANNOTATION_OUTLIER_BASE_EJECTION, 30, 1..=3600)?;
    let max_percent = n(ANNOTATION_OUTLIER_MAX_PERCENT, 10, 0..=100)?;
    let panic = n(ANNOTATION_OUTLIER_PANIC_PERCENT, 50, 0..=100)?;
    if annotations.is_none_or(|a| !a.contains_key(ANNOTATION_OUTLIER_FAILURES)) {
        return Ok(None);
    }
    Ok(Some(OutlierDetection {
        consecutive_failures: n(ANNOTATION_OUTLIER_FAILURES, 5, 1..=1000)?,
        base_ejection: std::time::Duration::from_secs(base as u64),
        max_ejection_percent: max_percent,
        panic_threshold_percent: panic,
    }))
}

fn annotation_field(key: &str) -> String {
    format!("metadata.annotations[{key}]")
}

/// The balancing policy from a Service's annotations.
fn lb_policy(object: &str, annotations: Option<&k8s::StringMap>) -> Result<LbPolicy, Error> {
    let get = |k: &str| annotations.and_then(|a| a.get(k));
    let number = |key: &str, default: u32, max: u32| -> Result<u32, Error> {
        match get(key) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(Error::invalid(
                    object,
                    annotation_field(key),
                    format!("{v:?} is not a number in 1-{max}"),
                )),
            },
        }
    };
    let table_size = number(
        ANNOTATION_MAGLEV_TABLE_SIZE,
        DEFAULT_MAGLEV_TABLE_SIZE,
        MAX_MAGLEV_TABLE_SIZE,
    )?;
    if !is_prime(table_size) {
        return Err(Error::invalid(
            object,
            annotation_field(ANNOTATION_MAGLEV_TABLE_SIZE),
            format!("{table_size} is not a prime: a Maglev table size must be prime (e.g. 65537, 655373)"),
        ));
    }
    let ring_size = number(ANNOTATION_RING_SIZE, DEFAULT_RING_SIZE, MAX_RING_SIZE)?;
    match get(ANNOTATION_LB_POLICY) {
        None | Some("round-robin") => Ok(LbPolicy::RoundRobin),
        Some("random") => Ok(LbPolicy::Random),
        Some("weighted-round-robin") => Ok(LbPolicy::WeightedRoundRobin),
        Some("least-request") => Ok(LbPolicy::LeastRequest),
        Some("maglev") => Ok(LbPolicy::Maglev { table_size }),
        Some("ring-hash") => Ok(LbPolicy::RingHash { ring_size }),
        Some(other) => Err(Error::invalid(
            object,
            annotation_field(ANNOTATION_LB_POLICY),
            format!("unsupported value {other:?}: supported values are \"least-request\", \"maglev\", \"random\", \"ring-hash\", \"round-robin\", \"weighted-round-robin\""),
        )),
    }
}

/// Endpoint weights from a slice's `pobox.io/weights` annotation.
fn slice_weights(
    object: &str,
    annotations: Option<&k8s::StringMap>,
    family: IpFamily,
) -> Result<HashMap<IpAddr, u32>, Error> {
    let Some(text) = annotations.and_then(|a| a.get(ANNOTATION_WEIGHTS)) else {
        return Ok(HashMap::new());
    };
    let field = annotation_field(ANNOTATION_WEIGHTS);
    let bad = |m: String| Error::invalid(object, &field, m);
    let map = typed::object(text)
        .map_err(|e| bad(format!("not a JSON object from address to weight: {e}")))?;
    let mut weights = HashMap::with_capacity(map.len());
    for (k, v) in map {
        let ip = parse_ip(&k).map_err(&bad)?;
        if IpFamily::of(ip) != family {
            return Err(bad(format!(
                "{ip} is not an {} address, as addressType requires",
                family.as_str()
            )));
        }
        let w = v
            .as_u64()
            .filter(|w| *w <= MAX_WEIGHT as u64)
            .ok_or_else(|| {
                bad(format!(
                    "the weight of {ip}, {}, is not a whole number in 0-{MAX_WEIGHT}",
                    Json(&v)
                ))
            })?;
        weights.insert(ip, w as u32);
    }
    Ok(weights)
}

// === EndpointSlice ===

/// Past this many ports, a Service's ports are checked for duplicates in
/// sets rather than by a scan of the ports before each one (whose cost grows
/// as the square of their number).
const SCAN_PORTS: usize = 32;

/// The duplicate checks of a Service's ports. A Service has a few ports: a
/// scan of the earlier ones finds a duplicate with no set to build, and with
/// no set type of its own in the JavaScript package's module. A Service
/// listing more than [`SCAN_PORTS`] is checked in sets instead, of types the
/// module has anyway: names in a `HashSet<Arc<str>>` (the [`Interner`]'s),
/// (port, protocol) and (nodePort, protocol) pairs as bits.
struct UsedPorts {
    /// Whether the sets are used rather than a scan.
    sets: bool,
    names: HashSet<Arc<str>>,
    /// Bit `((port * 3 + protocol) * 2 + is_node_port)`, grown as needed.
    bits: Vec<u64>,
}

impl UsedPorts {
    fn new(ports: usize) -> Self {
        UsedPorts {
            sets: ports > SCAN_PORTS,
            names: HashSet::new(),
            bits: Vec::new(),
        }
    }

    /// Whether `name` is used by an earlier port; notes it.
    fn name(&mut self, earlier: &[ServicePort], name: &Arc<str>) -> bool {
        if self.sets {
            !self.names.insert(name.clone())
        } else {
            earlier.iter().any(|p| p.name == *name)
        }
    }

    /// Whether `port`/`protocol` is used by an earlier port, as its port
    /// or (`node_port`) as its node port; notes it.
    fn port(
        &mut self,
        earlier: &[ServicePort],
        port: u16,
        protocol: Protocol,
        node_port: bool,
    ) -> bool {
        if self.sets {
            return self.bit(port, protocol, node_port);
        }
        earlier.iter().any(|p| {
            let used = if node_port { p.node_port } else { Some(p.port) };
            p.protocol == protocol && used == Some(port)
        })
    }

    /// Sets the pair's bit; whether it was set.
    fn bit(&mut self, port: u16, protocol: Protocol, node_port: bool) -> bool {
        let bit = (usize::from(port) * 3 + protocol as usize) * 2 + usize::from(node_port);
        let word = bit / 64;
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let mask = 1 << (bit % 64);
        let was = self.bits[word] & mask != 0;
        self.bits[word] |= mask;
        was
    }
}

/// Shares the strings and endpoint metadata that repeat across a document
/// (node names, zones): at 100,000 endpoints on a few dozen nodes this is
/// most of an endpoint's size.
#[derive(Default)]
pub(crate) struct Interner {
    strs: HashSet<Arc<str>>,
    metas: HashSet<Arc<EndpointMeta>>,
}

impl Interner {
    fn str(&mut self, s: &str) -> Arc<str> {
        if let Some(found) = self.strs.get(s) {
            return found.clone();
        }
        let new: Arc<str> = s.into();
        self.strs.insert(new.clone());
        new
    }

    fn meta(
        &mut self,
        node: Option<&str>,
        zone: Option<&str>,
        hostname: Option<&str>,
    ) -> Option<Arc<EndpointMeta>> {
        if node.is_none() && zone.is_none() && hostname.is_none() {
            return None;
        }
        let meta = EndpointMeta {
            node: node.map(|s| self.str(s)),
            zone: zone.map(|s| self.str(s)),
            // Hostnames are unique per endpoint: not worth a table entry.
            hostname: hostname.map(Arc::from),
        };
        if let Some(found) = self.metas.get(&meta) {
            return Some(found.clone());
        }
        let new = Arc::new(meta);
        self.metas.insert(new.clone());
        Some(new)
    }
}

/// What an EndpointSlice validates to: a usable slice, or one pobox skips
/// (with the reason, for a warning).
pub(crate) enum SliceOutcome {
    Usable(EndpointSlice),
    Skipped(String),
}

/// Validates an EndpointSlice as the API server would.
pub(crate) fn endpoint_slice(
    raw: k8s::EndpointSlice,
    interner: &mut Interner,
) -> Result<SliceOutcome, Error> {
    let object = describe("EndpointSlice", &raw.metadata);
    let (name, namespace) = name_and_namespace(
        &object,
        &raw.metadata,
        is_dns1123_subdomain,
        "must be a DNS-1123 subdomain",
    )?;
    let inv = |field: &str, message: String| Error::invalid(&object, field, message);

    let family = match raw.address_type.as_deref() {
        None | Some("") => return Err(inv("addressType", "is required".into())),
        Some("IPv4") => IpFamily::V4,
        Some("IPv6") => IpFamily::V6,
        Some("FQDN") => {
            return Ok(SliceOutcome::Skipped(format!(
                "{object}: addressType FQDN is not routable by kube-proxy; skipped"
            )))
        }
        Some(other) => {
            return Err(inv(
                "addressType",
                format!(
                "unsupported value {other:?}: supported values are \"FQDN\", \"IPv4\", \"IPv6\""
            ),
            ))
        }
    };

    let raw_ports = raw.ports.unwrap_or_default();
    if raw_ports.len() > MAX_SLICE_PORTS {
        return Err(inv(
            "ports",
            format!(
                "has {} items, at most {MAX_SLICE_PORTS} are allowed",
                raw_ports.len()
            ),
        ));
    }
    let mut ports: Vec<SlicePort> = Vec::with_capacity(raw_ports.len());
    for (i, p) in raw_ports.iter().enumerate() {
        let at = |f: &str| format!("ports[{i}].{f}");
        let pname = p.name.as_deref().unwrap_or("");
        if !pname.is_empty() && !is_dns1123_label(pname) {
            return Err(inv(
                &at("name"),
                format!("{pname:?} is not a valid port name: must be a DNS-1123 label"),
            ));
        }
        if ports.iter().any(|q| &*q.name == pname) {
            return Err(inv(&at("name"), format!("duplicate value {pname:?}")));
        }
        let port = match p.port {
            None | Some(0) => None,
            Some(v) => Some(port_number(v).map_err(|m| inv(&at("port"), m))?),
        };
        let proto = protocol(p.protocol.as_deref()).map_err(|m| inv(&at("protocol"), m))?;
        ports.push(SlicePort {
            name: pname.into(),
            port,
            protocol: proto,
        });
    }

    let weights = slice_weights(&object, raw.metadata.annotations.as_ref(), family)?;
    let raw_endpoints = raw.endpoints.unwrap_or_default();
    if raw_endpoints.len() > MAX_SLICE_ENDPOINTS {
        return Err(inv(
            "endpoints",
            format!(
                "has {} items, at most {MAX_SLICE_ENDPOINTS} are allowed",
                raw_endpoints.len()
            ),
        ));
    }
    let mut endpoints = Vec::with_capacity(raw_endpoints.len());
    for (i, e) in raw_endpoints.into_iter().enumerate() {
        let at = |f: &str| format!("endpoints[{i}].{f}");
        let addresses = e.addresses.unwrap_or_default();
        if addresses.is_empty() {
            return Err(inv(
                &at("addresses"),
                "must contain at least one address".into(),
            ));
        }
        if addresses.len() > MAX_ADDRESSES {
            return Err(inv(
                &at("addresses"),
                format!(
                    "has {} items, at most {MAX_ADDRESSES} are allowed",
                    addresses.len()
                ),
            ));
        }
        let mut address = None;
        for (j, a) in addresses.iter().enumerate() {
            // Written only for an error: formatting three field names an
            // endpoint was a tenth of reading a slice.
            let field = || format!("endpoints[{i}].addresses[{j}]");
            let ip = parse_ip(a).map_err(|m| inv(&field(), m))?;
            if IpFamily::of(ip) != family {
                return Err(inv(
                    &field(),
                    format!(
                        "{ip} is not an {} address, as addressType requires",
                        family.as_str()
                    ),
                ));
            }
            if ip.is_unspecified() {
                return Err(inv(&field(), format!("{ip} is not a usable address")));
            }
            address.get_or_insert(ip);
        }
        let hostname = match e.hostname.as_deref() {
            None | Some("") => None,
            Some(h) if is_dns1123_label(h) => Some(h),
            Some(h) => {
                return Err(inv(
                    &at("hostname"),
                    format!("{h:?} is not a valid hostname: must be a DNS-1123 label"),
                ))
            }
        };
        let node_name = match e.node_name.as_deref() {
            None | Some("") => None,
            Some(n) if is_dns1123_subdomain(n) => Some(n),
            Some(n) => {
                return Err(inv(
                    &at("nodeName"),
                    format!("{n:?} is not a valid node name: must be a DNS-1123 subdomain"),
                ))
            }
        };
        let zone = e.zone.as_deref().filter(|z| !z.is_empty());
        let conditions = e.conditions.unwrap_or_default();
        let hints = e.hints.unwrap_or_default();
        let zone_hints = hint_names(&object, || at("hints.forZones"), hints.for_zones, interner)?;
        let node_hints = hint_names(&object, || at("hints.forNodes"), hints.for_nodes, interner)?;
        endpoints.push(SliceEndpoint {
            address: address.expect("at least one address was checked above"),
            ready: conditions.ready.unwrap_or(true),
            serving: conditions.serving.unwrap_or(true),
            terminating: conditions.terminating.unwrap_or(false),
            meta: interner.meta(node_name, zone, hostname),
            weight: address.and_then(|a| weights.get(&a).copied()).unwrap_or(1),
            zone_hints,
            node_hints,
        });
    }

    if !weights.is_empty() {
        // A set, not a scan of the endpoints per weight: 1,000 weighted
        // endpoints were a million comparisons. The lowest stray address is
        // named, whatever the map's order.
        let addresses: HashSet<IpAddr> = endpoints.iter().map(|e| e.address).collect();
        if let Some(ip) = weights.keys().filter(|ip| !addresses.contains(ip)).min() {
            return Err(Error::invalid(
                &object,
                annotation_field(ANNOTATION_WEIGHTS),
                format!("{ip} is not an address of this slice's endpoints"),
            ));
        }
    }
    let labels = raw.metadata.labels.unwrap_or_default();
    let service = match labels.get(LABEL_SERVICE_NAME) {
        None | Some("") => None,
        Some(s) => Some(Arc::<str>::from(s)),
    };
    Ok(SliceOutcome::Usable(EndpointSlice {
        namespace: namespace.into(),
        name: name.into(),
        service,
        family,
        ports,
        endpoints,
    }))
}

/// `field` names the list, and is written only for an error.
fn hint_names(
    object: &str,
    field: impl Fn() -> String,
    hints: Option<Vec<k8s::NamedHint>>,
    interner: &mut Interner,
) -> Result<Box<[Arc<str>]>, Error> {
    let hints = hints.unwrap_or_default();
    if hints.len() > MAX_HINTS {
        return Err(Error::invalid(
            object,
            field(),
            format!("has {} items, at most {MAX_HINTS} are allowed", hints.len()),
        ));
    }
    let mut out = Vec::with_capacity(hints.len());
    for (i, h) in hints.into_iter().enumerate() {
        match h.name {
            Some(n) if !n.is_empty() => out.push(interner.str(&n)),
            _ => {
                return Err(Error::invalid(
                    object,
                    format!("{}[{i}].name", field()),
                    "is required",
                ))
            }
        }
    }
    Ok(out.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns1123_label("web-1"));
        assert!(!is_dns1123_label("-web"));
        assert!(!is_dns1123_label("Web"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1035_label("web"));
        assert!(!is_dns1035_label("1web"));
        assert!(is_dns1123_subdomain("node-a.example.com"));
        assert!(!is_dns1123_subdomain("node_a"));
        assert!(is_iana_svc_name("http"));
        assert!(is_iana_svc_name("h2c-1"));
        assert!(!is_iana_svc_name("8080"));
        assert!(!is_iana_svc_name("a--b"));
        assert!(!is_iana_svc_name("averyverylongname"));
    }

    /// A NodePort Service `default/web` with `ports`, validated: its ports
    /// as `name port/PROTO node`, or the error.
    fn ports_of(ports: Vec<serde_json::Value>) -> Result<Vec<String>, String> {
        let raw = k8s::decode(serde_json::json!({
            "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "ports": ports},
        }))
        .unwrap();
        let service = service(raw).map_err(|e| e.to_string())?;
        Ok(service
            .ports
            .iter()
            .map(|p| format!("{} {}/{} {:?}", p.name, p.port, p.protocol, p.node_port))
            .collect())
    }

    /// Duplicates are found alike by the scan (few ports) and by the sets
    /// (past `SCAN_PORTS`), and nothing else is taken for one: a port
    /// number under two protocols, a nodePort equal to another's port.
    #[test]
    fn duplicate_ports_are_found_by_scan_and_by_sets() {
        for n in [4, SCAN_PORTS + 8] {
            let port = |i: usize| {
                serde_json::json!({
                    "name": format!("p{i}"),
                    "port": 1000 + i / 2,
                    "protocol": if i % 2 == 0 { "TCP" } else { "UDP" },
                    "nodePort": 30000 + i,
                })
            };
            let mut ports: Vec<_> = (0..n).map(port).collect();
            ports[n - 1]["nodePort"] = serde_json::json!(1000);
            assert_eq!(ports_of(ports.clone()).map(|p| p.len()), Ok(n), "{n}");
            let last = n - 1;
            let edits: [(&str, serde_json::Value, String); 4] = [
                (
                    "name",
                    serde_json::json!("p0"),
                    format!("spec.ports[{last}].name: duplicate value \"p0\""),
                ),
                (
                    "port",
                    serde_json::json!(1000 + (last - 2) / 2),
                    format!(
                        "spec.ports[{last}]: duplicate port {}/UDP",
                        1000 + (last - 2) / 2
                    ),
                ),
                (
                    "nodePort",
                    serde_json::json!(30001),
                    format!("spec.ports[{last}].nodePort: duplicate value 30001/UDP"),
                ),
                (
                    "protocol",
                    serde_json::json!("TCP"),
                    format!("spec.ports[{last}]: duplicate port {}/TCP", 1000 + last / 2),
                ),
            ];
            for (field, value, message) in edits {
                let mut ports = ports.clone();
                ports[last][field] = value;
                assert_eq!(
                    ports_of(ports),
                    Err(format!("Service default/web: {message}")),
                    "{n} {field}"
                );
            }
        }
    }
}

#[cfg(all(test, feature = "yaml"))]
mod service_account_tests {
    use crate::{Mesh, MeshConfig};

    fn apply(annotations: &str) -> Result<Option<String>, String> {
        let mesh = Mesh::new(MeshConfig::new()).unwrap();
        let yaml = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop, annotations: {annotations}}}\nspec: {{clusterIP: 10.96.0.10, ports: [{{port: 80}}]}}\n"
        );
        mesh.apply(yaml.as_bytes()).map_err(|e| e.to_string())?;
        let snapshot = mesh.snapshot();
        let entry = snapshot.service("shop", "web").unwrap();
        Ok(entry.service().service_account().map(str::to_owned))
    }

    #[test]
    fn service_account_annotation() {
        assert_eq!(apply("{}"), Ok(None));
        assert_eq!(
            apply("{pobox.io/service-account: web-sa}"),
            Ok(Some("web-sa".to_owned()))
        );
        for bad in ["Web", "web sa", "''", "web/sa", "-web"] {
            let err = apply(&format!("{{pobox.io/service-account: {bad}}}")).unwrap_err();
            assert!(
                err.contains("Service shop/web")
                    && err.contains("metadata.annotations[pobox.io/service-account]")
                    && err.contains("not a service account name"),
                "{bad}: {err}"
            );
        }
    }
}
