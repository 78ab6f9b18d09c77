//! A churn soak: a writer applies EndpointSlice updates at a steady rate
//! (pods replaced by new ones with new addresses, readiness flapping) while
//! picker threads, one per core, pick without pause. Every second it prints
//! the process's RSS, the pick latency percentiles of that second and the
//! version lag (the published version minus the oldest version a picker
//! last picked from); at the end, the RSS slope (least squares, after a
//! warm-up) and the first window's percentiles beside the last window's.
//!
//! ```text
//! cargo run --release -p pobox --example soak -- [--secs 600] [--applies-per-sec 100]
//!     [--pickers N] [--max-rss-slope KIB_PER_MIN] [--max-lag VERSIONS]
//! ```
//!
//! It exits 1 when the RSS slope after the warm-up exceeds
//! `--max-rss-slope` (default 1024 KiB/min) or when the version lag in the
//! last window exceeds `--max-lag` (default 500 versions, five seconds of
//! updates at the default rate): memory that grows with churn, or pickers
//! that stop seeing new versions. Latency is reported, not judged: a
//! shared machine makes it noisy. Linux only (RSS from /proc/self/status).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pobox::{Client, Destination, Mesh, MeshConfig};

const SERVICES: usize = 40;
const ENDPOINTS_PER_SERVICE: usize = 16;
/// Distinct client addresses the pickers cycle through (they fill the
/// affinity table of the sticky Services, then keep it at that size).
const CLIENTS: u32 = 50_000;

struct Options {
    secs: u64,
    applies_per_sec: u64,
    pickers: usize,
    max_rss_slope: f64,
    max_lag: u64,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        secs: 600,
        applies_per_sec: 100,
        pickers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        max_rss_slope: 1024.0,
        max_lag: 500,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = || format!("{flag} {value:?}: not a number");
        match flag.as_str() {
            "--secs" => o.secs = value.parse().map_err(|_| bad())?,
            "--applies-per-sec" => o.applies_per_sec = value.parse().map_err(|_| bad())?,
            "--pickers" => o.pickers = value.parse().map_err(|_| bad())?,
            "--max-rss-slope" => o.max_rss_slope = value.parse().map_err(|_| bad())?,
            "--max-lag" => o.max_lag = value.parse().map_err(|_| bad())?,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if o.secs < 4 || o.applies_per_sec == 0 || o.pickers == 0 {
        return Err("--secs must be at least 4, the rates at least 1".into());
    }
    Ok(o)
}

// === latency histogram ===

/// Log-linear buckets: exact below 64 ns, then 32 per power of two (about
/// 3% wide), up to 2^40 ns.
const SUB: u32 = 32;
const BUCKETS: usize = 64 + (40 - 6) * SUB as usize;

fn bucket(ns: u64) -> usize {
    if ns < 64 {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros();
    let sub = (ns >> (exp - 5)) as u32 & (SUB - 1);
    (64 + (exp - 6) * SUB + sub).min(BUCKETS as u32 - 1) as usize
}

/// The lowest value of a bucket.
fn bucket_floor(i: usize) -> u64 {
    if i < 64 {
        return i as u64;
    }
    let (exp, sub) = ((i - 64) as u32 / SUB + 6, (i - 64) as u32 % SUB);
    (1u64 << exp) + (u64::from(sub) << (exp - 5))
}

/// Written by one picker, read and reset by the sampler.
struct Histogram(Vec<AtomicU64>);

impl Histogram {
    fn new() -> Histogram {
        Histogram((0..BUCKETS).map(|_| AtomicU64::new(0)).collect())
    }

    fn record(&self, ns: u64) {
        self.0[bucket(ns)].fetch_add(1, Ordering::Relaxed);
    }

    fn drain_into(&self, into: &mut [u64]) {
        for (to, from) in into.iter_mut().zip(&self.0) {
            *to += from.swap(0, Ordering::Relaxed);
        }
    }
}

fn percentile(counts: &[u64], p: f64) -> u64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0;
    }
    let rank = ((total as f64 * p).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return bucket_floor(i);
        }
    }
    bucket_floor(BUCKETS - 1)
}

