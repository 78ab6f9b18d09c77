//! The forwarder with real sockets on loopback: backends that answer HTTP
//! with their own name, real clients (tokio, std, curl, wrk), every policy
//! and affinity at the connection level, failover, outlier ejection,
//! draining, limits and shutdown.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use pobox::runtime::{Listen, Proxy, ProxyConfig};
use pobox::{Mesh, MeshConfig};
use serde_json::json;

use support::*;

async fn proxy(mesh: &Mesh, config: ProxyConfig) -> (Proxy, SocketAddr) {
    let listen: Listen = "127.0.0.1:0=web.default:80".parse().unwrap();
    let proxy = Proxy::start(mesh.clone(), [listen], config).await.unwrap();
    let addr = proxy.local_addrs()[0];
    (proxy, addr)
}

fn counts(names: &[String]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for n in names {
        *out.entry(n.clone()).or_default() += 1;
    }
    out
}

#[tokio::test]
async fn curl_reaches_every_backend_in_round_robin_order() {
    let backends = Backends::start(3).await;
    let mesh = backends.mesh(json!({}));
    let (_proxy, addr) = proxy(&mesh, ProxyConfig::new()).await;
    let mut names = Vec::new();
    for _ in 0..6 {
        names.push(curl(addr).await);
    }
    assert_eq!(names[..3], names[3..], "round robin repeats: {names:?}");
    let mut first: Vec<_> = names[..3].to_vec();
    first.sort();
    assert_eq!(first, backends.names());
}

#[tokio::test]
async fn every_policy_and_affinity_balances_connections() {
    // (annotations, session affinity, clients, connections per client,
    //  check on the names each client saw)
    type Check = fn(&[Vec<String>]);
    let cases: Vec<(&str, serde_json::Value, bool, Check)> = vec![
        ("round-robin", json!({}), false, |seen| {
            let all: Vec<String> = seen.concat();
            let c = counts(&all);
            assert_eq!(c.len(), 3, "{c:?}");
            assert!(c.values().all(|&n| n == all.len() / 3), "{c:?}");
        }),
        (
            "random",
            json!({"pobox.io/lb-policy": "random"}),
            false,
            |seen| {
                assert_eq!(counts(&seen.concat()).len(), 3);
            },
        ),
        (
            "maglev",
            json!({"pobox.io/lb-policy": "maglev"}),
            false,
            |seen| {
                for client in seen {
                    assert_eq!(
                        counts(client).len(),
                        1,
                        "one client, one backend: {client:?}"
                    );
                }
                let firsts: Vec<String> = seen.iter().map(|c| c[0].clone()).collect();
                assert!(counts(&firsts).len() >= 2, "clients spread: {firsts:?}");
            },
        ),
        (
            "ring-hash",
            json!({"pobox.io/lb-policy": "ring-hash"}),
            false,
            |seen| {
                for client in seen {
                    assert_eq!(counts(client).len(), 1, "{client:?}");
                }
                let firsts: Vec<String> = seen.iter().map(|c| c[0].clone()).collect();
                assert!(counts(&firsts).len() >= 2, "clients spread: {firsts:?}");
            },
        ),
        ("ClientIP affinity", json!({}), true, |seen| {
            for client in seen {
                assert_eq!(counts(client).len(), 1, "{client:?}");
            }
            let firsts: Vec<String> = seen.iter().map(|c| c[0].clone()).collect();
            assert_eq!(
                counts(&firsts).len(),
                3,
                "round robin across clients: {firsts:?}"
            );
        }),
    ];
    for (label, annotations, affinity, check) in cases {
        let backends = Backends::start(3).await;
        let mesh = backends.mesh_with(annotations, affinity, &[]);
        let (_proxy, addr) = proxy(&mesh, ProxyConfig::new()).await;
        let mut seen = Vec::new();
        for client in 0..12u8 {
            let from = SocketAddr::from(([127, 0, 1, 10 + client], 0));
            let mut names = Vec::new();
            for _ in 0..6 {
                names.push(ask_from(from, addr).await);
            }
            seen.push(names);
        }
        eprintln!("{label}: {seen:?}");
        check(&seen);
    }
}

#[tokio::test]
async fn weighted_round_robin_follows_the_weights() {
    let backends = Backends::start(2).await;
    let mesh = backends.mesh_with(
        json!({"pobox.io/lb-policy": "weighted-round-robin"}),
        false,
        &[3, 1],
    );
    let (_proxy, addr) = proxy(&mesh, ProxyConfig::new()).await;
    let mut names = Vec::new();
    for _ in 0..40 {
        names.push(ask(addr).await);
    }
    let c = counts(&names);
    assert_eq!(c[&backends.names()[0]], 30, "{c:?}");
    assert_eq!(c[&backends.names()[1]], 10, "{c:?}");
}

