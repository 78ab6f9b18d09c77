//! Errors: one type for what goes in ([`Error`]), one for what a pick can
//! answer instead of an endpoint ([`PickError`]).

use std::fmt;

/// Why an apply, delete or configuration was refused.
///
/// Whenever an `Error` is returned from a [`crate::Mesh`] call, the mesh kept
/// its previous state: nothing was half-applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not JSON or YAML (not JSON, without the `yaml` feature).
    Syntax {
        /// 1-based index of the document in a multi-document input.
        document: usize,
        /// What the parser said, with its line and column.
        message: String,
    },
    /// An object the API server would reject, or one pobox cannot use.
    Invalid {
        /// The object, as `Kind namespace/name` (or as much of it as is known).
        object: String,
        /// The field path, as `spec.ports[1].port`; empty for the whole object.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The object is valid on its own but clashes with another one, e.g. two
    /// Services claiming one cluster IP.
    Conflict {
        /// The object that was refused.
        object: String,
        /// Its field that clashes.
        field: String,
        /// What it clashes with.
        message: String,
    },
    /// The mesh configuration (node, zone, node IPs, cluster domain) is invalid.
    Config(String),
    /// An input, or the mesh it would make, exceeds one of the configured
    /// [`crate::Limits`]; it was refused before the work it bounds was done.
    Limit {
        /// What was measured, naming its unit: `input bytes`, `nesting depth`,
        /// `values`, `objects`, `endpoints`.
        what: &'static str,
        /// The `Limits` setter (and options-JSON key) that raises it.
        setting: &'static str,
        /// The configured limit.
        limit: usize,
        /// What the input has, or at least has: counting stops at the first
        /// value past the limit.
        found: usize,
        /// Where it was found: `document 2`, `List items`, ...; may be empty.
        context: String,
    },
}

impl Error {
    pub(crate) fn limit(
        what: &'static str,
        setting: &'static str,
        limit: usize,
        found: usize,
        context: impl Into<String>,
    ) -> Self {
        Error::Limit {
            what,
            setting,
            limit,
            found,
            context: context.into(),
        }
    }

    pub(crate) fn invalid(
        object: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            object: object.into(),
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Syntax { document, message } => {
                write!(f, "document {document}: {message}")
            }
            Error::Invalid {
                object,
                field,
                message,
            }
            | Error::Conflict {
                object,
                field,
                message,
            } => {
                if field.is_empty() {
                    write!(f, "{object}: {message}")
                } else {
                    write!(f, "{object}: {field}: {message}")
                }
            }
            Error::Config(message) => write!(f, "configuration: {message}"),
            Error::Limit {
                what,
                setting,
                limit,
                found,
                context,
            } => {
                let at = if context.is_empty() {
                    String::new()
                } else {
                    format!("{context}: ")
                };
                match *what {
                    "input bytes" => write!(f, "input is {found} bytes")?,
                    "nesting depth" => write!(f, "{at}nested at least {found} levels deep")?,
                    "values" => write!(
                        f,
                        "{at}expands to at least {found} values (YAML aliases expanded)"
                    )?,
                    "endpoints" if context.is_empty() => {
                        write!(f, "the mesh would hold {found} endpoints")?
                    }
                    "endpoints" => write!(f, "{at}its slices hold at least {found} endpoints")?,
                    _ => write!(f, "{at}has {found} {what}")?,
                }
                write!(
                    f,
                    ", over the limit of {limit}; raise it with Limits::{setting} (options JSON \"limits\": {{\"{}\": ...}})",
                    camel(setting)
                )
            }
        }
    }
}

impl std::error::Error for Error {}

/// `max_input_bytes` → `maxInputBytes`: the options-JSON spelling of a
/// `Limits` setter.
fn camel(snake: &str) -> String {
    let mut out = String::with_capacity(snake.len());
    let mut upper = false;
    for c in snake.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Why a destination did not resolve to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PickError {
    /// The destination string is not `IP:PORT`, `[IPv6]:PORT` or a Service name.
    BadDestination {
        /// The destination as given.
        destination: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No Service owns this address, name or port.
    NoService {
        /// The destination as given.
        destination: String,
    },
    /// The Service exists but has no such port (or the port was omitted and the
    /// Service has several).
    NoPort {
        /// `namespace/name`.
        service: String,
        /// What was asked for and what exists.
        reason: String,
    },
    /// The Service is `ExternalName`: it has no endpoints, only a DNS alias.
    ExternalName {
        /// `namespace/name`.
        service: String,
        /// The `spec.externalName` it aliases.
        target: String,
    },
    /// The Service port exists but has no eligible endpoint: kube-proxy would
    /// reject the connection.
    NoEndpoints {
        /// `namespace/name`.
        service: String,
        /// The port's name, or its number when unnamed, and protocol.
        port: String,
    },
}

impl PickError {
    /// Whether the destination itself did not match (as opposed to matching a
    /// Service that has nowhere to send traffic).
    pub fn is_no_match(&self) -> bool {
        matches!(self, PickError::NoService { .. } | PickError::NoPort { .. })
    }
}

impl fmt::Display for PickError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PickError::BadDestination {
                destination,
                reason,
            } => write!(f, "bad destination {destination:?}: {reason}"),
            PickError::NoService { destination } => {
                write!(f, "no Service matches {destination}")
            }
            PickError::NoPort { service, reason } => write!(f, "Service {service}: {reason}"),
            PickError::ExternalName { service, target } => write!(
                f,
                "Service {service} is ExternalName (an alias for {target}): it has no endpoints"
            ),
            PickError::NoEndpoints { service, port } => write!(
                f,
                "Service {service} port {port} has no eligible endpoint (kube-proxy would reject the connection)"
            ),
        }
    }
}

impl std::error::Error for PickError {}
