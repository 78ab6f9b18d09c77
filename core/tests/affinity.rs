//! `sessionAffinity: ClientIP`: every rule, on an injected clock.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use pobox::{Client, Destination, ManualClock, Mesh, MeshConfig};
use serde_json::{json, Value};

const VIP: &str = "10.96.0.10:80";

fn service(policy: &str, timeout: u32) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default",
                     "annotations": {"pobox.io/lb-policy": policy}},
        "spec": {
            "type": "NodePort",
            "clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": 80, "nodePort": 30080}],
            "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": timeout}},
        },
    })
}

/// Endpoints 10.1.0.1..=n with the given conditions (`r` ready, `t`
/// serving-terminating, `n` not ready).
fn slice(conditions: &str) -> Value {
    let endpoints: Vec<Value> = conditions
        .chars()
        .enumerate()
        .map(|(i, c)| {
            let (ready, terminating) = match c {
                'r' => (true, false),
                't' => (false, true),
                _ => (false, false),
            };
            json!({"addresses": [format!("10.1.0.{}", i + 1)],
                   "conditions": {"ready": ready, "serving": c != 'n', "terminating": terminating}})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": endpoints,
    })
}

fn setup(policy: &str, conditions: &str, capacity: usize) -> (Mesh, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let config = MeshConfig::new()
        .affinity_capacity(capacity)
        .node_ip("192.168.0.1".parse().unwrap());
    let mesh = Mesh::with_clock(config, clock.clone()).unwrap();
    apply(&mesh, &[service(policy, 60), slice(conditions)]);
    (mesh, clock)
}

fn apply(mesh: &Mesh, objects: &[Value]) {
    mesh.apply(
        &serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": objects}))
            .unwrap(),
    )
    .unwrap();
}

fn pick(mesh: &Mesh, client: &str) -> String {
    pick_at(mesh, VIP, client)
}

fn pick_at(mesh: &Mesh, dest: &str, client: &str) -> String {
    let dest: Destination = dest.parse().unwrap();
    let ip: IpAddr = client.parse().unwrap();
    mesh.pick(&dest, &Client::new().ip(ip))
        .unwrap()
        .addr
        .ip()
        .to_string()
}

#[test]
fn a_client_sticks_under_every_policy() {
    for policy in [
        "round-robin",
        "random",
        "weighted-round-robin",
        "maglev",
        "ring-hash",
    ] {
        let (mesh, _) = setup(policy, "rrrr", 1000);
        let first = pick(&mesh, "192.0.2.1");
        for _ in 0..20 {
            assert_eq!(pick(&mesh, "192.0.2.1"), first, "{policy}");
        }
        // Without a client IP there is no affinity: round robin moves on.
        let dest: Destination = VIP.parse().unwrap();
        if policy == "round-robin" {
            let a = mesh.pick(&dest, &Client::new()).unwrap().addr;
            let b = mesh.pick(&dest, &Client::new()).unwrap().addr;
            assert_ne!(a, b);
        }
    }
}

#[test]
fn clients_are_balanced_then_kept() {
    let (mesh, _) = setup("round-robin", "rrr", 1000);
    let a = pick(&mesh, "192.0.2.1");
    let b = pick(&mesh, "192.0.2.2");
    let c = pick(&mesh, "192.0.2.3");
    assert_eq!(
        [a.as_str(), b.as_str(), c.as_str()],
        ["10.1.0.1", "10.1.0.2", "10.1.0.3"]
    );
    assert_eq!(pick(&mesh, "192.0.2.2"), b);
}

#[test]
fn the_timeout_restarts_on_each_pick_and_then_expires() {
    let (mesh, clock) = setup("round-robin", "rrr", 1000);
    assert_eq!(pick(&mesh, "192.0.2.1"), "10.1.0.1");
    for _ in 0..5 {
        clock.advance(Duration::from_secs(59));
        assert_eq!(
            pick(&mesh, "192.0.2.1"),
            "10.1.0.1",
            "each pick restarts the 60 s timer"
        );
    }
    clock.advance(Duration::from_secs(60));
    // Expired: balanced afresh (round robin's next endpoint).
    assert_eq!(pick(&mesh, "192.0.2.1"), "10.1.0.2");
}

#[test]
fn a_binding_to_an_endpoint_that_is_no_longer_eligible_is_dropped_at_once() {
    // kubernetes/kubernetes#110302: not ready; cilium/cilium#27096: terminating.
    for (then, why) in [
        ("nrr", "not ready"),
        ("trr", "terminating while ready peers exist"),
    ] {
        let (mesh, _) = setup("round-robin", "rrr", 1000);
        assert_eq!(pick(&mesh, "192.0.2.1"), "10.1.0.1");
        apply(&mesh, &[slice(then)]);
        let now = pick(&mesh, "192.0.2.1");
        assert_ne!(now, "10.1.0.1", "{why}");
        // And the new binding holds.
        assert_eq!(pick(&mesh, "192.0.2.1"), now, "{why}");
    }
    // Removed from the slice altogether.
    let (mesh, _) = setup("round-robin", "rr", 1000);
    assert_eq!(pick(&mesh, "192.0.2.1"), "10.1.0.1");
    let mut s = slice("rr");
    s["endpoints"][0]["addresses"] = json!(["10.1.0.9"]);
    apply(&mesh, &[s]);
    assert_ne!(pick(&mesh, "192.0.2.1"), "10.1.0.1");
    // Drained to weight 0.
    let (mesh, _) = setup("round-robin", "rr", 1000);
    assert_eq!(pick(&mesh, "192.0.2.1"), "10.1.0.1");
    let mut s = slice("rr");
    s["metadata"]["annotations"] = json!({"pobox.io/weights": "{\"10.1.0.1\": 0}"});
    apply(&mesh, &[s]);
    assert_eq!(pick(&mesh, "192.0.2.1"), "10.1.0.2");
}

