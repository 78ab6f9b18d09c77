//! `serve-dns`: the snapshot's DNS answers over UDP and TCP (RFC 1035 wire
//! format through `simple-dns`), reloading the inputs when they change.
//!
//! Bounds: replies as [`pobox_cli::wire`] builds them;
//! at most [`TCP_CONNECTIONS`] TCP connections, each closed after
//! [`TCP_IDLE`] without a query; one reload check per [`RELOAD_EVERY`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pobox::Mesh;
use pobox_cli::wire::{answer, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::{Args, Fail};

/// Concurrent TCP connections; more are closed at once.
const TCP_CONNECTIONS: usize = 128;
/// A TCP connection with no complete query for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How often the inputs are checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// `serve-dns --listen ADDR:PORT [--listen ...]`. Runs until killed.
pub(crate) fn serve(args: &Args) -> Result<String, Fail> {
    if let Some(extra) = args.positional.first() {
        return Err(Fail::usage(format!(
            "serve-dns: unexpected argument {extra:?}"
        )));
    }
    if args.listen.is_empty() {
        return Err(Fail::usage(
            "serve-dns: give at least one --listen ADDR:PORT (e.g. 127.0.0.1:5353, [::1]:5353)",
        ));
    }
    if args.files.iter().any(|f| f == "-") {
        return Err(Fail::usage(
            "serve-dns: inputs are reloaded when they change, so stdin (-) cannot be one",
        ));
    }
    let listen = args
        .listen
        .iter()
        .map(|l| {
            l.parse::<SocketAddr>().map_err(|_| {
                Fail::usage(format!(
                    "--listen {l:?} is not ADDR:PORT (IPv6 as [ADDR]:PORT)"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mesh = crate::load(args)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Fail::usage(format!("serve-dns: starting the runtime: {e}")))?;
    runtime.block_on(run(mesh, listen, args.files.clone()))
}

async fn run(mesh: Mesh, listen: Vec<SocketAddr>, files: Vec<String>) -> Result<String, Fail> {
    let connections = Arc::new(Semaphore::new(TCP_CONNECTIONS));
    let mut tasks = tokio::task::JoinSet::new();
    for addr in listen {
        let (udp, tcp) = bind(addr)
            .await
            .map_err(|e| Fail::usage(format!("serve-dns: listening on {addr}: {e}")))?;
        eprintln!(
            "pobox: serving DNS on {} (UDP and TCP), snapshot {}",
            udp.local_addr().map_err(|e| Fail::usage(e.to_string()))?,
            mesh.version()
        );
        tasks.spawn(serve_udp(udp, mesh.clone()));
        tasks.spawn(serve_tcp(tcp, mesh.clone(), connections.clone()));
    }
    tasks.spawn(async move {
        crate::reload::follow(mesh, files, RELOAD_EVERY).await;
        Ok(())
    });
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            return Err(Fail::usage(format!("serve-dns: {e}")));
        }
    }
    Ok(String::new())
}

/// A UDP socket and a TCP listener on one address. Port 0 takes a free UDP
/// port and the same TCP port (retrying if TCP has it taken).
async fn bind(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..if addr.port() == 0 { 20 } else { 1 } {
        let udp = UdpSocket::bind(addr).await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
}

async fn serve_udp(socket: UdpSocket, mesh: Mesh) -> io::Result<()> {
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            // An ICMP error from an earlier reply, or a transient failure.
            Err(_) => continue,
        };
        if let Some(reply) = answer(&mesh, &buf[..n], Transport::Udp) {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, mesh: Mesh, slots: Arc<Semaphore>) -> io::Result<()> {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors, say: wait instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue; // at the limit: the connection is dropped
        };
        let mesh = mesh.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp_connection(stream, &mesh).await;
        });
    }
}

/// Length-prefixed queries (RFC 1035 4.2.2) until the peer closes or idles.
async fn tcp_connection(mut stream: TcpStream, mesh: &Mesh) -> io::Result<()> {
    let idle = || io::Error::new(io::ErrorKind::TimedOut, "idle");
    loop {
        let mut len = [0u8; 2];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len))
            .await
            .map_err(|_| idle())??;
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut query))
            .await
            .map_err(|_| idle())??;
        let Some(reply) = answer(mesh, &query, Transport::Tcp) else {
            return Ok(());
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&reply_len.to_be_bytes());
        out.extend_from_slice(&reply);
        tokio::time::timeout(TCP_IDLE, stream.write_all(&out))
            .await
            .map_err(|_| idle())??;
    }
}
