//! The parts of the `pobox` command that other code calls: the `replay`
//! script reader and the `serve-dns` wire-format answerer. The binary is a
//! thin shell over them (arguments, files, sockets); tests and the fuzz
//! targets in `ffi/fuzz` call them directly.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod replay;
#[cfg(feature = "serve-dns")]
pub mod wire;
