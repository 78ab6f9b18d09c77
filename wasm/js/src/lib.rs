//! pobox for JavaScript: the core engine behind a wasm-bindgen API, for Node
//! (ESM and CommonJS) and browsers.
//!
//! Every method converts JavaScript values into the core's types, calls the
//! core, and converts the answer back; no Kubernetes rule is decided here.
//! Failures are thrown as JavaScript `Error` objects carrying the core's
//! message (one helper, `into_error`).
//!
//! `wasm32-unknown-unknown` has neither a clock nor an entropy source, so
//! this crate supplies both from the host: session-affinity timeouts and
//! outlier ejections read `performance.now()` ([`JsClock`]), and the
//! generator behind the `random` and `least-request` policies is seeded from
//! `Math.random()` when the module starts.

#![warn(missing_docs)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use js_sys::{Reflect, Uint8Array, JSON};
use pobox::{Client, Clock, Kind, MeshConfig, Outcome, RecordType};
use wasm_bindgen::prelude::*;

// === host functions ===

#[wasm_bindgen]
extern "C" {
    /// `performance.now()`: monotonic milliseconds, in Node and browsers.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;

    /// `console.error`, for the panic hook.
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(message: &str);

    /// The options object of `new Mesh()`.
    #[wasm_bindgen(typescript_type = "MeshOptions")]
    pub type MeshOptions;

    /// The options object of `endpoints()`.
    #[wasm_bindgen(typescript_type = "{ all?: boolean }")]
    pub type EndpointsOptions;

    /// The options object of `lookup()`.
    #[wasm_bindgen(typescript_type = "{ namespace?: string }")]
    pub type LookupOptions;

    /// A hash key: a string or bytes.
    #[wasm_bindgen(typescript_type = "string | Uint8Array")]
    pub type Key;
}

/// The host's monotonic clock (`performance.now()`), for affinity timeouts
/// and outlier ejections: the core's `SystemClock` stands still on
/// `wasm32-unknown-unknown`, which has no clock of its own.
#[derive(Debug, Default)]
pub struct JsClock;

impl Clock for JsClock {
    fn now(&self) -> Duration {
        // performance.now() is non-negative and never goes backwards.
        Duration::from_micros((performance_now() * 1000.0) as u64)
    }
}

/// Runs once when the module is instantiated: a panic (a bug) is written to
/// `console.error` before the module traps, and this thread's generator is
/// seeded from the host, since without a seed it would give every process
/// the same "random" sequence.
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| {
        console_error(&format!("pobox panicked: {info}"))
    }));
    pobox::reseed_thread_rng(random_seed());
}

/// 64 bits from `Math.random()` (two draws of 32), never 0 (which would mean
/// "seed afresh" to the core).
fn random_seed() -> u64 {
    let draw = || (js_sys::Math::random() * 4_294_967_296.0) as u64;
    (draw() << 32 | draw()) | 1
}

// === errors and values ===

/// Turns any error of the core (or of the conversion) into a JavaScript
/// `Error` whose message is the error's `Display`.
fn into_error(e: impl std::fmt::Display) -> JsError {
    JsError::new(&e.to_string())
}

/// An answer as JSON text, written field by field and parsed by the host
/// into the JavaScript value (one call across, however many fields).
/// Objects are written with their keys in sorted order, as `serde_json`
/// wrote them when the answers were `serde_json::Value`s: the same text,
/// without building the values (a tenth of the module's formatting code).
#[derive(Default)]
struct Json(String);

impl Json {
    /// Punctuation and keys, as they are: `{"name":`.
    fn raw(&mut self, s: &str) -> &mut Self {
        self.0.push_str(s);
        self
    }

    /// A JSON string: `"`, `\` and control characters escaped.
    fn str(&mut self, s: &str) -> &mut Self {
        self.0.push('"');
        for c in s.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                c if u32::from(c) < 0x20 => {
                    let _ = write!(self.0, "\\u{:04x}", u32::from(c));
                }
                c => self.0.push(c),
            }
        }
        self.0.push('"');
        self
    }

    /// A string, or `null`.
    fn opt_str(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.str(s),
            None => self.raw("null"),
        }
    }

    fn num(&mut self, n: u64) -> &mut Self {
        let _ = write!(self.0, "{n}");
        self
    }

    fn bool(&mut self, b: bool) -> &mut Self {
        self.raw(if b { "true" } else { "false" })
    }

    /// The JavaScript value of the text.
    fn to_js(&self) -> Result<JsValue, JsError> {
        JSON::parse(&self.0).map_err(|_| into_error("internal: JSON round trip failed"))
    }
}

