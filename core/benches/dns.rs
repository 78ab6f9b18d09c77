//! DNS lookups in a snapshot of 10,000 Services (target: ≤ 150 ns median):
//!
//! * `lookup/a/random_services`: `A` of `<svc>.bench.svc.cluster.local.` over
//!   a pseudo-random walk of the ClusterIP Services;
//! * `lookup/srv/one_service`, `lookup/ptr/cluster_ip`;
//! * `lookup/a/headless_10_endpoints`: a headless Service's ten addresses;
//! * `lookup/nxdomain`, `lookup_from/short_name` (the search path: the first
//!   candidate answers).
//!
//! `cargo bench -p pobox --bench dns`; the test command runs each once.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use pobox::{Mesh, MeshConfig, RecordType};
use serde_json::json;

const SERVICES: usize = 10_000;
/// Every 100th Service is headless, with ten endpoints.
const HEADLESS_EVERY: usize = 100;

fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i as u32)
}

fn table() -> Vec<u8> {
    let mut items = Vec::new();
    for i in 0..SERVICES {
        let headless = i % HEADLESS_EVERY == 0;
        items.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
            "spec": {
                "clusterIP": if headless { "None".to_owned() } else { vip(i).to_string() },
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            },
        }));
        if headless {
            let base = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (i * 10) as u32;
            let endpoints: Vec<_> = (0..10)
                .map(|j| json!({"addresses": [Ipv4Addr::from(base + j).to_string()], "hostname": format!("pod-{j}")}))
                .collect();
            items.push(json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": format!("svc-{i}-x"), "namespace": "bench",
                    "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": endpoints,
            }));
        }
    }
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": items})).unwrap()
}

fn names() -> Vec<String> {
    let mut x = 0x2545_f491_u64;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut i = x as usize % SERVICES;
            if i % HEADLESS_EVERY == 0 {
                i += 1;
            }
            format!("svc-{i}.bench.svc.cluster.local.")
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    mesh.apply(&table()).unwrap();
    let snapshot = mesh.snapshot();
    let mut g = c.benchmark_group("lookup");
    g.measurement_time(Duration::from_secs(3));
    let many = names();
    g.bench_function("a/random_services", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 4095;
            snapshot.lookup(black_box(&many[i]), RecordType::A)
        })
    });
    g.bench_function("a/one_service", |b| {
        b.iter(|| snapshot.lookup(black_box("svc-7.bench.svc.cluster.local."), RecordType::A))
    });
    g.bench_function("srv/one_service", |b| {
        b.iter(|| {
            snapshot.lookup(
                black_box("_http._tcp.svc-7.bench.svc.cluster.local."),
                RecordType::Srv,
            )
        })
    });
    g.bench_function("ptr/cluster_ip", |b| {
        b.iter(|| snapshot.lookup(black_box("7.0.96.10.in-addr.arpa."), RecordType::Ptr))
    });
    g.bench_function("a/headless_10_endpoints", |b| {
        b.iter(|| snapshot.lookup(black_box("svc-200.bench.svc.cluster.local."), RecordType::A))
    });
    g.bench_function("nxdomain", |b| {
        b.iter(|| snapshot.lookup(black_box("nope.bench.svc.cluster.local."), RecordType::A))
    });
    g.finish();
    let mut g = c.benchmark_group("lookup_from");
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("short_name", |b| {
        b.iter(|| snapshot.lookup_from("bench", black_box("svc-7"), RecordType::A))
    });
    g.finish();
}

criterion_group!(group, benches);
criterion_main!(group);
