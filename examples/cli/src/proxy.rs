//! `proxy`: the L4 forwarder (`pobox::runtime`) on the inputs, reloading
//! them when they change or on SIGHUP. SIGUSR1 prints the metrics as JSON
//! on stderr; SIGINT or SIGTERM stops it gracefully.

use std::time::Duration;

use pobox::runtime::{Listen, Proxy, ProxyConfig};

use crate::{Args, Fail};

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
    if args.listen.is_empty() {
        return Err(Fail::usage(
            "proxy: give at least one --listen ADDR=DEST (e.g. 127.0.0.1:15001=web.default:80)",
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
    let mesh = crate::load(args)?;
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
        tokio::spawn(crate::reload::follow(
            mesh,
            args.files.clone(),
            RELOAD_EVERY,
        ));
        signals(&proxy).await;
        eprintln!("pobox: stopping: open connections have {grace:?} to finish");
        proxy.shutdown(grace).await;
        eprintln!("pobox: stopped");
        Ok(String::new())
    })
}

/// Returns on SIGINT or SIGTERM; prints the metrics on SIGUSR1.
#[cfg(unix)]
async fn signals(proxy: &Proxy) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::user_defined1()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
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

#[cfg(not(unix))]
async fn signals(_proxy: &Proxy) {
    let _ = tokio::signal::ctrl_c().await;
}
