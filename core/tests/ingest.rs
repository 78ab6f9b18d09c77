//! Ingest: what `pobox::parse` and `Mesh::apply` make of real kubectl output,
//! what they skip, what they refuse (with the exact message), and how an apply
//! changes the mesh: all or nothing, idempotent, replace and delete.

use std::net::IpAddr;
use std::sync::Arc;

use pobox::{
    parse, Client, Destination, Error, Kind, Mesh, MeshConfig, SessionAffinity, Snapshot, Traffic,
    TrafficPolicy,
};
use serde_json::{json, Value};

// === fixtures ===

const GET_JSON: &[u8] = include_bytes!("fixtures/kubectl/get-svc-eps-all.json");
const GET_YAML: &[u8] = include_bytes!("fixtures/kubectl/get-svc-eps-all.yaml");
const CLUSTER: &[u8] = include_bytes!("fixtures/kubectl/cluster.json");
const CREATE_CLUSTERIP: &[u8] = include_bytes!("fixtures/kubectl/create-clusterip.json");
const CREATE_NODEPORT: &[u8] = include_bytes!("fixtures/kubectl/create-nodeport.yaml");
const CREATE_LB: &[u8] = include_bytes!("fixtures/kubectl/create-loadbalancer.json");
const CREATE_EXTERNALNAME: &[u8] = include_bytes!("fixtures/kubectl/create-externalname.json");
const CREATE_HEADLESS: &[u8] = include_bytes!("fixtures/kubectl/create-headless.json");
const CREATE_MULTI: &[u8] = include_bytes!("fixtures/kubectl/create-multi.yaml");

/// The cluster in `cluster.json`, as `get svc,endpointslices -A` shows it.
const GET_SERVICES: &[&str] = &[
    "default/kubernetes ClusterIP ip=10.96.0.1 | https 443/TCP->6443 eps=1",
    "default/web ClusterIP ip=10.96.0.10 | http 80/TCP->http eps=4 | metrics 9090/TCP->9090 eps=4",
    "kube-system/kube-dns ClusterIP ip=10.96.0.53 | dns 53/UDP->53 eps=2 | dns-tcp 53/TCP->53 eps=2 | metrics 9153/TCP->9153 eps=2",
    "shop/api NodePort ip=10.96.20.1 etp=Local affinity=10800s | http 80/TCP->8080 node=30080 eps=2",
    "shop/db ClusterIP headless | postgres 5432/TCP->5432 eps=2",
    "shop/dual ClusterIP ip=10.96.5.5,fd00:10:96::5 | http 80/TCP->8080 eps=2",
    "shop/ext ExternalName ext=example.com",
    "shop/lb LoadBalancer ip=10.96.20.2 lb=203.0.113.10 | http 80/TCP->8080 node=31234 eps=1 | https 443/TCP->8443 node=31443 eps=1",
];

/// `kubectl create service ... --dry-run=client`: no namespace, no cluster IP.
const MULTI_SERVICES: &[&str] = &[
    "default/ext ExternalName ext=example.com",
    "default/hl ClusterIP headless | 5432-5432 5432/TCP->5432 eps=0",
    "default/lb LoadBalancer | 80-8080 80/TCP->8080 eps=0",
    "default/np NodePort | 80-8080 80/TCP->8080 node=30080 eps=0",
    "default/web ClusterIP | 80-8080 80/TCP->8080 eps=0 | 443-8443 443/TCP->8443 eps=0",
];

const NODE_IP: &str = "192.168.1.10";

/// [`service`] with [`slice`].
const WEB: &str =
    "default/web ClusterIP ip=10.96.0.10 | http 80/TCP->8080 eps=2 | metrics 9090/TCP->9090 eps=2";

// === builders ===

fn mesh() -> Mesh {
    let node_ip: IpAddr = NODE_IP.parse().unwrap();
    let config = MeshConfig::new().node("node-a").zone("zone-a");
    Mesh::new(config.node_ip(node_ip)).unwrap()
}

fn loaded(input: &[u8]) -> Mesh {
    let mesh = mesh();
    let report = mesh.apply(input).unwrap();
    assert!(report.changed && report.warnings.is_empty(), "{report:?}");
    mesh
}

/// `default/web`: ClusterIP 10.96.0.10, ports `http` 80->8080 and `metrics` 9090.
fn service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "clusterIP": "10.96.0.10",
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080},
                {"name": "metrics", "port": 9090}
            ]
        }
    })
}

/// `default/web-1` for `web`: two ready IPv4 endpoints on `http` and `metrics`.
fn slice() -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": "web-1", "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web"}
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}, {"name": "metrics", "port": 9090}],
        "endpoints": [
            {"addresses": ["10.1.0.1"], "nodeName": "node-a", "zone": "zone-a"},
            {"addresses": ["10.1.0.2"], "nodeName": "node-b", "zone": "zone-b"}
        ]
    })
}

/// Any other object, as a `v1 List` might carry it.
fn other(api_version: &str, kind: &str, namespace: &str, name: &str) -> Value {
    json!({"apiVersion": api_version, "kind": kind,
           "metadata": {"name": name, "namespace": namespace}})
}

