//! Balancing policies chosen by `pobox.io/lb-policy`, weights from
//! `pobox.io/weights`, and the hash key.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use pobox::{Client, Destination, Error, Kind, LbPolicy, Mesh, MeshConfig};
use serde_json::{json, Value};

const VIP: &str = "10.96.0.10:80";

fn service(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "annotations": annotations},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]},
    })
}

/// A slice of `n` endpoints 10.1.<i/250>.<i%250 + 1>:8080, with optional weights.
fn slice(name: &str, hosts: impl IntoIterator<Item = usize>, weights: Option<Value>) -> Value {
    let endpoints: Vec<Value> = hosts
        .into_iter()
        .map(|i| json!({"addresses": [host(i).to_string()]}))
        .collect();
    let mut s = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": endpoints,
    });
    if let Some(w) = weights {
        s["metadata"]["annotations"] = json!({"pobox.io/weights": w.to_string()});
    }
    s
}

fn host(i: usize) -> IpAddr {
    IpAddr::from([10, 1, (i / 250) as u8, (i % 250) as u8 + 1])
}

fn mesh(objects: &[Value]) -> Mesh {
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    mesh.apply(
        &serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": objects}))
            .unwrap(),
    )
    .unwrap();
    mesh
}

fn picks(mesh: &Mesh, client: &Client<'_>, n: usize) -> Vec<String> {
    let dest: Destination = VIP.parse().unwrap();
    (0..n)
        .map(|_| mesh.pick(&dest, client).unwrap().addr.ip().to_string())
        .collect()
}

/// Which endpoint each of `keys` synthetic clients is sent to.
fn assignment(mesh: &Mesh, keys: usize) -> Vec<SocketAddr> {
    let dest: Destination = VIP.parse().unwrap();
    (0..keys)
        .map(|k| {
            let key = format!("client-{k}");
            mesh.pick(&dest, &Client::new().key(key.as_bytes()))
                .unwrap()
                .addr
        })
        .collect()
}

/// Pearson's chi-square statistic of observed counts against expected shares.
fn chi_square(observed: &[f64], expected_share: &[f64]) -> f64 {
    let total: f64 = observed.iter().sum();
    observed
        .iter()
        .zip(expected_share)
        .map(|(o, p)| (o - total * p).powi(2) / (total * p))
        .sum()
}

#[test]
fn round_robin_is_the_default_and_exact() {
    let m = mesh(&[service(json!({})), slice("a", 0..3, None)]);
    assert_eq!(
        m.snapshot().services()[0].service().lb_policy(),
        LbPolicy::RoundRobin
    );
    assert_eq!(
        picks(&m, &Client::new(), 7),
        ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.1"]
    );
}

#[test]
fn smooth_weighted_round_robin_sequence() {
    // nginx's example: weights 5, 1, 1 give a a b a c a a, with no burst.
    let m = mesh(&[
        service(json!({"pobox.io/lb-policy": "weighted-round-robin"})),
        slice(
            "a",
            0..3,
            Some(json!({"10.1.0.1": 5, "10.1.0.2": 1, "10.1.0.3": 1})),
        ),
    ]);
    let a = "10.1.0.1";
    let b = "10.1.0.2";
    let c = "10.1.0.3";
    assert_eq!(
        picks(&m, &Client::new(), 14),
        [a, a, b, a, c, a, a, a, a, b, a, c, a, a]
    );
}

#[test]
fn weighted_distribution_passes_chi_square() {
    let weights = [1u32, 2, 3, 4];
    let m = mesh(&[
        service(json!({"pobox.io/lb-policy": "weighted-round-robin"})),
        slice(
            "a",
            0..4,
            Some(json!({"10.1.0.1": 1, "10.1.0.2": 2, "10.1.0.3": 3, "10.1.0.4": 4})),
        ),
    ]);
    let mut counts = [0f64; 4];
    for ip in picks(&m, &Client::new(), 10_000) {
        counts[ip.rsplit('.').next().unwrap().parse::<usize>().unwrap() - 1] += 1.0;
    }
    let shares: Vec<f64> = weights.iter().map(|w| *w as f64 / 10.0).collect();
    // 3 degrees of freedom: 11.34 is the 1% critical value.
    assert!(chi_square(&counts, &shares) < 11.34, "{counts:?}");
}

