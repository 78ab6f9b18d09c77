//! Side by side (issue 3): pobox's balancing policies against the peers' own
//! crates, on the same endpoint sets, in the same run.
//!
//! `cargo bench --manifest-path benches/peers/Cargo.toml`; see README.md
//! beside Cargo.toml for what each benchmark measures and the figures.
//! After criterion finishes, `main` writes `<target>/bench/summary.json`
//! (scenario → implementation → median ns) from criterion's estimates.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, Hasher};
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use pobox::{Client, Destination, Mesh, MeshConfig, Object, Update};
use serde_json::{json, Value};

// === the endpoint sets everyone uses ===

fn ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 1)) + i as u32)
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip(i), 8080))
}

/// Scenario 1's weights: 1..=100, spread deterministically (as
/// core/benches/policies.rs spreads them).
fn weight_1_100(i: usize) -> u32 {
    1 + ((i * 37) % 100) as u32
}

/// Scenario 4's weights: 1 or 2 (600 of 1,000 endpoints weigh 2), so that
/// pingora-ketama's fixed 160 points per unit of weight gives the same ring
/// as pobox's 256,000 points: 1,600 × 160 = 256,000.
fn weight_1_2(i: usize) -> u32 {
    if i % 5 < 3 {
        2
    } else {
        1
    }
}

/// A Service `web` at 10.96.0.10:80 with `n` endpoints (slices of at most
/// 1,000, as the API server caps them) and the given weights.
fn k8s_json(annotations: Value, n: usize, weight: Option<fn(usize) -> u32>) -> Vec<u8> {
    k8s_json_with(annotations, n, weight, false)
}

/// As [`k8s_json`]; with `moved`, the last endpoint is replaced by another
/// address (endpoint `n` instead of `n - 1`): one endpoint changed, the
/// count the same, in the same slice.
fn k8s_json_with(
    annotations: Value,
    n: usize,
    weight: Option<fn(usize) -> u32>,
    moved: bool,
) -> Vec<u8> {
    let mut items = vec![json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "annotations": annotations},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}})];
    for (s, start) in (0..n).step_by(1000).enumerate() {
        let end = (start + 1000).min(n);
        let mut w = serde_json::Map::new();
        let endpoints: Vec<Value> = (start..end)
            .map(|i| if moved && i == n - 1 { n } else { i })
            .map(|i| {
                if let Some(f) = weight {
                    w.insert(ip(i).to_string(), json!(f(i)));
                }
                json!({"addresses": [ip(i).to_string()]})
            })
            .collect();
        let mut slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("web-{s}"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": endpoints,
        });
        if weight.is_some() {
            slice["metadata"]["annotations"] =
                json!({"pobox.io/weights": Value::Object(w).to_string()});
        }
        items.push(slice);
    }
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": items})).unwrap()
}

fn mesh_with(doc: &[u8]) -> Mesh {
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    mesh.apply(doc).unwrap();
    mesh
}

/// Pre-parsed objects, so a publish measures the snapshot build (and its
/// table) rather than JSON parsing.
fn objects(doc: &[u8]) -> Vec<Object> {
    pobox::parse(doc).unwrap().objects
}

fn dest() -> Destination {
    "10.96.0.10:80".parse().unwrap()
}

/// Hash keys shared by every consistent-hash benchmark, cycled through so no
/// implementation gets one hot cache line.
fn keys() -> Vec<Vec<u8>> {
    (0..4096u32)
        .map(|i| format!("client-{i:08x}").into_bytes())
        .collect()
}

// === pobox's hash, for the `maglev` crate ===

/// A copy of pobox's table and key hash (core/src/policy.rs `stable_hash`,
/// as its documentation defines it; pobox's own reads the words faster),
/// because pobox does not export it: eight bytes per multiply, the last 1
/// to 7 bytes as one zero-padded word, then the length and murmur3's
/// `fmix64`. `main` checks it against the values core/src/policy.rs pins
/// (`stable_hash_is_pinned`) before measuring.
fn stable_hash(bytes: &[u8], seed: u64) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    let mut h = hash_words(hash_start(seed), &mut chunks);
    let rest = chunks.remainder();
    if !rest.is_empty() {
        h = hash_word(h, tail_word(rest));
    }
    hash_finish(h, bytes.len())
}

