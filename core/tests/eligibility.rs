//! Which endpoints a Service address reaches from this node, rule by rule, as
//! kube-proxy decides (kubernetes/kubernetes `pkg/proxy/topology.go`:
//! `CategorizeEndpoints`, `topologyModeFromHints`, `availableForTopology`;
//! `pkg/proxy/endpointslicecache.go` for merging slices).
//!
//! Endpoints are written one per `;`, each as
//!
//! ```text
//! 10.0.0.1 !ready serving terminating node=n1 zone=z1 hz=z1|z2 hn=n1
//! ```
//!
//! the address, then `ready`/`serving`/`terminating` (set true) or
//! `!ready`/`!serving`/`!terminating` (set false); a condition not written is
//! left unset. `node=` is `nodeName`, `zone=` is `zone`, `hz=` and `hn=` are
//! `hints.forZones` and `hints.forNodes`.
//!
//! Unless a case says otherwise the mesh runs on node `n1` in zone `z1` with
//! node IPs 192.168.0.1 and fd00:ffff::1; Service `default/web` has cluster IP
//! 10.96.0.10 and one port `http` 80/TCP -> 8080 (node port 30080 and
//! load-balancer IP 203.0.113.10 when its type has them), and its slices serve
//! port `http` 8080/TCP. Expected endpoints are listed as IPs on port 8080, in
//! the order the snapshot keeps them: IPv4 before IPv6, by address.

use std::net::{IpAddr, SocketAddr};

use pobox::{ApplyReport, Client, Destination, Endpoint, Error, Kind, Mesh, MeshConfig, PickError};
use serde_json::{json, Value};

// === builders ===

/// Where the mesh runs: node name and zone, either possibly unconfigured.
#[derive(Clone, Copy)]
struct At(Option<&'static str>, Option<&'static str>);

const HERE: At = At(Some("n1"), Some("z1"));
const CLUSTER_IP: &str = "10.96.0.10:80";
const NODE_PORT: &str = "192.168.0.1:30080";
const LB_IP: &str = "203.0.113.10:80";

/// A table row: (case, endpoints, eligible IPs).
type Row = (&'static str, &'static str, &'static str);

fn mesh_at(At(node, zone): At) -> Mesh {
    let mut config = MeshConfig::new()
        .node_ip("192.168.0.1".parse().unwrap())
        .node_ip("fd00:ffff::1".parse().unwrap());
    if let Some(node) = node {
        config = config.node(node);
    }
    if let Some(zone) = zone {
        config = config.zone(zone);
    }
    Mesh::new(config).unwrap()
}

/// A Service in `default` (see the module documentation); the fields of
/// `spec`, a JSON object, are added to or replace the defaults.
fn service(name: &str, spec: &str) -> Value {
    let extra: Value = serde_json::from_str(spec).expect("spec is JSON");
    let external = matches!(extra["type"].as_str(), Some("NodePort" | "LoadBalancer"));
    let mut port = json!({"name": "http", "port": 80, "targetPort": 8080});
    if external {
        port["nodePort"] = json!(30080);
    }
    let mut full = json!({"clusterIP": "10.96.0.10", "ports": [port]});
    for (k, v) in extra.as_object().expect("spec is an object") {
        full[k.as_str()] = v.clone();
    }
    let mut svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": full,
    });
    if external {
        // Only type LoadBalancer routes its ingress IPs.
        svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}});
    }
    svc
}

/// One endpoint in the notation of the module documentation.
fn endpoint(spec: &str) -> Value {
    let mut words = spec.split_whitespace();
    let mut ep = json!({"addresses": [words.next().expect("an address")]});
    let names = |list: &str| -> Value { list.split('|').map(|n| json!({"name": n})).collect() };
    for word in words {
        match word.split_once('=') {
            Some(("node", n)) => ep["nodeName"] = json!(n),
            Some(("zone", z)) => ep["zone"] = json!(z),
            Some(("hz", list)) => ep["hints"]["forZones"] = names(list),
            Some(("hn", list)) => ep["hints"]["forNodes"] = names(list),
            Some(_) => panic!("unknown field in {spec:?}"),
            None => {
                let (cond, value) = word.strip_prefix('!').map_or((word, true), |c| (c, false));
                assert!(
                    matches!(cond, "ready" | "serving" | "terminating"),
                    "unknown condition {word:?} in {spec:?}"
                );
                ep["conditions"][cond] = json!(value);
            }
        }
    }
    ep
}

