//! The [`Mesh`] handle: desired state in, snapshots out.
//!
//! Writers are serialized by a mutex and never block readers: an update is
//! staged, checked, built into the next [`Snapshot`] and only then committed
//! and published with one `ArcSwap::store`. Any error before that point
//! leaves the store and the published snapshot exactly as they were.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use arc_swap::ArcSwap;

use crate::affinity::{Affinity, Clock, SystemClock};
use crate::balance::{with_local, Slot};
use crate::config::MeshConfig;
use crate::dest::{Client, Destination};
use crate::error::{Error, PickError};
use crate::health::{Health, Outcome};
use crate::model::{EndpointSlice, Kind, Object, Protocol, Service, ServiceKey, Update};
use crate::parse;
use crate::route::Route;
use crate::snapshot::{build_service, PortEntry, ServiceEntry, Snapshot};

/// The result of an apply or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApplyReport {
    /// The version now published.
    pub version: u64,
    /// Whether anything changed (and so a new version was published).
    pub changed: bool,
    /// Objects skipped, one line each (other kinds, FQDN slices, ...).
    pub warnings: Vec<String>,
}

impl ApplyReport {
    /// Puts the reader's warnings before the update's (a `Vec::splice` at 0
    /// did the same with a kilobyte more of the JavaScript package's module).
    fn prepend_warnings(&mut self, mut first: Vec<String>) {
        first.append(&mut self.warnings);
        self.warnings = first;
    }
}

/// A picked endpoint, by value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The snapshot version the pick was made from.
    pub version: u64,
}

/// A [`Pick`] on its way out of the closure that holds the thread's pick
/// state ([`with_local`]), in scalars that the caller reads back at the
/// widths they were written. A `Pick` written there field by field and
/// then moved whole was read with wider loads than its stores, which the
/// processor cannot forward from its store buffer: `Route::try_pick` took
/// 19 ns instead of 11 (least-request, 100 endpoints). A caller that moves
/// the whole `Pick` out of `pick`'s `Result` still pays it, in its own
/// frame.
#[derive(Default)]
pub(crate) struct Handoff {
    /// The address's bits (IPv4 in the low 32).
    ip: u128,
    port: u16,
    /// 0 until a pick is put; then 4 or 6, the address's family.
    family: u8,
    version: u64,
}

impl Handoff {
    /// Puts a pick of `addr` from snapshot `version`.
    #[inline(always)]
    pub(crate) fn put(&mut self, addr: SocketAddr, version: u64) {
        (self.ip, self.family) = match addr.ip() {
            IpAddr::V4(ip) => (u32::from(ip) as u128, 4),
            IpAddr::V6(ip) => (u128::from(ip), 6),
        };
        self.port = addr.port();
        self.version = version;
    }

    /// The pick put, if any.
    #[inline(always)]
    pub(crate) fn take(&self) -> Option<Pick> {
        let ip = match self.family {
            0 => return None,
            4 => IpAddr::V4((self.ip as u32).into()),
            _ => IpAddr::V6(self.ip.into()),
        };
        Some(Pick {
            addr: SocketAddr::new(ip, self.port),
            version: self.version,
        })
    }
}

/// A request in flight to a picked endpoint. Dropping it ends the request
/// (least-request stops counting it); [`Request::finish`] also reports its
/// outcome to passive health.
#[derive(Debug)]
pub struct Request {
    addr: SocketAddr,
    version: u64,
    /// For a port that counts requests or watches health: the endpoint's
    /// state. `None` otherwise: there is nothing to end or report.
    tracked: Option<Tracked>,
}

#[derive(Debug)]
struct Tracked {
    /// The endpoint's count of requests in flight (and health).
    health: Arc<Health>,
    /// Outlier detection only: what reporting the outcome needs.
    outlier: Option<Outlier>,
    open: bool,
}

/// What [`Request::finish`] reports an outcome through: the port (its
/// ejection budget spans its endpoints), the endpoint's position in it, and
/// the clock ejections are timed by.
#[derive(Debug)]
struct Outlier {
    port: Arc<PortEntry>,
    position: usize,
    clock: Arc<dyn Clock>,
}

