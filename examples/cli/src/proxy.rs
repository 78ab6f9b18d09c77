//! `proxy`: the L4 forwarder (`pobox::runtime`) on the inputs, reloading
//! them when they change or on SIGHUP. SIGUSR1 prints the metrics as JSON
//! on stderr; SIGINT or SIGTERM stops it gracefully.

use std::time::Duration;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use pobox::runtime::{Listen, Proxy, ProxyConfig};
use pobox::tls::{
    serve_inbound, AllowList, Identity, IdentityFiles, Inbound, SpiffeId, TlsClient, TlsServer,
};

use crate::{Args, Fail, ProxyOptions};

/// How often the inputs are checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(1);
/// How long open connections may run on after SIGINT or SIGTERM, when no
/// drain timeout is given.
const DEFAULT_GRACE: Duration = Duration::from_secs(10);

fn seconds(flag: &str, value: &str) -> Result<Duration, Fail> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0 && *s <= 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            Fail::usage(format!(
                "{flag} {value:?} is not a number of seconds (0-86400)"
            ))
        })
}

fn count(flag: &str, value: &str) -> Result<usize, Fail> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| Fail::usage(format!("{flag} {value:?} is not a positive number")))
}

/// `proxy --listen ADDR=DEST [--listen ...]`. Runs until stopped.
pub(crate) fn proxy(args: &Args) -> Result<String, Fail> {
    if let Some(extra) = args.positional.first() {
        return Err(Fail::usage(format!("proxy: unexpected argument {extra:?}")));
    }
    if args.listen.is_empty() && args.proxy.inbound.is_empty() {
        return Err(Fail::usage(
            "proxy: give at least one --listen ADDR=DEST (e.g. 127.0.0.1:15001=web.default:80) or --inbound ADDR=APP",
        ));
    }
    if args.files.iter().any(|f| f == "-") {
        return Err(Fail::usage(
            "proxy: inputs are reloaded when they change, so stdin (-) cannot be one",
        ));
    }
    let listens = args
        .listen
        .iter()
        .map(|l| Listen::parse(l).map_err(|e| Fail::usage(format!("--listen: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = ProxyConfig::new();
    let opts = &args.proxy;
    if let Some(v) = &opts.connect_timeout {
        config = config.connect_timeout(seconds("--connect-timeout", v)?);
    }
    if let Some(v) = &opts.drain_timeout {
        config = config.drain_timeout(Some(seconds("--drain-timeout", v)?));
    }
    if let Some(v) = &opts.max_connections {
        config = config.max_connections(count("--max-connections", v)?);
    }
    let threads = match &opts.threads {
        Some(v) => count("--threads", v)?,
        None => 1,
    };
    let grace = match &opts.drain_timeout {
        Some(v) => seconds("--drain-timeout", v)?,
        None => DEFAULT_GRACE,
    };
    let tls = Tls::from_args(opts)?;
    if tls.is_some() {
        // mTLS names each refused peer and its reason through `log`.
        let _ = log::set_logger(&StderrLog);
        log::set_max_level(log::LevelFilter::Info);
    }
    let inbound = inbound_specs(&opts.inbound)?;
    if !inbound.is_empty() && tls.is_none() {
        return Err(Fail::usage(
            "proxy: --inbound terminates mTLS: give --tls-cert, --tls-key and --tls-ca",
        ));
    }
    // Only --inbound: no Services to follow, so no inputs are needed.
    let inbound_only = args.listen.is_empty();
    let mesh = if inbound_only && args.files.is_empty() {
        pobox::Mesh::new(args.config.clone()).map_err(|e| Fail::usage(e.to_string()))?
    } else {
        crate::load(args)?
    };
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .map_err(|e| Fail::usage(format!("proxy: starting the runtime: {e}")))?;
    runtime.block_on(async move {
        let mut servers = Vec::new();
        if let Some(tls) = &tls {
            let identity = tls.identity()?;
            identity.watch(RELOAD_EVERY);
            eprintln!("pobox: mTLS identity {}", identity.id());
            config = config.upstream_tls(TlsClient::new(identity.clone()), &tls.trust_domain);
            for (addr, app) in inbound {
                let server = TlsServer::new(identity.clone(), tls.allow.clone())
                    .map_err(|e| Fail::usage(format!("--allow: {e}")))?;
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| Fail::usage(format!("proxy: --inbound {addr}: {e}")))?;
                eprintln!(
                    "pobox: terminating mTLS on {} for {app}",
                    listener.local_addr().map_or(addr, |a| a)
                );
                let (stop, stopped) = tokio::sync::watch::channel(false);
                let inbound = Inbound { app, drain: grace };
                let task = tokio::spawn(serve_inbound(listener, server, inbound, async move {
                    let mut stopped = stopped;
                    let _ = stopped.wait_for(|s| *s).await;
                }));
                servers.push((stop, task));
            }
        }
        let signals = Signals::install();
        let proxy = Proxy::start(mesh.clone(), listens, config)
            .await
            .map_err(|e| Fail::usage(format!("proxy: {e}")))?;
        for (addr, l) in proxy.local_addrs().iter().zip(&args.listen) {
            let dest = l.split_once('=').map_or(l.as_str(), |(_, d)| d);
            eprintln!(
                "pobox: proxying {addr} to {dest}, snapshot {}",
                mesh.version()
            );
        }
        if !args.files.is_empty() {
            tokio::spawn(crate::reload::follow(
                mesh,
                args.files.clone(),
                RELOAD_EVERY,
            ));
        }
        signals.serve(&proxy).await;
        eprintln!("pobox: stopping: open connections have {grace:?} to finish");
        for (stop, _) in &servers {
            let _ = stop.send(true);
        }
        proxy.shutdown(grace).await;
        for (_, task) in servers {
            let _ = task.await;
        }
        eprintln!("pobox: stopped");
        Ok(String::new())
    })
}

/// The signals `proxy` handles, installed before it says it is ready: a
/// SIGUSR1 sent as soon as "proxying" appears must not kill it (the
/// default action).
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let streams = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::user_defined1()),
            ) {
                (Ok(term), Ok(usr1)) => Some((term, usr1)),
                _ => None,
            };
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Returns on SIGINT or SIGTERM; prints the metrics on SIGUSR1.
    async fn serve(self, proxy: &Proxy) {
        #[cfg(unix)]
        if let Some((mut term, mut usr1)) = self.streams {
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return,
                    _ = term.recv() => return,
                    _ = usr1.recv() => {
                        match serde_json::to_string(&proxy.metrics()) {
                            Ok(json) => eprintln!("pobox: metrics {json}"),
                            Err(e) => eprintln!("pobox: metrics: {e}"),
                        }
                    }
                }
            }
        }
        let _ = proxy;
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The mTLS settings of `proxy`: identity files, trust domain, allow-list.
struct Tls {
    files: IdentityFiles,
    trust_domain: String,
    allow: AllowList,
}

