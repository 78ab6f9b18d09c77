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
//! * the table is bounded: it never holds more entries than its capacity,
//!   and a new client evicts the least recently used entry of its set (see
//!   below), so a client spraying source addresses cannot grow memory.
//!
//! # The table
//!
//! A hit takes no lock and writes nothing but, when the clock has moved,
//! the entry's time. The table is split into shards by the key's hash; a
//! shard is a set-associative hash table (sets of [`WAYS`] entries, as a
//! CPU cache is) that readers search without locking, and a mutex that
//! writers (a new binding, a removal, a resize) take.
//!
//! * A set is a line of tags (32 bits of each way's key hash, 0 when
//!   empty) and stamps (each way's time of last pick, coarsely), followed
//!   by one 64-byte line per way, which holds the whole key, the endpoint,
//!   its position hint and the exact time of the last pick. A lookup reads
//!   the tag line and the line of the way whose tag matches, and compares
//!   the whole key: no two clients are ever confused. Choosing a way to
//!   evict reads the tag line alone.
//! * Each way is a sequence lock: a writer makes its counter odd, writes
//!   the words, and makes it even again; a reader reads the counter, the
//!   words, then the counter again, and uses the words only if the counter
//!   was even and unchanged. A reader that keeps meeting a writer looks
//!   the key up under the shard's mutex instead.
//! * A hit restarts the timer with relaxed stores of the time and the
//!   stamp outside the sequence lock (only when they have changed). If a
//!   writer replaces the entry at that moment, the stores land on the new
//!   entry, which was written at the same time: at worst its timer starts
//!   a few microseconds later.
//! * A shard's table starts with one set and grows fourfold whenever a new
//!   client finds its set full, up to twice the shard's capacity in ways,
//!   so that sets rarely overflow before the capacity is reached. The
//!   readers of the old table go on reading it (its entries are the same; a
//!   timer restarted in it in that instant is lost), and it is kept until
//!   the table is dropped: the old tables of a shard together are smaller
//!   than its current one (a third when every step was fourfold, as at
//!   the default capacity, where a full table is 37.7 MB and 50 MB with
//!   the old ones: 72 bytes a way, two ways an entry).
//! * Eviction: at its capacity a shard replaces the least recently used
//!   entry of the new client's set (of the next set that has one if that
//!   set is empty). A set that is full before the shard is (rare once the
//!   table has grown, about one set in fifty at capacity) evicts its least
//!   recently used entry too. The eviction is least-recently-used within a
//!   set, as in CPU caches and Cilium's LRU maps, not across the table,
//!   and to the stamps' resolution (4.2 ms): among ways picked within one
//!   stamp, the first goes.
//!
//! The capacity is divided among the shards exactly (their capacities sum
//! to it, and a capacity below the shard count makes as many shards as
//! entries), so the table never holds more entries than configured. It
//! lives beside the snapshots: every snapshot of a mesh shares it, and
//! entries survive snapshot updates.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::hash::fold;

/// The number of affinity entries a mesh keeps by default.
pub const DEFAULT_AFFINITY_CAPACITY: usize = 262_144;

const SHARDS: usize = 64;
/// Entries per set: the tags of a set fill one cache line.
const WAYS: usize = 8;
/// How often a reader retries a way a writer is rewriting before it looks
/// the key up under the shard's mutex.
const READ_TRIES: usize = 4;

/// A source of monotonic time for affinity timeouts; inject one to test
/// timeouts exactly, or where `std::time::Instant` is not available.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time since some fixed origin; must never go backwards.
    fn now(&self) -> Duration;

    /// [`Clock::now`] in nanoseconds (saturating after 584 years), as the
    /// affinity table keeps time. Override it only to spare the conversion
    /// on every affinity pick, as [`SystemClock`] does.
    #[inline]
    fn now_nanos(&self) -> u64 {
        nanos(self.now())
    }
}

/// The system's monotonic clock, from when the clock was made.
///
/// On Linux it reads `CLOCK_MONOTONIC_COARSE`, the time of the last timer
/// tick (a few milliseconds' resolution), which costs a fifth of a full
/// clock read (4 ns against 24 ns here) and is on every affinity pick:
/// timeouts are whole seconds. Elsewhere it reads `std::time::Instant`.
/// Copies read the same clock from the same origin.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    /// Nanoseconds of `CLOCK_MONOTONIC_COARSE`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    origin: u64,
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        all(target_arch = "wasm32", target_os = "unknown")
    )))]
    origin: std::time::Instant,
}

/// `CLOCK_MONOTONIC_COARSE`.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
fn coarse_monotonic() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