fn with(mut value: Value, edit: impl FnOnce(&mut Value)) -> Value {
    edit(&mut value);
    value
}

fn unset(value: &mut Value, key: &str) {
    value.as_object_mut().unwrap().remove(key);
}

fn named(name: &str, value: Value) -> Value {
    with(value, |v| v["metadata"]["name"] = json!(name))
}

fn list(items: impl IntoIterator<Item = Value>) -> Vec<u8> {
    let items: Vec<Value> = items.into_iter().collect();
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": items})).unwrap()
}

fn bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

fn parse_err(input: &[u8]) -> String {
    parse(input).unwrap_err().to_string()
}

// === views ===

fn join<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// One line per Service: identity, type, addresses, policies, then per port
/// `name port/PROTO->targetPort [node=nodePort] eps=known endpoints`.
fn render(snapshot: &Snapshot) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in snapshot.services() {
        let s = entry.service();
        let mut line = format!("{} {}", s.key(), s.service_type().as_str());
        if s.is_headless() {
            line += " headless";
        }
        if !s.cluster_ips().is_empty() {
            line += &format!(" ip={}", join(s.cluster_ips()));
        }
        if !s.load_balancer_ips().is_empty() {
            line += &format!(" lb={}", join(s.load_balancer_ips()));
        }
        if let Some(name) = s.external_name() {
            line += &format!(" ext={name}");
        }
        if s.external_traffic_policy() == TrafficPolicy::Local {
            line += " etp=Local";
        }
        if let SessionAffinity::ClientIp { timeout_seconds } = s.session_affinity() {
            line += &format!(" affinity={timeout_seconds}s");
        }
        for port in entry.ports() {
            let p = port.spec();
            let (name, number, target) = (p.name(), p.port(), p.target_port());
            line += &format!(" | {name} {number}/{}->{target}", p.protocol());
            if let Some(node_port) = p.node_port() {
                line += &format!(" node={node_port}");
            }
            line += &format!(" eps={}", port.endpoints().len());
        }
        lines.push(line);
    }
    lines
}

/// Every port's endpoints and what internal and external traffic may pick.
fn endpoints(snapshot: &Snapshot) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in snapshot.services() {
        for port in entry.ports() {
            let eligible = |traffic| {
                let mut addrs: Vec<_> = port.eligible(traffic, entry.family()).collect();
                addrs.sort_by_key(|e| e.addr());
                join(addrs.iter().map(|e| e.addr()))
            };
            lines.push(format!(
                "{} {}: all={} internal={} external={}",
                entry.service().key(),
                port.label(),
                join(port.endpoints().iter().map(|e| e.addr())),
                eligible(Traffic::Internal),
                eligible(Traffic::External),
            ));
        }
    }
    lines
}

/// The Service port a destination resolves to, as `namespace/name label`.
fn resolve(mesh: &Mesh, destination: &str) -> String {
    let dest: Destination = destination.parse().unwrap();
    match mesh.snapshot().resolve(&dest, &Client::new()) {
        Ok(r) => format!("{} {}", r.service.service().key(), r.port.label()),
        Err(e) => e.to_string(),
    }
}

// === 1. kubectl fixtures ===

#[test]
fn kubectl_get_loads_every_service_with_its_endpoints() {
    let mesh = loaded(GET_JSON);
    assert_eq!(render(&mesh.snapshot()), GET_SERVICES);
    assert_eq!(mesh.version(), 1);
    // 8 Services and 9 EndpointSlices, nothing skipped.
    assert_eq!(parse(GET_JSON).unwrap().objects.len(), 17);
}

#[test]
fn kubectl_get_frontends_resolve_to_their_service_ports() {
    let mesh = loaded(GET_JSON);
    let cases = [
        ("10.96.0.1:443", "default/kubernetes https/TCP"),
        ("10.96.0.10:80", "default/web http/TCP"),
        ("10.96.0.53:53", "kube-system/kube-dns dns-tcp/TCP"),
        ("10.96.0.53:53/UDP", "kube-system/kube-dns dns/UDP"),
        ("192.168.1.10:30080", "shop/api http/TCP"),
        ("192.168.1.10:31443", "shop/lb https/TCP"),
        ("203.0.113.10:80", "shop/lb http/TCP"),
        ("[fd00:10:96::5]:80", "shop/dual http/TCP"),
        ("db.shop:postgres", "shop/db postgres/TCP"),
        (
            "ext.shop:80",
            "Service shop/ext is ExternalName (an alias for example.com): it has no endpoints",
        ),
    ];
    for (destination, expected) in cases {
        assert_eq!(resolve(&mesh, destination), expected, "{destination}");
    }
}

/// examples/k8s/demo.json, which the JavaScript package's examples and tests
/// read (it reads JSON only), is examples/k8s/demo.yaml as a JSON List.
#[test]
fn the_json_demo_is_the_yaml_demo() {
    let yaml = parse(include_bytes!("../../examples/k8s/demo.yaml")).unwrap();
    let json = parse(include_bytes!("../../examples/k8s/demo.json")).unwrap();
    assert_eq!(json, yaml);
    assert_eq!(json.objects.len(), 13);
}

