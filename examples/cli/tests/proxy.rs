//! `pobox proxy` as a process: forwarding to real backends, reloading its
//! inputs when they change and on SIGHUP, keeping the last good state when a
//! reload is invalid, metrics on SIGUSR1 and a graceful stop on SIGTERM.
//! Loopback only; every wait has a timeout; the process is killed when its
//! test ends.

#![cfg(feature = "proxy")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

struct Proxy {
    child: Child,
    stderr: Receiver<String>,
    addr: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn start(file: &Path, extra: &[&str]) -> Proxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pobox"))
            .arg("-f")
            .arg(file)
            .args(["proxy", "--listen", "127.0.0.1:0=web.default:80"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pobox proxy");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut proxy = Proxy {
            child,
            stderr: rx,
            addr: "0.0.0.0:0".parse().unwrap(),
        };
        let line = proxy.wait_for("proxying ");
        proxy.addr = line
            .split("proxying ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .unwrap()
            .parse()
            .unwrap();
        proxy
    }

    /// The next stderr line containing `needle` (earlier lines are skipped).
    fn wait_for(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(e) => panic!("no stderr line with {needle:?} within {WAIT:?}: {e}"),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn ask(&self) -> String {
        let mut stream = TcpStream::connect_timeout(&self.addr, WAIT).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.write_all(b"hello").unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }
}

/// What a proxy that may refuse the connection answers: its bytes, or
/// nothing when it closes or resets it. On a loaded machine the proxy can
/// accept, fail upstream and reset before this thread sees its own connect
/// complete, so a reset at connect is a refusal too.
fn answer_if_any(addr: SocketAddr) -> String {
    let mut stream = match TcpStream::connect_timeout(&addr, WAIT) {
        Ok(stream) => stream,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return String::new(),
        Err(e) => panic!("connect to {addr}: {e}"),
    };
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let _ = stream.write_all(b"hello");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

/// A backend that answers every connection with its name, then closes.
fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = Vec::new();
            let _ = stream.read_to_end(&mut request);
            let _ = stream.write_all(name.as_bytes());
        }
    });
    addr
}

/// The Service `web` with one endpoint, as JSON padded to `width` bytes.
fn manifest(endpoint: SocketAddr, width: usize) -> String {
    let mut text = format!(
        r#"{{"apiVersion":"v1","kind":"List","items":[
{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"web","namespace":"default"}},
 "spec":{{"clusterIP":"10.96.0.10","ports":[{{"port":80,"targetPort":{port}}}]}}}},
{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
 "metadata":{{"name":"web-1","namespace":"default","labels":{{"kubernetes.io/service-name":"web"}}}},
 "addressType":"IPv4","ports":[{{"port":{port}}}],"endpoints":[{{"addresses":["{ip}"]}}]}}]}}"#,
        port = endpoint.port(),
        ip = endpoint.ip()
    );
    while text.len() < width {
        text.push(' ');
    }
    text
}

fn temp_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pobox-proxy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("web.json")
}

#[test]
fn forwards_and_reloads_keeping_the_last_good_state() {
    let (a, b) = (backend("a"), backend("b"));
    let file = temp_file("reload");
    std::fs::write(&file, manifest(a, 0)).unwrap();
    let proxy = Proxy::start(&file, &[]);
    assert_eq!(proxy.ask(), "a");

    // The file changes: the next connections go to the new endpoint.
    std::fs::write(&file, manifest(b, 0)).unwrap();
    proxy.wait_for("reloaded the inputs (the inputs changed)");
    assert_eq!(proxy.ask(), "b");

    // An invalid file changes nothing, and the log says why.
    std::fs::write(&file, "{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{\"name\":\"web\"},\"spec\":{\"clusterIP\":\"10.96.0.300\",\"ports\":[{\"port\":80}]}}").unwrap();
    let line = proxy.wait_for("reload failed");
    assert!(line.contains("10.96.0.300"), "{line}");
    assert_eq!(proxy.ask(), "b");
}

