//! The environment variables kubelet gives a container for the Services of
//! its namespace (`pkg/kubelet/envvars`), byte for byte.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::Service;
use crate::snapshot::Snapshot;

/// One environment variable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvVar {
    /// The name, e.g. `WEB_SERVICE_HOST`.
    pub name: String,
    /// The value, e.g. `10.96.0.10`.
    pub value: String,
}

/// `NAME=value`.
impl fmt::Display for EnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.value)
    }
}

/// kubelet's `envvars.FromServices`: for each Service with a cluster IP, in
/// the order given, `<SVC>_SERVICE_HOST`, `<SVC>_SERVICE_PORT` (first port),
/// `<SVC>_SERVICE_PORT_<NAME>` per named port, then the Docker-link
/// variables `<SVC>_PORT` (first port) and, per port,
/// `<SVC>_PORT_<port>_<PROTO>` with `_PROTO`, `_PORT` and `_ADDR`.
/// Headless, ExternalName and unallocated Services give nothing. Names are
/// upper-cased with `-` turned into `_`; the address is `spec.clusterIP` as
/// written.
pub fn from_services<'a>(services: impl IntoIterator<Item = &'a Service>) -> Vec<EnvVar> {
    let mut out = Vec::new();
    let mut push = |name: String, value: String| out.push(EnvVar { name, value });
    for svc in services {
        let (Some(ip), Some(first)) = (svc.cluster_ip_text(), svc.ports().first()) else {
            continue;
        };
        let ip = &*ip;
        let prefix = env_name(svc.key().name());
        push(format!("{prefix}_SERVICE_HOST"), ip.to_owned());
        push(format!("{prefix}_SERVICE_PORT"), first.port().to_string());
        for sp in svc.ports().iter().filter(|sp| !sp.name().is_empty()) {
            push(
                format!("{prefix}_SERVICE_PORT_{}", env_name(sp.name())),
                sp.port().to_string(),
            );
        }
        let host_port = |port: u16| {
            if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            }
        };
        for (i, sp) in svc.ports().iter().enumerate() {
            let proto = sp.protocol().as_str();
            let lower = proto.to_ascii_lowercase();
            let url = format!("{lower}://{}", host_port(sp.port()));
            if i == 0 {
                push(format!("{prefix}_PORT"), url.clone());
            }
            let port_prefix = format!("{prefix}_PORT_{}_{proto}", sp.port());
            push(port_prefix.clone(), url);
            push(format!("{port_prefix}_PROTO"), lower);
            push(format!("{port_prefix}_PORT"), sp.port().to_string());
            push(format!("{port_prefix}_ADDR"), ip.to_owned());
        }
    }
    out
}

/// kubelet's `makeEnvVariableName`: upper case, `-` to `_`.
fn env_name(s: &str) -> String {
    s.replace('-', "_").to_ascii_uppercase()
}

impl Snapshot {
    /// The variables kubelet gives a container in `namespace` with service
    /// links enabled (`enableServiceLinks`, the default): those of every
    /// Service of the namespace with a cluster IP, and of `default/kubernetes`
    /// unless the namespace has its own `kubernetes` Service; Services in
    /// name order (kubelet's own order is a map's, i.e. none).
    pub fn env_vars(&self, namespace: &str) -> Vec<EnvVar> {
        let mut chosen: BTreeMap<&str, &Service> = BTreeMap::new();
        for entry in self.services() {
            let svc = entry.service();
            if svc.cluster_ip_text().is_none() {
                continue;
            }
            let (ns, name) = (svc.key().namespace(), svc.key().name());
            if ns == namespace {
                chosen.insert(name, svc);
            } else if ns == "default" && name == "kubernetes" {
                chosen.entry(name).or_insert(svc);
            }
        }
        from_services(chosen.into_values())
    }
}

