//! `pobox`: answer, as kube-proxy would on a given node, where traffic to a
//! Service goes, from the manifests you already have.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;

use pobox::{
    Client, Destination, Endpoint, Mesh, MeshConfig, PickError, Resolved, ServiceEntry,
    ServiceType, Update,
};
use serde_json::{json, Value};

mod dns;
#[cfg(feature = "proxy")]
mod proxy;
#[cfg(any(feature = "serve-dns", feature = "proxy"))]
mod reload;
#[cfg(feature = "serve-dns")]
mod serve;

const USAGE: &str = "\
usage: pobox [-f PATH]... [--node NAME] [--zone ZONE] [--node-ip IP]... [--cluster-domain D] COMMAND

Loads Kubernetes Services and EndpointSlices (JSON or YAML: one object, a List,
or multi-document YAML, e.g. `kubectl get svc,endpointslices -A -o json`) and
answers as kube-proxy would on the given node.

options:
  -f, --file PATH        a manifest file, a directory of them, or - for stdin (repeatable)
      --node NAME        the node this runs on (for traffic policy Local and node hints)
      --zone ZONE        the node's zone (for zone hints)
      --node-ip IP       an address of the node; NodePorts listen on it (repeatable)
      --cluster-domain D the cluster DNS domain (default cluster.local)
  -h, --help             this help
  -V, --version          the version

