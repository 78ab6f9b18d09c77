//! Destinations (where a connection is headed) and clients (who opens it).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::error::PickError;
use crate::model::Protocol;

/// Where traffic is addressed: a Service address or a Service name.
///
/// Parse one once and reuse it: [`Destination::parse`] costs more than a pick.
///
/// | form | example |
/// |---|---|
/// | `IP:PORT` | `10.96.0.10:80` (cluster, load-balancer or external IP; node IP with a NodePort) |
/// | `[IPv6]:PORT` | `[fd00::10]:80` |
/// | `NAME[:PORT]` | `web`, `web.default`, `web.default.svc`, `web.default.svc.cluster.local.` with `:80` or `:http`; the port may be left out when the Service has one |
///
/// Any form may end in `/TCP`, `/UDP` or `/SCTP`. Without it, TCP is tried,
/// then UDP, then SCTP.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A virtual address.
    Addr {
        /// The address and port.
        addr: SocketAddr,
        /// The protocol, if given.
        protocol: Option<Protocol>,
    },
    /// A Service name.
    Name {
        /// The name, lowercased, without a trailing dot.
        name: String,
        /// The port.
        port: PortRef,
        /// The protocol, if given.
        protocol: Option<Protocol>,
    },
}

/// A Service port as a destination names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRef {
    /// The Service port number (`port`, not `targetPort`).
    Number(u16),
    /// The port name.
    Name(String),
    /// Not given: the Service must have exactly one port (per protocol).
    Only,
}

impl Destination {
    /// Parses a destination; see the type documentation for the forms.
    pub fn parse(input: &str) -> Result<Destination, PickError> {
        let bad = |reason: &str| PickError::BadDestination {
            destination: input.to_owned(),
            reason: reason.to_owned(),
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (s, protocol) = match s.rsplit_once('/') {
            Some((rest, p)) => match Protocol::parse(p) {
                Some(p) => (rest, Some(p)),
                None => return Err(bad("the suffix after '/' must be TCP, UDP or SCTP")),
            },
            None => (s, None),
        };

        if let Some(rest) = s.strip_prefix('[') {
            let (ip, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("missing ']' after an IPv6 address"))?;
            let ip: IpAddr = ip
                .parse()
                .map_err(|_| bad("not an IPv6 address inside [ ]"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| bad("an address needs a port, as [IPv6]:PORT"))?;
            let port = port_number(port).ok_or_else(|| bad("the port must be 1-65535"))?;
            return Ok(Destination::Addr {
                addr: SocketAddr::new(ip, port),
                protocol,
            });
        }
        if s.parse::<IpAddr>().is_ok() {
            return Err(bad(if s.contains(':') {
                "an IPv6 address needs brackets and a port, as [IPv6]:PORT"
            } else {
                "an address needs a port, as IP:PORT"
            }));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            let port = port
                .and_then(port_number)
                .ok_or_else(|| bad("the port must be 1-65535"))?;
            return Ok(Destination::Addr {
                addr: SocketAddr::new(ip, port),
                protocol,
            });
        }
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        // `10.96.0.10.` is an address with a stray dot, not a name whose
        // labels happen to be digits: it must not resolve as a Service.
        if name.parse::<IpAddr>().is_ok() {
            return Err(bad(
                "an address cannot end in '.'; give it as IP:PORT or [IPv6]:PORT",
            ));
        }
        if name.is_empty() || !name.split('.').all(is_label) {
            return Err(bad(
                "not an address or a Service name (DNS labels: lowercase letters, digits and '-')",
            ));
        }
        let port = match port {
            None => PortRef::Only,
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
                PortRef::Number(port_number(p).ok_or_else(|| bad("the port must be 1-65535"))?)
            }
            Some(p) if is_label(p) => PortRef::Name(p.to_owned()),
            Some(_) => return Err(bad("the port must be a number or a port name")),
        };
        Ok(Destination::Name {
            name,
            port,
            protocol,
        })
    }

    /// The protocol given with the destination, if any.
    pub fn protocol(&self) -> Option<Protocol> {
        match self {
            Destination::Addr { protocol, .. } | Destination::Name { protocol, .. } => *protocol,
        }
    }
}

fn port_number(s: &str) -> Option<u16> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => None,
        Ok(p) => Some(p),
    }
}

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

