//! Balancing policies: how a pick chooses among a set's pickable endpoints.
//!
//! Chosen per Service by the annotation `pobox.io/lb-policy` (default
//! `round-robin`). Every table is built when the snapshot is built, off the
//! pick path; a pick reads one table entry.
//!
//! | policy | pick | weights |
//! |---|---|---|
//! | `round-robin` | next in address order, per thread | 0 drains |
//! | `random` | uniform, per-thread generator (kube-proxy iptables mode) | 0 drains |
//! | `least-request` | power of two choices: the one of two random members with fewer requests in flight | 0 drains |
//! | `weighted-round-robin` | next in a precomputed smooth weighted sequence (nginx's algorithm: no bursts) | yes |
//! | `maglev` | Maglev lookup table of a prime size (`pobox.io/maglev-table-size`, default 65537), keyed by the hash key | yes |
//! | `ring-hash` | Ketama-style ring (`pobox.io/ring-size` points, default 65536), keyed by the hash key | yes |
//!
//! The hash key is the caller's key ([`crate::Client::key`]) or else the
//! client IP; a consistent policy with neither falls back to round robin.
//! Tables depend only on the endpoints' addresses and weights, never on the
//! order they arrived in, so every process builds the same table.

use std::fmt;
use std::net::SocketAddr;

use crate::balance::Cursors;

/// The annotation that chooses a Service's policy.
pub const ANNOTATION_LB_POLICY: &str = "pobox.io/lb-policy";
/// The annotation that sizes a Maglev table (a prime).
pub const ANNOTATION_MAGLEV_TABLE_SIZE: &str = "pobox.io/maglev-table-size";
/// The annotation that sizes a hash ring (points in all).
pub const ANNOTATION_RING_SIZE: &str = "pobox.io/ring-size";
/// The EndpointSlice annotation giving endpoint weights, as a JSON object
/// from address to weight (0..=10000; 0 drains): `{"10.1.2.3": 5}`.
pub const ANNOTATION_WEIGHTS: &str = "pobox.io/weights";

/// The default Maglev table size (the Maglev paper's and Envoy's).
pub const DEFAULT_MAGLEV_TABLE_SIZE: u32 = 65537;
/// The largest Maglev table size accepted.
pub const MAX_MAGLEV_TABLE_SIZE: u32 = 5_000_011;
/// The default number of points on a hash ring.
pub const DEFAULT_RING_SIZE: u32 = 65536;
/// The largest ring accepted (Envoy's maximum).
pub const MAX_RING_SIZE: u32 = 8_388_608;
/// The largest endpoint weight.
pub const MAX_WEIGHT: u32 = 10_000;
/// The longest smooth weighted sequence built; larger weight sums are scaled
/// down proportionally to fit.
const MAX_SEQUENCE: u64 = 1 << 16;

/// A Service's balancing policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LbPolicy {
    /// Next endpoint in address order (the default).
    #[default]
    RoundRobin,
    /// Uniformly at random.
    Random,
    /// Power of two choices over requests in flight.
    LeastRequest,
    /// Smooth weighted round robin.
    WeightedRoundRobin,
    /// Maglev consistent hashing with a table of `table_size` (prime) entries.
    Maglev {
        /// Entries in the lookup table.
        table_size: u32,
    },
    /// Ketama-style consistent hashing with `ring_size` points.
    RingHash {
        /// Points on the ring.
        ring_size: u32,
    },
}

impl LbPolicy {
    /// The annotation value naming the policy.
    pub fn as_str(&self) -> &'static str {
        match self {
            LbPolicy::RoundRobin => "round-robin",
            LbPolicy::Random => "random",
            LbPolicy::LeastRequest => "least-request",
            LbPolicy::WeightedRoundRobin => "weighted-round-robin",
            LbPolicy::Maglev { .. } => "maglev",
            LbPolicy::RingHash { .. } => "ring-hash",
        }
    }

    /// Whether the policy hashes a key (and so keeps a client on one endpoint).
    pub fn is_consistent(&self) -> bool {
        matches!(self, LbPolicy::Maglev { .. } | LbPolicy::RingHash { .. })
    }
}

impl fmt::Display for LbPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(crate) fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = n as u64;
    let mut d = 2u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

// === hashing: fixed, so every process builds the same tables ===

/// The multiplier of [`stable_hash`]'s word step.
const HASH_K: u64 = 0x9e37_79b9_7f4a_7c15;

/// The hash every table and key goes through: stable across processes,
/// platforms and releases (unlike `std`'s seeded hashers), so every process
/// builds the same tables and sends a key to the same endpoint.
///
/// Start from FNV-1a's offset basis xor `seed`; for each whole eight-byte
/// word (little-endian), xor it in, multiply by `HASH_K` and rotate left
/// by 31; the last 1 to 7 bytes likewise, as one word zero-padded above
/// them; then xor in the length and finish with MurmurHash3's `fmix64`.
/// Pinned by `stable_hash_is_pinned`; the peer benchmark
/// (`benches/peers`) keeps a copy checked against the same values.
pub(crate) fn stable_hash(bytes: &[u8], seed: u64) -> u64 {
    // Eight bytes per multiply (little-endian on every platform), then the
    // length, then MurmurHash3's finalizer: a client IP or a 16-byte key
    // costs two or three multiplies instead of one per byte.
    let len = bytes.len();
    let word = |at: usize| {
        u64::from_le_bytes(
            bytes[at..at + 8]
                .try_into()
                .expect("a word inside the slice"),
        )
    };
    let mut h = hash_start(seed);
    if len >= 8 {
        // Whole words off the front (at most one for the keys of 9 to 16
        // bytes most picks hash: an IPv6 address, a short header value),
        // then the last 1 to 8 bytes: the word that ends the slice,
        // shifted down to them, as zero-padding them would give. (A loop
        // over the words with the tail after it, as this was, is unrolled
        // by four with a remainder count before it: a third more
        // instructions for a 15-byte key.)
        let mut at = 0;
        while len - at > 8 {
            h = hash_word(h, word(at));
            at += 8;
        }
        h = hash_word(h, word(len - 8) >> (8 * (8 - (len - at))));
    } else if len > 0 {
        h = hash_word(h, tail_word(bytes));
    }
    hash_finish(h, len)
}

/// 1 to 7 bytes as a little-endian word, zero above them: what copying
/// them into a zeroed `[u8; 8]` gives, without the `memcpy` call a copy of
/// a variable length compiles to (a tenth of a Maglev pick). Two reads
/// that overlap for 4 to 7 bytes, three single bytes (some the same) below.
#[inline(always)]
fn tail_word(rest: &[u8]) -> u64 {
    let n = rest.len();
    debug_assert!((1..8).contains(&n));
    if n >= 4 {
        let low = u32::from_le_bytes(rest[..4].try_into().expect("four bytes")) as u64;
        let high = u32::from_le_bytes(rest[n - 4..].try_into().expect("four bytes")) as u64;
        low | high << (8 * (n - 4))
    } else {
        rest[0] as u64
            | (rest[n / 2] as u64) << (8 * (n / 2))
            | (rest[n - 1] as u64) << (8 * (n - 1))
    }
}

// The steps of `stable_hash`, so that a ring hashes a member's name once
// and only the point number after it per point.

#[inline(always)]
fn hash_start(seed: u64) -> u64 {
    0xcbf2_9ce4_8422_2325u64 ^ seed
}

#[inline(always)]
fn hash_word(h: u64, word: u64) -> u64 {
    (h ^ word).wrapping_mul(HASH_K).rotate_left(31)
}

#[inline(always)]
fn hash_words(mut h: u64, chunks: &mut std::slice::ChunksExact<'_, u8>) -> u64 {
    for chunk in chunks {
        h = hash_word(
            h,
            u64::from_le_bytes(chunk.try_into().expect("chunks of eight")),
        );
    }
    h
}