/// `undefined` and `null` mean "not given".
fn given(value: &JsValue) -> bool {
    !value.is_undefined() && !value.is_null()
}

/// A client from the optional IP string and the optional key (a string or a
/// Uint8Array).
fn client_parts(
    client_ip: Option<String>,
    key: Option<&JsValue>,
) -> Result<(Option<IpAddr>, Option<Vec<u8>>), JsError> {
    let ip = match client_ip {
        None => None,
        Some(s) => Some(parse_client_ip(&s)?),
    };
    let key = if let Some(key) = key {
        if let Some(s) = key.as_string() {
            Some(s.into_bytes())
        } else if let Some(bytes) = key.dyn_ref::<Uint8Array>() {
            Some(bytes.to_vec())
        } else {
            return Err(into_error("key must be a string or a Uint8Array"));
        }
    } else {
        None
    };
    Ok((ip, key))
}

fn parse_client_ip(s: &str) -> Result<IpAddr, JsError> {
    s.parse()
        .map_err(|_| into_error(format!("clientIp {s:?} is not an IP address")))
}

fn client_of(ip: Option<IpAddr>, key: Option<&[u8]>) -> Client<'_> {
    let mut client = Client::new();
    if let Some(ip) = ip {
        client = client.ip(ip);
    }
    if let Some(key) = key {
        client = client.key(key);
    }
    client
}

fn pick_addr(
    mesh: &pobox::Mesh,
    dest: &pobox::Destination,
    ip: Option<IpAddr>,
    key: Option<&[u8]>,
) -> Result<SocketAddr, JsError> {
    let pick = mesh.pick(dest, &client_of(ip, key)).map_err(into_error)?;
    Ok(pick.addr)
}

// === endpoint strings ===

thread_local! {
    /// Each endpoint address already turned into a JavaScript string, so
    /// that a pick returns a reference instead of formatting the address
    /// and decoding it from UTF-8 again (that would cost more than the pick).
    /// Bounded: cleared when it reaches [`ADDR_STRINGS_MAX`] entries.
    static ADDR_STRINGS: RefCell<HashMap<SocketAddr, JsValue, BuildHasherDefault<FoldHasher>>> =
        RefCell::default();
}

const ADDR_STRINGS_MAX: usize = 16_384;

/// `addr` as a JavaScript string (`10.1.2.3:8080`, `[fd00::1]:8080`).
fn addr_string(addr: SocketAddr) -> JsValue {
    ADDR_STRINGS.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(s) = cache.get(&addr) {
            return s.clone();
        }
        if cache.len() >= ADDR_STRINGS_MAX {
            cache.clear();
        }
        let s = JsValue::from_str(&addr.to_string());
        cache.insert(addr, s.clone());
        s
    })
}

/// A small multiplicative hasher for socket addresses: they come from the
/// applied objects, not from callers, so no flooding-resistant hash is
/// needed.
#[derive(Default)]
struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// An `ApplyReport`: `{"changed":..,"version":..,"warnings":[..]}`.
fn report_js(report: &pobox::ApplyReport) -> Result<JsValue, JsError> {
    let mut out = Json::default();
    out.raw("{\"changed\":")
        .bool(report.changed)
        .raw(",\"version\":")
        .num(report.version)
        .raw(",\"warnings\":[");
    for (i, warning) in report.warnings.iter().enumerate() {
        out.raw(if i == 0 { "" } else { "," }).str(warning);
    }
    out.raw("]}").to_js()
}

fn document_bytes(doc: &JsValue) -> Result<Vec<u8>, JsError> {
    if let Some(s) = doc.as_string() {
        Ok(s.into_bytes())
    } else if let Some(bytes) = doc.dyn_ref::<Uint8Array>() {
        Ok(bytes.to_vec())
    } else {
        Err(into_error("the document must be a string or a Uint8Array"))
    }
}

