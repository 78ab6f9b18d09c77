//! The C ABI of pobox: `libpobox.so`, `libpobox.a` and `include/pobox.h`.
//!
//! Every function here converts C arguments into the core's types, calls the
//! core, and converts the answer back. No rule is decided here.
//!
//! Conventions (those of rustls-ffi):
//!
//! * every symbol starts with `pobox_`; the object comes first, `const` when
//!   the call does not mutate it;
//! * every exported body runs inside `ffi_panic_boundary!`: a panic becomes
//!   `POBOX_ERR_PANIC`, never an unwind into C;
//! * fallible functions return a [`pobox_result`], whose numbers are never
//!   reused; outputs go through trailing out-parameters, written only on
//!   success; a buffer is followed by its `size_t` length;
//! * ownership of every opaque type is declared once, by `Castable`.
//!
//! This file is also compiled into the benchmark and the fuzz target (with
//! `#[path]`), so that they call exactly these functions.

#![allow(non_camel_case_types)]
// The exported functions check their pointers themselves and document what
// the caller must guarantee in their doc comments (copied into the header).
#![allow(clippy::missing_safety_doc)]

use std::cell::RefCell;
use std::ffi::{c_char, CStr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use pobox::runtime::{Listen, ProxyConfig, StandaloneProxy};
use pobox::{
    Client, Destination, Error, Kind, Mesh, MeshConfig, Outcome, PickError, Protocol, Rcode,
    RecordType, Snapshot,
};

// === results ===

/// What a call did. `POBOX_OK` is success; every other value names one kind
/// of failure, and `pobox_last_error` gives its message. Numbers are never
/// renumbered or reused: new kinds get new numbers.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum pobox_result {
    /// Success.
    POBOX_OK = 0,
    /// A pointer argument that must not be NULL was NULL.
    POBOX_ERR_NULL_ARGUMENT = 1,
    /// A string argument is not valid UTF-8.
    POBOX_ERR_INVALID_UTF8 = 2,
    /// The output buffer is too small; `*written` holds the size needed.
    POBOX_ERR_BUFFER_TOO_SMALL = 3,
    /// pobox panicked (a bug); the call did nothing. The mesh is still usable.
    POBOX_ERR_PANIC = 4,
    /// The options are not valid: mesh options (bad JSON, unknown field,
    /// bad node name, IP or cluster domain) or proxy options (bad JSON,
    /// unknown field, bad listener).
    POBOX_ERR_CONFIG = 5,
    /// The document is not JSON or YAML.
    POBOX_ERR_SYNTAX = 6,
    /// An object the API server would reject, or one pobox cannot use.
    POBOX_ERR_INVALID_OBJECT = 7,
    /// An object clashes with another (say, two Services on one cluster IP).
    POBOX_ERR_CONFLICT = 8,
    /// `kind` is not `Service` or `EndpointSlice`.
    POBOX_ERR_UNKNOWN_KIND = 9,
    /// The destination string is not `IP:PORT`, `[IPv6]:PORT` or a Service name.
    POBOX_ERR_BAD_DESTINATION = 10,
    /// No Service owns this address or name.
    POBOX_ERR_NO_SERVICE = 11,
    /// The Service has no such port (or several, and none was named).
    POBOX_ERR_NO_PORT = 12,
    /// The Service is ExternalName: a DNS alias with no endpoints.
    POBOX_ERR_EXTERNAL_NAME = 13,
    /// The Service port has no eligible endpoint: kube-proxy would reject
    /// the connection.
    POBOX_ERR_NO_ENDPOINTS = 14,
    /// An address argument is not usable: an unknown `family` or
    /// `protocol` in a `pobox_addr`, or a client IP string that is not an IP.
    POBOX_ERR_BAD_ADDRESS = 15,
    /// A failure this version of the ABI has no number for yet (the core
    /// added a kind of error); the message says what it is.
    POBOX_ERR_OTHER = 16,
    /// An argument is outside what the function accepts (say, a DNS record
    /// type that does not exist); the message names it.
    POBOX_ERR_BAD_ARGUMENT = 17,
    /// The operating system refused a socket or thread: an address in use
    /// or not local, no permission, too many open files.
    POBOX_ERR_IO = 18,
    /// An input, or the mesh it would make, is over one of the configured
    /// limits (input bytes, nesting depth, values, objects, endpoints; see
    /// the `"limits"` options of `pobox_mesh_new`); nothing was applied and
    /// the message names the limit, the value found and how to raise it.
    POBOX_ERR_LIMIT = 19,
}

use pobox_result::*;

/// The most bytes `pobox_mesh_pick` writes, NUL included: an IPv6 address in
/// brackets with a port (`[ffff:...:ffff]:65535`). A buffer this size never
/// gets `POBOX_ERR_BUFFER_TOO_SMALL`.
pub const POBOX_ADDRSTRLEN: usize = 48;

/// A failure on its way to C: its code and the message `pobox_last_error` gives.
struct Failure {
    code: pobox_result,
    message: String,
}

impl Failure {
    fn new(code: pobox_result, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    fn null(argument: &str) -> Failure {
        Failure::new(
            POBOX_ERR_NULL_ARGUMENT,
            format!("{argument} must not be NULL"),
        )
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        let code = match e {
            Error::Syntax { .. } => POBOX_ERR_SYNTAX,
            Error::Invalid { .. } => POBOX_ERR_INVALID_OBJECT,
            Error::Conflict { .. } => POBOX_ERR_CONFLICT,
            Error::Config(_) => POBOX_ERR_CONFIG,
            Error::Limit { .. } => POBOX_ERR_LIMIT,
            _ => POBOX_ERR_OTHER,
        };
        Failure::new(code, e.to_string())
    }
}

impl From<PickError> for Failure {
    fn from(e: PickError) -> Failure {
        Failure::new(pick_code(&e), e.to_string())
    }
}

fn pick_code(e: &PickError) -> pobox_result {
    match e {
        PickError::BadDestination { .. } => POBOX_ERR_BAD_DESTINATION,
        PickError::NoService { .. } => POBOX_ERR_NO_SERVICE,
        PickError::NoPort { .. } => POBOX_ERR_NO_PORT,
        PickError::ExternalName { .. } => POBOX_ERR_EXTERNAL_NAME,
        PickError::NoEndpoints { .. } => POBOX_ERR_NO_ENDPOINTS,
        _ => POBOX_ERR_OTHER,
    }
}

// === the last error, per thread ===

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

fn set_last_error(message: String) {
    LAST_ERROR.with(|e| *e.borrow_mut() = message);
}

// === the panic boundary ===

/// What an exported body returns, and what C gets for it (and for a panic).
trait IntoFfi {
    type Out;
    fn into_ffi(self) -> Self::Out;
    fn on_panic() -> Self::Out;
}

impl IntoFfi for Result<(), Failure> {
    type Out = pobox_result;
    fn into_ffi(self) -> pobox_result {
        match self {
            Ok(()) => POBOX_OK,
            Err(f) => {
                set_last_error(f.message);
                f.code
            }
        }
    }
    fn on_panic() -> pobox_result {
        POBOX_ERR_PANIC
    }
}

/// For `pobox_last_error`, which must not replace the error it reports.
impl IntoFfi for pobox_result {
    type Out = pobox_result;
    fn into_ffi(self) -> pobox_result {
        self
    }
    fn on_panic() -> pobox_result {
        POBOX_ERR_PANIC
    }
}

impl IntoFfi for () {
    type Out = ();
    fn into_ffi(self) {}
    fn on_panic() {}
}

impl IntoFfi for *const c_char {
    type Out = *const c_char;
    fn into_ffi(self) -> *const c_char {
        self
    }
    fn on_panic() -> *const c_char {
        c"POBOX_ERR_PANIC".as_ptr()
    }
}

fn run_in_boundary<T: IntoFfi>(body: impl FnOnce() -> T) -> T::Out {
    // AssertUnwindSafe: a panic leaves no shared state half-changed. The
    // core's writers commit only after everything that can fail has run,
    // and recover a poisoned lock; this crate holds no state of its own
    // besides the last error, which is replaced whole.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value.into_ffi(),
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            set_last_error(format!(
                "panic inside pobox (a bug; please report it): {what}"
            ));
            T::on_panic()
        }
    }
}

