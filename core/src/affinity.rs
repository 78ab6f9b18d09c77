//! Session affinity (`sessionAffinity: ClientIP`), with kube-proxy's
//! semantics and the fixes users asked of others:
//!
//! * keyed by client IP per service port (and per eligible set: the same
//!   client reaching the port by cluster IP and by node port has two entries);
//! * the timer restarts on every pick;
//! * an entry whose endpoint is no longer pickable (removed, not ready,
//!   terminating while ready peers exist, drained, ejected) is dropped when
//!   next read and the client is balanced afresh — kubernetes/kubernetes#110302
//!   kept sending to a NotReady pod, cilium/cilium#27096 to a terminating one;
//! * the table is bounded: past its capacity the least recently used entry is
//!   evicted, so a client spraying source addresses cannot grow memory.
//!
//! The table is split into shards, each behind its own mutex, so picks for
//! different clients rarely meet. The capacity is divided among the shards
//! exactly (their capacities sum to it, and a capacity below the shard
//! count makes as many shards as entries), so the table never holds more
//! entries than configured. It lives beside the snapshots: every
//! snapshot of a mesh shares it, and entries survive snapshot updates.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::hash::FoldBuild;

/// The number of affinity entries a mesh keeps by default.
pub const DEFAULT_AFFINITY_CAPACITY: usize = 262_144;

const SHARDS: usize = 64;
const NIL: u32 = u32::MAX;

/// A source of monotonic time for affinity timeouts; inject one to test
/// timeouts exactly, or where `std::time::Instant` is not available.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time since some fixed origin; must never go backwards.
    fn now(&self) -> Duration;
}

/// `std::time::Instant`, from when the clock was made.
#[derive(Debug)]
pub struct SystemClock {
    #[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
    origin: std::time::Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            #[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
            origin: std::time::Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    #[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// `wasm32-unknown-unknown` has no clock: time stands still (entries
    /// never expire) unless the host injects one.
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

/// A clock that moves only when told: for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: Mutex<Duration>,
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What an entry is keyed by: the service port's slot (id and generation,
/// so a reused id never inherits entries), the eligible set, the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub slot: (u32, u32),
    pub lane: u8,
    pub client: IpAddr,
}

/// What a client is bound to: the endpoint's address, and where it was in
/// its port's endpoints when bound (a hint that spares a search while the
/// port's endpoints stay as they were; checked against the address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bound {
    pub addr: SocketAddr,
    pub position: u32,
}

struct Node {
    key: Key,
    endpoint: Bound,
    last: Duration,
    prev: u32,
    next: u32,
}

/// One shard: a map to slab nodes on a most-recently-used list.
struct Shard {
    map: HashMap<Key, u32, FoldBuild>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used: evicted first.
    tail: u32,
    capacity: usize,
}

impl Shard {
    fn new(capacity: usize) -> Shard {
        Shard {
            map: HashMap::default(),
            nodes: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity,
        }
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = (self.nodes[i as usize].prev, self.nodes[i as usize].next);
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        self.nodes[i as usize].prev = NIL;
        self.nodes[i as usize].next = self.head;
        if self.head != NIL {
            self.nodes[self.head as usize].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(i) = self.map.remove(key) {
            self.unlink(i);
            self.free.push(i);
        }
    }

    fn insert(&mut self, key: Key, endpoint: Bound, now: Duration) {
        if let Some(&i) = self.map.get(&key) {
            let node = &mut self.nodes[i as usize];
            node.endpoint = endpoint;
            node.last = now;
            self.unlink(i);
            self.push_front(i);
            return;
        }
        if self.map.len() >= self.capacity {
            let lru = self.tail;
            let old = self.nodes[lru as usize].key;
            self.remove(&old);
        }
        let node = Node {
            key,
            endpoint,
            last: now,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        self.map.insert(key, i);
        self.push_front(i);
    }
}

/// The affinity table of a mesh. See the module documentation.
pub(crate) struct Affinity {
    shards: Box<[Mutex<Shard>]>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Affinity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Affinity")
            .field("entries", &self.len())
            .finish()
    }
}

impl Affinity {
    pub(crate) fn new(capacity: usize, clock: Arc<dyn Clock>) -> Affinity {
        // Rounding each shard's share up would let the table hold up to
        // SHARDS - 1 entries more than asked for (and 64 for a capacity of
        // 1): the first `extra` shards take one entry more instead.
        let capacity = capacity.max(1);
        let shards = capacity.min(SHARDS);
        let (base, extra) = (capacity / shards, capacity % shards);
        Affinity {
            shards: (0..shards)
                .map(|i| Mutex::new(Shard::new(base + usize::from(i < extra))))
                .collect(),
            clock,
        }
    }

    /// The most entries the table holds: the sum of its shards' capacities.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).capacity)
            .sum()
    }