#[test]
fn kubectl_get_json_and_yaml_are_the_same_cluster() {
    assert_eq!(parse(GET_JSON).unwrap(), parse(GET_YAML).unwrap());
    let json = loaded(GET_JSON).snapshot();
    let yaml = loaded(GET_YAML).snapshot();
    assert_eq!(render(&yaml), render(&json));
    assert_eq!(endpoints(&yaml), endpoints(&json));
}

#[test]
fn cluster_source_objects_load_like_their_kubectl_output() {
    // cluster.json keeps managedFields and interleaves Services and slices.
    let source = loaded(CLUSTER).snapshot();
    let output = loaded(GET_JSON).snapshot();
    assert_eq!(render(&source), GET_SERVICES);
    assert_eq!(endpoints(&source), endpoints(&output));
}

#[test]
fn kubectl_create_dry_run_outputs_load() {
    let cases: &[(&[u8], &[&str])] = &[
        (CREATE_CLUSTERIP, &[MULTI_SERVICES[4]]),
        (CREATE_NODEPORT, &[MULTI_SERVICES[3]]),
        (
            CREATE_LB,
            &["default/lb LoadBalancer | 80-8080 80/TCP->8080 eps=0 | 443-8443 443/TCP->8443 eps=0"],
        ),
        (CREATE_EXTERNALNAME, &[MULTI_SERVICES[0]]),
        (CREATE_HEADLESS, &[MULTI_SERVICES[1]]),
        (CREATE_MULTI, MULTI_SERVICES),
    ];
    for (i, (input, expected)) in cases.iter().enumerate() {
        assert_eq!(render(&loaded(input).snapshot()), *expected, "case {i}");
    }
    assert_eq!(parse(CREATE_MULTI).unwrap().objects.len(), 5);
}

// === 2. skipped objects ===

#[test]
fn other_kinds_and_fqdn_slices_are_skipped_with_a_warning() {
    let fqdn = with(named("web-fqdn", slice()), |s| {
        s["addressType"] = json!("FQDN");
        s["endpoints"] = json!([{"addresses": ["web.example.com"]}]);
    });
    let orphan = with(named("orphan", slice()), |s| {
        unset(&mut s["metadata"], "labels")
    });
    let input = list([
        other("v1", "Pod", "default", "web-0"),
        other("v1", "ConfigMap", "kube-system", "cfg"),
        service(),
        other("v1", "Endpoints", "default", "web"),
        fqdn,
        slice(),
        orphan,
    ]);
    let parsed = parse(&input).unwrap();
    assert_eq!(parsed.objects.len(), 3);
    let report = mesh().apply(&input).unwrap();
    assert_eq!(
        report.warnings,
        [
            "Pod default/web-0: kind Pod is not used by pobox; skipped",
            "ConfigMap kube-system/cfg: kind ConfigMap is not used by pobox; skipped",
            "Endpoints default/web: kind Endpoints is not used by pobox; skipped",
            "EndpointSlice default/web-fqdn: addressType FQDN is not routable by kube-proxy; skipped",
            "EndpointSlice default/orphan: no kubernetes.io/service-name label; it serves no Service",
        ]
    );
    assert_eq!(parsed.warnings, report.warnings[..4]);
}

#[test]
fn typed_lists_fill_in_kind_and_api_version_of_their_items() {
    let strip = |mut v: Value| {
        unset(&mut v, "kind");
        unset(&mut v, "apiVersion");
        v
    };
    let services = json!({"apiVersion": "v1", "kind": "ServiceList", "items": [strip(service())]});
    let slices = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                        "items": [strip(slice())]});
    let pods =
        json!({"apiVersion": "v1", "kind": "PodList", "items": [{"metadata": {"name": "p"}}]});
    let input = bytes(&json!([services, slices, pods]));
    let mesh = mesh();
    let report = mesh.apply(&input).unwrap();
    assert_eq!(
        report.warnings,
        ["Pod default/p: kind Pod is not used by pobox; skipped"]
    );
    assert_eq!(render(&mesh.snapshot()), [WEB]);
}

// === 3. rejections ===

type Edit = fn(&mut Value);