/// Runs an exported function's body: catches any panic and turns the body's
/// value into what C receives. Every `extern "C"` function is one call of it.
macro_rules! ffi_panic_boundary {
    ($($body:tt)*) => {
        run_in_boundary(move || { $($body)* })
    };
}

// === ownership ===

/// An opaque C type and the Rust value behind it. Every opaque type here is
/// owned through a `Box`: `_new` hands C the box, `_free` takes it back.
trait Castable {
    type RustType;
}

fn to_boxed_ptr<C: Castable>(value: C::RustType) -> *mut C {
    Box::into_raw(Box::new(value)).cast()
}

/// # Safety
/// `ptr` is NULL or came from [`to_boxed_ptr`] for the same `C` and was not freed.
unsafe fn try_ref<'a, C: Castable>(ptr: *const C, name: &str) -> Result<&'a C::RustType, Failure> {
    // SAFETY: the caller promises ptr is NULL or a live box of C::RustType.
    unsafe { ptr.cast::<C::RustType>().as_ref() }.ok_or_else(|| Failure::null(name))
}

/// # Safety
/// `ptr` is NULL or came from [`to_boxed_ptr`] for the same `C`, and is not used again.
unsafe fn free_box<C: Castable>(ptr: *mut C) {
    if !ptr.is_null() {
        // SAFETY: the caller promises ptr is a live box of C::RustType, given up here.
        drop(unsafe { Box::from_raw(ptr.cast::<C::RustType>()) });
    }
}

/// A mesh: the Services and EndpointSlices applied so far, and the
/// snapshot built from them for this node. Create it with `pobox_mesh_new`,
/// free it with `pobox_mesh_free`.
///
/// Thread safety: every function taking a `pobox_mesh` may be called from
/// many threads at once on the same mesh (picks never block; applies and
/// deletes are serialized inside, all or nothing), except `pobox_mesh_free`,
/// which must be the last call on it.
pub struct pobox_mesh {
    _private: [u8; 0],
}

impl Castable for pobox_mesh {
    type RustType = Mesh;
}

/// A destination parsed once, to pick from many times without parsing:
/// a Service address or a Service name with its port. Create it with
/// `pobox_dest_new`, free it with `pobox_dest_free`. It holds no reference
/// to a mesh and may be used with any mesh.
///
/// Thread safety: immutable; usable from many threads at once.
pub struct pobox_dest {
    _private: [u8; 0],
}

impl Castable for pobox_dest {
    type RustType = Destination;
}

/// A running L4 forwarder (pobox's tokio runtime, on threads of its own):
/// listeners that forward each TCP connection to an endpoint the mesh picks.
/// Start it with `pobox_proxy_start`, stop and free it with
/// `pobox_proxy_stop` (or `pobox_proxy_free`).
///
/// Thread safety: `pobox_proxy_metrics` may run on many threads at once;
/// `pobox_proxy_stop` and `pobox_proxy_free` must be the last call on it.
pub struct pobox_proxy {
    _private: [u8; 0],
}

impl Castable for pobox_proxy {
    type RustType = StandaloneProxy;
}

// === argument conversion ===

/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string.
unsafe fn c_str<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: not NULL, and the caller promises a NUL-terminated string.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    bytes.to_str().map_err(|e| {
        Failure::new(
            POBOX_ERR_INVALID_UTF8,
            format!("{name} is not valid UTF-8 (at byte {})", e.valid_up_to()),
        )
    })
}

/// # Safety
/// `ptr` is NULL or points to `len` readable elements.
unsafe fn c_slice<'a, T>(ptr: *const T, len: usize, name: &str) -> Result<&'a [T], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: not NULL, and the caller promises `len` elements.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// # Safety
/// `ptr` is NULL or points to `len` writable elements.
unsafe fn c_slice_mut<'a, T>(ptr: *mut T, len: usize, name: &str) -> Result<&'a mut [T], Failure> {
    if len == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: not NULL, and the caller promises `len` writable elements.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
}

/// # Safety
/// `ptr` is NULL or points to a writable `T`.
unsafe fn out_ref<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: the caller promises ptr is NULL or writable.
    unsafe { ptr.as_mut() }.ok_or_else(|| Failure::null(name))
}

/// Writes `text` and a NUL into `out`, or reports the size needed.
fn write_text(text: &str, out: &mut [u8], written: &mut usize) -> Result<(), Failure> {
    let needed = text.len() + 1;
    if out.len() < needed {
        *written = needed;
        return Err(Failure::new(
            POBOX_ERR_BUFFER_TOO_SMALL,
            format!("the buffer holds {} bytes; {needed} are needed", out.len()),
        ));
    }
    out[..text.len()].copy_from_slice(text.as_bytes());
    out[text.len()] = 0;
    *written = needed;
    Ok(())
}

// === binary addresses ===

/// `pobox_addr.family`: no address (only for a client whose IP is unknown).
pub const POBOX_FAMILY_NONE: u8 = 0;
/// `pobox_addr.family`: IPv4, in `ip[0..4]`.
pub const POBOX_FAMILY_IPV4: u8 = 4;
/// `pobox_addr.family`: IPv6, in `ip[0..16]`.
pub const POBOX_FAMILY_IPV6: u8 = 6;

/// `pobox_addr.protocol`: any; TCP is tried, then UDP, then SCTP.
pub const POBOX_PROTO_ANY: u8 = 0;
/// `pobox_addr.protocol`: TCP (its IANA number).
pub const POBOX_PROTO_TCP: u8 = 6;
/// `pobox_addr.protocol`: UDP (its IANA number).
pub const POBOX_PROTO_UDP: u8 = 17;
/// `pobox_addr.protocol`: SCTP (its IANA number).
pub const POBOX_PROTO_SCTP: u8 = 132;

/// An IP address, port and protocol, in binary: what the fast path takes and
/// returns instead of strings. Plain data, owned by whoever allocated it.
///
/// `ip` is in network byte order (as in `struct in_addr` / `in6_addr`): an
/// IPv4 address in `ip[0..4]` (the rest zero), an IPv6 address in all 16
/// bytes. `port` is in host byte order.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct pobox_addr {
    /// `POBOX_FAMILY_IPV4`, `POBOX_FAMILY_IPV6`, or `POBOX_FAMILY_NONE`.
    pub family: u8,
    /// `POBOX_PROTO_ANY`, `POBOX_PROTO_TCP`, `POBOX_PROTO_UDP` or `POBOX_PROTO_SCTP`.
    /// Read in destinations; 0 in addresses pobox writes.
    pub protocol: u8,
    /// The port, in host byte order.
    pub port: u16,
    /// The address, in network byte order.
    pub ip: [u8; 16],
}

impl pobox_addr {
    fn ip(&self, name: &str) -> Result<Option<IpAddr>, Failure> {
        match self.family {
            POBOX_FAMILY_NONE => Ok(None),
            POBOX_FAMILY_IPV4 => Ok(Some(IpAddr::V4(Ipv4Addr::new(
                self.ip[0], self.ip[1], self.ip[2], self.ip[3],
            )))),
            POBOX_FAMILY_IPV6 => Ok(Some(IpAddr::V6(Ipv6Addr::from(self.ip)))),
            other => Err(Failure::new(
                POBOX_ERR_BAD_ADDRESS,
                format!("{name}.family is {other}: it must be POBOX_FAMILY_IPV4 (4) or POBOX_FAMILY_IPV6 (6)"),
            )),
        }
    }

    fn destination(&self) -> Result<Destination, Failure> {
        let protocol = match self.protocol {
            POBOX_PROTO_ANY => None,
            POBOX_PROTO_TCP => Some(Protocol::Tcp),
            POBOX_PROTO_UDP => Some(Protocol::Udp),
            POBOX_PROTO_SCTP => Some(Protocol::Sctp),
            other => {
                return Err(Failure::new(
                    POBOX_ERR_BAD_ADDRESS,
                    format!("destination.protocol is {other}: it must be 0, 6 (TCP), 17 (UDP) or 132 (SCTP)"),
                ))
            }
        };
        match self.ip("destination")? {
            Some(ip) => Ok(Destination::Addr {
                addr: SocketAddr::new(ip, self.port),
                protocol,
            }),
            None => Err(Failure::new(
                POBOX_ERR_BAD_ADDRESS,
                "destination.family is POBOX_FAMILY_NONE: a destination needs an address",
            )),
        }
    }