    fn shard(&self, key: &Key) -> std::sync::MutexGuard<'_, Shard> {
        use std::hash::BuildHasher;
        let i = (FoldBuild::default().hash_one(key) >> 32) as usize % self.shards.len();
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The time by the table's clock, for [`Affinity::get`] and
    /// [`Affinity::insert`]: one read serves a miss and its insert.
    pub(crate) fn now(&self) -> Duration {
        self.clock.now()
    }

    /// What `pickable` makes of the endpoint this client is bound to, if the
    /// binding is fresh at `now` and `pickable` accepts its endpoint (returns
    /// `Some`); a stale or unpickable binding is dropped. A hit restarts the
    /// timer.
    pub(crate) fn get<T>(
        &self,
        key: &Key,
        timeout: Duration,
        now: Duration,
        pickable: impl FnOnce(Bound) -> Option<T>,
    ) -> Option<T> {
        let mut shard = self.shard(key);
        let i = *shard.map.get(key)?;
        let node = &shard.nodes[i as usize];
        let found = if now.saturating_sub(node.last) >= timeout {
            None
        } else {
            pickable(node.endpoint)
        };
        if found.is_none() {
            shard.remove(key);
            return None;
        }
        shard.nodes[i as usize].last = now;
        shard.unlink(i);
        shard.push_front(i);
        found
    }

    /// Binds the client to `endpoint` from `now`.
    pub(crate) fn insert(&self, key: Key, endpoint: Bound, now: Duration) {
        self.shard(&key).insert(key, endpoint, now);
    }

    /// The number of entries (fresh or not yet found stale).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(client: u8) -> Key {
        Key {
            slot: (1, 1),
            lane: 0,
            client: IpAddr::from([10, 0, 0, client]),
        }
    }

    fn ep(n: u8) -> Bound {
        Bound {
            addr: SocketAddr::from(([10, 1, 0, n], 80)),
            position: n as u32,
        }
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let mut s = Shard::new(3);
        s.insert(key(1), ep(1), Duration::ZERO);
        s.insert(key(2), ep(2), Duration::ZERO);
        s.insert(key(3), ep(3), Duration::ZERO);
        // Touch 1, so 2 is the least recently used.
        s.insert(key(1), ep(1), Duration::ZERO);
        s.insert(key(4), ep(4), Duration::ZERO);
        assert!(s.map.contains_key(&key(1)));
        assert!(!s.map.contains_key(&key(2)));
        assert!(s.map.contains_key(&key(3)));
        assert!(s.map.contains_key(&key(4)));
        assert_eq!(s.map.len(), 3);
        assert_eq!(s.nodes.len(), 3, "the evicted node's slot is reused");
    }

    #[test]
    fn shard_capacities_sum_to_the_capacity_exactly() {
        for capacity in [1, 2, 63, 64, 65, 100, 127, 1000, 262_144, 262_145] {
            let a = Affinity::new(capacity, Arc::new(ManualClock::new()));
            assert_eq!(a.capacity(), capacity, "capacity {capacity}");
        }
    }

    #[test]
    fn a_spray_of_clients_never_exceeds_the_capacity() {
        for capacity in [1, 10, 100, 1000] {
            let a = Affinity::new(capacity, Arc::new(ManualClock::new()));
            for n in 0..20_000u32 {
                let key = Key {
                    slot: (1, 1),
                    lane: 0,
                    client: IpAddr::from(n.to_be_bytes()),
                };
                a.insert(key, ep(1), Duration::ZERO);
                assert!(
                    a.len() <= capacity,
                    "{} entries, capacity {capacity}",
                    a.len()
                );
            }
            assert_eq!(a.len(), capacity, "full, not fewer");
        }
    }

    #[test]
    fn timeout_and_pickability() {
        let clock = Arc::new(ManualClock::new());
        let a = Affinity::new(100, clock.clone());
        let t = Duration::from_secs(10);
        a.insert(key(1), ep(1), a.now());
        clock.advance(Duration::from_secs(9));
        assert_eq!(a.get(&key(1), t, a.now(), Some), Some(ep(1)));
        // The hit restarted the timer: 9 s later it still holds.
        clock.advance(Duration::from_secs(9));
        assert_eq!(a.get(&key(1), t, a.now(), Some), Some(ep(1)));
        clock.advance(Duration::from_secs(10));
        assert_eq!(a.get(&key(1), t, a.now(), Some), None, "expired");
        assert_eq!(a.len(), 0, "and dropped");
        a.insert(key(2), ep(2), a.now());
        let unpickable = |e: Bound| (e != ep(2)).then_some(e);
        assert_eq!(a.get(&key(2), t, a.now(), unpickable), None, "unpickable");
        assert_eq!(a.len(), 0);
    }
}
