//! Balancing policies on 1,000 endpoints: pick cost per policy, and the
//! cost of publishing a change that rebuilds a policy's table.
//!
//! `cargo bench -p pobox --bench policies`. Side-by-side figures against
//! other crates' balancers are future work (see CHANGELOG).

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion};
use pobox::{Client, Destination, Mesh, MeshConfig};
use serde_json::{json, Value};

const N: usize = 1000;

/// The Service and one slice of `N` endpoints; `flip` marks the first one
/// not ready, so that two versions differ by one endpoint.
fn objects(annotations: Value, weights: bool, flip: bool) -> Vec<u8> {
    let mut w = serde_json::Map::new();
    let endpoints: Vec<Value> = (0..N)
        .map(|i| {
            let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 1)) + i as u32);
            if weights {
                // Weights 1..=100, spread deterministically.
                w.insert(ip.to_string(), json!(1 + (i * 37) % 100));
            }
            json!({"addresses": [ip.to_string()], "conditions": {"ready": !(flip && i == 0)}})
        })
        .collect();
    let mut slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": endpoints,
    });
    if weights {
        slice["metadata"]["annotations"] =
            json!({"pobox.io/weights": Value::Object(w).to_string()});
    }
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "web", "namespace": "default", "annotations": annotations},
         "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}},
        slice,
    ]}))
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let dest: Destination = "10.96.0.10:80".parse().unwrap();
    let cases = [
        ("round-robin", json!({}), false),
        ("random", json!({"pobox.io/lb-policy": "random"}), false),
        (
            "weighted-round-robin",
            json!({"pobox.io/lb-policy": "weighted-round-robin"}),
            true,
        ),
        ("maglev", json!({"pobox.io/lb-policy": "maglev"}), true),
        (
            "ring-hash-256k",
            json!({"pobox.io/lb-policy": "ring-hash", "pobox.io/ring-size": "262144"}),
            true,
        ),
    ];
    let mut pick = c.benchmark_group("policy_pick/1000_endpoints");
    for (name, annotations, weights) in &cases {
        let mesh = Mesh::new(MeshConfig::new()).unwrap();
        mesh.apply(&objects(annotations.clone(), *weights, false))
            .unwrap();
        let ip = "192.0.2.1".parse().unwrap();
        pick.bench_function(*name, |b| {
            b.iter(|| mesh.pick(black_box(&dest), &Client::new().ip(ip)).unwrap())
        });
    }
    pick.finish();

    let mut build = c.benchmark_group("policy_publish/1000_endpoints");
    build.sample_size(10);
    for (name, annotations, weights) in &cases {
        let mesh = Mesh::new(MeshConfig::new()).unwrap();
        let docs = [
            objects(annotations.clone(), *weights, false),
            objects(annotations.clone(), *weights, true),
        ];
        mesh.apply(&docs[0]).unwrap();
        let mut flip = 0;
        build.bench_function(*name, |b| {
            b.iter(|| {
                flip ^= 1;
                mesh.apply(&docs[flip]).unwrap()
            })
        });
    }
    build.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
