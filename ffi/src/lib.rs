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

use pobox::{Client, Destination, Error, Kind, Mesh, MeshConfig, PickError, Protocol, Snapshot};

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
    /// The mesh options are not valid (bad JSON, unknown field, bad node
    /// name, IP or cluster domain).
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
/// unknown fields are refused (`POBOX_ERR_CONFIG`).
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
        ] {
            // SAFETY: pobox_result_name returns a static NUL-terminated string.
            let got = unsafe { CStr::from_ptr(pobox_result_name(code as u32)) };
            assert_eq!(got.to_str().unwrap(), name);
            assert_eq!(format!("{code:?}"), name);
        }
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
