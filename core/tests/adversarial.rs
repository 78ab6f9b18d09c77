//! Adversarial input: every input here is refused with a clear error, or
//! accepted at a bounded cost, and a refused apply leaves the mesh exactly as
//! it was. Limits are exercised lowered (so no test allocates what it
//! guards against) and raised (so a raised limit is seen to accept).

use std::net::IpAddr;

use pobox::{Client, Destination, Error, Kind, Limits, Mesh, MeshConfig, PickError, Update};
use serde_json::{json, Value};

#[path = "support/bombs.rs"]
mod bombs;
use bombs::{wide_bomb, BILLION_LAUGHS};

// === builders ===

fn service(name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    })
}

/// A slice of `web` with `n` endpoints 10.1.`third`.x.
fn slice(name: &str, third: u8, n: usize) -> Value {
    let endpoints: Vec<Value> = (0..n)
        .map(|i| json!({"addresses": [format!("10.{}.{}.{}", 1 + i / 65536, third as usize + (i / 256) % 256, i % 256)]}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": endpoints
    })
}

fn list(items: impl IntoIterator<Item = Value>) -> Vec<u8> {
    let items: Vec<Value> = items.into_iter().collect();
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": items})).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn mesh_with(limits: Limits) -> Mesh {
    Mesh::new(MeshConfig::new().limits(limits)).unwrap()
}

/// A mesh holding `web` (10.96.0.10:80) with one 2-endpoint slice.
fn loaded(limits: Limits) -> Mesh {
    let mesh = mesh_with(limits);
    mesh.apply(&list([service("web", "10.96.0.10"), slice("web-1", 0, 2)]))
        .unwrap();
    mesh
}

/// Everything a refused apply must leave alone: the version and every
/// Service port's endpoints.
fn state(mesh: &Mesh) -> (u64, Vec<String>) {
    let snapshot = mesh.snapshot();
    let mut lines = Vec::new();
    for entry in snapshot.services() {
        for port in entry.ports() {
            let mut addrs: Vec<String> = port
                .endpoints()
                .iter()
                .map(|e| e.addr().to_string())
                .collect();
            addrs.sort();
            lines.push(format!(
                "{} {}: {}",
                entry.service().key(),
                port.label(),
                addrs.join(",")
            ));
        }
    }
    (snapshot.version(), lines)
}

/// Applies and replaces `input`, asserts both are refused and change
/// nothing, and returns the error. (The endpoint limit counts what the mesh
/// holds, which a replace drops: it is replaced only when it is the input
/// itself that is over.)
fn refused(mesh: &Mesh, input: &[u8]) -> Error {
    let before = state(mesh);
    let err = mesh.apply(input).unwrap_err();
    assert_eq!(state(mesh), before, "apply half-applied: {err}");
    if matches!(limit_of(&err), Some(("endpoints", ..))) {
        return err;
    }
    let again = mesh.replace(input).unwrap_err();
    assert_eq!(again, err, "replace refuses as apply does");
    assert_eq!(state(mesh), before, "replace half-applied: {err}");
    err
}

fn limit_of(err: &Error) -> Option<(&'static str, usize, usize)> {
    match err {
        Error::Limit {
            what, limit, found, ..
        } => Some((*what, *limit, *found)),
        _ => None,
    }
}

fn nested_json(depth: usize) -> Vec<u8> {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
}

fn nested_yaml_flow(depth: usize) -> Vec<u8> {
    format!(
        "a: {}1{}\n",
        "{b: ".repeat(depth - 1),
        "}".repeat(depth - 1)
    )
    .into_bytes()
}

fn nested_yaml_block(depth: usize) -> Vec<u8> {
    let mut out = String::new();
    for level in 0..depth {
        out += &format!("{}k{level}:\n", "  ".repeat(level));
    }
    out.into_bytes()
}

// === limits: defaults ===

#[test]
fn the_defaults_are_documented_values() {
    let l = Limits::default();
    assert_eq!(
        (
            l.input_bytes_limit(),
            l.depth_limit(),
            l.values_limit(),
            l.objects_limit(),
            l.endpoints_limit()
        ),
        (64 << 20, 64, 8_000_000, 100_000, 500_000)
    );
    assert_eq!(*MeshConfig::new().configured_limits(), l);
}