const HASH_K: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn tail_word(rest: &[u8]) -> u64 {
    let n = rest.len();
    debug_assert!((1..8).contains(&n));
    if n >= 4 {
        let low = u32::from_le_bytes(rest[..4].try_into().expect("four bytes")) as u64;
        let high = u32::from_le_bytes(rest[n - 4..].try_into().expect("four bytes")) as u64;
        low | high << (8 * (n - 4))
    } else {
        rest[0] as u64
            | (rest[n / 2] as u64) << (8 * (n / 2))
            | (rest[n - 1] as u64) << (8 * (n - 1))
    }
}

#[inline(always)]
fn hash_start(seed: u64) -> u64 {
    0xcbf2_9ce4_8422_2325u64 ^ seed
}

#[inline(always)]
fn hash_word(h: u64, word: u64) -> u64 {
    (h ^ word).wrapping_mul(HASH_K).rotate_left(31)
}

#[inline(always)]
fn hash_words(mut h: u64, chunks: &mut std::slice::ChunksExact<'_, u8>) -> u64 {
    for chunk in chunks {
        h = hash_word(
            h,
            u64::from_le_bytes(chunk.try_into().expect("chunks of eight")),
        );
    }
    h
}

#[inline(always)]
fn hash_finish(mut h: u64, len: usize) -> u64 {
    h ^= len as u64;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// pobox's client-key seed (`hash_key` in core/src/snapshot.rs hashes a
/// key or a client IP with `stable_hash(_, 2)`).
const KEY_SEED: u64 = 2;

/// `stable_hash(bytes, seed)` for fixed inputs: the values
/// core/src/policy.rs's `stable_hash_is_pinned` asserts for pobox's own.
const PINNED_HASHES: [(&[u8], u64, u64); 14] = [
    (b"", 0, 0xefd0_1f60_ba99_2926),
    (b"abc", 0, 0xa027_fefb_2dea_f693),
    (&[192, 0, 2, 1], 0, 0xc122_4910_9a21_4738),
    (b"8 bytes!", 0, 0x465e_e95d_ae70_e11e),
    (b"client-00000000", 0, 0xe2ad_c69f_caeb_d50e),
    (b"0123456789abcdef", 0, 0x810b_7d40_d4ba_0718),
    (b"10.1.0.1:8080_123456789", 0, 0x04f7_b80e_1c55_49c6),
    (b"", 2, 0x0813_dce8_d5a1_8fe4),
    (b"abc", 2, 0x4527_0f31_8d15_23e3),
    (&[192, 0, 2, 1], 2, 0xbeb9_631b_461b_b842),
    (b"8 bytes!", 2, 0x28b9_7d70_67b8_be8c),
    (b"client-00000000", 2, 0xa6aa_4952_50a2_f907),
    (b"0123456789abcdef", 2, 0x8734_9af1_5d86_0dff),
    (b"10.1.0.1:8080_123456789", 2, 0x08f3_c494_14ca_0489),
];

/// Before anything is measured: the copy is pobox's hash, and the
/// `Hasher` below is the copy over everything written to it, however the
/// writes are split (three writes, at every pair of points).
fn check_hash_copy() {
    for (bytes, seed, want) in PINNED_HASHES {
        assert_eq!(
            stable_hash(bytes, seed),
            want,
            "the copy of stable_hash differs from core/src/policy.rs on {:?}, seed {seed}",
            String::from_utf8_lossy(bytes)
        );
        if seed == KEY_SEED {
            for i in 0..=bytes.len() {
                for j in i..=bytes.len() {
                    let mut h = PoboxHash.build_hasher();
                    h.write(&bytes[..i]);
                    h.write(&bytes[i..j]);
                    h.write(&bytes[j..]);
                    assert_eq!(h.finish(), want, "PoboxHasher, writes split at {i} and {j}");
                }
            }
        }
    }
    // What the crate's `get` writes for a key: its seed, the slice's
    // length prefix, the bytes.
    let key = b"client-00000000";
    let mut written = 0xdead_babe_u32.to_ne_bytes().to_vec();
    written.extend_from_slice(&key.len().to_ne_bytes());
    written.extend_from_slice(key);
    let mut h = PoboxHash.build_hasher();
    h.write_u32(0xdead_babe);
    std::hash::Hash::hash(&key[..], &mut h);
    assert_eq!(h.finish(), stable_hash(&written, KEY_SEED));
}

/// pobox's hash as a `BuildHasher`, so the `maglev` crate can use it.
/// The crate hashes its own `u32` seed and then the value through `Hash`
/// (a slice writes its length prefix, then its bytes), so the bytes
/// differ from pobox's (a 15-byte key is 27 bytes here: four words, not
/// two) and so do the tables; the hash function is the same.
#[derive(Clone, Copy, Default)]
struct PoboxHash;

/// [`stable_hash`] over everything the crate's `Hash` calls write, as if
/// over their concatenation: whole words are hashed as they complete (a
/// word may span writes), the bytes of an incomplete one wait in
/// `pending`, and `finish` hashes them as the tail word, then the length.
/// (Keeping the bytes in a buffer and hashing them all in `finish` gives
/// the same values, but a lookup took three times as long: the buffer's
/// zeroing and copies, and a loop of unknown length.)
struct PoboxHasher {
    /// The hash of the whole words so far.
    h: u64,
    /// The 0 to 7 bytes after them, little-endian, zero above.
    pending: u64,
    pending_len: usize,
    len: usize,
}

impl Hasher for PoboxHasher {
    #[inline]
    fn write(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len();
        if self.pending_len > 0 {
            let take = bytes.len().min(8 - self.pending_len);
            if take == 0 {
                return;
            }
            self.pending |= tail_word(&bytes[..take]) << (8 * self.pending_len);
            self.pending_len += take;
            bytes = &bytes[take..];
            if self.pending_len < 8 {
                return;
            }
            self.h = hash_word(self.h, self.pending);
            self.pending = 0;
            self.pending_len = 0;
        }
        let mut chunks = bytes.chunks_exact(8);
        self.h = hash_words(self.h, &mut chunks);
        let rest = chunks.remainder();
        if !rest.is_empty() {
            self.pending = tail_word(rest);
            self.pending_len = rest.len();
        }
    }
    #[inline]
    fn finish(&self) -> u64 {
        let mut h = self.h;
        if self.pending_len > 0 {
            h = hash_word(h, self.pending);
        }
        hash_finish(h, self.len)
    }
}

impl BuildHasher for PoboxHash {
    type Hasher = PoboxHasher;
    fn build_hasher(&self) -> PoboxHasher {
        PoboxHasher {
            h: hash_start(KEY_SEED),
            pending: 0,
            pending_len: 0,
            len: 0,
        }
    }
}

// === 1: weighted pick, 1,000 endpoints, weights 1..=100 ===

fn weighted(c: &mut Criterion) {
    const N: usize = 1000;
    let mut g = c.benchmark_group("weighted_pick_1000");

    let mesh = mesh_with(&k8s_json(
        json!({"pobox.io/lb-policy": "weighted-round-robin"}),
        N,
        Some(weight_1_100),
    ));
    let d = dest();
    g.bench_function("pobox_wrr_mesh_pick", |b| {
        b.iter(|| mesh.pick(black_box(&d), &Client::new()).unwrap().addr)
    });
    // Through a route: the destination resolved once per snapshot version,
    // as each peer below holds its balancer for one upstream.
    let route = mesh.route(&d, None);
    g.bench_function("pobox_wrr_route_pick", |b| {
        b.iter(|| black_box(&route).pick(&Client::new()).unwrap().addr)
    });
    // On a destination resolved once (`Snapshot::resolve`, then
    // `Resolved::pick`), as for Maglev: what remains is the policy's work
    // (the thread's cursor, the sequence) and the pick's bookkeeping, the
    // same kind of work as the alias table's sample below.
    let snapshot = mesh.snapshot();
    let resolved = snapshot.resolve(&d, &Client::new()).unwrap();
    g.bench_function("pobox_wrr_resolved_pick", |b| {
        b.iter(|| black_box(&resolved).pick(&Client::new()).unwrap().addr())
    });

    let backends: BTreeSet<pingora_load_balancing::Backend> = (0..N)
        .map(|i| {
            pingora_load_balancing::Backend::new_with_weight(
                &addr(i).to_string(),
                weight_1_100(i) as usize,
            )
            .unwrap()
        })
        .collect();
    let pingora_lb = |set: &BTreeSet<pingora_load_balancing::Backend>| {
        pingora_load_balancing::Backends::new(pingora_load_balancing::discovery::Static::new(
            set.clone(),
        ))
    };
    use futures::FutureExt;
    let rr = pingora_load_balancing::LoadBalancer::<
        pingora_load_balancing::selection::RoundRobin,
    >::from_backends(pingora_lb(&backends));
    rr.update().now_or_never().unwrap().unwrap();
    g.bench_function("pingora_roundrobin_select", |b| {
        b.iter(|| rr.select(black_box(b""), 256).unwrap().addr)
    });
    let random = pingora_load_balancing::LoadBalancer::<
        pingora_load_balancing::selection::Random,
    >::from_backends(pingora_lb(&backends));
    random.update().now_or_never().unwrap().unwrap();
    g.bench_function("pingora_random_select", |b| {
        b.iter(|| random.select(black_box(b""), 256).unwrap().addr)
    });

    use weighted_rs::Weight;
    let mut sw: weighted_rs::SmoothWeight<SocketAddr> = weighted_rs::SmoothWeight::new();
    for i in 0..N {
        sw.add(addr(i), weight_1_100(i) as isize);
    }
    g.bench_function("weighted_rs_smooth_next", |b| b.iter(|| sw.next().unwrap()));

    use rand::SeedableRng;
    use rand_distr::Distribution;
    let alias = rand_distr::WeightedAliasIndex::new((0..N).map(weight_1_100).collect::<Vec<u32>>())
        .unwrap();
    let addrs: Vec<SocketAddr> = (0..N).map(addr).collect();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
    g.bench_function("rand_distr_alias_sample", |b| {
        b.iter(|| addrs[alias.sample(&mut rng)])
    });
    g.finish();
}

// === 2: least-request P2C, N = 100 and 10,000 ===

/// An always-ready service; its load is tower's own pending-request count
/// (`PendingRequests`), the equivalent of pobox's in-flight count.
#[derive(Clone)]
struct Ready(SocketAddr);

/// tower's P2C `Balance` over `n` always-ready services that count their
/// requests in flight, with discovery drained and every service ready.
fn tower_p2c(
    n: usize,
) -> tower::balance::p2c::Balance<
    tower::discover::ServiceList<
        Vec<tower::load::PendingRequests<Ready, tower::load::CompleteOnResponse>>,
    >,
    (),
> {
    use tower::Service;
    let services: Vec<_> = (0..n)
        .map(|i| {
            tower::load::PendingRequests::new(
                Ready(addr(i)),
                tower::load::CompleteOnResponse::default(),
            )
        })
        .collect();
    let mut balance =
        tower::balance::p2c::Balance::new(tower::discover::ServiceList::new(services));
    let waker = futures::task::noop_waker();
    assert!(matches!(
        balance.poll_ready(&mut Context::from_waker(&waker)),
        Poll::Ready(Ok(()))
    ));
    assert_eq!(balance.len(), n);
    balance
}

impl tower::Service<()> for Ready {
    type Response = SocketAddr;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<SocketAddr, std::convert::Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: ()) -> Self::Future {
        std::future::ready(Ok(self.0))
    }
}