commands:
  services [--json]                                 every Service, with ready/total endpoints
  endpoints DEST [--all] [--json]                   the eligible endpoints for DEST (--all: every known one)
  resolve DEST [--client IP] [--key K] [--count N] [--json]
                                                    N picks, one per line (--client and --key
                                                    feed affinity and the hash policies)
  dns NAME [TYPE] [--namespace NS] [--json]         DNS records (TYPE: A, AAAA, SRV, PTR, CNAME, TXT;
                                                    --namespace: the search path of a pod in NS)
  replay SCRIPT [--seed N]                          a deterministic simulation from JSON lines (see README)
  env NAMESPACE                                     kubelet's service environment variables
  serve-dns --listen ADDR:PORT [--listen ...]       a DNS server (UDP and TCP) on the inputs, reloaded
                                                    when they change
  proxy --listen ADDR=DEST [--listen ...] [--threads N] [--connect-timeout S]
        [--drain-timeout S] [--max-connections N]   a TCP forwarder: each connection to ADDR goes to
                                                    an endpoint of DEST (ADDR alone: DEST is ADDR, a
                                                    Service VIP this host owns); the inputs reload
                                                    when they change and on SIGHUP; SIGUSR1 prints
                                                    metrics; SIGTERM stops it gracefully
        [--tls-cert PEM --tls-key PEM --tls-ca PEM] mTLS between meshed peers: --listen originates
        [--trust-domain D] [--inbound ADDR=APP]...  it to each endpoint (which must present its
        [--allow SPIFFE-ID]...                      Service's pobox.io/service-account identity);
                                                    --inbound terminates it on ADDR for the local
                                                    APP, admitting --allow IDs (default: any of
                                                    the trust domain, default cluster.local)

DEST: IP:PORT, [IPv6]:PORT, or a Service name (svc, svc.ns, svc.ns.svc,
svc.ns.svc.cluster.local) with :PORT or :PORT-NAME (optional when the Service
has one port); /TCP, /UDP or /SCTP may follow.

exit status: 0 success; 1 DEST matches no Service or port (dns: NXDOMAIN or
REFUSED); 2 usage or input error; 3 no eligible endpoint (kube-proxy would
reject the connection).
";

/// A failure with its exit status.
struct Fail {
    code: u8,
    message: String,
}

impl Fail {
    fn usage(message: impl Into<String>) -> Fail {
        Fail {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<PickError> for Fail {
    fn from(e: PickError) -> Fail {
        let code = match e {
            PickError::BadDestination { .. } => 2,
            PickError::NoService { .. } | PickError::NoPort { .. } => 1,
            _ => 3,
        };
        Fail {
            code,
            message: e.to_string(),
        }
    }
}

#[derive(Default)]
struct Args {
    files: Vec<String>,
    config: MeshConfig,
    command: Option<String>,
    positional: Vec<String>,
    json: bool,
    all: bool,
    client: Option<IpAddr>,
    count: Option<u64>,
    key: Option<String>,
    seed: Option<u64>,
    namespace: Option<String>,
    listen: Vec<String>,
    proxy: ProxyOptions,
}

/// The `proxy` command's options, checked by the command.
#[derive(Default)]
struct ProxyOptions {
    threads: Option<String>,
    connect_timeout: Option<String>,
    drain_timeout: Option<String>,
    max_connections: Option<String>,
    /// `--inbound ADDR=APP`: terminate mTLS on ADDR, forward to APP.
    inbound: Vec<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    tls_ca: Option<String>,
    trust_domain: Option<String>,
    allow: Vec<String>,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Option<Args>, Fail> {
    let mut args = Args::default();
    while let Some(arg) = argv.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, Fail> {
            match inline.clone().or_else(|| argv.next()) {
                Some(v) => Ok(v),
                None => Err(Fail::usage(format!("{name} needs a value"))),
            }
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "-V" | "--version" => {
                println!("pobox {}", env!("CARGO_PKG_VERSION"));
                return Err(Fail {
                    code: 0,
                    message: String::new(),
                });
            }
            "-f" | "--file" | "--filename" => args.files.push(value(&flag)?),
            "--node" => args.config = args.config.node(value(&flag)?),
            "--zone" => args.config = args.config.zone(value(&flag)?),
            "--node-ip" => {
                let v = value(&flag)?;
                let ip = v
                    .parse()
                    .map_err(|_| Fail::usage(format!("--node-ip {v:?} is not an IP address")))?;
                args.config = args.config.node_ip(ip);
            }
            "--cluster-domain" => args.config = args.config.cluster_domain(value(&flag)?),
            "--json" => args.json = true,
            "-n" | "--namespace" => args.namespace = Some(value(&flag)?),
            "--listen" => args.listen.push(value(&flag)?),
            "--threads" => args.proxy.threads = Some(value(&flag)?),
            "--connect-timeout" => args.proxy.connect_timeout = Some(value(&flag)?),
            "--drain-timeout" => args.proxy.drain_timeout = Some(value(&flag)?),
            "--max-connections" => args.proxy.max_connections = Some(value(&flag)?),
            "--inbound" => args.proxy.inbound.push(value(&flag)?),
            "--tls-cert" => args.proxy.tls_cert = Some(value(&flag)?),
            "--tls-key" => args.proxy.tls_key = Some(value(&flag)?),
            "--tls-ca" => args.proxy.tls_ca = Some(value(&flag)?),
            "--trust-domain" => args.proxy.trust_domain = Some(value(&flag)?),
            "--allow" => args.proxy.allow.push(value(&flag)?),
            "--all" => args.all = true,
            "--client" => {
                let v = value(&flag)?;
                args.client =
                    Some(v.parse().map_err(|_| {
                        Fail::usage(format!("--client {v:?} is not an IP address"))
                    })?);
            }
            "--key" => args.key = Some(value(&flag)?),
            "--seed" => {
                let v = value(&flag)?;
                args.seed = Some(
                    v.parse()
                        .map_err(|_| Fail::usage(format!("--seed {v:?} is not a number")))?,
                );
            }
            "--count" => {
                let v = value(&flag)?;
                args.count = Some(v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    Fail::usage(format!("--count {v:?} is not a positive number"))
                })?);
            }
            "-" => args.positional.push(arg),
            f if f.starts_with('-') => return Err(Fail::usage(format!("unknown option {f}"))),
            _ if args.command.is_none() => args.command = Some(arg),
            _ => args.positional.push(arg),
        }
    }
    Ok(Some(args))
}

/// Reads every `-f` input; a directory contributes its `.json`, `.yaml` and
/// `.yml` files in name order, as `kubectl -f DIR` does.
fn read_inputs(files: &[String]) -> Result<Vec<(String, Vec<u8>)>, Fail> {
    let mut out = Vec::new();
    for f in files {
        if f == "-" {
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .map_err(|e| Fail::usage(format!("reading stdin: {e}")))?;
            out.push(("<stdin>".to_owned(), buf));
            continue;
        }
        let path = Path::new(f);
        if path.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| Fail::usage(format!("{f}: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("json" | "yaml" | "yml")
                    )
                })
                .collect();
            entries.sort();
            for p in entries {
                let bytes =
                    std::fs::read(&p).map_err(|e| Fail::usage(format!("{}: {e}", p.display())))?;
                out.push((p.display().to_string(), bytes));
            }
        } else {
            let bytes = std::fs::read(path).map_err(|e| Fail::usage(format!("{f}: {e}")))?;
            out.push((f.clone(), bytes));
        }
    }
    Ok(out)
}

