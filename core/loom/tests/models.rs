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
//! * **Affinity** (`Resolved::try_pick`, `Affinity::get`/`insert`/
//!   `remove`): a shard is a table of ways, each a sequence lock, that
//!   readers search without a lock, and a mutex that writers take. A
//!   reader loads the way's tag (Acquire), reads the way (counter Acquire,
//!   words Relaxed, fence Acquire, counter again) and uses the words if
//!   the counter was even and unchanged, else reads under the mutex; a
//!   writer makes the counter odd (Relaxed), fences (Release), writes the
//!   words, makes the counter even (Release) and stores the tag (Release).
//!   A pick from snapshot `s` serves the binding only if `s` still has its
//!   endpoint, else drops it (under the mutex, only as it was seen); picks
//!   by policy from `s`; binds the client under the mutex. The model has
//!   one way (a capacity of one): a key maps to one set of one shard, so
//!   sets and shards never interact, and the ways of a set are alike.
//!
//!   Checked: every pick returns an endpoint of the snapshot it picked from,
//!   so no binding is served after its endpoint is gone from the snapshot
//!   being read, even when a slow pick from the old snapshot re-binds the
//!   client after the removal; the first pick from the new snapshot drops
//!   such a binding, so afterwards no entry names a removed endpoint; and a
//!   reader racing a writer that evicts and rebinds never sees an entry
//!   that was not written whole (a client with another's endpoint).
//!
//! The models do fail when the protocols are broken (tried when they were
//! written): storing `current` before `published` fails both publish
//! models, storing it with Relaxed is a causality violation (a torn read),
//! serving a binding without checking the snapshot still has its endpoint
//! fails the first affinity model, and a reader that does not check the
//! counter a second time fails the second.

#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{fence, AtomicPtr, AtomicU64, Ordering};
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

/// `Way`: one entry under a sequence lock, its words reduced to the client
/// and the endpoint (0 and 0 when empty).
struct Way {
    seq: AtomicU64,
    client: AtomicU64,
    endpoint: AtomicU64,
}

impl Way {
    /// `Way::read`: the entry, if no writer was at work meanwhile.
    fn read(&self) -> Option<(u64, u64)> {
        let seq = self.seq.load(Ordering::Acquire);
        if seq & 1 == 1 {
            return None;
        }
        let words = (
            self.client.load(Ordering::Relaxed),
            self.endpoint.load(Ordering::Relaxed),
        );
        fence(Ordering::Acquire);
        (self.seq.load(Ordering::Relaxed) == seq).then_some(words)
    }

    /// `Way::write`, under the writer lock.
    fn write(&self, client: u64, endpoint: u64) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.client.store(client, Ordering::Relaxed);
        self.endpoint.store(endpoint, Ordering::Relaxed);
        self.seq.store(seq + 2, Ordering::Release);
    }

    /// `Way::read_locked`: under the writer lock no writer is at work.
    fn read_locked(&self) -> (u64, u64) {
        (
            self.client.load(Ordering::Relaxed),
            self.endpoint.load(Ordering::Relaxed),
        )
    }
}