impl Request {
    /// Starts a request to the endpoint at `position` of `port` (counted in
    /// flight when the port tracks requests).
    /// `port_arc` gives the port's `Arc`, taken only under outlier
    /// detection.
    pub(crate) fn start(
        pick: Pick,
        port: &PortEntry,
        port_arc: impl FnOnce() -> Arc<PortEntry>,
        position: usize,
        clock: &Arc<dyn Clock>,
    ) -> Request {
        // Only the endpoint's state, not the port: every request on a port
        // cloning the port's `Arc` made its count one cache line all
        // threads wrote, and two threads slower than one.
        let tracked = port.health_at(position).map(|health| {
            health.begin();
            Tracked {
                health: health.clone(),
                outlier: port.records_outcomes().then(|| Outlier {
                    port: port_arc(),
                    position,
                    clock: clock.clone(),
                }),
                open: true,
            }
        });
        Request {
            addr: pick.addr,
            version: pick.version,
            tracked,
        }
    }

    /// Where to connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The snapshot version the pick was made from.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the outcome given to [`Request::finish`] is used (the
    /// Service has outlier detection). When it is not, a host may skip the
    /// work of finding it out and just drop the request (which ends it
    /// for least-request all the same).
    pub fn wants_outcome(&self) -> bool {
        self.tracked.as_ref().is_some_and(|t| t.outlier.is_some())
    }

    /// Ends the request and reports how it went.
    pub fn finish(mut self, outcome: Outcome) {
        self.close();
        if let Some(Tracked {
            outlier: Some(o), ..
        }) = &self.tracked
        {
            o.port.record_at(o.position, outcome, &*o.clock);
        }
    }

    fn close(&mut self) {
        if let Some(t) = &mut self.tracked {
            if std::mem::take(&mut t.open) {
                t.health.end();
            }
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        self.close();
    }
}

type SliceKey = (Arc<str>, Arc<str>);
type PortSlots = Vec<((Arc<str>, Protocol), Arc<Slot>)>;

/// A Service's slices by name: sorted by name, one slice a name. A sorted
/// vector rather than a `BTreeMap`, which was 8 KB of the JavaScript
/// package's module: it is only walked in order, and rebuilt whole (in
/// [`Txn::slices_of`], by a merge) when slices leave or join it.
type ByName = Vec<(Arc<str>, Arc<EndpointSlice>)>;

/// Desired state: every object applied and not deleted.
#[derive(Default)]
struct Store {
    services: HashMap<ServiceKey, Arc<Service>>,
    slices: HashMap<SliceKey, Arc<EndpointSlice>>,
    /// Slices by the Service their label names, by slice name. A slice whose
    /// Service does not exist (yet) waits here.
    by_service: HashMap<ServiceKey, ByName>,
    /// Round-robin slots of live service ports, kept across rebuilds.
    slots: HashMap<ServiceKey, PortSlots>,
    /// The endpoints of every slice in `slices`, against `max_endpoints`.
    endpoints: usize,
}

pub(crate) struct Shared {
    /// Unique among the meshes of this process: names this mesh in the
    /// per-thread snapshot cache.
    id: u64,
    config: Arc<MeshConfig>,
    pub(crate) current: ArcSwap<Snapshot>,
    /// The version of `current`, stored just before it: what a pick
    /// compares its thread's cached snapshot with.
    pub(crate) published: AtomicU64,
    store: Mutex<Store>,
    /// Tasks waiting in [`Mesh::changed`] for the next publish.
    waiters: Mutex<Vec<Waker>>,
}

/// The future [`Mesh::changed`] returns.
#[must_use = "a future does nothing unless polled"]
pub struct Changed {
    shared: Arc<Shared>,
    seen: u64,
}

impl std::fmt::Debug for Changed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changed").field("seen", &self.seen).finish()
    }
}

impl Future for Changed {
    type Output = u64;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u64> {
        let version = self.shared.current.load().version();
        if version > self.seen {
            return Poll::Ready(version);
        }
        {
            let mut waiters = lock_ignoring_poison(&self.shared.waiters);
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
        }
        // Check again: a publish between the first check and the
        // registration has already drained the list.
        let version = self.shared.current.load().version();
        if version > self.seen {
            Poll::Ready(version)
        } else {
            Poll::Pending
        }
    }
}

/// Hands out [`Shared::id`].
static NEXT_MESH_ID: AtomicU64 = AtomicU64::new(0);

fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A mesh: the Kubernetes objects applied so far, and the snapshot built from
/// them for this node.
///
/// `Mesh` is `Send + Sync` and cheap to clone (clones share state). Picks
/// never block and never see half an update; updates are all or nothing.
///
/// ```
/// use pobox::{Client, Destination, Mesh, MeshConfig};
///
/// let mesh = Mesh::new(MeshConfig::new()).unwrap();
/// mesh.apply(br#"
/// apiVersion: v1
/// kind: Service
/// metadata: {name: web, namespace: default}
/// spec:
///   clusterIP: 10.96.0.10
///   ports: [{name: http, port: 80, targetPort: 8080}]
/// ---
/// apiVersion: discovery.k8s.io/v1
/// kind: EndpointSlice
/// metadata:
///   name: web-1
///   namespace: default
///   labels: {kubernetes.io/service-name: web}
/// addressType: IPv4
/// ports: [{name: http, port: 8080, protocol: TCP}]
/// endpoints:
/// - addresses: [10.1.0.1]
/// - addresses: [10.1.0.2]
/// "#).unwrap();
///
/// let dest: Destination = "10.96.0.10:80".parse().unwrap();
/// let first = mesh.pick(&dest, &Client::new()).unwrap();
/// let second = mesh.pick(&dest, &Client::new()).unwrap();
/// assert_eq!(first.addr.to_string(), "10.1.0.1:8080");
/// assert_eq!(second.addr.to_string(), "10.1.0.2:8080");
/// ```
#[derive(Clone)]
pub struct Mesh {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("config", &self.shared.config)
            .field("snapshot", &*self.shared.current.load())
            .finish()
    }
}

impl Mesh {
    /// The mesh behind a handle that keeps its shared state (a route).
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Mesh {
        Mesh { shared }
    }

    /// An empty mesh for the given node.
    pub fn new(config: MeshConfig) -> Result<Mesh, Error> {
        let clock = SystemClock::default();
        Mesh::build(config, Arc::new(clock), |capacity| {
            Affinity::with_system_clock(capacity, clock)
        })
    }

    /// An empty mesh whose session-affinity timeouts read `clock`.
    pub fn with_clock(config: MeshConfig, clock: Arc<dyn Clock>) -> Result<Mesh, Error> {
        let table_clock = clock.clone();
        Mesh::build(config, clock, |capacity| {
            Affinity::new(capacity, table_clock)
        })
    }

