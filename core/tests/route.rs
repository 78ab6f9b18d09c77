//! `Route`: a destination resolved once per snapshot version. Every pick
//! through it must answer as `Mesh::pick` would, at every version.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::thread;

use pobox::{Client, Destination, Kind, ManualClock, Mesh, MeshConfig, PickError};
use serde_json::{json, Value};

fn service(ns: &str, vip: &str, annotations: Value, affinity: bool) -> Value {
    let mut spec =
        json!({"clusterIP": vip, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]});
    if affinity {
        spec["sessionAffinity"] = json!("ClientIP");
    }
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "web", "namespace": ns, "annotations": annotations},
           "spec": spec})
}

fn slice(ns: &str, name: &str, addresses: &[&str]) -> Value {
    let endpoints: Vec<Value> = addresses
        .iter()
        .map(|a| json!({"addresses": [a]}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": name, "namespace": ns,
                        "labels": {"kubernetes.io/service-name": "web"}},
           "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
           "endpoints": endpoints})
}

fn apply(mesh: &Mesh, objects: &[Value]) {
    let doc = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    mesh.apply(doc.to_string().as_bytes()).unwrap();
}

fn dest(s: &str) -> Destination {
    s.parse().unwrap()
}

fn addr(p: Result<pobox::Pick, PickError>) -> String {
    p.unwrap().addr.to_string()
}

#[test]
fn a_route_follows_every_version() {
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    let route = mesh.route(&dest("10.96.0.10:80"), None);
    let err = route.pick(&Client::new()).unwrap_err();
    assert!(matches!(err, PickError::NoService { .. }), "{err}");

    apply(
        &mesh,
        &[
            service("default", "10.96.0.10", json!({}), false),
            slice("default", "web-1", &["10.1.0.1", "10.1.0.2"]),
        ],
    );
    let p = route.pick(&Client::new()).unwrap();
    assert_eq!((p.addr.to_string(), p.version), ("10.1.0.1:8080".into(), 1));
    assert_eq!(addr(route.pick(&Client::new())), "10.1.0.2:8080");

    // A new endpoint set: the next pick sees it.
    apply(&mesh, &[slice("default", "web-1", &["10.1.0.3"])]);
    let p = route.pick(&Client::new()).unwrap();
    assert_eq!((p.addr.to_string(), p.version), ("10.1.0.3:8080".into(), 2));

    // No endpoints, then no Service: the errors Mesh::pick gives.
    mesh.delete(Kind::EndpointSlice, "default", "web-1")
        .unwrap();
    let err = route.pick(&Client::new()).unwrap_err();
    assert!(matches!(err, PickError::NoEndpoints { .. }), "{err}");
    mesh.delete(Kind::Service, "default", "web").unwrap();
    let err = route.pick(&Client::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        mesh.pick(&dest("10.96.0.10:80"), &Client::new())
            .unwrap_err()
            .to_string()
    );
}

#[test]
fn try_pick_with_hands_over_the_pick_try_pick_would_return() {
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    let route = mesh.route(&dest("10.96.0.10:80"), None);
    let mut seen = None;
    assert!(!route.try_pick_with(&Client::new(), |p| seen = Some(p)));
    assert_eq!(seen, None, "no Service: nothing handed over");
    apply(
        &mesh,
        &[
            service("default", "10.96.0.10", json!({}), false),
            slice("default", "web-1", &["10.1.0.1", "10.1.0.2"]),
        ],
    );
    // One round-robin sequence, whichever call picks.
    let mut got = Vec::new();
    for i in 0..4 {
        if i % 2 == 0 {
            assert!(route.try_pick_with(&Client::new(), |p| got.push(p.addr.to_string())));
        } else {
            got.push(route.try_pick(&Client::new()).unwrap().addr.to_string());
        }
    }
    assert_eq!(
        got,
        [
            "10.1.0.1:8080",
            "10.1.0.2:8080",
            "10.1.0.1:8080",
            "10.1.0.2:8080"
        ]
    );
}

