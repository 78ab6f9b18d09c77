//! The DNS wire format (RFC 1035, through `simple-dns`) of `serve-dns`:
//! one query message in, one reply message out, answered from the mesh's
//! current snapshot. The sockets live in the command; this is the part that
//! reads untrusted bytes.
//!
//! Bounds: a UDP answer fits the client's payload size (512 bytes, or its
//! EDNS0 size up to [`EDNS_PAYLOAD`]) and is truncated with TC set
//! otherwise; a TCP answer fits one length-prefixed message (64 KiB).

use pobox::{Mesh, Rcode, RecordData, RecordType};
use simple_dns::rdata::{RData, A, AAAA, CNAME, OPT, PTR, SRV, TXT};
use simple_dns::{
    Name, Packet, PacketFlag, ResourceRecord, SimpleDnsError, CLASS, OPCODE, QCLASS, RCODE,
};

/// The largest UDP payload answered, and advertised in EDNS0: the DNS flag
/// day 2020 default, which avoids IP fragmentation.
pub const EDNS_PAYLOAD: u16 = 1232;
/// The UDP payload limit without EDNS0 (RFC 1035).
pub const PLAIN_PAYLOAD: usize = 512;

/// How the query arrived, which bounds the size of the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A datagram: at most 512 bytes, or the client's EDNS0 size up to
    /// [`EDNS_PAYLOAD`].
    Udp,
    /// A length-prefixed TCP message: at most 65,535 bytes.
    Tcp,
}

/// The reply to one query message, or `None` when there is nothing to
/// answer (shorter than a header, or itself a response).
///
/// Any other input gets a reply: `FORMERR` for a message that does not
/// parse or does not ask exactly one question, `NOTIMP` for an opcode other
/// than QUERY or a type the wire crate does not know, `REFUSED` outside the
/// cluster's names and class IN. A reply never exceeds the transport's
/// limit: answers that do not fit are dropped from the end and TC is set.
pub fn answer(mesh: &Mesh, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
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
