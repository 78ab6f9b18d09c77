//! Invariants over random cluster states:
//!
//! * applying updates in any order (with stale versions and stray objects
//!   mixed in) and then the same final state gives the same snapshot;
//! * a pick always returns an eligible endpoint of the current snapshot;
//! * readers running during a stream of updates only ever see whole versions,
//!   and versions never go backwards for a reader.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pobox::{
    Client, Destination, IpFamily, Mesh, MeshConfig, Object, PickError, Snapshot, Traffic, Update,
};
use proptest::prelude::*;
use serde_json::{json, Value};

/// A small deterministic generator: proptest picks the seed and shrinks it.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const ZONES: [&str; 2] = ["zone-a", "zone-b"];

fn service(rng: &mut Rng, i: usize) -> Value {
    let dual = rng.chance(30);
    let mut cluster_ips = vec![format!("10.96.0.{}", 10 + i)];
    let mut families = vec!["IPv4"];
    if dual {
        cluster_ips.push(format!("fd00::{:x}", 10 + i));
        families.push("IPv6");
    }
    let node_port = rng.chance(40);
    let mut spec = json!({
        "type": if node_port { "NodePort" } else { "ClusterIP" },
        "clusterIP": cluster_ips[0],
        "clusterIPs": cluster_ips,
        "ipFamilies": families,
        "ports": [
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
        ],
        "internalTrafficPolicy": *rng.pick(&["Cluster", "Local"]),
        "publishNotReadyAddresses": rng.chance(15),
    });
    if node_port {
        spec["ports"][0]["nodePort"] = json!(30000 + i);
        spec["externalTrafficPolicy"] = json!(*rng.pick(&["Cluster", "Local"]));
    }
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": "prop"},
        "spec": spec,
    })
}

fn slice(rng: &mut Rng, i: usize, j: usize, v6: bool) -> Value {
    let hinted = rng.chance(40);
    let count = rng.below(5);
    let endpoints: Vec<Value> = (0..count)
        .map(|_| {
            // Few distinct addresses, so slices overlap and duplicates merge.
            let host = rng.below(6);
            let address = if v6 {
                format!("fd01::{i}:{host}")
            } else {
                format!("10.{}.{i}.{host}", 200)
            };
            let mut ep = json!({
                "addresses": [address],
                "conditions": {
                    "ready": rng.chance(60),
                    "serving": rng.chance(70),
                    "terminating": rng.chance(30),
                },
                "nodeName": *rng.pick(&NODES),
                "zone": *rng.pick(&ZONES),
            });
            if hinted {
                ep["hints"] = json!({"forZones": [{"name": *rng.pick(&ZONES)}]});
                if rng.chance(50) {
                    ep["hints"]["forNodes"] = json!([{"name": *rng.pick(&NODES)}]);
                }
            }
            ep
        })
        .collect();
    let port_name = if rng.chance(90) { "http" } else { "other" };
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": format!("svc-{i}-{j}{}", if v6 { "-v6" } else { "" }),
            "namespace": "prop",
            "labels": {"kubernetes.io/service-name": format!("svc-{i}")},
        },
        "addressType": if v6 { "IPv6" } else { "IPv4" },
        "ports": [
            {"name": port_name, "port": 8080 + rng.below(2), "protocol": "TCP"},
            {"name": "dns", "port": 5353, "protocol": "UDP"},
        ],
        "endpoints": endpoints,
    })
}

/// A random final state: Services and their slices.
fn state(seed: u64) -> Vec<Value> {
    let mut rng = Rng(seed | 1);
    let mut objects = Vec::new();
    for i in 0..(1 + rng.below(5) as usize) {
        objects.push(service(&mut rng, i));
        for j in 0..rng.below(3) as usize {
            objects.push(slice(&mut rng, i, j, false));
            if rng.chance(30) {
                objects.push(slice(&mut rng, i, j, true));
            }
        }
    }
    objects
}

fn object(value: &Value) -> Object {
    let bytes = serde_json::to_vec(value).unwrap();
    pobox::parse(&bytes).unwrap().objects.remove(0)
}

