//! The per-request work of the filter, natively: strip the endpoint header,
//! read `:authority` and the hash key, pick, write the endpoint. The host
//! calls Envoy makes around it are not included (see the README for the
//! in-VM figure, `timing: true`).

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use pobox::ManualClock;
use pobox_filter::{Headers, Routed, Router, Settings};

/// A request's headers as Envoy's header map holds a few of them.
struct Map(Vec<(String, String)>);

impl Headers for Map {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
    fn set(&mut self, name: &str, value: &str) {
        self.remove(name);
        self.0.push((name.into(), value.into()));
    }
    fn remove(&mut self, name: &str) {
        self.0.retain(|(k, _)| k != name);
    }
}

/// 1,000 Services × 10 endpoints, half of them hashed (maglev).
fn objects() -> String {
    let mut items = Vec::new();
    for s in 0..1000u32 {
        let policy = if s % 2 == 0 { "round-robin" } else { "maglev" };
        items.push(format!(
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"svc-{s}","namespace":"default","annotations":{{"pobox.io/lb-policy":"{policy}"}}}},"spec":{{"clusterIP":"10.96.{}.{}","ports":[{{"name":"http","port":80,"targetPort":8080}}]}}}}"#,
            s / 250,
            s % 250 + 1
        ));
        let endpoints: Vec<String> = (0..10)
            .map(|e| format!(r#"{{"addresses":["10.{}.{}.{e}"]}}"#, 1 + s / 250, s % 250))
            .collect();
        items.push(format!(
            r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{{"name":"svc-{s}-1","namespace":"default","labels":{{"kubernetes.io/service-name":"svc-{s}"}}}},"addressType":"IPv4","ports":[{{"name":"http","port":8080}}],"endpoints":[{}]}}"#,
            endpoints.join(",")
        ));
    }
    format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[{}]}}"#,
        items.join(",")
    )
}

fn bench(c: &mut Criterion) {
    let config = serde_json::json!({
        "objects": serde_json::from_str::<serde_json::Value>(&objects()).unwrap(),
        "hash_key": {"header": "x-user"},
    });
    let settings = Settings::parse(config.to_string().as_bytes()).unwrap();
    let router = Router::new(settings, Arc::new(ManualClock::new())).unwrap();
    let ip: std::net::IpAddr = "127.0.0.9".parse().unwrap();
    let client = Some(ip);
    let headers = |authority: &str| {
        Map(vec![
            (":method".into(), "GET".into()),
            (":path".into(), "/".into()),
            (":authority".into(), authority.into()),
            ("user-agent".into(), "wrk".into()),
            ("x-user".into(), "alice".into()),
            ("x-envoy-original-dst-host".into(), "6.6.6.6:1".into()),
        ])
    };
    let mut group = c.benchmark_group("route");
    for (name, authority) in [
        ("by_name_round_robin", "svc-500.default"),
        ("by_name_maglev_header_key", "svc-501.default:80"),
        ("by_vip_round_robin", "10.96.2.1:80"),
    ] {
        let template = headers(authority);
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || Map(template.0.clone()),
                |h| match router.route(h, || client) {
                    Routed::Endpoint(r) => black_box(r.addr()),
                    Routed::NoRoute(e) => panic!("{e}"),
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    // The core's share: the same pick without any header work.
    let dest: pobox::Destination = "svc-500.default:80".parse().unwrap();
    group.bench_function("core_pick_only", |b| {
        b.iter(|| black_box(router.mesh().pick(&dest, &pobox::Client::new().ip(ip))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