    fn from_socket_addr(addr: SocketAddr) -> pobox_addr {
        let mut out = pobox_addr {
            port: addr.port(),
            ..pobox_addr::default()
        };
        match addr.ip() {
            IpAddr::V4(v4) => {
                out.family = POBOX_FAMILY_IPV4;
                out.ip[..4].copy_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.family = POBOX_FAMILY_IPV6;
                out.ip = v6.octets();
            }
        }
        out
    }
}

/// A picked endpoint: where to connect, and the snapshot version it was
/// picked from. Plain data, owned by the caller.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct pobox_endpoint {
    /// The endpoint's address and port (`protocol` is 0).
    pub addr: pobox_addr,
    /// The version of the snapshot the pick was made from.
    pub version: u64,
}

/// `pobox_endpoint_info.conditions`: ready (or the Service publishes
/// not-ready addresses).
pub const POBOX_ENDPOINT_READY: u32 = 1;
/// `pobox_endpoint_info.conditions`: serving.
pub const POBOX_ENDPOINT_SERVING: u32 = 2;
/// `pobox_endpoint_info.conditions`: terminating.
pub const POBOX_ENDPOINT_TERMINATING: u32 = 4;
/// `pobox_endpoint_info.conditions`: on this mesh's node.
pub const POBOX_ENDPOINT_LOCAL: u32 = 8;

/// `pobox_mesh_endpoints` flag: every known endpoint of the port, eligible
/// or not (what `pobox endpoints --all` shows), instead of the eligible ones.
pub const POBOX_ENDPOINTS_ALL: u32 = 1;

/// One endpoint of a service port, as `pobox_mesh_endpoints` lists it.
/// Plain data, owned by the caller.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct pobox_endpoint_info {
    /// The endpoint's address and port (`protocol` is 0).
    pub addr: pobox_addr,
    /// `POBOX_ENDPOINT_READY`, `_SERVING`, `_TERMINATING`, `_LOCAL`, or-ed.
    pub conditions: u32,
}

fn client_of(client: Option<&pobox_addr>) -> Result<Client<'static>, Failure> {
    let mut c = Client::new();
    if let Some(ip) = client.map(|a| a.ip("client")).transpose()?.flatten() {
        c = c.ip(ip);
    }
    Ok(c)
}

#[inline]
fn pick_into(
    snapshot: &Snapshot,
    dest: &Destination,
    client: &Client<'_>,
    out: &mut pobox_endpoint,
) -> Result<(), Failure> {
    let endpoint = snapshot.pick(dest, client)?;
    *out = pobox_endpoint {
        addr: pobox_addr::from_socket_addr(endpoint.addr()),
        version: snapshot.version(),
    };
    Ok(())
}

fn endpoint_of(pick: pobox::Pick) -> pobox_endpoint {
    pobox_endpoint {
        addr: pobox_addr::from_socket_addr(pick.addr),
        version: pick.version,
    }
}

// === exported functions ===

/// Creates an empty mesh.
///
/// `options_json` may be NULL (no node, no zone, no node IPs,
/// `cluster.local`), or a JSON object with any of
/// `{"node":"n1","zone":"z1","nodeIPs":["10.0.0.5"],"clusterDomain":"cluster.local"}`;
/// unknown fields are refused (`POBOX_ERR_CONFIG`). `"limits"` bounds what
/// an apply may cost, each field optional (defaults shown):
/// `{"limits":{"maxInputBytes":67108864,"maxDepth":64,"maxValues":8000000,"maxObjects":100000,"maxEndpoints":500000,"affinityCapacity":262144}}`;
/// an input over a limit is refused with `POBOX_ERR_LIMIT`, a limit of 0
/// with `POBOX_ERR_CONFIG`.
///
/// Ownership: on `POBOX_OK`, `*mesh_out` is a new mesh the caller owns and
/// frees with `pobox_mesh_free`; otherwise `*mesh_out` is left unchanged.
/// `options_json` is only read during the call.
///
/// Thread safety: may be called from any thread.
#[no_mangle]
pub unsafe extern "C" fn pobox_mesh_new(
    options_json: *const c_char,
    mesh_out: *mut *mut pobox_mesh,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises mesh_out is NULL or writable.
        let mesh_out = unsafe { out_ref(mesh_out, "mesh_out") }?;
        let config = if options_json.is_null() {
            MeshConfig::new()
        } else {
            // SAFETY: not NULL; the caller promises a NUL-terminated string.
            MeshConfig::from_options_json(unsafe { c_str(options_json, "options_json") }?)?
        };
        let mesh = Mesh::new(config)?;
        *mesh_out = to_boxed_ptr::<pobox_mesh>(mesh);
        Ok(())
    }
}

/// Frees a mesh. NULL does nothing.
///
/// Ownership: takes back a mesh from `pobox_mesh_new`; the pointer must not
/// be used again. Endpoints and versions already returned stay valid (they
/// are copies).
///
/// Thread safety: must not run while another call uses the same mesh.
#[no_mangle]
pub unsafe extern "C" fn pobox_mesh_free(mesh: *mut pobox_mesh) {
    ffi_panic_boundary! {
        // SAFETY: the caller promises mesh is NULL or from pobox_mesh_new,
        // freed once, with no call using it concurrently.
        unsafe { free_box(mesh) }
    }
}

/// Applies Kubernetes objects: `doc_len` bytes of JSON or YAML at `doc`
/// (one object, a `List`, or multi-document YAML; `kubectl get -o json`
/// output as is). All or nothing: on any error the mesh keeps its previous
/// state and `pobox_last_error` names the object and field. Applying what is
/// already there changes nothing (the version stays).
///
/// `doc` may be NULL only when `doc_len` is 0.
///
/// Ownership: `doc` is only read during the call.
///
/// Thread safety: may run on many threads at once with any other call on the
/// same mesh except `pobox_mesh_free`; applies are serialized, and picks on
/// other threads see either the old or the new state, never a mix.
#[no_mangle]
pub unsafe extern "C" fn pobox_mesh_apply(
    mesh: *mut pobox_mesh,
    doc: *const u8,
    doc_len: usize,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises mesh is NULL or a live mesh.
        let mesh = unsafe { try_ref(mesh, "mesh") }?;
        // SAFETY: the caller promises doc points to doc_len readable bytes.
        let doc = unsafe { c_slice(doc, doc_len, "doc") }?;
        mesh.apply(doc)?;
        Ok(())
    }
}

/// Deletes one object: `kind` is `Service` or `EndpointSlice` (also `svc`,
/// `endpointslice`, any case), `ns` its namespace, `name` its name. Deleting
/// an object that is not there changes nothing and succeeds.
///
/// Ownership: the strings are only read during the call.
///
/// Thread safety: as `pobox_mesh_apply`.
#[no_mangle]
pub unsafe extern "C" fn pobox_mesh_delete(
    mesh: *mut pobox_mesh,
    kind: *const c_char,
    ns: *const c_char,
    name: *const c_char,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises mesh is NULL or a live mesh.
        let mesh = unsafe { try_ref(mesh, "mesh") }?;
        // SAFETY: the caller promises NUL-terminated strings (or NULL).
        let (kind, ns, name) = unsafe { (c_str(kind, "kind")?, c_str(ns, "ns")?, c_str(name, "name")?) };
        let kind = Kind::parse(kind).ok_or_else(|| {
            Failure::new(
                POBOX_ERR_UNKNOWN_KIND,
                format!("kind {kind:?} is not Service or EndpointSlice"),
            )
        })?;
        mesh.delete(kind, ns, name)?;
        Ok(())
    }
}

