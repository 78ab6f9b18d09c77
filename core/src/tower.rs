//! tower integration (feature `tower`): the endpoints of a service port as a
//! [`Discover`](tower::discover::Discover) stream, and a balancing
//! [`tower::Service`] that picks an endpoint per request through the mesh.
//!
//! Both follow the mesh without polling: they wait on [`Mesh::changed`],
//! which needs no runtime.
//!
//! * [`MeshDiscover`] yields [`Change::Insert`] for every endpoint that
//!   becomes eligible (ready, or serving-terminating when none is ready,
//!   after traffic policy and topology) and [`Change::Remove`] for every one
//!   that stops being eligible or disappears, including all of them when the
//!   Service is deleted. Feed it to any tower balancer.
//! * [`MeshBalance`] makes the decision itself, with the Service's policy,
//!   session affinity and outlier detection ([`Mesh::begin`] per request,
//!   [`Request::finish`](crate::Request::finish) with the outcome), and
//!   sends the request to an inner service made once per endpoint address.
//!
//! ```
//! use std::net::SocketAddr;
//! use pobox::tower::MeshBalance;
//! use pobox::{Destination, Mesh, MeshConfig};
//! use tower::Service;
//!
//! # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
//! # rt.block_on(async {
//! let mesh = Mesh::new(MeshConfig::new()).unwrap();
//! mesh.apply(include_bytes!("../../examples/k8s/demo.yaml")).unwrap();
//!
//! // The inner service stands for a connection to one endpoint: a hyper
//! // client whose requests are sent to `addr`, for example.
//! let dest = Destination::parse("web.default:http").unwrap();
//! let mut web = MeshBalance::new(mesh, dest, |addr: SocketAddr| {
//!     tower::service_fn(move |path: &'static str| async move {
//!         Ok::<_, std::convert::Infallible>(format!("{addr}{path}"))
//!     })
//! });
//! let reply = web.call("/index.html").await.unwrap();
//! assert!(reply.ends_with(":8080/index.html"));
//! # });
//! ```

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::future::{poll_fn, Future};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
pub use tower::discover::Change;
use tower::{BoxError, Service};

use crate::dest::{Client, Destination};
use crate::health::Outcome;
use crate::mesh::{Changed, Mesh};

/// Owned client facts for a [`Client`]: who the requests come from.
#[derive(Debug, Clone, Default)]
struct ClientFacts {
    ip: Option<IpAddr>,
    namespace: Option<String>,
}

impl ClientFacts {
    fn client<'a>(&'a self, key: Option<&'a [u8]>) -> Client<'a> {
        let mut client = Client::new();
        if let Some(ip) = self.ip {
            client = client.ip(ip);
        }
        if let Some(ns) = &self.namespace {
            client = client.namespace(ns);
        }
        if let Some(key) = key {
            client = client.key(key);
        }
        client
    }
}

/// The eligible endpoint addresses of `dest` in the current snapshot, and
/// that snapshot's version; none when it does not resolve (no such Service,
/// port or an ExternalName).
fn eligible(mesh: &Mesh, dest: &Destination, client: &ClientFacts) -> (BTreeSet<SocketAddr>, u64) {
    let snapshot = mesh.snapshot();
    let set = match snapshot.resolve(dest, &client.client(None)) {
        Ok(resolved) => resolved.eligible().map(|e| e.addr()).collect(),
        Err(_) => BTreeSet::new(),
    };
    (set, snapshot.version())
}

// === impl MeshDiscover ===

/// The endpoints of one service port as a tower
/// [`Discover`](tower::discover::Discover) stream keyed by endpoint address.
///
/// The first poll inserts every eligible endpoint; later polls wait for the
/// mesh to publish and yield the difference (removals first). A service port
/// that does not resolve has no endpoints. The stream never ends and never
/// fails. Ejections by outlier detection are a per-pick matter and do not
/// show here.
pub struct MeshDiscover<F, S> {
    mesh: Mesh,
    dest: Destination,
    client: ClientFacts,
    make: F,
    known: BTreeSet<SocketAddr>,
    pending: VecDeque<Change<SocketAddr, S>>,
    /// Waits for the next publish; `None` until the first poll has synced.
    changed: Option<Changed>,
}

impl<F, S> fmt::Debug for MeshDiscover<F, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshDiscover")
            .field("dest", &self.dest)
            .field("known", &self.known)
            .finish()
    }
}

impl<F, S> MeshDiscover<F, S>
where
    F: FnMut(SocketAddr) -> S,
{
    /// Discovers the endpoints of `dest`, making a service for each new one
    /// with `make`.
    pub fn new(mesh: Mesh, dest: Destination, make: F) -> Self {
        MeshDiscover {
            mesh,
            dest,
            client: ClientFacts::default(),
            make,
            known: BTreeSet::new(),
            pending: VecDeque::new(),
            changed: None,
        }
    }

    /// Resolves Service names relative to `namespace` (default `default`).
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.client.namespace = Some(namespace.to_owned());
        self
    }

    /// The endpoint addresses inserted and not removed so far.
    pub fn endpoints(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.known.iter().copied()
    }

    fn sync(&mut self) {
        let (now, version) = eligible(&self.mesh, &self.dest, &self.client);
        for gone in self.known.difference(&now) {
            self.pending.push_back(Change::Remove(*gone));
        }
        for new in now.difference(&self.known) {
            self.pending
                .push_back(Change::Insert(*new, (self.make)(*new)));
        }
        self.known = now;
        self.changed = Some(self.mesh.changed(version));
    }
}

// Nothing is pinned in place: the stream only moves owned values.
impl<F, S> Unpin for MeshDiscover<F, S> {}

