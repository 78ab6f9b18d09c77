//! The `pobox` binary on the shipped example manifests and the committed
//! kubectl fixtures: outputs, JSON shapes and exit statuses.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s/demo.yaml");
const KUBECTL_JSON: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../core/tests/fixtures/kubectl/get-svc-eps-all.json"
);
const KUBECTL_YAML: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../core/tests/fixtures/kubectl/get-svc-eps-all.yaml"
);

fn pobox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pobox"))
        .args(args)
        .output()
        .expect("run pobox")
}

fn pobox_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pobox"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pobox");
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn ok(o: Output) -> String {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    stdout(&o)
}

#[test]
fn services_table() {
    let out = ok(pobox(&["-f", DEMO, "services"]));
    assert_eq!(
        out,
        "\
NAMESPACE     NAME       TYPE           CLUSTER-IP   EXTERNAL-IP            PORT(S)           ENDPOINTS
default       web        ClusterIP      10.96.0.10   <none>                 80/TCP,9090/TCP   3/4
kube-system   dns        ClusterIP      10.96.0.53   <none>                 53/UDP,53/TCP     4/4
shop          api        NodePort       10.96.20.1   <none>                 80:30080/TCP      2/2
shop          db         ClusterIP      None         <none>                 5432/TCP          2/2
shop          lb         LoadBalancer   10.96.20.2   203.0.113.10           443:31443/TCP     2/2
shop          payments   ExternalName   <none>       payments.example.com   <none>            -
"
    );
}

#[test]
fn services_json() {
    let out = ok(pobox(&["-f", DEMO, "services", "--json"]));
    let list: Value = serde_json::from_str(&out).unwrap();
    let web = &list[0];
    assert_eq!(web["namespace"], "default");
    assert_eq!(web["name"], "web");
    assert_eq!(web["clusterIPs"], json!(["10.96.0.10"]));
    assert_eq!(
        web["ports"][0],
        json!({"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http", "nodePort": null})
    );
    assert_eq!(web["endpoints"], json!({"ready": 3, "total": 4}));
    assert_eq!(list.as_array().unwrap().len(), 6);
}

#[test]
fn resolve_round_robin_in_address_order() {
    let out = ok(pobox(&[
        "-f",
        DEMO,
        "resolve",
        "web.default:80",
        "--count",
        "5",
    ]));
    assert_eq!(
        out,
        "10.244.1.5:8080\n10.244.1.9:8080\n10.244.2.7:8080\n10.244.1.5:8080\n10.244.1.9:8080\n"
    );
    // The same by VIP, by port name, and by full name with a trailing dot.
    for dest in [
        "10.96.0.10:80",
        "web.default.svc:http",
        "web.default.svc.cluster.local.:80",
        "web:http",
    ] {
        let out = ok(pobox(&["-f", DEMO, "resolve", dest]));
        assert_eq!(out, "10.244.1.5:8080\n", "{dest}");
    }
}

#[test]
fn resolve_json_and_ipv6() {
    let out = ok(pobox(&[
        "-f",
        DEMO,
        "resolve",
        "[fd00:10:96::53]:53/udp",
        "--count",
        "2",
        "--json",
        "--client",
        "10.0.0.7",
    ]));
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            json!({"endpoint": "[fd00:244:1::2]:53", "service": "kube-system/dns", "version": 1}),
            json!({"endpoint": "[fd00:244:2::2]:53", "service": "kube-system/dns", "version": 1}),
        ]
    );
}

#[test]
fn endpoints_json_shape() {
    let out = ok(pobox(&[
        "-f",
        DEMO,
        "endpoints",
        "web.default:http",
        "--json",
    ]));
    let v: Value = serde_json::from_str(&out).unwrap();
    let ep = |ip: &str, node: &str, zone: &str| json!({"ip": ip, "port": 8080, "ready": true, "serving": true, "terminating": false, "node": node, "zone": zone});
    assert_eq!(
        v,
        json!({
            "service": "default/web",
            "port": {"name": "http", "port": 80, "protocol": "TCP"},
            "traffic": "internal",
            "endpoints": [
                ep("10.244.1.5", "node-a", "zone-a"),
                ep("10.244.1.9", "node-a", "zone-a"),
                ep("10.244.2.7", "node-b", "zone-b"),
            ],
        })
    );
    // --all adds the terminating endpoint the ladder left out.
    let out = ok(pobox(&[
        "-f",
        DEMO,
        "endpoints",
        "web.default:http",
        "--json",
        "--all",
    ]));
    let v: Value = serde_json::from_str(&out).unwrap();
    let all = v["endpoints"].as_array().unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(
        all[2],
        json!({"ip": "10.244.2.3", "port": 8080, "ready": false, "serving": true, "terminating": true, "node": "node-b", "zone": "zone-b"})
    );
}