#[tokio::test]
async fn least_request_counts_open_connections() {
    let backends = Backends::start(2).await;
    let mesh = backends.mesh(json!({"pobox.io/lb-policy": "least-request"}));
    let (proxy, addr) = proxy(&mesh, ProxyConfig::new()).await;
    // Power of two choices over two endpoints always takes the one with
    // fewer open connections: held connections alternate exactly.
    let mut held = Vec::new();
    for _ in 0..10 {
        let (conn, name) = hold(addr).await;
        held.push((conn, name));
    }
    let c = counts(&held.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>());
    assert_eq!(c.values().copied().collect::<Vec<_>>(), vec![5, 5], "{c:?}");
    let m = proxy.metrics();
    assert_eq!(m.listeners[0].active, 10);
    assert!(m.listeners[0].endpoints.iter().all(|e| e.active == 5));
    // Close the four held on one backend: the next four go there.
    let first = held[0].1.clone();
    held.retain(|(_, n)| *n != first);
    wait_until(|| proxy.metrics().listeners[0].active == 5).await;
    for _ in 0..5 {
        let (conn, name) = hold(addr).await;
        assert_eq!(name, first);
        held.push((conn, name));
    }
}

#[tokio::test]
async fn a_refused_connect_fails_over_and_outlier_detection_ejects_it() {
    for outlier in [false, true] {
        let backends = Backends::start(2).await;
        let refusing = refusing_addr().await;
        let annotations = if outlier {
            json!({"pobox.io/outlier-consecutive-failures": "1",
                   "pobox.io/outlier-max-ejection-percent": "100"})
        } else {
            json!({})
        };
        let mesh = backends.mesh_plus(annotations, refusing);
        let (proxy, addr) = proxy(&mesh, ProxyConfig::new()).await;
        let mut names = Vec::new();
        for _ in 0..30 {
            names.push(ask(addr).await);
        }
        // Every connection reached a live backend: none saw the refusal.
        assert_eq!(counts(&names).len(), 2, "{names:?}");
        let m = proxy.metrics();
        let bad = m.listeners[0]
            .endpoints
            .iter()
            .find(|e| e.addr == refusing)
            .expect("the refusing endpoint has metrics");
        assert_eq!(bad.connections, 0);
        if outlier {
            // Ejected at its first failure: never tried again.
            assert_eq!(bad.connect_failures, 1, "{m:?}");
        } else {
            // Round robin over three, failover included: a connection that
            // tries it takes the next slot too, so every other connection
            // tries it first.
            assert_eq!(bad.connect_failures, 15, "{m:?}");
        }
        assert_eq!(m.listeners[0].failed, 0);
    }
}

#[tokio::test]
async fn when_every_endpoint_refuses_the_client_is_reset_after_bounded_attempts() {
    let refusing = [refusing_addr().await, refusing_addr().await];
    let mesh = mesh_of(json!({}), &refusing);
    let (proxy, addr) = proxy(&mesh, ProxyConfig::new().connect_attempts(5)).await;
    assert!(try_ask(addr).await.is_err(), "the client sees a reset");
    let m = proxy.metrics();
    assert_eq!(m.listeners[0].failed, 1);
    // Each endpoint tried once: failover never retries the same one.
    let failures: Vec<u64> = m.listeners[0]
        .endpoints
        .iter()
        .map(|e| e.connect_failures)
        .collect();
    assert_eq!(failures, vec![1, 1]);
}

#[tokio::test]
async fn a_connect_timeout_fails_over() {
    let backends = Backends::start(1).await;
    let (blackhole, _fillers, _listener) = blackhole_addr().await;
    let mesh = backends.mesh_plus(json!({}), blackhole);
    let config = ProxyConfig::new().connect_timeout(Duration::from_millis(200));
    let (proxy, addr) = proxy(&mesh, config).await;
    // Round robin tries the blackhole (the lower address) first, its
    // connect hangs until the timeout, then the live endpoint takes the
    // connection; failover took the next slot, so the next connection tries
    // the blackhole again.
    for _ in 0..2 {
        assert_eq!(ask(addr).await, backends.names()[0]);
    }
    let m = proxy.metrics();
    let hole = m.listeners[0]
        .endpoints
        .iter()
        .find(|e| e.addr == blackhole)
        .unwrap();
    assert_eq!(hole.connect_failures, 2);
}

