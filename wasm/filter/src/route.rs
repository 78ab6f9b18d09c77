//! The per-request decision, independent of the proxy-wasm host so that it
//! is tested and benchmarked natively: read the destination and hash key,
//! pick through the core, write the endpoint over the client's copies of
//! the endpoint header (or remove them when there is no route).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

use pobox::{Client, Clock, Destination, Mesh, PickError, Request, Route};

use crate::config::{HashKey, Settings};

/// The port a destination gets when `:authority` names none (plain HTTP).
pub const DEFAULT_PORT: u16 = 80;

/// Routes kept per VM, by `:authority` (its destination parsed and resolved
/// once per snapshot version); the cache is emptied when full, so a client
/// sending many distinct authorities costs memory only up to this bound.
const ROUTE_CACHE_ENTRIES: usize = 1024;

/// Endpoint addresses already written out as `IP:PORT`, kept per VM:
/// formatting an address costs more than the pick inside the VM. Emptied
/// when full, like the destination cache.
const ENDPOINT_STRING_ENTRIES: usize = 4096;

/// The request headers a [`Router`] reads and writes.
pub trait Headers {
    /// A header's value (`:authority` included).
    fn get(&self, name: &str) -> Option<String>;
    /// Sets a header, replacing every existing value (a client's copies of
    /// the endpoint header among them: an implementation that cannot must
    /// remove them).
    fn set(&mut self, name: &str, value: &str);
    /// Removes every value of a header.
    fn remove(&mut self, name: &str);
}

/// What [`Router::route`] decided.
#[derive(Debug)]
pub enum Routed {
    /// The endpoint was written to the configured header. The request stays
    /// counted in flight (least-request) until the [`Request`] is finished
    /// or dropped.
    Endpoint(Request),
    /// Nowhere to route: the configured `no_route` behaviour applies.
    NoRoute(PickError),
}

/// The filter's state in one VM: the mesh and the checked settings.
#[derive(Debug)]
pub struct Router {
    mesh: Mesh,
    settings: Settings,
    routes: RefCell<HashMap<String, Rc<Result<Route, PickError>>>>,
    endpoint_strings: RefCell<HashMap<SocketAddr, Rc<str>>>,
}

impl Router {
    /// A router for `settings`, with the configured objects applied. Any
    /// error (a bad object, a bad node name) is returned as a message.
    pub fn new(settings: Settings, clock: Arc<dyn Clock>) -> Result<Router, String> {
        let mesh = Mesh::with_clock(settings.mesh.clone(), clock)
            .map_err(|e| format!("plugin configuration: {e}"))?;
        if let Some(objects) = &settings.objects {
            mesh.apply(objects)
                .map_err(|e| format!("plugin configuration: objects: {e}"))?;
        }
        Ok(Router {
            mesh,
            settings,
            routes: RefCell::new(HashMap::new()),
            endpoint_strings: RefCell::new(HashMap::new()),
        })
    }

    /// The mesh updates are applied to.
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// The settings the router was built with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Routes one request: picks for the destination in `:authority` (port
    /// 80 when none is given) with the configured hash key, and writes the
    /// endpoint as `IP:PORT` (`[IPv6]:PORT`) to the endpoint header, which
    /// replaces every copy of it the client sent; when there is no route,
    /// removes every such copy. Either way a client never chooses its own
    /// backend, and one header call does it. `source` gives the client's
    /// IP; it is called only when the destination's Service reads it
    /// (session affinity, a hash policy: [`Route::uses_client_ip`]), since
    /// asking the host costs a call.
    pub fn route(
        &self,
        headers: &mut impl Headers,
        source: impl FnOnce() -> Option<IpAddr>,
    ) -> Routed {
        let routed = self.pick(headers, source);
        match &routed {
            Routed::Endpoint(request) => {
                headers.set(&self.settings.header, &self.endpoint_string(request.addr()))
            }
            Routed::NoRoute(_) => headers.remove(&self.settings.header),
        }
        routed
    }

    /// [`Router::route`] without the endpoint header: reads the request's
    /// destination and key (never the endpoint header) and picks.
    fn pick(&self, headers: &impl Headers, source: impl FnOnce() -> Option<IpAddr>) -> Routed {
        let authority = headers.get(":authority").unwrap_or_default();
        let key = match &self.settings.hash_key {
            None => None,
            Some(HashKey::Header(name)) => headers.get(name),
            Some(HashKey::Cookie(name)) => headers
                .get("cookie")
                .and_then(|cookies| cookie(&cookies, name).map(str::to_owned)),
        };
        let route = self.route_to(&authority);
        let route = match &*route {
            Ok(route) => route,
            Err(e) => return Routed::NoRoute(e.clone()),
        };
        let source = if route.uses_client_ip() {
            source()
        } else {
            None
        };
        let mut client = Client::new();
        if let Some(ip) = source {
            client = client.ip(ip);
        }
        if let Some(key) = &key {
            client = client.key(key.as_bytes());
        }
        match route.begin(&client) {
            Ok(request) => Routed::Endpoint(request),
            Err(e) => Routed::NoRoute(e),
        }
    }