#[inline(always)]
fn hash_finish(mut h: u64, len: usize) -> u64 {
    h ^= len as u64;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Appends an endpoint's name as the tables hash it: `ip:port` as
/// `SocketAddr`'s `Display` writes it (`[v6]:port` for IPv6). IPv4 is
/// written by hand: the formatting machinery was a tenth of a Maglev build.
fn push_endpoint_name(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            // On the stack, then one copy: five small appends (each a
            // `memcpy` call) cost more than the digits.
            // "255.255.255.255:65535", and room for an octet's three bytes
            // copied whole where it has fewer digits.
            let mut buf = [0u8; 24];
            let mut len = 0;
            for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                let [a, b, c, digits] = OCTETS[octet as usize];
                buf[len..len + 3].copy_from_slice(&[a, b, c]);
                len += digits as usize;
            }
            buf[len] = b':';
            len += 1;
            len += write_small_decimal(&mut buf[len..], v4.port() as u32);
            out.extend_from_slice(&buf[..len]);
        }
        SocketAddr::V6(_) => {
            // Through `fmt::Write`, not `io::Write`, whose error type (and
            // its formatting, for an `expect`) a write to a `Vec` does not
            // need: 3 KB of the JavaScript package's module.
            struct Bytes<'a>(&'a mut Vec<u8>);
            impl std::fmt::Write for Bytes<'_> {
                fn write_str(&mut self, s: &str) -> std::fmt::Result {
                    self.0.extend_from_slice(s.as_bytes());
                    Ok(())
                }
            }
            // Writing to a `Vec` cannot fail.
            let _ = std::fmt::Write::write_fmt(&mut Bytes(out), format_args!("{addr}"));
        }
    }
}

/// Each octet's decimal digits (three bytes, zero after the last digit)
/// and their count: a name's four octets are four copies, not twelve
/// divisions (a sixth of a Maglev build of 10,000 members).
static OCTETS: [[u8; 4]; 256] = {
    let mut table = [[0u8; 4]; 256];
    let mut n = 0;
    while n < 256 {
        let (h, t, u) = ((n / 100) as u8, (n / 10 % 10) as u8, (n % 10) as u8);
        table[n] = if n >= 100 {
            [b'0' + h, b'0' + t, b'0' + u, 3]
        } else if n >= 10 {
            [b'0' + t, b'0' + u, 0, 2]
        } else {
            [b'0' + u, 0, 0, 1]
        };
        n += 1;
    }
    table
};

/// Writes `n` (below 100,000) in decimal at the start of `out`, as
/// `format!("{n}")` writes it; returns the number of digits.
fn write_small_decimal(out: &mut [u8], mut n: u32) -> usize {
    debug_assert!(n < 100_000);
    let digits = match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1_000..=9_999 => 4,
        _ => 5,
    };
    for slot in out[..digits].iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    digits
}

// === tables ===

/// What a pick reads, per eligible set. [`build`] makes it over a set's
/// members and stores each member's position among its service port's
/// endpoints, so that a pick reads the endpoint straight from the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Table {
    /// Round robin or random over `members`.
    Members,
    /// A cycle of positions.
    Sequence(Box<[u32]>),
    /// Maglev: a position for each slot of the table.
    Maglev(Positions),
    /// Ring hash: points sorted by hash, with an index by the hash's top bits.
    Ring(Ring),
}

/// Positions among a service port's endpoints, two bytes each when it has
/// at most 65,536 (nearly always): a Maglev table of 65,537 entries is then
/// 128 KB instead of 256 KB, so more of it stays in cache between picks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Positions {
    /// At most 65,536 endpoints.
    Narrow(Box<[u16]>),
    /// More.
    Wide(Box<[u32]>),
}

impl Table {
    /// The position a hash key picks, for the consistent
    /// policies (Maglev: the key scaled to the table's length; ring hash:
    /// the first point at or above it); `None` for the others.
    #[inline(always)]
    pub(crate) fn hashed(&self, h: u64) -> Option<usize> {
        match self {
            Table::Maglev(table) => {
                Some(table.get(((h as u128 * table.len() as u128) >> 64) as usize))
            }
            Table::Ring(ring) => Some(ring.lookup(h)),
            Table::Members | Table::Sequence(_) => None,
        }
    }
}

impl Positions {
    /// Entries held.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self {
            Positions::Narrow(p) => p.len(),
            Positions::Wide(p) => p.len(),
        }
    }

    /// The position at `i` (`i < len`).
    #[inline(always)]
    pub(crate) fn get(&self, i: usize) -> usize {
        match self {
            Positions::Narrow(p) => p[i] as usize,
            Positions::Wide(p) => p[i] as usize,
        }
    }

    /// The entries, whatever their width.
    #[cfg(test)]
    fn to_vec(&self) -> Vec<u32> {
        (0..self.len()).map(|i| self.get(i) as u32).collect()
    }

    /// Whether positions among `endpoints` endpoints fit
    /// [`Positions::Narrow`].
    fn narrow(endpoints: usize) -> bool {
        endpoints <= 1 << 16
    }
}

/// An entry of a [`Positions`] table: built generically, so that each width
/// gets its own inlined fill loop.
trait Position: Copy + Default {
    fn of(index: usize) -> Self;
}

impl Position for u16 {
    #[inline(always)]
    fn of(index: usize) -> Self {
        index as u16
    }
}

impl Position for u32 {
    #[inline(always)]
    fn of(index: usize) -> Self {
        index as u32
    }
}

/// Where an endpoint's walk through a Maglev table of `m` slots starts,
/// and its step: from two hashes of the endpoint's name (the paper's
/// offset and skip). Computing them (the name, two hashes, two divisions)
/// was a fifth of a publish of a 10,000-endpoint Maglev Service, so a port
/// keeps its endpoints' seeds and the next build copies those of the
/// endpoints that stay (see [`build`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seed {
    /// The walk's first slot (`offset`), below `m`.
    slot: u32,
    /// Its step, in `1..m`.
    skip: u32,
}

impl Seed {
    /// The seed of the endpoint at `addr` in a table of `m` slots. `name`
    /// is room for the endpoint's name, reused from one call to the next.
    pub(crate) fn new(addr: SocketAddr, m: u32, name: &mut Vec<u8>) -> Seed {
        name.clear();
        push_endpoint_name(name, addr);
        Seed {
            slot: (stable_hash(name, 0) % m as u64) as u32,
            skip: (stable_hash(name, 1) % (m as u64 - 1) + 1) as u32,
        }
    }
}