#[tokio::test(start_paused = true)]
async fn a_terminating_endpoint_drains_until_the_drain_timeout_on_a_paused_clock() {
    let backends = Backends::start(2).await;
    let mesh = backends.mesh(json!({}));
    let config = ProxyConfig::new().drain_timeout(Some(Duration::from_secs(30)));
    let (proxy, addr) = proxy(&mesh, config).await;
    // Real I/O runs in blocking tasks: while one runs the paused clock stands
    // still, so only the sleeps below move it.
    let (mut old, first) = blocking(move || std_hold(addr)).await;
    mesh.apply(&backends.slice(backends.index_of(&first), Condition::Terminating))
        .unwrap();
    wait_until(|| {
        proxy.metrics().listeners[0]
            .endpoints
            .iter()
            .any(|e| e.draining)
    })
    .await;
    // New connections avoid it ...
    for _ in 0..4 {
        let name = blocking(move || std_ask(addr)).await;
        assert_ne!(name, first);
    }
    // ... the open one still works 29 s on ...
    tokio::time::sleep(Duration::from_secs(29)).await;
    let expected = first.clone();
    old = blocking(move || {
        assert_eq!(std_request(&mut old).unwrap(), expected);
        old
    })
    .await;
    // ... and is closed once the 30 s have passed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let closed = blocking(move || std_request(&mut old).is_err()).await;
    assert!(closed, "the drain timeout closes the connection");
    let m = proxy.metrics();
    let drained: u64 = m.listeners[0].endpoints.iter().map(|e| e.drained).sum();
    assert_eq!(drained, 1);
}