/// An EndpointSlice labelled for `service` (no label when `None`), with
/// `ports` (JSON) and `eps` (`;`-separated); its address type is that of its
/// first endpoint.
fn slice(name: &str, service: Option<&str>, ports: &str, eps: &str) -> Value {
    let eps: Vec<Value> = eps
        .split(';')
        .filter(|e| !e.trim().is_empty())
        .map(endpoint)
        .collect();
    let v6 = eps
        .first()
        .is_some_and(|e| e["addresses"][0].as_str().unwrap().contains(':'));
    let mut labels = json!({});
    if let Some(s) = service {
        labels["kubernetes.io/service-name"] = json!(s);
    }
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "addressType": if v6 { "IPv6" } else { "IPv4" },
        "ports": serde_json::from_str::<Value>(ports).expect("ports are JSON"),
        "endpoints": eps,
    })
}

const HTTP_8080: &str = r#"[{"name": "http", "port": 8080, "protocol": "TCP"}]"#;

/// A slice of `web` serving port `http` 8080/TCP.
fn web_slice(name: &str, eps: &str) -> Value {
    slice(name, Some("web"), HTTP_8080, eps)
}

fn try_apply(mesh: &Mesh, objects: Vec<Value>) -> Result<ApplyReport, Error> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    mesh.apply(list.to_string().as_bytes())
}

fn apply(mesh: &Mesh, objects: Vec<Value>) -> ApplyReport {
    try_apply(mesh, objects).unwrap_or_else(|e| panic!("apply: {e}"))
}

/// The eligible endpoints for `dest`, as space-separated `ip:port`.
fn eligible(mesh: &Mesh, dest: &str) -> String {
    let dest: Destination = dest.parse().unwrap();
    let snapshot = mesh.snapshot();
    let resolved = snapshot
        .resolve(&dest, &Client::new())
        .unwrap_or_else(|e| panic!("{dest}: {e}"));
    let addrs: Vec<String> = resolved.eligible().map(|e| e.addr().to_string()).collect();
    addrs.join(" ")
}

/// One pick for `dest`, as `ip:port`.
fn pick(mesh: &Mesh, dest: &str) -> Result<String, PickError> {
    let dest: Destination = dest.parse().unwrap();
    mesh.pick(&dest, &Client::new()).map(|p| p.addr.to_string())
}

/// Every endpoint known to each port of `web`, eligible or not.
fn known(mesh: &Mesh) -> Vec<Vec<Endpoint>> {
    let snapshot = mesh.snapshot();
    let web = snapshot.service("default", "web").expect("web exists");
    web.ports().iter().map(|p| p.endpoints().to_vec()).collect()
}

/// Space-separated IPs as the endpoints they are on port 8080.
fn at_8080(ips: &str) -> String {
    let addrs: Vec<String> = ips
        .split_whitespace()
        .map(|ip| SocketAddr::new(ip.parse::<IpAddr>().unwrap(), 8080).to_string())
        .collect();
    addrs.join(" ")
}

/// A mesh at `HERE` holding `objects`.
fn mesh_with(objects: Vec<Value>) -> Mesh {
    let mesh = mesh_at(HERE);
    apply(&mesh, objects);
    mesh
}

/// A mesh at `at` holding Service `web` with `spec` and one slice of `eps`.
fn web_mesh(at: At, spec: &str, eps: &str) -> Mesh {
    let mesh = mesh_at(at);
    apply(&mesh, vec![service("web", spec), web_slice("web-1", eps)]);
    mesh
}

/// Checks each row's eligible endpoints for `dest` of `web_mesh(at, spec, eps)`.
fn check_table(at: At, spec: &str, dest: &str, table: &[Row]) {
    for (case, eps, want) in table {
        let got = eligible(&web_mesh(at, spec, eps), dest);
        assert_eq!(got, at_8080(want), "case: {case} (spec {spec}, to {dest})");
    }
}

// === 1. Cluster policy: the ready ladder (conditions unset: rule 6) ===