/// Builds the table for `members` (addresses and weights, weights > 0, in
/// address order), storing `positions[i]` for member `i`: its position
/// among the service port's `endpoints` endpoints (each below `endpoints`).
/// Written straight into the table as it fills: a second pass mapping the
/// members' own indices was a seventh of a Maglev publish (callgrind, 1,000
/// members: 10.3M instructions with it, 8.8M without).
///
/// `seeds` holds, for a Maglev policy, every endpoint's [`Seed`] for the
/// policy's table size, by position; other policies take none.
pub(crate) fn build(
    policy: LbPolicy,
    members: &[(SocketAddr, u32)],
    positions: &[u32],
    endpoints: usize,
    seeds: &[Seed],
) -> Table {
    assert_eq!(members.len(), positions.len(), "a position per member");
    debug_assert!(positions.iter().all(|&p| (p as usize) < endpoints));
    if members.is_empty() {
        return Table::Members;
    }
    match policy {
        LbPolicy::RoundRobin | LbPolicy::Random | LbPolicy::LeastRequest => Table::Members,
        LbPolicy::WeightedRoundRobin => Table::Sequence(
            smooth_sequence(members)
                .iter()
                .map(|&i| positions[i as usize])
                .collect(),
        ),
        LbPolicy::Maglev { table_size } => {
            assert_eq!(seeds.len(), endpoints, "a seed per endpoint");
            Table::Maglev(maglev(members, positions, endpoints, seeds, table_size))
        }
        LbPolicy::RingHash { ring_size } => {
            Table::Ring(ring(members, positions, endpoints, ring_size))
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// nginx's smooth weighted round robin, unrolled into one period: each step
/// adds every weight to its current value, picks the largest (first on a
/// tie) and takes the total from it.
fn smooth_sequence(members: &[(SocketAddr, u32)]) -> Box<[u32]> {
    let g = members.iter().fold(0u64, |g, m| gcd(g, m.1 as u64));
    let mut weights: Vec<u64> = members.iter().map(|m| m.1 as u64 / g).collect();
    let mut total: u64 = weights.iter().sum();
    if total > MAX_SEQUENCE {
        // Scale down, keeping every member at least once.
        for w in &mut weights {
            *w = ((*w * MAX_SEQUENCE) / total).max(1);
        }
        total = weights.iter().sum();
    }
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for i in 0..weights.len() {
            current[i] += weights[i] as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        out.push(best as u32);
    }
    out.into_boxed_slice()
}

/// The Maglev lookup table (Eisenbud et al., NSDI 2016), weighted as Envoy
/// weights it: a member of weight w takes a turn in a round only when
/// `round * w` has caught up with its target, so turns are proportional to
/// weight. Member `i`'s slots hold `positions[i]`, and its walk starts at
/// `seeds[positions[i]]` (see [`build`]).
fn maglev(
    members: &[(SocketAddr, u32)],
    positions: &[u32],
    endpoints: usize,
    seeds: &[Seed],
    size: u32,
) -> Positions {
    if Positions::narrow(endpoints) {
        Positions::Narrow(maglev_fill(members, positions, seeds, size))
    } else {
        Positions::Wide(maglev_fill(members, positions, seeds, size))
    }
}

fn maglev_fill<P: Position>(
    members: &[(SocketAddr, u32)],
    positions: &[u32],
    seeds: &[Seed],
    size: u32,
) -> Box<[P]> {
    let m = size;
    let max_weight = members.iter().map(|e| e.1).max().unwrap_or(1);
    // With equal weights every member takes a turn every round (the target
    // never passes `round * weight`), so the check is skipped.
    let weighted = members.iter().any(|e| e.1 != max_weight);
    // Each member's walk through its permutation, from its seed: `slot` is
    // `(offset + next * skip) % m`, its next preferred slot, advanced by
    // adding `skip` (no division: `skip < m`). Eight bytes, so 1,000
    // members' walks fit in the first-level cache beside `taken`.
    let mut walks: Vec<Seed> = positions.iter().map(|&p| seeds[p as usize]).collect();
    let walks_len = walks.len();
    // Turns taken so far times `max_weight`, per member (weighted sets only).
    let mut targets = vec![0u64; if weighted { members.len() } else { 0 }];
    // Which slots are filled, a bit each: the probes (about ln M per entry,
    // most of the build) read 8 KB at M = 65,537 instead of the table.
    let mut taken = vec![0u64; (m as usize).div_ceil(64)];
    let mut table = vec![P::default(); m as usize];
    let mut filled = 0u32;
    // The last fills walk furthest (about M / F probes each with F slots
    // free: a third of all probes go to the last 64 slots); from here on
    // they find their slot by a scan of the free slots instead (see `Tail`).
    let scan_from = m - Tail::slots(m);
    let mut tail: Option<Tail> = None;
    let mut round = 0u64;
    'rounds: loop {
        round += 1;
        for (i, walk) in walks.iter_mut().enumerate() {
            if weighted {
                if round * (members[i].1 as u64) < targets[i] {
                    continue;
                }
                targets[i] += max_weight as u64;
            }
            // `(slot + skip) % m` without a division, and without a branch:
            // whether a step wraps is as random as the hashes.
            let step = |slot: u32| (slot + walk.skip).min((slot + walk.skip).wrapping_sub(m));
            let is_taken = |slot: u32| (taken[slot as usize / 64] >> (slot % 64)) & 1;
            let slot = if filled < scan_from {
                // The walk's next two slots are read without a branch: a
                // loop that stops at the first free one mispredicted its
                // exit about once a fill. Past two taken (a third of fills),
                // the walk goes on four slots at a time, the four read at
                // once rather than each after the last. (Two beat three and
                // four first: as fast, fewer instructions. One at a time
                // after them was 3-4% slower a publish, eight 5% slower.)
                let s = [walk.slot, step(walk.slot)];
                let busy = is_taken(s[0]) | is_taken(s[1]) << 1;
                let slot = if busy != 0b11 {
                    s[(!busy).trailing_zeros() as usize]
                } else {
                    let mut slot = step(s[1]);
                    loop {
                        let t1 = step(slot);
                        let t2 = step(t1);
                        let t3 = step(t2);
                        let t = [slot, t1, t2, t3];
                        let busy = is_taken(t[0])
                            | is_taken(t[1]) << 1
                            | is_taken(t[2]) << 2
                            | is_taken(t[3]) << 3;
                        if busy != 0b1111 {
                            break t[(!busy).trailing_zeros() as usize];
                        }
                        slot = step(t3);
                    }
                };
                taken[slot as usize / 64] |= 1 << (slot % 64);
                slot
            } else {
                tail.get_or_insert_with(|| Tail::new(&taken, m, walks_len))
                    .take(i, walk.slot, walk.skip)
            };
            table[slot as usize] = P::of(positions[i] as usize);
            walk.slot = step(slot);
            filled += 1;
            if filled == m {
                break 'rounds;
            }
        }
    }
    table.into_boxed_slice()
}

/// The last free slots of a Maglev table, and how a member finds the first
/// of them on its walk without walking: step `k` of a walk from `slot` is
/// `(slot + k * skip) % m`, so a free slot `s` is at step
/// `(s - slot) * skip⁻¹ % m` (`m` is prime, so `skip` has an inverse), and
/// the walk would stop at the free slot of fewest steps. Every slot it would
/// pass on the way is taken, so the slot is the walk's, and the table the
/// same. Scanning F free slots costs F multiplications against M / F probes.
struct Tail {
    free: Vec<u32>,
    /// `skip⁻¹ mod m` per member, computed when first needed (never 0).
    inverses: Vec<u32>,
    m: u32,
    /// `⌊2⁶⁴ / m⌋`, for `% m` by a multiplication (Barrett reduction).
    reciprocal: u64,
}

impl Tail {
    /// Free slots when the scans start: about √m / 2 (128 at m = 65,537),
    /// where F scans of up to F slots (a multiplication each) cost about
    /// what the walks they replace would (m / F probes each), measured:
    /// 11.5M instructions with walks only, 9.3M with 64, 8.8M with 128,
    /// 8.7M with 256, 10.3M with 512 (callgrind, N = 1,000).
    fn slots(m: u32) -> u32 {
        m.isqrt() / 2
    }

    fn new(taken: &[u64], m: u32, members: usize) -> Tail {
        let mut free = Vec::with_capacity(Tail::slots(m) as usize);
        for (w, &word) in taken.iter().enumerate() {
            let mut empty = !word;
            while empty != 0 {
                let s = (w * 64) as u32 + empty.trailing_zeros();
                if s < m {
                    free.push(s);
                }
                empty &= empty - 1;
            }
        }
        Tail {
            free,
            inverses: vec![0; members],
            m,
            reciprocal: u64::MAX / m as u64,
        }
    }

    /// Takes the free slot member `i`'s walk, now at `slot`, would stop at.
    fn take(&mut self, i: usize, slot: u32, skip: u32) -> u32 {
        let m = self.m;
        if self.inverses[i] == 0 {
            self.inverses[i] = inverse(skip, m);
        }
        let inverse = self.inverses[i] as u64;
        let reciprocal = self.reciprocal;
        let steps = |s: u32| {
            let distance = if s >= slot { s - slot } else { s + m - slot };
            // `x % m` for x < m² < 2⁴⁶: the quotient estimate is at most one
            // short, so one conditional subtraction finishes.
            let x = distance as u64 * inverse;
            let q = ((x as u128 * reciprocal as u128) >> 64) as u64;
            let r = x - q * m as u64;
            if r >= m as u64 {
                r - m as u64
            } else {
                r
            }
        };
        let (at, _) = self
            .free
            .iter()
            .enumerate()
            .min_by_key(|&(_, &s)| steps(s))
            .expect("a slot is free while the table is not full");
        self.free.swap_remove(at)
    }
}

/// `a⁻¹ mod m` for a prime `m` and `0 < a < m` (extended Euclid).
fn inverse(a: u32, m: u32) -> u32 {
    let (mut r0, mut r1) = (m as i64, a as i64);
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    debug_assert_eq!(r0, 1, "{a} has no inverse mod {m}");
    t0.rem_euclid(m as i64) as u32
}

/// A Ketama-style ring: each member gets points in proportion to its weight
/// (at least one), at the hashes of `"<ip:port>_<n>"`, sorted by hash (ties
/// in member order, as sorting (hash, member) tuples orders them).
///
/// A lookup finds the first point at or above the key, wrapping around.
/// Instead of a binary search over the whole ring (18 dependent reads at
/// 256,000 points, most of them cache misses), `starts` indexes the points
/// by the top `64 - shift` bits of their hash: one read there, then a search
/// among the few points of one bucket, in one or two cache lines. That
/// search has a fixed number of steps (see [`Ring::find`]), and the points
/// end in [`Ring::PAD`] copies of the first one at the highest hash, so that
/// neither it nor the wrap-around needs a branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ring {
    /// The points, by hash, then [`Ring::PAD`] copies of the first one's
    /// member at hash `u64::MAX`: the point a key above every point wraps
    /// around to, and the end of the last bucket's search window.
    points: RingPoints,
    /// `starts[b]`: the first point whose hash's top bits are `b` or more;
    /// one more entry than buckets, the last being the number of points.
    starts: Box<[u32]>,
    /// `hash >> shift` is a hash's bucket.
    shift: u32,
}

/// A ring's points, ascending by hash: each the hash (8 bytes) then the
/// member's position among the port's endpoints (2 bytes when it has at
/// most 65,536, else 4), little-endian. Packed, so that the member is read
/// from the cache line the search has just read, not from another array:
/// one cache miss fewer per lookup, in 10 bytes a point (2.5 MB at 256,000
/// points).
#[derive(Debug, Clone, PartialEq, Eq)]
enum RingPoints {
    Narrow(Box<[[u8; 10]]>),
    Wide(Box<[[u8; 12]]>),
}

/// A packed ring point (see [`RingPoints`]).
trait Point: Copy {
    fn new(hash: u64, member: usize) -> Self;
    fn hash(&self) -> u64;
    fn member(&self) -> usize;
}

impl Point for [u8; 10] {
    #[inline(always)]
    fn new(hash: u64, member: usize) -> Self {
        let mut p = [0; 10];
        p[..8].copy_from_slice(&hash.to_le_bytes());
        p[8..].copy_from_slice(&(member as u16).to_le_bytes());
        p
    }
    #[inline(always)]
    fn hash(&self) -> u64 {
        u64::from_le_bytes(self[..8].try_into().expect("eight bytes"))
    }
    #[inline(always)]
    fn member(&self) -> usize {
        u16::from_le_bytes([self[8], self[9]]) as usize
    }
}

impl Point for [u8; 12] {
    #[inline(always)]
    fn new(hash: u64, member: usize) -> Self {
        let mut p = [0; 12];
        p[..8].copy_from_slice(&hash.to_le_bytes());
        p[8..].copy_from_slice(&(member as u32).to_le_bytes());
        p
    }
    #[inline(always)]
    fn hash(&self) -> u64 {
        u64::from_le_bytes(self[..8].try_into().expect("eight bytes"))
    }
    #[inline(always)]
    fn member(&self) -> usize {
        u32::from_le_bytes(self[8..].try_into().expect("four bytes")) as usize
    }
}

impl Ring {
    /// The position for a hash key (a member's as built, an endpoint's once
    /// mapped): that of the first point at or above the key, or of the
    /// first point when the key is above them all.
    ///
    /// Out of line: the same instructions a pick natively (148 a ring
    /// pick with the harness's loop either way, and no slower), and one
    /// copy in the JavaScript package's module instead of one in every
    /// caller of `Resolved::pick` (1.4 KB).
    #[inline(never)]
    pub(crate) fn lookup(&self, key: u64) -> usize {
        match &self.points {
            RingPoints::Narrow(points) => self.find(points, key),
            RingPoints::Wide(points) => self.find(points, key),
        }
    }

    /// Points after the last: enough for the search window of a bucket
    /// that starts at the last point ([`Ring::WINDOW`] reads and the
    /// answer past them).
    const PAD: usize = Ring::WINDOW + 1;

    /// The points a fixed-step search reads: a bucket with more is searched
    /// the long way (about one in twenty at four points a bucket).
    const WINDOW: usize = 7;

    #[inline(always)]
    fn find<P: Point>(&self, points: &[P], key: u64) -> usize {
        let bucket = (key >> self.shift) as usize;
        let (from, to) = (
            self.starts[bucket] as usize,
            self.starts[bucket + 1] as usize,
        );
        // Every point before the bucket is below the key and every point
        // after it (a later bucket's, or the padding) above: the answer is
        // the number of the bucket's points below the key, past `from`.
        if to - from <= Ring::WINDOW {
            // Three halvings over a window of seven, with no branch: the
            // window's points past the bucket are above the key, so they
            // do not change the count. The search it replaced (a binary
            // search over the bucket alone) stopped after a number of steps
            // that varied with the bucket, and mispredicted its end about
            // once a lookup. (A fixed-length count over the bucket was
            // tried before that: more reads, slower.)
            let window: &[P; Ring::PAD] = points[from..from + Ring::PAD]
                .try_into()
                .expect("the padding covers every window");
            let mut below = 0;
            for half in [4, 2, 1] {
                // `& 7`: in bounds by construction; said so for the
                // compiler, which then checks nothing.
                if window[(below + half - 1) & 7].hash() < key {
                    below += half;
                }
            }
            return window[below & 7].member();
        }
        let at = from + points[from..to].partition_point(|p| p.hash() < key);
        points[at].member()
    }

    /// The points in ring order: (hash, member).
    #[cfg(test)]
    fn points(&self) -> Vec<(u64, u32)> {
        fn all<P: Point>(points: &[P]) -> Vec<(u64, u32)> {
            let (points, pad) = points.split_at(points.len() - Ring::PAD);
            assert!(
                pad.iter()
                    .all(|p| p.hash() == u64::MAX && p.member() == points[0].member()),
                "the padding is the first point's member at the highest hash"
            );
            points
                .iter()
                .map(|p| (p.hash(), p.member() as u32))
                .collect()
        }
        match &self.points {
            RingPoints::Narrow(points) => all(points),
            RingPoints::Wide(points) => all(points),
        }
    }

    /// Sorts points given grouped by member (`shares[i]` points for member
    /// `i`, in order) and indexes them: the counts of the top bits are the
    /// index, and the last of two counting passes (see [`place`]). This
    /// replaced a radix sort of eight passes over 16-byte (hash, member)
    /// pairs.
    fn from_points(hashes: &[u64], shares: &[u32], positions: &[u32], endpoints: usize) -> Ring {
        let len = hashes.len();
        // About four points a bucket: a bucket fits in a cache line or
        // two, and the index (4 bytes a bucket) is a tenth of the points.
        let bits = (usize::BITS - (len / 4).leading_zeros()).max(1);
        let shift = 64 - bits;
        let buckets = 1usize << bits;
        let mut starts = vec![0u32; buckets + 1];
        for &h in hashes {
            starts[(h >> shift) as usize + 1] += 1;
        }
        for b in 1..=buckets {
            starts[b] += starts[b - 1];
        }
        let points = if Positions::narrow(endpoints) {
            RingPoints::Narrow(place(hashes, shares, positions, &starts, shift))
        } else {
            RingPoints::Wide(place(hashes, shares, positions, &starts, shift))
        };
        Ring {
            points,
            starts: starts.into_boxed_slice(),
            shift,
        }
    }
}

/// [`Ring::from_points`]' placing and sorting, for one width of points.
///
/// Two stable counting passes, as a radix sort's last two: by the 8 bits
/// below the bucket's, then by the bucket (whose counts are `starts`). The
/// points are then in order of their top bits (24 at 256,000 points), ties
/// in member order; the few pairs that share those bits are put in order by
/// an insertion pass whose branch is nearly always predicted. (An insertion
/// sort inside each bucket of about four points did the same work in fewer
/// instructions, but mispredicted about once a point: 300,000 times at
/// 256,000 points, a third of the build's time.)
fn place<P: Point>(
    hashes: &[u64],
    shares: &[u32],
    positions: &[u32],
    starts: &[u32],
    shift: u32,
) -> Box<[P]> {
    let low = shift.saturating_sub(8);
    let digit = |h: u64| ((h >> low) & 0xff) as usize;
    let mut next = [0u32; 256];
    for &h in hashes {
        next[digit(h)] += 1;
    }
    let mut sum = 0;
    for n in next.iter_mut() {
        (*n, sum) = (sum, sum + *n);
    }
    let mut by_digit = vec![P::new(0, 0); hashes.len()];
    let mut points = hashes.iter();
    for (&share, &position) in shares.iter().zip(positions) {
        for &h in points.by_ref().take(share as usize) {
            let at = &mut next[digit(h)];
            by_digit[*at as usize] = P::new(h, position as usize);
            *at += 1;
        }
    }
    let mut next = starts[..starts.len() - 1].to_vec();
    let mut sorted = Vec::with_capacity(hashes.len() + Ring::PAD);
    sorted.resize(hashes.len(), P::new(0, 0));
    for p in by_digit {
        let at = &mut next[(p.hash() >> shift) as usize];
        sorted[*at as usize] = p;
        *at += 1;
    }
    for i in 1..sorted.len() {
        let point = sorted[i];
        let h = point.hash();
        let mut j = i;
        // Strictly greater: equal hashes keep member order.
        while j > 0 && sorted[j - 1].hash() > h {
            sorted[j] = sorted[j - 1];
            j -= 1;
        }
        sorted[j] = point;
    }
    let first = sorted.first().map_or(0, |p| p.member());
    sorted.resize(hashes.len() + Ring::PAD, P::new(u64::MAX, first));
    sorted.into_boxed_slice()
}

/// Builds a ring of about `size` points for `members`, member `i`'s points
/// holding `positions[i]` (see [`build`]).
fn ring(members: &[(SocketAddr, u32)], positions: &[u32], endpoints: usize, size: u32) -> Ring {
    let total: u64 = members.iter().map(|m| m.1 as u64).sum();
    let shares: Vec<u32> = members
        .iter()
        .map(|m| ((size as u64 * m.1 as u64) / total).max(1) as u32)
        .collect();
    let mut hashes = Vec::with_capacity(shares.iter().map(|&s| s as usize).sum());
    let mut name = Vec::with_capacity(64);
    for ((addr, _), &share) in members.iter().zip(&shares) {
        name.clear();
        push_endpoint_name(&mut name, *addr);
        name.push(b'_');
        push_point_hashes(&name, share, &mut hashes);
    }
    Ring::from_points(&hashes, &shares, positions, endpoints)
}

/// Pushes `stable_hash(format!("{prefix}{n}"), 0)` for `n` in `0..count`.
/// The prefix's whole eight-byte words are hashed once; per point, only the
/// prefix's last few bytes and the number are, from a buffer in which the
/// number counts up in ASCII (no division, no formatting).
fn push_point_hashes(prefix: &[u8], count: u32, out: &mut Vec<u64>) {
    let mut words = prefix.chunks_exact(8);
    let start = hash_words(hash_start(0), &mut words);
    let rest = words.remainder();
    // The rest of the prefix (at most 7 bytes), the number (at most 10
    // digits), zeros after them: what `stable_hash` reads as words, the
    // last one zero-padded.
    let mut tail = [0u8; 24];
    tail[..rest.len()].copy_from_slice(rest);
    let digits_at = rest.len();
    tail[digits_at] = b'0';
    let mut end = digits_at + 1;
    for _ in 0..count {
        let word =
            |i: usize| u64::from_le_bytes(tail[i * 8..i * 8 + 8].try_into().expect("eight bytes"));
        let mut h = hash_word(start, word(0));
        if end > 8 {
            h = hash_word(h, word(1));
            if end > 16 {
                h = hash_word(h, word(2));
            }
        }
        out.push(hash_finish(h, prefix.len() - rest.len() + end));
        // Count up: carry through the nines; past the first digit, the
        // number gains one ("999" + 1 = "1000").
        let mut at = end;
        loop {
            if at == digits_at {
                tail[digits_at] = b'1';
                tail[end] = b'0';
                end += 1;
                break;
            }
            at -= 1;
            if tail[at] == b'9' {
                tail[at] = b'0';
            } else {
                tail[at] += 1;
                break;
            }
        }
    }
}

// === per-thread randomness ===

/// Reseeds this thread's generator (used by `random` and `least-request`), so
/// that a test or a simulation gets the same picks on every run. Seed 0 means
/// "seed afresh on next use". The state lives with the thread's other pick
/// state; a pick made while that is out of reach (from a thread-local
/// destructor as the thread exits) draws from a fresh, unseeded one.
pub fn reseed_thread_rng(seed: u64) {
    let state = if seed == 0 {
        0
    } else {
        stable_hash(&seed.to_le_bytes(), 9) | 1
    };
    crate::balance::with_local(|local| local.cursors.reseed(state));
}

/// A uniform index in `0..len` from this thread's generator (kept with its
/// round-robin cursors).
#[inline]
pub(crate) fn random_index(len: usize, cursors: &mut Cursors) -> usize {
    // Lemire's multiply-shift: unbiased enough for balancing, no division.
    ((cursors.next_random() as u128 * len as u128) >> 64) as usize
}

/// Two uniform indices in `0..len` (`len` > 0) from one draw, distinct
/// when `len` ≥ 2: power of two choices' candidates. Each takes 32 bits of
/// the draw, which keeps the bias of the multiply-shift below `len / 2^32`.
#[inline]
pub(crate) fn random_pair(len: usize, cursors: &mut Cursors) -> (usize, usize) {
    let x = cursors.next_random();
    let scale = |bits: u64, n: usize| ((bits * n as u64) >> 32) as usize;
    let i = scale(x & 0xffff_ffff, len);
    if len < 2 {
        return (i, i);
    }
    let j = scale(x >> 32, len - 1);
    (i, if j >= i { j + 1 } else { j })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each member's own index: what the tables below store unless a test
    /// gives other positions.
    fn own(members: usize) -> Vec<u32> {
        (0..members as u32).collect()
    }

    /// Seeds for [`build`]: for a Maglev policy, member `i`'s at
    /// `positions[i]` among `endpoints` (the others' never read).
    fn seeds(
        policy: LbPolicy,
        members: &[(SocketAddr, u32)],
        positions: &[u32],
        endpoints: usize,
    ) -> Vec<Seed> {
        let LbPolicy::Maglev { table_size } = policy else {
            return Vec::new();
        };
        let mut seeds = vec![Seed { slot: 0, skip: 1 }; endpoints];
        let mut name = Vec::new();
        for (&(addr, _), &p) in members.iter().zip(positions) {
            seeds[p as usize] = Seed::new(addr, table_size, &mut name);
        }
        seeds
    }

    /// [`build`] with the members' seeds.
    fn build(
        policy: LbPolicy,
        members: &[(SocketAddr, u32)],
        positions: &[u32],
        endpoints: usize,
    ) -> Table {
        let seeds = seeds(policy, members, positions, endpoints);
        super::build(policy, members, positions, endpoints, &seeds)
    }

    /// [`super::maglev`] storing members' own indices.
    fn maglev(members: &[(SocketAddr, u32)], size: u32) -> Positions {
        let own = own(members.len());
        let policy = LbPolicy::Maglev { table_size: size };
        let seeds = seeds(policy, members, &own, members.len());
        super::maglev(members, &own, members.len(), &seeds, size)
    }

    /// [`super::ring`] storing members' own indices.
    fn ring(members: &[(SocketAddr, u32)], size: u32) -> Ring {
        super::ring(members, &own(members.len()), members.len(), size)
    }

    fn members(weights: &[u32]) -> Vec<(SocketAddr, u32)> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| (SocketAddr::from(([10, 0, 0, i as u8 + 1], 80)), *w))
            .collect()
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537));
        assert!(is_prime(2));
        assert!(!is_prime(65536));
        assert!(!is_prime(1));
        assert!(!is_prime(9));
    }

    #[test]
    fn smooth_weighted_sequence_is_nginx_s() {
        // nginx's documented example: weights 5, 1, 1 give a a b a c a a.
        let seq = smooth_sequence(&members(&[5, 1, 1]));
        assert_eq!(&*seq, &[0, 0, 1, 0, 2, 0, 0]);
        // Equal weights reduce to plain round robin.
        assert_eq!(&*smooth_sequence(&members(&[3, 3, 3])), &[0, 1, 2]);
    }

    #[test]
    fn maglev_table_is_full_and_weighted() {
        let t = maglev(&members(&[1, 1, 2]), 65537).to_vec();
        let mut counts = [0u32; 3];
        for &i in t.iter() {
            counts[i as usize] += 1;
        }
        assert_eq!(counts.iter().sum::<u32>(), 65537);
        let share = |c: u32| c as f64 / 65537.0;
        assert!((share(counts[2]) - 0.5).abs() < 0.01, "{counts:?}");
        assert!((share(counts[0]) - 0.25).abs() < 0.01, "{counts:?}");
    }

    #[test]
    fn maglev_equal_weights_fill_within_one_entry() {
        // Each round gives every member one entry, so shares differ by at
        // most one: N = 1000, M = 65537 gives 65 or 66 entries each.
        let members: Vec<(SocketAddr, u32)> = (0..1000u32)
            .map(|i| {
                (
                    SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8 + 1], 8080)),
                    1,
                )
            })
            .collect();
        let t = maglev(&members, 65537).to_vec();
        let mut counts = vec![0u32; 1000];
        for &i in t.iter() {
            counts[i as usize] += 1;
        }
        assert_eq!(counts.iter().min(), Some(&65));
        assert_eq!(counts.iter().max(), Some(&66));
    }

    #[test]
    fn ring_points_are_ordered_as_the_tuple_sort_orders_them() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in [1usize, 2, 3, 255, 256, 1000, 20_000] {
            // One point a member, so the member is the point's number; few
            // distinct hashes in places, so ties are common, some of them
            // across buckets' edges and at both ends of the key space.
            let hashes: Vec<u64> = (0..len)
                .map(|i| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    match i % 5 {
                        0 => x % 64,
                        1 => u64::MAX - x % 4,
                        2 => (x % 8) << 60,
                        _ => x,
                    }
                })
                .collect();
            let mut expected: Vec<(u64, u32)> = hashes
                .iter()
                .enumerate()
                .map(|(i, &h)| (h, i as u32))
                .collect();
            expected.sort_unstable();
            let ring = Ring::from_points(&hashes, &vec![1; len], &own(len), len);
            assert_eq!(ring.points(), expected, "{len} points");
            for key in hashes
                .iter()
                .flat_map(|&h| [h, h.wrapping_add(1), h.wrapping_sub(1)])
            {
                assert_eq!(
                    ring.lookup(key) as u32,
                    reference_lookup(&expected, key),
                    "key {key:#x}, {len} points"
                );
            }
        }
    }

    /// The Maglev table as first written: every member walks its
    /// permutation to the end, over the table itself.
    fn reference_maglev(members: &[(SocketAddr, u32)], size: u32) -> Vec<u32> {
        let m = size as u64;
        let max_weight = members.iter().map(|e| e.1 as u64).max().unwrap();
        let mut walks: Vec<(u64, u64, u64)> = members
            .iter()
            .map(|(addr, _)| {
                let name = addr.to_string();
                let offset = stable_hash(name.as_bytes(), 0) % m;
                (offset, stable_hash(name.as_bytes(), 1) % (m - 1) + 1, 0)
            })
            .collect();
        let mut table = vec![u32::MAX; size as usize];
        let (mut filled, mut round) = (0, 1);
        while filled < m {
            for (i, (slot, skip, target)) in walks.iter_mut().enumerate() {
                if filled == m || round * (members[i].1 as u64) < *target {
                    continue;
                }
                *target += max_weight;
                while table[*slot as usize] != u32::MAX {
                    *slot = (*slot + *skip) % m;
                }
                table[*slot as usize] = i as u32;
                *slot = (*slot + *skip) % m;
                filled += 1;
            }
            round += 1;
        }
        table
    }

    #[test]
    fn maglev_tables_are_the_reference_ones() {
        // Sizes where the scans of the last free slots do all the work
        // (√m / 2 ≥ m: none here but 2), part of it, or none (2, 3).
        for size in [2, 3, 5, 13, 101, 251, 1009, 10_007, 65_537] {
            for n in [1, 2, 3, 10, 200] {
                for weighted in [false, true] {
                    let mut members = golden_members(n, n % 2 == 0);
                    if !weighted {
                        members.iter_mut().for_each(|m| m.1 = 1);
                    }
                    assert_eq!(
                        maglev(&members, size).to_vec(),
                        reference_maglev(&members, size),
                        "{n} members, size {size}, weighted {weighted}"
                    );
                }
            }
        }
    }

    #[test]
    fn inverses_mod_a_prime() {
        for m in [2u32, 3, 13, 65_537, 5_000_011] {
            for a in [1, 2, m / 2, m - 2, m - 1]
                .into_iter()
                .filter(|&a| a > 0 && a < m)
            {
                assert_eq!(a as u64 * inverse(a, m) as u64 % m as u64, 1, "{a} mod {m}");
            }
        }
    }

    #[test]
    fn sets_of_more_than_65536_members_get_wide_positions() {
        let members: Vec<(SocketAddr, u32)> = (0..70_000u32)
            .map(|i| {
                (
                    SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + i), 80)),
                    1,
                )
            })
            .collect();
        let size = (70_000..).find(|&n| is_prime(n)).unwrap();
        let table = maglev(&members, size);
        assert!(matches!(table, Positions::Wide(_)));
        let policy = LbPolicy::Maglev { table_size: size };
        let seeds = seeds(policy, &members[..1000], &own(1000), 1000);
        let narrow: Box<[u16]> = maglev_fill(&members[..1000], &own(1000), &seeds, size);
        let wide: Box<[u32]> = maglev_fill(&members[..1000], &own(1000), &seeds, size);
        assert!(narrow.iter().map(|&p| p as u32).eq(wide.iter().copied()));
        let mut counts = vec![0u32; members.len()];
        table
            .to_vec()
            .into_iter()
            .for_each(|m| counts[m as usize] += 1);
        assert!(
            counts.iter().all(|&c| c == 1 || c == 2),
            "every member has a slot"
        );

        let hashes: Vec<u64> = (0..70_000u64)
            .map(|i| stable_hash(&i.to_le_bytes(), 0))
            .collect();
        let n = hashes.len();
        let ring = Ring::from_points(&hashes, &vec![1; n], &own(n), n);
        assert!(matches!(ring.points, RingPoints::Wide(_)));
        let mut expected: Vec<(u64, u32)> = hashes
            .iter()
            .enumerate()
            .map(|(i, &h)| (h, i as u32))
            .collect();
        expected.sort_unstable();
        assert_eq!(ring.points(), expected);
    }

    #[test]
    fn names_and_point_hashes_are_the_formatted_ones() {
        for addr in [
            "10.0.0.1:80",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.1.200.7:8080",
            "1.22.100.9:5",
            "100.10.1.0:12345",
            "99.9.0.10:1000",
            "7.70.177.255:99",
            "[fd00::1]:443",
            "[::ffff:10.0.0.1]:80",
            "[fe80::1%3]:80",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut name = Vec::new();
            push_endpoint_name(&mut name, addr);
            assert_eq!(name, addr.to_string().into_bytes());
            // Prefixes of every length modulo 8, numbers across digit counts.
            for pad in 0..8 {
                let prefix = format!("{addr}{}_", "x".repeat(pad));
                let mut hashes = Vec::new();
                push_point_hashes(prefix.as_bytes(), 1_001, &mut hashes);
                for (n, h) in hashes.iter().enumerate() {
                    assert_eq!(
                        *h,
                        stable_hash(format!("{prefix}{n}").as_bytes(), 0),
                        "{prefix}{n}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_octet_and_port_digit_count_is_named_as_display_names_it() {
        for octet in 0..=255u8 {
            for port in [0u16, 7, 80, 443, 8080, 65_535] {
                let addr = SocketAddr::from(([octet, 255 - octet, octet / 3, 9], port));
                let mut name = b"prefix ".to_vec();
                push_endpoint_name(&mut name, addr);
                assert_eq!(name, format!("prefix {addr}").into_bytes());
            }
        }
    }

    #[test]
    fn tail_words_are_the_zero_padded_bytes() {
        let bytes = [0x81u8, 0x02, 0xf3, 0x04, 0x95, 0x06, 0xa7];
        for n in 1..8 {
            let mut padded = [0u8; 8];
            padded[..n].copy_from_slice(&bytes[..n]);
            assert_eq!(
                tail_word(&bytes[..n]),
                u64::from_le_bytes(padded),
                "{n} bytes"
            );
        }
    }

    #[test]
    fn small_decimals_are_written_as_format_writes_them() {
        for n in [
            0u32, 1, 9, 10, 99, 100, 999, 1_000, 9_999, 10_000, 65_535, 99_999,
        ] {
            let mut out = [b'x'; 6];
            let len = write_small_decimal(&mut out, n);
            assert_eq!(&out[..len], n.to_string().as_bytes());
            assert!(
                out[len..].iter().all(|&b| b == b'x'),
                "wrote past the digits"
            );
        }
    }

    #[test]
    fn ring_points_follow_weights() {
        let ring = ring(&members(&[1, 3]), 4000);
        let r = ring.points();
        let heavy = r.iter().filter(|p| p.1 == 1).count();
        assert_eq!(r.len(), 4000);
        assert_eq!(heavy, 3000);
        assert!(r.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(ring.lookup(u64::MAX) as u32, r[0].1, "wraps around");
    }

    /// Member sets whose tables are pinned below: IPv4 and IPv6 addresses
    /// (their names are written differently), mixed weights.
    fn golden_members(n: u32, v6: bool) -> Vec<(SocketAddr, u32)> {
        (0..n)
            .map(|i| {
                let addr = if v6 {
                    let ip =
                        std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, (i >> 16) as u16, i as u16);
                    SocketAddr::from((ip, 8443))
                } else {
                    SocketAddr::from(([10, 1, (i / 250) as u8, (i % 250) as u8 + 1], 8080))
                };
                (addr, 1 + (i * 7) % 5)
            })
            .collect()
    }

    /// The hash itself, pinned: a change to it moves every key and every
    /// table, so it must be deliberate. benches/peers/benches/peers.rs
    /// checks its copy of the hash against the same values.
    #[test]
    fn stable_hash_is_pinned() {
        let cases: [(&[u8], u64, u64); 14] = [
            (b"", 0, 0xefd0_1f60_ba99_2926),
            (b"abc", 0, 0xa027_fefb_2dea_f693),
            (&[192, 0, 2, 1], 0, 0xc122_4910_9a21_4738),
            (b"8 bytes!", 0, 0x465e_e95d_ae70_e11e),
            (b"client-00000000", 0, 0xe2ad_c69f_caeb_d50e),
            (b"0123456789abcdef", 0, 0x810b_7d40_d4ba_0718),
            (b"10.1.0.1:8080_123456789", 0, 0x04f7_b80e_1c55_49c6),
            // Seed 2: client keys and IPs (`hash_key` in snapshot.rs).
            (b"", 2, 0x0813_dce8_d5a1_8fe4),
            (b"abc", 2, 0x4527_0f31_8d15_23e3),
            (&[192, 0, 2, 1], 2, 0xbeb9_631b_461b_b842),
            (b"8 bytes!", 2, 0x28b9_7d70_67b8_be8c),
            (b"client-00000000", 2, 0xa6aa_4952_50a2_f907),
            (b"0123456789abcdef", 2, 0x8734_9af1_5d86_0dff),
            (b"10.1.0.1:8080_123456789", 2, 0x08f3_c494_14ca_0489),
        ];
        for (bytes, seed, want) in cases {
            assert_eq!(
                stable_hash(bytes, seed),
                want,
                "stable_hash({:?}, {seed})",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    /// `stable_hash` as its documentation states it, one word at a time
    /// through a zero-padded copy: the fast paths (one word, two, the
    /// tail read as the slice's last word shifted down) give the same
    /// values at every length, the pinned ones and all others.
    #[test]
    fn stable_hash_is_its_definition_at_every_length() {
        fn defined(bytes: &[u8], seed: u64) -> u64 {
            let mut h = hash_start(seed);
            for chunk in bytes.chunks(8) {
                let mut word = [0u8; 8];
                word[..chunk.len()].copy_from_slice(chunk);
                h = hash_word(h, u64::from_le_bytes(word));
            }
            hash_finish(h, bytes.len())
        }
        let bytes: Vec<u8> = (0..48u8).map(|i| i.wrapping_mul(151) ^ 0xa5).collect();
        for len in 0..=bytes.len() {
            // Each length over two runs of bytes, from two offsets.
            for from in [0, 3] {
                let key = &bytes[from..(from + len).min(bytes.len())];
                for seed in [0, 2] {
                    assert_eq!(
                        stable_hash(key, seed),
                        defined(key, seed),
                        "{} bytes, seed {seed}",
                        key.len()
                    );
                }
            }
        }
    }

    /// A checksum of a table's entries, as u32s in table order.
    fn checksum(entries: impl IntoIterator<Item = u64>) -> u64 {
        let bytes: Vec<u8> = entries.into_iter().flat_map(u64::to_le_bytes).collect();
        stable_hash(&bytes, 0)
    }

    /// Every process must build the same tables, release after release: a
    /// change to the bytes hashed, the probe order or the sort shows here.
    /// (Pinned before the tables were made compact and fast.)
    #[test]
    fn maglev_tables_are_pinned() {
        let cases: [(u32, bool, u32, bool, u64, [u32; 8]); 8] = [
            (
                1000,
                false,
                65537,
                true,
                0x578f_ba0a_01a1_ffb3,
                [681, 179, 307, 87, 71, 386, 571, 899],
            ),
            (
                1000,
                false,
                65537,
                false,
                0xc8e0_30b5_8ea6_1bd2,
                [681, 366, 307, 405, 71, 386, 571, 899],
            ),
            (
                1000,
                true,
                65537,
                true,
                0x438f_72b0_096a_866a,
                [577, 334, 557, 527, 510, 519, 621, 390],
            ),
            (
                1000,
                true,
                65537,
                false,
                0x0331_1a70_cf1d_1c90,
                [577, 334, 557, 527, 510, 519, 621, 390],
            ),
            (
                7,
                false,
                251,
                true,
                0xb88c_01a0_5d21_0bca,
                [4, 4, 5, 4, 2, 4, 1, 2],
            ),
            (
                7,
                false,
                251,
                false,
                0x14f6_ec01_8d4d_7686,
                [4, 4, 5, 4, 2, 5, 1, 0],
            ),
            (
                3,
                true,
                13,
                true,
                0x790f_404b_fd23_2f95,
                [2, 1, 0, 2, 0, 1, 2, 2],
            ),
            (
                3,
                true,
                13,
                false,
                0x3750_3db4_439c_8503,
                [2, 1, 0, 0, 0, 0, 2, 2],
            ),
        ];
        for (n, v6, size, weighted, sum, first) in cases {
            let mut members = golden_members(n, v6);
            if !weighted {
                members.iter_mut().for_each(|m| m.1 = 1);
            }
            let t = maglev(&members, size);
            let entries = t.to_vec();
            let what = format!("{n} members, v6 {v6}, size {size}, weighted {weighted}");
            assert_eq!(entries[..8], first, "{what}");
            assert_eq!(checksum(entries.iter().map(|&m| m as u64)), sum, "{what}");
        }
    }

    #[test]
    fn rings_are_pinned() {
        type Point = (u64, u32);
        let cases: [(u32, bool, u32, usize, u64, [Point; 2]); 4] = [
            (
                1000,
                false,
                256_000,
                255_600,
                0x20f0_aed5_445c_1a30,
                [(55_593_637_951_591, 72), (191_744_137_696_756, 22)],
            ),
            (
                100,
                true,
                20_000,
                19_960,
                0x8e2e_63c1_4300_5970,
                [(67_018_043_705_452, 2), (208_607_333_232_289, 57)],
            ),
            (
                7,
                false,
                100,
                97,
                0xb65a_b1ac_bd57_efdc,
                [(35_530_816_344_667_727, 4), (103_384_022_793_134_733, 1)],
            ),
            (
                3,
                true,
                2,
                3,
                0x6875_53b8_afd4_09ab,
                [
                    (2_970_258_910_075_092_909, 2),
                    (14_175_896_817_271_387_054, 1),
                ],
            ),
        ];
        for (n, v6, size, len, sum, first) in cases {
            let points = ring(&golden_members(n, v6), size).points();
            let what = format!("{n} members, v6 {v6}, size {size}");
            assert_eq!(points.len(), len, "{what}");
            assert_eq!(points[..2], first, "{what}");
            assert_eq!(
                checksum(points.iter().flat_map(|p| [p.0, p.1 as u64])),
                sum,
                "{what}"
            );
        }
    }

    /// The ring as first written: a `format!`-named point per string, the
    /// (hash, member) tuples sorted, a binary search over them.
    fn reference_ring(members: &[(SocketAddr, u32)], size: u32) -> Vec<(u64, u32)> {
        let total: u64 = members.iter().map(|m| m.1 as u64).sum();
        let mut points = Vec::new();
        for (i, (addr, weight)) in members.iter().enumerate() {
            let share = ((size as u64 * *weight as u64) / total).max(1);
            for n in 0..share {
                points.push((stable_hash(format!("{addr}_{n}").as_bytes(), 0), i as u32));
            }
        }
        points.sort_unstable();
        points
    }

    fn reference_lookup(ring: &[(u64, u32)], key: u64) -> u32 {
        let i = ring.partition_point(|p| p.0 < key);
        ring[if i == ring.len() { 0 } else { i }].1
    }

    #[test]
    fn the_ring_and_its_lookup_are_the_reference_ones() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (n, v6, size) in [
            (1, false, 1),
            (3, true, 2),
            (7, false, 100),
            (100, true, 20_000),
            (1000, false, 64_000),
        ] {
            let members = golden_members(n, v6);
            let expected = reference_ring(&members, size);
            let r = ring(&members, size);
            assert_eq!(r.points(), expected, "{n} members, size {size}");
            // Keys: random ones, every point's hash and its neighbours, both
            // ends of the key space (before the first point, after the last:
            // the wrap-around).
            let mut keys = vec![0, 1, u64::MAX, u64::MAX - 1];
            keys.extend((0..20_000).map(|_| next()));
            for p in &expected {
                keys.extend([p.0, p.0.wrapping_sub(1), p.0.wrapping_add(1)]);
            }
            for key in keys {
                assert_eq!(
                    r.lookup(key) as u32,
                    reference_lookup(&expected, key),
                    "key {key:#x}, {n} members, size {size}"
                );
            }
        }
    }

    #[test]
    fn tables_hold_endpoint_positions_and_widen_when_needed() {
        let m = members(&[1, 2, 3]);
        for (of, endpoints) in [([4u32, 7, 9], 10usize), ([0, 70_000, 70_001], 70_002)] {
            for policy in [
                LbPolicy::Maglev { table_size: 251 },
                LbPolicy::RingHash { ring_size: 300 },
                LbPolicy::WeightedRoundRobin,
            ] {
                // The same table over the members' own indices, mapped.
                let before = build(policy, &m, &own(3), 3);
                let after = build(policy, &m, &of, endpoints);
                let wide = endpoints > 1 << 16;
                match (&before, &after) {
                    (Table::Maglev(b), Table::Maglev(a)) => {
                        assert_eq!(matches!(a, Positions::Wide(_)), wide);
                        let mapped: Vec<u32> = b.to_vec().iter().map(|&i| of[i as usize]).collect();
                        assert_eq!(a.to_vec(), mapped);
                    }
                    (Table::Ring(b), Table::Ring(a)) => {
                        assert_eq!(matches!(a.points, RingPoints::Wide(_)), wide);
                        let mapped: Vec<(u64, u32)> = b
                            .points()
                            .iter()
                            .map(|&(h, i)| (h, of[i as usize]))
                            .collect();
                        assert_eq!(a.points(), mapped);
                        for key in [0, u64::MAX / 3, u64::MAX] {
                            assert_eq!(a.lookup(key), of[b.lookup(key)] as usize);
                        }
                    }
                    (Table::Sequence(b), Table::Sequence(a)) => {
                        let mapped: Vec<u32> = b.iter().map(|&i| of[i as usize]).collect();
                        assert_eq!(a.to_vec(), mapped);
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn random_pair_is_in_range_distinct_and_uniform() {
        let c = &mut Cursors::default();
        assert_eq!(random_pair(1, c), (0, 0));
        let mut counts = [[0u32; 3]; 3];
        for _ in 0..30_000 {
            let (i, j) = random_pair(3, c);
            assert_ne!(i, j);
            counts[i][j] += 1;
        }
        // Six ordered pairs, 5,000 each expected: within 10%.
        for (i, row) in counts.iter().enumerate() {
            for (j, &n) in row.iter().enumerate() {
                if i != j {
                    assert!((4_500..=5_500).contains(&n), "{counts:?}");
                }
            }
        }
        for len in [2usize, 1000, 70_000] {
            for _ in 0..1000 {
                let (i, j) = random_pair(len, c);
                assert!(i < len && j < len && i != j);
            }
        }
    }

    #[test]
    fn random_index_is_in_range() {
        let c = &mut Cursors::default();
        for len in [1usize, 2, 7, 1000] {
            for _ in 0..1000 {
                assert!(random_index(len, c) < len);
            }
        }
    }
}