    /// `addr` as `IP:PORT` (`[IPv6]:PORT`), formatted once.
    fn endpoint_string(&self, addr: SocketAddr) -> Rc<str> {
        let mut cache = self.endpoint_strings.borrow_mut();
        if let Some(hit) = cache.get(&addr) {
            return hit.clone();
        }
        if cache.len() >= ENDPOINT_STRING_ENTRIES {
            cache.clear();
        }
        let formatted: Rc<str> = addr.to_string().into();
        cache.insert(addr, formatted.clone());
        formatted
    }

    /// The route for `authority` (its destination in the configured
    /// namespace), or why it has none.
    fn route_to(&self, authority: &str) -> Rc<Result<Route, PickError>> {
        if let Some(hit) = self.routes.borrow().get(authority) {
            return hit.clone();
        }
        let parsed = if authority.is_empty() {
            Err(PickError::BadDestination {
                destination: String::new(),
                reason: "the request has no :authority (Host)".into(),
            })
        } else if has_port(authority) {
            Destination::parse(authority)
        } else {
            Destination::parse(&format!("{authority}:{DEFAULT_PORT}"))
        };
        let route =
            Rc::new(parsed.map(|dest| self.mesh.route(&dest, self.settings.namespace.as_deref())));
        let mut cache = self.routes.borrow_mut();
        if cache.len() >= ROUTE_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(authority.to_owned(), route.clone());
        route
    }
}

/// Whether an authority carries a port: `host:port`, `[v6]:port`.
fn has_port(authority: &str) -> bool {
    match authority.strip_prefix('[') {
        Some(rest) => rest.contains("]:"),
        None => authority.contains(':'),
    }
}

/// A cookie's value from a `cookie` header (`a=1; b=2`).
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then(|| v.trim_matches('"'))
    })
}

