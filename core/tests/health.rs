//! Least-request (power of two choices) and passive health (outlier
//! detection), on an injected clock.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pobox::{reseed_thread_rng, Client, Destination, ManualClock, Mesh, MeshConfig, Outcome};
use serde_json::{json, Value};

const VIP: &str = "10.96.0.10:80";

fn objects(annotations: Value, endpoints: usize) -> Value {
    let all: Vec<u8> = (1..=endpoints as u8).collect();
    objects_at(annotations, &all)
}

/// The objects with endpoints at `10.1.0.<i>` for each `i` given.
fn objects_at(annotations: Value, endpoints: &[u8]) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|i| json!({"addresses": [format!("10.1.0.{i}")]}))
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "web", "namespace": "default", "annotations": annotations},
         "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "web-1", "namespace": "default",
                      "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4", "ports": [{"port": 8080}], "endpoints": eps},
    ]})
}

fn setup(annotations: Value, endpoints: usize) -> (Mesh, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let mesh = Mesh::with_clock(MeshConfig::new(), clock.clone()).unwrap();
    mesh.apply(&serde_json::to_vec(&objects(annotations, endpoints)).unwrap())
        .unwrap();
    (mesh, clock)
}

fn dest() -> Destination {
    VIP.parse().unwrap()
}

fn ep(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 1, 0, i], 8080))
}

fn in_flight(mesh: &Mesh, i: u8) -> u32 {
    let snapshot = mesh.snapshot();
    let resolved = snapshot.resolve(&dest(), &Client::new()).unwrap();
    resolved.port.in_flight(ep(i)).unwrap()
}

fn picks(mesh: &Mesh, n: usize) -> BTreeMap<SocketAddr, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        *counts
            .entry(mesh.pick(&dest(), &Client::new()).unwrap().addr)
            .or_default() += 1;
    }
    counts
}

#[test]
fn least_request_prefers_the_less_loaded_endpoint() {
    reseed_thread_rng(42);
    let (mesh, _) = setup(json!({"pobox.io/lb-policy": "least-request"}), 2);
    // With two endpoints both are always drawn: requests alternate.
    let held: Vec<_> = (0..6)
        .map(|_| mesh.begin(&dest(), &Client::new()).unwrap())
        .collect();
    assert_eq!((in_flight(&mesh, 1), in_flight(&mesh, 2)), (3, 3));
    // End the requests on ep(2) only: the next three go there, then they tie.
    let (on_one, on_two): (Vec<_>, Vec<_>) = held.into_iter().partition(|r| r.addr() == ep(1));
    drop(on_two);
    assert_eq!(
        (in_flight(&mesh, 1), in_flight(&mesh, 2)),
        (3, 0),
        "dropping ends requests"
    );
    let more: Vec<_> = (0..3)
        .map(|_| mesh.begin(&dest(), &Client::new()).unwrap())
        .collect();
    assert!(more.iter().all(|r| r.addr() == ep(2)));
    assert_eq!((in_flight(&mesh, 1), in_flight(&mesh, 2)), (3, 3));
    drop((on_one, more));
    assert_eq!((in_flight(&mesh, 1), in_flight(&mesh, 2)), (0, 0));
}

#[test]
fn least_request_over_many_endpoints_avoids_the_loaded_one() {
    reseed_thread_rng(7);
    let (mesh, _) = setup(json!({"pobox.io/lb-policy": "least-request"}), 10);
    // One request held on ep(3); the others have none.
    let _held = loop {
        let r = mesh.begin(&dest(), &Client::new()).unwrap();
        if r.addr() == ep(3) {
            break r;
        }
    };
    assert_eq!(in_flight(&mesh, 3), 1);
    // ep(3) would win only if both choices were ep(3): P2C draws two distinct.
    let counts = picks(&mesh, 2000);
    assert_eq!(counts.get(&ep(3)), None, "{counts:?}");
    assert_eq!(counts.len(), 9);
}

