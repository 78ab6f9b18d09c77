//! [`Route`]: one destination, resolved once per snapshot version.
//!
//! [`Mesh::pick`] resolves its destination on every call: a frontend hash
//! lookup for a virtual IP, a name lookup for a Service name. A caller that
//! sends to the same destination again and again (a connection pool, an HTTP
//! client's dialer, a proxy's upstream) can resolve it once instead: a route
//! remembers, per thread, the service port its destination resolved to and
//! the snapshot version it resolved in, and resolves again only when the
//! mesh publishes a new version. A pick through a route is then the version
//! check and the balancing policy, nothing else: the same rule, the same
//! per-thread round-robin cursors and the same affinity table as
//! [`Mesh::pick`], so mixing the two gives the same sequence.
//!
//! [`Mesh::pick`]: crate::Mesh::pick

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::affinity::{Affinity, Clock};
use crate::balance::{with_local, Cursors, RouteId};
use crate::dest::{Client, Destination};
use crate::error::PickError;
use crate::mesh::{Handoff, Pick, Request, Shared};
use crate::snapshot::{pick_in, PortEntry};

/// A destination bound to a mesh, resolved once per snapshot version on
/// each thread that picks through it. Made by [`Mesh::route`].
///
/// `Send` and `Sync`: share one route between threads, or make one per
/// thread; each thread keeps its own resolution. A route to a Service that
/// does not exist yet is fine: its picks fail with
/// [`PickError::NoService`] until the Service is applied.
///
/// What a thread resolved stays in that thread's cache (one service port,
/// not the snapshot) until the thread picks through a route that reuses the
/// id, or exits.
///
/// ```
/// # use pobox::{Client, Mesh, MeshConfig};
/// let mesh = Mesh::new(MeshConfig::new()).unwrap();
/// let route = mesh.route(&"10.96.0.10:80".parse().unwrap(), None);
/// assert!(route.pick(&Client::new()).is_err()); // no Service yet
/// mesh.apply(br#"{"apiVersion":"v1","kind":"List","items":[
///   {"apiVersion":"v1","kind":"Service","metadata":{"name":"web","namespace":"default"},
///    "spec":{"clusterIP":"10.96.0.10","ports":[{"port":80,"targetPort":8080}]}},
///   {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice",
///    "metadata":{"name":"web-1","namespace":"default","labels":{"kubernetes.io/service-name":"web"}},
///    "addressType":"IPv4","ports":[{"port":8080}],"endpoints":[{"addresses":["10.1.0.1"]}]}]}"#).unwrap();
/// assert_eq!(route.pick(&Client::new()).unwrap().addr.to_string(), "10.1.0.1:8080");
/// ```
///
/// [`Mesh::route`]: crate::Mesh::route
pub struct Route {
    shared: Arc<Shared>,
    dest: Destination,
    namespace: Option<Box<str>>,
    /// Names this route in every thread's cache; the index is reused once
    /// the route is dropped, the generation is not.
    id: RouteId,
    affinity: Arc<Affinity>,
    clock: Arc<dyn Clock>,
}

/// What a route resolved to on one thread.
#[derive(Default)]
pub(crate) struct Resolution {
    /// The route's slot generation (0: never used on this thread).
    generation: u32,
    /// The snapshot version it was resolved in.
    version: u64,
    /// The service port and the index of its eligible set; `None` when the
    /// destination did not resolve in that version.
    port: Option<(Arc<PortEntry>, usize)>,
}

impl Route {
    pub(crate) fn new(
        shared: Arc<Shared>,
        dest: &Destination,
        namespace: Option<&str>,
        affinity: Arc<Affinity>,
        clock: Arc<dyn Clock>,
    ) -> Route {
        Route {
            shared,
            dest: dest.clone(),
            namespace: namespace.map(Box::from),
            id: RouteId::new(),
            affinity,
            clock,
        }
    }

    /// The destination.
    pub fn destination(&self) -> &Destination {
        &self.dest
    }

    /// The namespace a Service name is resolved in (`default` when `None`).
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Picks an eligible endpoint, as [`Mesh::pick`] would for the route's
    /// destination; the client's namespace is ignored (the route's own is
    /// used).
    ///
    /// [`Mesh::pick`]: crate::Mesh::pick
    #[inline]
    pub fn pick(&self, client: &Client<'_>) -> Result<Pick, PickError> {
        match self.try_pick(client) {
            Some(pick) => Ok(pick),
            None => self.pick_failed(client),
        }
    }

    /// [`Route::pick`] without the reason for a failure: `None` when the
    /// destination has no Service or no eligible endpoint. For bindings that
    /// carry a result code and fetch the message only on failure (from
    /// [`Route::pick`], which may then find a newer snapshot and succeed).
    #[inline]
    pub fn try_pick(&self, client: &Client<'_>) -> Option<Pick> {
        let mut picked = Handoff::default();
        self.try_pick_with(client, |pick| picked.put(pick.addr, pick.version));
        picked.take()
    }

