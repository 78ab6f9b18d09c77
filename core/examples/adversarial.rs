//! Builds each adversarial input of the hardening issue, applies it to a
//! mesh with the default limits, and prints what happened: the error (or
//! the report), the time the apply took and the peak memory it reached.
//!
//! ```text
//! cargo run --release -p pobox --example adversarial
//! ```
//!
//! Each case runs in a process of its own (the example runs itself with the
//! case's number), so its peak RSS (`VmHWM`, Linux) is its own: it includes
//! the input, which is built first and shown as the RSS before the apply.

use std::fmt::Write as _;
use std::time::Instant;

use pobox::{Limits, Mesh, MeshConfig};

#[path = "../tests/support/bombs.rs"]
mod bombs;
use bombs::{wide_bomb, BILLION_LAUGHS};

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn run(name: &str, limits: Limits, input: Vec<u8>) {
    let mesh = Mesh::new(MeshConfig::new().limits(limits)).unwrap();
    let size = input.len();
    let before = status_kib("VmRSS:");
    let start = Instant::now();
    let result = mesh.apply(&input);
    let elapsed = start.elapsed();
    let peak = status_kib("VmHWM:");
    let outcome = match &result {
        Ok(report) => format!(
            "applied: version {}, {} warnings",
            report.version,
            report.warnings.len()
        ),
        Err(e) => {
            let text = e.to_string();
            let mut short: String = text.chars().take(170).collect();
            if short.len() < text.len() {
                short.push('…');
            }
            format!("refused: {short}")
        }
    };
    println!(
        "{name}\n    input {:.1} MB; {:.3} s; peak RSS {} (+{} over the {} before)\n    {outcome}",
        size as f64 / 1e6,
        elapsed.as_secs_f64(),
        mib(peak),
        mib(peak.saturating_sub(before)),
        mib(before),
    );
    drop(input);
    drop(mesh);
}

/// A List of `slices` EndpointSlices of 1,000 endpoints each, for Service
/// `web`, as `kubectl get -o json` would give them (trimmed).
fn endpoint_list(slices: usize) -> Vec<u8> {
    let mut out = String::from(
        r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},"spec":{"clusterIP":"10.96.0.10","ports":[{"name":"http","port":80,"targetPort":8080}]}}"#,
    );
    for s in 0..slices {
        write!(
            out,
            r#",{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{{"name":"web-{s}","namespace":"default","labels":{{"kubernetes.io/service-name":"web"}}}},"addressType":"IPv4","ports":[{{"name":"http","port":8080}}],"endpoints":["#
        )
        .unwrap();
        for e in 0..1000 {
            let n = s * 1000 + e;
            if e > 0 {
                out.push(',');
            }
            write!(
                out,
                r#"{{"addresses":["10.{}.{}.{}"],"conditions":{{"ready":true}}}}"#,
                n >> 16,
                (n >> 8) & 255,
                n & 255
            )
            .unwrap();
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    out.into_bytes()
}

type Case = (&'static str, fn() -> (Limits, Vec<u8>));

fn deep_block() -> Vec<u8> {
    let mut block = String::new();
    for level in 0..4000 {
        block += &" ".repeat(level);
        block += "k:\n";
    }
    block.into_bytes()
}

const DEPTH: usize = 10_000_000;

const CASES: &[Case] = &[
    ("500 MB input (spaces)", || {
        (Limits::default(), vec![b' '; 500_000_000])
    }),
    (
        "List of 1,000,000 endpoints (1,000 slices of 1,000)",
        || (Limits::default(), endpoint_list(1000)),
    ),
    (
        "List of 1,000,000 endpoints, maxEndpoints raised to 1,000,000",
        || (Limits::new().max_endpoints(1_000_000), endpoint_list(1000)),
    ),
    (
        "List of 500,000 endpoints (at the default maxEndpoints)",
        || (Limits::default(), endpoint_list(500)),
    ),
    ("billion laughs (9 levels of 9 aliases)", || {
        (Limits::default(), BILLION_LAUGHS.as_bytes().to_vec())
    }),
    (
        "wide alias bomb (10,000 scalars aliased 1,000 times: 10,000,000 values)",
        || (Limits::default(), wide_bomb(10_000, 1_000)),
    ),
    ("JSON nested 10,000,000 deep", || {
        (
            Limits::default(),
            format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH)).into_bytes(),
        )
    }),
    ("YAML flow sequences nested 10,000,000 deep", || {
        (Limits::default(), "[".repeat(DEPTH).into_bytes())
    }),
    ("YAML flow mappings nested 1,000,000 deep", || {
        (Limits::default(), "{a: ".repeat(1_000_000).into_bytes())
    }),
    (
        "YAML block sequences nested 1,000,000 deep (- - - ... x)",
        || {
            (
                Limits::default(),
                format!("{}x\n", "- ".repeat(1_000_000)).into_bytes(),
            )
        },
    ),
    ("YAML block mappings nested 4,000 deep (8 MB)", || {
        (Limits::default(), deep_block())
    }),
    // What the pre-scan saves: with the depth limit out of the way, libyaml
    // scans the whole document before serde_yaml_ng's recursion limit (128)
    // refuses it.
    (
        "without the pre-scan (maxDepth raised): YAML flow 20,000 deep",
        || {
            (
                Limits::new().max_depth(usize::MAX),
                "[".repeat(20_000).into_bytes(),
            )
        },
    ),
    (
        "without the pre-scan (maxDepth raised): YAML flow 80,000 deep",
        || {
            (
                Limits::new().max_depth(usize::MAX),
                "[".repeat(80_000).into_bytes(),
            )
        },
    ),
    (
        "without the pre-scan (maxDepth raised): YAML flow 320,000 deep",
        || {
            (
                Limits::new().max_depth(usize::MAX),
                "[".repeat(320_000).into_bytes(),
            )
        },
    ),
];

fn main() {
    if let Some(i) = std::env::args().nth(1) {
        let (name, build) = CASES[i.parse::<usize>().expect("a case number")];
        let (limits, input) = build();
        run(name, limits, input);
        return;
    }
    println!("limits: {:?}\n", Limits::default());
    let me = std::env::current_exe().unwrap();
    for i in 0..CASES.len() {
        let status = std::process::Command::new(&me)
            .arg(i.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "case {i} failed");
    }
}
