//! Destination and DNS name parsing, on the text a caller controls: the
//! `DEST` of the command and of `pobox_mesh_pick`/`pobox_dest_new`, and a
//! DNS question's name with and without a pod's search path. Checks:
//!
//! * a destination parsed as a name is a valid lowercase name without a
//!   trailing dot, and never an IP literal (`10.0.96.6.` was one);
//! * parsing is stable: printing a destination and parsing it again gives
//!   the same destination;
//! * a pick for it from a small fixed mesh is one of the eligible endpoints;
//! * `lookup`/`lookup_from` never answer REFUSED or NXDOMAIN with records,
//!   and every record is named by a name of at most 253 characters;
//! * the search path (`search_names`) yields at most four absolute names,
//!   none longer than its 254-byte buffer (and the dot), only one for a
//!   name ending in `.`.
//!
//! The input is `namespace \0 name` (no NUL: the default namespace); the
//! first byte of the name picks the record type.

#![no_main]

use std::net::IpAddr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pobox::dns::search_names;
use pobox::{Client, Destination, Mesh, MeshConfig, Rcode, RecordType};

const CLUSTER: &[u8] = include_bytes!("../../../examples/k8s/demo.yaml");
/// A headless Service and an ExternalName beside the demo's, so that every
/// kind of answer is reachable.
const EXTRA: &[u8] = br#"
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {clusterIP: None, ports: [{name: pg, port: 5432}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: shop, labels: {kubernetes.io/service-name: db}}
addressType: IPv6
ports: [{name: pg, port: 5432}]
endpoints:
- {addresses: ["fd00::5"], hostname: db-0}
- {addresses: ["fd00::6"], conditions: {ready: false}}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: shop}
spec: {type: ExternalName, externalName: example.com}
"#;

fn mesh() -> &'static Mesh {
    static MESH: OnceLock<Mesh> = OnceLock::new();
    MESH.get_or_init(|| {
        let config = MeshConfig::new()
            .node("node-a")
            .zone("zone-a")
            .node_ip("192.168.1.10".parse().unwrap());
        let mesh = Mesh::new(config).unwrap();
        mesh.apply(CLUSTER).unwrap();
        mesh.apply(EXTRA).unwrap();
        mesh
    })
}

const TYPES: [RecordType; 7] = [
    RecordType::A,
    RecordType::Aaaa,
    RecordType::Srv,
    RecordType::Ptr,
    RecordType::Cname,
    RecordType::Txt,
    RecordType::Other(65),
];

fn check_answer(answer: &pobox::Answer) {
    if answer.rcode != Rcode::NoError {
        assert!(answer.answers.is_empty(), "{answer:?}");
    }
    for record in &answer.answers {
        assert!(record.name.len() <= 253, "{record}");
    }
}

fn check_destination(text: &str) {
    let Ok(dest) = Destination::parse(text) else {
        return;
    };
    if let Destination::Name { name, .. } = &dest {
        assert!(
            !name.is_empty() && !name.ends_with('.'),
            "{text:?} -> {dest:?}"
        );
        assert_eq!(name, &name.to_ascii_lowercase());
        assert!(
            name.parse::<IpAddr>().is_err(),
            "{text:?}: an IP literal parsed as a name"
        );
    }
    let again = Destination::parse(&dest.to_string())
        .unwrap_or_else(|e| panic!("{text:?} -> {dest} does not parse again: {e}"));
    assert_eq!(again, dest, "{text:?}");
    let mesh = mesh();
    let snapshot = mesh.snapshot();
    for client in [Client::new(), Client::new().ip("10.0.0.7".parse().unwrap())] {
        if let Ok(pick) = mesh.pick(&dest, &client) {
            let resolved = snapshot
                .resolve(&dest, &client)
                .expect("picked, so it resolves");
            assert!(
                resolved.eligible().any(|e| e.addr() == pick.addr),
                "{text:?}: {pick:?}"
            );
        }
    }
}

fn check_name(namespace: &str, name: &str, qtype: RecordType) {
    let snapshot = mesh().snapshot();
    check_answer(&snapshot.lookup(name, qtype));
    check_answer(&snapshot.lookup_from(namespace, name, qtype));
    let names = search_names(name, namespace, "cluster.local");
    assert!(names.len() <= 4, "{names:?}");
    for n in &names {
        assert!(n.ends_with('.') && n.len() <= 255, "{n:?}");
    }
    if name.ends_with('.') {
        assert!(names.len() <= 1, "{name:?} is absolute: {names:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (namespace, name) = text.split_once('\0').unwrap_or(("default", text));
    check_destination(name);
    let qtype = TYPES[name.bytes().next().map_or(0, usize::from) % TYPES.len()];
    check_name(namespace, name, qtype);
});
