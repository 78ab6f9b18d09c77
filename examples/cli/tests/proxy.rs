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