    /// Whether a pick through this route reads the client's IP, as the
    /// service port it resolves to in the current snapshot says
    /// ([`PortEntry::uses_client_ip`]); `false` when it does not resolve.
    /// For callers to whom the address costs something to learn (a
    /// proxy-wasm filter reads it from a host property): they may leave
    /// [`Client::ip`] unset when this says it is not used.
    ///
    /// [`PortEntry::uses_client_ip`]: crate::PortEntry::uses_client_ip
    pub fn uses_client_ip(&self) -> bool {
        let mut uses = false;
        self.with_resolution(|resolution, _| {
            uses = resolution
                .port
                .as_ref()
                .is_some_and(|(port, _)| port.uses_client_ip());
        });
        uses
    }

    /// [`Route::try_pick`] handing the pick to `f` inside the pick, for a
    /// binding that converts it into its own type (a C struct): the pick is
    /// not moved out of the thread's state first. Returns whether there was
    /// one (as [`Route::try_pick`] returns `Some`).
    #[inline]
    pub fn try_pick_with(&self, client: &Client<'_>, f: impl FnOnce(Pick)) -> bool {
        let mut picked = false;
        self.with_resolution(|resolution, cursors| {
            if let Some(pick) = self.pick_from(resolution, client, cursors) {
                f(pick);
                picked = true;
            }
        });
        picked
    }

    /// Starts a request, as [`Mesh::begin`] does for the route's
    /// destination: for Services that count requests (least-request) or
    /// watch health (outlier detection), the endpoint counts it in flight
    /// until the [`Request`] is finished or dropped.
    ///
    /// [`Mesh::begin`]: crate::Mesh::begin
    pub fn begin(&self, client: &Client<'_>) -> Result<Request, PickError> {
        let mut started = None;
        self.with_resolution(|resolution, cursors| {
            let Some((port, set)) = &resolution.port else {
                return;
            };
            if let Some(endpoint) =
                pick_in(port, *set, &self.affinity, &self.clock, client, cursors)
            {
                let pick = Pick {
                    addr: endpoint.addr(),
                    version: resolution.version,
                };
                started = Some(Request::start(
                    pick,
                    port,
                    || port.clone(),
                    port.position_of(endpoint),
                    &self.clock,
                ));
            }
        });
        match started {
            Some(request) => Ok(request),
            None => {
                // Why, from the current snapshot (or a request from it).
                crate::Mesh::from_shared(self.shared.clone())
                    .begin(&self.dest, &self.in_namespace(client))
            }
        }
    }

    /// Makes `count` picks in one pass, pick `i` for `client(i)`, and hands
    /// each to `each(i, pick)` (`None`: as [`Route::try_pick`]). The batch
    /// checks the version and reaches the thread's state once, and every
    /// pick comes from the same snapshot version: the cheapest way to make
    /// many picks, for a binding's batch call.
    #[inline]
    pub fn try_pick_each<'c>(
        &self,
        count: usize,
        mut client: impl FnMut(usize) -> Client<'c>,
        mut each: impl FnMut(usize, Option<Pick>),
    ) {
        self.with_resolution(|resolution, cursors| {
            for i in 0..count {
                each(i, self.pick_from(resolution, &client(i), cursors));
            }
        });
    }

    /// Runs `f` with this thread's resolution of the route, brought up to
    /// the published version first, and the thread's round-robin cursors.
    #[inline(always)]
    fn with_resolution(&self, f: impl FnOnce(&Resolution, &mut Cursors)) {
        with_local(|local| {
            let published = self.shared.published.load(Ordering::Acquire);
            let index = self.id.index as usize;
            if index >= local.routes.len() {
                local.routes.resize_with(index + 1, Resolution::default);
            }
            let resolution = &mut local.routes[index];
            if resolution.generation != self.id.generation || resolution.version != published {
                self.resolve(resolution);
            }
            f(resolution, &mut local.cursors);
        });
    }

    #[inline(always)]
    fn pick_from(
        &self,
        resolution: &Resolution,
        client: &Client<'_>,
        cursors: &mut Cursors,
    ) -> Option<Pick> {
        let (port, set) = resolution.port.as_ref()?;
        let endpoint = pick_in(port, *set, &self.affinity, &self.clock, client, cursors)?;
        Some(Pick {
            addr: endpoint.addr(),
            version: resolution.version,
        })
    }

    /// `client` with the route's namespace in place of its own.
    fn in_namespace<'c>(&'c self, client: &Client<'c>) -> Client<'c> {
        Client {
            namespace: self.namespace.as_deref(),
            ..*client
        }
    }

    /// Resolves the destination in the current snapshot.
    #[cold]
    #[inline(never)]
    fn resolve(&self, resolution: &mut Resolution) {
        let snapshot = self.shared.current.load();
        let client = self.in_namespace(&Client::new());
        *resolution = Resolution {
            generation: self.id.generation,
            version: snapshot.version(),
            port: snapshot
                .resolve(&self.dest, &client)
                .ok()
                .map(|r| (r.port_arc(), r.set())),
        };
    }

    /// Why a pick failed, or a pick from a snapshot published since.
    #[cold]
    #[inline(never)]
    fn pick_failed(&self, client: &Client<'_>) -> Result<Pick, PickError> {
        let snapshot = self.shared.current.load();
        let client = self.in_namespace(client);
        let endpoint = snapshot.pick(&self.dest, &client)?;
        Ok(Pick {
            addr: endpoint.addr(),
            version: snapshot.version(),
        })
    }
}

impl fmt::Debug for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Route")
            .field("destination", &self.dest)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}