/// A named option of an options object, or `undefined` when `options` is
/// not given.
fn option(options: Option<&JsValue>, name: &str, what: &str) -> Result<JsValue, JsError> {
    let Some(options) = options else {
        return Ok(JsValue::UNDEFINED);
    };
    if !options.is_object() {
        return Err(into_error(format!("{what}: options must be an object")));
    }
    Reflect::get(options, &JsValue::from_str(name))
        .map_err(|_| into_error(format!("{what}: options.{name} cannot be read")))
}

// === impl Mesh ===

/// A mesh: the Kubernetes objects applied so far and the snapshot built from
/// them for this node.
#[wasm_bindgen]
pub struct Mesh {
    inner: pobox::Mesh,
}

#[wasm_bindgen]
impl Mesh {
    /// An empty mesh. `options` is `undefined` or an object with any of
    /// `node`, `zone`, `nodeIPs` (an array of strings), `clusterDomain` and
    /// `limits`, as the C ABI takes them; unknown fields are refused.
    #[wasm_bindgen(constructor)]
    pub fn new(options: Option<MeshOptions>) -> Result<Mesh, JsError> {
        let config = if let Some(options) = options {
            // JSON is the options' one format: the core reads it for every
            // binding. A value JSON cannot hold (a BigInt, a cycle) fails here.
            let json = JSON::stringify(&options)
                .map_err(|_| into_error("configuration: options: not representable as JSON"))?;
            MeshConfig::from_options_json(&String::from(json)).map_err(into_error)?
        } else {
            MeshConfig::new()
        };
        let inner = pobox::Mesh::with_clock(config, Arc::new(JsClock)).map_err(into_error)?;
        Ok(Mesh { inner })
    }

    /// Applies Services and EndpointSlices (JSON: one object, a List or an
    /// array), all or nothing. The package reads JSON only: YAML is refused
    /// with an `Error` that says so (`kubectl get ... -o json` prints JSON).
    #[wasm_bindgen(unchecked_return_type = "ApplyReport")]
    pub fn apply(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string | Uint8Array")] doc: JsValue,
    ) -> Result<JsValue, JsError> {
        let report = self
            .inner
            .apply(&document_bytes(&doc)?)
            .map_err(into_error)?;
        report_js(&report)
    }

    /// Replaces everything with these objects, all or nothing.
    #[wasm_bindgen(unchecked_return_type = "ApplyReport")]
    pub fn replace(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string | Uint8Array")] doc: JsValue,
    ) -> Result<JsValue, JsError> {
        let report = self
            .inner
            .replace(&document_bytes(&doc)?)
            .map_err(into_error)?;
        report_js(&report)
    }

    /// Deletes one object: `kind` is `Service` or `EndpointSlice`. Deleting
    /// an object that does not exist changes nothing.
    #[wasm_bindgen(unchecked_return_type = "ApplyReport")]
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> Result<JsValue, JsError> {
        let kind = Kind::parse(kind)
            .ok_or_else(|| into_error(format!("kind {kind:?} is not Service or EndpointSlice")))?;
        let report = self
            .inner
            .delete(kind, namespace, name)
            .map_err(into_error)?;
        report_js(&report)
    }

    /// Picks an endpoint (`"10.1.2.3:8080"`, `"[fd00::1]:8080"`) for
    /// `dest` (`IP:PORT` or a Service name, see the README), from the
    /// client IP and the hash key (a string or bytes) when given.
    #[wasm_bindgen(unchecked_return_type = "string")]
    pub fn pick(
        &self,
        dest: &str,
        #[wasm_bindgen(js_name = clientIp)] client_ip: Option<String>,
        key: Option<Key>,
    ) -> Result<JsValue, JsError> {
        let dest = pobox::Destination::parse(dest).map_err(into_error)?;
        let (ip, key) = client_parts(client_ip, key.as_deref())?;
        let addr = pick_addr(&self.inner, &dest, ip, key.as_deref())?;
        Ok(addr_string(addr))
    }

    /// Parses `dest` once, for many picks ([`Destination::pick`]); faster
    /// than [`Mesh::pick`] with a string each time.
    pub fn destination(&self, dest: &str) -> Result<Destination, JsError> {
        let dest = pobox::Destination::parse(dest).map_err(into_error)?;
        Ok(Destination {
            route: self.inner.route(&dest, None),
        })
    }

