//! Backends, manifests and clients for the forwarder tests.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pobox::{Mesh, MeshConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The backends run on a runtime of their own, on the real clock, so that
/// tests on a paused clock and tests that end do not stop them.
fn backend_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// An endpoint's conditions in its EndpointSlice.
#[derive(Debug, Clone, Copy)]
pub enum Condition {
    Ready,
    /// Terminating but still serving: a pod in its grace period.
    Terminating,
}

/// A group of HTTP backends, each on its own loopback address
/// (127.0.0.2, .3, ...) and port, each answering every request with its
/// name (`PREFIX-i`), each in its own EndpointSlice `PREFIX-i` of the
/// Service `web.default`.
pub struct Backends {
    prefix: String,
    addrs: Vec<SocketAddr>,
    stopping: Arc<AtomicBool>,
}

impl Backends {
    pub async fn start(n: usize) -> Backends {
        Backends::start_named(n, "web").await
    }

    pub async fn start_named(n: usize, prefix: &str) -> Backends {
        let stopping = Arc::new(AtomicBool::new(false));
        let mut addrs = Vec::new();
        for i in 0..n {
            let ip = Ipv4Addr::new(127, 0, 0, 2 + i as u8);
            let name = format!("{prefix}-{i}");
            let stop = stopping.clone();
            let addr = backend_runtime()
                .spawn(async move {
                    let listener = TcpListener::bind((ip, 0)).await.unwrap();
                    let addr = listener.local_addr().unwrap();
                    tokio::spawn(serve(listener, name, stop));
                    addr
                })
                .await
                .unwrap();
            addrs.push(addr);
        }
        Backends {
            prefix: prefix.to_owned(),
            addrs,
            stopping,
        }
    }

    pub fn names(&self) -> Vec<String> {
        (0..self.addrs.len())
            .map(|i| format!("{}-{i}", self.prefix))
            .collect()
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    pub fn index_of(&self, name: &str) -> usize {
        self.names().iter().position(|n| n == name).unwrap()
    }

    /// From now on each connection answers its next request with
    /// `Connection: close` and closes: a graceful HTTP server stop.
    pub fn stop_gracefully(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// The Service and these backends' slices.
    pub fn mesh(&self, annotations: Value) -> Mesh {
        self.mesh_with(annotations, false, &[])
    }

    /// The Service (with `ClientIP` affinity if asked) and the slices, the
    /// first `weights.len()` with the weight given for their endpoint.
    pub fn mesh_with(&self, annotations: Value, affinity: bool, weights: &[u32]) -> Mesh {
        let mesh = Mesh::new(MeshConfig::new()).unwrap();
        mesh.apply(&service(annotations, affinity)).unwrap();
        let mut items = Vec::new();
        for i in 0..self.addrs.len() {
            let w = weights
                .get(i)
                .map(|w| json!({ self.addrs[i].ip().to_string(): w }));
            items.push(self.slice_value(i, Condition::Ready, w));
        }
        mesh.apply(&list(items)).unwrap();
        mesh
    }

    /// The Service on cluster IP `vip`, port `port`, and these backends.
    pub fn mesh_with_vip(&self, vip: std::net::IpAddr, port: u16) -> Mesh {
        let mesh = Mesh::new(MeshConfig::new()).unwrap();
        let service = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": vip.to_string(),
                     "ports": [{"name": "http", "port": port, "targetPort": "http"}]}});
        mesh.apply(&serde_json::to_vec(&service).unwrap()).unwrap();
        mesh.apply(&self.slices(Condition::Ready)).unwrap();
        mesh
    }

    /// The Service, these backends, and one more endpoint at `extra`.
    pub fn mesh_plus(&self, annotations: Value, extra: SocketAddr) -> Mesh {
        let mesh = self.mesh(annotations);
        mesh.apply(&slice_at("extra", extra, Condition::Ready, None))
            .unwrap();
        mesh
    }

    pub fn slice(&self, i: usize, condition: Condition) -> Vec<u8> {
        serde_json::to_vec(&self.slice_value(i, condition, None)).unwrap()
    }

    pub fn slices(&self, condition: Condition) -> Vec<u8> {
        list(
            (0..self.addrs.len())
                .map(|i| self.slice_value(i, condition, None))
                .collect(),
        )
    }

    fn slice_value(&self, i: usize, condition: Condition, weights: Option<Value>) -> Value {
        slice_value(
            &format!("{}-{i}", self.prefix),
            self.addrs[i],
            condition,
            weights,
        )
    }
}

fn service(annotations: Value, affinity: bool) -> Vec<u8> {
    let mut spec = json!({"clusterIP": "10.96.0.10",
        "ports": [{"name": "http", "port": 80, "targetPort": "http"}]});
    if affinity {
        spec["sessionAffinity"] = json!("ClientIP");
    }
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "annotations": annotations},
        "spec": spec}))
    .unwrap()
}

fn slice_value(
    name: &str,
    addr: SocketAddr,
    condition: Condition,
    weights: Option<Value>,
) -> Value {
    let conditions = match condition {
        Condition::Ready => json!({"ready": true}),
        Condition::Terminating => json!({"ready": false, "serving": true, "terminating": true}),
    };
    let mut annotations = json!({});
    if let Some(w) = weights {
        annotations["pobox.io/weights"] = json!(w.to_string());
    }
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations,
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": addr.port(), "protocol": "TCP"}],
        "endpoints": [{"addresses": [addr.ip().to_string()], "conditions": conditions}]})
}