/// Picks an endpoint for a destination given as text.
///
/// `destination` is what the `pobox` command takes: `IP:PORT`,
/// `[IPv6]:PORT`, or a Service name (`web`, `web.default`,
/// `web.default.svc.cluster.local`) with `:PORT` or `:PORT-NAME`, optionally
/// followed by `/TCP`, `/UDP` or `/SCTP`. `client_ip` may be NULL (unknown);
/// otherwise an IP address as text.
///
/// On `POBOX_OK`, writes `IP:PORT` (`[IPv6]:PORT`) and a NUL to `out`, and
/// the bytes written, NUL included, to `*written`. When the text does not
/// fit, returns `POBOX_ERR_BUFFER_TOO_SMALL`, writes nothing to `out`, and
/// sets `*written` to the size needed; that pick is spent (round robin moved
/// on). `POBOX_ADDRSTRLEN` bytes always fit. `out` may be NULL only when
/// `out_len` is 0.
///
/// Parsing costs more than picking: to pick many times, parse once with
/// `pobox_dest_new`, or use the binary `pobox_mesh_pick_addr`.
///
/// Ownership: the strings are only read during the call; `out` and
/// `written` are the caller's.
///
/// Thread safety: may run on many threads at once, with applies too; never
/// blocks. Round robin keeps one cursor per thread.
#[no_mangle]
pub unsafe extern "C" fn pobox_mesh_pick(
    mesh: *const pobox_mesh,
    destination: *const c_char,
    client_ip: *const c_char,
    out: *mut c_char,
    out_len: usize,
    written: *mut usize,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises mesh is NULL or a live mesh.
        let mesh = unsafe { try_ref(mesh, "mesh") }?;
        // SAFETY: the caller promises a NUL-terminated string (or NULL).
        let destination = unsafe { c_str(destination, "destination") }?;
        // SAFETY: the caller promises out has out_len writable bytes.
        let out = unsafe { c_slice_mut(out.cast::<u8>(), out_len, "out") }?;
        // SAFETY: the caller promises written is NULL or writable.
        let written = unsafe { out_ref(written, "written") }?;
        let mut client = Client::new();
        if !client_ip.is_null() {
            // SAFETY: not NULL; the caller promises a NUL-terminated string.
            let text = unsafe { c_str(client_ip, "client_ip") }?;
            let ip: IpAddr = text.parse().map_err(|_| {
                Failure::new(POBOX_ERR_BAD_ADDRESS, format!("client_ip {text:?} is not an IP address"))
            })?;
            client = client.ip(ip);
        }
        let dest = Destination::parse(destination)?;
        let pick = mesh.pick(&dest, &client)?;
        write_text(&pick.addr.to_string(), out, written)
    }
}

/// The fast path: picks an endpoint for a destination address given in
/// binary, with no parsing and no allocation.
///
/// `destination` is a Service address (cluster IP, node IP with a node port,
/// load-balancer or external IP) with `protocol` 0 (TCP, then UDP, then
/// SCTP) or one of `POBOX_PROTO_*`. `client` may be NULL, or have family
/// `POBOX_FAMILY_NONE`, when the client's IP is unknown.
///
/// On `POBOX_OK`, writes the endpoint and the snapshot version to `*out`;
/// otherwise leaves `*out` unchanged.
///
/// Ownership: all pointers are the caller's and only used during the call.
///
/// Thread safety: as `pobox_mesh_pick`.
#[no_mangle]
pub unsafe extern "C" fn pobox_mesh_pick_addr(
    mesh: *const pobox_mesh,
    destination: *const pobox_addr,
    client: *const pobox_addr,
    out: *mut pobox_endpoint,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises mesh is NULL or a live mesh.
        let mesh = unsafe { try_ref(mesh, "mesh") }?;
        // SAFETY: the caller promises destination is NULL or readable.
        let destination = unsafe { destination.as_ref() }.ok_or_else(|| Failure::null("destination"))?;
        // SAFETY: the caller promises client is NULL or readable.
        let client = client_of(unsafe { client.as_ref() })?;
        // SAFETY: the caller promises out is NULL or writable.
        let out = unsafe { out_ref(out, "out") }?;
        let dest = destination.destination()?;
        *out = endpoint_of(mesh.pick(&dest, &client)?);
        Ok(())
    }
}

/// Picks endpoints for `count` destination addresses at once, all from one
/// snapshot: the cheapest way to pick many times per call from a language
/// whose foreign calls are costly (Go).
///
/// For each `i < count`, `results_out[i]` gets that pick's result and, when
/// it is `POBOX_OK`, `endpoints_out[i]` the endpoint (otherwise
/// `endpoints_out[i]` is left unchanged). `client` applies to every pick and
/// may be NULL. The function returns `POBOX_OK` when its arguments are
/// usable, whatever the single picks answered; `pobox_last_error` then holds
/// the message of the last pick that failed, if any. The arrays may be NULL
/// only when `count` is 0.
///
/// Ownership: all arrays are the caller's and only used during the call.
///
/// Thread safety: as `pobox_mesh_pick`.
#[no_mangle]
pub unsafe extern "C" fn pobox_mesh_pick_batch(
    mesh: *const pobox_mesh,
    destinations: *const pobox_addr,
    count: usize,
    client: *const pobox_addr,
    endpoints_out: *mut pobox_endpoint,
    results_out: *mut pobox_result,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises mesh is NULL or a live mesh.
        let mesh = unsafe { try_ref(mesh, "mesh") }?;
        // SAFETY: the caller promises count readable destinations.
        let destinations = unsafe { c_slice(destinations, count, "destinations") }?;
        // SAFETY: the caller promises client is NULL or readable.
        let client = client_of(unsafe { client.as_ref() })?;
        // SAFETY: the caller promises count writable endpoints.
        let endpoints = unsafe { c_slice_mut(endpoints_out, count, "endpoints_out") }?;
        // SAFETY: the caller promises count writable results.
        let results = unsafe { c_slice_mut(results_out, count, "results_out") }?;
        let snapshot = mesh.snapshot();
        for ((dest, endpoint), result) in destinations.iter().zip(endpoints).zip(results) {
            *result = match dest.destination().and_then(|d| pick_into(&snapshot, &d, &client, endpoint)) {
                Ok(()) => POBOX_OK,
                Err(f) => {
                    set_last_error(f.message);
                    f.code
                }
            };
        }
        Ok(())
    }
}

/// Parses a destination once (the text forms of `pobox_mesh_pick`), for
/// `pobox_mesh_pick_dest`. Names stay names: which Service and endpoints
/// they reach is decided at each pick, from the mesh's current state.
///
/// Ownership: on `POBOX_OK`, `*dest_out` is a new destination the caller
/// owns and frees with `pobox_dest_free`; otherwise it is left unchanged.
///
/// Thread safety: may be called from any thread.
#[no_mangle]
pub unsafe extern "C" fn pobox_dest_new(
    destination: *const c_char,
    dest_out: *mut *mut pobox_dest,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises a NUL-terminated string (or NULL).
        let text = unsafe { c_str(destination, "destination") }?;
        // SAFETY: the caller promises dest_out is NULL or writable.
        let dest_out = unsafe { out_ref(dest_out, "dest_out") }?;
        let dest = Destination::parse(text)?;
        *dest_out = to_boxed_ptr::<pobox_dest>(dest);
        Ok(())
    }
}

/// Frees a destination. NULL does nothing.
///
/// Ownership: takes back a destination from `pobox_dest_new`; the pointer
/// must not be used again.
///
/// Thread safety: must not run while another call uses the same destination.
#[no_mangle]
pub unsafe extern "C" fn pobox_dest_free(dest: *mut pobox_dest) {
    ffi_panic_boundary! {
        // SAFETY: the caller promises dest is NULL or from pobox_dest_new, freed once.
        unsafe { free_box(dest) }
    }
}

/// Picks an endpoint for a destination parsed by `pobox_dest_new`.
/// `client` and `out` as in `pobox_mesh_pick_addr`.
///
/// Ownership: all pointers are the caller's and only used during the call.
///
/// Thread safety: as `pobox_mesh_pick`.
#[no_mangle]
pub unsafe extern "C" fn pobox_mesh_pick_dest(
    mesh: *const pobox_mesh,
    dest: *const pobox_dest,
    client: *const pobox_addr,
    out: *mut pobox_endpoint,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises mesh is NULL or a live mesh.
        let mesh = unsafe { try_ref(mesh, "mesh") }?;
        // SAFETY: the caller promises dest is NULL or a live destination.
        let dest = unsafe { try_ref(dest, "dest") }?;
        // SAFETY: the caller promises client is NULL or readable.
        let client = client_of(unsafe { client.as_ref() })?;
        // SAFETY: the caller promises out is NULL or writable.
        let out = unsafe { out_ref(out, "out") }?;
        *out = endpoint_of(mesh.pick(dest, &client)?);
        Ok(())
    }
}

