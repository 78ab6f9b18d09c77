//! `serve-dns`: the snapshot's DNS answers over UDP and TCP (RFC 1035 wire
//! format through `simple-dns`), reloading the inputs when they change.
//!
//! Bounds: a UDP answer fits the client's payload size (512 bytes, or its
//! EDNS0 size up to [`EDNS_PAYLOAD`]) and is truncated with TC set otherwise;
//! at most [`TCP_CONNECTIONS`] TCP connections, each closed after
//! [`TCP_IDLE`] without a query; one reload check per [`RELOAD_EVERY`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pobox::{Mesh, Rcode, RecordData, RecordType};
use simple_dns::rdata::{RData, A, AAAA, CNAME, OPT, PTR, SRV, TXT};
use simple_dns::{
    Name, Packet, PacketFlag, ResourceRecord, SimpleDnsError, CLASS, OPCODE, QCLASS, RCODE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::{Args, Fail};

/// The largest UDP payload answered, and advertised in EDNS0: the DNS flag
/// day 2020 default, which avoids IP fragmentation.
const EDNS_PAYLOAD: u16 = 1232;
/// The UDP payload limit without EDNS0 (RFC 1035).
const PLAIN_PAYLOAD: usize = 512;
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

// === answering ===

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// The reply to one query message, or `None` when there is nothing to
/// answer (shorter than a header, or itself a response).
fn answer(mesh: &Mesh, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    let packet = match Packet::parse(query) {
        Ok(p) => p,
        // A well-formed query of a type the wire crate does not know.
        Err(SimpleDnsError::InvalidQType(_)) => return header_only(id, RCODE::NotImplemented),
        Err(_) => return header_only(id, RCODE::FormatError),
    };
    if packet.opcode() != OPCODE::StandardQuery {
        return header_only(id, RCODE::NotImplemented);
    }
    let [question] = packet.questions.as_slice() else {
        return header_only(id, RCODE::FormatError);
    };
    let limit = match (transport, packet.opt()) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, None) => PLAIN_PAYLOAD,
        (Transport::Udp, Some(opt)) => {
            usize::from(opt.udp_packet_size.min(EDNS_PAYLOAD)).max(PLAIN_PAYLOAD)
        }
    };
    let snapshot = mesh.snapshot();
    let in_class = matches!(question.qclass, QCLASS::CLASS(CLASS::IN) | QCLASS::ANY);
    let result = if in_class {
        let qtype = RecordType::from_code(u16::from(question.qtype));
        snapshot.lookup(&question.qname.to_string(), qtype)
    } else {
        pobox::Answer {
            rcode: Rcode::Refused,
            answers: Vec::new(),
        }
    };

    let mut reply = Packet::new_reply(id);
    if packet.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    *reply.rcode_mut() = match result.rcode {
        Rcode::NoError => RCODE::NoError,
        Rcode::NxDomain => RCODE::NameError,
        Rcode::Refused => RCODE::Refused,
    };
    if result.rcode != Rcode::Refused {
        reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    }
    if packet.opt().is_some() {
        *reply.opt_mut() = Some(OPT {
            opt_codes: Vec::new(),
            udp_packet_size: EDNS_PAYLOAD,
            version: 0,
        });
    }
    reply.questions.push(question.clone());
    for record in &result.answers {
        let rdata = match &record.data {
            RecordData::A(ip) => RData::A(A::from(*ip)),
            RecordData::Aaaa(ip) => RData::AAAA(AAAA::from(*ip)),
            RecordData::Cname(target) => RData::CNAME(CNAME(Name::new(target).ok()?)),
            RecordData::Ptr(target) => RData::PTR(PTR(Name::new(target).ok()?)),
            RecordData::Srv {
                priority,
                weight,
                port,
                target,
            } => RData::SRV(SRV {
                priority: *priority,
                weight: *weight,
                port: *port,
                target: Name::new(target).ok()?,
            }),
            RecordData::Txt(text) => RData::TXT(TXT::new().with_string(text).ok()?),
        };
        reply.answers.push(ResourceRecord::new(
            Name::new(&record.name).ok()?,
            CLASS::IN,
            record.ttl,
            rdata,
        ));
    }
    let mut bytes = reply.build_bytes_vec_compressed().ok()?;
    // Too large for the transport (the client's UDP size, or 64 KiB over
    // TCP): drop answers from the end until the rest fits, and say so. The
    // first cut is proportional, so a huge answer is not rebuilt per record.
    while bytes.len() > limit && !reply.answers.is_empty() {
        let n = reply.answers.len();
        let keep = (n * limit / bytes.len()).min(n - 1);
        reply.answers.truncate(keep);
        reply.set_flags(PacketFlag::TRUNCATION);
        bytes = reply.build_bytes_vec_compressed().ok()?;
    }
    Some(bytes)
}