#[test]
fn node_port_with_local_policy_follows_the_node() {
    let args = |node: &'static str| {
        vec![
            "-f",
            DEMO,
            "--node",
            node,
            "--node-ip",
            "192.168.1.10",
            "endpoints",
            "192.168.1.10:30080",
            "--json",
        ]
    };
    let v: Value = serde_json::from_str(&ok(pobox(&args("node-a")))).unwrap();
    assert_eq!(v["traffic"], "external");
    assert_eq!(v["endpoints"].as_array().unwrap().len(), 1);
    assert_eq!(v["endpoints"][0]["ip"], "10.244.1.20");
    let v: Value = serde_json::from_str(&ok(pobox(&args("node-c")))).unwrap();
    assert_eq!(
        v["endpoints"],
        json!([]),
        "no local endpoint on node-c: an empty set, exit 0"
    );
    // The same Service by cluster IP is internal traffic: policy Cluster.
    let v: Value = serde_json::from_str(&ok(pobox(&[
        "-f",
        DEMO,
        "--node",
        "node-c",
        "endpoints",
        "10.96.20.1:80",
        "--json",
    ])))
    .unwrap();
    assert_eq!(v["traffic"], "internal");
    assert_eq!(v["endpoints"].as_array().unwrap().len(), 2);
    // And resolving where no endpoint is eligible exits 3.
    let o = pobox(&[
        "-f",
        DEMO,
        "--node",
        "node-c",
        "--node-ip",
        "192.168.1.10",
        "resolve",
        "192.168.1.10:30080",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        stderr(&o).contains("no eligible endpoint"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn load_balancer_ip_is_external_traffic() {
    let v: Value = serde_json::from_str(&ok(pobox(&[
        "-f",
        DEMO,
        "endpoints",
        "203.0.113.10:443",
        "--json",
    ])))
    .unwrap();
    assert_eq!(v["service"], "shop/lb");
    assert_eq!(v["traffic"], "external");
}

#[test]
fn exit_statuses() {
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["-f", DEMO, "resolve", "nope.default:80"],
            1,
            "no Service matches nope.default:80",
        ),
        (
            &["-f", DEMO, "resolve", "10.96.0.99:80"],
            1,
            "no Service matches 10.96.0.99:80",
        ),
        (
            &["-f", DEMO, "resolve", "web.default:8080"],
            1,
            "Service default/web: no port matches",
        ),
        (
            &["-f", DEMO, "resolve", "web.default"],
            1,
            "it has several ports",
        ),
        (&["-f", DEMO, "resolve", "payments.shop"], 3, "ExternalName"),
        (
            &["-f", DEMO, "resolve", "10.96.0.10"],
            2,
            "an address needs a port",
        ),
        (&["-f", DEMO, "resolve"], 2, "DEST is required"),
        (&["-f", DEMO, "frobnicate"], 2, "unknown command"),
        (
            &["-f", DEMO, "resolve", "web:http", "--count", "0"],
            2,
            "--count",
        ),
        (
            &["-f", "/nonexistent.yaml", "services"],
            2,
            "/nonexistent.yaml",
        ),
        (&["services"], 2, "no input"),
        (
            &["--node", "Bad_Node", "-f", DEMO, "services"],
            2,
            "not a valid node name",
        ),
    ];
    for (args, code, message) in cases {
        let o = pobox(args);
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(message), "{args:?}: {}", stderr(&o));
        if *code != 0 {
            assert!(stdout(&o).is_empty(), "{args:?} printed {}", stdout(&o));
        }
    }
}

#[test]
fn input_errors_name_the_object_and_field_and_load_nothing() {
    let bad =
        br#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},
        "spec":{"ports":[{"name":"a","port":80},{"name":"b","port":70000}]}}"#;
    let o = pobox_stdin(&["-f", DEMO, "-f", "-", "services"], bad);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "pobox: <stdin>: Service default/web: spec.ports[1].port: 70000 is out of range 1-65535\n"
    );
    assert!(stdout(&o).is_empty());
    let o = pobox_stdin(&["-f", "-", "services"], b"kind: [unclosed");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("document 1"), "{}", stderr(&o));
}