// === input size ===

#[test]
fn input_over_max_input_bytes_is_refused_before_it_is_read() {
    let mesh = loaded(Limits::new().max_input_bytes(1000));
    // Not even YAML: the size is checked before anything else.
    let err = refused(&mesh, &[b'{'; 1001]);
    assert_eq!(
        err.to_string(),
        "input is 1001 bytes, over the limit of 1000; raise it with Limits::max_input_bytes \
         (options JSON \"limits\": {\"maxInputBytes\": ...})"
    );
    assert_eq!(limit_of(&err), Some(("input bytes", 1000, 1001)));
    // At the limit: read (and refused for what it is, not for its size).
    let err = refused(&mesh, &[b'@'; 1000]);
    assert!(matches!(err, Error::Syntax { .. }), "{err}");
    // A real input just over, then with the limit raised.
    let mut padded = bytes(&service("api", "10.96.0.11"));
    padded.resize(1001, b' ');
    refused(&mesh, &padded);
    let raised = loaded(Limits::new().max_input_bytes(1001));
    assert!(raised.apply(&padded).unwrap().changed);
}

// === nesting ===

#[test]
fn nesting_past_max_depth_is_refused_in_json_yaml_flow_and_yaml_block() {
    let mesh = loaded(Limits::default());
    for (name, build) in [
        ("JSON", nested_json as fn(usize) -> Vec<u8>),
        ("YAML flow", nested_yaml_flow),
        ("YAML block", nested_yaml_block),
    ] {
        let err = refused(&mesh, &build(65));
        assert_eq!(
            limit_of(&err),
            Some(("nesting depth", 64, 65)),
            "{name}: {err}"
        );
        // JSON is stopped by the reader, which names the document; YAML by
        // the byte pre-scan, before there are documents.
        let at = if name == "JSON" { "document 1: " } else { "" };
        assert!(
            err.to_string().starts_with(&format!(
                "{at}nested at least 65 levels deep, over the limit of 64; raise it with Limits::max_depth"
            )),
            "{name}: {err}"
        );
        // At the limit the document is read, and refused for not being an object.
        let err = refused(&mesh, &build(64));
        assert_eq!(limit_of(&err), None, "{name}: {err}");
        // Raised: read.
        let raised = loaded(Limits::new().max_depth(100));
        let err = refused(&raised, &build(100));
        assert_eq!(limit_of(&err), None, "{name}: {err}");
    }
}

/// Nesting far past what the parsers allow (128) is refused by the byte
/// pre-scan before the YAML parser runs (its error names no document: the
/// reader's would): libyaml would spend minutes on these before its own
/// recursion limit could refuse them. JSON is read at the pace of the
/// input, and the reader stops it at the limit; so is what starts like
/// JSON (`[`, `{`) until it stops being JSON.
#[test]
fn very_deep_nesting_is_refused_by_the_pre_scan() {
    let mesh = loaded(Limits::default());
    // The reader's error names the document; the pre-scan's, before there
    // are documents, does not.
    let (reader, pre_scan) = ("document 1: ", "");
    for (name, input, at) in [
        ("JSON", nested_json(200_000), reader),
        (
            "a flow sequence, read as JSON",
            "[".repeat(200_000).into_bytes(),
            reader,
        ),
        (
            "YAML flow mappings",
            "{a: ".repeat(200_000).into_bytes(),
            pre_scan,
        ),
        (
            "YAML flow sequences",
            format!("x: {}", "[".repeat(200_000)).into_bytes(),
            pre_scan,
        ),
        ("YAML block", nested_yaml_block(2_000), pre_scan),
        (
            "YAML block sequences",
            format!("{}x\n", "- ".repeat(100_000)).into_bytes(),
            pre_scan,
        ),
    ] {
        let err = refused(&mesh, &input);
        assert_eq!(
            limit_of(&err),
            Some(("nesting depth", 64, 65)),
            "{name}: {err}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("{at}nested at least 65")),
            "{name}: {err}"
        );
    }
}

// === values: alias bombs ===