fn load(args: &Args) -> Result<Mesh, Fail> {
    let mesh = Mesh::new(args.config.clone()).map_err(|e| Fail::usage(e.to_string()))?;
    if args.files.is_empty() {
        return Err(Fail::usage("no input: give one or more -f PATH"));
    }
    load_into(&mesh, args)?;
    Ok(mesh)
}

/// Applies every `-f` input to `mesh`, as one update.
fn load_into(mesh: &Mesh, args: &Args) -> Result<(), Fail> {
    // Every file is parsed first and applied as one update: all or nothing.
    let mut objects = Vec::new();
    for (name, bytes) in read_inputs(&args.files)? {
        let parsed = pobox::parse(&bytes).map_err(|e| Fail::usage(format!("{name}: {e}")))?;
        for w in parsed.warnings {
            eprintln!("warning: {name}: {w}");
        }
        objects.extend(parsed.objects);
    }
    let report = mesh
        .update(objects.into_iter().map(Update::Apply))
        .map_err(|e| Fail::usage(e.to_string()))?;
    for w in report.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let out = std::io::stdout();
    let mut out = out.lock();
    match run(&mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(fail) => {
            let _ = out.flush();
            if !fail.message.is_empty() {
                eprintln!("pobox: {}", fail.message);
            }
            ExitCode::from(fail.code)
        }
    }
}

fn run(out: &mut impl Write) -> Result<(), Fail> {
    let Some(args) = parse_args(std::env::args().skip(1))? else {
        print!("{USAGE}");
        return Ok(());
    };
    let command = args
        .command
        .clone()
        .ok_or_else(|| Fail::usage(format!("no command given\n\n{USAGE}")))?;
    let expect_positional = |n: usize| -> Result<(), Fail> {
        if args.positional.len() == n {
            Ok(())
        } else if args.positional.len() < n {
            Err(Fail::usage(format!("{command}: DEST is required")))
        } else {
            Err(Fail::usage(format!(
                "{command}: unexpected argument {:?}",
                args.positional[n]
            )))
        }
    };
    let text = match command.as_str() {
        "services" => {
            expect_positional(0)?;
            services(&load(&args)?, args.json)
        }
        "endpoints" => {
            expect_positional(1)?;
            let dest = Destination::parse(&args.positional[0])?;
            endpoints(&load(&args)?, &dest, args.all, args.json)?
        }
        "resolve" => {
            expect_positional(1)?;
            let dest = Destination::parse(&args.positional[0])?;
            resolve(&load(&args)?, &dest, &args)?
        }
        "dns" => dns::dns(&load(&args)?, &args)?,
        "replay" => {
            expect_positional(1)?;
            replay(&args, &args.positional[0])?
        }
        "env" => dns::env(&load(&args)?, &args)?,
        #[cfg(feature = "serve-dns")]
        "serve-dns" => serve::serve(&args)?,
        #[cfg(feature = "proxy")]
        "proxy" => proxy::proxy(&args)?,
        other => return Err(Fail::usage(format!("unknown command {other:?}\n\n{USAGE}"))),
    };
    out.write_all(text.as_bytes())
        .map_err(|e| Fail::usage(format!("writing output: {e}")))
}

// === replay ===