#[test]
fn least_request_picks_only_eligible_endpoints() {
    // All four ready: every one is picked. One not ready: the set is no
    // longer every endpoint, and that one is never picked.
    let (mesh, _) = setup(json!({"pobox.io/lb-policy": "least-request"}), 4);
    assert_eq!(picks(&mesh, 200).len(), 4);
    let mut objects = objects(json!({"pobox.io/lb-policy": "least-request"}), 4);
    objects["items"][1]["endpoints"][1]["conditions"] = json!({"ready": false});
    mesh.apply(&serde_json::to_vec(&objects).unwrap()).unwrap();
    let counts = picks(&mesh, 200);
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        [ep(1), ep(3), ep(4)]
    );
}

#[test]
fn in_flight_counts_survive_updates_and_hosts_can_end_explicitly() {
    let (mesh, _) = setup(json!({"pobox.io/lb-policy": "least-request"}), 2);
    let r = mesh.begin(&dest(), &Client::new()).unwrap();
    let at = r.addr();
    let i = at
        .ip()
        .to_string()
        .rsplit('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    mesh.apply(
        &serde_json::to_vec(&objects(json!({"pobox.io/lb-policy": "least-request"}), 3)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        in_flight(&mesh, i),
        1,
        "the endpoint stayed, and so did its count"
    );
    drop(r);
    assert_eq!(
        in_flight(&mesh, i),
        0,
        "ended on the same counter after the update"
    );
    // A C or Go host: pick, then end explicitly.
    let p = mesh.begin(&dest(), &Client::new()).unwrap();
    let addr = p.addr();
    std::mem::forget(p);
    let j = addr
        .ip()
        .to_string()
        .rsplit('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(in_flight(&mesh, j), 1);
    mesh.end(&dest(), addr).unwrap();
    assert_eq!(in_flight(&mesh, j), 0);
    mesh.end(&dest(), addr).unwrap();
    assert_eq!(in_flight(&mesh, j), 0, "never below zero");
}

#[test]
fn a_request_wants_its_outcome_only_under_outlier_detection() {
    for (annotations, wanted) in [
        (json!({}), false),
        (json!({"pobox.io/lb-policy": "least-request"}), false),
        (outlier(3, 50, 0), true),
    ] {
        let (mesh, _) = setup(annotations.clone(), 2);
        let r = mesh.begin(&dest(), &Client::new()).unwrap();
        assert_eq!(r.wants_outcome(), wanted, "{annotations}");
    }
}

fn outlier(failures: u32, max_percent: u32, panic: u32) -> Value {
    json!({
        "pobox.io/outlier-consecutive-failures": failures.to_string(),
        "pobox.io/outlier-base-ejection-seconds": "30",
        "pobox.io/outlier-max-ejection-percent": max_percent.to_string(),
        "pobox.io/outlier-panic-threshold-percent": panic.to_string(),
    })
}

#[test]
fn consecutive_failures_eject_with_growing_backoff() {
    let (mesh, clock) = setup(outlier(3, 50, 0), 4);
    let fail = |n: usize| {
        for _ in 0..n {
            mesh.report(&dest(), ep(2), Outcome::Failure).unwrap();
        }
    };
    fail(2);
    mesh.report(&dest(), ep(2), Outcome::Success).unwrap();
    fail(2);
    assert!(
        picks(&mesh, 40).contains_key(&ep(2)),
        "a success reset the run"
    );
    fail(1);
    assert!(
        !picks(&mesh, 40).contains_key(&ep(2)),
        "3 in a row: ejected"
    );
    clock.advance(Duration::from_secs(29));
    assert!(!picks(&mesh, 40).contains_key(&ep(2)));
    clock.advance(Duration::from_secs(1));
    assert!(
        picks(&mesh, 40).contains_key(&ep(2)),
        "back after the base time"
    );
    // Second ejection: twice the base time.
    fail(3);
    clock.advance(Duration::from_secs(59));
    assert!(!picks(&mesh, 40).contains_key(&ep(2)));
    clock.advance(Duration::from_secs(1));
    assert!(picks(&mesh, 40).contains_key(&ep(2)));
    // A Request's outcome counts the same.
    for _ in 0..200 {
        let r = mesh.begin(&dest(), &Client::new()).unwrap();
        let outcome = if r.addr() == ep(4) {
            Outcome::Failure
        } else {
            Outcome::Success
        };
        r.finish(outcome);
    }
    assert!(!picks(&mesh, 40).contains_key(&ep(4)));
}

#[test]
fn weighted_round_robin_passes_over_an_ejected_endpoint() {
    // Weights 1, 0, 0, 2, 1, 1: two drained endpoints sit before the
    // ejected 10.1.0.4, so its position in the port (3) and its index among
    // the members (1) differ, and the walk past it must start from the latter.
    let mut annotations = outlier(1, 50, 0);
    annotations["pobox.io/lb-policy"] = json!("weighted-round-robin");
    let mut objects = objects(annotations, 6);
    objects["items"][1]["metadata"]["annotations"] = json!({
        "pobox.io/weights": json!({"10.1.0.2": 0, "10.1.0.3": 0, "10.1.0.4": 2}).to_string()
    });
    let clock = Arc::new(ManualClock::new());
    let mesh = Mesh::with_clock(MeshConfig::new(), clock).unwrap();
    mesh.apply(&serde_json::to_vec(&objects).unwrap()).unwrap();
    let before = picks(&mesh, 50);
    assert_eq!(
        before.into_iter().collect::<Vec<_>>(),
        [(ep(1), 10), (ep(4), 20), (ep(5), 10), (ep(6), 10)]
    );
    mesh.report(&dest(), ep(4), Outcome::Failure).unwrap();
    // Ejected: each of its turns goes to the member after it, 10.1.0.5.
    let after = picks(&mesh, 50);
    assert_eq!(
        after.into_iter().collect::<Vec<_>>(),
        [(ep(1), 10), (ep(5), 30), (ep(6), 10)]
    );
}

#[test]
fn at_most_the_configured_share_is_ejected() {
    // 10% of 4 endpoints rounds to 0: at least one may always be ejected, not two.
    let (mesh, _) = setup(outlier(1, 10, 0), 4);
    mesh.report(&dest(), ep(1), Outcome::Failure).unwrap();
    mesh.report(&dest(), ep(2), Outcome::Failure).unwrap();
    let counts = picks(&mesh, 40);
    assert!(!counts.contains_key(&ep(1)));
    assert!(counts.contains_key(&ep(2)), "over the budget: not ejected");
}

#[test]
fn below_the_panic_threshold_ejections_are_ignored() {
    let (mesh, _) = setup(outlier(1, 100, 50), 4);
    mesh.report(&dest(), ep(1), Outcome::Failure).unwrap();
    mesh.report(&dest(), ep(2), Outcome::Failure).unwrap();
    // 2 of 4 healthy = 50%: not below the threshold, ejections hold.
    let counts = picks(&mesh, 40);
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), [ep(3), ep(4)]);
    mesh.report(&dest(), ep(3), Outcome::Failure).unwrap();
    // 1 of 4 healthy = 25% < 50%: panic, every endpoint takes traffic.
    assert_eq!(picks(&mesh, 40).len(), 4);
}