/// A mesh with one least-request Service of `n` endpoints.
fn least_request_mesh(n: usize) -> Mesh {
    mesh_with(&k8s_json(
        json!({"pobox.io/lb-policy": "least-request"}),
        n,
        None,
    ))
}

fn least_request(c: &mut Criterion) {
    let mut g = c.benchmark_group("least_request_p2c");
    for n in [100usize, 10_000] {
        let mesh = least_request_mesh(n);
        let d = dest();
        g.bench_function(format!("pobox_mesh_pick/{n}"), |b| {
            b.iter(|| mesh.pick(black_box(&d), &Client::new()).unwrap().addr)
        });
        let route = mesh.route(&d, None);
        g.bench_function(format!("pobox_route_pick/{n}"), |b| {
            b.iter(|| black_box(&route).pick(&Client::new()).unwrap().addr)
        });
        // On a destination resolved once, as for Maglev: the two draws, the
        // two counts, the comparison.
        let snapshot = mesh.snapshot();
        let resolved = snapshot.resolve(&d, &Client::new()).unwrap();
        g.bench_function(format!("pobox_resolved_pick/{n}"), |b| {
            b.iter(|| black_box(&resolved).pick(&Client::new()).unwrap().addr())
        });
        g.bench_function(format!("pobox_route_begin_drop/{n}"), |b| {
            b.iter(|| black_box(&route).begin(&Client::new()).unwrap().addr())
        });
        // The pick plus in-flight accounting: begin counts the request,
        // dropping the guard ends it (what tower's PendingRequests handle does).
        g.bench_function(format!("pobox_mesh_begin_drop/{n}"), |b| {
            b.iter(|| mesh.begin(black_box(&d), &Client::new()).unwrap().addr())
        });

        use tower::Service;
        let mut balance = tower_p2c(n);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        g.bench_function(format!("tower_balance_poll_ready_call/{n}"), |b| {
            b.iter(|| {
                match balance.poll_ready(&mut cx) {
                    Poll::Ready(Ok(())) => {}
                    _ => unreachable!("always-ready services"),
                }
                // The response future is dropped unpolled: that drops its
                // pending-request handle, ending the request.
                let mut fut = balance.call(());
                black_box(&mut fut);
            })
        });
    }
    g.finish();
}