#[test]
fn a_route_says_whether_its_picks_read_the_client_ip() {
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    let route = mesh.route(&dest("10.96.0.10:80"), None);
    assert!(!route.uses_client_ip(), "no Service yet");
    let endpoints = slice("default", "web-1", &["10.1.0.1", "10.1.0.2"]);
    for (annotations, affinity, uses) in [
        (json!({}), false, false),
        (json!({"pobox.io/lb-policy": "least-request"}), false, false),
        (
            json!({"pobox.io/lb-policy": "weighted-round-robin"}),
            false,
            false,
        ),
        (json!({"pobox.io/lb-policy": "random"}), false, false),
        (json!({}), true, true),
        (json!({"pobox.io/lb-policy": "maglev"}), false, true),
        (json!({"pobox.io/lb-policy": "ring-hash"}), false, true),
    ] {
        // Each version in turn: the answer follows the current snapshot.
        apply(
            &mesh,
            &[
                service("default", "10.96.0.10", annotations.clone(), affinity),
                endpoints.clone(),
            ],
        );
        assert_eq!(route.uses_client_ip(), uses, "{annotations} {affinity}");
        let snapshot = mesh.snapshot();
        let resolved = snapshot
            .resolve(&dest("10.96.0.10:80"), &Client::new())
            .unwrap();
        assert_eq!(resolved.port.uses_client_ip(), uses);
    }
}

#[test]
fn a_route_and_mesh_pick_share_one_round_robin_sequence() {
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    apply(
        &mesh,
        &[
            service("default", "10.96.0.10", json!({}), false),
            slice("default", "web-1", &["10.1.0.1", "10.1.0.2", "10.1.0.3"]),
        ],
    );
    let d = dest("10.96.0.10:80");
    let route = mesh.route(&d, None);
    let by_name = mesh.route(&dest("web:http"), None);
    let picks = [
        addr(route.pick(&Client::new())),
        addr(mesh.pick(&d, &Client::new())),
        addr(by_name.pick(&Client::new())),
        addr(route.pick(&Client::new())),
    ];
    assert_eq!(
        picks,
        [
            "10.1.0.1:8080",
            "10.1.0.2:8080",
            "10.1.0.3:8080",
            "10.1.0.1:8080"
        ]
    );
}

#[test]
fn a_name_resolves_in_the_route_s_namespace() {
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    apply(
        &mesh,
        &[
            service("default", "10.96.0.10", json!({}), false),
            slice("default", "web-1", &["10.1.0.1"]),
            service("prod", "10.96.0.20", json!({}), false),
            slice("prod", "web-1", &["10.2.0.1"]),
        ],
    );
    let d = dest("web:http");
    assert_eq!(
        addr(mesh.route(&d, None).pick(&Client::new())),
        "10.1.0.1:8080"
    );
    let prod = mesh.route(&d, Some("prod"));
    assert_eq!(prod.namespace(), Some("prod"));
    // The client's namespace does not override the route's.
    let client = Client::new().namespace("default");
    assert_eq!(addr(prod.pick(&client)), "10.2.0.1:8080");
}

#[test]
fn a_dropped_route_s_id_is_never_answered_for_by_its_old_resolution() {
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    apply(
        &mesh,
        &[
            service("default", "10.96.0.10", json!({}), false),
            slice("default", "web-1", &["10.1.0.1"]),
            service("prod", "10.96.0.20", json!({}), false),
            slice("prod", "web-1", &["10.2.0.1"]),
        ],
    );
    for _ in 0..3 {
        let a = mesh.route(&dest("10.96.0.10:80"), None);
        assert_eq!(addr(a.pick(&Client::new())), "10.1.0.1:8080");
        drop(a);
        // Most likely the same id, at the same version: only the
        // generation tells the two apart.
        let b = mesh.route(&dest("10.96.0.20:80"), None);
        assert_eq!(addr(b.pick(&Client::new())), "10.2.0.1:8080");
    }
}

