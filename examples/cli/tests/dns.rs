//! `pobox dns` and `pobox env` on the shipped example manifests: outputs,
//! the JSON shape, exit statuses.

use std::process::{Command, Output};

use serde_json::{json, Value};

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s/demo.yaml");

fn pobox(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pobox"))
        .arg("-f")
        .arg(DEMO)
        .args(args)
        .output()
        .expect("run pobox")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// (exit status, stdout, stderr)
fn run(args: &[&str]) -> (i32, String, String) {
    let o = pobox(args);
    (o.status.code().unwrap(), text(&o.stdout), text(&o.stderr))
}

#[test]
fn records_in_zone_file_form() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["dns", "web.default.svc.cluster.local"],
            "web.default.svc.cluster.local.\t5\tIN\tA\t10.96.0.10\n",
        ),
        (
            &["dns", "dns.kube-system.svc.cluster.local.", "aaaa"],
            "dns.kube-system.svc.cluster.local.\t5\tIN\tAAAA\tfd00:10:96::53\n",
        ),
        (
            &["dns", "db.shop.svc.cluster.local", "A"],
            "db.shop.svc.cluster.local.\t5\tIN\tA\t10.244.1.40\ndb.shop.svc.cluster.local.\t5\tIN\tA\t10.244.2.41\n",
        ),
        (
            &["dns", "_postgres._tcp.db.shop.svc.cluster.local", "SRV"],
            "_postgres._tcp.db.shop.svc.cluster.local.\t5\tIN\tSRV\t0 50 5432 db-0.db.shop.svc.cluster.local.\n_postgres._tcp.db.shop.svc.cluster.local.\t5\tIN\tSRV\t0 50 5432 db-1.db.shop.svc.cluster.local.\n",
        ),
        (
            &["dns", "10.244.2.41"],
            "41.2.244.10.in-addr.arpa.\t5\tIN\tPTR\tdb-1.db.shop.svc.cluster.local.\n",
        ),
        (
            &["dns", "payments.shop.svc.cluster.local", "CNAME"],
            "payments.shop.svc.cluster.local.\t5\tIN\tCNAME\tpayments.example.com.\n",
        ),
        (
            &["dns", "dns-version.cluster.local", "TXT"],
            "dns-version.cluster.local.\t5\tIN\tTXT\t\"1.1.0\"\n",
        ),
        (
            &["dns", "web", "--namespace", "default"],
            "web.default.svc.cluster.local.\t5\tIN\tA\t10.96.0.10\n",
        ),
        (
            &["dns", "db-0.db", "-n", "shop"],
            "db-0.db.shop.svc.cluster.local.\t5\tIN\tA\t10.244.1.40\n",
        ),
        (
            &["--cluster-domain", "corp.example", "dns", "web.default.svc.corp.example"],
            "web.default.svc.corp.example.\t5\tIN\tA\t10.96.0.10\n",
        ),
    ];
    for (args, want) in cases {
        let (code, out, err) = run(args);
        assert_eq!((code, out.as_str()), (0, *want), "{args:?}: {err}");
    }
}

#[test]
fn json_is_one_object_in_the_documented_shape() {
    let (code, out, _) = run(&["dns", "web", "--namespace", "default", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "{\"rcode\":\"NOERROR\",\"answers\":[{\"name\":\"web.default.svc.cluster.local.\",\"type\":\"A\",\"ttl\":5,\"data\":\"10.96.0.10\"}]}\n"
    );
    let (_, out, _) = run(&[
        "dns",
        "_http._tcp.web.default.svc.cluster.local",
        "SRV",
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["answers"][0],
        json!({"name": "_http._tcp.web.default.svc.cluster.local.", "type": "SRV", "ttl": 5, "data": "0 100 80 web.default.svc.cluster.local."})
    );
    let (_, out, _) = run(&["dns", "dns-version.cluster.local", "TXT", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["answers"][0]["data"], "1.1.0");
    let (_, out, _) = run(&["dns", "payments.shop.svc.cluster.local", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["answers"][0]["type"], "CNAME");
    assert_eq!(v["answers"][0]["data"], "payments.example.com.");
}

#[test]
fn exit_statuses() {
    let (code, out, err) = run(&["dns", "nope.default.svc.cluster.local", "--json"]);
    assert_eq!(code, 1);
    assert_eq!(out, "{\"rcode\":\"NXDOMAIN\",\"answers\":[]}\n");
    assert_eq!(
        err,
        "pobox: nope.default.svc.cluster.local: NXDOMAIN (no such name)\n"
    );
    let (code, out, err) = run(&["dns", "example.com"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("REFUSED"), "{err}");
    // The name exists, without AAAA: success, nothing printed, a note.
    let (code, out, err) = run(&["dns", "web.default.svc.cluster.local", "AAAA"]);
    assert_eq!((code, out.as_str()), (0, ""));
    assert_eq!(
        err,
        "pobox: web.default.svc.cluster.local: no AAAA records (the name exists)\n"
    );
    let (code, out, _) = run(&["dns", "web.default.svc.cluster.local", "AAAA", "--json"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "{\"rcode\":\"NOERROR\",\"answers\":[]}\n")
    );
    for bad in [
        &["dns"][..],
        &["dns", "web", "MX"],
        &["dns", "a", "A", "b"],
        &["env"],
        &["env", "a", "b"],
    ] {
        assert_eq!(run(bad).0, 2, "{bad:?}");
    }
}

#[test]
fn env_prints_kubelets_variables() {
    let (code, out, _) = run(&["env", "default"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "\
WEB_SERVICE_HOST=10.96.0.10
WEB_SERVICE_PORT=80
WEB_SERVICE_PORT_HTTP=80
WEB_SERVICE_PORT_METRICS=9090
WEB_PORT=tcp://10.96.0.10:80
WEB_PORT_80_TCP=tcp://10.96.0.10:80
WEB_PORT_80_TCP_PROTO=tcp
WEB_PORT_80_TCP_PORT=80
WEB_PORT_80_TCP_ADDR=10.96.0.10
WEB_PORT_9090_TCP=tcp://10.96.0.10:9090
WEB_PORT_9090_TCP_PROTO=tcp
WEB_PORT_9090_TCP_PORT=9090
WEB_PORT_9090_TCP_ADDR=10.96.0.10
"
    );
    // Headless (db) and ExternalName (payments) Services have none.
    let (_, out, _) = run(&["env", "shop"]);
    let names: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("_SERVICE_HOST="))
        .collect();
    assert_eq!(
        names,
        ["API_SERVICE_HOST=10.96.20.1", "LB_SERVICE_HOST=10.96.20.2"]
    );
    assert_eq!(
        run(&["env", "nothing-here"]),
        (0, String::new(), String::new())
    );
}
