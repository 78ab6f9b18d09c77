//! The C fast path against the Rust pick, on one table of 1,000 Services ×
//! 10 endpoints:
//!
//! * `ffi/rust_pick_vip`: `Mesh::pick` with a `Destination::Addr`;
//! * `ffi/c_pick_addr`: `pobox_mesh_pick_addr`, called through an
//!   `extern "C"` function pointer the optimizer cannot see through, as a C
//!   caller calls it;
//! * `ffi/c_pick_batch_64` (time per pick): `pobox_mesh_pick_batch` of 64;
//! * `ffi/c_pick_text`: `pobox_mesh_pick` with a string destination;
//! * `ffi/rust_route_pick`: `Route::pick`, the destination resolved once
//!   per snapshot version;
//! * `ffi/c_route_pick`: `pobox_route_pick`, through a function pointer;
//! * `ffi/c_route_batch_64` (time per pick): `pobox_route_pick_batch` of 64.
//!
//! `cargo bench -p pobox-ffi --bench pick`; the test command runs each once.

#![allow(clippy::missing_safety_doc)]

#[allow(dead_code, unused_imports)]
#[path = "../src/lib.rs"]
mod ffi;

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ffi::pobox_result::POBOX_OK;
use pobox::{Client, Destination, Mesh};

const SERVICES: u32 = 1_000;
const PER_SERVICE: u32 = 10;

fn table() -> String {
    let mut items = Vec::new();
    for i in 0..SERVICES {
        let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + i);
        items.push(format!(
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"s{i}","namespace":"default"}},"spec":{{"clusterIP":"{vip}","ports":[{{"name":"http","port":80}}]}}}}"#
        ));
        let endpoints: Vec<String> = (0..PER_SERVICE)
            .map(|j| {
                let ip =
                    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i * PER_SERVICE + j);
                format!(r#"{{"addresses":["{ip}"]}}"#)
            })
            .collect();
        items.push(format!(
            r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{{"name":"s{i}-1","namespace":"default","labels":{{"kubernetes.io/service-name":"s{i}"}}}},"addressType":"IPv4","ports":[{{"name":"http","port":8080}}],"endpoints":[{}]}}"#,
            endpoints.join(",")
        ));
    }
    format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
        items.join(",")
    )
}

type RoutePick = unsafe extern "C" fn(
    *const ffi::pobox_route,
    *const ffi::pobox_addr,
    *const u8,
    usize,
    *mut ffi::pobox_endpoint,
) -> ffi::pobox_result;

type PickAddr = unsafe extern "C" fn(
    *const ffi::pobox_mesh,
    *const ffi::pobox_addr,
    *const ffi::pobox_addr,
    *mut ffi::pobox_endpoint,
) -> ffi::pobox_result;

fn bench(c: &mut Criterion) {
    let doc = table();
    let vip: SocketAddr = "10.96.1.244:80".parse().unwrap();

    let mesh = Mesh::new(pobox::MeshConfig::new()).unwrap();
    mesh.apply(doc.as_bytes()).unwrap();

    let mut cmesh = std::ptr::null_mut();
    // SAFETY: NULL options and a writable out-pointer; then a live mesh and doc.len() bytes.
    unsafe {
        assert_eq!(ffi::pobox_mesh_new(std::ptr::null(), &mut cmesh), POBOX_OK);
        assert_eq!(
            ffi::pobox_mesh_apply(cmesh, doc.as_ptr(), doc.len()),
            POBOX_OK
        );
    }
    let cvip = ffi::pobox_addr {
        family: ffi::POBOX_FAMILY_IPV4,
        protocol: ffi::POBOX_PROTO_TCP,
        port: 80,
        ip: [10, 96, 1, 244, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    let mut group = c.benchmark_group("ffi");
    group.measurement_time(Duration::from_secs(3));

    let dest = Destination::Addr {
        addr: vip,
        protocol: Some(pobox::Protocol::Tcp),
    };
    group.bench_function("rust_pick_vip", |b| {
        b.iter(|| mesh.pick(black_box(&dest), &Client::new()).unwrap())
    });

    let pick_addr: PickAddr = black_box(ffi::pobox_mesh_pick_addr);
    group.bench_function("c_pick_addr", |b| {
        let mut out = ffi::pobox_endpoint::default();
        b.iter(|| {
            // SAFETY: a live mesh, a readable address, a writable endpoint.
            let r = unsafe { pick_addr(cmesh, black_box(&cvip), std::ptr::null(), &mut out) };
            assert_eq!(r, POBOX_OK);
            out
        })
    });

    let dests = [cvip; 64];
    let mut eps = [ffi::pobox_endpoint::default(); 64];
    let mut results = [POBOX_OK; 64];
    group.throughput(Throughput::Elements(64));
    group.bench_function("c_pick_batch_64", |b| {
        b.iter(|| {
            // SAFETY: a live mesh and three arrays of 64.
            unsafe {
                ffi::pobox_mesh_pick_batch(
                    cmesh,
                    black_box(dests.as_ptr()),
                    64,
                    std::ptr::null(),
                    eps.as_mut_ptr(),
                    results.as_mut_ptr(),
                )
            }
        })
    });
    group.throughput(Throughput::Elements(1));

    group.bench_function("c_pick_text", |b| {
        let mut out = [0u8; ffi::POBOX_ADDRSTRLEN];
        let mut written = 0;
        b.iter(|| {
            // SAFETY: a live mesh, NUL-terminated strings, a buffer of out.len() bytes.
            unsafe {
                ffi::pobox_mesh_pick(
                    cmesh,
                    black_box(c"10.96.1.244:80").as_ptr(),
                    std::ptr::null(),
                    out.as_mut_ptr().cast(),
                    out.len(),
                    &mut written,
                )
            }
        })
    });

    let route = mesh.route(&dest, None);
    group.bench_function("rust_route_pick", |b| {
        b.iter(|| black_box(&route).pick(&Client::new()).unwrap())
    });
    let mut cdest = std::ptr::null_mut();
    let mut croute = std::ptr::null_mut();
    // SAFETY: NUL-terminated text and writable out-pointers; then live handles.
    unsafe {
        assert_eq!(
            ffi::pobox_dest_new(c"10.96.1.244:80/TCP".as_ptr(), &mut cdest),
            POBOX_OK
        );
        assert_eq!(
            ffi::pobox_route_new(cmesh, cdest, std::ptr::null(), &mut croute),
            POBOX_OK
        );
    }
    let route_pick: RoutePick = black_box(ffi::pobox_route_pick);
    group.bench_function("c_route_pick", |b| {
        let mut out = ffi::pobox_endpoint::default();
        b.iter(|| {
            // SAFETY: a live route, no client, no key, a writable endpoint.
            let r = unsafe {
                route_pick(
                    black_box(croute),
                    std::ptr::null(),
                    std::ptr::null(),
                    0,
                    &mut out,
                )
            };
            assert_eq!(r, POBOX_OK);
            out
        })
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("c_route_batch_64", |b| {
        b.iter(|| {
            // SAFETY: a live route, no clients, two arrays of 64.
            unsafe {
                ffi::pobox_route_pick_batch(
                    black_box(croute),
                    std::ptr::null(),
                    64,
                    eps.as_mut_ptr(),
                    results.as_mut_ptr(),
                )
            }
        })
    });
    group.finish();
    // SAFETY: handles from their _new functions, each freed once.
    unsafe {
        ffi::pobox_route_free(croute);
        ffi::pobox_dest_free(cdest);
        ffi::pobox_mesh_free(cmesh);
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
