//! The C ABI's read side as C calls it: a mesh made with
//! `pobox_mesh_new`, the demo cluster and then the input's own manifest
//! applied with `pobox_mesh_apply`, and a sequence of `pobox_mesh_pick`,
//! `pobox_dest_new` + `pobox_mesh_pick_key` (and the same destination
//! through `pobox_route_pick` and `pobox_route_pick_batch`), `pobox_mesh_lookup` and
//! `pobox_mesh_endpoints` calls with arbitrary strings (cut at their first
//! NUL, as C would see them) and output buffers of arbitrary length,
//! allocated to exactly that length so that AddressSanitizer catches any
//! write past them. Checks the buffer rules the header states:
//!
//! * on `POBOX_OK`, the text is NUL-terminated, has no NUL before the end,
//!   and `*written` counts it with the NUL;
//! * on `POBOX_ERR_BUFFER_TOO_SMALL`, nothing is written to the buffer and
//!   `*written` is the size needed, which then succeeds (lookups and
//!   endpoint lists are deterministic);
//! * no call panics, and the mesh and every destination are freed (the
//!   leak checker runs at exit).
//!
//! The mesh lives across inputs (one per input ran about six times slower);
//! an input whose manifest changed it gets it freed afterwards, and the
//! next input a new one, so every input starts from the demo cluster.

#![no_main]

#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../src/lib.rs"]
mod ffi;

use std::ffi::{c_char, CString};
use std::ptr;

use ffi::pobox_result::*;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

const CLUSTER: &[u8] = include_bytes!("../../../examples/k8s/demo.yaml");
const CANARY: u8 = 0xa5;

/// Strings callers plausibly pass, so that the fuzzer reaches the answers
/// quickly; arbitrary text is mixed in.
const DESTS: [&str; 6] = [
    "web.default:http",
    "10.96.0.10:80",
    "192.168.1.10:30080",
    "web:9090/TCP",
    "web.default.svc.cluster.local.:80",
    "[fd00::10]:80",
];
const NAMES: [&str; 4] = [
    "web.default.svc.cluster.local",
    "web",
    "10.0.96.10.in-addr.arpa.",
    "_http._tcp.web.default.svc.cluster.local.",
];

fn text(u: &mut Unstructured<'_>, known: &[&str]) -> Result<CString> {
    let bytes: Vec<u8> = if u.ratio(1, 2)? {
        u.choose(known)?.as_bytes().to_vec()
    } else {
        u.arbitrary()?
    };
    let cut = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    Ok(CString::new(&bytes[..cut]).expect("cut at the first NUL"))
}

fn optional(u: &mut Unstructured<'_>, known: &[&str]) -> Result<Option<CString>> {
    Ok(if u.arbitrary()? {
        Some(text(u, known)?)
    } else {
        None
    })
}

fn ptr_of(s: &Option<CString>) -> *const c_char {
    s.as_ref().map_or(ptr::null(), |s| s.as_ptr())
}

/// Calls `f(out, out_len, written)` with a buffer of exactly `len` bytes,
/// checks the text buffer rules, and on too small retries with the size
/// asked for when `deterministic`.
fn text_call(
    len: usize,
    deterministic: bool,
    f: &mut dyn FnMut(*mut c_char, usize, *mut usize) -> ffi::pobox_result,
) {
    let mut buf = vec![CANARY; len];
    let out = if len == 0 {
        ptr::null_mut()
    } else {
        buf.as_mut_ptr().cast()
    };
    let mut written = usize::MAX;
    let r = f(out, len, &mut written);
    assert_ne!(r, POBOX_ERR_PANIC);
    match r {
        POBOX_OK => {
            assert!(written >= 1 && written <= len, "written {written} of {len}");
            assert_eq!(buf[written - 1], 0, "not NUL-terminated");
            assert!(!buf[..written - 1].contains(&0), "a NUL inside the text");
            assert!(
                buf[written..].iter().all(|&b| b == CANARY),
                "wrote past the text"
            );
        }
        POBOX_ERR_BUFFER_TOO_SMALL => {
            assert!(written > len, "too small, yet {written} <= {len}");
            assert!(
                buf.iter().all(|&b| b == CANARY),
                "wrote to a buffer too small"
            );
            if deterministic {
                let mut buf = vec![CANARY; written];
                let mut again = usize::MAX;
                let r = f(buf.as_mut_ptr().cast(), written, &mut again);
                assert_eq!(r, POBOX_OK, "the size asked for did not do");
                assert_eq!(again, written);
            }
        }
        _ => {}
    }
}

