//! Publishing under load (balancing issue, target 6: one endpoint changed
//! in a 10,000-endpoint Maglev Service within a 100,000-endpoint table in
//! ≤ 2 ms including the table rebuild, off the readers' path; reader p99.9
//! during 1,000 publishes/s ≤ 1.5× idle). The table: 90 round-robin
//! Services of 1,000 endpoints (one slice each) and one Maglev Service of
//! 10,000 endpoints (ten slices of 1,000, the most a slice may hold) with
//! the default table size, 65,537.
//!
//! * `publish/maglev_10k_in_100k/typed`: `Mesh::update` with one slice of
//!   the Maglev Service, parsed beforehand, in which one endpoint's
//!   readiness flips: the Service's endpoints are merged again and its
//!   Maglev table rebuilt, then the snapshot is published;
//! * `publish/maglev_10k_in_100k/json`: the same through `Mesh::apply` of
//!   the slice's JSON (its parse included);
//! * readers under publishing (not a criterion benchmark): the latency of
//!   each pick on one reader thread, idle and while a writer thread
//!   publishes one-endpoint changes paced at 1,000 a second, first to the
//!   Maglev Service, then to a 1,000-endpoint round-robin one. Printed, and
//!   written to `target/bench/summary.json` with criterion's medians.
//!
//! `cargo bench -p pobox --bench publish`: 3 s per reader phase. The test
//! command runs each benchmark once and each reader phase for 50 ms
//! (`-- --test`).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use pobox::{Client, Destination, Mesh, MeshConfig, Update};
use serde_json::{json, Value};

#[path = "common/summary.rs"]
mod summary;

// === the table ===

const RR_SERVICES: usize = 90;
const PER_SLICE: usize = 1000;
const MAGLEV_SLICES: usize = 10;
/// The Maglev Service's slice whose first endpoint flips.
const FLIPPED_SLICE: usize = 3;

/// Round-robin Service `i` is `rr-i` at 10.96.0.(i + 1); the Maglev one,
/// `maglev`, at 10.96.1.1.
fn rr_vip(i: usize) -> String {
    format!("10.96.0.{}", i + 1)
}
const MAGLEV_VIP: &str = "10.96.1.1";

fn service(name: &str, vip: &str, maglev: bool) -> Value {
    let annotations = if maglev {
        json!({"pobox.io/lb-policy": "maglev"})
    } else {
        json!({})
    };
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "bench", "annotations": annotations},
        "spec": {"clusterIP": vip, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    })
}

/// Slice `n` of Service `name`, holding endpoints `first..first + PER_SLICE`
/// of the whole table (10.128.0.0 onwards); `flip` marks its first endpoint
/// not ready, so that two versions differ by one endpoint.
fn slice(name: &str, n: usize, first: usize, flip: bool) -> Value {
    let base = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + first as u32;
    let endpoints: Vec<Value> = (0..PER_SLICE)
        .map(|j| {
            json!({
                "addresses": [Ipv4Addr::from(base + j as u32).to_string()],
                "conditions": {"ready": !(flip && j == 0), "serving": true, "terminating": false},
                "nodeName": format!("node-{}", j % 50),
                "zone": format!("zone-{}", j % 3),
            })
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-{n}"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints,
    })
}

/// The first endpoint of the Maglev Service's slice `n`: it comes after
/// the round-robin Services'.
fn maglev_first(n: usize) -> usize {
    (RR_SERVICES + n) * PER_SLICE
}

fn table() -> Vec<u8> {
    let mut items = Vec::new();
    for i in 0..RR_SERVICES {
        let name = format!("rr-{i}");
        items.push(service(&name, &rr_vip(i), false));
        items.push(slice(&name, 0, i * PER_SLICE, false));
    }
    items.push(service("maglev", MAGLEV_VIP, true));
    for n in 0..MAGLEV_SLICES {
        items.push(slice("maglev", n, maglev_first(n), false));
    }
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": items})).unwrap()
}

fn loaded() -> Mesh {
    let mesh = Mesh::new(MeshConfig::new().node("node-1").zone("zone-1")).unwrap();
    mesh.apply(&table()).unwrap();
    let endpoints: usize = (0..RR_SERVICES)
        .map(rr_vip)
        .chain([MAGLEV_VIP.to_owned()])
        .map(|vip| {
            let dest: Destination = format!("{vip}:80").parse().unwrap();
            let snapshot = mesh.snapshot();
            let resolved = snapshot.resolve(&dest, &Client::new()).unwrap();
            resolved.port.endpoints().len()
        })
        .sum();
    assert_eq!(endpoints, 100_000);
    mesh
}

/// The two versions of a slice, as the JSON `apply` takes and as the typed
/// updates `update` takes.
struct Versions {
    json: [Vec<u8>; 2],
    typed: [Update; 2],
}

impl Versions {
    fn of(name: &str, n: usize, first: usize) -> Versions {
        let json =
            [false, true].map(|flip| serde_json::to_vec(&slice(name, n, first, flip)).unwrap());
        let typed =
            [0, 1].map(|v| Update::Apply(pobox::parse(&json[v]).unwrap().objects.remove(0)));
        Versions { json, typed }
    }