/// The client IP from Envoy's `source.address` property (`IP:PORT`,
/// `[IPv6]:PORT`, or a bare IP).
pub fn source_ip(property: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(property).ok()?;
    text.parse::<SocketAddr>()
        .map(|a| a.ip())
        .or_else(|_| text.parse::<IpAddr>())
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{NoRoute, DEFAULT_HEADER};
    use pobox::ManualClock;

    /// Header names are case-insensitive in HTTP and lowercase in Envoy.
    #[derive(Default)]
    struct Map(Vec<(String, String)>);

    impl Headers for Map {
        fn get(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
        fn set(&mut self, name: &str, value: &str) {
            self.remove(name);
            self.0.push((name.into(), value.into()));
        }
        fn remove(&mut self, name: &str) {
            self.0.retain(|(k, _)| k != name);
        }
    }

    fn map(pairs: &[(&str, &str)]) -> Map {
        Map(pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    const OBJECTS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata:
  name: sticky
  namespace: shop
  annotations: {pobox.io/lb-policy: maglev}
spec:
  clusterIP: 10.96.0.11
  ports: [{name: http, port: 8000, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: shop}
spec:
  clusterIP: 10.96.0.12
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.1.0.1]
- addresses: [10.1.0.2]
- addresses: [10.1.0.3]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: sticky-1, namespace: shop, labels: {kubernetes.io/service-name: sticky}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
- addresses: [10.2.0.1]
- addresses: [10.2.0.2]
- addresses: [10.2.0.3]
"#;

    fn router(extra: &str) -> Router {
        let config = serde_json::json!({"objects": OBJECTS, "namespace": "shop"});
        let mut config = config.as_object().unwrap().clone();
        let extra: serde_json::Value = serde_json::from_str(extra).unwrap();
        config.extend(extra.as_object().unwrap().clone());
        let settings =
            Settings::parse(serde_json::Value::Object(config).to_string().as_bytes()).unwrap();
        Router::new(settings, Arc::new(ManualClock::new())).unwrap()
    }

    fn endpoint(routed: Routed) -> SocketAddr {
        match routed {
            Routed::Endpoint(r) => r.addr(),
            Routed::NoRoute(e) => panic!("no route: {e}"),
        }
    }

    #[test]
    fn routes_by_name_and_by_vip_with_port_80_by_default() {
        let r = router("{}");
        for authority in [
            "web",
            "web:80",
            "web.shop",
            "web.shop.svc.cluster.local",
            "web.shop.svc.cluster.local:http",
            "10.96.0.10",
            "10.96.0.10:80",
        ] {
            let mut h = map(&[(":authority", authority)]);
            let addr = endpoint(r.route(&mut h, || None));
            assert!(addr.ip().to_string().starts_with("10.1.0."), "{authority}");
            assert_eq!(addr.port(), 8080);
            assert_eq!(h.get(DEFAULT_HEADER).unwrap(), addr.to_string());
        }
    }

    #[test]
    fn round_robin_spreads_evenly() {
        let r = router("{}");
        let mut counts = HashMap::new();
        for _ in 0..30 {
            let mut h = map(&[(":authority", "web")]);
            *counts
                .entry(endpoint(r.route(&mut h, || None)))
                .or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&n| n == 10), "{counts:?}");
    }

    #[test]
    fn a_client_sent_endpoint_header_never_survives() {
        let spoofed = |authority: &str| {
            let mut h = map(&[(":authority", authority), (DEFAULT_HEADER, "6.6.6.6:1")]);
            h.0.push((DEFAULT_HEADER.into(), "6.6.6.7:1".into()));
            h
        };
        for no_route in ["pass", "reject"] {
            let r = router(&format!(r#"{{"no_route": "{no_route}"}}"#));
            // Routed: every copy replaced by the pick, in one write.
            let mut h = Counted(spoofed("web"), 0);
            let addr = endpoint(r.route(&mut h, || None));
            assert_eq!(h.0.get(DEFAULT_HEADER).unwrap(), addr.to_string());
            assert_eq!(
                h.0 .0.iter().filter(|(k, _)| k == DEFAULT_HEADER).count(),
                1
            );
            assert_eq!(h.1, 1, "one header write");
            // Not routed: every copy gone.
            for authority in ["empty", "nothing.here", "", "bad name!"] {
                let mut h = Counted(spoofed(authority), 0);
                assert!(matches!(r.route(&mut h, || None), Routed::NoRoute(_)));
                assert_eq!(h.0.get(DEFAULT_HEADER), None, "{authority}");
                assert_eq!(h.1, 1, "one header write");
            }
        }
    }

    /// Headers that count the writes made to them.
    struct Counted(Map, usize);

    impl Headers for Counted {
        fn get(&self, name: &str) -> Option<String> {
            self.0.get(name)
        }
        fn set(&mut self, name: &str, value: &str) {
            self.1 += 1;
            self.0.set(name, value);
        }
        fn remove(&mut self, name: &str) {
            self.1 += 1;
            self.0.remove(name);
        }
    }

    #[test]
    fn no_eligible_endpoint_names_the_service() {
        let r = router(r#"{"no_route": "reject"}"#);
        assert_eq!(r.settings().no_route, NoRoute::Reject);
        let mut h = map(&[(":authority", "empty")]);
        let Routed::NoRoute(e) = r.route(&mut h, || None) else {
            panic!("routed")
        };
        assert!(e.to_string().contains("shop/empty"), "{e}");
    }

    #[test]
    fn hash_key_from_a_header_or_a_cookie_is_consistent() {
        for (config, name, value) in [
            (r#"{"hash_key": {"header": "x-user"}}"#, "x-user", "alice"),
            (
                r#"{"hash_key": {"cookie": "sid"}}"#,
                "cookie",
                "a=1; sid=alice; b=2",
            ),
        ] {
            let r = router(config);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..20 {
                let mut h = map(&[(":authority", "sticky:8000"), (name, value)]);
                seen.insert(endpoint(r.route(&mut h, || None)));
            }
            assert_eq!(seen.len(), 1, "{config}");
            // The same key through another router (another VM) agrees.
            let other = router(config);
            let mut h = map(&[(":authority", "10.96.0.11:8000"), (name, value)]);
            assert!(seen.contains(&endpoint(other.route(&mut h, || None))));
            // Different keys reach more than one endpoint.
            let spread: std::collections::HashSet<_> = (0..40)
                .map(|i| {
                    let key = format!("user-{i}");
                    let v = if name == "cookie" {
                        format!("sid={key}")
                    } else {
                        key
                    };
                    endpoint(r.route(
                        &mut map(&[(":authority", "sticky:8000"), (name, &v)]),
                        || None,
                    ))
                })
                .collect();
            assert!(spread.len() > 1, "{config}");
        }
    }

    #[test]
    fn without_a_configured_key_the_client_ip_is_the_hash_key() {
        let r = router("{}");
        let ip: IpAddr = "127.0.0.7".parse().unwrap();
        let first = endpoint(r.route(&mut map(&[(":authority", "sticky:8000")]), || Some(ip)));
        for _ in 0..10 {
            let again = endpoint(r.route(&mut map(&[(":authority", "sticky:8000")]), || Some(ip)));
            assert_eq!(again, first);
        }
    }

    #[test]
    fn the_client_ip_is_asked_for_only_when_the_service_reads_it() {
        let r = router("{}");
        let asked = std::cell::Cell::new(0);
        let source = || {
            asked.set(asked.get() + 1);
            Some("127.0.0.7".parse().unwrap())
        };
        // Round robin: never.
        endpoint(r.route(&mut map(&[(":authority", "web")]), source));
        assert_eq!(asked.get(), 0);
        // Maglev: once, as its hash key.
        endpoint(r.route(&mut map(&[(":authority", "sticky:8000")]), source));
        assert_eq!(asked.get(), 1);
        // An update gives `web` session affinity: the next request asks.
        r.mesh()
            .apply(
                br#"{"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "web", "namespace": "shop"},
                 "spec": {"clusterIP": "10.96.0.10", "sessionAffinity": "ClientIP",
                          "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}"#,
            )
            .unwrap();
        let first = endpoint(r.route(&mut map(&[(":authority", "web")]), source));
        assert_eq!(asked.get(), 2);
        for _ in 0..5 {
            assert_eq!(
                endpoint(r.route(&mut map(&[(":authority", "web")]), source)),
                first
            );
        }
    }

    #[test]
    fn updates_apply_to_the_next_request() {
        let r = router("{}");
        r.mesh()
            .apply(
                br#"{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                 "metadata": {"name": "web-1", "namespace": "shop",
                              "labels": {"kubernetes.io/service-name": "web"}},
                 "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
                 "endpoints": [{"addresses": ["10.1.0.9"]}]}"#,
            )
            .unwrap();
        let addr = endpoint(r.route(&mut map(&[(":authority", "web")]), || None));
        assert_eq!(addr.to_string(), "10.1.0.9:8080");
    }

    #[test]
    fn endpoint_strings_stay_right_past_the_cache_bound() {
        // More distinct endpoints than the cache keeps: every header written
        // is the picked address.
        let n = ENDPOINT_STRING_ENTRIES + 100;
        let v4: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"addresses":["10.3.{}.{}"]}}"#, i / 250, i % 250 + 1))
            .collect();
        let slices: Vec<String> = v4
            .chunks(1000)
            .enumerate()
            .map(|(i, eps)| {
                format!(
                    r#"{{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{{"name":"wide-{i}","namespace":"shop","labels":{{"kubernetes.io/service-name":"wide"}}}},"addressType":"IPv4","ports":[{{"port":9000}}],"endpoints":[{}]}}"#,
                    eps.join(",")
                )
            })
            .collect();
        let list = format!(
            r#"{{"apiVersion":"v1","kind":"List","items":[{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"wide","namespace":"shop"}},"spec":{{"clusterIP":"10.96.0.20","ports":[{{"port":80,"targetPort":9000}}]}}}},{}]}}"#,
            slices.join(",")
        );
        let r = router("{}");
        r.mesh().apply(list.as_bytes()).unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..2 * n {
            let mut h = map(&[(":authority", "wide")]);
            let addr = endpoint(r.route(&mut h, || None));
            assert_eq!(h.get(DEFAULT_HEADER).unwrap(), addr.to_string());
            seen.insert(addr);
        }
        assert_eq!(seen.len(), n);
    }

    #[test]
    fn bad_objects_fail_the_configuration() {
        let settings =
            Settings::parse(br#"{"objects": "kind: Service\napiVersion: v1\n"}"#).unwrap();
        let e = Router::new(settings, Arc::new(ManualClock::new())).unwrap_err();
        assert!(e.starts_with("plugin configuration: objects:"), "{e}");
    }

    #[test]
    fn helpers() {
        assert!(has_port("a:1") && has_port("[::1]:80") && !has_port("[::1]") && !has_port("a"));
        assert_eq!(cookie("a=1; sid=\"x\"", "sid"), Some("x"));
        assert_eq!(cookie("a=1;sid=2", "sid"), Some("2"));
        assert_eq!(cookie("asid=1", "sid"), None);
        assert_eq!(source_ip(b"127.0.0.3:5555"), "127.0.0.3".parse().ok());
        assert_eq!(source_ip(b"[::1]:5555"), "::1".parse().ok());
        assert_eq!(source_ip(b"10.0.0.1"), "10.0.0.1".parse().ok());
        assert_eq!(source_ip(b"pipe"), None);
    }
}
