//! The tower integration: `MeshDiscover` follows the mesh, `MeshBalance`
//! balances through it and survives endpoint churn.
#![cfg(feature = "tower")]

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use futures_core::Stream;
use pobox::tower::{Change, MeshBalance, MeshDiscover};
use pobox::{Destination, Kind, Mesh, MeshConfig, Outcome};
use tower::Service;

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default, annotations: ANNOTATIONS}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

fn service(annotations: &str) -> String {
    SERVICE.replace("ANNOTATIONS", annotations)
}

/// An EndpointSlice `name` of `web` with these addresses; `!` before an
/// address marks it not ready.
fn slice(name: &str, addrs: &[&str]) -> String {
    let endpoints: Vec<String> = addrs
        .iter()
        .map(|a| match a.strip_prefix('!') {
            Some(a) => format!("- addresses: [{a}]\n  conditions: {{ready: false}}\n"),
            None => format!("- addresses: [{a}]\n"),
        })
        .collect();
    format!(
        r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
{}"#,
        endpoints.concat()
    )
}

fn mesh() -> Mesh {
    Mesh::new(MeshConfig::new()).unwrap()
}

fn addr(ip: &str) -> SocketAddr {
    format!("{ip}:8080").parse().unwrap()
}

/// Counts wake-ups, to prove the stream is woken by a publish.
#[derive(Default)]
struct CountingWaker(AtomicUsize);

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

type Discover = MeshDiscover<fn(SocketAddr) -> SocketAddr, SocketAddr>;

/// Every change ready now, as `+addr` / `-addr`, without waiting.
fn drain(discover: &mut Discover, cx: &mut Context<'_>) -> Vec<String> {
    let mut out = Vec::new();
    while let Poll::Ready(Some(Ok(change))) = Pin::new(&mut *discover).poll_next(cx) {
        out.push(match change {
            Change::Insert(key, made) => {
                assert_eq!(key, made, "the service is made for its own address");
                format!("+{}", key.ip())
            }
            Change::Remove(key) => format!("-{}", key.ip()),
        });
    }
    out
}

/// What a step does to the mesh, and the changes the stream yields.
type Step = (&'static str, Box<dyn Fn(&Mesh)>, &'static [&'static str]);

#[test]
fn discover_follows_applies_and_deletes() {
    let mesh = mesh();
    mesh.apply(service("{}").as_bytes()).unwrap();
    mesh.apply(slice("web-1", &["10.1.0.1", "10.1.0.2"]).as_bytes())
        .unwrap();
    let dest = Destination::parse("web.default:http").unwrap();
    let mut discover: Discover = MeshDiscover::new(mesh.clone(), dest, |a| a);
    let wakes = Arc::new(CountingWaker::default());
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);

    assert_eq!(drain(&mut discover, &mut cx), ["+10.1.0.1", "+10.1.0.2"]);
    assert_eq!(drain(&mut discover, &mut cx), Vec::<String>::new());

    let steps: &[Step] = &[
        (
            "one endpoint replaced",
            Box::new(|m| {
                m.apply(slice("web-1", &["10.1.0.2", "10.1.0.3"]).as_bytes())
                    .unwrap();
            }),
            &["-10.1.0.1", "+10.1.0.3"],
        ),
        (
            "a second slice joins",
            Box::new(|m| {
                m.apply(slice("web-2", &["10.1.0.9"]).as_bytes()).unwrap();
            }),
            &["+10.1.0.9"],
        ),
        (
            "an endpoint stops being ready",
            Box::new(|m| {
                m.apply(slice("web-1", &["10.1.0.2", "!10.1.0.3"]).as_bytes())
                    .unwrap();
            }),
            &["-10.1.0.3"],
        ),
        (
            "the second slice is deleted",
            Box::new(|m| {
                m.delete(Kind::EndpointSlice, "default", "web-2").unwrap();
            }),
            &["-10.1.0.9"],
        ),
        (
            "the Service is deleted",
            Box::new(|m| {
                m.delete(Kind::Service, "default", "web").unwrap();
            }),
            &["-10.1.0.2"],
        ),
        (
            "the Service comes back",
            Box::new(|m| {
                m.apply(service("{}").as_bytes()).unwrap();
            }),
            &["+10.1.0.2"],
        ),
        (
            "an unrelated Service changes",
            Box::new(|m| {
                m.apply(
                    service("{}")
                        .replace("name: web", "name: other")
                        .replace("10.96.0.10", "10.96.0.11")
                        .as_bytes(),
                )
                .unwrap();
            }),
            &[],
        ),
    ];
    for (what, step, want) in steps {
        let before = wakes.0.load(Ordering::SeqCst);
        step(&mesh);
        assert!(
            wakes.0.load(Ordering::SeqCst) > before,
            "{what}: the publish wakes the stream"
        );
        assert_eq!(drain(&mut discover, &mut cx), *want, "{what}");
    }
    let known: Vec<_> = discover.endpoints().collect();
    assert_eq!(known, [addr("10.1.0.2")]);
}

/// A fake endpoint: records calls, answers with its address, or fails.
#[derive(Clone)]
struct Backend {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<(SocketAddr, u32)>>>,
    failing: Arc<Mutex<Vec<SocketAddr>>>,
    /// Shared by every clone: counts live inner services of this address.
    _alive: Arc<Alive>,
}

struct Alive(SocketAddr, Arc<Mutex<Vec<SocketAddr>>>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.1.lock().unwrap().retain(|a| *a != self.0);
    }
}