fn header_only(id: u16, rcode: RCODE) -> Option<Vec<u8>> {
    let mut reply = Packet::new_reply(id);
    *reply.rcode_mut() = rcode;
    reply.build_bytes_vec().ok()
}

#[cfg(test)]
mod tests {
    use simple_dns::{Question, QTYPE, TYPE};

    use super::*;

    /// A headless Service with `n` ready addresses (slices of at most 1000).
    fn mesh(n: u32) -> Mesh {
        let mut yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: big, namespace: default}\nspec: {clusterIP: None}\n".to_owned();
        for (i, chunk) in (0..n).collect::<Vec<_>>().chunks(1000).enumerate() {
            let endpoints: Vec<String> = chunk
                .iter()
                .map(|j| {
                    format!(
                        "{{addresses: [{}]}}",
                        std::net::Ipv4Addr::from(0x0a00_0000 + j)
                    )
                })
                .collect();
            yaml.push_str(&format!(
                "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: big-{i}, namespace: default, labels: {{kubernetes.io/service-name: big}}}}\naddressType: IPv4\nendpoints: [{}]\n",
                endpoints.join(", ")
            ));
        }
        let mesh = Mesh::new(pobox::MeshConfig::new()).unwrap();
        mesh.apply(yaml.as_bytes()).unwrap();
        mesh
    }

    fn query(edns: Option<u16>) -> Vec<u8> {
        let mut q = Packet::new_query(7);
        q.questions.push(Question::new(
            Name::new("big.default.svc.cluster.local").unwrap(),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        if let Some(size) = edns {
            *q.opt_mut() = Some(OPT {
                opt_codes: Vec::new(),
                udp_packet_size: size,
                version: 0,
            });
        }
        q.build_bytes_vec().unwrap()
    }

    /// (bytes, answers, truncated)
    fn ask(mesh: &Mesh, query: &[u8], transport: Transport) -> (usize, usize, bool) {
        let bytes = answer(mesh, query, transport).unwrap();
        let reply = Packet::parse(&bytes).unwrap();
        (
            bytes.len(),
            reply.answers.len(),
            reply.has_flags(PacketFlag::TRUNCATION),
        )
    }

    #[test]
    fn answers_fit_their_transport() {
        let big = mesh(5000);
        let (len, n, tc) = ask(&big, &query(None), Transport::Udp);
        assert!(len <= 512 && n > 20 && tc, "{len} {n} {tc}");
        // EDNS0 sizes are honoured up to 1232, and never below 512.
        let (len, n, tc) = ask(&big, &query(Some(4096)), Transport::Udp);
        assert!(len <= 1232 && n > 60 && tc, "{len} {n} {tc}");
        let (len, _, tc) = ask(&big, &query(Some(100)), Transport::Udp);
        assert!(len <= 512 && len > 400 && tc, "{len}");
        // 5000 records do not fit a TCP message either: truncated, not dropped.
        let (len, n, tc) = ask(&big, &query(None), Transport::Tcp);
        assert!(len <= 65535 && n > 3000 && tc, "{len} {n} {tc}");
        // What fits is answered whole.
        let small = mesh(10);
        let (_, n, tc) = ask(&small, &query(None), Transport::Udp);
        assert_eq!((n, tc), (10, false));
    }

    #[test]
    fn responses_and_runts_get_no_reply() {
        let m = mesh(1);
        let mut response = query(None);
        response[2] |= 0x80;
        assert_eq!(answer(&m, &response, Transport::Udp), None);
        assert_eq!(answer(&m, &[0, 7, 1], Transport::Udp), None);
    }
}