// On wasm32-unknown-unknown the clock has no origin, so the impl is derivable.
#[cfg_attr(
    all(target_arch = "wasm32", target_os = "unknown"),
    allow(clippy::derivable_impls)
)]
impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            #[cfg(any(target_os = "linux", target_os = "android"))]
            origin: coarse_monotonic(),
            #[cfg(not(any(
                target_os = "linux",
                target_os = "android",
                all(target_arch = "wasm32", target_os = "unknown")
            )))]
            origin: std::time::Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[inline]
    fn now(&self) -> Duration {
        Duration::from_nanos(self.now_nanos())
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[inline]
    fn now_nanos(&self) -> u64 {
        coarse_monotonic().saturating_sub(self.origin)
    }

    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        all(target_arch = "wasm32", target_os = "unknown")
    )))]
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

// === the words of an entry ===

/// An address as two words and a flag: IPv4 in the low word.
fn ip_words(ip: IpAddr) -> ([u64; 2], bool) {
    match ip {
        IpAddr::V4(v4) => ([0, u32::from(v4) as u64], false),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            ([(bits >> 64) as u64, bits as u64], true)
        }
    }
}

fn ip_from(words: [u64; 2], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(
            (u128::from(words[0]) << 64) | u128::from(words[1]),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from(words[1] as u32))
    }
}

const CLIENT_V6: u64 = 1 << 8;
const ENDPOINT_V6: u64 = 1 << 9;
/// The bits of `meta` that belong to the key: the lane and the client's
/// address family.
const KEY_META: u64 = 0x1FF;

/// A key as stored, and its hash: made once per pick, for the lookup and,
/// on a miss, the insert.
#[derive(Clone, Copy)]
pub(crate) struct Probe {
    client: [u64; 2],
    slot: u64,
    /// The lane and [`CLIENT_V6`]: [`KEY_META`] of a way's `meta`.
    meta: u64,
    /// Picks the shard (high half) and the set (low half).
    hash: u64,
    /// The way's tag in its set: 32 bits of the hash, never 0 (an empty
    /// way's tag).
    tag: u32,
}

const SEED_A: u64 = 0x243F_6A88_85A3_08D3;
const SEED_B: u64 = 0x1319_8A2E_0370_7344;
const MULTIPLY: u64 = 0x9E37_79B9_7F4A_7C15;

impl Probe {
    /// Two folded multiplies: the client's two words against each other
    /// (as foldhash mixes 16 bytes), then the slot against the lane and
    /// family. Four one-word steps took twice the latency, on the path of
    /// every affinity pick.
    #[inline]
    pub(crate) fn new(key: &Key) -> Probe {
        let (client, v6) = ip_words(key.client);
        let slot = (u64::from(key.slot.0) << 32) | u64::from(key.slot.1);
        let meta = u64::from(key.lane) | if v6 { CLIENT_V6 } else { 0 };
        Probe::of(client, slot, meta)
    }

    /// The probe of a key as stored.
    #[inline(always)]
    fn of(client: [u64; 2], slot: u64, meta: u64) -> Probe {
        let hash = fold(
            fold(client[0] ^ SEED_A, client[1] ^ SEED_B) ^ slot,
            MULTIPLY ^ meta,
        );
        Probe {
            client,
            slot,
            meta,
            hash,
            tag: (hash as u32 ^ (hash >> 32) as u32) | 1,
        }
    }
}

/// An entry as read from a way.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Entry {
    client: [u64; 2],
    slot: u64,
    endpoint: [u64; 2],
    /// Bits 0-7 the lane, 8 [`CLIENT_V6`], 9 [`ENDPOINT_V6`], 16-31 the
    /// endpoint's port, 32-63 its position.
    meta: u64,
    /// Nanoseconds of the table's clock.
    last: u64,
}

impl Entry {
    fn new(probe: &Probe, bound: Bound, now: u64) -> Entry {
        let (endpoint, v6) = ip_words(bound.addr.ip());
        Entry {
            client: probe.client,
            slot: probe.slot,
            endpoint,
            meta: probe.meta
                | if v6 { ENDPOINT_V6 } else { 0 }
                | u64::from(bound.addr.port()) << 16
                | u64::from(bound.position) << 32,
            last: now,
        }
    }

    /// The probe of the entry's key.
    fn probe(&self) -> Probe {
        Probe::of(self.client, self.slot, self.meta & KEY_META)
    }

    #[inline]
    fn is(&self, probe: &Probe) -> bool {
        self.client == probe.client && self.slot == probe.slot && self.meta & KEY_META == probe.meta
    }

    fn bound(&self) -> Bound {
        let ip = ip_from(self.endpoint, self.meta & ENDPOINT_V6 != 0);
        Bound {
            addr: SocketAddr::new(ip, (self.meta >> 16) as u16),
            position: (self.meta >> 32) as u32,
        }
    }

