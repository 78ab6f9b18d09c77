//! The plugin configuration: parsed and checked once, in `on_configure`.

use std::time::Duration;

use pobox::MeshConfig;
use serde::Deserialize;

/// The header an `ORIGINAL_DST` cluster with `use_http_header: true` reads.
pub const DEFAULT_HEADER: &str = "x-envoy-original-dst-host";

/// How often the update source is polled when `interval_ms` is not given.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The shortest poll interval accepted.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// What a request gets when its destination has no eligible endpoint (or
/// matches no Service).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoRoute {
    /// Continue untouched: Envoy's own routes decide (an `ORIGINAL_DST`
    /// cluster answers 503 without the header).
    Pass,
    /// A local 503 reply whose body names the Service and the reason.
    Reject,
}

/// Where a consistent-hashing key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HashKey {
    /// A request header's value.
    Header(String),
    /// A cookie's value, from the `cookie` request header.
    Cookie(String),
}

/// An Envoy cluster polled for the current object `List`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateSource {
    /// The Envoy cluster name (`dispatch_http_call` upstream).
    pub cluster: String,
    /// The request path, e.g. `/objects`.
    pub path: String,
    /// The `:authority` of the poll request.
    pub authority: String,
    /// Time between polls (the tick period).
    pub interval: Duration,
    /// How long one poll may take.
    pub timeout: Duration,
}

/// The whole plugin configuration, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The mesh's node, zone and addresses.
    pub mesh: MeshConfig,
    /// The objects to start with, as JSON or YAML bytes for `Mesh::apply`.
    pub objects: Option<Vec<u8>>,
    /// The namespace short Service names (`web`, `web:80`) resolve in.
    pub namespace: Option<String>,
    /// The request header the endpoint is written to (lowercase).
    pub header: String,
    /// Where a hash key comes from, if anywhere.
    pub hash_key: Option<HashKey>,
    /// What to do when there is nowhere to route.
    pub no_route: NoRoute,
    /// Where updates come from, if anywhere.
    pub update: Option<UpdateSource>,
    /// Whether to count the time spent per request in the metrics
    /// `pobox.route_ns` and `pobox.routes`.
    pub timing: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    objects: Option<serde_json::Value>,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    node_ips: Vec<std::net::IpAddr>,
    #[serde(default)]
    cluster_domain: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    hash_key: Option<HashKey>,
    #[serde(default)]
    no_route: Option<NoRoute>,
    #[serde(default)]
    update: Option<RawUpdate>,
    #[serde(default)]
    timing: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpdate {
    cluster: String,
    path: String,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    interval_ms: Option<u64>,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

impl Settings {
    /// Parses and checks the plugin configuration JSON. An empty
    /// configuration is valid (no objects, defaults everywhere).
    pub fn parse(input: &[u8]) -> Result<Settings, String> {
        let input = if input.iter().all(u8::is_ascii_whitespace) {
            &b"{}"[..]
        } else {
            input
        };
        let raw: RawConfig =
            serde_json::from_slice(input).map_err(|e| format!("plugin configuration: {e}"))?;

        let mut mesh = MeshConfig::new();
        if let Some(node) = raw.node {
            mesh = mesh.node(node);
        }
        if let Some(zone) = raw.zone {
            mesh = mesh.zone(zone);
        }
        for ip in raw.node_ips {
            mesh = mesh.node_ip(ip);
        }
        if let Some(domain) = raw.cluster_domain {
            mesh = mesh.cluster_domain(domain);
        }

        let objects = match raw.objects {
            None => None,
            Some(serde_json::Value::String(text)) => Some(text.into_bytes()),
            Some(serde_json::Value::Array(items)) => Some(list_bytes(items)),
            Some(object @ serde_json::Value::Object(_)) => Some(object.to_string().into_bytes()),
            Some(_) => {
                return Err(
                    "plugin configuration: `objects` must be a List object, an array of \
                            objects, or a JSON/YAML string"
                        .into(),
                )
            }
        };

        let header = raw.header.unwrap_or_else(|| DEFAULT_HEADER.to_owned());
        check_header_name("header", &header)?;
        if let Some(HashKey::Header(name)) = &raw.hash_key {
            check_header_name("hash_key.header", name)?;
            if *name == header {
                return Err(format!(
                    "plugin configuration: hash_key.header {name:?} is the header the filter \
                     writes; a client would choose its own hash"
                ));
            }
        }
        if let Some(HashKey::Cookie(name)) = &raw.hash_key {
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(format!(
                    "plugin configuration: hash_key.cookie {name:?} is not a cookie name"
                ));
            }
        }

        let update = raw.update.map(check_update).transpose()?;

        Ok(Settings {
            mesh,
            objects,
            namespace: raw.namespace,
            header,
            hash_key: raw.hash_key,
            no_route: raw.no_route.unwrap_or(NoRoute::Pass),
            update,
            timing: raw.timing,
        })
    }
}