    fn maglev() -> Versions {
        Versions::of("maglev", FLIPPED_SLICE, maglev_first(FLIPPED_SLICE))
    }

    fn round_robin() -> Versions {
        Versions::of("rr-0", 0, 0)
    }
}

// === benchmarks ===

fn publish(c: &mut Criterion, mesh: &Mesh) {
    let versions = Versions::maglev();
    let mut g = c.benchmark_group("publish");
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(8));
    let mut flip = 0;
    g.bench_function("maglev_10k_in_100k/typed", |b| {
        b.iter(|| {
            flip ^= 1;
            let report = mesh.update([versions.typed[flip].clone()]).unwrap();
            assert!(report.changed);
        })
    });
    g.bench_function("maglev_10k_in_100k/json", |b| {
        b.iter(|| {
            flip ^= 1;
            let report = mesh.apply(&versions.json[flip]).unwrap();
            assert!(report.changed);
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let mesh = loaded();
    publish(c, &mesh);
    if let Some(phase) = readers_wanted() {
        readers(&mesh, phase);
    }
}

// === readers under publishing ===

/// Latencies in nanoseconds: one bucket per nanosecond below `EXACT`, the
/// rare longer ones kept as they are.
struct Histogram {
    buckets: Vec<u64>,
    longer: Vec<u64>,
    count: u64,
}

const EXACT: usize = 1 << 16;

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: vec![0; EXACT],
            longer: Vec::new(),
            count: 0,
        }
    }

    #[inline]
    fn record(&mut self, ns: u64) {
        self.count += 1;
        match self.buckets.get_mut(ns as usize) {
            Some(b) => *b += 1,
            None => self.longer.push(ns),
        }
    }

    /// The smallest latency at or under which `q` of the samples fall.
    fn quantile(&mut self, q: f64) -> u64 {
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count.max(1));
        let mut seen = 0;
        for (ns, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return ns as u64;
            }
        }
        self.longer.sort_unstable();
        self.longer
            .get((rank - seen - 1) as usize)
            .copied()
            .unwrap_or(0)
    }

    fn max(&mut self) -> u64 {
        self.longer
            .iter()
            .copied()
            .max()
            .unwrap_or_else(|| self.buckets.iter().rposition(|&n| n > 0).unwrap_or(0) as u64)
    }
}

/// What one reader phase saw.
struct Phase {
    name: &'static str,
    picks: u64,
    p50: u64,
    p99: u64,
    p999: u64,
    /// Reported too because at 1,000 publishes a second against some
    /// 10,000,000 picks, the picks that load a new snapshot are about one in
    /// 10,000: p99.9 cannot see them.
    p9999: u64,
    max: u64,
    /// Publishes a second achieved, and the median and slowest publish.
    writer: Option<(f64, Duration, Duration)>,
}

/// Picks on one thread until `stop`, timing each pick: a timestamp after
/// each pick ends the previous sample and starts the next, so a sample is
/// one pick plus one clock read (and one histogram increment).
///
/// The reader alternates between the Maglev Service, hashing one of 4,096
/// client addresses, and `rr-0`: the Services the writer changes.
fn read(mesh: &Mesh, start: &Barrier, stop: &AtomicBool) -> Histogram {
    let maglev: Destination = format!("{MAGLEV_VIP}:80").parse().unwrap();
    let rr: Destination = format!("{}:80", rr_vip(0)).parse().unwrap();
    let clients: Vec<IpAddr> = (0..4096u32)
        .map(|n| IpAddr::V4(Ipv4Addr::from(0xC000_0000 + n)))
        .collect();
    let pick = |i: usize| {
        let client = Client::new().ip(clients[(i >> 1) & 4095]);
        let dest = if i & 1 == 0 { &maglev } else { &rr };
        black_box(mesh.pick(black_box(dest), &client).unwrap());
    };
    for i in 0..100_000 {
        pick(i);
    }
    let mut histogram = Histogram::new();
    start.wait();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        // The flag is read between runs, outside any sample.
        let mut last = Instant::now();
        for _ in 0..4096 {
            pick(i);
            i += 1;
            let now = Instant::now();
            histogram.record((now - last).as_nanos() as u64);
            last = now;
        }
    }
    histogram
}

/// Publishes one-endpoint changes at `per_second` until `stop`; a writer
/// that falls behind publishes back to back, but never makes up more than
/// ten periods at once.
fn write(
    mesh: &Mesh,
    versions: &Versions,
    per_second: u32,
    start: &Barrier,
    stop: &AtomicBool,
) -> (f64, Duration, Duration) {
    let period = Duration::from_secs(1) / per_second;
    let mut took = Vec::new();
    // The criterion benchmarks left either version in place.
    mesh.update([versions.typed[0].clone()]).unwrap();
    let mut flip = 0;
    start.wait();
    let began = Instant::now();
    let mut due = began;
    while !stop.load(Ordering::Relaxed) {
        flip ^= 1;
        let t = Instant::now();
        let report = mesh.update([versions.typed[flip].clone()]).unwrap();
        took.push(t.elapsed());
        assert!(report.changed);
        due += period;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > period * 10 {
            due = now;
        }
    }
    let rate = took.len() as f64 / began.elapsed().as_secs_f64();
    took.sort_unstable();
    (
        rate,
        took.get(took.len() / 2).copied().unwrap_or_default(),
        took.last().copied().unwrap_or_default(),
    )
}