#[tokio::test]
async fn without_a_drain_timeout_a_removed_endpoint_keeps_its_open_connections() {
    let backends = Backends::start(2).await;
    let mesh = backends.mesh(json!({}));
    let (proxy, addr) = proxy(&mesh, ProxyConfig::new()).await;
    let (mut old, first) = hold(addr).await;
    let index = backends.index_of(&first);
    mesh.delete(
        pobox::Kind::EndpointSlice,
        "default",
        &format!("web-{index}"),
    )
    .unwrap();
    wait_until(|| {
        proxy.metrics().listeners[0]
            .endpoints
            .iter()
            .any(|e| e.draining && e.active == 1)
    })
    .await;
    for _ in 0..4 {
        assert_ne!(ask(addr).await, first);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(request(&mut old).await.unwrap(), first);
}

#[tokio::test]
async fn the_connection_limit_resets_the_connection_over_it() {
    let backends = Backends::start(1).await;
    let mesh = backends.mesh(json!({}));
    let (proxy, addr) = proxy(&mesh, ProxyConfig::new().max_connections(2)).await;
    let a = hold(addr).await;
    let _b = hold(addr).await;
    assert!(try_ask(addr).await.is_err(), "the third is over the limit");
    assert_eq!(proxy.metrics().listeners[0].rejected, 1);
    drop(a);
    wait_until(|| proxy.metrics().listeners[0].active == 1).await;
    assert_eq!(ask(addr).await, backends.names()[0]);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_closes_what_outlives_the_grace_period() {
    let backends = Backends::start(1).await;
    let mesh = backends.mesh(json!({}));
    let (proxy, addr) = proxy(&mesh, ProxyConfig::new()).await;
    let (mut held, name) = hold(addr).await;
    let (bytes_sent, bytes_received) = {
        let m = proxy.metrics();
        let e = &m.listeners[0].endpoints[0];
        (e.bytes_sent, e.bytes_received)
    };
    assert!(bytes_sent > 0 && bytes_received > 0);
    let shutdown = tokio::spawn(proxy.shutdown(Duration::from_millis(500)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Still served during the grace period; no longer accepting.
    assert_eq!(request(&mut held).await.unwrap(), name);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown ends after the grace period")
        .unwrap();
    assert!(request(&mut held).await.is_err());
}

#[tokio::test]
async fn listener_specs_are_checked() {
    for (spec, ok) in [
        ("127.0.0.1:15001=web.default:80", true),
        ("[::1]:15001=10.96.0.10:80", true),
        ("127.0.0.10:80", true),
        ("127.0.0.1:0", false),
        ("localhost:80=web", false),
        ("127.0.0.1:1=web:80/UDP", false),
        ("127.0.0.1:1=", false),
    ] {
        assert_eq!(
            Listen::parse(spec).is_ok(),
            ok,
            "{spec}: {:?}",
            Listen::parse(spec)
        );
    }
    let err = Listen::parse("127.0.0.1:0").unwrap_err().to_string();
    assert!(err.contains("127.0.0.1:0"), "{err}");
    // A listener on a Service's own addresses: its VIPs.
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    mesh.apply(include_bytes!("../../../examples/k8s/demo.yaml"))
        .unwrap();
    let vips = Listen::vips(&mesh.snapshot(), "default", "web");
    assert!(!vips.is_empty());
    for l in &vips {
        assert_eq!(
            pobox::Destination::from(l.addr).to_string(),
            l.addr.to_string()
        );
    }
    // Binding fails with the address named, and nothing is served.
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let spec = format!("{}=web.default:80", taken.local_addr().unwrap());
    let err = Proxy::start(mesh, [spec.parse().unwrap()], ProxyConfig::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&taken.local_addr().unwrap().to_string()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_under_wrk_load_loses_no_request() {
    let old = Backends::start_named(3, "old").await;
    let new = Backends::start_named(3, "new").await;
    let mesh = old.mesh(json!({}));
    let config = ProxyConfig::new().drain_timeout(Some(Duration::from_secs(30)));
    let (proxy, addr) = proxy(&mesh, config).await;
    let wrk = tokio::spawn(wrk(addr, 4));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // The new pods become ready, then the old ones are marked terminating:
    // the EndpointSlice updates a rollout makes, in one apply each.
    mesh.apply(&new.slices(Condition::Ready)).unwrap();
    mesh.apply(&old.slices(Condition::Terminating)).unwrap();
    wait_until(|| {
        let m = proxy.metrics();
        let draining = m.listeners[0].endpoints.iter().filter(|e| e.draining);
        draining.count() == 3
    })
    .await;
    let before_stop = proxy.metrics();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The old pods stop gracefully: each open connection gets its current
    // answer with `Connection: close`; then their slices go.
    old.stop_gracefully();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..3 {
        mesh.delete(pobox::Kind::EndpointSlice, "default", &format!("old-{i}"))
            .unwrap();
    }
    let report = wrk.await.unwrap();
    eprintln!("{report}");
    let requests = wrk_requests(&report);
    assert!(requests > 100, "wrk made {requests} requests:\n{report}");
    assert!(!report.contains("Socket errors"), "{report}");
    assert!(!report.contains("Non-2xx"), "{report}");
    // No connection went to an old pod once it was terminating.
    let after = proxy.metrics();
    for e in &after.listeners[0].endpoints {
        if let Some(b) = before_stop.listeners[0]
            .endpoints
            .iter()
            .find(|b| b.addr == e.addr)
        {
            if old.addrs().contains(&e.addr) {
                assert_eq!(e.connections, b.connections, "{e:?}");
            }
        }
    }
    let new_connections: u64 = after.listeners[0]
        .endpoints
        .iter()
        .filter(|e| new.addrs().contains(&e.addr))
        .map(|e| e.connections)
        .sum();
    assert!(new_connections > 0, "{after:?}");
}

#[test]
fn a_standalone_proxy_runs_on_threads_of_its_own() {
    let backends_rt = tokio::runtime::Runtime::new().unwrap();
    let backends = backends_rt.block_on(Backends::start(2));
    let mesh = backends.mesh(json!({}));
    let proxy = pobox::runtime::StandaloneProxy::start(
        mesh,
        ["127.0.0.1:0=web.default:80".parse().unwrap()],
        ProxyConfig::new(),
        2,
    )
    .unwrap();
    let addr = proxy.local_addrs()[0];
    let names: Vec<String> = (0..4).map(|_| std_ask(addr)).collect();
    assert_eq!(counts(&names).len(), 2, "{names:?}");
    assert_eq!(proxy.metrics().listeners[0].accepted, 4);
    let (mut held, _) = std_hold(addr);
    proxy.stop(Duration::ZERO);
    assert!(
        std_request(&mut held).is_err(),
        "stop closes open connections"
    );
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "and the listener"
    );
}

#[tokio::test]
async fn a_listener_on_the_services_own_vip_forwards_to_it() {
    let backends = Backends::start(2).await;
    // A cluster IP on loopback, with a port free there.
    let vip: std::net::IpAddr = "127.0.0.77".parse().unwrap();
    let port = std::net::TcpListener::bind((vip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mesh = backends.mesh_with_vip(vip, port);
    let listens = Listen::vips(&mesh.snapshot(), "default", "web");
    assert_eq!(listens.len(), 1);
    assert_eq!(listens[0].addr, SocketAddr::new(vip, port));
    let proxy = Proxy::start(mesh.clone(), listens, ProxyConfig::new())
        .await
        .unwrap();
    let names = [
        ask(proxy.local_addrs()[0]).await,
        ask(SocketAddr::new(vip, port)).await,
    ];
    let mut sorted = names.to_vec();
    sorted.sort();
    assert_eq!(sorted, backends.names(), "round robin through the VIP");
}