    /// The eligible endpoints of `dest` (`{ all: true }`: every endpoint
    /// known), with the Service, port and traffic kind; the shape of
    /// `pobox endpoints --json`.
    #[wasm_bindgen(unchecked_return_type = "Endpoints")]
    pub fn endpoints(
        &self,
        dest: &str,
        options: Option<EndpointsOptions>,
    ) -> Result<JsValue, JsError> {
        let all = option(options.as_deref(), "all", "endpoints")?;
        let all = if given(&all) {
            all.as_bool()
                .ok_or_else(|| into_error("endpoints: options.all must be a boolean"))?
        } else {
            false
        };
        let dest = pobox::Destination::parse(dest).map_err(into_error)?;
        let snapshot = self.inner.snapshot();
        let resolved = snapshot
            .resolve(&dest, &Client::new())
            .map_err(into_error)?;
        let list: Vec<&pobox::Endpoint> = if all {
            resolved.port.endpoints().iter().collect()
        } else {
            resolved.eligible().collect()
        };
        let spec = resolved.port.spec();
        let mut out = Json::default();
        out.raw("{\"endpoints\":[");
        for (i, e) in list.iter().enumerate() {
            out.raw(if i == 0 { "{\"ip\":" } else { ",{\"ip\":" })
                .str(&e.ip().to_string())
                .raw(",\"node\":")
                .opt_str(e.node())
                .raw(",\"port\":")
                .num(e.port().into())
                .raw(",\"ready\":")
                .bool(e.is_ready())
                .raw(",\"serving\":")
                .bool(e.is_serving())
                .raw(",\"terminating\":")
                .bool(e.is_terminating())
                .raw(",\"zone\":")
                .opt_str(e.zone())
                .raw("}");
        }
        out.raw("],\"port\":{\"name\":")
            .str(spec.name())
            .raw(",\"port\":")
            .num(spec.port().into())
            .raw(",\"protocol\":")
            .str(spec.protocol().as_str())
            .raw("},\"service\":")
            .str(resolved.service.service().key().as_str())
            .raw(",\"traffic\":")
            .str(resolved.traffic.as_str())
            .raw("}")
            .to_js()
    }

    /// DNS records for `name`, as the cluster DNS server answers: `type` is
    /// `A` (the default), `AAAA`, `SRV`, `PTR`, `CNAME`, `TXT` or `TYPEn`; an
    /// IP address as `name` asks for its PTR record. With `{ namespace }`
    /// the name is expanded as a pod in that namespace would; without it, it
    /// is fully qualified. The shape of `pobox dns --json`.
    #[wasm_bindgen(unchecked_return_type = "DnsAnswer")]
    pub fn lookup(
        &self,
        name: &str,
        #[wasm_bindgen(js_name = type)] qtype: Option<String>,
        options: Option<LookupOptions>,
    ) -> Result<JsValue, JsError> {
        let qtype = match qtype {
            None => None,
            Some(t) => Some(RecordType::parse(&t).ok_or_else(|| {
                into_error(format!(
                    "unknown record type {t:?} (A, AAAA, SRV, PTR, CNAME, TXT or TYPEn)"
                ))
            })?),
        };
        let namespace = option(options.as_deref(), "namespace", "lookup")?;
        let namespace = if given(&namespace) {
            Some(
                namespace
                    .as_string()
                    .ok_or_else(|| into_error("lookup: options.namespace must be a string"))?,
            )
        } else {
            None
        };
        let (name, qtype) = match name.parse::<IpAddr>() {
            Ok(ip) => (
                pobox::dns::reverse_name(ip),
                qtype.unwrap_or(RecordType::Ptr),
            ),
            Err(_) => (name.to_owned(), qtype.unwrap_or(RecordType::A)),
        };
        let snapshot = self.inner.snapshot();
        let answer = match &namespace {
            Some(ns) => snapshot.lookup_from(ns, &name, qtype),
            None => snapshot.lookup(&name, qtype),
        };
        let mut out = Json::default();
        out.raw("{\"answers\":[");
        for (i, r) in answer.answers.iter().enumerate() {
            out.raw(if i == 0 { "{\"data\":" } else { ",{\"data\":" })
                .str(&r.data.value())
                .raw(",\"name\":")
                .str(&r.name)
                .raw(",\"ttl\":")
                .num(r.ttl.into())
                .raw(",\"type\":")
                .str(&r.data.record_type().to_string())
                .raw("}");
        }
        out.raw("],\"rcode\":")
            .str(answer.rcode.as_str())
            .raw("}")
            .to_js()
    }