#[test]
fn invalid_services_are_rejected_naming_object_and_field() {
    let cases: &[(&str, Edit)] = &[
        // ports
        ("Service default/web: spec.ports[1].port: 70000 is out of range 1-65535",
         |s| s["spec"]["ports"][1]["port"] = json!(70000)),
        ("Service default/web: spec.ports[0].port: 0 is out of range 1-65535",
         |s| s["spec"]["ports"][0]["port"] = json!(0)),
        ("Service default/web: spec.ports[0].port: is required",
         |s| unset(&mut s["spec"]["ports"][0], "port")),
        ("Service default/web: spec.ports: is required",
         |s| unset(&mut s["spec"], "ports")),
        (r#"Service default/web: spec.ports[1].protocol: unsupported value "HTTP": supported values are "SCTP", "TCP", "UDP""#,
         |s| s["spec"]["ports"][1]["protocol"] = json!("HTTP")),
        (r#"Service default/web: spec.ports[1].name: duplicate value "http""#,
         |s| s["spec"]["ports"][1]["name"] = json!("http")),
        ("Service default/web: spec.ports[1]: duplicate port 80/TCP",
         |s| s["spec"]["ports"][1]["port"] = json!(80)),
        ("Service default/web: spec.ports[0].name: is required when a Service has more than one port",
         |s| unset(&mut s["spec"]["ports"][0], "name")),
        (r#"Service default/web: spec.ports[0].name: "Http" is not a valid port name: must be a DNS-1123 label"#,
         |s| s["spec"]["ports"][0]["name"] = json!("Http")),
        ("Service default/web: spec.ports[0].targetPort: 65536 is out of range 1-65535",
         |s| s["spec"]["ports"][0]["targetPort"] = json!(65536)),
        ("Service default/web: spec.ports[0].targetPort: -1 is out of range 1-65535",
         |s| s["spec"]["ports"][0]["targetPort"] = json!(-1)),
        (r#"Service default/web: spec.ports[0].targetPort: "web_http" is not a valid port name: at most 15 lowercase letters, digits and '-', with at least one letter"#,
         |s| s["spec"]["ports"][0]["targetPort"] = json!("web_http")),
        (r#"Service default/web: spec.ports[0].targetPort: "8080" is not a valid port name: at most 15 lowercase letters, digits and '-', with at least one letter"#,
         |s| s["spec"]["ports"][0]["targetPort"] = json!("8080")),
        ("Service default/web: spec.ports[0].nodePort: may not be used when type is ClusterIP",
         |s| s["spec"]["ports"][0]["nodePort"] = json!(30080)),
        // cluster IPs and families
        (r#"Service default/web: spec.clusterIP: "10.96.0.300" is not a valid IP address"#,
         |s| s["spec"]["clusterIP"] = json!("10.96.0.300")),
        (r#"Service default/web: spec.clusterIPs[0]: "10.96.0.11" must match spec.clusterIP "10.96.0.10""#,
         |s| s["spec"]["clusterIPs"] = json!(["10.96.0.11"])),
        ("Service default/web: spec.clusterIPs[1]: must be of a different IP family than spec.clusterIPs[0]",
         |s| s["spec"]["clusterIPs"] = json!(["10.96.0.10", "10.96.0.11"])),
        (r#"Service default/web: spec.clusterIP: 10.96.0.10 does not match spec.ipFamilies[0] "IPv6""#,
         |s| s["spec"]["ipFamilies"] = json!(["IPv6"])),
        (r#"Service default/web: spec.ipFamilies[1]: unsupported value "IPv5": supported values are "IPv4", "IPv6""#,
         |s| s["spec"]["ipFamilies"] = json!(["IPv4", "IPv5"])),
        // types
        (r#"Service default/web: spec.clusterIP: may not be "None" for type NodePort"#,
         |s| { s["spec"]["clusterIP"] = json!("None"); s["spec"]["type"] = json!("NodePort") }),
        ("Service default/web: spec.externalName: is required for type ExternalName",
         |s| { s["spec"]["type"] = json!("ExternalName"); unset(&mut s["spec"], "clusterIP") }),
        ("Service default/web: spec.clusterIP: must be empty for type ExternalName",
         |s| { s["spec"]["type"] = json!("ExternalName"); s["spec"]["externalName"] = json!("example.com") }),
        (r#"Service default/web: spec.type: unsupported value "Internal": supported values are "ClusterIP", "ExternalName", "LoadBalancer", "NodePort""#,
         |s| s["spec"]["type"] = json!("Internal")),
        // policies
        (r#"Service default/web: spec.sessionAffinity: unsupported value "Cookie": supported values are "ClientIP", "None""#,
         |s| s["spec"]["sessionAffinity"] = json!("Cookie")),
        ("Service default/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: 0 is out of range 1-86400",
         |s| { s["spec"]["sessionAffinity"] = json!("ClientIP");
               s["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 0}}) }),
        ("Service default/web: spec.sessionAffinityConfig.clientIP.timeoutSeconds: 86401 is out of range 1-86400",
         |s| { s["spec"]["sessionAffinity"] = json!("ClientIP");
               s["spec"]["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 86401}}) }),
        ("Service default/web: spec.externalTrafficPolicy: may only be set for externally-accessible services (NodePort, LoadBalancer, or with externalIPs)",
         |s| s["spec"]["externalTrafficPolicy"] = json!("Local")),
        // metadata and apiVersion
        (r#"Service default/Web: metadata.name: "Web" is not a valid name: must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter, at most 63 characters)"#,
         |s| s["metadata"]["name"] = json!("Web")),
        (r#"Service default/1web: metadata.name: "1web" is not a valid name: must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter, at most 63 characters)"#,
         |s| s["metadata"]["name"] = json!("1web")),
        ("Service default/<unnamed>: metadata.name: is required",
         |s| unset(&mut s["metadata"], "name")),
        (r#"Service Shop/web: metadata.namespace: "Shop" is not a valid namespace: must be a DNS-1123 label"#,
         |s| s["metadata"]["namespace"] = json!("Shop")),
        (r#"Service default/web: apiVersion: "v2" is not supported for Service: use "v1""#,
         |s| s["apiVersion"] = json!("v2")),
        // wire types
        (r#"Service default/web: spec.ports[0].port: invalid type: string "abc", expected i64"#,
         |s| s["spec"]["ports"][0]["port"] = json!("abc")),
        (r#"Service default/web: spec.clusterIP: invalid type: integer `10`, expected a string"#,
         |s| s["spec"]["clusterIP"] = json!(10)),
        ("Service default/web: spec.ports[0].targetPort: true must be a port number or a port name",
         |s| s["spec"]["ports"][0]["targetPort"] = json!(true)),
        ("Service default/web: spec.ports[0].targetPort: 80.5 is not a whole number: must be a port number or a port name",
         |s| s["spec"]["ports"][0]["targetPort"] = json!(80.5)),
    ];
    check_rejections(service(), cases);
}

#[test]
fn invalid_endpoint_slices_are_rejected_naming_object_and_field() {
    let cases: &[(&str, Edit)] = &[
        ("EndpointSlice default/web-1: addressType: is required",
         |e| unset(e, "addressType")),
        (r#"EndpointSlice default/web-1: addressType: unsupported value "IPv5": supported values are "FQDN", "IPv4", "IPv6""#,
         |e| e["addressType"] = json!("IPv5")),
        ("EndpointSlice default/web-1: endpoints[1].addresses[0]: fd00::2 is not an IPv4 address, as addressType requires",
         |e| e["endpoints"][1]["addresses"] = json!(["fd00::2"])),
        (r#"EndpointSlice default/web-1: endpoints[0].addresses[0]: "10.1.0.256" is not a valid IP address"#,
         |e| e["endpoints"][0]["addresses"] = json!(["10.1.0.256"])),
        ("EndpointSlice default/web-1: endpoints[0].addresses: must contain at least one address",
         |e| e["endpoints"][0]["addresses"] = json!([])),
        ("EndpointSlice default/web-1: endpoints[0].addresses: must contain at least one address",
         |e| unset(&mut e["endpoints"][0], "addresses")),
        (r#"EndpointSlice default/web-1: endpoints[0].hostname: "Web_0" is not a valid hostname: must be a DNS-1123 label"#,
         |e| e["endpoints"][0]["hostname"] = json!("Web_0")),
        (r#"EndpointSlice default/web-1: endpoints[1].nodeName: "node_b" is not a valid node name: must be a DNS-1123 subdomain"#,
         |e| e["endpoints"][1]["nodeName"] = json!("node_b")),
        (r#"EndpointSlice default/web-1: ports[1].name: duplicate value "http""#,
         |e| e["ports"][1]["name"] = json!("http")),
        ("EndpointSlice default/web-1: ports[0].port: 65536 is out of range 1-65535",
         |e| e["ports"][0]["port"] = json!(65536)),
        (r#"EndpointSlice default/web-1: ports[0].protocol: unsupported value "tcp": supported values are "SCTP", "TCP", "UDP""#,
         |e| e["ports"][0]["protocol"] = json!("tcp")),
        ("EndpointSlice default/web-1: endpoints: has 1001 items, at most 1000 are allowed",
         |e| e["endpoints"] = (0..1001).map(|i| json!({"addresses": [format!("10.1.{}.{}", i / 200, i % 200 + 1)]})).collect()),
        ("EndpointSlice default/web-1: endpoints[0].hints.forZones: has 9 items, at most 8 are allowed",
         |e| e["endpoints"][0]["hints"] = json!({"forZones": (0..9).map(|i| json!({"name": format!("zone-{i}")})).collect::<Vec<_>>()})),
        ("EndpointSlice default/web-1: endpoints[1].hints.forNodes[1].name: is required",
         |e| e["endpoints"][1]["hints"] = json!({"forNodes": [{"name": "node-a"}, {"name": ""}]})),
        (r#"EndpointSlice default/Web_1: metadata.name: "Web_1" is not a valid name: must be a DNS-1123 subdomain"#,
         |e| e["metadata"]["name"] = json!("Web_1")),
        ("EndpointSlice default/<unnamed>: metadata.name: is required",
         |e| e["metadata"]["name"] = json!("")),
        (r#"EndpointSlice default/web-1: apiVersion: "discovery.k8s.io/v1beta1" is not supported for EndpointSlice: use "discovery.k8s.io/v1""#,
         |e| e["apiVersion"] = json!("discovery.k8s.io/v1beta1")),
        (r#"EndpointSlice default/web-1: apiVersion: "v1" is not supported for EndpointSlice: use "discovery.k8s.io/v1""#,
         |e| e["apiVersion"] = json!("v1")),
        (r#"EndpointSlice default/web-1: ports[0].port: invalid type: string "abc", expected i64"#,
         |e| e["ports"][0]["port"] = json!("abc")),
        ("EndpointSlice default/web-1: endpoints[0].conditions.ready: invalid type: string \"yes\", expected a boolean",
         |e| e["endpoints"][0]["conditions"] = json!({"ready": "yes"})),
    ];
    check_rejections(slice(), cases);
}

/// Each edit of `base` must be refused by `parse` and by `Mesh::apply` (alone
/// and inside a List), with exactly the expected message.
fn check_rejections(base: Value, cases: &[(&str, Edit)]) {
    assert!(parse(&bytes(&base)).is_ok(), "the base object is valid");
    for (expected, edit) in cases {
        let bad = with(base.clone(), edit);
        assert_eq!(parse_err(&bytes(&bad)), *expected);
        let mesh = mesh();
        let err = mesh
            .apply(&list([other("v1", "Pod", "default", "p"), bad]))
            .unwrap_err();
        assert_eq!(err.to_string(), *expected);
        assert_eq!(mesh.version(), 0, "{expected}");
    }
}

#[test]
fn unreadable_input_is_rejected_naming_the_document() {
    let svc_yaml =
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n";
    let cases: &[(String, &str)] = &[
        (
            r#"{"apiVersion": "v1", "kind": "Service""#.into(),
            "document 1: EOF while parsing an object at line 1 column 38",
        ),
        (
            r#"{"apiVersion": "v1", "kind": "Service",}"#.into(),
            "document 1: trailing comma at line 1 column 40",
        ),
        (
            format!("{svc_yaml}---\nkind: Service\nmetadata: {{name: [web\n"),
            "document 2: did not find expected ',' or ']' at line 9 column 1, while parsing a flow sequence at line 8 column 18",
        ),
        (
            format!("{svc_yaml}---\n[]\n---\nhello\n"),
            "document 3: expected a Kubernetes object, found a string",
        ),
        (
            format!("{svc_yaml}---\n{}", svc_yaml.replace("port: 80", "port: abc")),
            r#"Service default/web: spec.ports[0].port: invalid type: string "abc", expected i64"#,
        ),
        (
            format!("{svc_yaml}---\napiVersion: v1\nmetadata: {{name: web}}\n"),
            "object default/web (document 2): kind: is required",
        ),
        (
            r#"{"apiVersion": "v1", "kind": "List", "items": {"kind": "Service"}}"#.into(),
            "List (document 1): items: expected a sequence, found a mapping",
        ),
        (
            r#"{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1"}]}"#.into(),
            "object default/<unnamed> (document 1): kind: is required",
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(parse_err(input.as_bytes()), *expected, "{input}");
    }
}

#[test]
fn json_that_is_not_utf8_is_refused_where_it_breaks() {
    // Bytes that are not UTF-8 are refused with where they are; a name that
    // is UTF-8 but not a DNS label is refused by validation, not by the
    // reader.
    let mut input = br#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "w"#.to_vec();
    input.push(0xFF);
    input.extend_from_slice(br#"b"}, "spec": {"ports": [{"port": 80}]}}"#);
    assert_eq!(
        parse_err(&input),
        "document 1: invalid unicode code point at line 1 column 64"
    );
    let accented = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "wéb"}, "spec": {"ports": [{"port": 80}]}}"#;
    assert!(
        parse_err(accented.as_bytes()).contains("metadata.name"),
        "{}",
        parse_err(accented.as_bytes())
    );
}

#[test]
fn a_byte_order_mark_before_yaml_is_ignored() {
    // YAML 1.2 §5.2 allows a BOM at the start of a stream; Windows editors write one.
    let yaml = "\u{feff}apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80}]\n";
    assert_eq!(parse(yaml.as_bytes()).map(|p| p.objects.len()), Ok(1));
}

// === 4. all or nothing ===

/// `web` and its slice, plus `api` (ClusterIP 10.96.0.20) without endpoints.
fn base_state() -> Vec<u8> {
    let api = with(named("api", service()), |s| {
        s["spec"]["clusterIP"] = json!("10.96.0.20");
    });
    list([service(), slice(), api])
}

const DESTINATIONS: &[&str] = &["10.96.0.10:80", "10.96.0.10:9090", "web:http", "api:http"];

type Observed = (Arc<Snapshot>, Vec<String>, Vec<String>, Vec<String>);

/// Everything a reader can observe: the snapshot, every endpoint, every resolution.
fn observe(mesh: &Mesh) -> Observed {
    let snapshot = mesh.snapshot();
    let (services, eps) = (render(&snapshot), endpoints(&snapshot));
    let resolved = DESTINATIONS.iter().map(|d| resolve(mesh, d)).collect();
    (snapshot, services, eps, resolved)
}

fn assert_unchanged(mesh: &Mesh, before: &Observed) {
    let after = observe(mesh);
    assert!(
        Arc::ptr_eq(&before.0, &after.0),
        "a new snapshot was published"
    );
    assert_eq!(after.0.version(), before.0.version());
    assert_eq!(
        (&after.1, &after.2, &after.3),
        (&before.1, &before.2, &before.3)
    );
}

#[test]
fn an_invalid_object_fails_the_whole_apply() {
    let mesh = loaded(&base_state());
    let before = observe(&mesh);
    let web_http = "default/web http/TCP: all=10.1.0.1:8080,10.1.0.2:8080 internal=10.1.0.1:8080,10.1.0.2:8080 external=";
    assert!(before.2.iter().any(|l| l == web_http), "{:?}", before.2);

    let more_endpoints = with(slice(), |e| {
        e["endpoints"]
            .as_array_mut()
            .unwrap()
            .push(json!({"addresses": ["10.1.0.3"]}));
    });
    let bad = with(named("web-2", slice()), |e| {
        e["endpoints"][0]["addresses"] = json!(["nope"]);
    });
    let err = mesh.apply(&list([more_endpoints, bad])).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"EndpointSlice default/web-2: endpoints[0].addresses[0]: "nope" is not a valid IP address"#
    );
    assert_unchanged(&mesh, &before);
}

#[test]
fn a_conflicting_cluster_ip_fails_the_whole_apply() {
    let mesh = loaded(&base_state());
    let before = observe(&mesh);
    let more_endpoints = with(slice(), |e| {
        e["endpoints"][0]["addresses"] = json!(["10.1.0.9"])
    });
    let thief = named("web2", service());
    let err = mesh.apply(&list([more_endpoints, thief])).unwrap_err();
    assert_eq!(
        err,
        Error::Conflict {
            object: "Service default/web2".into(),
            field: "spec.clusterIPs[0]".into(),
            message: "10.96.0.10:80/TCP is already used by Service default/web".into(),
        }
    );
    assert_eq!(
        err.to_string(),
        "Service default/web2: spec.clusterIPs[0]: 10.96.0.10:80/TCP is already used by Service default/web"
    );
    assert_unchanged(&mesh, &before);
}

#[test]
fn swapping_cluster_ips_in_one_apply_is_no_conflict() {
    let mesh = loaded(&base_state());
    let web = with(service(), |s| s["spec"]["clusterIP"] = json!("10.96.0.20"));
    let api = with(named("api", service()), |s| {
        s["spec"]["clusterIP"] = json!("10.96.0.10")
    });
    assert!(mesh.apply(&list([web, api])).unwrap().changed);
    assert_eq!(resolve(&mesh, "10.96.0.10:80"), "default/api http/TCP");
    assert_eq!(resolve(&mesh, "10.96.0.20:80"), "default/web http/TCP");
}

#[test]

fn a_conflict_blames_the_newcomer_even_when_the_owner_is_rebuilt() {
    let mesh = loaded(&base_state());
    let before = observe(&mesh);
    // `cache` sorts before `web`; web's slice changes, so web is rebuilt too.
    let web_slice = with(slice(), |e| {
        e["endpoints"][0]["addresses"] = json!(["10.1.0.9"])
    });
    let err = mesh
        .apply(&list([web_slice, named("cache", service())]))
        .unwrap_err();
    assert_unchanged(&mesh, &before);
    assert_eq!(
        err.to_string(),
        "Service default/cache: spec.clusterIPs[0]: 10.96.0.10:80/TCP is already used by Service default/web"
    );
}

#[test]
fn frontend_conflicts_name_both_services() {
    let node_port = |name: &str, ip: &str| {
        with(named(name, service()), |s| {
            s["spec"]["type"] = json!("NodePort");
            s["spec"]["clusterIP"] = json!(ip);
            s["spec"]["ports"][1]["nodePort"] = json!(30090);
        })
    };
    let cases = [
        (
            node_port("np-b", "10.96.0.12"),
            "Service default/np-b: spec.ports[1].nodePort: 192.168.1.10:30090/TCP is already used by Service default/np-a",
        ),
        (
            with(named("lb", service()), |s| {
                s["spec"]["clusterIP"] = json!("10.96.0.13");
                s["spec"]["externalIPs"] = json!(["10.96.0.11"]);
            }),
            "Service default/lb: spec.externalIPs[0]: 10.96.0.11:80/TCP is already used by Service default/np-a",
        ),
    ];
    for (second, expected) in cases {
        let mesh = loaded(&bytes(&node_port("np-a", "10.96.0.11")));
        let before = observe(&mesh);
        let err = mesh.apply(&bytes(&second)).unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err:?}");
        assert_eq!(err.to_string(), expected);
        assert_unchanged(&mesh, &before);
    }
    // Without node IPs a node port is no frontend here, so nothing clashes.
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    for (name, ip) in [("np-a", "10.96.0.11"), ("np-b", "10.96.0.12")] {
        mesh.apply(&bytes(&node_port(name, ip))).unwrap();
    }
    assert_eq!(mesh.snapshot().len(), 2);
}

// === 5. idempotence, replace, delete ===

#[test]
fn applying_the_same_input_twice_changes_nothing() {
    for input in [GET_JSON, GET_YAML, CREATE_MULTI, &base_state()] {
        let mesh = loaded(input);
        let before = observe(&mesh);
        let again = mesh.apply(input).unwrap();
        assert_eq!((again.changed, again.version), (false, 1));
        assert_unchanged(&mesh, &before);
    }
    // YAML and JSON of one cluster are the same objects.
    let mesh = loaded(GET_JSON);
    assert!(!mesh.apply(GET_YAML).unwrap().changed);
}

#[test]
fn replace_removes_what_the_new_input_lacks() {
    let mesh = loaded(GET_JSON);
    let report = mesh.replace(CREATE_MULTI).unwrap();
    assert_eq!((report.changed, report.version), (true, 2));
    // default/web is the dry-run one now, and its slices are gone.
    assert_eq!(render(&mesh.snapshot()), MULTI_SERVICES);
    assert_eq!(
        resolve(&mesh, "10.96.0.10:80"),
        "no Service matches 10.96.0.10:80"
    );

    let again = mesh.replace(CREATE_MULTI).unwrap();
    assert_eq!((again.changed, again.version), (false, 2));
    let emptied = mesh.replace(b"").unwrap();
    assert_eq!((emptied.changed, emptied.version), (true, 3));
    assert!(mesh.snapshot().is_empty());
}

#[test]
fn deleting_a_missing_object_is_a_no_op() {
    let mesh = loaded(&base_state());
    let before = observe(&mesh);
    for (kind, namespace, name) in [
        (Kind::Service, "default", "nope"),
        (Kind::Service, "shop", "web"),
        (Kind::EndpointSlice, "default", "web"),
        (Kind::EndpointSlice, "kube-system", "web-1"),
    ] {
        let report = mesh.delete(kind, namespace, name).unwrap();
        let what = format!("{kind} {namespace}/{name}");
        assert!(!report.changed && report.version == 1, "{what}: {report:?}");
        assert!(report.warnings.is_empty(), "{what}");
    }
    assert_unchanged(&mesh, &before);
}

#[test]
fn a_deleted_service_keeps_its_slices_until_it_returns() {
    let mesh = loaded(&base_state());
    let before = endpoints(&mesh.snapshot());
    let report = mesh.delete(Kind::Service, "default", "web").unwrap();
    assert_eq!((report.changed, report.version), (true, 2));
    assert!(mesh.snapshot().service("default", "web").is_none());
    assert_eq!(resolve(&mesh, "web:http"), "no Service matches web:http");

    let report = mesh.apply(&bytes(&service())).unwrap();
    assert_eq!((report.changed, report.version), (true, 3));
    assert_eq!(endpoints(&mesh.snapshot()), before);

    let report = mesh
        .delete(Kind::EndpointSlice, "default", "web-1")
        .unwrap();
    assert_eq!((report.changed, report.version), (true, 4));
    assert_eq!(
        render(&mesh.snapshot())[1],
        "default/web ClusterIP ip=10.96.0.10 | http 80/TCP->8080 eps=0 | metrics 9090/TCP->9090 eps=0"
    );
}

// === 6. namespaces ===

#[test]
fn objects_without_a_namespace_land_in_default() {
    let no_namespace = |v: Value| with(v, |v| unset(&mut v["metadata"], "namespace"));
    let empty_namespace = |v: Value| with(v, |v| v["metadata"]["namespace"] = json!(""));
    for input in [
        list([no_namespace(service()), no_namespace(slice())]),
        list([empty_namespace(service()), empty_namespace(slice())]),
        list([no_namespace(service()), slice()]),
    ] {
        let mesh = loaded(&input);
        assert_eq!(render(&mesh.snapshot()), [WEB]);
        assert_eq!(
            resolve(&mesh, "web.default.svc.cluster.local:http"),
            "default/web http/TCP"
        );
    }
}

#[test]
fn errors_name_objects_without_a_namespace_in_default() {
    let bad = with(service(), |s| {
        unset(&mut s["metadata"], "namespace");
        s["spec"]["ports"][0]["port"] = json!(0);
    });
    assert_eq!(
        parse_err(&bytes(&bad)),
        "Service default/web: spec.ports[0].port: 0 is out of range 1-65535"
    );
}

#[test]

fn errors_name_objects_with_an_empty_namespace_in_default() {
    let cases: &[(&str, Edit)] = &[
        (
            "Service default/web: spec.ports[0].port: 0 is out of range 1-65535",
            |s| s["spec"]["ports"][0]["port"] = json!(0),
        ),
        (
            r#"Service default/web: apiVersion: "v2" is not supported for Service: use "v1""#,
            |s| s["apiVersion"] = json!("v2"),
        ),
    ];
    let empty = with(service(), |s| s["metadata"]["namespace"] = json!(""));
    for (expected, edit) in cases {
        assert_eq!(parse_err(&bytes(&with(empty.clone(), edit))), *expected);
    }
}
