//! Sprays distinct client IPs at a `sessionAffinity: ClientIP` Service
//! through `Mesh::pick` and reports the affinity table's entries and the
//! process's memory as it goes: the table, and so memory, stays bounded by
//! the configured capacity however many clients come.
//!
//! ```text
//! cargo run --release -p pobox --example affinity_spray [CLIENTS] [CAPACITY]
//! ```
//!
//! CLIENTS defaults to 10,000,000, CAPACITY to the default capacity
//! (262,144). Memory is read from `/proc/self/status` (Linux).

use std::net::IpAddr;
use std::time::Instant;

use pobox::{Client, Destination, Mesh, MeshConfig, DEFAULT_AFFINITY_CAPACITY};

/// `VmRSS` and `VmHWM` (peak) in MiB, when `/proc` has them.
fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or("?".to_owned(), |kb| {
                format!("{:.1} MiB", kb as f64 / 1024.0)
            })
    };
    format!("rss {} peak {}", field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let clients: u64 = args
        .next()
        .map_or(10_000_000, |a| a.parse().expect("CLIENTS"));
    let capacity: usize = args
        .next()
        .map_or(DEFAULT_AFFINITY_CAPACITY, |a| a.parse().expect("CAPACITY"));

    let mesh = Mesh::new(MeshConfig::new().affinity_capacity(capacity)).unwrap();
    let endpoints: String = (1..=10)
        .map(|i| format!("- addresses: [10.1.0.{i}]\n"))
        .collect();
    mesh.apply(
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\n\
             spec:\n  clusterIP: 10.96.0.10\n  sessionAffinity: ClientIP\n  ports: [{{port: 80}}]\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\n\
             addressType: IPv4\nports: [{{port: 80}}]\nendpoints:\n{endpoints}"
        )
        .as_bytes(),
    )
    .unwrap();
    let dest: Destination = "10.96.0.10:80".parse().unwrap();
    println!(
        "capacity {capacity}, spraying {clients} distinct client IPs; start: {}",
        memory()
    );

    let start = Instant::now();
    let mut most = 0;
    let every = (clients / 10).max(1);
    for i in 0..clients {
        // Distinct IPv6 addresses beyond 2^32 clients; IPv4 below.
        let ip = if i < 1 << 32 {
            IpAddr::from((i as u32).to_be_bytes())
        } else {
            IpAddr::from((u128::from(i) | 0xfd00 << 112).to_be_bytes())
        };
        mesh.pick(&dest, &Client::new().ip(ip)).unwrap();
        if (i + 1) % every == 0 {
            let entries = mesh.affinity_entries();
            most = most.max(entries);
            println!(
                "{:>11} clients  {:>8} entries  {}  {:.1} s",
                i + 1,
                entries,
                memory(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    let elapsed = start.elapsed();
    println!(
        "done: {clients} picks in {:.1} s ({:.0} ns/pick); entries {} (most seen {most}, capacity {capacity}); {}",
        elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / clients as f64,
        mesh.affinity_entries(),
        memory()
    );
    assert!(most <= capacity, "the table exceeded its capacity");
}