    fn words(&self) -> [u64; 7] {
        let e = self;
        [
            e.client[0],
            e.client[1],
            e.slot,
            e.endpoint[0],
            e.endpoint[1],
            e.meta,
            e.last,
        ]
    }

    fn from_words(w: [u64; 7]) -> Entry {
        Entry {
            client: [w[0], w[1]],
            slot: w[2],
            endpoint: [w[3], w[4]],
            meta: w[5],
            last: w[6],
        }
    }
}

/// `t` in nanoseconds, saturating.
#[inline]
fn nanos(t: Duration) -> u64 {
    t.as_nanos().min(u64::MAX as u128) as u64
}

// === a way: one entry under a sequence lock ===

/// One entry, one cache line: see the module documentation.
#[repr(C, align(64))]
#[derive(Default)]
struct Way {
    /// Odd while a writer rewrites the words.
    seq: AtomicU64,
    /// An [`Entry`]'s words; the last is its time ([`Way::LAST`]).
    words: [AtomicU64; 7],
}

impl Way {
    const LAST: usize = 6;

    /// The entry, if no writer was at work meanwhile.
    #[inline]
    fn read(&self) -> Option<Entry> {
        let seq = self.seq.load(Ordering::Acquire);
        if seq & 1 == 1 {
            return None;
        }
        let words = std::array::from_fn(|i| self.words[i].load(Ordering::Relaxed));
        fence(Ordering::Acquire);
        (self.seq.load(Ordering::Relaxed) == seq).then(|| Entry::from_words(words))
    }

    /// Rewrites the entry. Writers hold the shard's mutex.
    fn write(&self, words: [u64; 7]) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        for (word, value) in self.words.iter().zip(words) {
            word.store(value, Ordering::Relaxed);
        }
        self.seq.store(seq + 2, Ordering::Release);
    }

    /// The entry, read by a writer (under the shard's mutex, so no other
    /// writer is at work).
    fn read_locked(&self) -> Entry {
        Entry::from_words(std::array::from_fn(|i| {
            self.words[i].load(Ordering::Relaxed)
        }))
    }
}

/// A set's times of last pick are kept in its tag line too, in units of
/// 2^22 ns (4.2 ms, the coarse clock's tick), so that choosing the least
/// recently used way reads one line, not every way's.
#[inline]
fn stamp(now: u64) -> u32 {
    (now >> 22) as u32
}

/// How long before `now` a way's stamp was, in stamp units. The stamps
/// wrap after 208 days: one from the future (another thread's clock read
/// an instant later) counts as now, and one more than 104 days old as
/// recent, which only makes its eviction wait (its timeout is checked on
/// the way's exact time).
#[inline]
fn age(now: u32, stamp: u32) -> u32 {
    (now.wrapping_sub(stamp) as i32).max(0) as u32
}

#[repr(C, align(64))]
#[derive(Default)]
struct Set {
    /// Each way's tag ([`Probe::tag`]), 0 for an empty way: a filter, the
    /// way's key is the truth.
    tags: [AtomicU32; WAYS],
    /// Each way's [`stamp`] of its last pick: the order of eviction.
    stamps: [AtomicU32; WAYS],
    ways: [Way; WAYS],
}

/// What a writer's look at a set found (see [`Set::scan`]).
struct Scan {
    /// The way holding the key.
    found: Option<usize>,
    /// The first empty way.
    empty: Option<usize>,
    /// The least recently used way in use.
    oldest: Option<usize>,
}

impl Set {
    /// The way holding `probe`'s key, read by a writer.
    fn find_locked(&self, probe: &Probe) -> Option<(usize, Entry)> {
        (0..WAYS).find_map(|i| {
            if self.tags[i].load(Ordering::Relaxed) != probe.tag {
                return None;
            }
            let entry = self.ways[i].read_locked();
            entry.is(probe).then_some((i, entry))
        })
    }

    /// One pass over the tag line, by a writer: the way holding `probe`'s
    /// key, the first empty way and the least recently used one at `now`
    /// (a [`stamp`]), chosen as [`Set::least_recent`] chooses (the
    /// evicting insert's path: one pass, not three).
    fn scan(&self, probe: &Probe, now: u32) -> Scan {
        let mut scan = Scan {
            found: None,
            empty: None,
            oldest: None,
        };
        let mut oldest_age = 0;
        for i in 0..WAYS {
            let tag = self.tags[i].load(Ordering::Relaxed);
            if tag == 0 {
                scan.empty = scan.empty.or(Some(i));
                continue;
            }
            if tag == probe.tag && self.ways[i].read_locked().is(probe) {
                scan.found = Some(i);
                return scan;
            }
            let age = age(now, self.stamps[i].load(Ordering::Relaxed));
            if scan.oldest.is_none() || age > oldest_age {
                (scan.oldest, oldest_age) = (Some(i), age);
            }
        }
        scan
    }

