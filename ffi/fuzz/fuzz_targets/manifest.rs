//! Feeds arbitrary bytes to the core's `Mesh::apply`, on a mesh that already
//! holds the demo cluster, and checks what the core promises:
//!
//! * an apply is all or nothing: on error the published snapshot is the
//!   very one published before (same `Arc`, same version);
//! * a successful apply moves the version by at most one, and applying the
//!   same input again changes nothing (updates are idempotent);
//! * the same document as JSON and as YAML is accepted or refused alike, and
//!   leaves the same version;
//! * every Service port in the result answers picks only with endpoints
//!   its eligible set holds, and its DNS name looks up without panicking.
//!
//! The first byte chooses the mode: odd bytes apply the rest as it is; even
//! ones read the rest as JSON and apply it as JSON and, on a second mesh,
//! as YAML.
//!
//! The meshes live across inputs (building one per input ran about eight
//! times slower) and are put back to the demo cluster before each input
//! with `Update::Reset`, which changes nothing when nothing changed: so
//! the incremental build is exercised from varied earlier states too.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use pobox::{Client, Destination, Mesh, MeshConfig, Object, PortRef, RecordType, Update};

const BASE: &[u8] = include_bytes!("../../../examples/k8s/demo.yaml");

fn base() -> &'static [Object] {
    static BASE_OBJECTS: OnceLock<Vec<Object>> = OnceLock::new();
    BASE_OBJECTS.get_or_init(|| pobox::parse(BASE).unwrap().objects)
}

/// The two long-lived meshes, reset to the demo cluster.
fn meshes() -> [&'static Mesh; 2] {
    static MESHES: OnceLock<[Mesh; 2]> = OnceLock::new();
    let meshes = MESHES.get_or_init(|| {
        std::array::from_fn(|_| {
            let config = MeshConfig::new()
                .node("node-a")
                .zone("zone-a")
                .node_ip("192.168.1.10".parse().unwrap());
            Mesh::new(config).unwrap()
        })
    });
    for mesh in meshes {
        mesh.update([Update::Reset(base().to_vec())]).unwrap();
    }
    [&meshes[0], &meshes[1]]
}

/// Applies `input`, checks the all-or-nothing and idempotence promises, and
/// returns whether it changed anything (None: refused).
fn apply_checked(mesh: &Mesh, input: &[u8]) -> Option<bool> {
    let before = mesh.snapshot();
    match mesh.apply(input) {
        Err(_) => {
            let after = mesh.snapshot();
            assert!(Arc::ptr_eq(&before, &after), "a failed apply published");
            assert_eq!(mesh.version(), before.version());
            None
        }
        Ok(report) => {
            let v = before.version();
            assert!(
                report.version == v || report.version == v + 1,
                "{v} -> {report:?}"
            );
            assert_eq!(report.changed, report.version == v + 1);
            assert_eq!(mesh.version(), report.version);
            let again = mesh
                .apply(input)
                .expect("an input applied once applies again");
            assert!(
                !again.changed,
                "applying the same input twice changed the mesh"
            );
            assert_eq!(again.version, report.version);
            Some(report.changed)
        }
    }
}

/// Picks on every Service port of the current snapshot, by name, and checks
/// each pick against the port's eligible set; looks each name up.
fn exercise(mesh: &Mesh) {
    let snapshot = mesh.snapshot();
    let clients = [Client::new(), Client::new().ip("10.0.0.7".parse().unwrap())];
    for entry in snapshot.services() {
        let key = entry.service().key();
        let fqdn = format!("{}.{}.svc.cluster.local", key.name(), key.namespace());
        for qtype in [RecordType::A, RecordType::Aaaa, RecordType::Srv] {
            let _ = snapshot.lookup(&fqdn, qtype);
        }
        for port in entry.ports() {
            let dest = Destination::Name {
                name: format!("{}.{}", key.name(), key.namespace()),
                port: PortRef::Number(port.spec().port()),
                protocol: Some(port.spec().protocol()),
            };
            for client in &clients {
                let Ok(resolved) = snapshot.resolve(&dest, client) else {
                    continue;
                };
                let eligible: Vec<_> = resolved.eligible().map(|e| e.addr()).collect();
                for _ in 0..3 {
                    if let Ok(pick) = mesh.pick(&dest, client) {
                        assert_eq!(pick.version, snapshot.version());
                        assert!(
                            eligible.contains(&pick.addr),
                            "{dest}: {} not eligible",
                            pick.addr
                        );
                    }
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let [as_json, as_yaml] = meshes();
    if mode % 2 == 1 {
        apply_checked(as_json, input);
        exercise(as_json);
        return;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(input) else {
        return;
    };
    let json = serde_json::to_vec(&value).unwrap();
    let yaml = serde_yaml_ng::to_string(&value).unwrap();
    let json_changed = apply_checked(as_json, &json);
    let yaml_changed = apply_checked(as_yaml, yaml.as_bytes());
    assert_eq!(
        json_changed, yaml_changed,
        "JSON and YAML of one document disagree:\n{yaml}"
    );
    exercise(as_json);
});
