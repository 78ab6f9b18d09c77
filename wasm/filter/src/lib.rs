//! # pobox-filter
//!
//! An Envoy HTTP filter (proxy-wasm, `wasm32-wasip1`) that routes by
//! Kubernetes Service semantics through the `pobox` core: per request it
//! resolves `:authority` (a Service name or VIP; port 80 when none is
//! given), picks with the client's IP and an optional hash key, and writes
//! the picked endpoint to the endpoint header for an `ORIGINAL_DST` cluster
//! with `use_http_header: true`, replacing every client-sent copy of it
//! (removing them when there is no route).
//!
//! The decision lives in [`route`], independent of the host, so that it is
//! tested and benchmarked natively; the proxy-wasm glue is compiled for
//! `wasm32` only. The configuration schema is in [`config`] and the README.

pub mod config;
pub mod route;

#[cfg(target_arch = "wasm32")]
mod filter;

pub use config::{HashKey, NoRoute, Settings, UpdateSource, DEFAULT_HEADER};
pub use route::{Headers, Routed, Router, DEFAULT_PORT};