    /// The least recently used way at `now` (a [`stamp`]), if any is in use.
    fn least_recent(&self, now: u32) -> Option<usize> {
        (0..WAYS)
            .filter(|&i| self.tags[i].load(Ordering::Relaxed) != 0)
            .max_by_key(|&i| (age(now, self.stamps[i].load(Ordering::Relaxed)), WAYS - i))
    }

    /// Writes `entry` to way `i`. A reader that meets the old tag reads
    /// the old entry or the new one whole, and compares its key.
    fn put(&self, i: usize, tag: u32, entry: &Entry) {
        self.ways[i].write(entry.words());
        self.stamps[i].store(stamp(entry.last), Ordering::Relaxed);
        self.tags[i].store(tag, Ordering::Release);
    }

    fn clear(&self, i: usize) {
        self.tags[i].store(0, Ordering::Release);
        self.ways[i].write([0; 7]);
    }
}

/// The index of a key hash's set among `len`: its low 32 bits scaled to
/// the count.
#[inline]
fn set_index(len: usize, hash: u64) -> usize {
    (((hash & 0xFFFF_FFFF) * len as u64) >> 32) as usize
}

/// The set of a key hash in `sets`.
#[inline]
fn set_of(sets: &[Set], hash: u64) -> &Set {
    &sets[set_index(sets.len(), hash)]
}

/// A shard's writer state.
struct Writer {
    len: usize,
    capacity: usize,
    /// Sets of the largest table: twice the capacity in ways.
    max_sets: usize,
}

struct Shard {
    /// The shard's tables, each four times the sets of the one before (the
    /// last capped at `max_sets`), made as the shard grows. Readers may
    /// still hold an old one, so none is dropped before the shard.
    tables: Box<[OnceLock<Box<[Set]>>]>,
    /// How many tables there are: the current one is the last.
    current: AtomicUsize,
    writer: Mutex<Writer>,
}

impl Shard {
    fn new(capacity: usize) -> Shard {
        let max_sets = (2 * capacity).div_ceil(WAYS);
        // 1, 4, 16, ... sets, then `max_sets` (an upper bound on the count).
        let tables = (max_sets.next_power_of_two().trailing_zeros() + 1) as usize;
        Shard {
            tables: (0..tables).map(|_| OnceLock::new()).collect(),
            current: AtomicUsize::new(0),
            writer: Mutex::new(Writer {
                len: 0,
                capacity,
                max_sets,
            }),
        }
    }

    /// The current table, if the shard has one.
    #[inline]
    fn table(&self) -> Option<&[Set]> {
        match self.current.load(Ordering::Acquire) {
            0 => None,
            n => self.tables[n - 1].get().map(|t| &**t),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the next table (four times the sets, at most `max_sets`) and
    /// moves every entry into it. The caller holds the writer lock.
    fn grow(&self, w: &mut Writer) {
        let n = self.current.load(Ordering::Relaxed);
        let old = self.table().unwrap_or(&[]);
        let sets = (4 * old.len()).clamp(1, w.max_sets);
        let next: Box<[Set]> = (0..sets).map(|_| Set::default()).collect();
        for set in old {
            for i in 0..WAYS {
                if set.tags[i].load(Ordering::Relaxed) == 0 {
                    continue;
                }
                let entry = set.ways[i].read_locked();
                let probe = entry.probe();
                let to = set_of(&next, probe.hash);
                match to.scan(&probe, stamp(entry.last)) {
                    Scan { empty: Some(j), .. } => to.put(j, probe.tag, &entry),
                    // More of the old entries in one set of the new table
                    // than it has ways: the least recent goes.
                    Scan { oldest, .. } => {
                        let j = oldest.expect("a full set");
                        if to.ways[j].words[Way::LAST].load(Ordering::Relaxed) < entry.last {
                            to.put(j, probe.tag, &entry);
                        }
                        w.len -= 1;
                    }
                }
            }
        }
        if self.tables[n].set(next).is_err() {
            unreachable!("table {n} is made once, under the writer lock");
        }
        self.current.store(n + 1, Ordering::Release);
    }

    fn insert(&self, probe: &Probe, bound: Bound, now: u64) {
        let entry = Entry::new(probe, bound, now);
        let mut w = self.lock();
        loop {
            let Some(table) = self.table() else {
                self.grow(&mut w);
                continue;
            };
            let set = set_of(table, probe.hash);
            let scan = set.scan(probe, stamp(now));
            if let Some(i) = scan.found {
                set.put(i, probe.tag, &entry);
                return;
            }
            let at_capacity = w.len >= w.capacity;
            match (scan.empty, at_capacity) {
                (Some(i), false) => {
                    set.put(i, probe.tag, &entry);
                    w.len += 1;
                    return;
                }
                (None, false) if table.len() < w.max_sets => {
                    self.grow(&mut w);
                }
                // A full set, at capacity or not: its least recent goes.
                (None, _) => {
                    let i = scan.oldest.expect("a full set");
                    set.put(i, probe.tag, &entry);
                    return;
                }
                // At capacity with room in this set: the least recent of
                // this set goes (the new entry takes its way, a line the
                // search has just read), or of the next set that has
                // entries.
                (Some(i), true) => {
                    if let Some(j) = scan.oldest {
                        set.put(j, probe.tag, &entry);
                        return;
                    }
                    let start = set_index(table.len(), probe.hash);
                    let (victim, j) = (1..table.len())
                        .map(|k| &table[(start + k) % table.len()])
                        .find_map(|s| s.least_recent(stamp(now)).map(|j| (s, j)))
                        .expect("at capacity, so an entry somewhere");
                    victim.clear(j);
                    set.put(i, probe.tag, &entry);
                    return;
                }
            }
        }
    }

    /// The set, way and entry of `probe`'s key, looked up under the lock:
    /// for a reader that kept meeting a writer, which waits for it (what
    /// the writer leaves is the answer).
    #[cold]
    #[inline(never)]
    fn find_waiting(&self, probe: &Probe) -> Option<(&Set, usize, Entry)> {
        let _w = self.lock();
        let set = set_of(self.table()?, probe.hash);
        let (way, entry) = set.find_locked(probe)?;
        Some((set, way, entry))
    }

    /// Removes the entry `seen` if it is still there as it was seen.
    fn remove(&self, probe: &Probe, seen: &Entry) {
        let mut w = self.lock();
        let Some(table) = self.table() else { return };
        let set = set_of(table, probe.hash);
        if let Some((i, entry)) = set.find_locked(probe) {
            if entry == *seen {
                set.clear(i);
                w.len -= 1;
            }
        }
    }
}

/// The affinity table of a mesh. See the module documentation.
pub(crate) struct Affinity {
    shards: Box<[Shard]>,
    clock: TableClock,
}

/// The clock a table reads on every pick: the system's without a dynamic
/// call (a mesh made with `Mesh::new`), or one injected.
enum TableClock {
    System(SystemClock),
    Injected(Arc<dyn Clock>),
}

impl std::fmt::Debug for Affinity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Affinity")
            .field("entries", &self.len())
            .finish()
    }
}