fn call(mesh: *mut ffi::pobox_mesh, u: &mut Unstructured<'_>) -> Result<()> {
    match u.int_in_range(0..=3)? {
        0 => {
            let dest = optional(u, &DESTS)?;
            let client = optional(u, &["10.0.0.7", "fd00::7"])?;
            let len = usize::from(u.int_in_range(0u8..=64)?);
            text_call(len, false, &mut |out, out_len, written| {
                // SAFETY: a live mesh; NULL or NUL-terminated strings; out
                // has out_len bytes (NULL only when 0); written is writable.
                unsafe {
                    ffi::pobox_mesh_pick(
                        mesh,
                        ptr_of(&dest),
                        ptr_of(&client),
                        out,
                        out_len,
                        written,
                    )
                }
            });
        }
        1 => {
            let name = optional(u, &NAMES)?;
            let qtype = optional(u, &["A", "aaaa", "SRV", "PTR", "TYPE65", "txt"])?;
            let namespace = optional(u, &["default", "kube-system", ""])?;
            let len = usize::from(u.int_in_range(0u16..=512)?);
            let mut rcode = u16::MAX;
            text_call(len, true, &mut |out, out_len, written| {
                // SAFETY: as above; rcode is writable.
                unsafe {
                    ffi::pobox_mesh_lookup(
                        mesh,
                        ptr_of(&name),
                        ptr_of(&qtype),
                        ptr_of(&namespace),
                        out,
                        out_len,
                        written,
                        &mut rcode,
                    )
                }
            });
        }
        2 => {
            let dest = text(u, &DESTS)?;
            let flags: u32 = u.arbitrary()?;
            let len = usize::from(u.int_in_range(0u8..=8)?);
            let mut out = Vec::with_capacity(len);
            out.resize(len, ffi::pobox_endpoint_info::default());
            let ptr = if len == 0 {
                ptr::null_mut()
            } else {
                out.as_mut_ptr()
            };
            let mut written = usize::MAX;
            // SAFETY: a live mesh, a NUL-terminated string, out has len entries.
            let r = unsafe {
                ffi::pobox_mesh_endpoints(mesh, dest.as_ptr(), flags, ptr, len, &mut written)
            };
            assert_ne!(r, POBOX_ERR_PANIC);
            match r {
                POBOX_OK => assert!(written <= len),
                POBOX_ERR_BUFFER_TOO_SMALL => {
                    assert!(written > len);
                    let mut out = vec![ffi::pobox_endpoint_info::default(); written];
                    let mut again = usize::MAX;
                    // SAFETY: as above, with `written` entries.
                    let r = unsafe {
                        ffi::pobox_mesh_endpoints(
                            mesh,
                            dest.as_ptr(),
                            flags,
                            out.as_mut_ptr(),
                            written,
                            &mut again,
                        )
                    };
                    assert_eq!((r, again), (POBOX_OK, written));
                }
                _ => {}
            }
        }
        _ => {
            let text = text(u, &DESTS)?;
            let key: Vec<u8> = u.arbitrary()?;
            let mut dest = ptr::null_mut();
            // SAFETY: a NUL-terminated string and a writable out-pointer.
            let r = unsafe { ffi::pobox_dest_new(text.as_ptr(), &mut dest) };
            assert_ne!(r, POBOX_ERR_PANIC);
            if r != POBOX_OK {
                assert!(dest.is_null(), "an out-parameter written on failure");
                return Ok(());
            }
            let client = ffi::pobox_addr {
                family: ffi::POBOX_FAMILY_IPV4,
                protocol: 0,
                port: 0,
                ip: [10, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            };
            let mut out = ffi::pobox_endpoint::default();
            let key_ptr = if key.is_empty() {
                ptr::null()
            } else {
                key.as_ptr()
            };
            // SAFETY: a live mesh and destination, a readable client, key_len
            // readable bytes, a writable out.
            let r = unsafe {
                ffi::pobox_mesh_pick_key(mesh, dest, &client, key_ptr, key.len(), &mut out)
            };
            assert_ne!(r, POBOX_ERR_PANIC);
            // The same destination through a route (in the default
            // namespace, as the mesh resolves it): the same result code,
            // one pick at a time and in a batch.
            let mut route = ptr::null_mut();
            // SAFETY: a live mesh and destination, a writable out-pointer.
            let made = unsafe { ffi::pobox_route_new(mesh, dest, c"default".as_ptr(), &mut route) };
            assert_eq!(made, POBOX_OK);
            let mut via_route = ffi::pobox_endpoint::default();
            // SAFETY: a live route, a readable client and key, a writable out.
            let routed = unsafe {
                ffi::pobox_route_pick(route, &client, key_ptr, key.len(), &mut via_route)
            };
            assert_eq!(routed, r, "route and mesh disagree");
            let mut eps = [ffi::pobox_endpoint::default(); 3];
            let mut results = [POBOX_OK; 3];
            // SAFETY: a live route, no clients, two arrays of 3.
            let batch = unsafe {
                ffi::pobox_route_pick_batch(
                    route,
                    ptr::null(),
                    3,
                    eps.as_mut_ptr(),
                    results.as_mut_ptr(),
                )
            };
            assert_eq!(batch, POBOX_OK);
            assert!(
                results.iter().all(|&b| b == r || r != POBOX_OK),
                "{results:?}"
            );
            // SAFETY: from pobox_route_new and pobox_dest_new, each freed once.
            unsafe {
                ffi::pobox_route_free(route);
                ffi::pobox_dest_free(dest);
            }
        }
    }
    Ok(())
}

/// A mesh holding the demo cluster (applied as JSON: faster to parse).
fn new_mesh() -> *mut ffi::pobox_mesh {
    static CLUSTER_JSON: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let cluster = CLUSTER_JSON.get_or_init(|| {
        let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_slice(CLUSTER)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
        serde_json::to_vec(&serde_json::json!({"apiVersion": "v1", "kind": "List", "items": docs}))
            .unwrap()
    });
    let mut mesh = ptr::null_mut();
    let options = c"{\"node\":\"node-a\",\"zone\":\"zone-a\",\"nodeIPs\":[\"192.168.1.10\"]}";
    // SAFETY: a NUL-terminated string and a writable out-pointer.
    assert_eq!(
        unsafe { ffi::pobox_mesh_new(options.as_ptr(), &mut mesh) },
        POBOX_OK
    );
    // SAFETY: a live mesh and cluster.len() readable bytes.
    assert_eq!(
        unsafe { ffi::pobox_mesh_apply(mesh, cluster.as_ptr(), cluster.len()) },
        POBOX_OK
    );
    mesh
}

fn version(mesh: *mut ffi::pobox_mesh) -> u64 {
    let mut v = 0;
    // SAFETY: a live mesh and a writable u64.
    assert_eq!(unsafe { ffi::pobox_mesh_version(mesh, &mut v) }, POBOX_OK);
    v
}

struct Shared(*mut ffi::pobox_mesh);
// SAFETY: a pobox_mesh may be used from many threads at once (see the header).
unsafe impl Send for Shared {}

static MESH: std::sync::Mutex<Shared> = std::sync::Mutex::new(Shared(ptr::null_mut()));

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut held = MESH.lock().unwrap_or_else(|e| e.into_inner());
    if held.0.is_null() {
        held.0 = new_mesh();
    }
    let mesh = held.0;
    let before = version(mesh);
    if let Ok(manifest) = u.arbitrary::<Vec<u8>>() {
        // SAFETY: a live mesh and manifest.len() readable bytes.
        let r = unsafe { ffi::pobox_mesh_apply(mesh, manifest.as_ptr(), manifest.len()) };
        assert_ne!(r, POBOX_ERR_PANIC);
    }
    while !u.is_empty() {
        if call(mesh, &mut u).is_err() {
            break;
        }
    }
    if version(mesh) != before {
        // SAFETY: from pobox_mesh_new, freed once (the pointer is cleared).
        unsafe { ffi::pobox_mesh_free(mesh) };
        held.0 = ptr::null_mut();
    }
});
