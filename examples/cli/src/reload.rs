//! Following the `-f` inputs: whenever a file changes (its modification
//! time or length; checked once per interval, no watcher needed) or the
//! process gets SIGHUP, the mesh's objects are replaced by the inputs'. An
//! invalid input changes nothing: the last good snapshot keeps serving, and
//! the log says why.

use std::path::Path;
use std::time::{Duration, SystemTime};

use pobox::{Mesh, Update};

/// Each input file's modification time and length; a directory contributes
/// its `.json`/`.yaml`/`.yml` files, as `-f DIR` reads them.
fn fingerprint(files: &[String]) -> Vec<(String, Option<SystemTime>, u64)> {
    let mut out = Vec::new();
    for f in files {
        let path = Path::new(f);
        let mut paths = vec![path.to_path_buf()];
        if path.is_dir() {
            paths = std::fs::read_dir(path)
                .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            paths.retain(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("json" | "yaml" | "yml")
                )
            });
            paths.sort();
        }
        for p in paths {
            let meta = std::fs::metadata(&p).ok();
            out.push((
                p.display().to_string(),
                meta.as_ref().and_then(|m| m.modified().ok()),
                meta.map_or(0, |m| m.len()),
            ));
        }
    }
    out
}

/// Reloads the inputs into `mesh` whenever they change or SIGHUP arrives.
/// Runs until the process ends.
pub(crate) async fn follow(mesh: Mesh, files: Vec<String>, every: Duration) {
    let mut hangup = hangup_signals();
    let mut last = fingerprint(&files);
    loop {
        let why = tokio::select! {
            _ = tokio::time::sleep(every) => {
                let now = fingerprint(&files);
                if now == last {
                    continue;
                }
                last = now;
                "the inputs changed"
            }
            Some(()) = next_hangup(&mut hangup) => {
                last = fingerprint(&files);
                "SIGHUP"
            }
        };
        // Off the runtime's threads: parsing and building a large input
        // takes long enough to stall the connections a thread serves.
        let (m, f) = (mesh.clone(), files.clone());
        let reloaded = tokio::task::spawn_blocking(move || reload_once(&m, &f))
            .await
            .unwrap_or_else(|e| Err(format!("the reload panicked: {e}")));
        match reloaded {
            Ok((version, true)) => {
                eprintln!("pobox: reloaded the inputs ({why}): snapshot {version}")
            }
            Ok((version, false)) => {
                eprintln!("pobox: reloaded the inputs ({why}): unchanged, snapshot {version}")
            }
            Err(message) => eprintln!(
                "pobox: reload failed ({why}), keeping snapshot {}: {message}",
                mesh.version()
            ),
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_signals() -> Hangup {
    use tokio::signal::unix::{signal, SignalKind};
    signal(SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup_signals() -> Hangup {
    None
}

/// The next SIGHUP; never, where there is none.
async fn next_hangup(hangup: &mut Hangup) -> Option<()> {
    #[cfg(unix)]
    if let Some(signal) = hangup {
        return signal.recv().await;
    }
    let _ = hangup;
    std::future::pending().await
}

/// Replaces the mesh's objects with the inputs', all or nothing: the new
/// version and whether anything changed, or why nothing was applied.
fn reload_once(mesh: &Mesh, files: &[String]) -> Result<(u64, bool), String> {
    let mut objects = Vec::new();
    for (name, bytes) in crate::read_inputs(files).map_err(|f| f.message)? {
        let parsed = pobox::parse(&bytes).map_err(|e| format!("{name}: {e}"))?;
        objects.extend(parsed.objects);
    }
    let report = mesh
        .update([Update::Reset(objects)])
        .map_err(|e| e.to_string())?;
    Ok((report.version, report.changed))
}