#[test]
fn ejections_survive_updates_for_endpoints_that_stay() {
    let (mesh, _) = setup(outlier(1, 50, 0), 3);
    mesh.report(&dest(), ep(1), Outcome::Failure).unwrap();
    mesh.apply(&serde_json::to_vec(&objects(outlier(1, 50, 0), 4)).unwrap())
        .unwrap();
    let counts = picks(&mesh, 40);
    assert!(!counts.contains_key(&ep(1)), "{counts:?}");
    assert!(counts.contains_key(&ep(4)));
}

/// Each endpoint's state is found again by its address, not its place:
/// endpoints leave before and after the ones that stay, and others join
/// between them, so every one that stays moves in the port's list.
#[test]
fn state_follows_endpoints_whose_places_change() {
    let mut annotations = outlier(1, 50, 0);
    annotations["pobox.io/lb-policy"] = json!("least-request");
    let apply = |mesh: &Mesh, endpoints: &[u8]| {
        let doc = objects_at(annotations.clone(), endpoints);
        mesh.apply(&serde_json::to_vec(&doc).unwrap()).unwrap();
    };
    let clock = Arc::new(ManualClock::new());
    let mesh = Mesh::with_clock(MeshConfig::new(), clock).unwrap();
    apply(&mesh, &[1, 3, 5, 7, 9]);
    reseed_thread_rng(7);
    // Requests in flight on 5 (two or more) and 7 (one or more).
    let mut held = Vec::new();
    while held
        .iter()
        .filter(|r: &&pobox::Request| r.addr() == ep(5))
        .count()
        < 2
        || !held.iter().any(|r: &pobox::Request| r.addr() == ep(7))
    {
        held.push(mesh.begin(&dest(), &Client::new()).unwrap());
        assert!(held.len() < 1000, "least-request reaches every endpoint");
    }
    held.retain(|r| [ep(5), ep(7)].contains(&r.addr()));
    let on = |i: u8| held.iter().filter(|r| r.addr() == ep(i)).count() as u32;
    let (five, seven) = (on(5), on(7));
    mesh.report(&dest(), ep(9), Outcome::Failure).unwrap();

    apply(&mesh, &[2, 4, 5, 6, 7, 8, 9]);
    assert_eq!((in_flight(&mesh, 5), in_flight(&mesh, 7)), (five, seven));
    for i in [2, 4, 6, 8] {
        assert_eq!(in_flight(&mesh, i), 0, "10.1.0.{i} joined with no count");
    }
    let counts = picks(&mesh, 200);
    assert!(!counts.contains_key(&ep(9)), "9 stays ejected: {counts:?}");
    assert!(counts.contains_key(&ep(8)), "8 joined healthy: {counts:?}");
    drop(held);
    assert_eq!((in_flight(&mesh, 5), in_flight(&mesh, 7)), (0, 0));
}