impl<F, S> Stream for MeshDiscover<F, S>
where
    F: FnMut(SocketAddr) -> S,
{
    type Item = Result<Change<SocketAddr, S>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(change) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(change)));
            }
            match &mut this.changed {
                None => this.sync(),
                Some(changed) => match Pin::new(changed).poll(cx) {
                    Poll::Ready(_) => this.sync(),
                    Poll::Pending => return Poll::Pending,
                },
            }
        }
    }
}

// === impl MeshBalance ===

type KeyFn<Req> = Arc<dyn Fn(&Req) -> Option<Vec<u8>> + Send + Sync>;
type ClassifyFn<Resp> = Arc<dyn Fn(&Resp) -> Outcome + Send + Sync>;

/// A [`tower::Service`] that sends each request to an endpoint of one
/// service port, picked by the mesh.
///
/// Per request: [`Mesh::begin`] picks with the Service's balancing policy,
/// `ClientIP` session affinity (when [`client_ip`](Self::client_ip) is set)
/// and outlier detection, and counts the request in flight for
/// least-request; the inner service for that endpoint (made by `make` the
/// first time the address is picked, then cloned per request) handles it;
/// its outcome is reported to passive health: an error is a failure, a
/// response is what [`classify`](Self::classify) says (a success unless
/// set). Inner services of endpoints that left the mesh are dropped at the
/// next request after the change; requests already sent to them finish.
///
/// `poll_ready` is always ready: the endpoint is chosen in `call`, and the
/// chosen inner service is driven to readiness in the response future. A
/// request to a service port with no eligible endpoint (or that does not
/// resolve) fails at once with the mesh's [`PickError`](crate::PickError).
pub struct MeshBalance<Req, S: Service<Req>, F> {
    mesh: Mesh,
    dest: Destination,
    client: ClientFacts,
    make: F,
    services: HashMap<SocketAddr, S>,
    /// The snapshot version `services` was last pruned against.
    pruned_at: u64,
    key: Option<KeyFn<Req>>,
    classify: Option<ClassifyFn<S::Response>>,
}

impl<Req, S: Service<Req>, F> fmt::Debug for MeshBalance<Req, S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshBalance")
            .field("dest", &self.dest)
            .field("endpoints", &self.services.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<Req, S, F> MeshBalance<Req, S, F>
where
    S: Service<Req>,
    F: FnMut(SocketAddr) -> S,
{
    /// Balances requests over the endpoints of `dest`; `make` makes the
    /// inner service of an endpoint address.
    pub fn new(mesh: Mesh, dest: Destination, make: F) -> Self {
        let pruned_at = mesh.version();
        MeshBalance {
            mesh,
            dest,
            client: ClientFacts::default(),
            make,
            services: HashMap::new(),
            pruned_at,
            key: None,
            classify: None,
        }
    }

    /// Resolves Service names relative to `namespace` (default `default`).
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.client.namespace = Some(namespace.to_owned());
        self
    }

    /// The client IP that `ClientIP` session affinity and client-IP hashing
    /// see: this process's own address, as kube-proxy would see it.
    pub fn client_ip(mut self, ip: IpAddr) -> Self {
        self.client.ip = Some(ip);
        self
    }

    /// The hash key of a request for `maglev` and `ring-hash` Services (a
    /// header or cookie value, say); `None` falls back to the client IP.
    pub fn hash_key(
        mut self,
        key: impl Fn(&Req) -> Option<Vec<u8>> + Send + Sync + 'static,
    ) -> Self {
        self.key = Some(Arc::new(key));
        self
    }

    /// How a response counts for outlier detection (an HTTP 5xx as a
    /// failure, say). Errors always count as failures.
    pub fn classify(
        mut self,
        classify: impl Fn(&S::Response) -> Outcome + Send + Sync + 'static,
    ) -> Self {
        self.classify = Some(Arc::new(classify));
        self
    }

    /// The endpoint addresses that have an inner service now.
    pub fn endpoints(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.services.keys().copied()
    }

    /// Drops the inner services of endpoints no longer eligible, once per
    /// published version.
    fn prune(&mut self) {
        let version = self.mesh.version();
        if version == self.pruned_at {
            return;
        }
        let (now, version) = eligible(&self.mesh, &self.dest, &self.client);
        self.services.retain(|addr, _| now.contains(addr));
        self.pruned_at = version;
    }
}

impl<Req, S, F> Service<Req> for MeshBalance<Req, S, F>
where
    Req: Send + 'static,
    S: Service<Req> + Clone + Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    F: FnMut(SocketAddr) -> S,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.prune();
        let key = self.key.as_ref().and_then(|key| key(&req));
        let request = match self
            .mesh
            .begin(&self.dest, &self.client.client(key.as_deref()))
        {
            Ok(request) => request,
            Err(e) => return Box::pin(std::future::ready(Err(e.into()))),
        };
        let addr = request.addr();
        let make = &mut self.make;
        let mut inner = self
            .services
            .entry(addr)
            .or_insert_with(|| make(addr))
            .clone();
        let classify = self.classify.clone();
        Box::pin(async move {
            let result = async {
                poll_fn(|cx| inner.poll_ready(cx))
                    .await
                    .map_err(Into::into)?;
                inner.call(req).await.map_err(Into::into)
            }
            .await;
            let outcome = match (&result, classify) {
                (Err(_), _) => Outcome::Failure,
                (Ok(response), Some(classify)) => classify(response),
                (Ok(_), None) => Outcome::Success,
            };
            request.finish(outcome);
            result
        })
    }
}
