//! `pobox-http-get` against real local HTTP backends: the example runs as
//! a user would run it, so it cannot rot.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// An HTTP backend on an ephemeral loopback port answering `NAME PATH`, or
/// 503 for `/flaky` when `flaky`.
async fn backend(name: &'static str, flaky: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    let host = req
                        .headers()
                        .get("host")
                        .map(|h| h.to_str().unwrap().to_owned());
                    let mut response = Response::new(Full::new(Bytes::from(format!(
                        "{name} {} host={}",
                        req.uri().path(),
                        host.unwrap_or_default()
                    ))));
                    if flaky && req.uri().path() == "/flaky" {
                        *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    Ok::<_, Infallible>(response)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A Service `web` whose two EndpointSlices each hold one backend.
fn manifest(backends: &[SocketAddr], annotations: &str) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: default, annotations: {{{annotations}}}}}\n\
         spec: {{clusterIP: 10.96.0.10, ports: [{{name: http, port: 80, targetPort: http}}]}}\n"
    );
    for (i, b) in backends.iter().enumerate() {
        out += &format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: web-{i}, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {}, protocol: TCP}}]\n\
             endpoints: [{{addresses: [\"{}\"]}}]\n",
            b.port(),
            b.ip()
        );
    }
    out
}

fn run(manifest: &str, test: &str, args: &[&str]) -> (bool, String, String) {
    let path =
        std::env::temp_dir().join(format!("pobox-http-get-{}-{test}.yaml", std::process::id()));
    std::fs::write(&path, manifest).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pobox-http-get"))
        .arg("-f")
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn calls_a_service_by_name_round_robin() {
    let (a, b) = (backend("alpha", false).await, backend("beta", false).await);
    let manifest = manifest(&[a, b], "");
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run(
            &manifest,
            "rr",
            &["web.default:http", "/hello", "--count", "4"],
        )
    })
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    // Endpoints in address order, round robin: alpha, beta, alpha, beta
    // (or beta first when its port sorts first).
    let (first, second) = if a < b {
        ("alpha", "beta")
    } else {
        ("beta", "alpha")
    };
    let (first_addr, second_addr) = if a < b { (a, b) } else { (b, a) };
    let want: Vec<String> = [(first_addr, first), (second_addr, second)]
        .iter()
        .cycle()
        .take(4)
        .map(|(addr, name)| format!("{addr} 200 {name} /hello host=web.default"))
        .collect();
    assert_eq!(stdout.lines().collect::<Vec<_>>(), want);
}

#[tokio::test]
async fn a_failing_endpoint_is_ejected() {
    let (good, bad) = (backend("good", false).await, backend("bad", true).await);
    let manifest = manifest(
        &[good, bad],
        "pobox.io/outlier-consecutive-failures: '1', pobox.io/outlier-max-ejection-percent: '50'",
    );
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run(&manifest, "eject", &["web:http", "/flaky", "--count", "6"])
    })
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    let bad_lines = stdout.lines().filter(|l| l.contains(" 503 bad ")).count();
    let good_lines = stdout.lines().filter(|l| l.contains(" 200 good ")).count();
    assert_eq!(
        (bad_lines, good_lines),
        (1, 5),
        "one 503 ejects bad:\n{stdout}"
    );
}

#[test]
fn unknown_service_is_a_clear_error() {
    let (ok, _, stderr) = run(&manifest(&[], ""), "unknown", &["nope.default:http", "/"]);
    assert!(!ok);
    assert!(stderr.contains("nope.default"), "{stderr}");
}
