//! `pobox serve-dns` asked by the real `dig` (Debian `dnsutils`; the test
//! command installs it) over UDP and TCP, on 127.0.0.1 and [::1], on ports
//! the server picks free and reports. Every wait has a timeout, and every
//! server is killed when its test ends.

#![cfg(feature = "serve-dns")]

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s/demo.yaml");

struct Server {
    child: Child,
    stderr: Receiver<String>,
    /// `(address for dig, port)` per listener, in `--listen` order.
    listeners: Vec<(String, u16)>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(files: &[&Path], listen: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pobox"));
        for f in files {
            cmd.arg("-f").arg(f);
        }
        cmd.arg("serve-dns");
        for l in listen {
            cmd.args(["--listen", l]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pobox serve-dns");
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
        let mut server = Server {
            child,
            stderr: rx,
            listeners: Vec::new(),
        };
        for _ in listen {
            let line = server.wait_for("serving DNS on ");
            let addr = line
                .split("serving DNS on ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .unwrap()
                .to_owned();
            let (host, port) = addr.rsplit_once(':').unwrap();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            server
                .listeners
                .push((host.to_owned(), port.parse().unwrap()));
        }
        server
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

    fn dig(&self, listener: usize, args: &[&str]) -> Dig {
        let (host, port) = &self.listeners[listener];
        dig(host, *port, args)
    }
}

/// What dig printed: the status, the header flags, the answer lines.
#[derive(Debug)]
struct Dig {
    status: String,
    flags: Vec<String>,
    answers: Vec<String>,
    transport: String,
}

fn dig(host: &str, port: u16, args: &[&str]) -> Dig {
    let out = Command::new("dig")
        .arg(format!("@{host}"))
        .args(["-p", &port.to_string(), "+tries=1", "+time=3"])
        .args(["+noall", "+comments", "+answer", "+stats"])
        .args(args)
        .output()
        .expect("dig (Debian dnsutils) is needed: ./scripts/test installs it");
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |prefix: &str| -> String {
        text.lines()
            .find_map(|l| l.split(prefix).nth(1))
            .unwrap_or_else(|| panic!("no {prefix:?} in dig output:\n{text}"))
            .to_owned()
    };
    let status = field("status: ").split(',').next().unwrap().to_owned();
    let flags = field(";; flags: ")
        .split(';')
        .next()
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let transport = field(";; SERVER: ");
    let answers = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    Dig {
        status,
        flags,
        answers,
        transport,
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pobox-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_record_type_over_udp_and_tcp_on_both_loopbacks() {
    let server = Server::start(&[Path::new(DEMO)], &["127.0.0.1:0", "[::1]:0"]);
    let cases: &[(&[&str], &str, &[&str])] = &[
        (
            &["web.default.svc.cluster.local", "A"],
            "NOERROR",
            &["web.default.svc.cluster.local. 5 IN A 10.96.0.10"],
        ),
        (
            &["DNS.kube-system.svc.cluster.local", "AAAA"],
            "NOERROR",
            &["dns.kube-system.svc.cluster.local. 5 IN AAAA fd00:10:96::53"],
        ),
        (
            &["_postgres._tcp.db.shop.svc.cluster.local", "SRV"],
            "NOERROR",
            &[
                "_postgres._tcp.db.shop.svc.cluster.local. 5 IN SRV 0 50 5432 db-0.db.shop.svc.cluster.local.",
                "_postgres._tcp.db.shop.svc.cluster.local. 5 IN SRV 0 50 5432 db-1.db.shop.svc.cluster.local.",
            ],
        ),
        (
            &["-x", "10.96.0.10"],
            "NOERROR",
            &["10.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."],
        ),
        (
            &["-x", "fd00:10:96::53"],
            "NOERROR",
            &["3.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.6.9.0.0.0.1.0.0.0.0.d.f.ip6.arpa. 5 IN PTR dns.kube-system.svc.cluster.local."],
        ),
        (
            &["payments.shop.svc.cluster.local", "CNAME"],
            "NOERROR",
            &["payments.shop.svc.cluster.local. 5 IN CNAME payments.example.com."],
        ),
        (
            &["dns-version.cluster.local", "TXT"],
            "NOERROR",
            &["dns-version.cluster.local. 5 IN TXT \"1.1.0\""],
        ),
        (&["web.default.svc.cluster.local", "AAAA"], "NOERROR", &[]),
        (&["nope.default.svc.cluster.local", "A"], "NXDOMAIN", &[]),
        (&["example.com", "A"], "REFUSED", &[]),
    ];
    for listener in 0..2 {
        for transport in ["+notcp", "+tcp"] {
            for (args, status, answers) in cases {
                let mut all = args.to_vec();
                all.push(transport);
                let got = server.dig(listener, &all);
                let what = format!("{all:?} via {}", got.transport);
                assert_eq!(got.status, *status, "{what}");
                assert_eq!(got.answers, *answers, "{what}");
                assert_eq!(
                    got.transport.ends_with("(TCP)"),
                    transport == "+tcp",
                    "{what}"
                );
                if *status != "REFUSED" {
                    assert!(
                        got.flags.contains(&"aa".to_owned()),
                        "{what}: {:?}",
                        got.flags
                    );
                }
            }
        }
    }
}

/// A headless Service with 100 ready endpoints: 100 A records do not fit
/// 512 bytes, nor 1232.
fn big_headless() -> String {
    let endpoints: Vec<String> = (1..=100)
        .map(|i| format!("- addresses: [10.9.{}.{}]", i / 250, i % 250 + 1))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: big, namespace: default}}\nspec: {{clusterIP: None}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: big-1, namespace: default, labels: {{kubernetes.io/service-name: big}}}}\naddressType: IPv4\nendpoints:\n{}\n",
        endpoints.join("\n")
    )
}

#[test]
fn a_large_answer_is_truncated_over_udp_and_whole_over_tcp() {
    let dir = temp_dir("truncation");
    let file = dir.join("big.yaml");
    std::fs::write(&file, big_headless()).unwrap();
    let server = Server::start(&[&file], &["127.0.0.1:0"]);
    let name = "big.default.svc.cluster.local";
    let mut fitted = Vec::new();
    for (edns, limit) in [("+noedns", 512), ("+bufsize=1232", 1232)] {
        let udp = server.dig(0, &[name, "A", "+notcp", "+ignore", edns]);
        assert!(udp.flags.contains(&"tc".to_owned()), "{edns}: {udp:?}");
        assert!(
            !udp.answers.is_empty() && udp.answers.len() < 100,
            "{edns}: {} answers",
            udp.answers.len()
        );
        // Each A record is 16 bytes compressed; the header and question ~50.
        assert!(udp.answers.len() * 16 < limit, "{edns}");
        fitted.push(udp.answers.len());
    }
    // The client's EDNS0 payload size is honoured: more fit in 1232 than in 512.
    assert!(fitted[1] > fitted[0] * 2, "{fitted:?}");
    let tcp = server.dig(0, &[name, "A", "+tcp"]);
    assert!(!tcp.flags.contains(&"tc".to_owned()), "{tcp:?}");
    assert_eq!(tcp.answers.len(), 100);
    // Without +ignore, dig retries a truncated answer over TCP.
    let retried = server.dig(0, &[name, "A", "+notcp", "+noedns"]);
    assert_eq!(retried.answers.len(), 100);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_malformed_query_gets_formerr_and_the_server_goes_on() {
    let server = Server::start(&[Path::new(DEMO)], &["127.0.0.1:0"]);
    let (host, port) = server.listeners[0].clone();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    // id 0x1234, a query with one question whose name runs off the end.
    let malformed: &[&[u8]] = &[
        &[
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 63, b'a', b'b',
        ],
        &[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0],
        &[
            0x12, 0x34, 0x01, 0x00, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1,
        ],
    ];
    for query in malformed {
        socket.send_to(query, (host.as_str(), port)).unwrap();
        let mut buf = [0u8; 512];
        let (n, _) = socket.recv_from(&mut buf).expect("a reply");
        assert!(n >= 12, "{query:?}");
        assert_eq!(&buf[..2], &[0x12, 0x34], "the id is echoed");
        assert_eq!(buf[2] & 0x80, 0x80, "QR is set");
        assert_eq!(buf[3] & 0x0f, 1, "RCODE is FORMERR for {query:?}");
    }
    // Too short to answer at all: dropped, and the server still serves.
    socket.send_to(&[0x12], (host.as_str(), port)).unwrap();
    let got = server.dig(0, &["web.default.svc.cluster.local", "A"]);
    assert_eq!(
        got.answers,
        ["web.default.svc.cluster.local. 5 IN A 10.96.0.10"]
    );
}

#[test]
fn an_invalid_reload_keeps_serving_the_last_good_snapshot() {
    let dir = temp_dir("reload");
    let file = dir.join("web.yaml");
    let web = |ip: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n")
    };
    std::fs::write(&file, web("10.96.0.10")).unwrap();
    let server = Server::start(&[&dir], &["127.0.0.1:0"]);
    let a = || {
        server
            .dig(0, &["web.default.svc.cluster.local", "A"])
            .answers
    };
    assert_eq!(a(), ["web.default.svc.cluster.local. 5 IN A 10.96.0.10"]);

    std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {clusterIP: 10.96.0.300, ports: [{port: 80}]}\n").unwrap();
    let line = server.wait_for("reload failed");
    assert!(line.contains("10.96.0.300"), "{line}");
    assert_eq!(a(), ["web.default.svc.cluster.local. 5 IN A 10.96.0.10"]);

    std::fs::write(&file, web("10.96.0.11")).unwrap();
    server.wait_for("reloaded the inputs");
    assert_eq!(a(), ["web.default.svc.cluster.local. 5 IN A 10.96.0.11"]);

    // A new file in the directory is picked up too.
    std::fs::write(
        dir.join("api.yaml"),
        "apiVersion: v1\nkind: Service\nmetadata: {name: api, namespace: default}\nspec: {clusterIP: 10.96.0.12, ports: [{port: 80}]}\n",
    )
    .unwrap();
    server.wait_for("reloaded the inputs");
    assert_eq!(
        server
            .dig(0, &["api.default.svc.cluster.local", "A"])
            .answers,
        ["api.default.svc.cluster.local. 5 IN A 10.96.0.12"]
    );
    drop(server);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn usage_errors() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pobox"))
            .args(args)
            .output()
            .unwrap()
    };
    for args in [
        &["-f", DEMO, "serve-dns"][..],
        &["-f", DEMO, "serve-dns", "--listen", "localhost"],
        &["-f", "-", "serve-dns", "--listen", "127.0.0.1:0"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}