impl FromStr for Destination {
    type Err = PickError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Destination::parse(s)
    }
}

impl From<SocketAddr> for Destination {
    fn from(addr: SocketAddr) -> Self {
        Destination::Addr {
            addr,
            protocol: None,
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Addr { addr, .. } => write!(f, "{addr}")?,
            Destination::Name { name, port, .. } => {
                f.write_str(name)?;
                match port {
                    PortRef::Number(n) => write!(f, ":{n}")?,
                    PortRef::Name(n) => write!(f, ":{n}")?,
                    PortRef::Only => {}
                }
            }
        }
        if let Some(p) = self.protocol() {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

/// Who is connecting.
///
/// `ip` is the client's address and `key` a hash key the caller chooses (an
/// HTTP header or cookie value, say). The consistent policies (`maglev`,
/// `ring-hash`) hash `key` when given, else `ip`; the other policies read
/// neither.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Client<'a> {
    /// The client's IP address.
    pub ip: Option<IpAddr>,
    /// The namespace a short name (`web`) is relative to, as in a pod's
    /// resolv.conf search path; `default` when unset.
    pub namespace: Option<&'a str>,
    /// The hash key for consistent policies, instead of the client IP.
    pub key: Option<&'a [u8]>,
}

impl<'a> Client<'a> {
    /// A client with nothing known about it.
    pub fn new() -> Self {
        Client::default()
    }

    /// Sets the client IP.
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// Sets the hash key consistent policies use instead of the client IP.
    pub fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// Sets the namespace short names are relative to.
    pub fn namespace(mut self, namespace: &'a str) -> Self {
        self.namespace = Some(namespace);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str, port: PortRef) -> Destination {
        Destination::Name {
            name: n.into(),
            port,
            protocol: None,
        }
    }

    #[test]
    fn forms() {
        let cases: &[(&str, Destination)] = &[
            (
                "10.96.0.10:80",
                Destination::from("10.96.0.10:80".parse::<SocketAddr>().unwrap()),
            ),
            (
                "[fd00::10]:443",
                Destination::from("[fd00::10]:443".parse::<SocketAddr>().unwrap()),
            ),
            (
                "10.96.0.53:53/udp",
                Destination::Addr {
                    addr: "10.96.0.53:53".parse().unwrap(),
                    protocol: Some(Protocol::Udp),
                },
            ),
            ("web", name("web", PortRef::Only)),
            ("web.default:80", name("web.default", PortRef::Number(80))),
            (
                "Web.Default.svc:http",
                name("web.default.svc", PortRef::Name("http".into())),
            ),
            (
                "web.default.svc.cluster.local.:http",
                name(
                    "web.default.svc.cluster.local",
                    PortRef::Name("http".into()),
                ),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(&Destination::parse(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn rejects() {
        for bad in [
            "",
            "10.96.0.10",
            "10.96.0.10:0",
            "10.96.0.10:70000",
            "fd00::1",
            "[fd00::1]",
            "[fd00::1:80",
            "web:",
            "web:-x",
            "we_b:80",
            "web:80/icmp",
            "-web",
            // Found by the dest_dns fuzz target: an address with a trailing
            // dot passed as a name of digit labels.
            "10.0.96.6.",
            "10.0.96.6.:80",
            "10.0.96.6.:http/TCP",
        ] {
            let err = Destination::parse(bad).unwrap_err();
            assert!(
                matches!(err, PickError::BadDestination { .. }),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "10.96.0.10:80",
            "[fd00::10]:80/UDP",
            "web.default:http",
            "web",
        ] {
            let d = Destination::parse(s).unwrap();
            assert_eq!(Destination::parse(&d.to_string()).unwrap(), d);
        }
    }
}
