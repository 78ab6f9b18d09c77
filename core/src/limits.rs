//! Bounds on what one input may cost: its size, its nesting, the values it
//! expands to, the objects it holds, and the endpoints a mesh keeps.
//!
//! Every limit is checked before the work it bounds, cheapest first: the
//! input size (one comparison), then the nesting depth (counted as JSON is
//! read; for YAML, one pass over the bytes before its parser sees them),
//! then the number of values (counted while the document is read, so a
//! YAML alias bomb stops as soon as it expands past the limit), then the
//! objects in the input, then the endpoints the mesh would hold after the
//! apply. An input over any limit is refused with [`crate::Error::Limit`]
//! and nothing is applied.

/// The default [`Limits::max_input_bytes`]: 64 MiB.
pub const DEFAULT_MAX_INPUT_BYTES: usize = 64 << 20;
/// The default [`Limits::max_depth`]: 64 levels.
pub const DEFAULT_MAX_DEPTH: usize = 64;
/// The default [`Limits::max_values`]: 8,000,000 values.
pub const DEFAULT_MAX_VALUES: usize = 8_000_000;
/// The default [`Limits::max_objects`]: 100,000 objects.
pub const DEFAULT_MAX_OBJECTS: usize = 100_000;
/// The default [`Limits::max_endpoints`]: 500,000 endpoints.
pub const DEFAULT_MAX_ENDPOINTS: usize = 500_000;

/// Bounds on the inputs a [`crate::Mesh`] accepts, set with
/// [`crate::MeshConfig::limits`]. Each limit is inclusive: an input at the
/// limit is accepted, one past it refused with [`crate::Error::Limit`].
///
/// ```
/// use pobox::{Limits, Mesh, MeshConfig};
///
/// let limits = Limits::new().max_input_bytes(1 << 20).max_endpoints(10_000);
/// let mesh = Mesh::new(MeshConfig::new().limits(limits)).unwrap();
/// assert_eq!(mesh.config().configured_limits().input_bytes_limit(), 1 << 20);
/// let err = mesh.apply(&vec![b' '; (1 << 20) + 1]).unwrap_err();
/// assert!(err.to_string().starts_with("input is 1048577 bytes, over the limit of 1048576"), "{err}");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    max_input_bytes: usize,
    max_depth: usize,
    max_values: usize,
    max_objects: usize,
    max_endpoints: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_input_bytes: DEFAULT_MAX_INPUT_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            max_values: DEFAULT_MAX_VALUES,
            max_objects: DEFAULT_MAX_OBJECTS,
            max_endpoints: DEFAULT_MAX_ENDPOINTS,
        }
    }
}

impl Limits {
    /// The defaults: 64 MiB, 64 levels, 8,000,000 values, 100,000 objects,
    /// 500,000 endpoints.
    pub fn new() -> Self {
        Self::default()
    }

    /// The largest input, in bytes, one apply or replace reads (default
    /// [`DEFAULT_MAX_INPUT_BYTES`]). Checked first, before anything is read.
    pub fn max_input_bytes(mut self, bytes: usize) -> Self {
        self.max_input_bytes = bytes;
        self
    }

    /// The deepest nesting of mappings and sequences in one document, the
    /// document itself being level 1 (default [`DEFAULT_MAX_DEPTH`]; a
    /// Kubernetes List of EndpointSlices nests 6 deep). The JSON and YAML
    /// parsers refuse more than 128 levels whatever this says.
    pub fn max_depth(mut self, levels: usize) -> Self {
        self.max_depth = levels;
        self
    }

    /// The most values (scalars, mappings and sequences, keys not counted)
    /// one input may expand to, YAML aliases expanded (default
    /// [`DEFAULT_MAX_VALUES`]). This is what stops an alias bomb.
    pub fn max_values(mut self, values: usize) -> Self {
        self.max_values = values;
        self
    }

    /// The most objects one input may hold, the items of Lists and the kinds
    /// pobox skips included (default [`DEFAULT_MAX_OBJECTS`]).
    pub fn max_objects(mut self, objects: usize) -> Self {
        self.max_objects = objects;
        self
    }

    /// The most endpoints, summed over every EndpointSlice held, that the
    /// mesh may hold after an update (default [`DEFAULT_MAX_ENDPOINTS`]).
    pub fn max_endpoints(mut self, endpoints: usize) -> Self {
        self.max_endpoints = endpoints;
        self
    }

    /// See [`Limits::max_input_bytes`].
    pub fn input_bytes_limit(&self) -> usize {
        self.max_input_bytes
    }

    /// See [`Limits::max_depth`].
    pub fn depth_limit(&self) -> usize {
        self.max_depth
    }

    /// See [`Limits::max_values`].
    pub fn values_limit(&self) -> usize {
        self.max_values
    }

    /// See [`Limits::max_objects`].
    pub fn objects_limit(&self) -> usize {
        self.max_objects
    }

    /// See [`Limits::max_endpoints`].
    pub fn endpoints_limit(&self) -> usize {
        self.max_endpoints
    }
}
