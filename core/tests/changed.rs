//! `Mesh::changed`: a waiter learns of every publish, and of nothing else.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use pobox::{Kind, Mesh, MeshConfig};

const WEB: &[u8] =
    br#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},
  "spec":{"clusterIP":"10.96.0.10","ports":[{"port":80}]}}"#;

/// Wakes the test thread and counts the wake-ups.
struct ThreadWaker {
    thread: thread::Thread,
    wakes: AtomicUsize,
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

fn waker() -> (Arc<ThreadWaker>, Waker) {
    let inner = Arc::new(ThreadWaker {
        thread: thread::current(),
        wakes: AtomicUsize::new(0),
    });
    (inner.clone(), Waker::from(inner))
}

#[test]
fn resolves_at_once_when_a_newer_version_exists() {
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    let seen = mesh.version();
    mesh.apply(WEB).unwrap();
    let (_, waker) = waker();
    let mut changed = std::pin::pin!(mesh.changed(seen));
    assert_eq!(
        changed.as_mut().poll(&mut Context::from_waker(&waker)),
        Poll::Ready(mesh.version())
    );
}

#[test]
fn a_publish_on_another_thread_wakes_the_waiter() {
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    let (counter, waker) = waker();
    let mut changed = std::pin::pin!(mesh.changed(mesh.version()));
    let mut cx = Context::from_waker(&waker);
    assert!(changed.as_mut().poll(&mut cx).is_pending());
    // Polling again registers the same waker once, not twice.
    assert!(changed.as_mut().poll(&mut cx).is_pending());

    let writer = {
        let mesh = mesh.clone();
        thread::spawn(move || mesh.apply(WEB).unwrap().version)
    };
    let published = writer.join().unwrap();
    assert_eq!(counter.wakes.load(Ordering::SeqCst), 1);
    assert_eq!(changed.as_mut().poll(&mut cx), Poll::Ready(published));
}

#[test]
fn an_apply_that_changes_nothing_wakes_no_one() {
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    mesh.apply(WEB).unwrap();
    let (counter, waker) = waker();
    let mut changed = std::pin::pin!(mesh.changed(mesh.version()));
    let mut cx = Context::from_waker(&waker);
    assert!(changed.as_mut().poll(&mut cx).is_pending());
    assert!(!mesh.apply(WEB).unwrap().changed);
    assert_eq!(counter.wakes.load(Ordering::SeqCst), 0);
    assert!(changed.as_mut().poll(&mut cx).is_pending());

    // A failed apply publishes nothing either.
    assert!(mesh.apply(b"{\"kind\":\"Service\"}").is_err());
    assert_eq!(counter.wakes.load(Ordering::SeqCst), 0);

    mesh.delete(Kind::Service, "default", "web").unwrap();
    assert_eq!(counter.wakes.load(Ordering::SeqCst), 1);
    assert!(changed.as_mut().poll(&mut cx).is_ready());
}

#[test]
fn a_blocked_thread_sees_a_stream_of_publishes_in_order() {
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    // Read before the thread starts: a slow spawn may otherwise begin after
    // the last publish and have nothing left to observe.
    let start = mesh.version();
    let reader = {
        let mesh = mesh.clone();
        thread::spawn(move || {
            let (_, waker) = waker();
            let mut cx = Context::from_waker(&waker);
            let mut seen = start;
            let mut observed = Vec::new();
            while seen < 20 {
                let mut changed = std::pin::pin!(mesh.changed(seen));
                loop {
                    match changed.as_mut().poll(&mut cx) {
                        Poll::Ready(v) => {
                            assert!(v > seen, "version went from {seen} to {v}");
                            seen = v;
                            observed.push(v);
                            break;
                        }
                        // Bounded: a lost wake-up costs time here, never a hang (the
                        // wake-up itself is checked by the test above).
                        Poll::Pending => thread::park_timeout(Duration::from_secs(5)),
                    }
                }
            }
            observed
        })
    };
    for i in 0..20 {
        let doc = format!(
            r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"s{i}","namespace":"default"}},
              "spec":{{"clusterIP":"10.96.1.{i}","ports":[{{"port":80}}]}}}}"#
        );
        mesh.apply(doc.as_bytes()).unwrap();
    }
    assert_eq!(mesh.version(), 20);
    let observed = reader.join().unwrap();
    assert_eq!(observed.last(), Some(&20));
}