fn phase(mesh: &Mesh, name: &'static str, writer: Option<&Versions>, length: Duration) -> Phase {
    let start = Barrier::new(if writer.is_some() { 3 } else { 2 });
    let stop = AtomicBool::new(false);
    let (mut histogram, writer) = std::thread::scope(|s| {
        let reader = s.spawn(|| read(mesh, &start, &stop));
        let writer = writer.map(|v| s.spawn(|| write(mesh, v, 1000, &start, &stop)));
        start.wait();
        std::thread::sleep(length);
        stop.store(true, Ordering::Relaxed);
        (reader.join().unwrap(), writer.map(|w| w.join().unwrap()))
    });
    Phase {
        name,
        picks: histogram.count,
        p50: histogram.quantile(0.5),
        p99: histogram.quantile(0.99),
        p999: histogram.quantile(0.999),
        p9999: histogram.quantile(0.9999),
        max: histogram.max(),
        writer,
    }
}

/// A reader phase under `--test`: enough to run every path once.
const TEST_PHASE: Duration = Duration::from_millis(50);

/// How long each reader phase runs: `None` when a criterion filter leaves
/// them out or criterion only lists, `TEST_PHASE` with `--test`.
fn readers_wanted() -> Option<Duration> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return None;
    }
    // Criterion options that take a value; anything else not starting with
    // `-` is the filter.
    const VALUED: &[&str] = &[
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--plotting-backend",
        "--output-format",
        "--color",
        "--format",
        "-c",
        "-s",
        "-b",
    ];
    let filter = args
        .iter()
        .enumerate()
        .find(|(i, a)| !a.starts_with('-') && (*i == 0 || !VALUED.contains(&args[i - 1].as_str())))
        .map(|(_, a)| a.as_str());
    if filter.is_some_and(|f| !"publish/readers".contains(f)) {
        return None;
    }
    Some(if args.iter().any(|a| a == "--test") {
        TEST_PHASE
    } else {
        Duration::from_secs(3)
    })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn readers(mesh: &Mesh, length: Duration) {
    let clock = clock_read_ns();
    let maglev = Versions::maglev();
    let round_robin = Versions::round_robin();
    let phases = [
        phase(mesh, "idle", None, length),
        phase(mesh, "maglev_10k", Some(&maglev), length),
        phase(mesh, "round_robin_1k", Some(&round_robin), length),
    ];
    println!(
        "publish/readers: one reader's pick latency in ns (a pick + a clock read; a clock read alone: {clock} ns), \
         {length:?} per phase, load average {}",
        load_average()
    );
    let idle = phases[0].p999.max(1) as f64;
    let mut figures = vec![("publish/readers/clock_read_ns".to_owned(), clock as f64)];
    for p in &phases {
        let ratio = p.p999 as f64 / idle;
        let writer = match p.writer {
            Some((rate, median, slowest)) => format!(
                "; writer {rate:.0}/s (target 1000/s), publish median {median:?}, slowest {slowest:?}"
            ),
            None => String::new(),
        };
        println!(
            "  {:<16} p50 {:>5}  p99 {:>5}  p99.9 {:>6} ({ratio:.2}× idle)  p99.99 {:>6}  max {:>8}  picks {}{writer}",
            p.name, p.p50, p.p99, p.p999, p.p9999, p.max, p.picks
        );
        let key = |k: &str| format!("publish/readers/{}/{k}", p.name);
        figures.extend([
            (key("p50_ns"), p.p50 as f64),
            (key("p99_ns"), p.p99 as f64),
            (key("p99.9_ns"), p.p999 as f64),
            (key("p99.99_ns"), p.p9999 as f64),
            (key("max_ns"), p.max as f64),
            (key("picks_per_s"), p.picks as f64 / length.as_secs_f64()),
            (key("p99.9_vs_idle"), ratio),
        ]);
        if let Some((rate, median, _)) = p.writer {
            figures.push((key("publishes_per_s"), rate));
            figures.push((key("publish_median_ns"), median.as_nanos() as f64));
        }
    }
    // As criterion keeps no estimates from `--test`, a test run's figures
    // must not replace a measurement's.
    if length == TEST_PHASE {
        return;
    }
    summary::record(
        &figures
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect::<Vec<_>>(),
    );
}

/// The median cost of the clock read each reader sample includes.
fn clock_read_ns() -> u64 {
    let mut histogram = Histogram::new();
    let mut last = Instant::now();
    for _ in 0..100_000 {
        let now = Instant::now();
        histogram.record((now - last).as_nanos() as u64);
        last = now;
    }
    histogram.quantile(0.5)
}

criterion_group!(group, benches);

fn main() {
    group();
    Criterion::default().configure_from_args().final_summary();
    summary::medians();
}