#[test]
fn random_is_uniform_by_chi_square() {
    let m = mesh(&[
        service(json!({"pobox.io/lb-policy": "random"})),
        slice("a", 0..5, None),
    ]);
    let mut counts: HashMap<String, f64> = HashMap::new();
    for ip in picks(&m, &Client::new(), 20_000) {
        *counts.entry(ip).or_default() += 1.0;
    }
    assert_eq!(counts.len(), 5);
    let observed: Vec<f64> = counts.values().copied().collect();
    // 4 degrees of freedom: 18.47 is the 0.1% critical value.
    assert!(chi_square(&observed, &[0.2; 5]) < 18.47, "{counts:?}");
}

#[test]
fn weight_zero_drains_without_removing() {
    for policy in [
        "round-robin",
        "random",
        "weighted-round-robin",
        "least-request",
        "maglev",
        "ring-hash",
    ] {
        let m = mesh(&[
            service(json!({"pobox.io/lb-policy": policy})),
            slice("a", 0..3, Some(json!({"10.1.0.2": 0}))),
        ]);
        for (k, ip) in picks(&m, &Client::new().ip("10.0.0.9".parse().unwrap()), 30)
            .iter()
            .enumerate()
        {
            assert_ne!(ip, "10.1.0.2", "{policy}: pick {k}");
        }
        for k in 0..200 {
            let key = format!("k{k}");
            let p = m
                .pick(&VIP.parse().unwrap(), &Client::new().key(key.as_bytes()))
                .unwrap();
            assert_ne!(p.addr.ip().to_string(), "10.1.0.2", "{policy}");
        }
        let snapshot = m.snapshot();
        let resolved = snapshot
            .resolve(&VIP.parse().unwrap(), &Client::new())
            .unwrap();
        let eligible: Vec<(String, u32)> = resolved
            .eligible()
            .map(|e| (e.ip().to_string(), e.weight()))
            .collect();
        assert_eq!(
            eligible[1],
            ("10.1.0.2".to_owned(), 0),
            "{policy}: still listed"
        );
    }
    // Every endpoint drained: nothing to pick.
    let m = mesh(&[
        service(json!({})),
        slice("a", 0..1, Some(json!({"10.1.0.1": 0}))),
    ]);
    assert!(m.pick(&VIP.parse().unwrap(), &Client::new()).is_err());
}

#[test]
fn consistent_policies_keep_a_key_on_one_endpoint_and_use_the_client_ip_by_default() {
    for policy in ["maglev", "ring-hash"] {
        let m = mesh(&[
            service(json!({"pobox.io/lb-policy": policy})),
            slice("a", 0..10, None),
        ]);
        let by_key = Client::new().key(b"session-42");
        let first = picks(&m, &by_key, 1)[0].clone();
        assert!(
            picks(&m, &by_key, 20).iter().all(|ip| *ip == first),
            "{policy}"
        );
        let by_ip = Client::new().ip("192.0.2.7".parse().unwrap());
        let first = picks(&m, &by_ip, 1)[0].clone();
        assert!(
            picks(&m, &by_ip, 20).iter().all(|ip| *ip == first),
            "{policy}"
        );
        // Keys spread: 1000 keys reach every one of 10 endpoints.
        let spread: std::collections::HashSet<SocketAddr> =
            assignment(&m, 1000).into_iter().collect();
        assert_eq!(spread.len(), 10, "{policy}");
        // With no key and no client IP, a consistent policy falls back to round robin.
        assert_eq!(
            picks(&m, &Client::new(), 2),
            ["10.1.0.1", "10.1.0.2"],
            "{policy}"
        );
    }
}

#[test]
fn maglev_is_the_same_whatever_order_endpoints_arrive_in() {
    // envoyproxy/envoy#20703: the table must not depend on arrival order.
    let svc = service(json!({"pobox.io/lb-policy": "maglev"}));
    let one = mesh(&[
        svc.clone(),
        slice("a", 0..50, None),
        slice("b", 50..100, None),
    ]);
    let two = mesh(&[svc.clone(), slice("x", (0..100).rev(), None)]);
    let three = mesh(std::slice::from_ref(&svc));
    for i in (0..100).step_by(10) {
        three
            .apply(&serde_json::to_vec(&slice(&format!("s{i}"), i..i + 10, None)).unwrap())
            .unwrap();
    }
    let expected = assignment(&one, 2000);
    assert_eq!(assignment(&two, 2000), expected);
    assert_eq!(assignment(&three, 2000), expected);
}