/// A destination bound to a mesh, resolved once per snapshot version on each
/// thread that picks through it: the cheapest way to pick again and again
/// for one destination (a connection pool, an upstream). Create it with
/// `pobox_route_new`, free it with `pobox_route_free`. A route to a Service
/// that does not exist yet is fine: its picks fail with
/// `POBOX_ERR_NO_SERVICE` until the Service is applied.
///
/// Thread safety: usable from many threads at once; each thread keeps its
/// own resolution. It holds its mesh's state alive by itself, so it keeps
/// working after `pobox_mesh_free` (and sees no more updates then).
pub struct pobox_route {
    _private: [u8; 0],
}

impl Castable for pobox_route {
    type RustType = pobox::Route;
}

/// Creates a route to `dest` (from `pobox_dest_new`) through `mesh`. A
/// Service name is resolved in `namespace`, or in `default` when
/// `namespace` is NULL.
///
/// Ownership: on `POBOX_OK`, `*route_out` is a new route the caller owns
/// and frees with `pobox_route_free`; otherwise it is left unchanged.
/// `dest` and `namespace` are only read during the call.
///
/// Thread safety: may be called from any thread.
#[no_mangle]
pub unsafe extern "C" fn pobox_route_new(
    mesh: *const pobox_mesh,
    dest: *const pobox_dest,
    namespace: *const c_char,
    route_out: *mut *mut pobox_route,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises mesh is NULL or a live mesh.
        let mesh = unsafe { try_ref(mesh, "mesh") }?;
        // SAFETY: the caller promises dest is NULL or a live destination.
        let dest = unsafe { try_ref(dest, "dest") }?;
        let namespace = if namespace.is_null() {
            None
        } else {
            // SAFETY: not NULL; the caller promises a NUL-terminated string.
            Some(unsafe { c_str(namespace, "namespace") }?)
        };
        // SAFETY: the caller promises route_out is NULL or writable.
        let route_out = unsafe { out_ref(route_out, "route_out") }?;
        *route_out = to_boxed_ptr::<pobox_route>(mesh.route(dest, namespace));
        Ok(())
    }
}

/// Frees a route. NULL does nothing.
///
/// Ownership: takes back a route from `pobox_route_new`; the pointer must
/// not be used again.
///
/// Thread safety: must not run while another call uses the same route.
#[no_mangle]
pub unsafe extern "C" fn pobox_route_free(route: *mut pobox_route) {
    ffi_panic_boundary! {
        // SAFETY: the caller promises route is NULL or from pobox_route_new, freed once.
        unsafe { free_box(route) }
    }
}

/// Picks an endpoint through a route, as `pobox_mesh_pick_key` picks for
/// the route's destination. `client` may be NULL; `key` may be NULL when
/// `key_len` is 0.
///
/// On `POBOX_OK`, writes the endpoint to `*out`; otherwise leaves it unchanged.
///
/// Ownership: all pointers are the caller's and only used during the call.
///
/// Thread safety: may run on many threads at once, with applies too.
#[no_mangle]
pub unsafe extern "C" fn pobox_route_pick(
    route: *const pobox_route,
    client: *const pobox_addr,
    key: *const u8,
    key_len: usize,
    out: *mut pobox_endpoint,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises route is NULL or a live route.
        let route = unsafe { try_ref(route, "route") }?;
        // SAFETY: the caller promises out is NULL or writable.
        let out = unsafe { out_ref(out, "out") }?;
        // SAFETY: the caller promises client and key are readable as documented.
        let client = unsafe { client_with_key(client, key, key_len) }?;
        // The endpoint is written where the pick is made; the reason is
        // built only for a failed pick, off the fast path.
        if !route.try_pick_with(&client, |pick| *out = endpoint_of(pick)) {
            *out = endpoint_of(route.pick(&client)?);
        }
        Ok(())
    }
}

/// Makes `count` picks through a route at once, one per client: the
/// cheapest way to pick many times per call from a language whose foreign
/// calls are costly (Go). `clients` is NULL (every client unknown) or
/// `count` addresses, each of which may have family `POBOX_FAMILY_NONE`.
///
/// For each `i < count`, `results_out[i]` gets that pick's result and, when
/// it is `POBOX_OK`, `endpoints_out[i]` the endpoint (otherwise
/// `endpoints_out[i]` is left unchanged). The function returns `POBOX_OK`
/// when its arguments are usable, whatever the single picks answered;
/// `pobox_last_error` then holds the message of the last pick that failed,
/// if any. The output arrays may be NULL only when `count` is 0.
///
/// Ownership: all arrays are the caller's and only used during the call.
///
/// Thread safety: as `pobox_route_pick`.
#[no_mangle]
pub unsafe extern "C" fn pobox_route_pick_batch(
    route: *const pobox_route,
    clients: *const pobox_addr,
    count: usize,
    endpoints_out: *mut pobox_endpoint,
    results_out: *mut pobox_result,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises route is NULL or a live route.
        let route = unsafe { try_ref(route, "route") }?;
        let clients = if clients.is_null() {
            None
        } else {
            // SAFETY: not NULL; the caller promises count readable addresses.
            Some(unsafe { c_slice(clients, count, "clients") }?)
        };
        // SAFETY: the caller promises count writable endpoints.
        let endpoints = unsafe { c_slice_mut(endpoints_out, count, "endpoints_out") }?;
        // SAFETY: the caller promises count writable results.
        let results = unsafe { c_slice_mut(results_out, count, "results_out") }?;
        if let Some(clients) = clients {
            // Check every client first: a bad one fails the call, nothing written.
            for c in clients {
                c.ip("client")?;
            }
        }
        // One pass, one snapshot version; a failed pick's reason is asked
        // for afterwards (off the fast path), as pobox_route_pick does.
        let client_at = |i: usize| match clients {
            Some(clients) => client_of(Some(&clients[i])).unwrap_or_default(),
            None => Client::new(),
        };
        let mut failed = Vec::new();
        route.try_pick_each(count, client_at, |i, pick| match pick {
            Some(pick) => {
                endpoints[i] = endpoint_of(pick);
                results[i] = POBOX_OK;
            }
            None => failed.push(i),
        });
        for i in failed {
            results[i] = match route.pick(&client_at(i)) {
                Ok(pick) => {
                    endpoints[i] = endpoint_of(pick);
                    POBOX_OK
                }
                Err(e) => {
                    let f = Failure::from(e);
                    set_last_error(f.message);
                    f.code
                }
            };
        }
        Ok(())
    }
}

/// Lists the endpoints of the service port a destination (text, as in
/// `pobox_mesh_pick`) resolves to: the eligible ones in address order, or
/// with `POBOX_ENDPOINTS_ALL` in `flags` every known one. An empty eligible
/// set is a success with `*written` = 0.
///
/// On `POBOX_OK`, writes the entries to `out[0..*written]`. When they do not
/// fit in `out_len` entries, returns `POBOX_ERR_BUFFER_TOO_SMALL`, writes
/// nothing to `out`, and sets `*written` to the number of entries needed
/// (call with `out` NULL and `out_len` 0 to ask). `out` may be NULL only when
/// `out_len` is 0. Unknown flag bits are ignored.
///
/// Ownership: all pointers are the caller's and only used during the call.
///
/// Thread safety: may run on many threads at once, with applies too.
#[no_mangle]
pub unsafe extern "C" fn pobox_mesh_endpoints(
    mesh: *const pobox_mesh,
    destination: *const c_char,
    flags: u32,
    out: *mut pobox_endpoint_info,
    out_len: usize,
    written: *mut usize,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises mesh is NULL or a live mesh.
        let mesh = unsafe { try_ref(mesh, "mesh") }?;
        // SAFETY: the caller promises a NUL-terminated string (or NULL).
        let destination = unsafe { c_str(destination, "destination") }?;
        // SAFETY: the caller promises out has out_len writable entries.
        let out = unsafe { c_slice_mut(out, out_len, "out") }?;
        // SAFETY: the caller promises written is NULL or writable.
        let written = unsafe { out_ref(written, "written") }?;
        let dest = Destination::parse(destination)?;
        let snapshot = mesh.snapshot();
        let resolved = snapshot.resolve(&dest, &Client::new())?;
        let list: Vec<&pobox::Endpoint> = if flags & POBOX_ENDPOINTS_ALL != 0 {
            resolved.port.endpoints().iter().collect()
        } else {
            resolved.eligible().collect()
        };
        if list.len() > out.len() {
            *written = list.len();
            return Err(Failure::new(
                POBOX_ERR_BUFFER_TOO_SMALL,
                format!("the buffer holds {} entries; {} are needed", out.len(), list.len()),
            ));
        }
        for (slot, endpoint) in out.iter_mut().zip(&list) {
            let mut conditions = 0;
            for (set, bit) in [
                (endpoint.is_ready(), POBOX_ENDPOINT_READY),
                (endpoint.is_serving(), POBOX_ENDPOINT_SERVING),
                (endpoint.is_terminating(), POBOX_ENDPOINT_TERMINATING),
                (endpoint.is_local(), POBOX_ENDPOINT_LOCAL),
            ] {
                if set {
                    conditions |= bit;
                }
            }
            *slot = pobox_endpoint_info {
                addr: pobox_addr::from_socket_addr(endpoint.addr()),
                conditions,
            };
        }
        *written = list.len();
        Ok(())
    }
}

