//! # pobox
//!
//! kube-proxy's decisions inside any process: load the Kubernetes Services and
//! EndpointSlices you already have, and ask which endpoints a Service address
//! or name can reach from this node, and which one a connection goes to.
//!
//! ```
//! use pobox::{Client, Destination, Mesh, MeshConfig};
//!
//! let mesh = Mesh::new(MeshConfig::new().node("node-a")).unwrap();
//! mesh.apply(include_bytes!("../../examples/k8s/demo.yaml")).unwrap();
//!
//! let dest: Destination = "web.default:http".parse().unwrap();
//! let pick = mesh.pick(&dest, &Client::new()).unwrap();
//! println!("connect to {} (snapshot {})", pick.addr, pick.version);
//! ```
//!
//! ## How it decides
//!
//! * Objects are validated as the API server would validate them; an apply is
//!   all or nothing ([`Mesh::apply`], [`Mesh::update`]).
//! * EndpointSlices are merged per service port as kube-proxy's
//!   `endpointslicecache.go` merges them, and filtered by kube-proxy's
//!   eligibility ladder (`CategorizeEndpoints`): traffic policy, topology
//!   hints, ready endpoints first and serving-terminating ones only when none
//!   is ready.
//! * Each update builds a new immutable [`Snapshot`] for the Services it
//!   touches and publishes it atomically; picks load the current one without
//!   locking.
//! * Destinations are cluster IPs, node ports on the configured node IPs,
//!   load-balancer and external IPs, or Service names ([`Destination`]).
//!
//! The crate has no I/O and builds for `wasm32-unknown-unknown`.
//!
//! ## Features
//!
//! * `yaml` (default): YAML input besides JSON. Without it only JSON is read,
//!   and other input is refused with an [`Error::Syntax`] that says so (the
//!   JavaScript package is built so, to stay small).
//! * `tower`, `tls`, `runtime`: see the modules of those names.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod affinity;
mod balance;
mod config;
mod dest;
pub mod dns;
mod envvars;
mod error;
mod hash;
mod health;
mod k8s;
mod limits;
mod mesh;
mod model;
#[cfg(feature = "yaml")]
mod nesting;
mod parse;
mod policy;
mod read;
mod route;
#[cfg(feature = "runtime")]
pub mod runtime;
mod select;
mod shard;
mod snapshot;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "tower")]
pub mod tower;
mod typed;
mod validate;

pub use affinity::{Clock, ManualClock, SystemClock, DEFAULT_AFFINITY_CAPACITY};
pub use config::{MeshConfig, DEFAULT_CLUSTER_DOMAIN, DEFAULT_DNS_TTL};
pub use dest::{Client, Destination, PortRef};
pub use dns::{Answer, Rcode, Record, RecordData, RecordType};
pub use envvars::{from_services, EnvVar};
pub use error::{Error, PickError};
pub use health::{
    Outcome, OutlierDetection, ANNOTATION_OUTLIER_BASE_EJECTION, ANNOTATION_OUTLIER_FAILURES,
    ANNOTATION_OUTLIER_MAX_PERCENT, ANNOTATION_OUTLIER_PANIC_PERCENT,
};
pub use limits::{
    Limits, DEFAULT_MAX_DEPTH, DEFAULT_MAX_ENDPOINTS, DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_OBJECTS,
    DEFAULT_MAX_VALUES,
};
pub use mesh::{ApplyReport, Changed, Mesh, Pick, Request};
pub use model::{
    EndpointSlice, IpFamily, Kind, Object, Protocol, Service, ServiceKey, ServicePort, ServiceType,
    SessionAffinity, SliceEndpoint, SlicePort, TargetPort, TrafficPolicy, Update,
};
pub use parse::{parse, parse_with_limits, Parsed};
pub use policy::{
    reseed_thread_rng, LbPolicy, ANNOTATION_LB_POLICY, ANNOTATION_MAGLEV_TABLE_SIZE,
    ANNOTATION_RING_SIZE, ANNOTATION_WEIGHTS, DEFAULT_MAGLEV_TABLE_SIZE, DEFAULT_RING_SIZE,
    MAX_MAGLEV_TABLE_SIZE, MAX_RING_SIZE, MAX_WEIGHT,
};
pub use route::Route;
pub use snapshot::{DnsEndpoint, Endpoint, PortEntry, Resolved, ServiceEntry, Snapshot, Traffic};
pub use validate::{ANNOTATION_SERVICE_ACCOUNT, DEFAULT_NAMESPACE, LABEL_SERVICE_NAME};