    /// An empty mesh whose affinity table `affinity` makes for a capacity;
    /// it must read the same clock as `clock`.
    fn build(
        config: MeshConfig,
        clock: Arc<dyn Clock>,
        affinity: impl FnOnce(usize) -> Affinity,
    ) -> Result<Mesh, Error> {
        let config = Arc::new(config.validated()?);
        let affinity = Arc::new(affinity(config.affinity_capacity_entries()));
        Ok(Mesh {
            shared: Arc::new(Shared {
                id: NEXT_MESH_ID.fetch_add(1, Ordering::Relaxed),
                published: AtomicU64::new(0),
                current: ArcSwap::from_pointee(Snapshot::empty(config.clone(), affinity, clock)),
                config,
                store: Mutex::new(Store::default()),
                waiters: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MeshConfig {
        &self.shared.config
    }

    /// Applies JSON or YAML: one object, a `List`, or multi-document YAML.
    /// All or nothing.
    pub fn apply(&self, input: &[u8]) -> Result<ApplyReport, Error> {
        let parsed = parse::parse_with_limits(input, self.shared.config.configured_limits())?;
        let mut report = self.update(parsed.objects.into_iter().map(Update::Apply))?;
        report.prepend_warnings(parsed.warnings);
        Ok(report)
    }

    /// Replaces everything with exactly the objects in `input`. All or nothing.
    pub fn replace(&self, input: &[u8]) -> Result<ApplyReport, Error> {
        let parsed = parse::parse_with_limits(input, self.shared.config.configured_limits())?;
        let mut report = self.update([Update::Reset(parsed.objects)])?;
        report.prepend_warnings(parsed.warnings);
        Ok(report)
    }

    /// Deletes one object; deleting one that is not there changes nothing.
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<ApplyReport, Error> {
        self.update([Update::Delete {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }])
    }

    /// Applies a batch of updates, all or nothing. Later updates in the batch
    /// win over earlier ones for the same object. A batch that changes
    /// nothing publishes nothing.
    pub fn update(&self, updates: impl IntoIterator<Item = Update>) -> Result<ApplyReport, Error> {
        let mut store = self.lock();
        let mut txn = Txn::default();
        for update in updates {
            txn.stage(&store, update);
        }
        txn.drop_no_ops(&store);
        let mut warnings = Vec::new();
        for slice in txn.slices.values().flatten() {
            if slice.service().is_none() {
                warnings.push(format!(
                    "EndpointSlice {}/{}: no kubernetes.io/service-name label; it serves no Service",
                    slice.namespace(),
                    slice.name()
                ));
            }
        }
        let endpoints = txn.endpoints_after(&store);
        let max_endpoints = self.shared.config.configured_limits().endpoints_limit();
        if endpoints > max_endpoints && endpoints > store.endpoints {
            return Err(Error::limit(
                "endpoints",
                "max_endpoints",
                max_endpoints,
                endpoints,
                "",
            ));
        }
        let current = self.shared.current.load_full();
        if txn.is_empty() {
            return Ok(ApplyReport {
                version: current.version(),
                changed: false,
                warnings,
            });
        }

        let (changes, slots, slices) = txn.build(&store, &self.shared.config, &current);
        let next = current.with_services(changes)?;
        txn.commit(&mut store, slots, slices);
        let version = next.version();
        // The version first: a pick that reads it and misses its cache loads
        // the snapshot itself, so no pick can return an older version than
        // `snapshot()` has already shown on any thread.
        self.shared.published.store(version, Ordering::Release);
        self.shared.current.store(Arc::new(next));
        // Wake after the store: a waiter that registered before this point
        // is woken, and one that registers later sees the new version.
        let waiters = std::mem::take(&mut *lock_ignoring_poison(&self.shared.waiters));
        waiters.into_iter().for_each(Waker::wake);
        Ok(ApplyReport {
            version,
            changed: true,
            warnings,
        })
    }

    /// The current snapshot. Hold it as long as needed; it never changes.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }

    /// The number of session-affinity bindings held (at most the configured
    /// capacity).
    pub fn affinity_entries(&self) -> usize {
        self.shared.current.load().affinity_entries()
    }

    /// The current snapshot version.
    pub fn version(&self) -> u64 {
        self.shared.current.load().version()
    }

    /// A future that resolves, with the new version, once the mesh has
    /// published a version newer than `seen`; at once if it already has.
    ///
    /// It works with any executor (it needs no runtime): this is how a
    /// listener, a tower `Discover` stream or a binding learns that the
    /// endpoints changed without polling. Versions can be skipped: a waiter
    /// sees the latest one, not every one.
    ///
    /// ```
    /// # use pobox::{Mesh, MeshConfig};
    /// # use std::future::Future;
    /// # use std::task::{Context, Poll, Waker};
    /// let mesh = Mesh::new(MeshConfig::new()).unwrap();
    /// let mut changed = std::pin::pin!(mesh.changed(mesh.version()));
    /// let mut cx = Context::from_waker(Waker::noop());
    /// assert!(changed.as_mut().poll(&mut cx).is_pending());
    /// mesh.apply(br#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},
    ///   "spec":{"clusterIP":"10.96.0.10","ports":[{"port":80}]}}"#).unwrap();
    /// assert_eq!(changed.as_mut().poll(&mut cx), Poll::Ready(mesh.version()));
    /// ```
    pub fn changed(&self, seen: u64) -> Changed {
        Changed {
            shared: self.shared.clone(),
            seen,
        }
    }

    /// A [`Route`] to `dest`: picks through it resolve the destination once
    /// per snapshot version instead of on every pick. A Service name is
    /// resolved in `namespace` (`default` when `None`).
    pub fn route(&self, dest: &Destination, namespace: Option<&str>) -> Route {
        let (affinity, clock) = self.shared.current.load().shared_parts();
        Route::new(self.shared.clone(), dest, namespace, affinity, clock)
    }

    /// Resolves `dest` and picks an eligible endpoint from the current snapshot.
    #[inline]
    pub fn pick(&self, dest: &Destination, client: &Client<'_>) -> Result<Pick, PickError> {
        let mut picked = Handoff::default();
        with_local(|local| {
            let snapshot = self.cached(&mut local.snapshot);
            if let Some(endpoint) = snapshot.try_pick(dest, client, &mut local.cursors) {
                picked.put(endpoint.addr(), snapshot.version());
            }
        });
        match picked.take() {
            Some(pick) => Ok(pick),
            None => self.pick_failed(dest, client),
        }
    }

    /// Why a pick failed, or a pick from a snapshot published since.
    #[cold]
    #[inline(never)]
    fn pick_failed(&self, dest: &Destination, client: &Client<'_>) -> Result<Pick, PickError> {
        let snapshot = self.shared.current.load();
        let endpoint = snapshot.pick(dest, client)?;
        Ok(Pick {
            addr: endpoint.addr(),
            version: snapshot.version(),
        })
    }

    /// The current snapshot through this thread's cache: when the thread
    /// last picked from this mesh and nothing was published since, the
    /// snapshot it holds, for the price of one atomic load; otherwise the
    /// current one, which the cache then keeps.
    ///
    /// The cache is correct because versions name snapshots: the cached
    /// snapshot of version `v` is the one published as `v`, whole. It never
    /// goes backwards: a hit is the newest version announced, and a miss
    /// loads the current snapshot. A version is announced just before its
    /// snapshot is stored, so a pick in between loads the previous snapshot
    /// once more, never one older than any `snapshot()` or pick on any
    /// thread has already returned. Its cost is memory: a thread keeps
    /// the last snapshot it picked from alive until it picks again (from any
    /// mesh) or exits. Snapshots share unchanged Services, so what an older
    /// one holds beyond the current is only what changed since.
    #[inline]
    fn cached<'c>(&self, cache: &'c mut Option<(u64, Arc<Snapshot>)>) -> &'c Snapshot {
        let published = self.shared.published.load(Ordering::Acquire);
        let fresh =
            matches!(cache, Some((id, s)) if *id == self.shared.id && s.version() == published);
        if !fresh {
            *cache = Some((self.shared.id, self.shared.current.load_full()));
        }
        match cache {
            Some((_, snapshot)) => snapshot,
            None => unreachable!("filled above"),
        }
    }

    /// Starts a request: picks like [`Mesh::pick`] and, for Services that
    /// count requests (least-request) or watch health (outlier detection),
    /// counts it in flight until the returned [`Request`] is finished or
    /// dropped. Report its outcome with [`Request::finish`].
    pub fn begin(&self, dest: &Destination, client: &Client<'_>) -> Result<Request, PickError> {
        let snapshot = self.shared.current.load();
        let resolved = snapshot.resolve(dest, client)?;
        let endpoint = resolved.pick(client)?;
        let pick = Pick {
            addr: endpoint.addr(),
            version: snapshot.version(),
        };
        let position = resolved.port.position_of(endpoint);
        Ok(Request::start(
            pick,
            resolved.port,
            || resolved.port_arc(),
            position,
            snapshot.clock(),
        ))
    }

    /// Reports the outcome of a request to `endpoint` of `dest`'s service
    /// port, for hosts that do not hold a [`Request`] (a C or Go caller).
    /// Unknown endpoints and Services without outlier detection are ignored.
    pub fn report(
        &self,
        dest: &Destination,
        endpoint: SocketAddr,
        outcome: Outcome,
    ) -> Result<(), PickError> {
        let snapshot = self.shared.current.load_full();
        let resolved = snapshot.resolve(dest, &Client::new())?;
        snapshot.record(resolved.port, endpoint, outcome);
        Ok(())
    }

    /// Reports an outcome for `endpoint` in every service port that has it,
    /// for callers that know only the address they connected to.
    pub fn report_endpoint(&self, endpoint: SocketAddr, outcome: Outcome) {
        let snapshot = self.shared.current.load_full();
        // Each port records on its own: the order of the visit is immaterial.
        for entry in snapshot.services_unordered() {
            for port in entry.ports() {
                snapshot.record(port, endpoint, outcome);
            }
        }
    }

    /// Ends a request counted in flight by a host that does not hold a
    /// [`Request`]: the explicit completion call of least-request.
    pub fn end(&self, dest: &Destination, endpoint: SocketAddr) -> Result<(), PickError> {
        let snapshot = self.shared.current.load_full();
        let resolved = snapshot.resolve(dest, &Client::new())?;
        if let Some(state) = resolved.port.state_of_endpoint(endpoint) {
            state.end();
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock happens before commit (commit cannot
        // panic), so the store is still consistent.
        self.shared.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// === Txn ===

/// Staged changes: `None` removes.
#[derive(Default)]
struct Txn {
    services: HashMap<ServiceKey, Option<Arc<Service>>>,
    slices: HashMap<SliceKey, Option<Arc<EndpointSlice>>>,
}

impl Txn {
    fn stage(&mut self, store: &Store, update: Update) {
        match update {
            Update::Apply(Object::Service(s)) => {
                self.services.insert(s.key().clone(), Some(s));
            }
            Update::Apply(Object::EndpointSlice(e)) => {
                self.slices
                    .insert((e.namespace.clone(), e.name.clone()), Some(e));
            }
            Update::Delete {
                kind: Kind::Service,
                namespace,
                name,
            } => {
                self.services
                    .insert(ServiceKey::new(&namespace, &name), None);
            }
            Update::Delete {
                kind: Kind::EndpointSlice,
                namespace,
                name,
            } => {
                self.slices.insert((namespace.into(), name.into()), None);
            }
            Update::Reset(objects) => {
                for key in store.services.keys() {
                    self.services.insert(key.clone(), None);
                }
                for key in store.slices.keys() {
                    self.slices.insert(key.clone(), None);
                }
                for v in self.services.values_mut() {
                    *v = None;
                }
                for v in self.slices.values_mut() {
                    *v = None;
                }
                for object in objects {
                    self.stage(store, Update::Apply(object));
                }
            }
        }
    }

    fn drop_no_ops(&mut self, store: &Store) {
        self.services
            .retain(|k, new| store.services.get(k) != new.as_ref());
        self.slices
            .retain(|k, new| store.slices.get(k) != new.as_ref());
    }

    fn is_empty(&self) -> bool {
        self.services.is_empty() && self.slices.is_empty()
    }

    /// The endpoints the store will hold once this is committed.
    fn endpoints_after(&self, store: &Store) -> usize {
        let mut total = store.endpoints;
        for (key, new) in &self.slices {
            if let Some(old) = store.slices.get(key) {
                total -= old.endpoints.len();
            }
            if let Some(new) = new {
                total += new.endpoints.len();
            }
        }
        total
    }

    /// The staged slices by each Service they leave or join.
    fn slices_by_service<'t>(&'t self, store: &Store) -> HashMap<ServiceKey, Vec<&'t SliceKey>> {
        let mut by_service: HashMap<ServiceKey, Vec<&SliceKey>> = HashMap::new();
        for (k, new) in &self.slices {
            for slice in [store.slices.get(k), new.as_ref()].into_iter().flatten() {
                if let Some(owner) = slice.service_key() {
                    by_service.entry(owner).or_default().push(k);
                }
            }
        }
        by_service
    }

    /// The new entry of every affected Service, and the slots its ports use.
    #[allow(clippy::type_complexity)]
    fn build(
        &self,
        store: &Store,
        config: &MeshConfig,
        current: &Snapshot,
    ) -> (
        Vec<(ServiceKey, Option<ServiceEntry>)>,
        Vec<(ServiceKey, PortSlots)>,
        HashMap<ServiceKey, ByName>,
    ) {
        let mut changes = Vec::new();
        let mut all_slots = Vec::new();
        // The new slices of every Service a staged slice leaves or joins,
        // merged once: the entries below are built from them, and `commit`
        // keeps them.
        let new_slices: HashMap<ServiceKey, ByName> = self
            .slices_by_service(store)
            .into_iter()
            .map(|(owner, staged)| {
                let slices = self.slices_of(store, &owner, &staged);
                (owner, slices)
            })
            .collect();
        // The Services whose entries must be rebuilt, in a stable order: by
        // their `namespace/name` text, which orders as `ServiceKey` does (a
        // namespace, always a DNS label here, has no '/'). Sorted as text, the
        // one sort of strings in the JavaScript package's module (the DNS
        // answers sort their labels so). Equal texts are the same key: an
        // unstable sort loses nothing.
        let mut affected: Vec<&str> = self
            .services
            .keys()
            .chain(new_slices.keys())
            .map(ServiceKey::as_str)
            .collect();
        affected.sort_unstable();
        affected.dedup();
        for text in affected {
            let (namespace, name) = text.split_once('/').expect("namespace/name");
            let key = ServiceKey::new(namespace, name);
            let service = match self.services.get(&key) {
                Some(staged) => staged.clone(),
                None => store.services.get(&key).cloned(),
            };
            let Some(service) = service else {
                changes.push((key.clone(), None));
                all_slots.push((key, Vec::new()));
                continue;
            };
            // The Service's own key, equal to `key`: one string fewer held.
            let key = service.key().clone();
            let slices = new_slices
                .get(&key)
                .or_else(|| store.by_service.get(&key))
                .map_or(&[][..], Vec::as_slice);
            let old_slots = store.slots.get(&key);
            let mut slots: PortSlots = Vec::new();
            let mut slot_for = |p: &crate::model::ServicePort| {
                let id = (p.name.clone(), p.protocol());
                let slot = old_slots
                    .and_then(|v| v.iter().find(|(k, _)| *k == id))
                    .map(|(_, s)| s.clone())
                    .unwrap_or_else(|| Arc::new(Slot::new()));
                slots.push((id, slot.clone()));
                slot
            };
            let entry = build_service(
                &service,
                slices.iter().map(|(_, s)| &**s),
                &mut slot_for,
                config,
                current.service(key.namespace(), key.name()),
            );
            changes.push((key.clone(), Some(entry)));
            all_slots.push((key, slots));
        }
        (changes, all_slots, new_slices)
    }

    /// The slices of a Service once this transaction is committed, by name;
    /// `staged` are the staged slices that leave or join it (all in its
    /// namespace), merged with the ones it has by name.
    fn slices_of(&self, store: &Store, key: &ServiceKey, staged: &[&SliceKey]) -> ByName {
        let old = store.by_service.get(key).map_or(&[][..], Vec::as_slice);
        // Their names, sorted by the one sort of strings (see `build`).
        let mut names: Vec<&str> = staged.iter().map(|k| &*k.1).collect();
        names.sort_unstable();
        names.dedup();
        let namespace: Arc<str> = key.namespace().into();
        let mut slices = Vec::with_capacity(old.len() + names.len());
        let mut old = old.iter().peekable();
        for name in names {
            while let Some(kept) = old.next_if(|(n, _)| **n < *name) {
                slices.push(kept.clone());
            }
            // The slice of this name, if it had one, is replaced or leaves.
            old.next_if(|(n, _)| **n == *name);
            let slice_key = (namespace.clone(), Arc::from(name));
            if let Some(Some(slice)) = self.slices.get(&slice_key) {
                if slice.service() == Some(key.name()) {
                    slices.push((slice_key.1, slice.clone()));
                }
            }
        }
        slices.extend(old.cloned());
        slices
    }

    /// Makes the transaction the store's state; `slices` are the new
    /// slices of the Services staged slices leave or join, from `build`.
    fn commit(
        self,
        store: &mut Store,
        slots: Vec<(ServiceKey, PortSlots)>,
        slices: HashMap<ServiceKey, ByName>,
    ) {
        store.endpoints = self.endpoints_after(store);
        for (owner, slices) in slices {
            if slices.is_empty() {
                store.by_service.remove(&owner);
            } else {
                store.by_service.insert(owner, slices);
            }
        }
        for (key, new) in self.services {
            match new {
                Some(s) => store.services.insert(key, s),
                None => store.services.remove(&key),
            };
        }
        for (key, new) in self.slices {
            match new {
                Some(slice) => store.slices.insert(key, slice),
                None => store.slices.remove(&key),
            };
        }
        for (key, port_slots) in slots {
            if port_slots.is_empty() {
                store.slots.remove(&key);
            } else {
                store.slots.insert(key, port_slots);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handoff_gives_back_the_pick_put() {
        assert_eq!(Handoff::default().take(), None);
        for addr in [
            "10.1.2.3:8080",
            "0.0.0.1:0",
            "255.255.255.255:65535",
            "[fd00::1]:443",
            "[::ffff:10.1.2.3]:80",
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:1",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut handoff = Handoff::default();
            handoff.put(addr, u64::MAX - 1);
            assert_eq!(
                handoff.take(),
                Some(Pick {
                    addr,
                    version: u64::MAX - 1
                })
            );
        }
    }

    /// A small deterministic generator (no seed to keep).
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    /// What the store's slices say each Service's slices are, by name.
    fn reference(store: &Store) -> HashMap<ServiceKey, Vec<(String, *const EndpointSlice)>> {
        let mut by_service: HashMap<ServiceKey, Vec<(String, *const EndpointSlice)>> =
            HashMap::new();
        for ((_, name), slice) in &store.slices {
            if let Some(owner) = slice.service_key() {
                let slices = by_service.entry(owner).or_default();
                slices.push((name.to_string(), Arc::as_ptr(slice)));
            }
        }
        for slices in by_service.values_mut() {
            slices.sort();
        }
        by_service
    }

    fn held(store: &Store) -> HashMap<ServiceKey, Vec<(String, *const EndpointSlice)>> {
        store
            .by_service
            .iter()
            .map(|(owner, slices)| {
                let slices = slices
                    .iter()
                    .map(|(name, slice)| (name.to_string(), Arc::as_ptr(slice)))
                    .collect();
                (owner.clone(), slices)
            })
            .collect()
    }

    /// Every Service port's endpoints, in order, with their conditions and
    /// hints.
    fn state(mesh: &Mesh) -> Vec<String> {
        let snapshot = mesh.snapshot();
        let mut lines = Vec::new();
        for entry in snapshot.services() {
            for port in entry.ports() {
                lines.push(format!(
                    "{} {}: {:?} {:?}",
                    entry.service().key(),
                    port.label(),
                    port.endpoints(),
                    entry.dns_endpoints(),
                ));
            }
        }
        lines
    }

    /// Slices joining, leaving, moving between Services (and to one that
    /// does not exist yet) and replaced, several in one update: the slices
    /// the store holds by Service are always those its slices name, in name
    /// order, and the snapshot is the one built from scratch from the same
    /// objects.
    #[test]
    fn slices_by_service_follow_every_update() {
        let mesh = Mesh::new(MeshConfig::new()).unwrap();
        let mut rng = Lcg(7);
        let namespaces = ["a", "b"];
        let services = ["web", "api", "gone", "x/y"];
        for step in 0..400 {
            let mut items = Vec::new();
            for _ in 0..=rng.below(3) {
                let ns = namespaces[rng.below(2) as usize];
                let name = format!("s{}", rng.below(6));
                if rng.below(5) == 0 {
                    mesh.delete(Kind::EndpointSlice, ns, &name).unwrap();
                    continue;
                }
                let mut labels = serde_json::Map::new();
                let service = services[rng.below(4) as usize];
                if rng.below(6) != 0 {
                    labels.insert(LABEL.into(), service.into());
                }
                let endpoints: Vec<_> = (0..=rng.below(2))
                    .map(|_| {
                        serde_json::json!({
                            "addresses": [format!("10.0.0.{}", 1 + rng.below(4))],
                            "conditions": {"terminating": rng.below(3) == 0},
                            "hostname": format!("h{}", rng.below(3)),
                            "zone": format!("z{}", rng.below(2)),
                        })
                    })
                    .collect();
                items.push(serde_json::json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": name, "namespace": ns, "labels": labels},
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": 8080}],
                    "endpoints": endpoints,
                }));
            }
            if step % 7 == 0 {
                let ns = namespaces[rng.below(2) as usize];
                let name = ["web", "api"][rng.below(2) as usize];
                if rng.below(4) == 0 {
                    mesh.delete(Kind::Service, ns, name).unwrap();
                } else {
                    items.push(serde_json::json!({
                        "apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": name, "namespace": ns},
                        "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]},
                    }));
                }
            }
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
            mesh.apply(list.to_string().as_bytes()).unwrap();

            let store = mesh.lock();
            assert_eq!(held(&store), reference(&store), "step {step}");
            let fresh = Mesh::new(MeshConfig::new()).unwrap();
            let updates: Vec<Update> = store
                .services
                .values()
                .map(|s| Update::Apply(Object::Service(s.clone())))
                .chain(
                    store
                        .slices
                        .values()
                        .map(|s| Update::Apply(Object::EndpointSlice(s.clone()))),
                )
                .collect();
            drop(store);
            fresh.update(updates).unwrap();
            assert_eq!(state(&mesh), state(&fresh), "step {step}");
        }
    }

    const LABEL: &str = crate::validate::LABEL_SERVICE_NAME;
}