#[test]
fn a_billion_laughs_is_refused() {
    let mesh = loaded(Limits::default());
    let err = refused(&mesh, BILLION_LAUGHS.as_bytes());
    // serde_yaml_ng's guard (at most 100 alias jumps per event of the
    // document) fires first on this classic shape.
    assert_eq!(err.to_string(), "document 1: repetition limit exceeded");
    // Lowered, the value limit fires first.
    let mesh = loaded(Limits::new().max_values(10_000));
    let err = refused(&mesh, BILLION_LAUGHS.as_bytes());
    assert_eq!(limit_of(&err), Some(("values", 10_000, 10_001)));
}

#[test]
fn a_wide_alias_bomb_is_stopped_by_max_values() {
    // The shape of the bomb: 10,000 x 1,000 = 10,000,000 values from 30 KB
    // stays under serde_yaml_ng's guard, so the value limit is what stops
    // it (at the default, in `examples/adversarial.rs`: reading the 8,000,000
    // values it allows takes too long for a debug-build test).
    let input = wide_bomb(10_000, 1_000);
    assert!(input.len() < 30_000);
    let mesh = loaded(Limits::new().max_values(100_000));
    let err = refused(&mesh, &input);
    assert_eq!(limit_of(&err), Some(("values", 100_000, 100_001)));
    assert_eq!(
        err.to_string(),
        "document 1: expands to at least 100001 values (YAML aliases expanded), over the limit \
         of 100000; raise it with Limits::max_values (options JSON \"limits\": {\"maxValues\": ...})"
    );
    // Small: at and past a lowered limit; then raised.
    let input = wide_bomb(100, 20); // 1 + 101 + 21 + 20 * 100 = 2123 values
    let mesh = loaded(Limits::new().max_values(2122));
    assert_eq!(
        limit_of(&refused(&mesh, &input)),
        Some(("values", 2122, 2123))
    );
    let mesh = loaded(Limits::new().max_values(2123));
    let err = refused(&mesh, &input);
    assert_eq!(
        err.to_string(),
        "object default/<unnamed> (document 1): kind: is required",
        "read whole, then refused for what it is"
    );
}

#[test]
fn values_are_counted_across_the_documents_of_one_input() {
    let doc = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"; // 5 values
    let input = format!("{doc}---\n{doc}---\n{doc}");
    let mesh = mesh_with(Limits::new().max_values(14));
    let err = refused(&mesh, input.as_bytes());
    assert_eq!(limit_of(&err), Some(("values", 14, 15)));
    assert!(err.to_string().starts_with("document 3: "), "{err}");
    let mesh = mesh_with(Limits::new().max_values(15));
    assert_eq!(mesh.apply(input.as_bytes()).unwrap().warnings.len(), 3);
}

// === objects ===

fn config_maps(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("c{i}")}}))
        .collect()
}

#[test]
fn objects_past_max_objects_are_refused_skipped_kinds_included() {
    let mesh = loaded(Limits::new().max_objects(10));
    let err = refused(&mesh, &list(config_maps(11)));
    assert_eq!(limit_of(&err), Some(("objects", 10, 11)));
    assert_eq!(
        err.to_string(),
        "document 1: has 11 objects, over the limit of 10; raise it with Limits::max_objects \
         (options JSON \"limits\": {\"maxObjects\": ...})"
    );
    assert_eq!(
        mesh.apply(&list(config_maps(10))).unwrap().warnings.len(),
        10
    );
    // Counted across documents, and nested Lists count their items.
    let doc = String::from_utf8(list(config_maps(4))).unwrap();
    let input = format!("{doc}\n---\n{doc}\n---\n{doc}\n");
    assert_eq!(
        limit_of(&refused(&mesh, input.as_bytes())),
        Some(("objects", 10, 12))
    );
    let raised = loaded(Limits::new().max_objects(12));
    assert_eq!(raised.apply(input.as_bytes()).unwrap().warnings.len(), 12);
}

// === endpoints ===