fn slice_at(name: &str, addr: SocketAddr, condition: Condition, weights: Option<Value>) -> Vec<u8> {
    serde_json::to_vec(&slice_value(name, addr, condition, weights)).unwrap()
}

fn list(items: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": items})).unwrap()
}

/// A mesh whose Service `web` has exactly the endpoints `addrs`.
pub fn mesh_of(annotations: Value, addrs: &[SocketAddr]) -> Mesh {
    let mesh = Mesh::new(MeshConfig::new()).unwrap();
    mesh.apply(&service(annotations, false)).unwrap();
    for (i, addr) in addrs.iter().enumerate() {
        mesh.apply(&slice_at(
            &format!("web-{i}"),
            *addr,
            Condition::Ready,
            None,
        ))
        .unwrap();
    }
    mesh
}

async fn serve(listener: TcpListener, name: String, stopping: Arc<AtomicBool>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        tokio::spawn(answer(stream, name.clone(), stopping.clone()));
    }
}

/// Answers each request on a connection with the backend's name.
async fn answer(mut stream: TcpStream, name: String, stopping: Arc<AtomicBool>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            buf.drain(..end + 4);
            let close = stopping.load(Ordering::SeqCst);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{}\r\n{name}",
                name.len(),
                if close { "Connection: close\r\n" } else { "" }
            );
            if stream.write_all(response.as_bytes()).await.is_err() || close {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The body of one HTTP response, from a buffer that may hold more.
fn parse_response(buf: &[u8]) -> Option<(String, usize)> {
    let end = find(buf, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))?
        .parse()
        .ok()?;
    let body = buf.get(end + 4..end + 4 + length)?;
    Some((String::from_utf8_lossy(body).into_owned(), end + 4 + length))
}

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: web\r\n\r\n";

// === tokio clients ===

/// One request on an open connection; the backend's name.
pub async fn request(stream: &mut TcpStream) -> io::Result<String> {
    tokio::time::timeout(CLIENT_TIMEOUT, async {
        stream.write_all(REQUEST).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            if let Some((body, _)) = parse_response(&buf) {
                return Ok(body);
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
}

pub async fn try_ask(addr: SocketAddr) -> io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    request(&mut stream).await
}

pub async fn ask(addr: SocketAddr) -> String {
    try_ask(addr)
        .await
        .unwrap_or_else(|e| panic!("request through {addr}: {e}"))
}

/// A request on a new connection from the local address `from`.
pub async fn ask_from(from: SocketAddr, addr: SocketAddr) -> String {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(from).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    request(&mut stream).await.unwrap()
}

/// A connection kept open after its first answer.
pub async fn hold(addr: SocketAddr) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let name = request(&mut stream).await.unwrap();
    (stream, name)
}

// === blocking clients, for tests on a paused clock ===

pub fn std_request(stream: &mut std::net::TcpStream) -> io::Result<String> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.write_all(REQUEST)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some((body, _)) = parse_response(&buf) {
            return Ok(body);
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub fn std_hold(addr: SocketAddr) -> (std::net::TcpStream, String) {
    let mut stream = std::net::TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT).unwrap();
    let name = std_request(&mut stream).unwrap();
    (stream, name)
}

pub fn std_ask(addr: SocketAddr) -> String {
    std_hold(addr).1
}

/// Runs blocking client code. While it runs, a paused clock does not
/// advance on its own (tokio inhibits auto-advance during blocking tasks).
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Polls `cond` every 10 ms, for at most 10 s.
pub async fn wait_until(mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 10 s");
}

/// An address that refuses connections (bound once, then released).
pub async fn refusing_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// An address whose connects hang: a listener that never accepts, with its
/// accept queue full, so the kernel drops further SYNs. Keep the returned
/// value alive as long as the address must stay a black hole.
pub async fn blackhole_addr() -> (
    SocketAddr,
    Vec<std::net::TcpStream>,
    tokio::net::TcpListener,
) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let fillers = blocking(move || {
        let mut fillers = Vec::new();
        for _ in 0..16 {
            match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => fillers.push(s),
                Err(_) => return fillers,
            }
        }
        panic!("the accept queue of {addr} never filled");
    })
    .await;
    (addr, fillers, listener)
}

// === external clients ===

fn run(command: &mut std::process::Command) -> String {
    let program = format!("{:?}", command.get_program());
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test installs curl and wrk)"));
    assert!(
        out.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One request with curl; the backend's name.
pub async fn curl(addr: SocketAddr) -> String {
    blocking(move || {
        run(std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .arg(format!("http://{addr}/")))
    })
    .await
}

/// wrk for `seconds` on 8 connections; its report.
pub async fn wrk(addr: SocketAddr, seconds: u32) -> String {
    blocking(move || {
        run(std::process::Command::new("wrk")
            .args(["-t2", "-c8", "--timeout", "5s"])
            .arg(format!("-d{seconds}s"))
            .arg(format!("http://{addr}/")))
    })
    .await
}

/// The request count in a wrk report.
pub fn wrk_requests(report: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(0)
}
