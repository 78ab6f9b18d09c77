//! `Mesh::pick` reads the snapshot through a per-thread cache: it must never
//! answer from another mesh's snapshot or from a superseded one.

use std::net::SocketAddr;
use std::thread;

use pobox::{Client, Destination, Mesh, MeshConfig};

fn service_with(endpoint: &str) -> String {
    format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[
          {{"apiVersion":"v1","kind":"Service","metadata":{{"name":"web","namespace":"default"}},
            "spec":{{"clusterIP":"10.96.0.10","ports":[{{"port":80,"targetPort":8080}}]}}}},
          {{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
            "metadata":{{"name":"web-1","namespace":"default","labels":{{"kubernetes.io/service-name":"web"}}}},
            "addressType":"IPv4","ports":[{{"port":8080}}],
            "endpoints":[{{"addresses":["{endpoint}"]}}]}}]}}"#
    )
}

fn mesh_with(endpoint: &str) -> Mesh {
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    mesh.apply(service_with(endpoint).as_bytes()).unwrap();
    mesh
}

fn pick(mesh: &Mesh) -> (SocketAddr, u64) {
    let dest: Destination = "10.96.0.10:80".parse().unwrap();
    let p = mesh.pick(&dest, &Client::new()).unwrap();
    (p.addr, p.version)
}

#[test]
fn two_meshes_at_the_same_version_never_answer_for_each_other() {
    // Same VIP, same version number, different endpoints.
    let a = mesh_with("10.1.0.1");
    let b = mesh_with("10.2.0.1");
    assert_eq!(a.version(), b.version());
    for _ in 0..3 {
        assert_eq!(pick(&a).0.to_string(), "10.1.0.1:8080");
        assert_eq!(pick(&b).0.to_string(), "10.2.0.1:8080");
    }
    // A clone is the same mesh, and shares its cache entry.
    let a2 = a.clone();
    assert_eq!(pick(&a2).0.to_string(), "10.1.0.1:8080");
}

#[test]
fn a_publish_from_another_thread_is_seen_by_the_next_pick() {
    let mesh = mesh_with("10.1.0.1");
    assert_eq!(pick(&mesh), ("10.1.0.1:8080".parse().unwrap(), 1));
    let writer = mesh.clone();
    thread::spawn(move || writer.apply(service_with("10.1.0.2").as_bytes()).unwrap())
        .join()
        .unwrap();
    assert_eq!(pick(&mesh), ("10.1.0.2:8080".parse().unwrap(), 2));
}

#[test]
fn a_failed_pick_reports_the_current_reason() {
    let mesh = mesh_with("10.1.0.1");
    pick(&mesh);
    mesh.delete(pobox::Kind::EndpointSlice, "default", "web-1")
        .unwrap();
    let dest: Destination = "10.96.0.10:80".parse().unwrap();
    let err = mesh.pick(&dest, &Client::new()).unwrap_err();
    assert!(err.to_string().contains("default/web"), "{err}");
    let err = mesh
        .pick(&"10.96.0.99:80".parse().unwrap(), &Client::new())
        .unwrap_err();
    assert!(err.to_string().contains("10.96.0.99:80"), "{err}");
}