#[test]
fn stdin_and_skipped_kinds() {
    let input = br#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: settings, namespace: default}
- apiVersion: v1
  kind: Service
  metadata: {name: one, namespace: default}
  spec: {clusterIP: 10.96.9.9, ports: [{port: 80}]}
"#;
    let o = pobox_stdin(&["-f", "-", "services"], input);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("warning: <stdin>: ConfigMap default/settings"),
        "{}",
        stderr(&o)
    );
    assert!(stdout(&o).contains("one"));
    // A single-port Service resolves without naming the port; no endpoints: exit 3.
    let o = pobox_stdin(&["-f", "-", "resolve", "one"], input);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
}

#[test]
fn real_kubectl_output_loads() {
    for file in [KUBECTL_JSON, KUBECTL_YAML] {
        let out = ok(pobox(&["-f", file, "services", "--json"]));
        let list: Value = serde_json::from_str(&out).unwrap();
        let names: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{}/{}",
                    s["namespace"].as_str().unwrap(),
                    s["name"].as_str().unwrap()
                )
            })
            .collect();
        assert!(
            names.contains(&"default/kubernetes".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"kube-system/kube-dns".to_owned()),
            "{names:?}"
        );
        let out = ok(pobox(&["-f", file, "resolve", "kubernetes.default:https"]));
        assert_eq!(out, "172.18.0.2:6443\n");
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s");
    assert!(ok(pobox(&["-f", dir, "services"])).contains("payments"));
}

#[test]
fn help_and_version() {
    assert!(ok(pobox(&["--help"])).contains("usage: pobox"));
    assert!(ok(pobox(&["--version"])).starts_with("pobox "));
}

#[test]
fn resolve_key_feeds_consistent_policies() {
    let input = br#"
apiVersion: v1
kind: Service
metadata:
  name: cache
  namespace: default
  annotations: {pobox.io/lb-policy: maglev}
spec: {clusterIP: 10.96.7.7, ports: [{port: 6379}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: cache-1
  namespace: default
  labels: {kubernetes.io/service-name: cache}
addressType: IPv4
ports: [{port: 6379}]
endpoints:
- addresses: [10.2.0.1]
- addresses: [10.2.0.2]
- addresses: [10.2.0.3]
- addresses: [10.2.0.4]
"#;
    for args in [
        &[
            "-f", "-", "resolve", "cache", "--key", "user-17", "--count", "6",
        ][..],
        &[
            "-f",
            "-",
            "resolve",
            "10.96.7.7:6379",
            "--client",
            "192.0.2.44",
            "--count",
            "6",
        ][..],
    ] {
        let o = pobox_stdin(args, input);
        let out = ok(o);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 6);
        assert!(lines.iter().all(|l| *l == lines[0]), "{args:?}: {lines:?}");
    }
    // Different keys spread over the endpoints.
    let mut seen = std::collections::BTreeSet::new();
    for k in 0..40 {
        let key = format!("user-{k}");
        seen.insert(ok(pobox_stdin(
            &["-f", "-", "resolve", "cache", "--key", &key],
            input,
        )));
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
}

#[test]
fn replay_matches_its_golden_files_on_every_run() {
    // rollout: a Maglev disruption preview, passive health, affinity
    // timeout, seeded random, errors. policies: smooth weighted round
    // robin with a drained endpoint, affinity dropped when its endpoint
    // turns NotReady, the serving-terminating fallback, a ring's
    // disruption, refused annotations.
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/replay");
    for (name, golden) in [
        ("rollout", include_str!("replay/rollout.out")),
        ("policies", include_str!("replay/policies.out")),
    ] {
        let script = format!("{dir}/{name}.jsonl");
        for _ in 0..2 {
            assert_eq!(
                ok(pobox(&["replay", &script, "--seed", "7"])),
                golden,
                "{name}"
            );
        }
    }
    // A script that is not JSON lines is an input error.
    let o = pobox_stdin(&["replay", "-"], b"{not json}\n");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("-:1: not JSON"), "{}", stderr(&o));
}