// Upstream's Services, written as YAML.
#[cfg(all(test, feature = "yaml"))]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::Object;

    fn service(yaml: &str) -> Arc<Service> {
        match crate::parse::parse(yaml.as_bytes())
            .unwrap()
            .objects
            .remove(0)
        {
            Object::Service(s) => s,
            other => panic!("{other:?}"),
        }
    }

    /// `TestFromServices` of kubelet's `pkg/kubelet/envvars/envvars_test.go`:
    /// the same Services, the same variables in the same order. Built here,
    /// not through a Mesh, because upstream's `q-u-u-x` has an unnamed port
    /// beside a named one, which the API server (and so `pobox::parse`)
    /// refuses: the port is named for parsing, then unnamed.
    #[test]
    fn upstream_from_services() {
        let svc = |name: &str, spec: &str| {
            service(&format!(
                "{{apiVersion: v1, kind: Service, metadata: {{name: {name}}}, spec: {spec}}}"
            ))
        };
        let mut quux = svc(
            "q-u-u-x",
            "{clusterIP: 9.8.7.6, ports: [{name: x, port: 8082, protocol: TCP}, {name: '8083', port: 8083, protocol: TCP}]}",
        );
        Arc::make_mut(&mut quux).ports[0].name = Arc::from("");
        let services = [
            svc("foo-bar", "{clusterIP: 1.2.3.4, ports: [{port: 8080, protocol: TCP}]}"),
            svc(
                "abc-123",
                "{clusterIP: 5.6.7.8, ports: [{name: u-d-p, port: 8081, protocol: UDP}, {name: t-c-p, port: 8081, protocol: TCP}]}",
            ),
            quux,
            svc("svrc-clusterip-none", "{clusterIP: None, ports: [{port: 8082, protocol: TCP}]}"),
            svc("svrc-clusterip-empty", "{clusterIP: '', ports: [{port: 8082, protocol: TCP}]}"),
            svc(
                "super-ipv6",
                "{clusterIP: '2001:DB8::', ports: [{name: u-d-p, port: 8084, protocol: UDP}, {name: t-c-p, port: 8084, protocol: TCP}]}",
            ),
            svc("sctp-1", "{clusterIP: 1.2.3.4, ports: [{port: 777, protocol: SCTP}]}"),
        ];
        let vars = from_services(services.iter().map(|s| &**s));
        let expected: &[(&str, &str)] = &[
            ("FOO_BAR_SERVICE_HOST", "1.2.3.4"),
            ("FOO_BAR_SERVICE_PORT", "8080"),
            ("FOO_BAR_PORT", "tcp://1.2.3.4:8080"),
            ("FOO_BAR_PORT_8080_TCP", "tcp://1.2.3.4:8080"),
            ("FOO_BAR_PORT_8080_TCP_PROTO", "tcp"),
            ("FOO_BAR_PORT_8080_TCP_PORT", "8080"),
            ("FOO_BAR_PORT_8080_TCP_ADDR", "1.2.3.4"),
            ("ABC_123_SERVICE_HOST", "5.6.7.8"),
            ("ABC_123_SERVICE_PORT", "8081"),
            ("ABC_123_SERVICE_PORT_U_D_P", "8081"),
            ("ABC_123_SERVICE_PORT_T_C_P", "8081"),
            ("ABC_123_PORT", "udp://5.6.7.8:8081"),
            ("ABC_123_PORT_8081_UDP", "udp://5.6.7.8:8081"),
            ("ABC_123_PORT_8081_UDP_PROTO", "udp"),
            ("ABC_123_PORT_8081_UDP_PORT", "8081"),
            ("ABC_123_PORT_8081_UDP_ADDR", "5.6.7.8"),
            ("ABC_123_PORT_8081_TCP", "tcp://5.6.7.8:8081"),
            ("ABC_123_PORT_8081_TCP_PROTO", "tcp"),
            ("ABC_123_PORT_8081_TCP_PORT", "8081"),
            ("ABC_123_PORT_8081_TCP_ADDR", "5.6.7.8"),
            ("Q_U_U_X_SERVICE_HOST", "9.8.7.6"),
            ("Q_U_U_X_SERVICE_PORT", "8082"),
            ("Q_U_U_X_SERVICE_PORT_8083", "8083"),
            ("Q_U_U_X_PORT", "tcp://9.8.7.6:8082"),
            ("Q_U_U_X_PORT_8082_TCP", "tcp://9.8.7.6:8082"),
            ("Q_U_U_X_PORT_8082_TCP_PROTO", "tcp"),
            ("Q_U_U_X_PORT_8082_TCP_PORT", "8082"),
            ("Q_U_U_X_PORT_8082_TCP_ADDR", "9.8.7.6"),
            ("Q_U_U_X_PORT_8083_TCP", "tcp://9.8.7.6:8083"),
            ("Q_U_U_X_PORT_8083_TCP_PROTO", "tcp"),
            ("Q_U_U_X_PORT_8083_TCP_PORT", "8083"),
            ("Q_U_U_X_PORT_8083_TCP_ADDR", "9.8.7.6"),
            ("SUPER_IPV6_SERVICE_HOST", "2001:DB8::"),
            ("SUPER_IPV6_SERVICE_PORT", "8084"),
            ("SUPER_IPV6_SERVICE_PORT_U_D_P", "8084"),
            ("SUPER_IPV6_SERVICE_PORT_T_C_P", "8084"),
            ("SUPER_IPV6_PORT", "udp://[2001:DB8::]:8084"),
            ("SUPER_IPV6_PORT_8084_UDP", "udp://[2001:DB8::]:8084"),
            ("SUPER_IPV6_PORT_8084_UDP_PROTO", "udp"),
            ("SUPER_IPV6_PORT_8084_UDP_PORT", "8084"),
            ("SUPER_IPV6_PORT_8084_UDP_ADDR", "2001:DB8::"),
            ("SUPER_IPV6_PORT_8084_TCP", "tcp://[2001:DB8::]:8084"),
            ("SUPER_IPV6_PORT_8084_TCP_PROTO", "tcp"),
            ("SUPER_IPV6_PORT_8084_TCP_PORT", "8084"),
            ("SUPER_IPV6_PORT_8084_TCP_ADDR", "2001:DB8::"),
            ("SCTP_1_SERVICE_HOST", "1.2.3.4"),
            ("SCTP_1_SERVICE_PORT", "777"),
            ("SCTP_1_PORT", "sctp://1.2.3.4:777"),
            ("SCTP_1_PORT_777_SCTP", "sctp://1.2.3.4:777"),
            ("SCTP_1_PORT_777_SCTP_PROTO", "sctp"),
            ("SCTP_1_PORT_777_SCTP_PORT", "777"),
            ("SCTP_1_PORT_777_SCTP_ADDR", "1.2.3.4"),
        ];
        let got: Vec<(&str, &str)> = vars
            .iter()
            .map(|v| (v.name.as_str(), v.value.as_str()))
            .collect();
        assert_eq!(got, expected);
    }
}