// === the cluster ===

fn service(i: usize) -> String {
    let sticky = if i % 4 == 0 {
        ", sessionAffinity: ClientIP"
    } else {
        ""
    };
    let policy = ["round-robin", "maglev", "least-request", "random"][i % 4];
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: soak, annotations: {{pobox.io/lb-policy: {policy}}}}}\n\
         spec: {{clusterIP: 10.96.{}.{}, ports: [{{name: http, port: 80, targetPort: 8080}}]{sticky}}}\n",
        i / 250,
        i % 250 + 1
    )
}

/// Service `i`'s slice with the pods `pods` (a pod number is its address),
/// every fifth one of them not ready in this generation.
fn slice(i: usize, pods: &[u32], generation: u64) -> String {
    let endpoints: Vec<String> = pods
        .iter()
        .map(|&p| {
            let ready = (u64::from(p) + generation) % 5 != 0;
            format!(
                "{{addresses: [{}], conditions: {{ready: {ready}}}}}",
                std::net::Ipv4Addr::from(0x0a00_0000 | p)
            )
        })
        .collect();
    format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-{i}-1, namespace: soak, \
         labels: {{kubernetes.io/service-name: svc-{i}}}}}\naddressType: IPv4\n\
         ports: [{{name: http, port: 8080}}]\nendpoints: [{}]\n",
        endpoints.join(", ")
    )
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Least-squares slope of `ys` over `xs`.
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let num: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