    /// Reports how a request to `endpoint` (`"10.1.2.3:8080"`) went, for
    /// passive health (outlier detection, opted into per Service).
    pub fn report(&self, endpoint: &str, ok: bool) -> Result<(), JsError> {
        let addr: SocketAddr = endpoint
            .parse()
            .map_err(|_| into_error(format!("endpoint {endpoint:?} is not IP:PORT")))?;
        let outcome = if ok {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        self.inner.report_endpoint(addr, outcome);
        Ok(())
    }

    /// The version of the current snapshot: it grows with every change.
    #[wasm_bindgen(getter)]
    pub fn version(&self) -> f64 {
        self.inner.version() as f64
    }
}

// === impl Destination ===

/// A destination parsed once ([`Mesh::destination`]), for many picks: a
/// core [`pobox::Route`], which resolves it once per snapshot version.
#[wasm_bindgen]
pub struct Destination {
    route: pobox::Route,
}

#[wasm_bindgen]
impl Destination {
    /// Picks an endpoint, as [`Mesh::pick`] does for this destination. The
    /// fast path: the key, if any, is a string here (a header or cookie
    /// value), which crosses into WebAssembly cheaper than any value.
    ///
    /// The package replaces this method with `src/fast.js`, which picks
    /// through [`Destination::pick_slot`]; this one gives the same answers
    /// when the module is used without it.
    #[wasm_bindgen(unchecked_return_type = "string")]
    pub fn pick(
        &self,
        #[wasm_bindgen(js_name = clientIp)] client_ip: Option<String>,
        key: Option<String>,
    ) -> Result<JsValue, JsError> {
        let addr = self.pick_addr(client_ip, key)?;
        Ok(addr_string(addr))
    }

    /// [`Destination::pick`] for `src/fast.js`: the endpoint's slot (a
    /// number that names one address for the life of the module), whose
    /// string the JavaScript side keeps, instead of the string itself. A number crosses back without the externref and the
    /// result array a `Result<JsValue, JsError>` costs, about half of a
    /// whole pick from JavaScript. [`PICK_FAILED`]: the error waits in
    /// [`take_pick_error`]; [`NO_SLOT`]: the endpoint is in
    /// [`endpoint_string`]`(NO_SLOT)`.
    #[wasm_bindgen(js_name = __pickSlot, skip_typescript)]
    pub fn pick_slot(&self, client_ip: Option<String>, key: Option<String>) -> u32 {
        match self.pick_addr(client_ip, key) {
            Ok(addr) => slot_of(addr),
            Err(e) => {
                PICK_ERROR.with(|last| *last.borrow_mut() = Some(e));
                PICK_FAILED
            }
        }
    }

