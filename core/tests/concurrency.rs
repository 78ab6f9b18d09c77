//! Readers picking while a writer publishes: every pick is an eligible
//! endpoint of some published version (the version the pick reports), and
//! the versions a reader observes never go backwards.
//!
//! The writer applies a random stream of EndpointSlice updates to three
//! Services (round robin, `ClientIP` affinity, Maglev). Before each apply it
//! records the eligible set the next version must have, worked out here by
//! kube-proxy's rule (the ready endpoints; if none, the serving-terminating
//! ones), so a reader checks each pick against an independent record, not
//! against the snapshot that produced it. The run is bounded by a number of
//! updates, not by time.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use pobox::{Client, Destination, Mesh, MeshConfig};
use serde_json::{json, Value};

const UPDATES: u64 = 400;
const READERS: usize = 3;
/// Picks between two yields of a reader, so that the writer is not starved
/// on a machine with fewer cores than threads.
const BURST: usize = 32;
const ENDPOINTS: u8 = 12;
const SERVICES: [(&str, &str, &str); 3] = [
    ("rr", "10.96.0.10", "round-robin"),
    ("sticky", "10.96.0.11", "round-robin"),
    ("maglev", "10.96.0.12", "maglev"),
];

/// A small deterministic generator (xorshift64*), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn services() -> Value {
    let items: Vec<Value> = SERVICES
        .iter()
        .map(|(name, ip, policy)| {
            let mut spec = json!({"clusterIP": ip, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]});
            if *name == "sticky" {
                spec["sessionAffinity"] = json!("ClientIP");
            }
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": name, "namespace": "default",
                                "annotations": {"pobox.io/lb-policy": policy}},
                   "spec": spec})
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// Condition of endpoint 10.1.0.i: ready, serving-terminating, or not ready.
#[derive(Clone, Copy, PartialEq)]
enum State {
    Ready,
    Terminating,
    NotReady,
}

/// The slices of every Service for `states` (`None`: endpoint absent), and
/// the eligible set kube-proxy would compute for them.
fn update(states: &[Option<State>]) -> (Value, BTreeSet<SocketAddr>) {
    let endpoints: Vec<Value> = states
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let (ready, serving, terminating) = match (*s)? {
                State::Ready => (true, true, false),
                State::Terminating => (false, true, true),
                State::NotReady => (false, false, false),
            };
            Some(json!({"addresses": [format!("10.1.0.{}", i + 1)],
                        "conditions": {"ready": ready, "serving": serving, "terminating": terminating}}))
        })
        .collect();
    let items: Vec<Value> = SERVICES
        .iter()
        .map(|(name, _, _)| {
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                   "metadata": {"name": format!("{name}-1"), "namespace": "default",
                                "labels": {"kubernetes.io/service-name": name}},
                   "addressType": "IPv4",
                   "ports": [{"name": "http", "port": 8080}],
                   "endpoints": endpoints})
        })
        .collect();
    let with = |want: State| -> BTreeSet<SocketAddr> {
        states
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == Some(want))
            .map(|(i, _)| SocketAddr::from(([10, 1, 0, i as u8 + 1], 8080)))
            .collect()
    };
    let ready = with(State::Ready);
    let eligible = if ready.is_empty() {
        with(State::Terminating)
    } else {
        ready
    };
    (
        json!({"apiVersion": "v1", "kind": "List", "items": items}),
        eligible,
    )
}

#[test]
fn every_pick_is_eligible_in_its_version_and_versions_never_go_backwards() {
    let mesh = Mesh::new(MeshConfig::new().node("node-a")).unwrap();
    mesh.apply(services().to_string().as_bytes()).unwrap();
    // version -> the eligible set of every Service in it, written before
    // that version is published.
    let published: Arc<RwLock<HashMap<u64, BTreeSet<SocketAddr>>>> = Arc::new(RwLock::new(
        HashMap::from([(mesh.version(), BTreeSet::new())]),
    ));
    let done = Arc::new(AtomicBool::new(false));
    let picks = Arc::new(AtomicU64::new(0));

    let readers: Vec<_> = (0..READERS)
        .map(|r| {
            let (mesh, published, done, picks) =
                (mesh.clone(), published.clone(), done.clone(), picks.clone());
            std::thread::spawn(move || {
                let dests: Vec<Destination> = SERVICES
                    .iter()
                    .map(|(_, ip, _)| format!("{ip}:80").parse().unwrap())
                    .collect();
                let mut last = 0u64;
                let mut n = 0u64;
                let mut i = 0usize;
                while !done.load(Ordering::Acquire) {
                    let client_ip = IpAddr::from([10, 0, r as u8, (i % 7) as u8]);
                    let client = Client::new().ip(client_ip);
                    let dest = &dests[i % dests.len()];
                    i += 1;
                    if i % BURST == 0 {
                        std::thread::yield_now();
                    }
                    let seen = mesh.version();
                    assert!(seen >= last, "reader {r}: version {seen} after {last}");
                    last = seen;
                    let Ok(pick) = mesh.pick(dest, &client) else {
                        continue;
                    };
                    assert!(
                        pick.version >= last,
                        "reader {r}: picked from {} after seeing {last}",
                        pick.version
                    );
                    last = pick.version;
                    let record = published.read().unwrap();
                    let eligible = record
                        .get(&pick.version)
                        .unwrap_or_else(|| panic!("version {} was never recorded", pick.version));
                    assert!(
                        eligible.contains(&pick.addr),
                        "reader {r}: {dest} -> {} in version {}, eligible {eligible:?}",
                        pick.addr,
                        pick.version
                    );
                    n += 1;
                }
                picks.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut states = vec![None; usize::from(ENDPOINTS)];
    let mut changed = 0;
    for _ in 0..UPDATES {
        // Change one to three endpoints at a time, as rollouts do.
        for _ in 0..=rng.next() % 3 {
            let i = (rng.next() % u64::from(ENDPOINTS)) as usize;
            states[i] = match rng.next() % 5 {
                0 => None,
                1 => Some(State::NotReady),
                2 => Some(State::Terminating),
                _ => Some(State::Ready),
            };
        }
        let (slices, eligible) = update(&states);
        let next = mesh.version() + 1;
        published.write().unwrap().insert(next, eligible);
        let report = mesh.apply(slices.to_string().as_bytes()).unwrap();
        if report.changed {
            assert_eq!(report.version, next);
            changed += 1;
        }
    }
    done.store(true, Ordering::Release);
    for reader in readers {
        reader.join().unwrap();
    }
    assert!(
        changed > UPDATES / 2,
        "only {changed} updates changed anything"
    );
    assert!(picks.load(Ordering::Relaxed) > 0, "no reader picked");
}
