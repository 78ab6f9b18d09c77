//! loom models of the two lock-free protocols beside the snapshot.
//!
//! Run with
//! `cd core/loom && RUSTFLAGS="--cfg loom" cargo test --release`
//! (a crate of its own, so the flag rebuilds loom and nothing else).
//! Without `--cfg loom` this file is empty.
//!
//! arc-swap is not instrumented for loom, so the models restate the
//! protocols of `core/src/mesh.rs` and `core/src/affinity.rs` over loom's
//! atomics and mutexes, one for one:
//!
//! * **Publish** (`Mesh::update`, `Mesh::pick`, `Mesh::cached`): a writer
//!   builds the next snapshot completely, stores its version in
//!   `published` (Release) and *then* stores the snapshot in `current`
//!   (the `ArcSwap`; modelled as an `AtomicPtr` stored with Release and
//!   loaded with Acquire, which is weaker than what arc-swap gives, so what
//!   holds here holds there). A pick loads `published` (Acquire); if the
//!   thread's cached snapshot has that version it is used, otherwise
//!   `current` is loaded and cached. `snapshot()` loads `current`.
//!   Snapshots are never freed during the model (an `Arc` held by the
//!   cache or by `current` keeps them alive in the real code); the model
//!   frees them at the end. The snapshot's contents live in a loom
//!   `UnsafeCell` written before publication, so loom reports any read not
//!   ordered after the writes.
//!
//!   Checked over every interleaving loom explores (up to three
//!   preemptions, see `model`): a reader never sees a snapshot whose
//!   contents are not those of its version (no torn state); the versions a
//!   thread's picks and `snapshot()` calls return never go backwards; and
//!   once any thread has seen version `v` from `snapshot()`, a pick on
//!   another thread that is ordered after it returns `v` or newer (the
//!   reason `published` is stored before `current`).
//!
//! * **Affinity** (`Resolved::try_pick`, `Affinity::get`/`insert`): the
//!   table's shard is a mutex over a map with LRU eviction at a capacity. A
//!   pick from snapshot `s` locks the shard, returns the bound endpoint if
//!   `s` still has it and otherwise drops the entry; unlocks; picks by
//!   policy from `s`; locks again and binds the client. (One shard: a key
//!   maps to exactly one shard, so shards never interact.) A writer
//!   publishes a snapshot that removes an endpoint while two clients, with a
//!   capacity of one entry, pick from whichever snapshot they load.
//!
//!   Checked: every pick returns an endpoint of the snapshot it picked from,
//!   so no binding is served after its endpoint is gone from the snapshot
//!   being read, even when a slow pick from the old snapshot re-binds the
//!   client after the removal; and the first pick from the new snapshot
//!   drops such a binding, so afterwards no entry names a removed endpoint.
//!
//! The models do fail when the protocols are broken (tried when they were
//! written): storing `current` before `published` fails both publish
//! models, storing it with Relaxed is a causality violation (a torn read),
//! and serving a binding without checking the snapshot still has its
//! endpoint fails the affinity model.

#![cfg(loom)]

use std::collections::{HashMap, VecDeque};

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // Enough to interleave every step of the protocols; unbounded takes
    // hours for no more distinct orders of the operations that matter.
    builder.preemption_bound = Some(3);
    builder.check(f);
}

// === publish ===

struct Snapshot {
    version: u64,
    /// Stands for everything a snapshot holds: written while it is built,
    /// read by picks. Both words equal the version when read whole.
    data: UnsafeCell<[u64; 2]>,
}

struct Shared {
    published: AtomicU64,
    current: AtomicPtr<Snapshot>,
}

impl Shared {
    fn new(first: *mut Snapshot) -> Shared {
        Shared {
            published: AtomicU64::new(0),
            current: AtomicPtr::new(first),
        }
    }

    /// `Mesh::update` after the build: the version first, then the snapshot.
    fn publish(&self, version: u64) -> *mut Snapshot {
        let next = Box::into_raw(Box::new(Snapshot {
            version,
            data: UnsafeCell::new([0, 0]),
        }));
        // SAFETY: not yet shared.
        unsafe { &*next }
            .data
            .with_mut(|d| unsafe { *d = [version, version] });
        self.published.store(version, Ordering::Release);
        self.current.store(next, Ordering::Release);
        next
    }

    /// `Mesh::snapshot`.
    fn snapshot(&self) -> u64 {
        read(self.current.load(Ordering::Acquire))
    }

    /// `Mesh::pick` through `Mesh::cached`.
    fn pick(&self, cache: &mut Option<*const Snapshot>) -> u64 {
        let published = self.published.load(Ordering::Acquire);
        // SAFETY: snapshots outlive the model's threads.
        let fresh = matches!(cache, Some(s) if unsafe { &**s }.version == published);
        if !fresh {
            *cache = Some(self.current.load(Ordering::Acquire));
        }
        read(cache.expect("filled above"))
    }
}

/// Reads a whole snapshot and checks it is not torn; its version.
fn read(snapshot: *const Snapshot) -> u64 {
    // SAFETY: snapshots outlive the model's threads.
    let s = unsafe { &*snapshot };
    let data = s.data.with(|d| unsafe { *d });
    assert_eq!(data, [s.version, s.version], "torn snapshot");
    s.version
}

fn first_snapshot() -> *mut Snapshot {
    Box::into_raw(Box::new(Snapshot {
        version: 0,
        data: UnsafeCell::new([0, 0]),
    }))
}

fn free(snapshots: impl IntoIterator<Item = usize>) {
    for s in snapshots {
        // SAFETY: every thread is done; each snapshot is freed once.
        drop(unsafe { Box::from_raw(s as *mut Snapshot) });
    }
}