/// The version of the mesh's current snapshot: 0 when nothing was applied,
/// one more for every apply or delete that changed something. This is the
/// polling hook: a cache keyed by what the mesh answered (pooled
/// connections, resolved lists) is stale exactly when the version moved.
/// Reading it is one atomic load.
///
/// On `POBOX_OK`, writes the version to `*version_out`.
///
/// Thread safety: may run on many threads at once, with applies too.
#[no_mangle]
pub unsafe extern "C" fn pobox_mesh_version(
    mesh: *const pobox_mesh,
    version_out: *mut u64,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises mesh is NULL or a live mesh.
        let mesh = unsafe { try_ref(mesh, "mesh") }?;
        // SAFETY: the caller promises version_out is NULL or writable.
        let version_out = unsafe { out_ref(version_out, "version_out") }?;
        *version_out = mesh.version();
        Ok(())
    }
}

// === requests, hash keys, passive health, DNS ===

/// A request started by `pobox_mesh_begin`: its endpoint counts it in
/// flight (for `least-request`) until `pobox_request_finish`, which also
/// reports how it went to passive health and frees it.
///
/// Thread safety: may be finished on any thread, once.
pub struct pobox_request {
    _private: [u8; 0],
}

impl Castable for pobox_request {
    type RustType = pobox::Request;
}

/// The client of a pick: its address (NULL or `POBOX_FAMILY_NONE`: unknown)
/// and a hash key (`key_len` bytes; NULL when `key_len` is 0).
///
/// # Safety
/// `client` is NULL or readable; `key` points to `key_len` readable bytes.
#[inline(always)]
unsafe fn client_with_key<'a>(
    client: *const pobox_addr,
    key: *const u8,
    key_len: usize,
) -> Result<Client<'a>, Failure> {
    if client.is_null() && key_len == 0 {
        return Ok(Client::new()); // the common case, checked first
    }
    // SAFETY: the caller promises client is NULL or readable.
    let mut c = client_of(unsafe { client.as_ref() })?;
    // SAFETY: the caller promises key_len readable bytes.
    let key = unsafe { c_slice(key, key_len, "key") }?;
    if !key.is_empty() {
        c = c.key(key);
    }
    Ok(c)
}

/// Picks an endpoint for a parsed destination with a hash key: the
/// `maglev` and `ring-hash` policies hash `key` (an HTTP header's or a
/// cookie's value, a user id) instead of the client's IP. `key` may be
/// NULL when `key_len` is 0 (then the client's IP is hashed, as by
/// `pobox_mesh_pick_addr`). Other policies ignore the key.
///
/// On `POBOX_OK`, writes the endpoint to `*out`; otherwise leaves it unchanged.
///
/// Ownership: all pointers are the caller's and only used during the call.
///
/// Thread safety: as `pobox_mesh_pick`.
#[no_mangle]
pub unsafe extern "C" fn pobox_mesh_pick_key(
    mesh: *const pobox_mesh,
    dest: *const pobox_dest,
    client: *const pobox_addr,
    key: *const u8,
    key_len: usize,
    out: *mut pobox_endpoint,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises mesh is NULL or a live mesh.
        let mesh = unsafe { try_ref(mesh, "mesh") }?;
        // SAFETY: the caller promises dest is NULL or a live destination.
        let dest = unsafe { try_ref(dest, "dest") }?;
        // SAFETY: the caller promises client and key are readable as documented.
        let client = unsafe { client_with_key(client, key, key_len) }?;
        // SAFETY: the caller promises out is NULL or writable.
        let out = unsafe { out_ref(out, "out") }?;
        *out = endpoint_of(mesh.pick(dest, &client)?);
        Ok(())
    }
}

/// Picks an endpoint as `pobox_mesh_pick_key` does and starts a request to
/// it: a `least-request` Service counts it in flight until
/// `pobox_request_finish`. Call this when the outcome matters (least-request
/// balancing, outlier detection); a plain pick is cheaper otherwise.
///
/// On `POBOX_OK`, writes the endpoint to `*endpoint_out` and a new request
/// to `*request_out`; otherwise leaves both unchanged.
///
/// Ownership: the caller owns the request and must end it with
/// `pobox_request_finish` exactly once. The request keeps what it needs of
/// the mesh's state alive by itself, so it may outlive later applies (and
/// even the mesh).
///
/// Thread safety: as `pobox_mesh_pick`.
#[no_mangle]
pub unsafe extern "C" fn pobox_mesh_begin(
    mesh: *const pobox_mesh,
    dest: *const pobox_dest,
    client: *const pobox_addr,
    key: *const u8,
    key_len: usize,
    endpoint_out: *mut pobox_endpoint,
    request_out: *mut *mut pobox_request,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises mesh is NULL or a live mesh.
        let mesh = unsafe { try_ref(mesh, "mesh") }?;
        // SAFETY: the caller promises dest is NULL or a live destination.
        let dest = unsafe { try_ref(dest, "dest") }?;
        // SAFETY: the caller promises client and key are readable as documented.
        let client = unsafe { client_with_key(client, key, key_len) }?;
        // SAFETY: the caller promises endpoint_out is NULL or writable.
        let endpoint_out = unsafe { out_ref(endpoint_out, "endpoint_out") }?;
        // SAFETY: the caller promises request_out is NULL or writable.
        let request_out = unsafe { out_ref(request_out, "request_out") }?;
        let request = mesh.begin(dest, &client)?;
        *endpoint_out = pobox_endpoint {
            addr: pobox_addr::from_socket_addr(request.addr()),
            version: request.version(),
        };
        *request_out = to_boxed_ptr::<pobox_request>(request);
        Ok(())
    }
}

/// Ends a request from `pobox_mesh_begin` and frees it: `failed` false when
/// it worked, true when the connection was refused, timed out or reset, or
/// the answer was a 5xx (what outlier detection counts). NULL is a no-op.
///
/// Ownership: takes the request back; it must not be used again.
///
/// Thread safety: any thread, once per request.
#[no_mangle]
pub unsafe extern "C" fn pobox_request_finish(request: *mut pobox_request, failed: bool) {
    ffi_panic_boundary! {
        if !request.is_null() {
            // SAFETY: the caller promises a live request from pobox_mesh_begin, given up here.
            let request = unsafe { Box::from_raw(request.cast::<pobox::Request>()) };
            request.finish(if failed { Outcome::Failure } else { Outcome::Success });
        }
    }
}

/// Reports how a connection to `endpoint` of `dest` went, for passive
/// health (outlier detection), when the request was not started with
/// `pobox_mesh_begin` (say, a pooled connection's later failure).
/// A Service without outlier detection ignores it.
///
/// Ownership: all pointers are the caller's and only used during the call.
///
/// Thread safety: as `pobox_mesh_pick`.
#[no_mangle]
pub unsafe extern "C" fn pobox_mesh_report(
    mesh: *const pobox_mesh,
    dest: *const pobox_dest,
    endpoint: *const pobox_addr,
    failed: bool,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises mesh is NULL or a live mesh.
        let mesh = unsafe { try_ref(mesh, "mesh") }?;
        // SAFETY: the caller promises dest is NULL or a live destination.
        let dest = unsafe { try_ref(dest, "dest") }?;
        // SAFETY: the caller promises endpoint is NULL or readable.
        let endpoint = unsafe { endpoint.as_ref() }.ok_or_else(|| Failure::null("endpoint"))?;
        let ip = endpoint.ip("endpoint")?.ok_or_else(|| {
            Failure::new(POBOX_ERR_BAD_ADDRESS, "endpoint.family is POBOX_FAMILY_NONE: an endpoint needs an address")
        })?;
        let outcome = if failed { Outcome::Failure } else { Outcome::Success };
        mesh.report(dest, SocketAddr::new(ip, endpoint.port), outcome)?;
        Ok(())
    }
}

