//! Round-robin picking without shared writes.
//!
//! Every service port owns a [`Slot`], kept across snapshots while the port
//! exists, with one lane per eligible set (internal and external traffic, per
//! IP family), so that picks through one address never skip endpoints of
//! another (as IPVS keeps round-robin state per virtual server). Each thread
//! keeps its own cursor per lane, as each Envoy worker
//! keeps its own round-robin state: a pick writes only to memory its thread
//! owns, so picks on many threads scale without contending on one counter.
//! On one thread the sequence is exact: a new service port starts at its first
//! eligible endpoint (endpoints are ordered by address) and then visits each in
//! turn. Across threads, each thread cycles independently.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::snapshot::Snapshot;

/// Ids handed out and returned; ids are reused so per-thread tables stay
/// as small as the number of live owners.
struct Pool {
    free: Vec<u32>,
    next: u32,
    generation: u32,
}

impl Pool {
    const fn new() -> Mutex<Pool> {
        Mutex::new(Pool {
            free: Vec::new(),
            next: 0,
            generation: 0,
        })
    }

    /// A free id and a generation never handed out before (until it wraps).
    fn take(pool: &Mutex<Pool>) -> (u32, u32) {
        let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.generation = pool.generation.wrapping_add(1);
        let generation = pool.generation;
        let id = match pool.free.pop() {
            Some(id) => id,
            None => {
                pool.next += 1;
                pool.next - 1
            }
        };
        (id, generation)
    }

    fn give(pool: &Mutex<Pool>, id: u32) {
        let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.free.push(id);
    }
}

/// Ids of live service ports: they index every thread's cursors.
static POOL: Mutex<Pool> = Pool::new();
/// Ids of live [`crate::Route`]s: they index every thread's resolutions,
/// apart from the ports' ids so that a few routes cost a few entries.
static ROUTES: Mutex<Pool> = Pool::new();

/// Lanes per slot: one per eligible set of a service port.
pub(crate) const LANES: usize = 4;

/// The round-robin identity of one service port. Dropping it returns the id.
#[derive(Debug)]
pub(crate) struct Slot {
    id: u32,
    /// Distinguishes this owner of `id` from earlier ones, so a reused id
    /// starts its sequence afresh in every thread.
    generation: u32,
}

impl Slot {
    pub(crate) fn new() -> Slot {
        let (id, generation) = Pool::take(&POOL);
        Slot { id, generation }
    }

    /// The id and generation: unique among all slots that ever lived.
    pub(crate) fn identity(&self) -> (u32, u32) {
        (self.id, self.generation)
    }

    /// The next index in `0..len` in `lane` by this thread's `cursors`
    /// (`len` > 0, `lane` < [`LANES`]).
    #[inline]
    pub(crate) fn next(&self, cursors: &mut Cursors, lane: usize, len: usize) -> usize {
        let i = self.id as usize * LANES + lane;
        if i >= cursors.slots.len() {
            cursors.grow(i);
        }
        let c = &mut cursors.slots[i];
        if c.generation != self.generation {
            *c = Cursor {
                generation: self.generation,
                position: 0,
            };
        }
        // The set may have shrunk since the last pick: wrap without dividing.
        let at = if (c.position as usize) < len {
            c.position as usize
        } else {
            0
        };
        c.position = if at + 1 < len { (at + 1) as u32 } else { 0 };
        at
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        Pool::give(&POOL, self.id);
    }
}

/// The identity of one [`crate::Route`]: its index in every thread's
/// resolutions, and a generation that tells it from earlier owners of the
/// index. Dropping it returns the index.
#[derive(Debug)]
pub(crate) struct RouteId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl RouteId {
    pub(crate) fn new() -> RouteId {
        let (index, generation) = Pool::take(&ROUTES);
        RouteId { index, generation }
    }
}

impl Drop for RouteId {
    fn drop(&mut self) {
        Pool::give(&ROUTES, self.index);
    }
}

#[derive(Clone, Copy, Default)]
struct Cursor {
    generation: u32,
    position: u32,
}

/// One thread's round-robin positions, by slot id and lane, and its
/// random generator (for `random` and `least-request`): both reached with
/// the pick's one thread-local access.
#[derive(Default)]
pub(crate) struct Cursors {
    slots: Vec<Cursor>,
    /// xorshift state; 0 until first use (see [`Cursors::next_random`]).
    rng: u64,
}

impl Cursors {
    /// Makes room for cursor `i`: once per thread and slot id, so out of
    /// the pick's way.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, i: usize) {
        self.slots.resize(i + 1, Cursor::default());
    }

    /// The next value of this thread's xorshift generator, seeded on first
    /// use from the address of its state and a process-wide count (distinct
    /// between threads, and between the throwaway states of picks made
    /// while the thread's own is out of reach).
    #[inline(always)]
    pub(crate) fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        if x == 0 {
            x = self.first_seed();
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    #[cold]
    #[inline(never)]
    fn first_seed(&self) -> u64 {
        static SEEDS: AtomicU64 = AtomicU64::new(0);
        let at = &self.rng as *const u64 as u64;
        let n = SEEDS.fetch_add(1, Ordering::Relaxed);
        crate::policy::stable_hash(&(at ^ n.rotate_left(32)).to_le_bytes(), 7) | 1
    }

    /// Sets the generator's state (0: seed afresh on next use).
    pub(crate) fn reseed(&mut self, state: u64) {
        self.rng = state;
    }
}