#[test]
fn endpoints_past_max_endpoints_are_refused_counting_what_the_mesh_holds() {
    let mesh = loaded(Limits::new().max_endpoints(100)); // holds 2
    let err = refused(&mesh, &bytes(&slice("web-2", 1, 99)));
    assert_eq!(limit_of(&err), Some(("endpoints", 100, 101)));
    assert_eq!(
        err.to_string(),
        "the mesh would hold 101 endpoints, over the limit of 100; raise it with \
         Limits::max_endpoints (options JSON \"limits\": {\"maxEndpoints\": ...})"
    );
    // Exactly 100 fits; replacing a slice counts its new size, not both.
    assert!(mesh.apply(&bytes(&slice("web-2", 1, 98))).unwrap().changed);
    assert!(mesh.apply(&bytes(&slice("web-1", 0, 1))).unwrap().changed);
    assert!(mesh.apply(&bytes(&slice("web-2", 1, 99))).unwrap().changed);
    refused(&mesh, &bytes(&slice("web-3", 2, 1)));
    // The typed path is bounded too, and deleting frees room.
    let before = state(&mesh);
    let extra = pobox::parse(&bytes(&slice("web-3", 2, 1))).unwrap().objects;
    let err = mesh
        .update(extra.clone().into_iter().map(Update::Apply))
        .unwrap_err();
    assert_eq!(limit_of(&err), Some(("endpoints", 100, 101)));
    assert_eq!(state(&mesh), before);
    mesh.delete(Kind::EndpointSlice, "default", "web-1")
        .unwrap();
    mesh.update(extra.into_iter().map(Update::Apply)).unwrap();
    // An input that alone is over is refused before its slices are
    // validated; a slice given twice counts once (the later one wins).
    let mesh = loaded(Limits::new().max_endpoints(2500));
    let big = list((0..3).map(|i| slice(&format!("big-{i}"), 10 * i as u8 + 1, 1000)));
    let err = refused(&mesh, &big);
    assert_eq!(limit_of(&err), Some(("endpoints", 2500, 3000)));
    assert!(
        err.to_string().starts_with(
            "document 1: its slices hold at least 3000 endpoints, over the limit of 2500"
        ),
        "{err}"
    );
    let before = state(&mesh);
    assert_eq!(
        limit_of(&mesh.replace(&big).unwrap_err()),
        Some(("endpoints", 2500, 3000))
    );
    assert_eq!(state(&mesh), before);
    let twice = list([
        slice("big-0", 1, 1000),
        slice("big-0", 1, 1000),
        slice("big-1", 11, 1000),
    ]);
    assert!(mesh.apply(&twice).unwrap().changed);
    let mesh = loaded(Limits::new().max_endpoints(3001));
    assert_eq!(
        limit_of(&refused(&mesh, &big)),
        Some(("endpoints", 3001, 3002))
    );
    let raised = loaded(Limits::new().max_endpoints(3002));
    assert!(raised.apply(&big).unwrap().changed);
}

// === duplicate keys ===