#[rustfmt::skip]
const CLUSTER_LADDER: &[Row] = &[
    ("conditions unset: every endpoint is ready",
        "10.0.0.1; 10.0.0.2", "10.0.0.1 10.0.0.2"),
    ("ready ones only, when any is ready",
        "10.0.0.1; 10.0.0.2 !ready; 10.0.0.3 !ready serving terminating", "10.0.0.1"),
    ("ready is read as given, even when terminating",
        "10.0.0.1 ready terminating; 10.0.0.2 !ready serving terminating", "10.0.0.1"),
    ("none ready: the serving && terminating ones (serving unset reads as true)",
        "10.0.0.1 !ready !serving terminating; 10.0.0.2 !ready serving terminating;
         10.0.0.3 !ready serving !terminating; 10.0.0.4 !ready; 10.0.0.5 !ready terminating",
        "10.0.0.2 10.0.0.5"),
    ("none ready, none serving-terminating: nothing",
        "10.0.0.1 !ready; 10.0.0.2 !ready !serving terminating", ""),
    ("the terminating fallback ignores topology hints",
        "10.0.0.1 !ready terminating hz=z2; 10.0.0.2 !ready terminating hz=z1 hn=n1",
        "10.0.0.1 10.0.0.2"),
    ("no endpoints at all", "", ""),
];

#[test]
fn cluster_policy_uses_ready_endpoints_else_serving_terminating_ones() {
    check_table(HERE, "{}", CLUSTER_IP, CLUSTER_LADDER);
}

// === 2. Topology hints ===

#[rustfmt::skip]
const HINTS: &[Row] = &[
    ("every ready endpoint zone-hinted, some for z1: those for z1",
        "10.0.0.1 hz=z1; 10.0.0.2 hz=z2; 10.0.0.3 hz=z2|z1", "10.0.0.1 10.0.0.3"),
    ("one ready endpoint without hints: all hints ignored",
        "10.0.0.1 hz=z1; 10.0.0.2 hz=z2; 10.0.0.3", "10.0.0.1 10.0.0.2 10.0.0.3"),
    ("every ready endpoint hinted, none for z1: hints ignored",
        "10.0.0.1 hz=z2; 10.0.0.2 hz=z3", "10.0.0.1 10.0.0.2"),
    ("a not-ready endpoint without hints does not disable hints",
        "10.0.0.1 hz=z1; 10.0.0.2 hz=z2; 10.0.0.3 !ready serving terminating", "10.0.0.1"),
    ("a not-ready endpoint hinted for z1 does not enable hints",
        "10.0.0.1 hz=z2; 10.0.0.2 hz=z3; 10.0.0.3 !ready hz=z1", "10.0.0.1 10.0.0.2"),
    ("node hints win over zone hints",
        "10.0.0.1 hz=z1 hn=n2; 10.0.0.2 hz=z1 hn=n1; 10.0.0.3 hz=z2 hn=n3", "10.0.0.2"),
    ("node hints alone",
        "10.0.0.1 hn=n1|n2; 10.0.0.2 hn=n2; 10.0.0.3 hn=n1", "10.0.0.1 10.0.0.3"),
    ("every ready endpoint node-hinted, none for n1: zone hints",
        "10.0.0.1 hz=z1 hn=n2; 10.0.0.2 hz=z2 hn=n3", "10.0.0.1"),
    ("one ready endpoint without node hints: zone hints",
        "10.0.0.1 hz=z2 hn=n1; 10.0.0.2 hz=z1; 10.0.0.3 hz=z2 hn=n2", "10.0.0.2"),
    ("hints are matched, not the endpoint's own zone or node",
        "10.0.0.1 zone=z1 node=n1 hz=z2; 10.0.0.2 zone=z2 node=n2 hz=z1", "10.0.0.2"),
];

#[test]
fn topology_hints_narrow_ready_endpoints_only_when_every_ready_one_has_them() {
    check_table(HERE, "{}", CLUSTER_IP, HINTS);
}

#[rustfmt::skip]
const HINTS_BY_LOCALITY: &[(At, Row)] = &[
    (At(Some("n1"), None), ("no zone configured: zone hints ignored",
        "10.0.0.1 hz=z1; 10.0.0.2 hz=z2", "10.0.0.1 10.0.0.2")),
    (At(Some("n1"), None), ("no zone configured: node hints still apply",
        "10.0.0.1 hz=z2 hn=n1; 10.0.0.2 hz=z1 hn=n2", "10.0.0.1")),
    (At(None, Some("z1")), ("no node configured: node hints ignored, zone hints apply",
        "10.0.0.1 hz=z2 hn=n1; 10.0.0.2 hz=z1 hn=n2", "10.0.0.2")),
    (At(None, None), ("neither configured: every ready endpoint",
        "10.0.0.1 hz=z2 hn=n1; 10.0.0.2 hz=z1 hn=n2", "10.0.0.1 10.0.0.2")),
];

#[test]
fn topology_hints_need_the_node_to_know_its_zone_and_name() {
    for (at, row) in HINTS_BY_LOCALITY {
        check_table(*at, "{}", CLUSTER_IP, &[*row]);
    }
}