/// `replay SCRIPT [--seed N]`: reads the script and runs it with
/// [`pobox_cli::replay::run`] on a mesh with a simulated clock.
fn replay(args: &Args, script: &str) -> Result<String, Fail> {
    let text = if script == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .map_err(|e| Fail::usage(format!("reading stdin: {e}")))?;
        buf
    } else {
        std::fs::read_to_string(script).map_err(|e| Fail::usage(format!("{script}: {e}")))?
    };
    pobox::reseed_thread_rng(args.seed.unwrap_or(1).max(1));
    let clock = std::sync::Arc::new(pobox::ManualClock::new());
    let mesh = Mesh::with_clock(args.config.clone(), clock.clone())
        .map_err(|e| Fail::usage(e.to_string()))?;
    if !args.files.is_empty() {
        load_into(&mesh, args)?;
    }
    pobox_cli::replay::run(&mesh, &clock, script, &text).map_err(Fail::usage)
}

// === services ===

/// (ready, total) distinct endpoint addresses over all ports of a Service.
fn endpoint_counts(entry: &ServiceEntry) -> (usize, usize) {
    let mut all = std::collections::BTreeMap::new();
    for port in entry.ports() {
        for ep in port.endpoints() {
            *all.entry(ep.ip()).or_insert(false) |= ep.is_ready();
        }
    }
    (all.values().filter(|r| **r).count(), all.len())
}

