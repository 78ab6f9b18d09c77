//! `bench/summary.json` in the target directory: the figures benches print
//! and, after a full run, criterion's medians, in one file every bench adds
//! to (a bench that rewrote it would drop the others' figures).
//!
//! The target directory is found as criterion finds it (`CARGO_TARGET_DIR`,
//! else the workspace's `target`), so the medians are read where criterion
//! wrote them.

// Each bench includes this module and uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::{json, Map, Value};

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn path() -> PathBuf {
    target_dir().join("bench/summary.json")
}

fn read() -> Map<String, Value> {
    std::fs::read(path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write(summary: &Map<String, Value>) {
    let path = path();
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(path, serde_json::to_vec_pretty(summary).unwrap());
}

/// Adds (or replaces) figures.
pub fn record(figures: &[(&str, f64)]) {
    let mut summary = read();
    for (k, v) in figures {
        summary.insert((*k).to_owned(), json!(v));
    }
    write(&summary);
}

/// Adds every median criterion has written
/// (`criterion/<group>/<bench>/new/estimates.json`), as `<name> (median ns)`.
pub fn medians() {
    let mut summary = read();
    let criterion = target_dir().join("criterion");
    let mut stack = vec![criterion.clone()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.ends_with("new/estimates.json") {
                let name = p
                    .parent()
                    .and_then(|p| p.parent())
                    .and_then(|p| p.strip_prefix(&criterion).ok())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                if let Some(ns) = std::fs::read(&p)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                    .and_then(|v| v["median"]["point_estimate"].as_f64())
                {
                    summary.insert(format!("{name} (median ns)"), json!(ns));
                }
            }
        }
    }
    write(&summary);
}