#[test]
fn maglev_after_updates_is_the_table_a_fresh_mesh_builds() {
    // A rebuild reuses the walk seeds of the endpoints that stay: it must
    // make the table a mesh given the final objects at once makes, whatever
    // came before (endpoints gone, added, moved to another port, another
    // table size).
    let svc = |size: u32| {
        service(json!({"pobox.io/lb-policy": "maglev",
                       "pobox.io/maglev-table-size": size.to_string()}))
    };
    let on_port = |mut s: Value, port: u16| {
        s["ports"][0]["port"] = json!(port);
        s
    };
    let steps: Vec<Vec<Value>> = vec![
        vec![
            svc(65537),
            slice("a", 0..50, None),
            slice("b", 50..100, None),
        ],
        // 0..10 gone, 100..120 new, 50..60 in both slices.
        vec![
            svc(65537),
            slice("a", 10..60, None),
            slice("b", 50..120, None),
        ],
        // The same addresses on another port: other endpoints (a lower
        // port, so that they sort before the copies on the old one).
        vec![
            svc(65537),
            slice("a", 10..60, None),
            on_port(slice("b", 50..120, None), 7070),
        ],
        // Another table size: every seed changes.
        vec![
            svc(251),
            slice("a", 10..60, None),
            on_port(slice("b", 50..120, None), 7070),
        ],
        // Slice b deleted too, below.
        vec![svc(65537), slice("a", 5..15, None)],
    ];
    let live = mesh(&[]);
    for (i, objects) in steps.iter().enumerate() {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        live.apply(&serde_json::to_vec(&list).unwrap()).unwrap();
        if i == steps.len() - 1 {
            live.delete(Kind::EndpointSlice, "default", "b").unwrap();
        }
        assert_eq!(
            assignment(&live, 2000),
            assignment(&mesh(objects), 2000),
            "step {i}"
        );
    }
}

/// The share of keys that move when one of `n` endpoints is removed.
fn disruption(policy: &str, n: usize) -> f64 {
    let svc = service(json!({"pobox.io/lb-policy": policy}));
    let before = assignment(&mesh(&[svc.clone(), slice("a", 0..n, None)]), 20_000);
    let after = assignment(
        &mesh(&[svc, slice("a", (0..n).filter(|i| *i != n / 2), None)]),
        20_000,
    );
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    moved as f64 / before.len() as f64
}

#[test]
fn removing_one_of_n_endpoints_moves_about_one_nth_of_keys() {
    // Ideal is 1/N (only the removed endpoint's keys). Bound: 2/N for Maglev
    // (the paper measures a little over 1/N at M ≈ 650 N) and for the ring.
    let n = 100;
    for policy in ["maglev", "ring-hash"] {
        let moved = disruption(policy, n);
        assert!(moved >= 0.5 / n as f64, "{policy}: {moved}");
        assert!(moved <= 2.0 / n as f64, "{policy}: {moved}");
    }
}

#[test]
fn maglev_shares_are_within_one_entry_for_equal_weights() {
    // N = 1000, M = 65537: Maglev fills the table in rounds, so each endpoint
    // holds floor(M/N) or ceil(M/N) entries: max/mean ≤ 66/65.537 < 1.01.
    let m = mesh(&[
        service(json!({"pobox.io/lb-policy": "maglev"})),
        slice("a", 0..1000, None),
    ]);
    let mut counts: HashMap<SocketAddr, usize> = HashMap::new();
    // Probe the table through keys: 200,000 keys land ~ uniformly on entries.
    for a in assignment(&m, 200_000) {
        *counts.entry(a).or_default() += 1;
    }
    assert_eq!(counts.len(), 1000);
    let mean = 200.0;
    let max = *counts.values().max().unwrap() as f64;
    // Sampling noise on 200 per endpoint dominates the table's own ±1/65.
    assert!(max / mean < 1.35, "max/mean {}", max / mean);
}

