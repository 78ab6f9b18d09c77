//! `pobox replay SCRIPT [--seed N]`: a deterministic simulation. Each line of
//! the script is one JSON step; each step prints one JSON line, identically
//! on every run with the same seed (time is simulated, randomness seeded).
//!
//! ```text
//! {"apply": <Kubernetes object or List>}                      -> {"apply":{"version":N,"changed":true}}
//! {"delete": {"kind": "EndpointSlice", "namespace": "default", "name": "web-abc"}}
//! {"pick": {"dest": "10.96.0.10:80", "client": "10.0.0.7", "key": null, "count": 3}}
//!                                                              -> {"pick":["10.1.2.3:8080",...]}
//! {"advance": 3600}                                            (simulated seconds)
//! {"report": {"endpoint": "10.1.2.3:8080", "outcome": "failure"}}
//! {"mark": {"name": "before", "dest": "10.96.0.10:80", "clients": 1000}}
//! {"disruption": {"since": "before"}}                          -> {"disruption":{"clients":1000,"moved":12,"share":0.012}}
//! ```
//!
//! `mark` records where N synthetic clients (client IPs from 198.18.0.0/15,
//! the benchmarking range) are sent now; `disruption` replays them against
//! the current state and reports how many would move: a preview of what a
//! rollout does to a hash policy or to affinity. A failed step prints
//! `{"<step>":null,"error":"..."}` and the script goes on.
//!
//! [`run`] is the reader; the command reads the file, seeds the random
//! source and loads `-f` inputs before calling it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use pobox::{Client, Destination, Kind, ManualClock, Mesh, Outcome};
use serde_json::{json, Value};

/// The most synthetic clients a `mark` may use.
const MAX_CLIENTS: u64 = 1_000_000;
/// The most picks one `pick` step may ask for.
const MAX_COUNT: u64 = 1_000_000;
/// The furthest the simulated clock may move, in seconds (about 31,700
/// years): `advance` steps beyond it fail instead of overflowing the clock.
pub const MAX_ELAPSED_SECS: u64 = 1 << 40;

struct Marked {
    dest: Destination,
    assignment: Vec<Option<SocketAddr>>,
}

struct Replay<'m> {
    mesh: &'m Mesh,
    clock: &'m ManualClock,
    /// Seconds the clock has been advanced by this script.
    elapsed: u64,
    marks: HashMap<String, Marked>,
}

fn synthetic_client(i: u64) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(198, 18, 0, 0)) + i as u32,
    ))
}

fn field<'v>(v: &'v Value, name: &str) -> Result<&'v Value, String> {
    v.get(name).ok_or_else(|| format!("missing {name:?}"))
}

fn string<'v>(v: &'v Value, name: &str) -> Result<&'v str, String> {
    field(v, name)?
        .as_str()
        .ok_or_else(|| format!("{name:?} must be a string"))
}

fn optional_string<'v>(v: &'v Value, name: &str) -> Result<Option<&'v str>, String> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("{name:?} must be a string or null")),
    }
}

fn number(v: &Value, name: &str, default: u64, max: u64) -> Result<u64, String> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(n) => n
            .as_u64()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("{name:?} must be a whole number in 1-{max}")),
    }
}