/// `pobox_mesh_lookup`'s `*rcode_out`: the name exists.
pub const POBOX_DNS_NOERROR: u16 = 0;
/// `pobox_mesh_lookup`'s `*rcode_out`: the name does not exist.
pub const POBOX_DNS_NXDOMAIN: u16 = 3;
/// `pobox_mesh_lookup`'s `*rcode_out`: the name is outside the cluster zone.
pub const POBOX_DNS_REFUSED: u16 = 5;

/// Answers a DNS question from the mesh's current snapshot, as the cluster
/// DNS would (the Kubernetes DNS specification; see `pobox dns`).
///
/// `type` is a record type (`A`, `AAAA`, `SRV`, `PTR`, `CNAME`, `TXT` or
/// `TYPE<n>`, any case); NULL means `A`. `namespace_` NULL means `name` is
/// looked up as given; otherwise `name` is expanded with the search path of
/// a pod in that namespace (`web` finds `web.<namespace>.svc.<zone>`).
///
/// On `POBOX_OK`, writes the answer records in zone-file form, one per line
/// as `pobox dns` prints them (empty when there are none), with a NUL, into
/// `out`, their size with the NUL into `*written`, and the DNS response
/// code (`POBOX_DNS_*`) into `*rcode_out`. Buffer rules as
/// `pobox_mesh_pick`: on `POBOX_ERR_BUFFER_TOO_SMALL`, `*written` is the
/// size needed and nothing else is written.
///
/// Ownership: all pointers are the caller's and only used during the call.
///
/// Thread safety: as `pobox_mesh_pick`.
#[no_mangle]
pub unsafe extern "C" fn pobox_mesh_lookup(
    mesh: *const pobox_mesh,
    name: *const c_char,
    r#type: *const c_char,
    namespace_: *const c_char,
    out: *mut c_char,
    out_len: usize,
    written: *mut usize,
    rcode_out: *mut u16,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises mesh is NULL or a live mesh.
        let mesh = unsafe { try_ref(mesh, "mesh") }?;
        // SAFETY: the caller promises a NUL-terminated string (or NULL).
        let name = unsafe { c_str(name, "name") }?;
        let qtype = if r#type.is_null() {
            RecordType::A
        } else {
            // SAFETY: not NULL; the caller promises a NUL-terminated string.
            let text = unsafe { c_str(r#type, "type") }?;
            RecordType::parse(text).ok_or_else(|| {
                Failure::new(POBOX_ERR_BAD_ARGUMENT, format!("type {text:?} is not a DNS record type"))
            })?
        };
        let namespace = if namespace_.is_null() {
            None
        } else {
            // SAFETY: not NULL; the caller promises a NUL-terminated string.
            Some(unsafe { c_str(namespace_, "namespace_") }?)
        };
        // SAFETY: the caller promises out has out_len writable bytes.
        let out = unsafe { c_slice_mut(out.cast::<u8>(), out_len, "out") }?;
        // SAFETY: the caller promises written is NULL or writable.
        let written = unsafe { out_ref(written, "written") }?;
        // SAFETY: the caller promises rcode_out is NULL or writable.
        let rcode_out = unsafe { out_ref(rcode_out, "rcode_out") }?;
        let snapshot = mesh.snapshot();
        let answer = match namespace {
            Some(ns) => snapshot.lookup_from(ns, name, qtype),
            None => snapshot.lookup(name, qtype),
        };
        let text: String = answer.answers.iter().map(|r| format!("{r}\n")).collect();
        write_text(&text, out, written)?;
        *rcode_out = match answer.rcode {
            Rcode::NoError => POBOX_DNS_NOERROR,
            Rcode::NxDomain => POBOX_DNS_NXDOMAIN,
            Rcode::Refused => POBOX_DNS_REFUSED,
        };
        Ok(())
    }
}

// === the forwarder ===

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ProxyOptions {
    listen: Vec<String>,
    #[serde(default)]
    threads: Option<usize>,
    #[serde(default)]
    connect_timeout_ms: Option<u64>,
    #[serde(default)]
    connect_attempts: Option<u32>,
    #[serde(default)]
    drain_timeout_ms: Option<u64>,
    #[serde(default)]
    max_connections: Option<usize>,
    #[serde(default)]
    buffer_size: Option<usize>,
}