// === 3. internalTrafficPolicy: Local ===

#[rustfmt::skip]
const INTERNAL_LOCAL: &[Row] = &[
    ("the ready endpoints on n1",
        "10.0.0.1 node=n1; 10.0.0.2 node=n2; 10.0.0.3 node=n1 !ready; 10.0.0.4 node=n1",
        "10.0.0.1 10.0.0.4"),
    ("no ready one on n1: the serving-terminating ones on n1",
        "10.0.0.1 node=n2; 10.0.0.2 node=n1 !ready serving terminating;
         10.0.0.3 node=n1 !ready !serving terminating; 10.0.0.4 node=n2 !ready terminating",
        "10.0.0.2"),
    ("only remote endpoints: nothing", "10.0.0.1 node=n2; 10.0.0.2 node=n3", ""),
    ("an endpoint without nodeName is not local", "10.0.0.1", ""),
    ("topology hints do not apply",
        "10.0.0.1 node=n1 hz=z2 hn=n2; 10.0.0.2 node=n2 hz=z1 hn=n1", "10.0.0.1"),
];

#[test]
fn internal_traffic_policy_local_keeps_endpoints_on_this_node() {
    let local = r#"{"internalTrafficPolicy": "Local"}"#;
    check_table(HERE, local, CLUSTER_IP, INTERNAL_LOCAL);
    let no_node = (
        "a mesh with no node configured has no local endpoint",
        "10.0.0.1 node=n1",
        "",
    );
    check_table(At(None, Some("z1")), local, CLUSTER_IP, &[no_node]);
}

#[test]
fn no_eligible_endpoint_makes_pick_fail() {
    let spec = r#"{"internalTrafficPolicy": "Local"}"#;
    let mesh = web_mesh(HERE, spec, "10.0.0.1 node=n2");
    for dest in [CLUSTER_IP, "web.default:http"] {
        let got = pick(&mesh, dest);
        assert!(
            matches!(got, Err(PickError::NoEndpoints { .. })),
            "{dest}: {got:?}"
        );
    }
}

// === 4. externalTrafficPolicy: Local ===

const NP_ETP_LOCAL: &str = r#"{"type": "NodePort", "externalTrafficPolicy": "Local"}"#;
const LB_ETP_LOCAL: &str = r#"{"type": "LoadBalancer", "externalTrafficPolicy": "Local"}"#;
const LB_ETP_CLUSTER: &str = r#"{"type": "LoadBalancer", "externalTrafficPolicy": "Cluster"}"#;
const NP_ITP_LOCAL: &str = r#"{"type": "NodePort", "internalTrafficPolicy": "Local"}"#;
const EIP_ETP_LOCAL: &str =
    r#"{"externalIPs": ["198.51.100.7"], "externalTrafficPolicy": "Local"}"#;
const EXTERNAL_IP: &str = "198.51.100.7:80";

/// (Service spec, destination, eligible IPs) with endpoints 10.0.0.1 on n1
/// and 10.0.0.2 on n2.
#[rustfmt::skip]
const EXTERNAL: &[(&str, &str, &str)] = &[
    (NP_ETP_LOCAL,   NODE_PORT,          "10.0.0.1"),
    (NP_ETP_LOCAL,   CLUSTER_IP,         "10.0.0.1 10.0.0.2"),
    (NP_ETP_LOCAL,   "web.default:http", "10.0.0.1 10.0.0.2"),
    (LB_ETP_LOCAL,   LB_IP,              "10.0.0.1"),
    (LB_ETP_LOCAL,   NODE_PORT,          "10.0.0.1"),
    (LB_ETP_LOCAL,   CLUSTER_IP,         "10.0.0.1 10.0.0.2"),
    (EIP_ETP_LOCAL,  EXTERNAL_IP,        "10.0.0.1"),
    (EIP_ETP_LOCAL,  CLUSTER_IP,         "10.0.0.1 10.0.0.2"),
    (NP_ITP_LOCAL,   NODE_PORT,          "10.0.0.1 10.0.0.2"),
    (NP_ITP_LOCAL,   CLUSTER_IP,         "10.0.0.1"),
    (LB_ETP_CLUSTER, LB_IP,              "10.0.0.1 10.0.0.2"),
];

#[test]
fn external_traffic_policy_applies_to_external_addresses_only() {
    for (spec, dest, want) in EXTERNAL {
        let row = ("", "10.0.0.1 node=n1; 10.0.0.2 node=n2", *want);
        check_table(HERE, spec, dest, &[row]);
    }
}