/// What a lookup without the lock found.
enum Lookup {
    /// The way and its entry.
    Found(usize, Entry),
    Absent,
    /// A writer kept rewriting a way whose tag matched.
    Busy,
}

impl Affinity {
    pub(crate) fn new(capacity: usize, clock: Arc<dyn Clock>) -> Affinity {
        Affinity::sharded(capacity, SHARDS, TableClock::Injected(clock))
    }

    /// A table reading `clock` (a copy of the mesh's: the same origin).
    pub(crate) fn with_system_clock(capacity: usize, clock: SystemClock) -> Affinity {
        Affinity::sharded(capacity, SHARDS, TableClock::System(clock))
    }

    fn sharded(capacity: usize, shards: usize, clock: TableClock) -> Affinity {
        // Rounding each shard's share up would let the table hold up to
        // SHARDS - 1 entries more than asked for (and 64 for a capacity of
        // 1): the first `extra` shards take one entry more instead.
        let capacity = capacity.max(1);
        let shards = capacity.min(shards);
        let (base, extra) = (capacity / shards, capacity % shards);
        Affinity {
            shards: (0..shards)
                .map(|i| Shard::new(base + usize::from(i < extra)))
                .collect(),
            clock,
        }
    }

    /// The most entries the table holds: the sum of its shards' capacities.
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.shards.iter().map(|s| s.lock().capacity).sum()
    }

    #[inline]
    fn shard(&self, probe: &Probe) -> &Shard {
        let i = ((probe.hash >> 32) * self.shards.len() as u64) >> 32;
        &self.shards[i as usize]
    }

    /// The time by the table's clock, for [`Affinity::get`] and
    /// [`Affinity::insert`]: one read serves a miss and its insert.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match &self.clock {
            TableClock::System(clock) => clock.now_nanos(),
            TableClock::Injected(clock) => clock.now_nanos(),
        }
    }

    /// Searches `set` for the probe's key without a lock.
    #[inline]
    fn lookup(set: &Set, probe: &Probe) -> Lookup {
        let mut busy = false;
        for i in 0..WAYS {
            if set.tags[i].load(Ordering::Acquire) != probe.tag {
                continue;
            }
            let read = (0..READ_TRIES).find_map(|_| {
                let read = set.ways[i].read();
                if read.is_none() {
                    std::hint::spin_loop();
                }
                read
            });
            match read {
                Some(entry) if entry.is(probe) => return Lookup::Found(i, entry),
                Some(_) => {}
                None => busy = true,
            }
        }
        if busy {
            Lookup::Busy
        } else {
            Lookup::Absent
        }
    }

    /// What `pickable` makes of the endpoint the probe's client is bound
    /// to, if the binding is fresh at `now` (younger than `timeout`, both in
    /// the clock's nanoseconds) and `pickable` accepts its endpoint (returns
    /// `Some`); a stale or unpickable binding is dropped. A hit restarts the
    /// timer.
    #[inline]
    pub(crate) fn get<T>(
        &self,
        probe: &Probe,
        timeout: u64,
        now: u64,
        pickable: impl FnOnce(Bound) -> Option<T>,
    ) -> Option<T> {
        let shard = self.shard(probe);
        let set = set_of(shard.table()?, probe.hash);
        let (set, way, entry) = match Self::lookup(set, probe) {
            Lookup::Found(way, entry) => (set, way, entry),
            Lookup::Absent => return None,
            Lookup::Busy => shard.find_waiting(probe)?,
        };
        let found = if now.saturating_sub(entry.last) >= timeout {
            None
        } else {
            pickable(entry.bound())
        };
        if found.is_none() {
            shard.remove(probe, &entry);
        } else if entry.last != now {
            set.ways[way].words[Way::LAST].store(now, Ordering::Relaxed);
            let now_stamp = stamp(now);
            if set.stamps[way].load(Ordering::Relaxed) != now_stamp {
                set.stamps[way].store(now_stamp, Ordering::Relaxed);
            }
        }
        found
    }

    /// Binds the probe's client to `endpoint` from `now`.
    pub(crate) fn insert(&self, probe: &Probe, endpoint: Bound, now: u64) {
        self.shard(probe).insert(probe, endpoint, now);
    }

    /// The number of entries (fresh or not yet found stale).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len).sum()
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

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// One shard, so that every key meets every other.
    fn one_shard(capacity: usize) -> (Affinity, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        (
            Affinity::sharded(capacity, 1, TableClock::Injected(clock.clone())),
            clock,
        )
    }

    fn bound_to(a: &Affinity, k: &Key) -> Option<Bound> {
        a.get(&Probe::new(k), nanos(secs(1000)), a.now(), Some)
    }

    fn bind(a: &Affinity, k: Key, b: Bound, now: u64) {
        a.insert(&Probe::new(&k), b, now);
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        let (a, clock) = one_shard(3);
        for n in 1..=3 {
            bind(&a, key(n), ep(n), a.now());
            clock.advance(secs(1));
        }
        // A hit on 1 makes it the most recent, so 2 is the least.
        assert_eq!(bound_to(&a, &key(1)), Some(ep(1)));
        clock.advance(secs(1));
        bind(&a, key(4), ep(4), a.now());
        assert_eq!(a.len(), 3);
        assert_eq!(bound_to(&a, &key(2)), None, "evicted");
        for n in [1, 3, 4] {
            assert_eq!(bound_to(&a, &key(n)), Some(ep(n)));
        }
        // Rebinding a bound client replaces its entry.
        bind(&a, key(3), ep(9), a.now());
        assert_eq!(a.len(), 3);
        assert_eq!(bound_to(&a, &key(3)), Some(ep(9)));
    }

    #[test]
    fn entries_round_trip_every_address_kind() {
        let (a, _) = one_shard(100);
        let clients: [IpAddr; 4] = [
            "10.0.0.1".parse().unwrap(),
            "::ffff:10.0.0.1".parse().unwrap(),
            "fd00::1".parse().unwrap(),
            "255.255.255.255".parse().unwrap(),
        ];
        let endpoints: [SocketAddr; 4] = [
            "[fd00::9]:65535".parse().unwrap(),
            "10.1.0.1:1".parse().unwrap(),
            "[::ffff:10.1.0.1]:8080".parse().unwrap(),
            "0.0.0.0:0".parse().unwrap(),
        ];
        let keys = clients.iter().enumerate().flat_map(|(i, &client)| {
            [(1, 2), (u32::MAX, u32::MAX)].map(|slot| Key {
                slot,
                lane: i as u8 * 60,
                client,
            })
        });
        let keys: Vec<Key> = keys.collect();
        for (n, k) in keys.iter().enumerate() {
            let bound = Bound {
                addr: endpoints[n % 4],
                position: (n as u32).wrapping_mul(0x9E37_79B9),
            };
            bind(&a, *k, bound, a.now());
        }
        assert_eq!(a.len(), keys.len(), "distinct keys, distinct entries");
        for (n, k) in keys.iter().enumerate() {
            let bound = bound_to(&a, k).expect("bound");
            assert_eq!(bound.addr, endpoints[n % 4]);
            assert_eq!(bound.position, (n as u32).wrapping_mul(0x9E37_79B9));
        }
    }

    #[test]
    fn growing_keeps_every_entry() {
        // A quarter of the capacity: the shard grows from one set to its
        // largest table, moving every entry each time, and no set of the
        // last table overflows.
        let (a, _) = one_shard(10_000);
        let keys: Vec<Key> = (0..2_500u32)
            .map(|n| Key {
                slot: (7, 1),
                lane: 0,
                client: IpAddr::from(n.to_be_bytes()),
            })
            .collect();
        for (n, &k) in keys.iter().enumerate() {
            bind(&a, k, ep(n as u8), a.now());
        }
        assert_eq!(a.len(), keys.len());
        assert!(a.shards[0].table().unwrap().len() > 1, "it grew");
        for (n, k) in keys.iter().enumerate() {
            assert_eq!(bound_to(&a, k), Some(ep(n as u8)), "client {n}");
        }
    }

    #[test]
    fn at_capacity_a_client_in_an_empty_set_evicts_from_the_next() {
        let (a, clock) = one_shard(16);
        let shard = &a.shards[0];
        let key_n = |n: u32| Key {
            slot: (1, 1),
            lane: 0,
            client: IpAddr::from(n.to_be_bytes()),
        };
        // The set of a key in the largest table (4 sets: twice 16 in ways).
        let final_set = |k: &Key| ((Probe::new(k).hash & 0xFFFF_FFFF) * 4) >> 32;
        let in_set = |set: u64| (0..).map(key_n).filter(move |k| final_set(k) == set);
        // 12 clients of sets 2 and 3 overflow the one-set table, so it grows
        // to four; 4 more in set 1; set 0 empty.
        let clients: Vec<Key> = in_set(3)
            .take(6)
            .chain(in_set(2).take(6))
            .chain(in_set(1).take(4))
            .collect();
        for &k in &clients {
            bind(&a, k, ep(1), a.now());
            clock.advance(secs(1));
        }
        assert_eq!(a.len(), 16);
        let table = shard.table().unwrap();
        assert_eq!(table.len(), 4, "twice the capacity in ways");
        let occupied = |i: usize| {
            table[i]
                .tags
                .iter()
                .filter(|t| t.load(Ordering::Relaxed) != 0)
                .count()
        };
        assert_eq!((0..4).map(occupied).collect::<Vec<_>>(), [0, 4, 6, 6]);
        let newcomer = in_set(0).next().unwrap();
        bind(&a, newcomer, ep(2), a.now());
        assert_eq!(a.len(), 16, "never over the capacity");
        assert_eq!((0..4).map(occupied).collect::<Vec<_>>(), [1, 3, 6, 6]);
        // Set 1's least recent was the first of its four.
        assert_eq!(bound_to(&a, &clients[12]), None, "evicted");
        for &k in &clients[13..] {
            assert_eq!(bound_to(&a, &k), Some(ep(1)));
        }
        assert_eq!(bound_to(&a, &newcomer), Some(ep(2)));
    }

    #[test]
    fn a_reader_that_meets_a_writer_asks_under_the_lock() {
        let (a, _) = one_shard(8);
        bind(&a, key(1), ep(1), a.now());
        let probe = Probe::new(&key(1));
        let set = set_of(a.shards[0].table().unwrap(), probe.hash);
        let (way, _) = set.find_locked(&probe).unwrap();
        // A writer stopped half way through, as a reader sees it.
        set.ways[way].seq.fetch_add(1, Ordering::Relaxed);
        assert!(matches!(Affinity::lookup(set, &probe), Lookup::Busy));
        assert_eq!(bound_to(&a, &key(1)), Some(ep(1)), "the binding holds");
        set.ways[way].seq.fetch_add(1, Ordering::Relaxed);
        assert!(matches!(Affinity::lookup(set, &probe), Lookup::Found(..)));
    }

    #[test]
    fn readers_never_see_a_torn_entry() {
        // Writers rebind 64 clients over and over, each to an endpoint whose
        // position hint is a function of its address; readers check every
        // binding they see is whole.
        let (a, _) = one_shard(64);
        let a = Arc::new(a);
        let bound = |client: u32, round: u32| Bound {
            addr: SocketAddr::from((round.to_be_bytes(), (client as u16) ^ 0x5A5A)),
            position: round.wrapping_mul(31) ^ client,
        };
        let k = |client: u32| Key {
            slot: (client, 0),
            lane: 0,
            client: IpAddr::from([10, 0, 0, client as u8]),
        };
        for c in 0..64 {
            bind(&a, k(c), bound(c, 0), a.now());
        }
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for round in 1..200_000u32 {
                    let c = round % 64;
                    bind(&a, k(c), bound(c, round), a.now());
                }
                done.store(true, Ordering::Release);
            });
            let (a, done) = (&a, &done);
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(move || {
                        let mut seen = 0u64;
                        let mut i = 0u32;
                        while !done.load(Ordering::Acquire) {
                            i = i.wrapping_add(1);
                            let c = i % 64;
                            if let Some(b) = bound_to(a, &k(c)) {
                                let round = match b.addr.ip() {
                                    IpAddr::V4(v4) => u32::from(v4),
                                    IpAddr::V6(_) => panic!("never written"),
                                };
                                assert_eq!(b, bound(c, round), "client {c}");
                                seen += 1;
                            }
                        }
                        seen
                    })
                })
                .collect();
            for r in readers {
                assert!(r.join().unwrap() > 0, "no hits");
            }
        });
    }

    #[test]
    fn the_system_clock_moves_forward_in_both_units() {
        let clock = SystemClock::default();
        let (start, start_nanos) = (clock.now(), clock.now_nanos());
        std::thread::sleep(Duration::from_millis(60));
        let (end, end_nanos) = (clock.now(), clock.now_nanos());
        // The coarse clock ticks every 1 to 10 ms.
        assert!(
            end - start >= Duration::from_millis(40),
            "{start:?} {end:?}"
        );
        let moved = end_nanos - start_nanos;
        assert!((40_000_000..10_000_000_000).contains(&moved), "{moved}");
        assert!(nanos(end).abs_diff(end_nanos) < 20_000_000);
    }

    #[test]
    fn a_system_clock_table_reads_the_meshs_clock() {
        // `Mesh::new` gives the table a copy of its clock: the table's time
        // must be that clock's (same origin), which outlier detection's
        // times are compared with.
        let clock = SystemClock::default();
        let a = Affinity::with_system_clock(8, clock);
        std::thread::sleep(Duration::from_millis(30));
        let before = clock.now_nanos();
        let now = a.now();
        let after = clock.now_nanos();
        assert!(before > 0, "the coarse clock ticked");
        assert!((before..=after).contains(&now), "{before} {now} {after}");
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
                bind(&a, key, ep(1), 0);
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
    fn stamps_order_ways_across_the_wrap() {
        let unit = 1u64 << 22;
        assert_eq!(stamp(3 * unit + unit / 2), 3);
        assert_eq!(age(5, 3), 2);
        // Another thread's stamp an instant later than this thread's clock
        // read counts as now, not as the oldest.
        assert_eq!(age(3, 4), 0);
        // Across the wrap of the 32-bit stamps.
        assert_eq!(age(1, u32::MAX), 2);
        // The least recent way of a set, by stamps alone, across the wrap;
        // empty ways never.
        let set = Set::default();
        for (i, stamp) in [(0, u32::MAX - 1), (1, 2), (3, u32::MAX)] {
            set.tags[i].store(1, Ordering::Relaxed);
            set.stamps[i].store(stamp, Ordering::Relaxed);
        }
        // The insert's one-pass scan chooses as `least_recent` does, ties
        // to the first way included, and finds the first empty way.
        let absent = Probe::new(&key(1));
        let oldest = |set: &Set, now| {
            let scan = set.scan(&absent, now);
            assert_eq!(scan.oldest, set.least_recent(now), "at {now}");
            assert_eq!(scan.empty, Some(2));
            scan.oldest
        };
        assert_eq!(oldest(&set, 3), Some(0));
        set.stamps[0].store(3, Ordering::Relaxed);
        assert_eq!(oldest(&set, 3), Some(3));
        set.stamps[1].store(u32::MAX, Ordering::Relaxed);
        assert_eq!(oldest(&set, 3), Some(1), "a tie goes to the first way");
        assert_eq!(Set::default().least_recent(3), None);
    }

    #[test]
    fn timeout_and_pickability() {
        let clock = Arc::new(ManualClock::new());
        let a = Affinity::new(100, clock.clone());
        let t = nanos(Duration::from_secs(10));
        bind(&a, key(1), ep(1), a.now());
        clock.advance(Duration::from_secs(9));
        assert_eq!(a.get(&Probe::new(&key(1)), t, a.now(), Some), Some(ep(1)));
        // The hit restarted the timer: 9 s later it still holds.
        clock.advance(Duration::from_secs(9));
        assert_eq!(a.get(&Probe::new(&key(1)), t, a.now(), Some), Some(ep(1)));
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            a.get(&Probe::new(&key(1)), t, a.now(), Some),
            None,
            "expired"
        );
        assert_eq!(a.len(), 0, "and dropped");
        bind(&a, key(2), ep(2), a.now());
        let unpickable = |e: Bound| (e != ep(2)).then_some(e);
        assert_eq!(
            a.get(&Probe::new(&key(2)), t, a.now(), unpickable),
            None,
            "unpickable"
        );
        assert_eq!(a.len(), 0);
    }
}