fn mesh() -> Mesh {
    Mesh::new(
        MeshConfig::new()
            .node("node-a")
            .zone("zone-a")
            .node_ip("192.168.0.1".parse().unwrap()),
    )
    .unwrap()
}

/// Everything a snapshot decides, in a canonical form.
fn dump(snapshot: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for entry in snapshot.services() {
        let svc = entry.service();
        out.push(format!("service {} family {:?}", svc.key(), entry.family()));
        for port in entry.ports() {
            out.push(format!("  port {:?}", port.spec()));
            for e in port.endpoints() {
                out.push(format!(
                    "    {} r{} s{} t{} l{} {:?} {:?}",
                    e.addr(),
                    e.is_ready(),
                    e.is_serving(),
                    e.is_terminating(),
                    e.is_local(),
                    e.node(),
                    e.zone()
                ));
            }
            for traffic in [Traffic::Internal, Traffic::External] {
                for family in [IpFamily::V4, IpFamily::V6] {
                    let set: Vec<SocketAddr> =
                        port.eligible(traffic, family).map(|e| e.addr()).collect();
                    out.push(format!("    {traffic:?} {family:?} {set:?}"));
                }
            }
        }
    }
    out
}

/// Every virtual address of the state, to pick from.
fn frontends(snapshot: &Snapshot) -> Vec<Destination> {
    let mut dests = Vec::new();
    for entry in snapshot.services() {
        let svc = entry.service();
        for port in svc.ports() {
            for ip in svc.cluster_ips() {
                dests.push(Destination::Addr {
                    addr: SocketAddr::new(*ip, port.port()),
                    protocol: Some(port.protocol()),
                });
            }
            if let Some(np) = port.node_port() {
                dests.push(Destination::Addr {
                    addr: SocketAddr::new("192.168.0.1".parse::<IpAddr>().unwrap(), np),
                    protocol: Some(port.protocol()),
                });
            }
            dests.push(
                format!(
                    "{}.{}:{}/{}",
                    svc.key().name(),
                    svc.key().namespace(),
                    port.name(),
                    port.protocol()
                )
                .parse()
                .unwrap(),
            );
        }
    }
    dests
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_order_gives_the_same_snapshot(seed in any::<u64>(), noise in any::<u64>()) {
        let final_state: Vec<Object> = state(seed).iter().map(object).collect();

        let straight = mesh();
        straight.update(final_state.iter().cloned().map(Update::Apply)).unwrap();

        // The same objects one by one in a shuffled order, after stale
        // versions of them and stray objects that are deleted again.
        let shuffled = mesh();
        let mut rng = Rng(noise | 1);
        for value in state(noise) {
            let o = object(&value);
            // A stale or stray object: same names, other content.
            shuffled.update([Update::Apply(o)]).unwrap();
        }
        let mut order: Vec<usize> = (0..final_state.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        for i in order {
            shuffled.update([Update::Apply(final_state[i].clone())]).unwrap();
        }
        // Remove whatever the noise added that the final state lacks.
        let wanted: Vec<(String, String)> = final_state.iter().map(key).collect();
        for o in state(noise).iter().map(object) {
            let (kind, name) = key(&o);
            if !wanted.contains(&(kind.clone(), name.clone())) {
                let kind = pobox::Kind::parse(&kind).unwrap();
                shuffled.delete(kind, "prop", &name).unwrap();
            }
        }
        prop_assert_eq!(dump(&straight.snapshot()), dump(&shuffled.snapshot()));

        // Reset to the final state from anything gives it too.
        let reset = mesh();
        reset.update(state(noise).iter().map(object).map(Update::Apply)).unwrap();
        reset.update([Update::Reset(final_state.clone())]).unwrap();
        prop_assert_eq!(dump(&straight.snapshot()), dump(&reset.snapshot()));

        // Applying the final state again changes nothing.
        let report = straight.update(final_state.into_iter().map(Update::Apply)).unwrap();
        prop_assert!(!report.changed);
    }

    #[test]
    fn a_pick_is_always_an_eligible_endpoint(seed in any::<u64>()) {
        let mesh = mesh();
        mesh.update(state(seed).iter().map(object).map(Update::Apply)).unwrap();
        let snapshot = mesh.snapshot();
        for dest in frontends(&snapshot) {
            let resolved = snapshot.resolve(&dest, &Client::new()).unwrap();
            let eligible: Vec<SocketAddr> = resolved.eligible().map(|e| e.addr()).collect();
            for _ in 0..(eligible.len() * 2 + 1) {
                match mesh.pick(&dest, &Client::new()) {
                    Ok(pick) => {
                        prop_assert!(eligible.contains(&pick.addr), "{} picked {}, eligible {:?}", dest, pick.addr, eligible);
                        prop_assert_eq!(pick.version, snapshot.version());
                    }
                    Err(PickError::NoEndpoints { .. }) => prop_assert!(eligible.is_empty()),
                    Err(e) => prop_assert!(false, "{dest}: {e}"),
                }
            }
        }
    }
}

fn key(o: &Object) -> (String, String) {
    match o {
        Object::Service(s) => ("Service".into(), s.key().name().to_owned()),
        Object::EndpointSlice(e) => ("EndpointSlice".into(), e.name().to_owned()),
    }
}

/// Version `k` of a fixed set of Services: every endpoint of every Service
/// listens on port `10000 + k`, so a reader can tell versions apart.
fn generation(k: u64) -> Vec<Update> {
    let mut updates = Vec::new();
    for i in 0..20 {
        updates.push(Update::Apply(object(&json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("svc-{i}"), "namespace": "gen"},
            "spec": {"clusterIP": format!("10.96.1.{i}"), "ports": [{"port": 80}]},
        }))));
        updates.push(Update::Apply(object(&json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("svc-{i}-x"), "namespace": "gen",
                         "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
            "addressType": "IPv4",
            "ports": [{"port": 10000 + k}],
            "endpoints": (0..(1 + k % 4)).map(|h| json!({"addresses": [format!("10.1.{i}.{h}")]})).collect::<Vec<_>>(),
        }))));
    }
    updates
}

