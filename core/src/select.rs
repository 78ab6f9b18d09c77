//! Which endpoints of a service port may take traffic on this node: the
//! eligibility ladder of kube-proxy's `CategorizeEndpoints`
//! (kubernetes/kubernetes `pkg/proxy/topology.go`), rule for rule.
//!
//! 1. **Cluster** endpoints: ready ones, narrowed by topology when every ready
//!    endpoint carries hints (node hints first, then zone hints) and at least
//!    one is hinted for this node (zone); if none is ready anywhere, the
//!    serving-and-terminating ones, topology ignored (KEP-1669).
//! 2. **Local** endpoints: ready ones on this node; if none, the serving and
//!    terminating ones on this node.
//! 3. Internal traffic uses Local when `internalTrafficPolicy: Local`, else
//!    Cluster; external traffic (node ports, load-balancer and external IPs)
//!    uses Local when `externalTrafficPolicy: Local`, else Cluster.
//!
//! The ladder runs per IP family, as kube-proxy runs one proxier per family.

use std::sync::Arc;

use crate::model::TrafficPolicy;

/// What the ladder needs to know of one endpoint.
pub(crate) struct Candidate<'a> {
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    pub local: bool,
    pub zone_hints: &'a [Arc<str>],
    pub node_hints: &'a [Arc<str>],
}

impl Candidate<'_> {
    fn serving_terminating(&self) -> bool {
        self.serving && self.terminating
    }
}

/// Where this process runs.
#[derive(Clone, Copy)]
pub(crate) struct Locality<'a> {
    pub node: &'a str,
    pub zone: &'a str,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Topology {
    None,
    SameNode,
    SameZone,
}

/// kube-proxy's `topologyModeFromHints`.
fn topology_mode(eps: &[Candidate<'_>], at: Locality<'_>) -> Topology {
    let mut has_ready = false;
    let mut all_node_hints = true;
    let mut for_node = false;
    let mut all_zone_hints = true;
    let mut for_zone = false;
    for ep in eps.iter().filter(|e| e.ready) {
        has_ready = true;
        if ep.node_hints.is_empty() {
            all_node_hints = false;
        } else if ep.node_hints.iter().any(|n| **n == *at.node) {
            for_node = true;
        }
        if ep.zone_hints.is_empty() {
            all_zone_hints = false;
        } else if ep.zone_hints.iter().any(|z| **z == *at.zone) {
            for_zone = true;
        }
    }
    if !has_ready {
        Topology::None
    } else if all_node_hints && for_node {
        Topology::SameNode
    } else if all_zone_hints && for_zone {
        Topology::SameZone
    } else {
        Topology::None
    }
}

fn available_for_topology(ep: &Candidate<'_>, mode: Topology, at: Locality<'_>) -> bool {
    match mode {
        Topology::None => true,
        Topology::SameNode => ep.node_hints.iter().any(|n| **n == *at.node),
        Topology::SameZone => ep.zone_hints.iter().any(|z| **z == *at.zone),
    }
}

fn indices(eps: &[Candidate<'_>], keep: impl Fn(&Candidate<'_>) -> bool) -> Vec<u32> {
    // Room for every candidate at once (the caller shrinks the set to fit
    // when it boxes it): collecting from a filter grew it a dozen times for
    // 10,000 endpoints, a twentieth of a publish.
    let mut out = Vec::with_capacity(eps.len());
    out.extend(
        eps.iter()
            .enumerate()
            .filter(|(_, e)| keep(e))
            .map(|(i, _)| i as u32),
    );
    out
}

/// The Cluster-policy endpoints (indices into `eps`).
pub(crate) fn cluster(eps: &[Candidate<'_>], at: Locality<'_>) -> Vec<u32> {
    let mode = topology_mode(eps, at);
    let ready = indices(eps, |e| e.ready && available_for_topology(e, mode, at));
    if !ready.is_empty() {
        return ready;
    }
    indices(eps, |e| e.serving_terminating())
}

/// The Local-policy endpoints (indices into `eps`).
pub(crate) fn local(eps: &[Candidate<'_>]) -> Vec<u32> {
    let ready = indices(eps, |e| e.local && e.ready);
    if !ready.is_empty() {
        return ready;
    }
    indices(eps, |e| e.local && e.serving_terminating())
}

/// The endpoints for traffic under `policy`.
pub(crate) fn eligible(eps: &[Candidate<'_>], policy: TrafficPolicy, at: Locality<'_>) -> Vec<u32> {
    match policy {
        TrafficPolicy::Cluster => cluster(eps, at),
        TrafficPolicy::Local => local(eps),
    }
}