#[test]
fn two_meshes_routes_never_answer_for_each_other() {
    let make = |endpoint: &str| {
        let mesh = Mesh::new(MeshConfig::new()).unwrap();
        apply(
            &mesh,
            &[
                service("default", "10.96.0.10", json!({}), false),
                slice("default", "web-1", &[endpoint]),
            ],
        );
        mesh
    };
    let (a, b) = (make("10.1.0.1"), make("10.2.0.1"));
    let (ra, rb) = (
        a.route(&dest("10.96.0.10:80"), None),
        b.route(&dest("10.96.0.10:80"), None),
    );
    for _ in 0..3 {
        assert_eq!(addr(ra.pick(&Client::new())), "10.1.0.1:8080");
        assert_eq!(addr(rb.pick(&Client::new())), "10.2.0.1:8080");
    }
}

#[test]
fn consistent_policies_and_affinity_answer_as_mesh_pick() {
    let clock = Arc::new(ManualClock::new());
    let mesh = Mesh::with_clock(MeshConfig::new(), clock).unwrap();
    let endpoints: Vec<String> = (1..=50).map(|i| format!("10.1.0.{i}")).collect();
    let endpoints: Vec<&str> = endpoints.iter().map(|s| s.as_str()).collect();
    apply(
        &mesh,
        &[
            service(
                "default",
                "10.96.0.10",
                json!({"pobox.io/lb-policy": "maglev"}),
                false,
            ),
            slice("default", "web-1", &endpoints),
        ],
    );
    let d = dest("10.96.0.10:80");
    let route = mesh.route(&d, None);
    let mut seen = BTreeSet::new();
    for k in 0..200u32 {
        let key = k.to_le_bytes();
        let client = Client::new().key(&key);
        let via_route = addr(route.pick(&client));
        assert_eq!(via_route, addr(mesh.pick(&d, &client)));
        seen.insert(via_route);
    }
    assert!(seen.len() > 30, "keys spread: {}", seen.len());

    // Session affinity: the binding a route makes, Mesh::pick keeps.
    apply(&mesh, &[service("default", "10.96.0.10", json!({}), true)]);
    let ip = "192.0.2.7".parse().unwrap();
    let client = Client::new().ip(ip);
    let first = addr(route.pick(&client));
    for _ in 0..5 {
        assert_eq!(addr(route.pick(&client)), first);
        assert_eq!(addr(mesh.pick(&d, &client)), first);
    }
}

#[test]
fn one_route_serves_many_threads_through_updates() {
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    apply(
        &mesh,
        &[
            service("default", "10.96.0.10", json!({}), false),
            slice("default", "web-1", &["10.1.0.1", "10.1.0.2"]),
        ],
    );
    let route = Arc::new(mesh.route(&dest("10.96.0.10:80"), None));
    let pickers: Vec<_> = (0..2)
        .map(|_| {
            let route = route.clone();
            thread::spawn(move || {
                let mut versions = Vec::new();
                for _ in 0..20_000 {
                    let p = route.pick(&Client::new()).unwrap();
                    // Version 1 and 2 have 10.1.0.*, version 3 only 10.3.0.1.
                    let expected_net = if p.version >= 3 { "10.3.0." } else { "10.1.0." };
                    assert!(p.addr.to_string().starts_with(expected_net), "{p:?}");
                    versions.push(p.version);
                }
                versions
            })
        })
        .collect();
    apply(
        &mesh,
        &[slice(
            "default",
            "web-1",
            &["10.1.0.1", "10.1.0.2", "10.1.0.9"],
        )],
    );
    apply(&mesh, &[slice("default", "web-1", &["10.3.0.1"])]);
    for picker in pickers {
        let versions = picker.join().unwrap();
        assert!(versions.windows(2).all(|w| w[0] <= w[1]), "never goes back");
    }
    assert_eq!(addr(route.pick(&Client::new())), "10.3.0.1:8080");
}