#[test]
fn readers_see_only_whole_versions_in_order() {
    let mesh = mesh();
    mesh.update(generation(0)).unwrap();
    let base = mesh.version();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let mesh = mesh.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut last = 0;
                let mut seen = 0u64;
                let dests: Vec<Destination> = (0..20)
                    .map(|i| format!("10.96.1.{i}:80").parse().unwrap())
                    .collect();
                while !done.load(Ordering::Relaxed) || seen == 0 {
                    let snapshot = mesh.snapshot();
                    let v = snapshot.version();
                    assert!(v >= last, "version went back from {last} to {v}");
                    last = v;
                    let k = v - base;
                    // Every Service of this snapshot is at generation k.
                    for dest in &dests {
                        let e = snapshot.pick(dest, &Client::new()).unwrap();
                        assert_eq!(e.port() as u64, 10000 + k, "torn snapshot at version {v}");
                        let all = snapshot.resolve(dest, &Client::new()).unwrap();
                        assert_eq!(all.eligible().count() as u64, 1 + k % 4);
                    }
                    // And the by-value pick agrees with some whole version.
                    let p = mesh.pick(&dests[0], &Client::new()).unwrap();
                    assert!(p.version >= v);
                    assert_eq!(p.addr.port() as u64, 10000 + (p.version - base));
                    seen += 1;
                }
                seen
            })
        })
        .collect();
    for k in 1..=300 {
        let report = mesh.update(generation(k)).unwrap();
        assert_eq!(report.version, base + k);
    }
    done.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
}

#[test]
fn mesh_is_send_sync_and_clones_share_state() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Mesh>();
    let a = mesh();
    let b = a.clone();
    a.update(generation(1)).unwrap();
    assert_eq!(a.version(), b.version());
    assert_eq!(
        b.pick(&"10.96.1.3:80".parse().unwrap(), &Client::new())
            .unwrap()
            .addr
            .port(),
        10001
    );
}