fn list_bytes(items: Vec<serde_json::Value>) -> Vec<u8> {
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items})
        .to_string()
        .into_bytes()
}

fn check_update(raw: RawUpdate) -> Result<UpdateSource, String> {
    if raw.cluster.is_empty() {
        return Err("plugin configuration: update.cluster is empty".into());
    }
    if !raw.path.starts_with('/') || raw.path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!(
            "plugin configuration: update.path {:?} must start with '/' and hold no spaces",
            raw.path
        ));
    }
    let interval = raw
        .interval_ms
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_POLL_INTERVAL);
    if interval < MIN_POLL_INTERVAL || interval > Duration::from_secs(3600) {
        return Err(format!(
            "plugin configuration: update.interval_ms must be {}..=3600000",
            MIN_POLL_INTERVAL.as_millis()
        ));
    }
    let timeout = raw
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(interval);
    if timeout.is_zero() || timeout > Duration::from_secs(60) {
        return Err("plugin configuration: update.timeout_ms must be 1..=60000".into());
    }
    Ok(UpdateSource {
        authority: raw.authority.unwrap_or_else(|| raw.cluster.clone()),
        cluster: raw.cluster,
        path: raw.path,
        interval,
        timeout,
    })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn check_header_name(field: &str, name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| is_token_byte(b) && !b.is_ascii_uppercase())
    {
        return Err(format!(
            "plugin configuration: {field} {name:?} must be a lowercase HTTP header name"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        Settings::parse(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn empty_configuration_takes_every_default() {
        for input in ["", "  \n", "{}"] {
            let s = Settings::parse(input.as_bytes()).unwrap();
            assert_eq!(s.header, DEFAULT_HEADER);
            assert_eq!(s.no_route, NoRoute::Pass);
            assert!(s.objects.is_none() && s.update.is_none() && s.hash_key.is_none());
        }
    }

    #[test]
    fn full_configuration() {
        let s = Settings::parse(
            br#"{"node": "n1", "zone": "z1", "namespace": "shop", "header": "x-dst",
                 "hash_key": {"cookie": "session"}, "no_route": "reject",
                 "objects": [{"apiVersion": "v1", "kind": "Service"}],
                 "update": {"cluster": "objects", "path": "/list", "interval_ms": 200}}"#,
        )
        .unwrap();
        assert_eq!(s.mesh.node_name(), Some("n1"));
        assert_eq!(s.mesh.zone_name(), Some("z1"));
        assert_eq!(s.namespace.as_deref(), Some("shop"));
        assert_eq!(s.header, "x-dst");
        assert_eq!(s.hash_key, Some(HashKey::Cookie("session".into())));
        assert_eq!(s.no_route, NoRoute::Reject);
        let list: serde_json::Value = serde_json::from_slice(&s.objects.unwrap()).unwrap();
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"][0]["kind"], "Service");
        let u = s.update.unwrap();
        assert_eq!((u.cluster.as_str(), u.path.as_str()), ("objects", "/list"));
        assert_eq!(u.authority, "objects");
        assert_eq!(u.interval, Duration::from_millis(200));
        assert_eq!(u.timeout, Duration::from_millis(200));
    }

    #[test]
    fn bad_configurations_are_rejected_with_a_reason() {
        let cases = [
            ("not json", "expected"),
            (r#"{"hedaer": "x"}"#, "unknown field `hedaer`"),
            (r#"{"header": "X-Dst"}"#, "lowercase HTTP header name"),
            (r#"{"header": ":authority"}"#, "lowercase HTTP header name"),
            (r#"{"header": ""}"#, "lowercase HTTP header name"),
            (r#"{"no_route": "drop"}"#, "unknown variant `drop`"),
            (r#"{"objects": 7}"#, "`objects` must be"),
            (r#"{"hash_key": {"query": "u"}}"#, "unknown variant `query`"),
            (r#"{"hash_key": {"cookie": "a b"}}"#, "not a cookie name"),
            (
                r#"{"hash_key": {"header": "x-envoy-original-dst-host"}}"#,
                "the header the filter writes",
            ),
            (
                r#"{"update": {"cluster": "", "path": "/"}}"#,
                "update.cluster",
            ),
            (
                r#"{"update": {"cluster": "c", "path": "x"}}"#,
                "update.path",
            ),
            (
                r#"{"update": {"cluster": "c", "path": "/", "interval_ms": 1}}"#,
                "interval_ms",
            ),
            (
                r#"{"update": {"cluster": "c", "path": "/", "timeout_ms": 0}}"#,
                "timeout_ms",
            ),
            (r#"{"update": {"path": "/"}}"#, "missing field `cluster`"),
            (r#"{"node_ips": ["not-an-ip"]}"#, "invalid IP address"),
        ];
        for (input, want) in cases {
            let got = err(input);
            assert!(got.contains(want), "{input}: {got:?} lacks {want:?}");
            assert!(got.starts_with("plugin configuration"), "{got}");
        }
    }
}
