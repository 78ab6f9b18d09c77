//! `pobox-http-get`: calls a Kubernetes Service by name over HTTP/1.1, each
//! request sent to the endpoint pobox picks (the Service's policy, affinity
//! and outlier detection), through pobox's tower balancer and hyper's
//! client.
//!
//! ```text
//! pobox-http-get -f MANIFEST... SERVICE PATH [--count N]
//! pobox-http-get -f local.yaml web.default:http /healthz --count 3
//! ```
//!
//! Prints one line per request: the endpoint, the status and the body.

use std::net::SocketAddr;
use std::process::ExitCode;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::header::HOST;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use pobox::tower::MeshBalance;
use pobox::{Destination, Mesh, MeshConfig, Outcome};
use tower::{Service, ServiceExt};

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    files: Vec<String>,
    service: String,
    path: String,
    count: usize,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let usage = "usage: pobox-http-get -f MANIFEST... SERVICE PATH [--count N]";
    let (mut files, mut positional, mut count) = (Vec::new(), Vec::new(), 1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-f" => files.push(args.next().ok_or("-f needs a file")?),
            "--count" => {
                count = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .ok_or("--count needs a number")?
            }
            "-h" | "--help" => return Err(usage.into()),
            _ => positional.push(arg),
        }
    }
    match <[String; 2]>::try_from(positional) {
        Ok([service, path]) if !files.is_empty() => Ok(Args {
            files,
            service,
            path,
            count,
        }),
        _ => Err(usage.into()),
    }
}

/// The balancing HTTP client: a hyper client per endpoint address, behind
/// pobox's balancer. A 5xx counts as a failure for outlier detection.
fn client(
    mesh: Mesh,
    dest: Destination,
) -> impl Service<
    Request<Empty<Bytes>>,
    Response = (SocketAddr, Response<Incoming>),
    Error = Error,
    Future: Send,
> {
    let http = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    MeshBalance::new(mesh, dest, move |addr: SocketAddr| {
        let http = http.clone();
        tower::service_fn(move |mut req: Request<Empty<Bytes>>| {
            // The endpoint picked is where the request goes; the Host header
            // keeps naming the Service.
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let uri = Uri::builder()
                .scheme("http")
                .authority(addr.to_string())
                .path_and_query(path)
                .build();
            let http = http.clone();
            async move {
                *req.uri_mut() = uri?;
                let response = http.request(req).await?;
                Ok::<_, Error>((addr, response))
            }
        })
    })
    .classify(|(_, response): &(SocketAddr, Response<Incoming>)| {
        if response.status().is_server_error() {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    })
}

async fn run(args: Args) -> Result<(), Error> {
    let mesh = Mesh::new(MeshConfig::new())?;
    for file in &args.files {
        let bytes = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
        mesh.apply(&bytes).map_err(|e| format!("{file}: {e}"))?;
    }
    let dest = Destination::parse(&args.service)?;
    let host = match &dest {
        Destination::Name { name, .. } => name.clone(),
        Destination::Addr { addr, .. } => addr.to_string(),
    };
    let mut client = client(mesh, dest);
    for _ in 0..args.count {
        let request = Request::get(args.path.as_str())
            .header(HOST, host.as_str())
            .body(Empty::new())?;
        let (addr, response) = client.ready().await?.call(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "{addr} {} {}",
            status.as_u16(),
            String::from_utf8_lossy(&body).trim_end()
        );
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(usage) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pobox-http-get: {e}");
            ExitCode::FAILURE
        }
    }
}