#[test]
fn services_without_outlier_detection_ignore_reports() {
    let (mesh, _) = setup(json!({}), 2);
    for _ in 0..100 {
        mesh.report(&dest(), ep(1), Outcome::Failure).unwrap();
    }
    assert_eq!(picks(&mesh, 4).len(), 2);
}

#[test]
fn an_ejected_endpoint_loses_its_affinity_bindings_unless_panicking() {
    let mut objects = objects(outlier(1, 100, 50), 4);
    objects["items"][0]["spec"]["sessionAffinity"] = json!("ClientIP");
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    mesh.apply(&serde_json::to_vec(&objects).unwrap()).unwrap();
    let client = Client::new().ip("10.0.0.7".parse().unwrap());
    let pick = || mesh.pick(&dest(), &client).unwrap().addr;
    let bound = pick();
    assert_eq!(pick(), bound, "sticky");
    // Ejected (3 of 4 healthy): the client is balanced afresh, and stays.
    mesh.report(&dest(), bound, Outcome::Failure).unwrap();
    let moved = pick();
    assert_ne!(moved, bound, "ejected: balanced afresh");
    assert_eq!(pick(), moved, "and bound anew");
    // Again (2 of 4 healthy, not below the 50% threshold).
    mesh.report(&dest(), moved, Outcome::Failure).unwrap();
    let third = pick();
    assert!(![bound, moved].contains(&third), "{third}");
    // Every endpoint ejected: below the threshold ejections are ignored,
    // and the binding to an ejected endpoint holds.
    for e in (1..=4).map(ep) {
        mesh.report(&dest(), e, Outcome::Failure).unwrap();
    }
    for _ in 0..4 {
        assert_eq!(pick(), third, "panic: held");
    }
}