#[test]
fn bad_annotations_are_refused_naming_the_service() {
    let cases = [
        (json!({"pobox.io/lb-policy": "fastest"}), "Service default/web: metadata.annotations[pobox.io/lb-policy]: unsupported value \"fastest\": supported values are \"least-request\", \"maglev\", \"random\", \"ring-hash\", \"round-robin\", \"weighted-round-robin\""),
        (json!({"pobox.io/lb-policy": "maglev", "pobox.io/maglev-table-size": "65536"}), "Service default/web: metadata.annotations[pobox.io/maglev-table-size]: 65536 is not a prime: a Maglev table size must be prime (e.g. 65537, 655373)"),
        (json!({"pobox.io/maglev-table-size": "big"}), "Service default/web: metadata.annotations[pobox.io/maglev-table-size]: \"big\" is not a number in 1-5000011"),
        (json!({"pobox.io/ring-size": "0"}), "Service default/web: metadata.annotations[pobox.io/ring-size]: \"0\" is not a number in 1-8388608"),
    ];
    for (annotations, message) in cases {
        let m = Mesh::new(MeshConfig::new()).unwrap();
        let err = m
            .apply(&serde_json::to_vec(&service(annotations)).unwrap())
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }));
        assert_eq!(err.to_string(), message);
        assert_eq!(m.version(), 0);
    }
    let slices = [
        (json!("[1]"), "EndpointSlice default/a: metadata.annotations[pobox.io/weights]: not a JSON object from address to weight: invalid type: sequence, expected a map at line 1 column 0"),
        (json!({"10.1.0.1": -1}), "EndpointSlice default/a: metadata.annotations[pobox.io/weights]: the weight of 10.1.0.1, -1, is not a whole number in 0-10000"),
        (json!({"10.1.0.1": 10001}), "EndpointSlice default/a: metadata.annotations[pobox.io/weights]: the weight of 10.1.0.1, 10001, is not a whole number in 0-10000"),
        (json!({"fd00::1": 1}), "EndpointSlice default/a: metadata.annotations[pobox.io/weights]: fd00::1 is not an IPv4 address, as addressType requires"),
        (json!({"10.1.0.9": 1}), "EndpointSlice default/a: metadata.annotations[pobox.io/weights]: 10.1.0.9 is not an address of this slice's endpoints"),
        // Several strays: the lowest address is named, whatever the map's order.
        (json!({"10.1.0.200": 1, "10.1.0.1": 2, "10.1.0.9": 1, "10.1.0.7": 1}), "EndpointSlice default/a: metadata.annotations[pobox.io/weights]: 10.1.0.7 is not an address of this slice's endpoints"),
    ];
    for (weights, message) in slices {
        let mut s = slice("a", 0..2, None);
        s["metadata"]["annotations"] = json!({"pobox.io/weights": match &weights { Value::String(t) => t.clone(), w => w.to_string() }});
        let m = Mesh::new(MeshConfig::new()).unwrap();
        let err = m.apply(&serde_json::to_vec(&s).unwrap()).unwrap_err();
        assert_eq!(err.to_string(), message);
    }
}

/// A hash-policy port with neither affinity nor outlier detection is picked
/// by its table alone (a shortcut past the thread's state); with outlier
/// detection on and nothing ejected, the general path must pick the same.
#[test]
fn the_table_shortcut_and_the_general_path_agree() {
    for policy in ["maglev", "ring-hash"] {
        // A drained endpoint, so that positions in the table's members are
        // not positions in the endpoints; a heavier one.
        let weights = json!({host(3).to_string(): 0, host(7).to_string(): 5});
        let plain = mesh(&[
            service(json!({"pobox.io/lb-policy": policy})),
            slice("web-1", 0..50, Some(weights.clone())),
        ]);
        let general = mesh(&[
            service(json!({"pobox.io/lb-policy": policy,
                           "pobox.io/outlier-consecutive-failures": "5"})),
            slice("web-1", 0..50, Some(weights)),
        ]);
        let dest: Destination = VIP.parse().unwrap();
        let snapshot = plain.snapshot();
        let resolved = snapshot.resolve(&dest, &Client::new()).unwrap();
        for k in 0..500u32 {
            let key = format!("user-{k}");
            let ip = IpAddr::from((0x0A00_0000 + k * 7919).to_be_bytes());
            for client in [Client::new().key(key.as_bytes()), Client::new().ip(ip)] {
                let expected = general.pick(&dest, &client).unwrap().addr;
                assert_eq!(
                    plain.pick(&dest, &client).unwrap().addr,
                    expected,
                    "{policy} {k}"
                );
                assert_eq!(
                    resolved.pick(&client).unwrap().addr(),
                    expected,
                    "{policy} {k}"
                );
            }
        }
        // With neither key nor IP, both go round the members.
        assert_eq!(
            picks(&plain, &Client::new(), 3),
            picks(&general, &Client::new(), 3)
        );
    }
}
