//! loom models of the two lock-free protocols beside pobox's snapshot: the
//! publish (`core/src/mesh.rs`) and the affinity table
//! (`core/src/affinity.rs`). The models are in `tests/models.rs`; this
//! library is empty. Run them with
//! `cd core/loom && RUSTFLAGS="--cfg loom" cargo test --release`.
