//! `sessionAffinity: ClientIP` on the pick path (balancing issue, target 5:
//! with 64k live clients a hit in ≤ 15 ns with no lock on the hit path, a
//! miss and its insert in ≤ 80 ns). Two round-robin Services of 100
//! endpoints in one mesh, identical but for the affinity, so that the
//! affinity's cost is the difference between their picks:
//!
//! * `affinity/hit_64k/client_ip`: 65,536 clients already bound (the default
//!   capacity, 262,144, so nothing is evicted); each pick is one of them, in
//!   turn;
//! * `affinity/hit_64k/no_affinity`: the same clients picking from the
//!   Service without affinity;
//! * `affinity/hit_64k/client_ip_64_hot`: the same table, but only 64 of
//!   its clients in turn, whose entries stay in cache: the hit without its
//!   cache misses (the set's tag line and the entry's line), to tell the
//!   work from the memory latency;
//! * `affinity/miss_insert/evicting_64k`: a client never seen before on each
//!   pick, the table full at a capacity of 65,536, so each pick also evicts
//!   the least recently used entry of its set (the steady state of a spray);
//! * `affinity/miss_insert/below_capacity_1m`: the same with a capacity of
//!   1,048,576 and a table filling from empty (its growth included); a fresh
//!   mesh, made outside the timing, once it is full;
//! * `affinity/miss_insert/no_affinity`: new clients on the Service without
//!   affinity.
//!
//! `cargo bench -p pobox --bench affinity`; the test command runs each once
//! (`-- --test`). Medians go to `target/bench/summary.json`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use pobox::{Client, Destination, Mesh, MeshConfig, DEFAULT_AFFINITY_CAPACITY};
use serde_json::{json, Value};

#[path = "common/summary.rs"]
mod summary;

const ENDPOINTS: usize = 100;
/// Live clients for the hit benchmark: a power of two, cycled by masking.
const CLIENTS: usize = 65_536;
const BELOW_CAPACITY: usize = 1 << 20;

// === the mesh ===

/// Two Services of `ENDPOINTS` endpoints: `sticky` (10.96.0.1) with
/// `ClientIP` affinity and `plain` (10.96.0.2) without.
fn objects() -> Vec<u8> {
    let mut items = Vec::new();
    for (i, (name, affinity)) in [("sticky", true), ("plain", false)].into_iter().enumerate() {
        let mut spec = json!({
            "clusterIP": format!("10.96.0.{}", i + 1),
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
        });
        if affinity {
            spec["sessionAffinity"] = json!("ClientIP");
        }
        items.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": spec,
        }));
        let endpoints: Vec<Value> = (0..ENDPOINTS)
            .map(|j| json!({"addresses": [format!("10.{}.0.{}", 128 + i, j + 1)]}))
            .collect();
        items.push(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-1"), "namespace": "bench",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": endpoints,
        }));
    }
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": items})).unwrap()
}

struct Bench {
    mesh: Mesh,
    sticky: Destination,
    plain: Destination,
}

impl Bench {
    fn new(capacity: usize) -> Bench {
        let mesh = Mesh::new(MeshConfig::new().affinity_capacity(capacity)).unwrap();
        mesh.apply(&objects()).unwrap();
        let bench = Bench {
            mesh,
            sticky: "10.96.0.1:80".parse().unwrap(),
            plain: "10.96.0.2:80".parse().unwrap(),
        };
        // The first pick from a mesh fills this thread's snapshot cache; it
        // also lets go of the last mesh's snapshot (and so its affinity
        // table), which must not happen inside a timing.
        bench.pick(&bench.plain, client(0));
        bench
    }

    #[inline]
    fn pick(&self, dest: &Destination, ip: IpAddr) -> SocketAddr {
        self.mesh.pick(dest, &Client::new().ip(ip)).unwrap().addr
    }
}

/// Client number `n` (`n < 2^32`): distinct numbers, distinct addresses.
fn client(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

// === benchmarks ===

fn hits(c: &mut Criterion) {
    let b = Bench::new(DEFAULT_AFFINITY_CAPACITY);
    let clients: Vec<IpAddr> = (0..CLIENTS as u32).map(client).collect();
    let bound: Vec<SocketAddr> = clients.iter().map(|&ip| b.pick(&b.sticky, ip)).collect();
    // Every client is bound and its next pick is a hit (round robin alone
    // would have moved on: 65,536 is not a multiple of 100).
    assert_eq!(b.mesh.affinity_entries(), CLIENTS);
    for (&ip, &addr) in clients.iter().zip(&bound) {
        assert_eq!(b.pick(&b.sticky, ip), addr);
    }

    let mut g = c.benchmark_group("affinity");
    for (name, dest, cycle) in [
        ("hit_64k/client_ip", &b.sticky, CLIENTS),
        ("hit_64k/no_affinity", &b.plain, CLIENTS),
        ("hit_64k/client_ip_64_hot", &b.sticky, 64),
    ] {
        g.bench_function(name, |bencher| {
            let mut i = 0;
            bencher.iter(|| {
                i = (i + 1) & (cycle - 1);
                b.pick(black_box(dest), clients[i])
            })
        });
    }
    g.finish();
    assert_eq!(
        b.mesh.affinity_entries(),
        CLIENTS,
        "hits only: no entry added"
    );
}

fn misses(c: &mut Criterion) {
    let mut g = c.benchmark_group("affinity");

    // A full table: every new client evicts the least recently used entry
    // of its set. Each shard holds a 64th of the capacity and clients hash
    // to shards unevenly, so the table is full (every shard full) only
    // after more clients than the capacity have come.
    let b = Bench::new(CLIENTS);
    let mut next: u32 = 1;
    for _ in 0..4 * CLIENTS {
        b.pick(&b.sticky, client(next));
        next += 1;
    }
    assert_eq!(b.mesh.affinity_entries(), CLIENTS);
    g.bench_function("miss_insert/evicting_64k", |bencher| {
        bencher.iter(|| {
            next += 1;
            b.pick(black_box(&b.sticky), client(next))
        })
    });
    assert_eq!(b.mesh.affinity_entries(), CLIENTS, "full, never over");
    g.bench_function("miss_insert/no_affinity", |bencher| {
        bencher.iter(|| {
            next += 1;
            b.pick(black_box(&b.plain), client(next))
        })
    });
    drop(b);

    // A table with room: nothing is evicted until it is full, when the
    // timing stops for a fresh mesh.
    let mut b = Bench::new(BELOW_CAPACITY);
    let mut held = 0;
    g.bench_function("miss_insert/below_capacity_1m", |bencher| {
        bencher.iter_custom(|iters| {
            let mut left = iters as usize;
            let mut timed = Duration::ZERO;
            while left > 0 {
                if held == BELOW_CAPACITY {
                    b = Bench::new(BELOW_CAPACITY);
                    held = 0;
                }
                let run = left.min(BELOW_CAPACITY - held);
                let start = Instant::now();
                for _ in 0..run {
                    next += 1;
                    black_box(b.pick(black_box(&b.sticky), client(next)));
                }
                timed += start.elapsed();
                held += run;
                left -= run;
            }
            timed
        })
    });
    assert_eq!(
        b.mesh.affinity_entries(),
        held,
        "no eviction below capacity"
    );
    g.finish();
}

fn benches(c: &mut Criterion) {
    hits(c);
    misses(c);
}

criterion_group!(group, benches);

fn main() {
    group();
    Criterion::default().configure_from_args().final_summary();
    summary::medians();
}
