//! The core engine's speed and memory targets, on a table of 10,000 Services
//! × 10 endpoints (100,000 endpoints):
//!
//! * `pick/vip_rr/*`: resolve `VIP:port` and pick round robin, one thread;
//! * `pick/threads/{1,2}`: the same on one and on two threads at once (time
//!   per pick per thread; equal times mean linear scaling);
//! * `publish/one_endpoint`: apply a change of one endpoint and publish;
//! * `load/json_list`: load the whole table from one JSON `List`;
//! * snapshot memory per endpoint, printed and written with the medians to
//!   `target/bench/summary.json`.
//!
//! `cargo bench -p pobox --bench mesh`; the test command runs each once
//! (`-- --test`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use pobox::{Client, Destination, Mesh, MeshConfig, Update};
use serde_json::{json, Value};

#[path = "common/summary.rs"]
mod summary;

// === allocation counting ===

/// Counts live heap bytes, to measure what a snapshot keeps.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is only a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// === the table ===

const SERVICES: usize = 10_000;
const PER_SERVICE: usize = 10;

fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i as u32)
}

fn slice(i: usize, generation: usize) -> Value {
    let base = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + (i * PER_SERVICE) as u32;
    let endpoints: Vec<Value> = (0..PER_SERVICE)
        .map(|j| {
            json!({
                "addresses": [Ipv4Addr::from(base + j as u32).to_string()],
                // `generation` flips one endpoint's readiness: a one-endpoint change.
                "conditions": {"ready": !(j == 0 && generation % 2 == 1), "serving": true, "terminating": false},
                "nodeName": format!("node-{}", j % 50),
                "zone": format!("zone-{}", j % 3),
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("svc-{i}-abcde"),
            "namespace": "bench",
            "labels": {"kubernetes.io/service-name": format!("svc-{i}")},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

fn table() -> Vec<u8> {
    let mut items = Vec::with_capacity(SERVICES * 2);
    for i in 0..SERVICES {
        items.push(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": vip(i).to_string(),
                "clusterIPs": [vip(i).to_string()],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            },
        }));
        items.push(slice(i, 0));
    }
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": items})).unwrap()
}

fn loaded(table: &[u8]) -> Mesh {
    let mesh = Mesh::new(MeshConfig::new().node("node-1").zone("zone-1")).unwrap();
    mesh.apply(table).unwrap();
    mesh
}

fn destinations() -> Vec<Destination> {
    // A fixed pseudo-random walk over the VIPs, so lookups miss the cache as
    // traffic to many Services would.
    let mut x = 0x2545_f491_u64;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Destination::from(SocketAddr::new(vip(x as usize % SERVICES).into(), 80))
        })
        .collect()
}

// === benchmarks ===

fn picks(c: &mut Criterion, mesh: &Mesh) {
    let mut g = c.benchmark_group("pick");
    let client = Client::new();
    let one: Destination = "10.96.0.7:80".parse().unwrap();
    g.bench_function("vip_rr/one_service", |b| {
        b.iter(|| mesh.pick(black_box(&one), &client).unwrap())
    });
    // The same destination through a route: resolved once per version.
    let route = mesh.route(&one, None);
    g.bench_function("route_rr/one_service", |b| {
        b.iter(|| black_box(&route).pick(&client).unwrap())
    });
    let many = destinations();
    g.bench_function("vip_rr/random_services", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & 4095;
            mesh.pick(black_box(&many[i]), &client).unwrap()
        })
    });
    let by_name: Destination = "svc-7.bench:http".parse().unwrap();
    g.bench_function("name_rr/one_service", |b| {
        b.iter(|| mesh.pick(black_box(&by_name), &client).unwrap())
    });
    g.bench_function("parse_and_pick/vip_string", |b| {
        b.iter(|| {
            let d = Destination::parse(black_box("10.96.0.7:80")).unwrap();
            mesh.pick(&d, &client).unwrap()
        })
    });
    for threads in [1usize, 2] {
        g.bench_function(format!("threads/{threads}"), |b| {
            b.iter_custom(|iters| parallel_picks(mesh, threads, iters))
        });
    }
    g.finish();
}

/// Time per pick per thread with `threads` threads picking at once.
fn parallel_picks(mesh: &Mesh, threads: usize, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let dests = Arc::new(destinations());
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mesh = mesh.clone();
            let barrier = barrier.clone();
            let dests = dests.clone();
            std::thread::spawn(move || {
                let client = Client::new();
                barrier.wait();
                let start = Instant::now();
                for i in 0..iters as usize {
                    black_box(mesh.pick(&dests[(i + t * 977) & 4095], &client).unwrap());
                }
                start.elapsed()
            })
        })
        .collect();
    barrier.wait();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap()
}

fn publish(c: &mut Criterion, mesh: &Mesh) {
    let mut g = c.benchmark_group("publish");
    // Index 1 flips one endpoint's readiness, index 0 flips it back: each
    // apply below changes exactly one endpoint.
    let versions: Vec<Update> = (0..2)
        .map(|generation| {
            let bytes = serde_json::to_vec(&slice(4242, generation)).unwrap();
            let object = pobox::parse(&bytes).unwrap().objects.remove(0);
            Update::Apply(object)
        })
        .collect();
    let mut flip = 0;
    g.bench_function("one_endpoint/typed", |b| {
        b.iter(|| {
            flip ^= 1;
            let report = mesh.update([versions[flip].clone()]).unwrap();
            assert!(report.changed);
        })
    });
    let docs: Vec<Vec<u8>> = (0..2)
        .map(|generation| serde_json::to_vec(&slice(4242, generation)).unwrap())
        .collect();
    g.bench_function("one_endpoint/json", |b| {
        b.iter(|| {
            flip ^= 1;
            let report = mesh.apply(&docs[flip]).unwrap();
            assert!(report.changed);
        })
    });
    g.finish();
}

fn load(c: &mut Criterion, table: &[u8]) {
    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("json_list/100k_endpoints", |b| {
        b.iter(|| black_box(loaded(table)))
    });
    g.finish();
}

/// Live heap bytes of a snapshot once the mesh (and its store) is gone.
fn snapshot_bytes(table: &[u8]) -> (isize, isize) {
    let before = LIVE.load(Ordering::SeqCst);
    let mesh = loaded(table);
    let with_store = LIVE.load(Ordering::SeqCst) - before;
    let snapshot = mesh.snapshot();
    drop(mesh);
    let snapshot_only = LIVE.load(Ordering::SeqCst) - before;
    drop(snapshot);
    (snapshot_only, with_store)
}

fn benches(c: &mut Criterion) {
    let table = table();
    let endpoints = (SERVICES * PER_SERVICE) as isize;
    let (snapshot, total) = snapshot_bytes(&table);
    println!(
        "memory: snapshot {} bytes per endpoint; snapshot + desired-state store {} bytes per endpoint",
        snapshot / endpoints,
        total / endpoints
    );
    summary::record(&[
        (
            "memory/snapshot_bytes_per_endpoint",
            (snapshot / endpoints) as f64,
        ),
        (
            "memory/snapshot_and_store_bytes_per_endpoint",
            (total / endpoints) as f64,
        ),
    ]);
    let mesh = loaded(&table);
    picks(c, &mesh);
    publish(c, &mesh);
    load(c, &table);
}

criterion_group!(group, benches);

fn main() {
    group();
    Criterion::default().configure_from_args().final_summary();
    summary::medians();
}
