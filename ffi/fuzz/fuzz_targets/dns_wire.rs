//! The `serve-dns` wire-format answerer (`pobox_cli::wire::answer`) on
//! arbitrary datagrams, over UDP and TCP limits, from a mesh with a
//! ClusterIP, a headless and an ExternalName Service. Checks that every
//! reply parses as a DNS response to the query's id, keeps within the
//! transport's size, and that runts and responses get no reply.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pobox::{Mesh, MeshConfig};
use pobox_cli::wire::{answer, Transport, EDNS_PAYLOAD};
use simple_dns::{Packet, PacketFlag};

const CLUSTER: &[u8] = include_bytes!("../../../examples/k8s/demo.yaml");
const EXTRA: &[u8] = br#"
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {clusterIP: None, ports: [{name: pg, port: 5432}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-1, namespace: shop, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: pg, port: 5432}]
endpoints:
- {addresses: [10.1.0.1], hostname: db-0}
- {addresses: [10.1.0.2]}
- {addresses: [10.1.0.3]}
---
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: shop}
spec: {type: ExternalName, externalName: example.com}
"#;

fn mesh() -> &'static Mesh {
    static MESH: OnceLock<Mesh> = OnceLock::new();
    MESH.get_or_init(|| {
        let mesh = Mesh::new(MeshConfig::new().node("node-a")).unwrap();
        mesh.apply(CLUSTER).unwrap();
        mesh.apply(EXTRA).unwrap();
        mesh
    })
}

fuzz_target!(|query: &[u8]| {
    let no_reply = query.len() < 12 || query[2] & 0x80 != 0;
    for (transport, limit) in [
        (Transport::Udp, usize::from(EDNS_PAYLOAD)),
        (Transport::Tcp, usize::from(u16::MAX)),
    ] {
        let Some(reply) = answer(mesh(), query, transport) else {
            continue;
        };
        assert!(!no_reply, "a runt or a response was answered");
        assert!(reply.len() <= limit, "{transport:?}: {} bytes", reply.len());
        let parsed = Packet::parse(&reply).expect("a reply parses");
        assert_eq!(parsed.id(), u16::from_be_bytes([query[0], query[1]]));
        assert!(parsed.has_flags(PacketFlag::RESPONSE));
        assert!(parsed.questions.len() <= 1);
    }
});
