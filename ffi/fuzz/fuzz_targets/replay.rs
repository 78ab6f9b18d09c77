//! The command's `replay` script reader (`pobox_cli::replay::run`) on
//! arbitrary scripts, each on a fresh mesh with a simulated clock and the
//! same seed. It must never panic (the `advance` overflow was one), and must
//! be deterministic: the same script gives the same output twice.
//!
//! `pick` and `mark` may ask for up to a million picks per step by design;
//! scripts asking for more than 1000 in one step are skipped so that the
//! fuzzer spends its time on parsing and state, not on loops.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pobox::{ManualClock, Mesh, MeshConfig};
use serde_json::Value;

fn too_much_work(script: &str) -> bool {
    script.lines().any(|line| {
        let Ok(Value::Object(step)) = serde_json::from_str::<Value>(line.trim()) else {
            return false;
        };
        step.values().any(|arg| {
            ["count", "clients"]
                .iter()
                .any(|k| arg.get(k).and_then(Value::as_u64).is_some_and(|n| n > 1000))
        })
    })
}

fn run(script: &str) -> Result<String, String> {
    pobox::reseed_thread_rng(1);
    let clock = Arc::new(ManualClock::new());
    let config = MeshConfig::new().node("node-a").zone("zone-a");
    let mesh = Mesh::with_clock(config, clock.clone()).unwrap();
    pobox_cli::replay::run(&mesh, &clock, "fuzz", script)
}

fuzz_target!(|data: &[u8]| {
    let Ok(script) = std::str::from_utf8(data) else {
        return;
    };
    if too_much_work(script) {
        return;
    }
    let first = run(script);
    if let Ok(out) = &first {
        let steps = script
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(out.lines().count(), steps, "one output line per step");
    }
    assert_eq!(
        run(script),
        first,
        "the same script and seed gave another output"
    );
});