    fn pick_addr(
        &self,
        client_ip: Option<String>,
        key: Option<String>,
    ) -> Result<SocketAddr, JsError> {
        let ip = match client_ip {
            None => None,
            Some(s) => Some(parse_client_ip(&s)?),
        };
        let client = client_of(ip, key.as_deref().map(str::as_bytes));
        let pick = self.route.pick(&client).map_err(into_error)?;
        Ok(pick.addr)
    }
}

// === endpoint slots, for src/fast.js ===

/// [`Destination::pick_slot`] failed: the error is in [`take_pick_error`].
pub const PICK_FAILED: u32 = u32::MAX;

/// [`Destination::pick_slot`] found the slot table full: the endpoint is
/// in [`endpoint_string`]`(NO_SLOT)` until the next pick.
pub const NO_SLOT: u32 = u32::MAX - 1;

/// The most endpoint addresses given a slot; past it, picks of new
/// addresses answer [`NO_SLOT`] (slower, still right).
const SLOTS_MAX: usize = 16_384;

/// Endpoint addresses by slot, and slots by address. A slot names one
/// address for the life of the module, whatever the mesh or its version,
/// so the strings `src/fast.js` keeps by slot never go stale. Shared by
/// every mesh of the module instance.
#[derive(Default)]
struct Slots {
    by_addr: HashMap<SocketAddr, u32, BuildHasherDefault<FoldHasher>>,
    addrs: Vec<SocketAddr>,
    /// The address of the last [`NO_SLOT`] answer.
    unslotted: Option<SocketAddr>,
}

thread_local! {
    static SLOTS: RefCell<Slots> = RefCell::default();
    /// The error of the last [`PICK_FAILED`] answer.
    static PICK_ERROR: RefCell<Option<JsError>> = const { RefCell::new(None) };
}

/// The slot of `addr`, given one if it has none and the table has room.
fn slot_of(addr: SocketAddr) -> u32 {
    SLOTS.with(|slots| {
        let mut slots = slots.borrow_mut();
        if let Some(&slot) = slots.by_addr.get(&addr) {
            return slot;
        }
        if slots.addrs.len() >= SLOTS_MAX {
            slots.unslotted = Some(addr);
            return NO_SLOT;
        }
        let slot = slots.addrs.len() as u32;
        slots.addrs.push(addr);
        slots.by_addr.insert(addr, slot);
        slot
    })
}

/// The endpoint string (`10.1.2.3:8080`, `[fd00::1]:8080`) of a slot
/// [`Destination::pick_slot`] answered, for `src/fast.js` to keep.
#[wasm_bindgen(js_name = __endpointString, skip_typescript)]
pub fn endpoint_string(slot: u32) -> Result<String, JsError> {
    SLOTS.with(|slots| {
        let slots = slots.borrow();
        let addr = if slot == NO_SLOT {
            slots.unslotted
        } else {
            slots.addrs.get(slot as usize).copied()
        };
        addr.map(|a| a.to_string())
            .ok_or_else(|| into_error(format!("internal: no endpoint in slot {slot}")))
    })
}

/// The error of the last pick that answered [`PICK_FAILED`], as an `Error`.
#[wasm_bindgen(js_name = __takePickError, skip_typescript)]
pub fn take_pick_error() -> JsValue {
    PICK_ERROR
        .with(|last| last.borrow_mut().take())
        .unwrap_or_else(|| into_error("internal: no pick error to take"))
        .into()
}

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
/** Options of `new Mesh()`, as the C ABI takes them. */
export interface MeshOptions {
  /** This node's name (for `trafficPolicy: Local` and node hints). */
  node?: string;
  /** This node's zone (for zone hints). */
  zone?: string;
  /** This node's addresses: NodePorts are reachable on them. */
  nodeIPs?: string[];
  /** The cluster DNS domain (default `cluster.local`). */
  clusterDomain?: string;
  /** Bounds on what one apply may cost; an input over one throws
   * `input is ... over the limit of ...` and changes nothing. */
  limits?: {
    /** The largest input read, in bytes (default 64 MiB). */
    maxInputBytes?: number;
    /** The deepest nesting of mappings and sequences (default 64). */
    maxDepth?: number;
    /** The most values one input holds (default 8,000,000). */
    maxValues?: number;
    /** The most objects in one input (default 100,000). */
    maxObjects?: number;
    /** The most endpoints the mesh holds after an apply (default 500,000). */
    maxEndpoints?: number;
    /** The most session-affinity entries kept (default 262,144). */
    affinityCapacity?: number;
  };
}

/** What an apply, replace or delete did. */
export interface ApplyReport {
  /** The snapshot version now published. */
  version: number;
  /** Whether anything changed. */
  changed: boolean;
  /** Objects skipped (other kinds, FQDN slices), one line each. */
  warnings: string[];
}

/** One endpoint of a Service port. */
export interface Endpoint {
  ip: string;
  port: number;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  node: string | null;
  zone: string | null;
}

/** The endpoints of a destination, as `pobox endpoints --json` prints them. */
export interface Endpoints {
  /** `namespace/name`. */
  service: string;
  port: { name: string; port: number; protocol: "TCP" | "UDP" | "SCTP" };
  traffic: "internal" | "external";
  endpoints: Endpoint[];
}

/** A DNS answer, as `pobox dns --json` prints it. */
export interface DnsAnswer {
  rcode: "NOERROR" | "NXDOMAIN" | "REFUSED";
  answers: { name: string; type: string; ttl: number; data: string }[];
}
"#;