fn proxy_from_json(json: &str) -> Result<(Vec<Listen>, ProxyConfig, usize), Failure> {
    let bad = |message: String| Failure::new(POBOX_ERR_CONFIG, message);
    let options: ProxyOptions =
        serde_json::from_str(json).map_err(|e| bad(format!("proxy options: {e}")))?;
    if options.listen.is_empty() {
        return Err(bad(
            "proxy options: listen: give at least one \"ADDR=DEST\"".to_owned(),
        ));
    }
    let listens = options
        .listen
        .iter()
        .map(|l| Listen::parse(l).map_err(|e| bad(format!("proxy options: listen: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = ProxyConfig::new();
    if let Some(ms) = options.connect_timeout_ms {
        config = config.connect_timeout(std::time::Duration::from_millis(ms));
    }
    if let Some(n) = options.connect_attempts {
        config = config.connect_attempts(n);
    }
    if let Some(ms) = options.drain_timeout_ms {
        config = config.drain_timeout(Some(std::time::Duration::from_millis(ms)));
    }
    if let Some(n) = options.max_connections {
        config = config.max_connections(n);
    }
    if let Some(n) = options.buffer_size {
        config = config.buffer_size(n);
    }
    Ok((listens, config, options.threads.unwrap_or(1)))
}

/// Starts an L4 forwarder on threads of its own: each TCP connection
/// accepted on a listener goes to an endpoint `mesh` picks for its
/// destination (with the client's IP for affinity and hashing), failing
/// over to another endpoint when a connect is refused or times out. It
/// follows the mesh: applies and deletes take effect for new connections,
/// and connections to endpoints that leave (terminating, removed) drain.
///
/// `options_json` is a JSON object:
/// `{"listen":["127.0.0.1:15001=web.default:80"]}` with optional
/// `"threads"` (default 1), `"connectTimeoutMs"` (2000),
/// `"connectAttempts"` (3), `"drainTimeoutMs"` (none: draining
/// connections run until they close), `"maxConnections"` per listener
/// (10000), `"bufferSize"` (16384). A listener is `ADDR=DEST`, or `ADDR`
/// alone for a Service address this host owns; port 0 takes a free port
/// (read it from `pobox_proxy_metrics`). Bad options give
/// `POBOX_ERR_CONFIG`; an address that cannot be bound `POBOX_ERR_IO`, and
/// then nothing runs.
///
/// Ownership: on `POBOX_OK`, `*proxy_out` is a new proxy the caller owns
/// and stops with `pobox_proxy_stop`; otherwise it is left unchanged. The
/// proxy holds its own reference to the mesh's state: the mesh may be
/// freed first, and applies to it still reach the proxy until then.
///
/// Thread safety: may be called from any thread, except from inside a
/// tokio runtime.
#[no_mangle]
pub unsafe extern "C" fn pobox_proxy_start(
    mesh: *const pobox_mesh,
    options_json: *const c_char,
    proxy_out: *mut *mut pobox_proxy,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises mesh is NULL or a live mesh.
        let mesh = unsafe { try_ref(mesh, "mesh") }?;
        // SAFETY: the caller promises a NUL-terminated string (or NULL).
        let options = unsafe { c_str(options_json, "options_json") }?;
        // SAFETY: the caller promises proxy_out is NULL or writable.
        let proxy_out = unsafe { out_ref(proxy_out, "proxy_out") }?;
        let (listens, config, threads) = proxy_from_json(options)?;
        let proxy = StandaloneProxy::start(mesh.clone(), listens, config, threads)
            .map_err(|e| Failure::new(POBOX_ERR_IO, e.to_string()))?;
        *proxy_out = to_boxed_ptr::<pobox_proxy>(proxy);
        Ok(())
    }
}

/// Writes the proxy's counters as JSON and a NUL into `out`: per listener
/// its address (`listen`, with the port chosen for port 0), `destination`,
/// `accepted`, `active`, `rejected` (over the connection limit), `failed`
/// (no endpoint reachable), and per endpoint `addr`, `active`,
/// `connections`, `connect_failures`, `bytes_sent`, `bytes_received`,
/// `drained`, `draining`. Same buffer rules as `pobox_mesh_pick`: on
/// `POBOX_ERR_BUFFER_TOO_SMALL`, `*written` is the size needed (it may
/// grow by the next call).
///
/// Ownership: `out` and `written` are the caller's; nothing is kept.
///
/// Thread safety: may run on many threads at once.
#[no_mangle]
pub unsafe extern "C" fn pobox_proxy_metrics(
    proxy: *const pobox_proxy,
    out: *mut c_char,
    out_len: usize,
    written: *mut usize,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises proxy is NULL or a live proxy.
        let proxy = unsafe { try_ref(proxy, "proxy") }?;
        // SAFETY: the caller promises out has out_len writable bytes.
        let out = unsafe { c_slice_mut(out.cast::<u8>(), out_len, "out") }?;
        // SAFETY: the caller promises written is NULL or writable.
        let written = unsafe { out_ref(written, "written") }?;
        let json = serde_json::to_string(&proxy.metrics())
            .map_err(|e| Failure::new(POBOX_ERR_OTHER, e.to_string()))?;
        write_text(&json, out, written)
    }
}

/// Stops a proxy and frees it: its listeners close at once, open
/// connections get up to `grace_ms` milliseconds to finish, then the rest
/// are closed and its threads end. Returns when all that is done. NULL does
/// nothing.
///
/// Ownership: takes back a proxy from `pobox_proxy_start`; the pointer must
/// not be used again.
///
/// Thread safety: must not run while another call uses the same proxy, nor
/// from inside a tokio runtime.
#[no_mangle]
pub unsafe extern "C" fn pobox_proxy_stop(proxy: *mut pobox_proxy, grace_ms: u32) {
    ffi_panic_boundary! {
        if !proxy.is_null() {
            // SAFETY: not NULL; the caller promises a live proxy from
            // pobox_proxy_start, given up here.
            let proxy = unsafe { Box::from_raw(proxy.cast::<StandaloneProxy>()) };
            proxy.stop(std::time::Duration::from_millis(grace_ms.into()));
        }
    }
}

/// Stops a proxy at once (`pobox_proxy_stop` with no grace) and frees it.
/// NULL does nothing.
///
/// Ownership and thread safety: as `pobox_proxy_stop`.
#[no_mangle]
pub unsafe extern "C" fn pobox_proxy_free(proxy: *mut pobox_proxy) {
    ffi_panic_boundary! {
        // SAFETY: the caller promises proxy is NULL or a live proxy from
        // pobox_proxy_start, freed once, with no call using it concurrently.
        unsafe { free_box(proxy) }
    }
}

/// Copies the message of the last failed call on this thread (empty when
/// none failed yet) with a NUL into `out`, and its size, NUL included, into
/// `*written`. Same buffer rules as `pobox_mesh_pick`: on
/// `POBOX_ERR_BUFFER_TOO_SMALL`, `*written` is the size needed. Calling it
/// does not change the last error.
///
/// Thread safety: each thread has its own last error.
#[no_mangle]
pub unsafe extern "C" fn pobox_last_error(
    out: *mut c_char,
    out_len: usize,
    written: *mut usize,
) -> pobox_result {
    ffi_panic_boundary! {
        // SAFETY: the caller promises out has out_len writable bytes.
        let out = match unsafe { c_slice_mut(out.cast::<u8>(), out_len, "out") } {
            Ok(out) => out,
            Err(f) => return f.code,
        };
        // SAFETY: the caller promises written is NULL or writable.
        let Some(written) = (unsafe { written.as_mut() }) else {
            return POBOX_ERR_NULL_ARGUMENT;
        };
        LAST_ERROR.with(|e| match write_text(&e.borrow(), out, written) {
            Ok(()) => POBOX_OK,
            Err(f) => f.code,
        })
    }
}

/// The name of a result as a static NUL-terminated string, e.g.
/// `"POBOX_OK"`; `"POBOX_ERR_UNKNOWN"` for a number that names no result.
///
/// Ownership: the string is static; do not free it.
///
/// Thread safety: may be called from any thread.
///
/// The header declares it as taking `pobox_result`; Rust takes the number
/// itself, so that any value a C program passes is defined behaviour.
#[no_mangle]
pub extern "C" fn pobox_result_name(result: u32) -> *const c_char {
    ffi_panic_boundary! {
        let name: &'static CStr = match result {
            0 => c"POBOX_OK",
            1 => c"POBOX_ERR_NULL_ARGUMENT",
            2 => c"POBOX_ERR_INVALID_UTF8",
            3 => c"POBOX_ERR_BUFFER_TOO_SMALL",
            4 => c"POBOX_ERR_PANIC",
            5 => c"POBOX_ERR_CONFIG",
            6 => c"POBOX_ERR_SYNTAX",
            7 => c"POBOX_ERR_INVALID_OBJECT",
            8 => c"POBOX_ERR_CONFLICT",
            9 => c"POBOX_ERR_UNKNOWN_KIND",
            10 => c"POBOX_ERR_BAD_DESTINATION",
            11 => c"POBOX_ERR_NO_SERVICE",
            12 => c"POBOX_ERR_NO_PORT",
            13 => c"POBOX_ERR_EXTERNAL_NAME",
            14 => c"POBOX_ERR_NO_ENDPOINTS",
            15 => c"POBOX_ERR_BAD_ADDRESS",
            16 => c"POBOX_ERR_OTHER",
            17 => c"POBOX_ERR_BAD_ARGUMENT",
            18 => c"POBOX_ERR_IO",
            19 => c"POBOX_ERR_LIMIT",
            _ => c"POBOX_ERR_UNKNOWN",
        };
        name.as_ptr()
    }
}

/// The version of this library, e.g. `"0.1.0"`: a static NUL-terminated
/// string; do not free it.
#[no_mangle]
pub extern "C" fn pobox_version() -> *const c_char {
    ffi_panic_boundary! {
        const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
        VERSION.as_ptr().cast::<c_char>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_names_match_the_enum() {
        for (code, name) in [
            (POBOX_OK, "POBOX_OK"),
            (POBOX_ERR_BUFFER_TOO_SMALL, "POBOX_ERR_BUFFER_TOO_SMALL"),
            (POBOX_ERR_OTHER, "POBOX_ERR_OTHER"),
            (POBOX_ERR_BAD_ARGUMENT, "POBOX_ERR_BAD_ARGUMENT"),
            (POBOX_ERR_IO, "POBOX_ERR_IO"),
            (POBOX_ERR_LIMIT, "POBOX_ERR_LIMIT"),
        ] {
            // SAFETY: pobox_result_name returns a static NUL-terminated string.
            let got = unsafe { CStr::from_ptr(pobox_result_name(code as u32)) };
            assert_eq!(got.to_str().unwrap(), name);
            assert_eq!(format!("{code:?}"), name);
        }
    }

    #[test]
    fn a_limit_error_is_pobox_err_limit_and_past_the_last_code_is_unknown() {
        let e = pobox::Error::Limit {
            what: "objects",
            setting: "max_objects",
            limit: 1,
            found: 2,
            context: String::new(),
        };
        assert_eq!(Failure::from(e).code, POBOX_ERR_LIMIT);
        assert_eq!(POBOX_ERR_LIMIT as u32, 19, "numbers are never reused");
        // SAFETY: pobox_result_name returns a static NUL-terminated string.
        let next = unsafe { CStr::from_ptr(pobox_result_name(20)) };
        assert_eq!(next.to_str().unwrap(), "POBOX_ERR_UNKNOWN");
    }

    #[test]
    fn a_panic_becomes_a_result() {
        let r: pobox_result = ffi_panic_boundary! {
            if true {
                panic!("boom");
            }
            Ok::<(), Failure>(())
        };
        assert_eq!(r, POBOX_ERR_PANIC);
        let message = LAST_ERROR.with(|e| e.borrow().clone());
        assert!(message.contains("boom"), "{message}");
    }
}