#[test]
fn a_duplicate_key_is_refused_naming_the_object_and_key() {
    let mesh = loaded(Limits::default());
    let json_dup =
        br#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"api","namespace":"shop"},
        "spec":{"clusterIP":"10.96.0.11","ports":[{"port":80,"port":81}]}}"#;
    let yaml_dup = b"apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: shop}\nspec:\n  clusterIP: 10.96.0.11\n  clusterIP: 10.96.0.12\n  ports: [{port: 80}]\n";
    let list_dup = br#"{"apiVersion":"v1","kind":"ServiceList","items":[
        {"metadata":{"name":"a"},"spec":{"ports":[{"port":80}]}},
        {"metadata":{"name":"b","name":"c"},"spec":{"ports":[{"port":80}]}}]}"#;
    let top_dup = b"kind: Service\nkind: EndpointSlice\n";
    let second_doc = b"kind: ConfigMap\nmetadata: {name: x}\n---\nkind: ConfigMap\nmetadata: {name: y, name: z}\n";
    for (input, message) in [
        (
            &json_dup[..],
            "Service shop/api (document 1): spec.ports[0].port: duplicate key \"port\"",
        ),
        (
            &yaml_dup[..],
            "Service shop/api (document 1): spec.clusterIP: duplicate key \"clusterIP\"",
        ),
        (
            &list_dup[..],
            "Service default/b (document 1): metadata.name: duplicate key \"name\"",
        ),
        (
            &top_dup[..],
            "Service default/<unnamed> (document 1): kind: duplicate key \"kind\"",
        ),
        (
            &second_doc[..],
            "ConfigMap default/y (document 2): metadata.name: duplicate key \"name\"",
        ),
    ] {
        let err = refused(&mesh, input);
        assert!(matches!(err, Error::Invalid { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("{message}: the API server refuses duplicate fields, and so does pobox rather than guess which one was meant")
        );
    }
}

// === invalid fields ===

#[test]
fn invalid_addresses_ports_names_conditions_and_api_versions_are_refused() {
    let mesh = loaded(Limits::default());
    type Edit = fn(&mut Value);
    let svc_cases: &[(&str, Edit)] = &[
        ("Service default/web: spec.clusterIP: \"10.96.0.256\" is not a valid IP address",
         |s| s["spec"]["clusterIP"] = json!("10.96.0.256")),
        ("Service default/web: spec.clusterIP: \"10.96.0.10/32\" is not a valid IP address",
         |s| s["spec"]["clusterIP"] = json!("10.96.0.10/32")),
        ("Service default/web: spec.ports[0].port: 4294967376 is out of range 1-65535",
         |s| s["spec"]["ports"][0]["port"] = json!(4_294_967_376u64)),
        ("Service default/web: spec.ports[0].port: invalid type: floating point `80.5`, expected i64",
         |s| s["spec"]["ports"][0]["port"] = json!(80.5)),
        ("Service default/web: spec.ports[0].targetPort: \"-http\" is not a valid port name: at most 15 lowercase letters, digits and '-', with at least one letter",
         |s| s["spec"]["ports"][0]["targetPort"] = json!("-http")),
        ("Service default/wéb: metadata.name: \"wéb\" is not a valid name: must be a DNS-1035 label (lowercase letters, digits and '-', starting with a letter, at most 63 characters)",
         |s| s["metadata"]["name"] = json!("wéb")),
        ("Service default/web: apiVersion: \"v2\" is not supported for Service: use \"v1\"",
         |s| s["apiVersion"] = json!("v2")),
    ];
    for (message, edit) in svc_cases {
        let mut s = service("web", "10.96.0.10");
        edit(&mut s);
        assert_eq!(refused(&mesh, &bytes(&s)).to_string(), *message);
    }
    let slice_cases: &[(&str, Edit)] = &[
        ("EndpointSlice default/web-1: endpoints[0].addresses[0]: \"10.1.0.1.5\" is not a valid IP address",
         |s| s["endpoints"][0]["addresses"][0] = json!("10.1.0.1.5")),
        ("EndpointSlice default/web-1: endpoints[0].addresses[0]: \"010.1.0.1\" is not a valid IP address",
         |s| s["endpoints"][0]["addresses"][0] = json!("010.1.0.1")),
        ("EndpointSlice default/web-1: endpoints[1].addresses[0]: fd00::1 is not an IPv4 address, as addressType requires",
         |s| s["endpoints"][1]["addresses"][0] = json!("fd00::1")),
        ("EndpointSlice default/web-1: endpoints[0].addresses[0]: 0.0.0.0 is not a usable address",
         |s| s["endpoints"][0]["addresses"][0] = json!("0.0.0.0")),
        ("EndpointSlice default/web-1: ports[0].port: 65536 is out of range 1-65535",
         |s| s["ports"][0]["port"] = json!(65536)),
        ("EndpointSlice default/web-1: endpoints[0].conditions.ready: invalid type: string \"yes\", expected a boolean",
         |s| s["endpoints"][0]["conditions"] = json!({"ready": "yes"})),
        ("EndpointSlice default/web-1: endpoints[0].conditions: invalid type: string \"ready\", expected struct EndpointConditions",
         |s| s["endpoints"][0]["conditions"] = json!("ready")),
        ("EndpointSlice default/web-1: endpoints[0].conditions.serving: invalid type: integer `1`, expected a boolean",
         |s| s["endpoints"][0]["conditions"] = json!({"serving": 1})),
        ("EndpointSlice default/web-1: endpoints[0].nodeName: \"Node A\" is not a valid node name: must be a DNS-1123 subdomain",
         |s| s["endpoints"][0]["nodeName"] = json!("Node A")),
        ("EndpointSlice default/web-1: apiVersion: \"discovery.k8s.io/v1beta1\" is not supported for EndpointSlice: use \"discovery.k8s.io/v1\"",
         |s| s["apiVersion"] = json!("discovery.k8s.io/v1beta1")),
        ("EndpointSlice default/web-1: apiVersion: \"\" is not supported for EndpointSlice: use \"discovery.k8s.io/v1\"",
         |s| s.as_object_mut().unwrap().remove("apiVersion").map(drop).unwrap_or(())),
    ];
    for (message, edit) in slice_cases {
        let mut s = slice("web-1", 0, 2);
        edit(&mut s);
        assert!(mesh.apply(&bytes(&s)).is_err(), "accepted: {message}");
        assert_eq!(refused(&mesh, &bytes(&s)).to_string(), *message);
    }
}

// === a Service and its slice disagree ===

fn pick(mesh: &Mesh, dest: &str) -> Result<String, PickError> {
    let dest: Destination = dest.parse().unwrap();
    mesh.pick(&dest, &Client::new()).map(|p| p.addr.to_string())
}

/// kube-proxy matches slices to a Service port by port name and protocol,
/// and serves each IP family from the slices of that family: a slice that
/// matches nothing contributes nothing. pobox does the same, accepting the
/// slice (the Service may change to match it) and leaving the port without
/// endpoints, which a pick reports.
#[test]
fn a_slice_that_disagrees_with_its_service_contributes_no_endpoints() {
    let no_endpoints = |mesh: &Mesh| pick(mesh, "10.96.0.10:80").unwrap_err().to_string();
    let expected = "Service default/web port http/TCP has no eligible endpoint (kube-proxy would reject the connection)";
    type Edit = fn(&mut Value);
    let cases: &[(&str, Edit)] = &[
        ("an IPv6 slice for an IPv4 Service", |s| {
            s["addressType"] = json!("IPv6");
            s["endpoints"] = json!([{"addresses": ["fd00::1"]}]);
        }),
        ("a port name the Service does not have", |s| {
            s["ports"][0]["name"] = json!("grpc")
        }),
        ("an unnamed port for a named Service port", |s| {
            s["ports"][0].as_object_mut().unwrap().remove("name");
        }),
        ("another protocol", |s| {
            s["ports"][0]["protocol"] = json!("UDP")
        }),
        ("no ports at all", |s| {
            s.as_object_mut().unwrap().remove("ports");
        }),
    ];
    for (case, edit) in cases {
        let mesh = mesh_with(Limits::default());
        let mut s = slice("web-1", 0, 2);
        edit(&mut s);
        let report = mesh
            .apply(&list([service("web", "10.96.0.10"), s]))
            .unwrap();
        assert!(report.warnings.is_empty(), "{case}: {report:?}");
        assert_eq!(no_endpoints(&mesh), expected, "{case}");
    }
    // A slice whose Service does not exist waits for it, silently.
    let mesh = mesh_with(Limits::default());
    let report = mesh.apply(&bytes(&slice("web-1", 0, 2))).unwrap();
    assert!(report.changed && report.warnings.is_empty(), "{report:?}");
    mesh.apply(&bytes(&service("web", "10.96.0.10"))).unwrap();
    assert_eq!(pick(&mesh, "10.96.0.10:80").unwrap(), "10.1.0.0:8080");
}

// === affinity spray ===

#[test]
fn a_spray_of_client_addresses_stays_within_the_affinity_capacity() {
    let capacity = 1000;
    let mesh = Mesh::new(MeshConfig::new().affinity_capacity(capacity)).unwrap();
    let mut svc = service("web", "10.96.0.10");
    svc["spec"]["sessionAffinity"] = json!("ClientIP");
    mesh.apply(&list([svc, slice("web-1", 0, 3)])).unwrap();
    let dest: Destination = "10.96.0.10:80".parse().unwrap();
    for i in 0..50_000u32 {
        let ip = IpAddr::from((0x0A00_0000 + i).to_be_bytes());
        let client = Client::new().ip(ip);
        mesh.pick(&dest, &client).unwrap();
        if i % 997 == 0 {
            assert!(
                mesh.affinity_entries() <= capacity,
                "{i}: {}",
                mesh.affinity_entries()
            );
        }
    }
    assert_eq!(mesh.affinity_entries(), capacity);
    // Still sticky for the most recent client.
    let last = Client::new().ip(IpAddr::from((0x0A00_0000u32 + 49_999).to_be_bytes()));
    let bound = mesh.pick(&dest, &last).unwrap().addr;
    for _ in 0..5 {
        assert_eq!(mesh.pick(&dest, &last).unwrap().addr, bound);
    }
}