impl Tls {
    /// `None` without `--tls-*` flags; an error for some but not all three.
    fn from_args(opts: &ProxyOptions) -> Result<Option<Tls>, Fail> {
        let (cert, key, ca) = match (&opts.tls_cert, &opts.tls_key, &opts.tls_ca) {
            (None, None, None) => {
                if opts.trust_domain.is_some() || !opts.allow.is_empty() {
                    return Err(Fail::usage(
                        "proxy: --trust-domain and --allow need --tls-cert, --tls-key and --tls-ca",
                    ));
                }
                return Ok(None);
            }
            (Some(c), Some(k), Some(a)) => (c, k, a),
            _ => {
                return Err(Fail::usage(
                    "proxy: mTLS needs all of --tls-cert, --tls-key and --tls-ca",
                ))
            }
        };
        let trust_domain = opts
            .trust_domain
            .clone()
            .unwrap_or_else(|| "cluster.local".to_owned());
        let allow = if opts.allow.is_empty() {
            AllowList::TrustDomain(trust_domain.clone())
        } else {
            AllowList::Ids(
                opts.allow
                    .iter()
                    .map(|id| {
                        id.parse::<SpiffeId>()
                            .map_err(|e| Fail::usage(format!("--allow: {e}")))
                    })
                    .collect::<Result<_, _>>()?,
            )
        };
        Ok(Some(Tls {
            files: IdentityFiles {
                cert_chain: PathBuf::from(cert),
                key: PathBuf::from(key),
                trust_bundle: PathBuf::from(ca),
            },
            trust_domain,
            allow,
        }))
    }

    fn identity(&self) -> Result<Arc<Identity>, Fail> {
        Identity::load(self.files.clone())
            .map(Arc::new)
            .map_err(|e| Fail::usage(format!("proxy: mTLS identity: {e}")))
    }
}

/// `--inbound ADDR=APP` pairs.
fn inbound_specs(specs: &[String]) -> Result<Vec<(SocketAddr, SocketAddr)>, Fail> {
    specs
        .iter()
        .map(|spec| {
            let parsed = spec.split_once('=').and_then(|(addr, app)| {
                Some((addr.parse::<SocketAddr>().ok()?, app.parse::<SocketAddr>().ok()?))
            });
            parsed.ok_or_else(|| {
                Fail::usage(format!(
                    "--inbound {spec:?}: give ADDR=APP, two IP:PORT addresses (e.g. 0.0.0.0:15006=127.0.0.1:8080)"
                ))
            })
        })
        .collect()
}

/// Writes `log` records (mTLS refusals, identity reloads) to stderr, as the
/// command's own messages are: `pobox: WARN pobox::tls: refused ...`.
struct StderrLog;

impl log::Log for StderrLog {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            eprintln!(
                "pobox: {} {}: {}",
                record.level(),
                record.target(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}