// === 2b: least-request P2C on one thread and on two ===

/// Runs `pick` `iters` times on each of `threads` new threads, which start
/// together (a barrier) after one untimed pick each (a route resolves its
/// destination on a thread's first pick). Returns the wall time from the
/// first thread's start to the last one's end, divided by `threads`: for
/// criterion, whose figure is the returned time / `iters`, that makes the
/// figure wall / (`threads` × `iters`), the time per pick of all the
/// threads together (the inverse of their throughput). Thread start and
/// join are outside the timed span.
fn per_pick_on_threads(threads: usize, iters: u64, pick: impl Fn() + Sync) -> Duration {
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    pick();
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        pick();
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let start = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    (end - start) / threads as u32
}

/// Issue 3, target 2's scaling ("2 threads ≥ 1.8× one thread"): least-request
/// begin + drop of the `Request` (the pick and its in-flight accounting)
/// with N = 100 and 10,000 endpoints, by 1 and by 2 threads sharing one
/// `Route` (and one `Mesh`), so that they share the endpoints' in-flight
/// counts, as a proxy's workers do.
///
/// Each figure `<impl>/<n>/<t>_thread[s]` is the time per pick of all `t`
/// threads together, wall / (t × picks per thread) (see
/// [`per_pick_on_threads`]); the 1-thread figure also runs on a new thread.
/// The scaling of 2 threads is the ratio of their throughputs,
/// `1_thread / 2_threads` (2.0: perfect, 1.0: none); `write_summary`
/// puts it in `least_request_p2c_threads_scaling`.
///
/// tower's `Balance` needs `&mut self` for `poll_ready` and `call`, so two
/// threads can share one only behind a lock: it is measured in a `Mutex`
/// (the 1-thread figure too, so the ratio is the lock's contention, not its
/// cost). tower's own way to share a balancer, `Buffer`, sends every
/// request through a channel to one task, which serialises the picks too.
/// One `Balance` per thread would scale, but each would count only its own
/// thread's requests: not the same balancer.
fn least_request_threads(c: &mut Criterion) {
    use tower::Service;
    let mut g = c.benchmark_group("least_request_p2c_threads");
    for n in [100usize, 10_000] {
        let mesh = least_request_mesh(n);
        let d = dest();
        let route = mesh.route(&d, None);
        let balance = std::sync::Mutex::new(tower_p2c(n));

        for threads in [1usize, 2] {
            let t = if threads == 1 {
                "1_thread".to_owned()
            } else {
                format!("{threads}_threads")
            };
            g.bench_function(format!("pobox_route_begin_drop/{n}/{t}"), |b| {
                b.iter_custom(|iters| {
                    per_pick_on_threads(threads, iters, || {
                        black_box(route.begin(&Client::new()).unwrap().addr());
                    })
                })
            });
            // The choice alone, no accounting: what of the above is the
            // pick and what the `Request` (its counts and its `Arc` of the
            // port, shared by every thread).
            g.bench_function(format!("pobox_route_pick/{n}/{t}"), |b| {
                b.iter_custom(|iters| {
                    per_pick_on_threads(threads, iters, || {
                        black_box(route.pick(&Client::new()).unwrap().addr);
                    })
                })
            });
            g.bench_function(format!("pobox_mesh_begin_drop/{n}/{t}"), |b| {
                b.iter_custom(|iters| {
                    per_pick_on_threads(threads, iters, || {
                        black_box(mesh.begin(black_box(&d), &Client::new()).unwrap().addr());
                    })
                })
            });
            g.bench_function(
                format!("tower_balance_mutex_poll_ready_call/{n}/{t}"),
                |b| {
                    b.iter_custom(|iters| {
                        per_pick_on_threads(threads, iters, || {
                            let waker = futures::task::noop_waker();
                            let mut cx = Context::from_waker(&waker);
                            let fut = {
                                let mut balance = balance.lock().unwrap();
                                match balance.poll_ready(&mut cx) {
                                    Poll::Ready(Ok(())) => {}
                                    _ => unreachable!("always-ready services"),
                                }
                                balance.call(())
                            };
                            // Dropped unpolled, outside the lock: that ends
                            // the request (its pending-request handle).
                            drop(black_box(fut));
                        })
                    })
                },
            );
        }
    }
    g.finish();
}