#[rustfmt::skip]
const EXTERNAL_LOCAL: &[Row] = &[
    ("no ready local endpoint: the local serving-terminating ones",
        "10.0.0.1 node=n2; 10.0.0.2 node=n1 !ready terminating", "10.0.0.2"),
    ("no local endpoint at all: nothing", "10.0.0.1 node=n2", ""),
    ("topology hints do not apply", "10.0.0.1 node=n1 hz=z2; 10.0.0.2 node=n2 hz=z1", "10.0.0.1"),
];

#[test]
fn external_traffic_policy_local_falls_back_to_local_terminating_and_ignores_hints() {
    check_table(HERE, NP_ETP_LOCAL, NODE_PORT, EXTERNAL_LOCAL);
}

#[test]
fn external_traffic_policy_needs_an_externally_accessible_service() {
    let mesh = mesh_at(HERE);
    for policy in ["Local", "Cluster"] {
        let spec = format!(r#"{{"externalTrafficPolicy": "{policy}"}}"#);
        let err = try_apply(&mesh, vec![service("web", &spec)]).unwrap_err();
        assert!(
            matches!(&err, Error::Invalid { field, .. } if field == "spec.externalTrafficPolicy"),
            "ClusterIP with eTP={policy}: {err}"
        );
    }
    assert_eq!(mesh.version(), 0, "a refused apply changes nothing");
    apply(&mesh, vec![service("web", EIP_ETP_LOCAL)]);
}

// === 5. publishNotReadyAddresses ===

#[rustfmt::skip]
const PUBLISH_NOT_READY: &[Row] = &[
    ("not-ready and terminating endpoints are ready",
        "10.0.0.1 !ready; 10.0.0.2 !ready !serving terminating; 10.0.0.3",
        "10.0.0.1 10.0.0.2 10.0.0.3"),
    ("a not-ready endpoint without hints now disables hints",
        "10.0.0.1 hz=z1; 10.0.0.2 !ready", "10.0.0.1 10.0.0.2"),
    ("a not-ready endpoint hinted for z1 now enables hints",
        "10.0.0.1 hz=z2; 10.0.0.2 !ready hz=z1", "10.0.0.2"),
];

#[test]
fn publish_not_ready_addresses_counts_every_endpoint_as_ready() {
    let publish = r#"{"publishNotReadyAddresses": true}"#;
    check_table(HERE, publish, CLUSTER_IP, PUBLISH_NOT_READY);
    let local = r#"{"publishNotReadyAddresses": true, "internalTrafficPolicy": "Local"}"#;
    let row = (
        "Local: a not-ready local endpoint beats a ready remote one",
        "10.0.0.1 node=n1 !ready; 10.0.0.2 node=n2",
        "10.0.0.1",
    );
    check_table(HERE, local, CLUSTER_IP, &[row]);

    let mesh = web_mesh(HERE, publish, "10.0.0.1 !ready");
    assert!(known(&mesh)[0][0].is_ready(), "reported as ready");
}

// === 6. Unset conditions ===

/// (endpoint, (is_ready, is_serving, is_terminating)), in address order.
#[rustfmt::skip]
const CONDITIONS: &[(&str, (bool, bool, bool))] = &[
    ("10.0.0.1",                              (true, true, false)),
    ("10.0.0.2 !ready",                       (false, true, false)),
    ("10.0.0.3 !serving",                     (true, false, false)),
    ("10.0.0.4 terminating",                  (true, true, true)),
    ("10.0.0.5 !ready !serving terminating",  (false, false, true)),
    ("10.0.0.6 ready serving !terminating",   (true, true, false)),
];

#[test]
fn unset_conditions_read_as_ready_serving_not_terminating() {
    let eps: Vec<&str> = CONDITIONS.iter().map(|(e, _)| *e).collect();
    let endpoints = known(&web_mesh(HERE, "{}", &eps.join(";"))).remove(0);
    assert_eq!(endpoints.len(), CONDITIONS.len());
    for ((spec, want), ep) in CONDITIONS.iter().zip(&endpoints) {
        let got = (ep.is_ready(), ep.is_serving(), ep.is_terminating());
        let ip = spec.split(' ').next().unwrap();
        assert_eq!((ep.ip().to_string().as_str(), got), (ip, *want), "{spec}");
    }
}

// === 7. Merging slices ===

#[test]
fn slices_merge_per_service_port_by_name_and_protocol() {
    let spec = r#"{"ports": [
        {"name": "http", "port": 80, "targetPort": 8080},
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}]}"#;
    let web = Some("web");
    #[rustfmt::skip]
    let mesh = mesh_with(vec![
        service("web", spec),
        slice("s1", web, r#"[{"name": "http", "port": 8080}]"#, "10.0.0.1"),
        slice("s2", web, r#"[{"name": "http", "port": 9090},
                             {"name": "dns", "port": 5353, "protocol": "UDP"}]"#, "10.0.0.2"),
        // Same name, other protocol; other name; no port number; other protocol.
        slice("s3", web, r#"[{"name": "http", "port": 8080, "protocol": "UDP"}]"#, "10.0.0.3"),
        slice("s4", web, r#"[{"name": "web", "port": 8080}]"#, "10.0.0.4"),
        slice("s5", web, r#"[{"name": "http", "protocol": "TCP"}]"#, "10.0.0.5"),
        slice("s6", web, r#"[{"name": "dns", "port": 53, "protocol": "TCP"}]"#, "10.0.0.6"),
    ]);
    // The endpoint port is the slice's, not the Service's targetPort.
    assert_eq!(
        eligible(&mesh, "web.default:http"),
        "10.0.0.1:8080 10.0.0.2:9090"
    );
    assert_eq!(eligible(&mesh, "10.96.0.10:53/UDP"), "10.0.0.2:5353");
    // Nothing else is even known to either port.
    let counts: Vec<usize> = known(&mesh).iter().map(Vec::len).collect();
    assert_eq!(counts, [2, 1]);
}

#[test]
fn an_unnamed_service_port_matches_only_unnamed_slice_ports() {
    let web = Some("web");
    #[rustfmt::skip]
    let mesh = mesh_with(vec![
        service("web", r#"{"ports": [{"port": 80, "targetPort": 8080}]}"#),
        slice("s1", web, r#"[{"port": 8080}]"#, "10.0.0.1"),
        slice("s2", web, r#"[{"name": "", "port": 8081}]"#, "10.0.0.2"),
        slice("s3", web, r#"[{"name": "http", "port": 8082}]"#, "10.0.0.3"),
    ]);
    assert_eq!(eligible(&mesh, CLUSTER_IP), "10.0.0.1:8080 10.0.0.2:8081");
}

#[test]
fn a_duplicate_endpoint_keeps_its_non_terminating_copy_whatever_the_slice_order() {
    let terminating = "10.0.0.1 !ready serving terminating";
    for (in_a, in_b) in [(terminating, "10.0.0.1"), ("10.0.0.1", terminating)] {
        let a = web_slice("a", &format!("{in_a}; 10.0.0.2 !ready"));
        let mesh = mesh_with(vec![service("web", "{}"), a, web_slice("b", in_b)]);
        let case = format!("slice a: {in_a:?}, slice b: {in_b:?}");
        let endpoints = known(&mesh).remove(0);
        assert_eq!(endpoints.len(), 2, "{case}");
        let ep = &endpoints[0];
        assert!(ep.is_ready() && !ep.is_terminating(), "{case}: {ep:?}");
        assert_eq!(eligible(&mesh, CLUSTER_IP), at_8080("10.0.0.1"), "{case}");
    }
    // The same IP on two port numbers is two endpoints.
    let port_8081 = r#"[{"name": "http", "port": 8081}]"#;
    let other_port = slice("b", Some("web"), port_8081, "10.0.0.1");
    let mesh = mesh_with(vec![
        service("web", "{}"),
        web_slice("a", "10.0.0.1"),
        other_port,
    ]);
    assert_eq!(eligible(&mesh, CLUSTER_IP), "10.0.0.1:8080 10.0.0.1:8081");
}

#[test]
fn a_slice_waits_for_its_service() {
    let mesh = mesh_at(HERE);
    apply(&mesh, vec![web_slice("web-1", "10.0.0.1")]);
    let got = pick(&mesh, CLUSTER_IP);
    assert!(matches!(got, Err(PickError::NoService { .. })), "{got:?}");
    apply(&mesh, vec![service("web", "{}")]);
    assert_eq!(eligible(&mesh, CLUSTER_IP), at_8080("10.0.0.1"));
    // Deleting and re-creating the Service keeps its slices.
    mesh.delete(Kind::Service, "default", "web").unwrap();
    apply(&mesh, vec![service("web", "{}")]);
    assert_eq!(eligible(&mesh, CLUSTER_IP), at_8080("10.0.0.1"));
}

#[test]
fn a_slice_without_the_service_name_label_serves_nothing_and_warns() {
    let mesh = mesh_at(HERE);
    let orphan = slice("orphan", None, HTTP_8080, "10.0.0.1");
    let report = apply(&mesh, vec![service("web", "{}"), orphan.clone()]);
    assert_eq!(eligible(&mesh, CLUSTER_IP), "");
    let warned = |w: &String| w.contains("default/orphan") && w.contains("service-name");
    assert!(report.warnings.iter().any(warned), "{:?}", report.warnings);
    // Labelling it later makes it serve; dropping the label again stops it.
    let labelled = slice("orphan", Some("web"), HTTP_8080, "10.0.0.1");
    apply(&mesh, vec![labelled]);
    assert_eq!(eligible(&mesh, CLUSTER_IP), at_8080("10.0.0.1"));
    apply(&mesh, vec![orphan]);
    assert_eq!(eligible(&mesh, CLUSTER_IP), "");
}

#[test]
fn deleting_a_slice_removes_its_endpoints() {
    let web_2 = web_slice("web-2", "10.0.0.2; 10.0.0.3");
    let mesh = mesh_with(vec![
        service("web", "{}"),
        web_slice("web-1", "10.0.0.1"),
        web_2,
    ]);
    assert_eq!(
        eligible(&mesh, CLUSTER_IP),
        at_8080("10.0.0.1 10.0.0.2 10.0.0.3")
    );
    let report = mesh.delete(Kind::EndpointSlice, "default", "web-2");
    assert!(report.unwrap().changed);
    assert_eq!(eligible(&mesh, CLUSTER_IP), at_8080("10.0.0.1"));
    let report = mesh.delete(Kind::EndpointSlice, "default", "web-1");
    assert!(report.unwrap().changed);
    assert_eq!(eligible(&mesh, CLUSTER_IP), "");
}

#[test]
fn relabelling_a_slice_moves_its_endpoints() {
    let api = service("api", r#"{"clusterIP": "10.96.0.11"}"#);
    let mesh = mesh_with(vec![service("web", "{}"), api, web_slice("s1", "10.0.0.1")]);
    assert_eq!(eligible(&mesh, "web.default:http"), at_8080("10.0.0.1"));
    assert_eq!(eligible(&mesh, "api.default:http"), "");
    apply(&mesh, vec![slice("s1", Some("api"), HTTP_8080, "10.0.0.1")]);
    assert_eq!(eligible(&mesh, "web.default:http"), "");
    assert_eq!(eligible(&mesh, "api.default:http"), at_8080("10.0.0.1"));
}

// === 8. Dual stack ===

const DUAL_STACK: &str = r#"{"clusterIPs": ["10.96.0.10", "fd00::10"],
    "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"}"#;

/// (case, IPv4 endpoints, IPv6 endpoints, eligible by 10.96.0.10, by fd00::10)
#[rustfmt::skip]
const PER_FAMILY: &[(&str, &str, &str, &str, &str)] = &[
    ("each VIP picks its own family",
        "10.0.0.1; 10.0.0.2", "fd00::1; fd00::2", "10.0.0.1 10.0.0.2", "fd00::1 fd00::2"),
    ("v4 ready, v6 only terminating: v6 falls back on its own",
        "10.0.0.1; 10.0.0.2 !ready terminating", "fd00::1 !ready terminating; fd00::2 !ready",
        "10.0.0.1", "fd00::1"),
    ("v6 ready, v4 only terminating",
        "10.0.0.1 !ready terminating", "fd00::1; fd00::2 !ready terminating",
        "10.0.0.1", "fd00::1"),
    ("hints complete for v4, incomplete for v6",
        "10.0.0.1 hz=z1; 10.0.0.2 hz=z2", "fd00::1 hz=z1; fd00::2",
        "10.0.0.1", "fd00::1 fd00::2"),
    ("no v6 endpoints", "10.0.0.1", "", "10.0.0.1", ""),
];

#[test]
fn dual_stack_runs_the_ladder_per_family() {
    for (case, v4, v6, want4, want6) in PER_FAMILY {
        let mut objects = vec![service("web", DUAL_STACK), web_slice("web-v4", v4)];
        if !v6.is_empty() {
            objects.push(web_slice("web-v6", v6));
        }
        let mesh = mesh_with(objects);
        let got = (
            eligible(&mesh, "10.96.0.10:80"),
            eligible(&mesh, "[fd00::10]:80"),
        );
        assert_eq!(got, (at_8080(want4), at_8080(want6)), "case: {case}");
    }
}

#[test]
fn by_name_uses_the_primary_family_and_single_stack_ignores_the_other() {
    let v6_first = r#"{"clusterIPs": ["fd00::10", "10.96.0.10"], "clusterIP": "fd00::10",
        "ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "RequireDualStack"}"#;
    let single = "{}";
    for (spec, want) in [
        (DUAL_STACK, "10.0.0.1"),
        (v6_first, "fd00::1"),
        (single, "10.0.0.1"),
    ] {
        let (v4, v6) = (
            web_slice("web-v4", "10.0.0.1"),
            web_slice("web-v6", "fd00::1"),
        );
        let mesh = mesh_with(vec![service("web", spec), v4, v6]);
        assert_eq!(eligible(&mesh, "web.default:http"), at_8080(want), "{spec}");
    }
}

/// kube-proxy runs one proxier per family, and a proxier ignores a Service
/// with no cluster IP of its family (`ServiceChangeTracker.serviceToServiceMap`
/// returns nil when `GetClusterIPByFamily` is empty): a single-stack IPv4
/// Service has no node port on the node's IPv6 address, and its IPv6 external
/// IPs are routed by nobody.
#[test]
fn a_single_stack_service_is_not_served_on_addresses_of_the_other_family() {
    let spec = r#"{"type": "NodePort", "externalIPs": ["2001:db8::7"]}"#;
    let (v4, v6) = (
        web_slice("web-v4", "10.0.0.1"),
        web_slice("web-v6", "fd00::1"),
    );
    let mesh = mesh_with(vec![service("web", spec), v4, v6]);
    assert_eq!(eligible(&mesh, NODE_PORT), at_8080("10.0.0.1"));
    // Today both resolve, to the IPv6 endpoint [fd00::1]:8080.
    let snapshot = mesh.snapshot();
    let served: Vec<(&str, Vec<String>)> = ["[fd00:ffff::1]:30080", "[2001:db8::7]:80"]
        .into_iter()
        .filter_map(|dest| {
            let r = snapshot
                .resolve(&dest.parse().unwrap(), &Client::new())
                .ok()?;
            Some((dest, r.eligible().map(|e| e.addr().to_string()).collect()))
        })
        .collect();
    assert!(served.is_empty(), "served on the other family: {served:?}");
}

// === 9. Round robin ===

#[test]
fn round_robin_cycles_through_the_eligible_set_in_address_order() {
    let eps = "10.0.0.100; 10.0.0.9; 10.0.0.50 !ready; 10.0.0.10";
    let mesh = web_mesh(HERE, "{}", eps);
    let order = at_8080("10.0.0.9 10.0.0.10 10.0.0.100");
    assert_eq!(eligible(&mesh, CLUSTER_IP), order, "numeric address order");
    let picks: Vec<String> = (0..7).map(|_| pick(&mesh, CLUSTER_IP).unwrap()).collect();
    let want: Vec<&str> = order.split(' ').cycle().take(7).collect();
    assert_eq!(picks, want);
    // A pick from a held snapshot continues the same sequence.
    let dest: Destination = CLUSTER_IP.parse().unwrap();
    let next = mesh.snapshot().pick(&dest, &Client::new()).unwrap().addr();
    assert_eq!(next.to_string(), want[1]);
}

#[test]
fn round_robin_starts_from_the_first_endpoint_of_every_new_service() {
    for mesh_number in 1..=2 {
        let mesh = web_mesh(HERE, "{}", "10.0.0.3; 10.0.0.2 !ready; 10.0.0.1");
        let first = pick(&mesh, "web.default:http");
        assert_eq!(first.unwrap(), "10.0.0.1:8080", "mesh {mesh_number}");
    }
}

/// Each address has its own eligible set, so each must cycle through its own:
/// alternating picks by cluster IP (both endpoints) and by node port (the
/// local one only, eTP=Local) must still reach both endpoints by cluster IP.
#[test]
fn round_robin_cycles_each_eligible_set_on_its_own() {
    let mesh = web_mesh(HERE, NP_ETP_LOCAL, "10.0.0.1 node=n1; 10.0.0.2 node=n2");
    let mut by_cluster_ip = Vec::new();
    for _ in 0..4 {
        by_cluster_ip.push(pick(&mesh, CLUSTER_IP).unwrap());
        assert_eq!(pick(&mesh, NODE_PORT).unwrap(), "10.0.0.1:8080");
    }
    // Today: ["10.0.0.1:8080"; 4], 10.0.0.2 never picked.
    let want = at_8080("10.0.0.1 10.0.0.2 10.0.0.1 10.0.0.2");
    assert_eq!(by_cluster_ip.join(" "), want);
}