fn services(mesh: &Mesh, as_json: bool) -> String {
    let snapshot = mesh.snapshot();
    let entries = snapshot.services();
    if as_json {
        let list: Vec<Value> = entries.iter().map(|e| service_json(e)).collect();
        return format!("{}\n", Value::Array(list));
    }
    let mut rows = vec![[
        "NAMESPACE".to_owned(),
        "NAME".to_owned(),
        "TYPE".to_owned(),
        "CLUSTER-IP".to_owned(),
        "EXTERNAL-IP".to_owned(),
        "PORT(S)".to_owned(),
        "ENDPOINTS".to_owned(),
    ]];
    for entry in entries {
        let svc = entry.service();
        let cluster_ip = if svc.is_headless() {
            "None".to_owned()
        } else {
            svc.cluster_ips()
                .first()
                .map_or("<none>".to_owned(), |ip| ip.to_string())
        };
        let mut external: Vec<String> = svc.load_balancer_ingress().to_vec();
        external.extend(svc.external_ips().iter().map(|ip| ip.to_string()));
        let external = match svc.service_type() {
            ServiceType::ExternalName => svc.external_name().unwrap_or("").to_owned(),
            ServiceType::LoadBalancer if external.is_empty() => "<pending>".to_owned(),
            _ if external.is_empty() => "<none>".to_owned(),
            _ => external.join(","),
        };
        let ports = if svc.ports().is_empty() {
            "<none>".to_owned()
        } else {
            svc.ports()
                .iter()
                .map(|p| match p.node_port() {
                    Some(np) => format!("{}:{}/{}", p.port(), np, p.protocol()),
                    None => format!("{}/{}", p.port(), p.protocol()),
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let counts = if svc.service_type() == ServiceType::ExternalName {
            "-".to_owned()
        } else {
            let (ready, total) = endpoint_counts(entry);
            format!("{ready}/{total}")
        };
        rows.push([
            svc.key().namespace().to_owned(),
            svc.key().name().to_owned(),
            svc.service_type().as_str().to_owned(),
            cluster_ip,
            external,
            ports,
            counts,
        ]);
    }
    table(&rows)
}

fn service_json(entry: &ServiceEntry) -> Value {
    let svc = entry.service();
    let (ready, total) = endpoint_counts(entry);
    json!({
        "namespace": svc.key().namespace(),
        "name": svc.key().name(),
        "type": svc.service_type().as_str(),
        "headless": svc.is_headless(),
        "clusterIPs": svc.cluster_ips().iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
        "externalIPs": svc.external_ips().iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
        "loadBalancerIngress": svc.load_balancer_ingress(),
        "externalName": svc.external_name(),
        "ports": svc.ports().iter().map(|p| json!({
            "name": p.name(),
            "port": p.port(),
            "protocol": p.protocol().as_str(),
            "targetPort": match p.target_port() {
                pobox::TargetPort::Number(n) => json!(n),
                pobox::TargetPort::Name(s) => json!(&**s),
            },
            "nodePort": p.node_port(),
        })).collect::<Vec<_>>(),
        "endpoints": {"ready": ready, "total": total},
    })
}

/// Left-aligned columns separated by three spaces, as kubectl prints them.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut s = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}   ", w = widths[i]);
            }
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

// === endpoints ===

fn opt(s: Option<&str>) -> Value {
    s.map_or(Value::Null, |s| Value::String(s.to_owned()))
}

fn endpoints(mesh: &Mesh, dest: &Destination, all: bool, as_json: bool) -> Result<String, Fail> {
    let snapshot = mesh.snapshot();
    let resolved = snapshot.resolve(dest, &Client::new())?;
    let list: Vec<&Endpoint> = if all {
        resolved.port.endpoints().iter().collect()
    } else {
        resolved.eligible().collect()
    };
    let spec = resolved.port.spec();
    if as_json {
        let eps: Vec<Value> = list
            .iter()
            .map(|e| {
                json!({
                    "ip": e.ip().to_string(),
                    "port": e.port(),
                    "ready": e.is_ready(),
                    "serving": e.is_serving(),
                    "terminating": e.is_terminating(),
                    "node": opt(e.node()),
                    "zone": opt(e.zone()),
                })
            })
            .collect();
        let v = json!({
            "service": resolved.service.service().key().as_str(),
            "port": {"name": spec.name(), "port": spec.port(), "protocol": spec.protocol().as_str()},
            "traffic": resolved.traffic.as_str(),
            "endpoints": eps,
        });
        return Ok(format!("{v}\n"));
    }
    let mut s = format!(
        "service {}  port {}  traffic {}{}\n",
        resolved.service.service().key(),
        describe_port(&resolved),
        resolved.traffic.as_str(),
        if all { "  (all endpoints)" } else { "" }
    );
    let mut rows = vec![[
        "ENDPOINT".to_owned(),
        "READY".to_owned(),
        "SERVING".to_owned(),
        "TERMINATING".to_owned(),
        "NODE".to_owned(),
        "ZONE".to_owned(),
    ]];
    for e in &list {
        rows.push([
            e.addr().to_string(),
            e.is_ready().to_string(),
            e.is_serving().to_string(),
            e.is_terminating().to_string(),
            e.node().unwrap_or("<none>").to_owned(),
            e.zone().unwrap_or("<none>").to_owned(),
        ]);
    }
    if list.is_empty() {
        s.push_str("no eligible endpoints\n");
    } else {
        s.push_str(&table(&rows));
    }
    Ok(s)
}

fn describe_port(r: &Resolved<'_>) -> String {
    let spec = r.port.spec();
    if spec.name().is_empty() {
        format!("{}/{}", spec.port(), spec.protocol())
    } else {
        format!("{} {}/{}", spec.name(), spec.port(), spec.protocol())
    }
}

// === resolve ===

fn resolve(mesh: &Mesh, dest: &Destination, args: &Args) -> Result<String, Fail> {
    let snapshot = mesh.snapshot();
    let mut client = Client::new();
    if let Some(ip) = args.client {
        client = client.ip(ip);
    }
    if let Some(key) = &args.key {
        client = client.key(key.as_bytes());
    }
    let resolved = snapshot.resolve(dest, &client)?;
    let mut s = String::new();
    for _ in 0..args.count.unwrap_or(1) {
        let endpoint = resolved.pick(&client)?;
        if args.json {
            let v = json!({
                "endpoint": endpoint.addr().to_string(),
                "service": resolved.service.service().key().as_str(),
                "version": snapshot.version(),
            });
            let _ = writeln!(s, "{v}");
        } else {
            let _ = writeln!(s, "{}", endpoint.addr());
        }
    }
    Ok(s)
}