// === 3: Maglev, N = 1,000, M = 65,537 ===

fn maglev(c: &mut Criterion) {
    const N: usize = 1000;
    const M: usize = 65537;
    let keys = keys();
    let annotations =
        json!({"pobox.io/lb-policy": "maglev", "pobox.io/maglev-table-size": "65537"});
    let doc = k8s_json(annotations.clone(), N, None);
    let mesh = mesh_with(&doc);
    let d = dest();

    let mut g = c.benchmark_group("maglev_lookup_1000_65537");
    let mut k = 0usize;
    g.bench_function("pobox_mesh_pick_key", |b| {
        b.iter(|| {
            k = (k + 1) & 4095;
            mesh.pick(black_box(&d), &Client::new().key(&keys[k]))
                .unwrap()
                .addr
        })
    });
    let route = mesh.route(&d, None);
    let mut k = 0usize;
    g.bench_function("pobox_route_pick_key", |b| {
        b.iter(|| {
            k = (k + 1) & 4095;
            black_box(&route)
                .pick(&Client::new().key(&keys[k]))
                .unwrap()
                .addr
        })
    });
    // The same pick on a destination resolved once (`Snapshot::resolve`,
    // then `Resolved::pick`): no snapshot load, no destination lookup, so
    // what remains is the policy's work (hash the key, read the table)
    // and the pick's bookkeeping.
    let snapshot = mesh.snapshot();
    let resolved = snapshot.resolve(&d, &Client::new()).unwrap();
    let mut k = 0usize;
    g.bench_function("pobox_resolved_pick_key", |b| {
        b.iter(|| {
            k = (k + 1) & 4095;
            resolved
                .pick(&Client::new().key(black_box(&keys[k])))
                .unwrap()
                .addr()
        })
    });
    use maglev::ConsistentHasher;
    let nodes: Vec<SocketAddr> = (0..N).map(addr).collect();
    let table = maglev::Maglev::with_capacity_and_hasher(nodes.clone(), M, PoboxHash);
    assert_eq!(table.capacity(), M);
    let mut k = 0usize;
    g.bench_function("maglev_crate_get_pobox_hash", |b| {
        b.iter(|| {
            k = (k + 1) & 4095;
            *table.get(black_box(keys[k].as_slice())).unwrap()
        })
    });
    let table_sip = maglev::Maglev::with_capacity(nodes.clone(), M);
    let mut k = 0usize;
    g.bench_function("maglev_crate_get_default_siphash", |b| {
        b.iter(|| {
            k = (k + 1) & 4095;
            *table_sip.get(black_box(keys[k].as_slice())).unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("maglev_build_1000_65537");
    g.sample_size(10);
    // pobox builds a table only as part of publishing a snapshot: move one
    // endpoint of the Service back and forth; each update rebuilds the table.
    let flip = [
        objects(&doc),
        objects(&k8s_json_with(annotations, N, None, true)),
    ];
    let mesh = mesh_with(&k8s_json(json!({}), 0, None));
    mesh.update(flip[0].iter().cloned().map(Update::Apply))
        .unwrap();
    let mut which = 0;
    g.bench_function("pobox_publish_change", |b| {
        b.iter_batched(
            || {
                which ^= 1;
                flip[which]
                    .iter()
                    .cloned()
                    .map(Update::Apply)
                    .collect::<Vec<_>>()
            },
            |updates| assert!(mesh.update(updates).unwrap().changed),
            BatchSize::LargeInput,
        )
    });
    publish_baseline(&mut g, None);
    g.bench_function("maglev_crate_new_pobox_hash", |b| {
        b.iter(|| maglev::Maglev::with_capacity_and_hasher(nodes.clone(), M, PoboxHash))
    });
    g.finish();
}

/// The same one-endpoint change published to a `round-robin` Service, which
/// builds no table: what a pobox publish costs besides the table.
fn publish_baseline(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    weight: Option<fn(usize) -> u32>,
) {
    const N: usize = 1000;
    let flip = [
        objects(&k8s_json(json!({}), N, weight)),
        objects(&k8s_json_with(json!({}), N, weight, true)),
    ];
    let mesh = mesh_with(&k8s_json(json!({}), 0, None));
    mesh.update(flip[0].iter().cloned().map(Update::Apply))
        .unwrap();
    let mut which = 0;
    g.bench_function("pobox_publish_change_round_robin_baseline", |b| {
        b.iter_batched(
            || {
                which ^= 1;
                flip[which]
                    .iter()
                    .cloned()
                    .map(Update::Apply)
                    .collect::<Vec<_>>()
            },
            |updates| assert!(mesh.update(updates).unwrap().changed),
            BatchSize::LargeInput,
        )
    });
}

/// Where a pobox pick's time goes: the clock read every pick makes, and
/// resolving the destination without picking (1,000 endpoints, WRR).
fn reference(c: &mut Criterion) {
    let mut g = c.benchmark_group("reference");
    let origin = std::time::Instant::now();
    g.bench_function("std_instant_elapsed", |b| {
        b.iter(|| black_box(&origin).elapsed())
    });
    let mesh = mesh_with(&k8s_json(
        json!({"pobox.io/lb-policy": "weighted-round-robin"}),
        1000,
        Some(weight_1_100),
    ));
    let d = dest();
    let snapshot = mesh.snapshot();
    g.bench_function("pobox_snapshot_resolve_only", |b| {
        b.iter(|| {
            snapshot
                .resolve(black_box(&d), &Client::new())
                .unwrap()
                .family
        })
    });
    g.bench_function("pobox_snapshot_pick", |b| {
        b.iter(|| snapshot.pick(black_box(&d), &Client::new()).unwrap().addr())
    });
    g.finish();
}

// === 4: ring hash, N = 1,000, 256,000 points ===

fn ring(c: &mut Criterion) {
    const N: usize = 1000;
    let keys = keys();
    let annotations = json!({"pobox.io/lb-policy": "ring-hash", "pobox.io/ring-size": "256000"});
    let doc = k8s_json(annotations.clone(), N, Some(weight_1_2));
    let mesh = mesh_with(&doc);
    let d = dest();
    let buckets: Vec<pingora_ketama::Bucket> = (0..N)
        .map(|i| pingora_ketama::Bucket::new(addr(i), weight_1_2(i)))
        .collect();
    let continuum = pingora_ketama::Continuum::new(&buckets);

    let mut g = c.benchmark_group("ring_hash_pick_1000_256k");
    let mut k = 0usize;
    g.bench_function("pobox_mesh_pick_key", |b| {
        b.iter(|| {
            k = (k + 1) & 4095;
            mesh.pick(black_box(&d), &Client::new().key(&keys[k]))
                .unwrap()
                .addr
        })
    });
    let route = mesh.route(&d, None);
    let mut k = 0usize;
    g.bench_function("pobox_route_pick_key", |b| {
        b.iter(|| {
            k = (k + 1) & 4095;
            black_box(&route)
                .pick(&Client::new().key(&keys[k]))
                .unwrap()
                .addr
        })
    });
    // As for Maglev: the pick on a destination resolved once.
    let snapshot = mesh.snapshot();
    let resolved = snapshot.resolve(&d, &Client::new()).unwrap();
    let mut k = 0usize;
    g.bench_function("pobox_resolved_pick_key", |b| {
        b.iter(|| {
            k = (k + 1) & 4095;
            resolved
                .pick(&Client::new().key(black_box(&keys[k])))
                .unwrap()
                .addr()
        })
    });
    let mut k = 0usize;
    g.bench_function("pingora_ketama_node", |b| {
        b.iter(|| {
            k = (k + 1) & 4095;
            continuum.node(black_box(&keys[k])).unwrap()
        })
    });
    use futures::FutureExt;
    let backends: BTreeSet<pingora_load_balancing::Backend> = (0..N)
        .map(|i| {
            pingora_load_balancing::Backend::new_with_weight(
                &addr(i).to_string(),
                weight_1_2(i) as usize,
            )
            .unwrap()
        })
        .collect();
    let consistent = pingora_load_balancing::LoadBalancer::<
        pingora_load_balancing::selection::Consistent,
    >::from_backends(pingora_load_balancing::Backends::new(
        pingora_load_balancing::discovery::Static::new(backends),
    ));
    consistent.update().now_or_never().unwrap().unwrap();
    let mut k = 0usize;
    g.bench_function("pingora_consistent_select", |b| {
        b.iter(|| {
            k = (k + 1) & 4095;
            consistent.select(black_box(&keys[k]), 256).unwrap().addr
        })
    });
    g.finish();

    let mut g = c.benchmark_group("ring_hash_build_1000_256k");
    g.sample_size(10);
    let flip = [
        objects(&doc),
        objects(&k8s_json_with(annotations, N, Some(weight_1_2), true)),
    ];
    let mesh = mesh_with(&k8s_json(json!({}), 0, None));
    mesh.update(flip[0].iter().cloned().map(Update::Apply))
        .unwrap();
    let mut which = 0;
    g.bench_function("pobox_publish_change", |b| {
        b.iter_batched(
            || {
                which ^= 1;
                flip[which]
                    .iter()
                    .cloned()
                    .map(Update::Apply)
                    .collect::<Vec<_>>()
            },
            |updates| assert!(mesh.update(updates).unwrap().changed),
            BatchSize::LargeInput,
        )
    });
    publish_baseline(&mut g, Some(weight_1_2));
    g.bench_function("pingora_ketama_continuum_new", |b| {
        b.iter(|| pingora_ketama::Continuum::new(black_box(&buckets)))
    });
    g.finish();
}

// === summary ===

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// Reads `<target>/criterion/<group>/<bench>[/<param>]/new/estimates.json`
/// and writes `<target>/bench/summary.json`: scenario (group) →
/// implementation (bench id) → median ns.
fn write_summary() {
    let root = target_dir().join("criterion");
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, found);
            } else if p.ends_with("new/estimates.json") {
                found.push(p);
            }
        }
    }
    let mut found = Vec::new();
    walk(&root, &mut found);
    for path in found {
        // Each estimates.json has a benchmark.json beside it naming the group
        // and function as given (directory names are sanitised).
        let Ok(meta) = std::fs::read(path.with_file_name("benchmark.json")) else {
            continue;
        };
        let Ok(meta) = serde_json::from_slice::<Value>(&meta) else {
            continue;
        };
        let Ok(est) = std::fs::read(&path) else {
            continue;
        };
        let Ok(est) = serde_json::from_slice::<Value>(&est) else {
            continue;
        };
        let (Some(group), Some(id), Some(median)) = (
            meta["group_id"].as_str(),
            meta["full_id"].as_str(),
            est["median"]["point_estimate"].as_f64(),
        ) else {
            continue;
        };
        let implementation = id.strip_prefix(group).unwrap_or(id).trim_start_matches('/');
        out.entry(group.to_owned())
            .or_default()
            .insert(implementation.to_owned(), (median * 10.0).round() / 10.0);
    }
    // Target 2's scaling: the throughput of 2 threads over that of one
    // (see `least_request_threads`).
    if let Some(threads) = out.get("least_request_p2c_threads") {
        let scaling: BTreeMap<String, f64> = threads
            .iter()
            .filter_map(|(id, two)| {
                let case = id.strip_suffix("/2_threads")?;
                let one = threads.get(&format!("{case}/1_thread"))?;
                Some((case.to_owned(), (one / two * 100.0).round() / 100.0))
            })
            .collect();
        out.insert("least_request_p2c_threads_scaling".to_owned(), scaling);
    }
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("summary.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&out).unwrap()).unwrap();
    eprintln!("wrote {}", path.display());
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    check_hash_copy();
    weighted(&mut c);
    least_request(&mut c);
    least_request_threads(&mut c);
    maglev(&mut c);
    ring(&mut c);
    reference(&mut c);
    c.final_summary();
    write_summary();
}
