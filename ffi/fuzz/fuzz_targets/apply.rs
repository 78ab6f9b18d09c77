//! Feeds arbitrary bytes to `pobox_mesh_apply`, as C would call it, on one
//! long-lived mesh (so that inputs build on each other's state), and checks
//! what the ABI promises: no panic reaches C, a failed apply leaves the
//! version where it was, a successful one moves it by at most one, and the
//! mesh keeps answering picks.

#![no_main]

#[allow(dead_code, unused_imports, clippy::all)]
#[path = "../../src/lib.rs"]
mod ffi;

use std::sync::OnceLock;

use ffi::pobox_result::*;
use libfuzzer_sys::fuzz_target;

struct Shared(*mut ffi::pobox_mesh);
// SAFETY: a pobox_mesh may be used from many threads at once (see the header).
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

fn mesh() -> *mut ffi::pobox_mesh {
    static MESH: OnceLock<Shared> = OnceLock::new();
    MESH.get_or_init(|| {
        let mut mesh = std::ptr::null_mut();
        let options = c"{\"node\":\"node-a\",\"zone\":\"zone-a\",\"nodeIPs\":[\"192.168.1.10\"]}";
        // SAFETY: a NUL-terminated string and a writable out-pointer.
        let r = unsafe { ffi::pobox_mesh_new(options.as_ptr(), &mut mesh) };
        assert_eq!(r, POBOX_OK);
        Shared(mesh)
    })
    .0
}

fn version(mesh: *mut ffi::pobox_mesh) -> u64 {
    let mut v = 0;
    // SAFETY: a live mesh and a writable u64.
    assert_eq!(unsafe { ffi::pobox_mesh_version(mesh, &mut v) }, POBOX_OK);
    v
}

fuzz_target!(|data: &[u8]| {
    let mesh = mesh();
    let before = version(mesh);
    // SAFETY: a live mesh; data.len() readable bytes.
    let r = unsafe { ffi::pobox_mesh_apply(mesh, data.as_ptr(), data.len()) };
    assert_ne!(r, POBOX_ERR_PANIC, "a panic reached the boundary");
    let after = version(mesh);
    if r == POBOX_OK {
        assert!(
            after == before || after == before + 1,
            "{before} -> {after}"
        );
    } else {
        assert_eq!(after, before, "a failed apply changed the mesh");
    }
    let mut out = [0u8; ffi::POBOX_ADDRSTRLEN];
    let mut written = 0;
    for dest in [c"web.default:http", c"10.96.0.10:80", c"192.168.1.10:30080"] {
        // SAFETY: a live mesh, NUL-terminated strings, a buffer of out.len() bytes.
        let r = unsafe {
            ffi::pobox_mesh_pick(
                mesh,
                dest.as_ptr(),
                std::ptr::null(),
                out.as_mut_ptr().cast(),
                out.len(),
                &mut written,
            )
        };
        assert!(
            !matches!(r, POBOX_ERR_PANIC | POBOX_ERR_BUFFER_TOO_SMALL),
            "{r:?}"
        );
    }
});