#[test]
fn a_batch_picks_in_sequence_from_one_version() {
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    apply(
        &mesh,
        &[
            service("default", "10.96.0.10", json!({}), false),
            slice("default", "web-1", &["10.1.0.1", "10.1.0.2", "10.1.0.3"]),
        ],
    );
    let route = mesh.route(&dest("10.96.0.10:80"), None);
    assert_eq!(addr(route.pick(&Client::new())), "10.1.0.1:8080");
    let mut got = Vec::new();
    route.try_pick_each(
        4,
        |_| Client::new(),
        |i, p| got.push((i, p.map(|p| (p.addr.to_string(), p.version)))),
    );
    let want: Vec<_> = [
        "10.1.0.2:8080",
        "10.1.0.3:8080",
        "10.1.0.1:8080",
        "10.1.0.2:8080",
    ]
    .iter()
    .enumerate()
    .map(|(i, a)| (i, Some((a.to_string(), 1))))
    .collect();
    assert_eq!(got, want);
    // A route that does not resolve hands out None for every pick.
    let missing = mesh.route(&dest("10.96.0.99:80"), None);
    let mut nones = 0;
    missing.try_pick_each(
        3,
        |_| Client::new(),
        |_, p| nones += usize::from(p.is_none()),
    );
    assert_eq!(nones, 3);
}

fn in_flight(mesh: &Mesh, endpoint: &str) -> u32 {
    let snapshot = mesh.snapshot();
    let resolved = snapshot
        .resolve(&dest("10.96.0.10:80"), &Client::new())
        .unwrap();
    resolved.port.in_flight(endpoint.parse().unwrap()).unwrap()
}

#[test]
fn a_route_begins_requests_as_mesh_begin_does() {
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    apply(
        &mesh,
        &[
            service(
                "default",
                "10.96.0.10",
                json!({"pobox.io/lb-policy": "least-request",
                       "pobox.io/outlier-consecutive-failures": "1",
                       "pobox.io/outlier-panic-threshold-percent": "0"}),
                false,
            ),
            slice("default", "web-1", &["10.1.0.1", "10.1.0.2"]),
        ],
    );
    let route = mesh.route(&dest("10.96.0.10:80"), None);
    let a = route.begin(&Client::new()).unwrap();
    assert!(a.wants_outcome());
    assert_eq!(in_flight(&mesh, &a.addr().to_string()), 1);
    // Least-request: the other endpoint, now the less loaded one.
    let b = route.begin(&Client::new()).unwrap();
    assert_ne!(a.addr(), b.addr());
    // Counts survive an unrelated update, and a drop ends the request.
    apply(
        &mesh,
        &[service(
            "default",
            "10.96.0.10",
            json!({"pobox.io/lb-policy": "least-request",
        "pobox.io/outlier-consecutive-failures": "1", "pobox.io/outlier-panic-threshold-percent": "0",
        "unrelated": "x"}),
            false,
        )],
    );
    let (a_addr, b_addr) = (a.addr().to_string(), b.addr().to_string());
    assert_eq!(in_flight(&mesh, &b_addr), 1);
    drop(b);
    assert_eq!(in_flight(&mesh, &b_addr), 0);
    // A failure ejects the endpoint (one failure is the threshold here):
    // every pick goes to the other one.
    a.finish(pobox::Outcome::Failure);
    assert_eq!(in_flight(&mesh, &a_addr), 0);
    for _ in 0..4 {
        assert_eq!(
            route.begin(&Client::new()).unwrap().addr().to_string(),
            b_addr
        );
    }
    // No Service: the error Mesh::begin gives.
    let missing = mesh.route(&dest("10.96.0.99:80"), None);
    assert!(matches!(
        missing.begin(&Client::new()).unwrap_err(),
        PickError::NoService { .. }
    ));
    // A round-robin Service tracks nothing: the request is only its address.
    let plain = Mesh::new(MeshConfig::new()).unwrap();
    apply(
        &plain,
        &[
            service("default", "10.96.0.10", json!({}), false),
            slice("default", "web-1", &["10.1.0.1"]),
        ],
    );
    let r = plain
        .route(&dest("10.96.0.10:80"), None)
        .begin(&Client::new())
        .unwrap();
    assert!(!r.wants_outcome());
    assert_eq!(r.addr().to_string(), "10.1.0.1:8080");
}