struct Sample {
    rss: u64,
    p50: u64,
    p99: u64,
    lag: u64,
    picks: u64,
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    };
    let mesh = Mesh::new(MeshConfig::new().node("node-a")).unwrap();
    let mut next_pod = 1u32;
    let mut pods: Vec<Vec<u32>> = (0..SERVICES)
        .map(|_| {
            (0..ENDPOINTS_PER_SERVICE)
                .map(|_| {
                    next_pod += 1;
                    next_pod
                })
                .collect()
        })
        .collect();
    let mut initial = String::new();
    for (i, p) in pods.iter().enumerate() {
        initial.push_str(&service(i));
        initial.push_str("---\n");
        initial.push_str(&slice(i, p, 0));
        initial.push_str("---\n");
    }
    mesh.apply(initial.as_bytes()).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let histograms: Vec<Arc<Histogram>> =
        (0..o.pickers).map(|_| Arc::new(Histogram::new())).collect();
    let last_seen: Vec<Arc<AtomicU64>> = (0..o.pickers)
        .map(|_| Arc::new(AtomicU64::new(mesh.version())))
        .collect();
    let pickers: Vec<_> = (0..o.pickers)
        .map(|t| {
            let (mesh, stop, hist, seen) = (
                mesh.clone(),
                stop.clone(),
                histograms[t].clone(),
                last_seen[t].clone(),
            );
            std::thread::spawn(move || {
                let dests: Vec<Destination> = (0..SERVICES)
                    .map(|i| {
                        format!("10.96.{}.{}:80", i / 250, i % 250 + 1)
                            .parse()
                            .unwrap()
                    })
                    .collect();
                let mut n = t as u32;
                while !stop.load(Ordering::Relaxed) {
                    n = n.wrapping_add(1);
                    let ip = IpAddr::from((0xc612_0000 + n % CLIENTS).to_be_bytes());
                    let client = Client::new().ip(ip);
                    let dest = &dests[n as usize % SERVICES];
                    let start = Instant::now();
                    let pick = mesh.pick(dest, &client);
                    hist.record(start.elapsed().as_nanos() as u64);
                    if let Ok(pick) = pick {
                        seen.store(pick.version, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    let writer = {
        let (mesh, stop) = (mesh.clone(), stop.clone());
        let every = Duration::from_secs(1) / o.applies_per_sec as u32;
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut generation = 0u64;
            let mut applies = 0u64;
            while !stop.load(Ordering::Relaxed) {
                generation += 1;
                let i = (generation as usize * 7) % SERVICES;
                // Replace one pod of the Service with a new one (a new
                // address), and let readiness move with the generation.
                let k = generation as usize % ENDPOINTS_PER_SERVICE;
                next_pod = next_pod.wrapping_add(1) & 0x00ff_ffff;
                pods[i][k] = next_pod;
                mesh.apply(slice(i, &pods[i], generation).as_bytes())
                    .unwrap();
                applies += 1;
                let due = start + every * applies as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            applies
        })
    };

    let window = (o.secs / 4).clamp(1, 60) as usize;
    let warmup = window;
    println!(
        "soak: {} s, {} applies/s, {} pickers, {SERVICES} Services x {ENDPOINTS_PER_SERVICE} endpoints, {CLIENTS} clients",
        o.secs, o.applies_per_sec, o.pickers
    );
    let start = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    for s in 1..=o.secs {
        let due = start + Duration::from_secs(s);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut counts = vec![0u64; BUCKETS];
        for h in &histograms {
            h.drain_into(&mut counts);
        }
        let version = mesh.version();
        let oldest = last_seen
            .iter()
            .map(|v| v.load(Ordering::Relaxed))
            .min()
            .unwrap_or(version);
        let sample = Sample {
            rss: rss_kib(),
            p50: percentile(&counts, 0.50),
            p99: percentile(&counts, 0.99),
            lag: version.saturating_sub(oldest),
            picks: counts.iter().sum(),
        };
        println!(
            "t={s:>4}s version={version:>6} picks/s={:>9} p50={:>5}ns p99={:>6}ns rss={:>7}KiB lag={}",
            sample.picks, sample.p50, sample.p99, sample.rss, sample.lag
        );
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    let applies = writer.join().unwrap();
    for p in pickers {
        p.join().unwrap();
    }

    let steady = &samples[warmup.min(samples.len() - 2)..];
    let xs: Vec<f64> = (0..steady.len()).map(|i| i as f64 / 60.0).collect();
    let ys: Vec<f64> = steady.iter().map(|s| s.rss as f64).collect();
    let rss_slope = slope(&xs, &ys);
    let all_xs: Vec<f64> = (0..samples.len()).map(|i| i as f64 / 60.0).collect();
    let all_ys: Vec<f64> = samples.iter().map(|s| s.rss as f64).collect();
    let median = |v: &mut Vec<u64>| {
        v.sort_unstable();
        v[v.len() / 2]
    };
    let first = &samples[..window];
    let last = &samples[samples.len() - window..];
    let summary = |w: &[Sample], f: fn(&Sample) -> u64| median(&mut w.iter().map(f).collect());
    let max_lag_last = last.iter().map(|s| s.lag).max().unwrap_or(0);
    let total_picks: u64 = samples.iter().map(|s| s.picks).sum();
    println!(
        "summary: {applies} applies ({:.1}/s), {total_picks} picks, final version {}",
        applies as f64 / o.secs as f64,
        mesh.version()
    );
    println!(
        "  rss: {} KiB after warm-up ({warmup} s), {} KiB at the end; slope {rss_slope:.1} KiB/min after warm-up ({:.1} KiB/min over the whole run)",
        steady[0].rss,
        samples[samples.len() - 1].rss,
        slope(&all_xs, &all_ys)
    );
    println!(
        "  pick latency, median of per-second values: first {window} s p50 {} ns p99 {} ns; last {window} s p50 {} ns p99 {} ns",
        summary(first, |s| s.p50),
        summary(first, |s| s.p99),
        summary(last, |s| s.p50),
        summary(last, |s| s.p99)
    );
    println!(
        "  version lag: max {} over the run, max {max_lag_last} in the last {window} s",
        samples.iter().map(|s| s.lag).max().unwrap_or(0)
    );
    let mut failed = false;
    if rss_slope > o.max_rss_slope {
        println!(
            "FAIL: RSS grows {rss_slope:.1} KiB/min, over {} KiB/min",
            o.max_rss_slope
        );
        failed = true;
    }
    if max_lag_last > o.max_lag {
        println!(
            "FAIL: version lag {max_lag_last} in the last {window} s, over {}",
            o.max_lag
        );
        failed = true;
    }
    if failed {
        std::process::exit(1);
    }
    println!("ok");
}