impl Replay<'_> {
    fn step(&mut self, step: &str, arg: &Value) -> Result<Value, String> {
        match step {
            "apply" => {
                let bytes = serde_json::to_vec(arg).map_err(|e| e.to_string())?;
                let report = self.mesh.apply(&bytes).map_err(|e| e.to_string())?;
                Ok(json!({"version": report.version, "changed": report.changed}))
            }
            "delete" => {
                let kind = string(arg, "kind")?;
                let kind = Kind::parse(kind).ok_or_else(|| format!("unknown kind {kind:?}"))?;
                let namespace = optional_string(arg, "namespace")?.unwrap_or("default");
                let report = self
                    .mesh
                    .delete(kind, namespace, string(arg, "name")?)
                    .map_err(|e| e.to_string())?;
                Ok(json!({"version": report.version, "changed": report.changed}))
            }
            "pick" => {
                let dest = Destination::parse(string(arg, "dest")?).map_err(|e| e.to_string())?;
                let ip = match optional_string(arg, "client")? {
                    Some(s) => Some(
                        s.parse::<IpAddr>()
                            .map_err(|_| format!("client {s:?} is not an IP address"))?,
                    ),
                    None => None,
                };
                let key = optional_string(arg, "key")?;
                let mut client = Client::new();
                if let Some(ip) = ip {
                    client = client.ip(ip);
                }
                if let Some(key) = key {
                    client = client.key(key.as_bytes());
                }
                let count = number(arg, "count", 1, MAX_COUNT)?;
                let picks = (0..count)
                    .map(|_| {
                        self.mesh
                            .pick(&dest, &client)
                            .map(|p| p.addr.to_string())
                            .map_err(|e| e.to_string())
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(json!(picks))
            }
            "advance" => {
                let secs = arg
                    .as_u64()
                    .ok_or("advance takes a whole number of seconds")?;
                let elapsed = self
                    .elapsed
                    .checked_add(secs)
                    .filter(|&e| e <= MAX_ELAPSED_SECS)
                    .ok_or_else(|| {
                        format!("advance: the simulated clock stops at {MAX_ELAPSED_SECS} s")
                    })?;
                self.clock.advance(Duration::from_secs(secs));
                self.elapsed = elapsed;
                Ok(json!(secs))
            }
            "report" => {
                let endpoint: SocketAddr = string(arg, "endpoint")?
                    .parse()
                    .map_err(|_| "endpoint must be IP:PORT".to_owned())?;
                let outcome = match string(arg, "outcome")? {
                    "success" => Outcome::Success,
                    "failure" => Outcome::Failure,
                    other => {
                        return Err(format!(
                            "outcome {other:?} is not \"success\" or \"failure\""
                        ))
                    }
                };
                self.mesh.report_endpoint(endpoint, outcome);
                Ok(json!({"endpoint": endpoint.to_string(), "outcome": string(arg, "outcome")?}))
            }
            "mark" => {
                let name = string(arg, "name")?.to_owned();
                let dest = Destination::parse(string(arg, "dest")?).map_err(|e| e.to_string())?;
                let clients = number(arg, "clients", 1000, MAX_CLIENTS)?;
                let assignment = self.assign(&dest, clients);
                let placed = assignment.iter().filter(|a| a.is_some()).count();
                self.marks.insert(name.clone(), Marked { dest, assignment });
                Ok(json!({"name": name, "clients": clients, "placed": placed}))
            }
            "disruption" => {
                let since = string(arg, "since")?;
                let marked = self
                    .marks
                    .get(since)
                    .ok_or_else(|| format!("no mark named {since:?}"))?;
                let now = self.assign(&marked.dest, marked.assignment.len() as u64);
                let moved = marked
                    .assignment
                    .iter()
                    .zip(&now)
                    .filter(|(a, b)| a != b)
                    .count();
                let clients = now.len();
                Ok(json!({
                    "since": since,
                    "clients": clients,
                    "moved": moved,
                    "share": (moved as f64 / clients as f64 * 1e6).round() / 1e6,
                }))
            }
            other => Err(format!("unknown step {other:?}")),
        }
    }

    /// Where each synthetic client goes now (`None`: nowhere to go).
    fn assign(&self, dest: &Destination, clients: u64) -> Vec<Option<SocketAddr>> {
        (0..clients)
            .map(|i| {
                let client = Client::new().ip(synthetic_client(i));
                self.mesh.pick(dest, &client).ok().map(|p| p.addr)
            })
            .collect()
    }
}

/// Runs a replay script on `mesh`, whose affinity clock is `clock` (a
/// [`Mesh::with_clock`] mesh): one output line per step, as the module
/// documentation shows. `name` labels errors (the script's path).
///
/// A line that is not JSON, or not an object with one key, stops the script
/// with an error; a step that fails prints its error and the script goes on.
/// Picks are seeded by the calling thread's random source
/// ([`pobox::reseed_thread_rng`]), so the output is deterministic for a seed.
pub fn run(mesh: &Mesh, clock: &ManualClock, name: &str, text: &str) -> Result<String, String> {
    let mut replay = Replay {
        mesh,
        clock,
        elapsed: 0,
        marks: HashMap::new(),
    };
    let mut out = String::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let value: Value =
            serde_json::from_str(line).map_err(|e| format!("{name}:{}: not JSON: {e}", n + 1))?;
        let (step, arg) = match value.as_object() {
            Some(map) if map.len() == 1 => map.iter().next().expect("one entry"),
            _ => {
                return Err(format!(
                    "{name}:{}: a step is an object with one key, e.g. {{\"pick\": {{...}}}}",
                    n + 1
                ))
            }
        };
        // Written by hand to keep the key order of the documented format.
        let key = Value::String(step.clone());
        match replay.step(step, arg) {
            Ok(v) => out.push_str(&format!("{{{key}:{v}}}\n")),
            Err(e) => out.push_str(&format!("{{{key}:null,\"error\":{}}}\n", Value::String(e))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pobox::MeshConfig;

    use super::*;

    fn replay(script: &str) -> Result<String, String> {
        let clock = Arc::new(ManualClock::new());
        let mesh = Mesh::with_clock(MeshConfig::new(), clock.clone()).unwrap();
        run(&mesh, &clock, "test", script)
    }

    #[test]
    fn advance_stops_at_the_end_of_simulated_time_instead_of_overflowing() {
        // Found by the replay fuzz target: two huge advances overflowed the
        // clock's Duration and panicked.
        let max = u64::MAX;
        let out = replay(&format!("{{\"advance\": {max}}}\n{{\"advance\": {max}}}\n")).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        for line in lines {
            assert!(line.starts_with(r#"{"advance":null,"error":"#), "{line}");
        }
        let edge = MAX_ELAPSED_SECS;
        let out = replay(&format!("{{\"advance\": {edge}}}\n{{\"advance\": 1}}\n")).unwrap();
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [
                format!(r#"{{"advance":{edge}}}"#).as_str(),
                r#"{"advance":null,"error":"advance: the simulated clock stops at 1099511627776 s"}"#
            ]
        );
    }

    #[test]
    fn a_malformed_line_stops_the_script_and_names_the_line() {
        assert_eq!(
            replay("{\"advance\": 1}\n\n# comment\n[1]\n").unwrap_err(),
            r#"test:4: a step is an object with one key, e.g. {"pick": {...}}"#
        );
        assert!(replay("{\"advance\": 1}\n{x\n")
            .unwrap_err()
            .starts_with("test:2: not JSON: "));
    }
}