/// The pick path's per-thread state, reached with one thread-local access
/// per pick: the round-robin cursors, the snapshot this thread last
/// picked from with the id of its mesh (see `Mesh::pick`), and what each
/// [`crate::Route`] resolved to on this thread, by route id.
#[derive(Default)]
pub(crate) struct Local {
    pub(crate) cursors: Cursors,
    pub(crate) snapshot: Option<(u64, Arc<Snapshot>)>,
    pub(crate) routes: Vec<crate::route::Resolution>,
}

thread_local! {
    static LOCAL: RefCell<Local> = const {
        RefCell::new(Local {
            cursors: Cursors {
                slots: Vec::new(),
                rng: 0,
            },
            snapshot: None,
            routes: Vec::new(),
        })
    };
}

/// Runs `f` with this thread's [`Local`]. A nested call (a [`Clock`] that
/// picks) or one while the thread's locals are being destroyed gets a fresh,
/// empty state instead: correct, only without round-robin memory.
///
/// `f` returns nothing: callers write their result to a variable they own,
/// which keeps large results from being moved through wrappers on the
/// pick path.
///
/// [`Clock`]: crate::Clock
#[inline(always)]
pub(crate) fn with_local(f: impl FnOnce(&mut Local)) {
    let mut f = Some(f);
    let _ = LOCAL.try_with(|local| {
        if let Ok(mut local) = local.try_borrow_mut() {
            if let Some(f) = f.take() {
                f(&mut local);
            }
        }
    });
    if let Some(f) = f {
        with_fresh_local(f);
    }
}

/// [`with_local`] when the thread's state is out of reach: out of line, so
/// that the hot path calls `f` in one place only and can inline it.
#[cold]
#[inline(never)]
fn with_fresh_local(f: impl FnOnce(&mut Local)) {
    f(&mut Local::default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throwaway_generators_start_apart() {
        // As `with_fresh_local` makes them, one after another at the same
        // stack address: their first draws still differ.
        let firsts: std::collections::HashSet<u64> =
            (0..64).map(|_| Cursors::default().next_random()).collect();
        assert_eq!(firsts.len(), 64);
        let mut seeded = Cursors::default();
        seeded.reseed(12345);
        let mut again = Cursors::default();
        again.reseed(12345);
        assert_eq!(
            (0..8).map(|_| seeded.next_random()).collect::<Vec<_>>(),
            (0..8).map(|_| again.next_random()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn cycles_in_order_and_wraps_when_the_set_shrinks() {
        let slot = Slot::new();
        let mut c = Cursors::default();
        let seq: Vec<usize> = (0..7).map(|_| slot.next(&mut c, 0, 3)).collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2, 0]);
        // Position is 1 now; the set shrinks to one endpoint, which wraps it.
        assert_eq!(slot.next(&mut c, 0, 1), 0);
        assert_eq!(slot.next(&mut c, 0, 2), 0);
        assert_eq!(slot.next(&mut c, 0, 2), 1);
        assert_eq!(slot.next(&mut c, 0, 2), 0);
    }

    #[test]
    fn a_reused_id_starts_afresh() {
        let a = Slot::new();
        let mut c = Cursors::default();
        a.next(&mut c, 0, 5);
        a.next(&mut c, 0, 5);
        // The next owner of the same id, as the pool would hand it out.
        let b = Slot {
            id: a.id,
            generation: a.generation.wrapping_add(1),
        };
        assert_eq!(b.next(&mut c, 0, 5), 0);
        assert_eq!(b.next(&mut c, 0, 5), 1);
        // Only the pool's own owner returns the id.
        std::mem::forget(b);
    }

    #[test]
    fn lanes_cycle_independently() {
        let slot = Slot::new();
        let mut c = Cursors::default();
        assert_eq!(slot.next(&mut c, 0, 3), 0);
        assert_eq!(slot.next(&mut c, 1, 1), 0);
        assert_eq!(slot.next(&mut c, 0, 3), 1);
        assert_eq!(slot.next(&mut c, 3, 2), 0);
        assert_eq!(slot.next(&mut c, 0, 3), 2);
    }

    #[test]
    fn threads_cycle_independently() {
        let slot = Arc::new(Slot::new());
        let next = |slot: &Slot| {
            let mut at = usize::MAX;
            with_local(|l| at = slot.next(&mut l.cursors, 0, 4));
            at
        };
        assert_eq!(next(&slot), 0);
        let s = slot.clone();
        let other = std::thread::spawn(move || (0..4).map(|_| next(&s)).collect::<Vec<_>>())
            .join()
            .unwrap();
        assert_eq!(other, [0, 1, 2, 3]);
        assert_eq!(next(&slot), 1);
    }

    #[test]
    fn a_nested_call_gets_a_fresh_state() {
        let slot = Slot::new();
        with_local(|outer| {
            assert_eq!(slot.next(&mut outer.cursors, 0, 3), 0);
            assert_eq!(slot.next(&mut outer.cursors, 0, 3), 1);
            // The thread's state is borrowed: a nested call starts afresh
            // instead of panicking.
            let mut inner_at = usize::MAX;
            with_local(|inner| inner_at = slot.next(&mut inner.cursors, 0, 3));
            assert_eq!(inner_at, 0);
        });
        let mut at = usize::MAX;
        with_local(|l| at = slot.next(&mut l.cursors, 0, 3));
        assert_eq!(at, 2);
    }
}