#[test]
fn sighup_reloads_what_polling_cannot_see() {
    let (a, b) = (backend("a"), backend("b"));
    let file = temp_file("sighup");
    let width = manifest(a, 0).len().max(manifest(b, 0).len());
    std::fs::write(&file, manifest(a, width)).unwrap();
    let proxy = Proxy::start(&file, &[]);
    assert_eq!(proxy.ask(), "a");
    // Same length, same modification time: only SIGHUP reloads it.
    let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
    std::fs::write(&file, manifest(b, width)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(modified)
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(proxy.ask(), "a", "polling saw no change");
    proxy.signal("HUP");
    let line = proxy.wait_for("(SIGHUP)");
    assert!(!line.contains("unchanged"), "{line}");
    assert_eq!(proxy.ask(), "b");
}

#[test]
fn sigusr1_prints_metrics_and_sigterm_stops_gracefully() {
    let a = backend("a");
    let file = temp_file("signals");
    std::fs::write(&file, manifest(a, 0)).unwrap();
    let mut proxy = Proxy::start(&file, &["--drain-timeout", "1", "--threads", "2"]);
    assert_eq!(proxy.ask(), "a");
    proxy.signal("USR1");
    let line = proxy.wait_for("metrics ");
    let json: serde_json::Value =
        serde_json::from_str(line.split_once("metrics ").unwrap().1).unwrap();
    let endpoint = &json["listeners"][0]["endpoints"][0];
    assert_eq!(endpoint["addr"], a.to_string());
    assert_eq!(endpoint["connections"], 1);
    assert_eq!(endpoint["bytes_sent"], 5);
    assert_eq!(endpoint["bytes_received"], 1);
    proxy.signal("TERM");
    proxy.wait_for("stopped");
    let deadline = Instant::now() + WAIT;
    while proxy.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "pobox did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_listeners_are_usage_errors() {
    let file = temp_file("usage");
    std::fs::write(&file, manifest("127.0.0.1:9".parse().unwrap(), 0)).unwrap();
    for (args, message) in [
        (vec!["proxy"], "at least one --listen"),
        (
            vec!["proxy", "--listen", "nowhere=web"],
            "not a local IP:PORT",
        ),
        (
            vec!["proxy", "--listen", "127.0.0.1:0=web:80/UDP"],
            "only TCP",
        ),
        (
            vec![
                "proxy",
                "--listen",
                "127.0.0.1:0=web",
                "--drain-timeout",
                "soon",
            ],
            "--drain-timeout",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_pobox"))
            .arg("-f")
            .arg(&file)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

// === mTLS between two pobox processes ===

/// A CA and SPIFFE certificates for `web` and `frontend` (namespace
/// default), made with the `openssl` command in `dir`.
fn certificates(dir: &Path) {
    let script = r#"
set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=pobox test CA" -keyout ca.key -out ca.pem \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
issue() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1" \
    -keyout "$1.key" -out "$1.csr"
  printf 'subjectAltName=URI:%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n' \
    "$2" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
    -extfile "$1.ext" -out "$1.pem"
}
issue web spiffe://cluster.local/ns/default/sa/web
issue frontend spiffe://cluster.local/ns/default/sa/frontend
"#;
    let out = Command::new("bash")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tls_args(dir: &Path, who: &str) -> Vec<String> {
    let path = |f: String| dir.join(f).to_string_lossy().into_owned();
    vec![
        "--tls-cert".into(),
        path(format!("{who}.pem")),
        "--tls-key".into(),
        path(format!("{who}.key")),
        "--tls-ca".into(),
        path("ca.pem".into()),
    ]
}

#[test]
fn two_processes_speak_mtls_and_refuse_the_wrong_identity() {
    let file = temp_file("mtls");
    let dir = file.parent().unwrap().to_path_buf();
    certificates(&dir);
    let app = backend("web-app");

    // The server side: terminates mTLS for the app, admitting frontend only.
    let mut inbound = Command::new(env!("CARGO_BIN_EXE_pobox"))
        .args(["proxy", "--inbound", &format!("127.0.0.1:0={app}")])
        .args(tls_args(&dir, "web"))
        .args(["--allow", "spiffe://cluster.local/ns/default/sa/frontend"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the inbound pobox");
    let (tx, rx) = mpsc::channel();
    let stderr = inbound.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let server = Proxy {
        child: inbound,
        stderr: rx,
        addr: "0.0.0.0:0".parse().unwrap(),
    };
    let line = server.wait_for("terminating mTLS on ");
    let inbound_addr: SocketAddr = line
        .split("terminating mTLS on ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();

    // The client side: the Service names the identity its pods present.
    let annotated = |sa: &str| {
        manifest(inbound_addr, 0).replacen(
            r#""namespace":"default"}"#,
            &format!(
                r#""namespace":"default","annotations":{{"pobox.io/service-account":"{sa}"}}}}"#
            ),
            1,
        )
    };
    std::fs::write(&file, annotated("web")).unwrap();
    let client_args = tls_args(&dir, "frontend");
    let client_args: Vec<&str> = client_args.iter().map(String::as_str).collect();
    let client = Proxy::start(&file, &client_args);
    assert_eq!(client.ask(), "web-app");

    // The Service now expects `db`: the endpoint presents `web`, so the
    // client side refuses it and the app sees nothing.
    std::fs::write(&file, annotated("db")).unwrap();
    client.wait_for("reloaded");
    assert_eq!(answer_if_any(client.addr), "");

    // A client that is not on the allow-list is refused by the server side,
    // which names the reason.
    std::fs::write(&file, annotated("web")).unwrap();
    client.wait_for("reloaded");
    let web_args = tls_args(&dir, "web");
    let web_args: Vec<&str> = web_args.iter().map(String::as_str).collect();
    let impostor = Proxy::start(&file, &web_args);
    assert_eq!(answer_if_any(impostor.addr), "");
    let refusal = server.wait_for("is not on the allow-list");
    assert!(
        refusal.contains("refused 127.0.0.1:")
            && refusal.contains("SPIFFE ID spiffe://cluster.local/ns/default/sa/web"),
        "{refusal}"
    );
}

#[test]
fn partial_mtls_flags_are_usage_errors() {
    for extra in [
        &["--tls-cert", "a.pem"][..],
        &["--allow", "spiffe://cluster.local/ns/a/sa/b"][..],
        &["--inbound", "127.0.0.1:0=127.0.0.1:1"][..],
        &[
            "--inbound",
            "nonsense",
            "--tls-cert",
            "a",
            "--tls-key",
            "b",
            "--tls-ca",
            "c",
        ][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_pobox"))
            .args(["proxy", "--listen", "127.0.0.1:0=web.default:80"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--"), "{extra:?}: {stderr}");
    }
}