/// A shard of capacity one: one set of one way, its tag (the client, 0 when
/// empty; the real tag is 32 bits of the key's hash) and the writer lock
/// over the entry count. The set's stamps (its eviction order) are left
/// out: readers never read them, and writers read them under the lock.
struct Shard {
    tag: AtomicU64,
    way: Way,
    writer: Mutex<usize>,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            tag: AtomicU64::new(0),
            way: Way {
                seq: AtomicU64::new(0),
                client: AtomicU64::new(0),
                endpoint: AtomicU64::new(0),
            },
            writer: Mutex::new(0),
        }
    }

    /// `Set::put`.
    fn put(&self, client: u64, endpoint: u64) {
        self.way.write(client, endpoint);
        self.tag.store(client, Ordering::Release);
    }

    /// `Shard::insert`: rebind, fill the empty way, or evict (capacity one).
    fn insert(&self, client: u64, endpoint: u64) {
        let mut len = self.writer.lock().unwrap();
        if self.tag.load(Ordering::Relaxed) == 0 {
            *len += 1;
        }
        self.put(client, endpoint);
    }

    /// `Shard::remove`: only the entry as it was seen.
    fn remove(&self, client: u64, endpoint: u64) {
        let mut len = self.writer.lock().unwrap();
        if self.tag.load(Ordering::Relaxed) == client
            && self.way.read_locked() == (client, endpoint)
        {
            self.tag.store(0, Ordering::Release);
            self.way.write(0, 0);
            *len -= 1;
        }
    }

    /// `Affinity::lookup`, then the fallback of `Affinity::get` under the
    /// lock when a writer was at work (one try, where the real code retries
    /// a few times first).
    fn get(&self, client: u64) -> Option<u64> {
        if self.tag.load(Ordering::Acquire) != client {
            return None;
        }
        let (c, e) = match self.way.read() {
            Some(entry) => entry,
            None => {
                let _w = self.writer.lock().unwrap();
                if self.tag.load(Ordering::Relaxed) != client {
                    return None;
                }
                self.way.read_locked()
            }
        };
        (c == client).then_some(e)
    }
}

/// `Resolved::try_pick` with affinity: `Affinity::get` (no lock), the
/// binding served only if the snapshot still has its endpoint and dropped
/// otherwise; the policy; `Affinity::insert` under the lock.
fn pick(shard: &Shard, snapshot: &Endpoints, client: u8) -> u8 {
    let client_word = u64::from(client);
    if let Some(endpoint) = shard.get(client_word) {
        let endpoint = endpoint as u8;
        if snapshot.eligible.contains(&endpoint) {
            return endpoint;
        }
        shard.remove(client_word, u64::from(endpoint));
    }
    // The policy: any deterministic choice among the eligible will do.
    let endpoint = snapshot.eligible[usize::from(client) % snapshot.eligible.len()];
    shard.insert(client_word, u64::from(endpoint));
    endpoint
}

#[test]
fn affinity_no_binding_outlives_its_endpoint() {
    model(|| {
        let current = Arc::new(AtomicPtr::new(&V1 as *const Endpoints as *mut Endpoints));
        let shard = Arc::new(Shard::new());
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
                let (current, shard) = (current.clone(), shard.clone());
                thread::spawn(move || {
                    let mut last = 0;
                    for _ in 0..2 {
                        // SAFETY: the snapshots are statics.
                        let snapshot = unsafe { &*current.load(Ordering::Acquire) };
                        assert!(snapshot.version >= last);
                        last = snapshot.version;
                        let endpoint = pick(&shard, snapshot, client);
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
            assert_eq!(pick(&shard, latest, client), b'a');
        }
        assert!(*shard.writer.lock().unwrap() <= 1, "capacity one");
        let (_, endpoint) = shard.way.read_locked();
        assert!(endpoint == 0 || latest.eligible.contains(&(endpoint as u8)));
    });
}

#[test]
fn affinity_a_reader_never_sees_a_torn_entry() {
    model(|| {
        let shard = Arc::new(Shard::new());
        shard.insert(1, 10);
        let writer = {
            let shard = shard.clone();
            thread::spawn(move || {
                // Client 2 evicts client 1, then client 1 evicts client 2.
                shard.insert(2, 20);
                shard.insert(1, 11);
            })
        };
        let reader = {
            let shard = shard.clone();
            thread::spawn(move || {
                for client in [1, 2, 1] {
                    if let Some(endpoint) = shard.get(client) {
                        let written: &[u64] = if client == 1 { &[10, 11] } else { &[20] };
                        assert!(
                            written.contains(&endpoint),
                            "client {client} read bound to {endpoint}"
                        );
                    }
                }
            })
        };
        writer.join().unwrap();
        reader.join().unwrap();
        assert_eq!(shard.get(1), Some(11));
        assert_eq!(shard.get(2), None);
    });
}