impl Service<u32> for Backend {
    type Response = SocketAddr;
    type Error = String;
    type Future = std::future::Ready<Result<SocketAddr, String>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, n: u32) -> Self::Future {
        self.calls.lock().unwrap().push((self.addr, n));
        if self.failing.lock().unwrap().contains(&self.addr) {
            std::future::ready(Err(format!("{} refused", self.addr)))
        } else {
            std::future::ready(Ok(self.addr))
        }
    }
}

struct Backends {
    calls: Arc<Mutex<Vec<(SocketAddr, u32)>>>,
    failing: Arc<Mutex<Vec<SocketAddr>>>,
    alive: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Backends {
    fn new() -> Backends {
        Backends {
            calls: Arc::default(),
            failing: Arc::default(),
            alive: Arc::default(),
        }
    }

    fn make(&self) -> impl FnMut(SocketAddr) -> Backend {
        let (calls, failing, alive) =
            (self.calls.clone(), self.failing.clone(), self.alive.clone());
        move |addr| {
            alive.lock().unwrap().push(addr);
            Backend {
                addr,
                calls: calls.clone(),
                failing: failing.clone(),
                _alive: Arc::new(Alive(addr, alive.clone())),
            }
        }
    }

    fn alive(&self) -> Vec<SocketAddr> {
        let mut v = self.alive.lock().unwrap().clone();
        v.sort();
        v
    }
}

async fn call<S: Service<u32, Response = SocketAddr>>(
    svc: &mut S,
    n: u32,
) -> Result<SocketAddr, S::Error> {
    poll_fn(|cx| svc.poll_ready(cx)).await?;
    svc.call(n).await
}

#[tokio::test]
async fn balance_round_robins_and_survives_churn() {
    let mesh = mesh();
    mesh.apply(service("{}").as_bytes()).unwrap();
    mesh.apply(slice("web-1", &["10.1.0.1", "10.1.0.2"]).as_bytes())
        .unwrap();
    let backends = Backends::new();
    let dest = Destination::parse("web:http").unwrap();
    let mut web = MeshBalance::new(mesh.clone(), dest, backends.make());

    let mut got = Vec::new();
    for n in 0..4 {
        got.push(call(&mut web, n).await.unwrap());
    }
    let (a, b) = (addr("10.1.0.1"), addr("10.1.0.2"));
    assert_eq!(got, [a, b, a, b], "round robin, the default policy");
    assert_eq!(backends.alive(), [a, b]);

    // A request is under way on 10.1.0.1 when the endpoints roll over.
    let in_flight = web.call(100);
    mesh.apply(slice("web-1", &["10.1.0.3", "10.1.0.4"]).as_bytes())
        .unwrap();
    let mut got = Vec::new();
    for n in 0..4 {
        got.push(call(&mut web, n).await.unwrap());
    }
    let (c, d) = (addr("10.1.0.3"), addr("10.1.0.4"));
    got.sort();
    assert_eq!(got, [c, c, d, d], "only the new endpoints");
    assert_eq!(in_flight.await.unwrap(), a, "the old request completes");
    assert_eq!(backends.alive(), [c, d], "old inner services dropped");
    assert_eq!(web.endpoints().count(), 2);

    // The Service goes away: requests fail with the mesh's reason; it comes
    // back: they work again.
    mesh.delete(Kind::Service, "default", "web").unwrap();
    let err = call(&mut web, 7).await.unwrap_err().to_string();
    assert!(err.contains("web"), "{err}");
    assert_eq!(backends.alive(), Vec::<SocketAddr>::new());
    mesh.apply(service("{}").as_bytes()).unwrap();
    assert!([c, d].contains(&call(&mut web, 8).await.unwrap()));

    // Every endpoint not ready: no eligible endpoint, a clear error.
    mesh.apply(slice("web-1", &["!10.1.0.3", "!10.1.0.4"]).as_bytes())
        .unwrap();
    let err = call(&mut web, 9).await.unwrap_err().to_string();
    assert!(err.contains("no") && err.contains("endpoint"), "{err}");
}

#[tokio::test]
async fn balance_reports_failures_to_outlier_detection() {
    let mesh = mesh();
    mesh.apply(service("{pobox.io/outlier-consecutive-failures: '2', pobox.io/outlier-max-ejection-percent: '50'}").as_bytes())
        .unwrap();
    mesh.apply(slice("web-1", &["10.1.0.1", "10.1.0.2"]).as_bytes())
        .unwrap();
    let backends = Backends::new();
    let bad = addr("10.1.0.1");
    backends.failing.lock().unwrap().push(bad);
    let mut web = MeshBalance::new(
        mesh.clone(),
        Destination::parse("web:http").unwrap(),
        backends.make(),
    );

    let mut failures = 0;
    for n in 0..4 {
        if call(&mut web, n).await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(failures, 2, "two failures in a row eject 10.1.0.1");
    for n in 10..20 {
        assert_eq!(call(&mut web, n).await.unwrap(), addr("10.1.0.2"));
    }
}

#[tokio::test]
async fn balance_classifies_responses() {
    let mesh = mesh();
    mesh.apply(service("{pobox.io/outlier-consecutive-failures: '1', pobox.io/outlier-max-ejection-percent: '50'}").as_bytes())
        .unwrap();
    mesh.apply(slice("web-1", &["10.1.0.1", "10.1.0.2"]).as_bytes())
        .unwrap();
    let backends = Backends::new();
    let bad = addr("10.1.0.1");
    let mut web = MeshBalance::new(
        mesh.clone(),
        Destination::parse("web:http").unwrap(),
        backends.make(),
    )
    .classify(move |reply: &SocketAddr| {
        if *reply == bad {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    });
    // The first answer from 10.1.0.1 is a "5xx": it is ejected at once.
    assert_eq!(call(&mut web, 0).await.unwrap(), bad);
    for n in 1..10 {
        assert_eq!(call(&mut web, n).await.unwrap(), addr("10.1.0.2"));
    }
}

#[tokio::test]
async fn balance_hashes_the_request_key() {
    let mesh = mesh();
    mesh.apply(service("{pobox.io/lb-policy: maglev}").as_bytes())
        .unwrap();
    mesh.apply(slice("web-1", &["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4"]).as_bytes())
        .unwrap();
    let backends = Backends::new();
    let mut web = MeshBalance::new(
        mesh.clone(),
        Destination::parse("web:http").unwrap(),
        backends.make(),
    )
    .hash_key(|n: &u32| Some((n % 8).to_be_bytes().to_vec()));
    let mut first = Vec::new();
    for n in 0..8 {
        first.push(call(&mut web, n).await.unwrap());
    }
    for n in 8..64 {
        assert_eq!(
            call(&mut web, n).await.unwrap(),
            first[(n % 8) as usize],
            "key {}",
            n % 8
        );
    }
    first.sort();
    first.dedup();
    assert!(first.len() > 1, "different keys spread: {first:?}");
}

#[tokio::test]
async fn balance_counts_requests_in_flight_for_least_request() {
    let mesh = mesh();
    mesh.apply(service("{pobox.io/lb-policy: least-request}").as_bytes())
        .unwrap();
    mesh.apply(slice("web-1", &["10.1.0.1", "10.1.0.2"]).as_bytes())
        .unwrap();
    // An inner service whose responses wait until released.
    let gate = Arc::new(tokio::sync::Notify::new());
    let make = {
        let gate = gate.clone();
        move |addr: SocketAddr| {
            let gate = gate.clone();
            tower::service_fn(move |_: u32| {
                let gate = gate.clone();
                async move {
                    gate.notified().await;
                    Ok::<_, Infallible>(addr)
                }
            })
        }
    };
    let mut web = MeshBalance::new(mesh.clone(), Destination::parse("web:http").unwrap(), make);
    let held = web.call(0);
    let port = mesh.snapshot().service("default", "web").unwrap().ports()[0].clone();
    let busy = [addr("10.1.0.1"), addr("10.1.0.2")]
        .into_iter()
        .find(|a| port.in_flight(*a) == Some(1))
        .expect("one request counted in flight");
    // With one request held on `busy`, the other endpoint wins every pick.
    let mut others = Vec::new();
    for n in 1..6 {
        let f = web.call(n);
        let task = tokio::spawn(f);
        tokio::task::yield_now().await;
        gate.notify_one();
        others.push(task.await.unwrap().unwrap());
    }
    assert!(others.iter().all(|a| *a != busy), "{others:?} avoid {busy}");
    drop(held);
    assert_eq!(port.in_flight(busy), Some(0), "a dropped request ends");
}

// Compile-time check: MeshBalance works where tower wants a Send service.
#[allow(dead_code)]
fn is_send<T: Send>(_: &T) {}
#[allow(dead_code)]
fn balance_is_send(b: MeshBalance<u32, Backend, fn(SocketAddr) -> Backend>) -> impl Future {
    is_send(&b);
    let mut b = b;
    b.call(1)
}