#[test]
fn a_terminating_binding_holds_when_nothing_is_ready() {
    // The fallback set is serving-terminating endpoints: a binding into it is valid.
    let (mesh, _) = setup("round-robin", "tt", 1000);
    let first = pick(&mesh, "192.0.2.1");
    assert_eq!(pick(&mesh, "192.0.2.1"), first);
}

#[test]
fn bindings_survive_unrelated_updates_and_are_per_address_kind() {
    let (mesh, _) = setup("round-robin", "rrr", 1000);
    assert_eq!(pick(&mesh, "192.0.2.1"), "10.1.0.1");
    let v = mesh.version();
    let mut s = slice("rrr");
    s["endpoints"][2]["conditions"]["ready"] = json!(false);
    apply(&mesh, &[s]);
    assert!(mesh.version() > v);
    assert_eq!(
        pick(&mesh, "192.0.2.1"),
        "10.1.0.1",
        "10.1.0.1 is still eligible"
    );
    // By node port, the same client is balanced on its own (another set).
    assert_eq!(pick_at(&mesh, "192.168.0.1:30080", "192.0.2.1"), "10.1.0.1");
    assert_eq!(pick_at(&mesh, "192.168.0.1:30080", "192.0.2.2"), "10.1.0.2");
}

#[test]
fn the_table_is_bounded_by_its_capacity() {
    let (mesh, _) = setup("round-robin", "rrr", 64);
    for i in 0..5000u32 {
        let ip = IpAddr::from((0xC000_0000u32 + i).to_be_bytes());
        pick(&mesh, &ip.to_string());
    }
    // Exactly the capacity: the shards' shares sum to it (they once summed
    // to up to 63 more), and 5000 clients fill every one.
    assert_eq!(mesh.affinity_entries(), 64);
    // The most recent client is still bound.
    let last = IpAddr::from((0xC000_0000u32 + 4999).to_be_bytes()).to_string();
    let bound = pick(&mesh, &last);
    assert_eq!(pick(&mesh, &last), bound);
    assert!(Mesh::new(MeshConfig::new().affinity_capacity(0)).is_err());
}

#[test]
fn a_binding_holds_when_endpoints_before_it_come_and_go() {
    // The binding keeps its endpoint's position as a hint; when endpoints
    // sorting before it are added or removed the position moves, and the
    // binding must still find its endpoint by address.
    let (mesh, _) = setup("round-robin", "rrr", 1000);
    for client in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        pick(&mesh, client);
    }
    let bound = pick(&mesh, "192.0.2.3");
    assert_eq!(bound, "10.1.0.3");
    let mut s = slice("rrr");
    let endpoints = s["endpoints"].as_array_mut().unwrap();
    endpoints.insert(0, json!({"addresses": ["10.0.0.9"]}));
    endpoints.insert(0, json!({"addresses": ["10.0.0.8"]}));
    apply(&mesh, &[s]);
    assert_eq!(pick(&mesh, "192.0.2.3"), bound, "two endpoints before it");
    let mut s = slice("rrr");
    s["endpoints"].as_array_mut().unwrap().remove(0);
    apply(&mesh, &[s]);
    assert_eq!(
        pick(&mesh, "192.0.2.3"),
        bound,
        "one endpoint before it gone"
    );
    assert_eq!(pick(&mesh, "192.0.2.2"), "10.1.0.2");
}

/// A binding belongs to the eligible set it was made in: an endpoint that
/// leaves the node-port set (`externalTrafficPolicy: Local`, no longer on
/// this node) but stays in the cluster-IP set, at the same position, loses
/// its node-port bindings only.
#[test]
fn a_binding_is_checked_against_its_own_eligible_set() {
    let mut svc = service("round-robin", 60);
    svc["spec"]["externalTrafficPolicy"] = json!("Local");
    let on = |nodes: [&str; 3]| {
        let mut s = slice("rrr");
        for (i, node) in nodes.into_iter().enumerate() {
            s["endpoints"][i]["nodeName"] = json!(node);
        }
        s
    };
    let clock = Arc::new(ManualClock::new());
    let config = MeshConfig::new()
        .node("node-1")
        .node_ip("192.168.0.1".parse().unwrap());
    let mesh = Mesh::with_clock(config, clock).unwrap();
    apply(&mesh, &[svc, on(["node-1", "node-2", "node-2"])]);
    let node_port = "192.168.0.1:30080";
    assert_eq!(pick_at(&mesh, node_port, "192.0.2.1"), "10.1.0.1");
    assert_eq!(pick(&mesh, "192.0.2.1"), "10.1.0.1");
    // 10.1.0.1 moves to node-2 (same address, same position); 10.1.0.3
    // comes to node-1.
    apply(&mesh, &[on(["node-2", "node-2", "node-1"])]);
    assert_eq!(pick_at(&mesh, node_port, "192.0.2.1"), "10.1.0.3");
    assert_eq!(
        pick(&mesh, "192.0.2.1"),
        "10.1.0.1",
        "the cluster-IP binding holds"
    );
}