#[test]
fn publish_no_torn_state_and_a_reader_never_goes_back() {
    model(|| {
        let first = first_snapshot();
        let shared = Arc::new(Shared::new(first));
        let writer = {
            let shared = shared.clone();
            // Addresses: raw pointers are not `Send`.
            thread::spawn(move || [shared.publish(1), shared.publish(2)].map(|p| p as usize))
        };
        let mut cache = None;
        let mut last = shared.pick(&mut cache);
        for step in 0..3 {
            let v = if step == 1 {
                shared.snapshot()
            } else {
                shared.pick(&mut cache)
            };
            assert!(v >= last, "went back from {last} to {v}");
            last = v;
        }
        let published = writer.join().unwrap();
        free([first as usize].into_iter().chain(published));
    });
}

#[test]
fn publish_a_pick_is_never_older_than_what_another_thread_saw() {
    model(|| {
        let first = first_snapshot();
        let shared = Arc::new(Shared::new(first));
        // The version a `snapshot()` on thread A showed (u64::MAX: none yet).
        let shown = Arc::new(AtomicU64::new(u64::MAX));
        let writer = {
            let shared = shared.clone();
            thread::spawn(move || shared.publish(1) as usize)
        };
        let a = {
            let (shared, shown) = (shared.clone(), shown.clone());
            thread::spawn(move || shown.store(shared.snapshot(), Ordering::Release))
        };
        // This thread is B: it has a snapshot cached from before.
        let mut cache = None;
        shared.pick(&mut cache);
        let seen_by_a = shown.load(Ordering::Acquire);
        let v = shared.pick(&mut cache);
        if seen_by_a != u64::MAX {
            assert!(
                v >= seen_by_a,
                "pick {v} after another thread saw {seen_by_a}"
            );
        }
        let published = writer.join().unwrap();
        a.join().unwrap();
        free([first as usize, published]);
    });
}

// === affinity ===

/// A snapshot as affinity sees it: its version and eligible endpoints.
struct Endpoints {
    version: u64,
    eligible: &'static [u8],
}

static V1: Endpoints = Endpoints {
    version: 1,
    eligible: &[b'a', b'b'],
};
static V2: Endpoints = Endpoints {
    version: 2,
    eligible: &[b'a'],
};

/// One shard of `Affinity`: client -> endpoint, least recently used first.
struct Shard {
    map: HashMap<u8, u8>,
    lru: VecDeque<u8>,
    capacity: usize,
}

impl Shard {
    fn touch(&mut self, client: u8) {
        self.lru.retain(|&c| c != client);
        self.lru.push_back(client);
    }

    fn remove(&mut self, client: u8) {
        self.map.remove(&client);
        self.lru.retain(|&c| c != client);
    }

    /// `Shard::insert`: replace, or evict the least recently used at capacity.
    fn insert(&mut self, client: u8, endpoint: u8) {
        if !self.map.contains_key(&client) && self.map.len() >= self.capacity {
            let lru = self.lru.pop_front().expect("full, so not empty");
            self.map.remove(&lru);
        }
        self.map.insert(client, endpoint);
        self.touch(client);
    }
}

/// `Resolved::try_pick` with affinity: `Affinity::get` under the lock,
/// the policy outside it, `Affinity::insert` under the lock again.
fn pick(table: &Mutex<Shard>, snapshot: &Endpoints, client: u8) -> u8 {
    {
        let mut shard = table.lock().unwrap();
        if let Some(&endpoint) = shard.map.get(&client) {
            if snapshot.eligible.contains(&endpoint) {
                shard.touch(client);
                return endpoint;
            }
            shard.remove(client);
        }
    }
    // The policy: any deterministic choice among the eligible will do.
    let endpoint = snapshot.eligible[usize::from(client) % snapshot.eligible.len()];
    table.lock().unwrap().insert(client, endpoint);
    endpoint
}

#[test]
fn affinity_no_binding_outlives_its_endpoint() {
    model(|| {
        let current = Arc::new(AtomicPtr::new(&V1 as *const Endpoints as *mut Endpoints));
        let table = Arc::new(Mutex::new(Shard {
            map: HashMap::new(),
            lru: VecDeque::new(),
            capacity: 1,
        }));
        let writer = {
            let current = current.clone();
            // Endpoint b is removed.
            thread::spawn(move || {
                current.store(&V2 as *const Endpoints as *mut Endpoints, Ordering::Release)
            })
        };
        // Clients 1 and 3 both go to b while it exists.
        let readers: Vec<_> = [1u8, 3]
            .into_iter()
            .map(|client| {
                let (current, table) = (current.clone(), table.clone());
                thread::spawn(move || {
                    let mut last = 0;
                    for _ in 0..2 {
                        // SAFETY: the snapshots are statics.
                        let snapshot = unsafe { &*current.load(Ordering::Acquire) };
                        assert!(snapshot.version >= last);
                        last = snapshot.version;
                        let endpoint = pick(&table, snapshot, client);
                        assert!(
                            snapshot.eligible.contains(&endpoint),
                            "client {client} sent to {} in version {}",
                            endpoint as char,
                            snapshot.version
                        );
                    }
                })
            })
            .collect();
        writer.join().unwrap();
        for r in readers {
            r.join().unwrap();
        }
        // Every thread is done: the next pick reads version 2 and drops any
        // binding to b a slow pick from version 1 left behind.
        // SAFETY: the snapshots are statics.
        let latest = unsafe { &*current.load(Ordering::Acquire) };
        assert_eq!(latest.version, 2);
        for client in [1, 3] {
            assert_eq!(pick(&table, latest, client), b'a');
        }
        let shard = table.lock().unwrap();
        assert!(shard.map.len() <= shard.capacity);
        assert!(shard.map.values().all(|e| latest.eligible.contains(e)));
    });
}
