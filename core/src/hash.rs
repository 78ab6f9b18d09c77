//! A small, fast hasher for the indexes on the pick path.
//!
//! The keys are a few machine words (an address, a port, a protocol) or short
//! names, hashed in-process only, never from untrusted bytes chosen to
//! collide across processes: a folded-multiply hash (as foldhash and
//! rustc-hash use) is several times faster than SipHash here and spreads bits
//! into both the low (bucket) and high (tag) ends that hashbrown reads.

use std::hash::{BuildHasherDefault, Hasher};

const K: u64 = 0x9E37_79B9_7F4A_7C15;
const SEED: u64 = 0x243F_6A88_85A3_08D3;

/// The high and low halves of the 128-bit product, xored: a folded multiply.
#[inline(always)]
pub(crate) fn fold(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

/// The hasher. See the module documentation.
#[derive(Clone, Copy)]
pub(crate) struct FoldHasher(u64);

impl Default for FoldHasher {
    #[inline]
    fn default() -> Self {
        FoldHasher(SEED)
    }
}

impl Hasher for FoldHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.write_u64(u64::from_le_bytes(c.try_into().expect("8-byte chunk")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 56));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(i as u64)
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.write_u64(i as u64)
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64)
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = fold(self.0 ^ i, K);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64)
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// `BuildHasher` for [`FoldHasher`].
pub(crate) type FoldBuild = BuildHasherDefault<FoldHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::{BuildHasher, Hash};

    #[test]
    fn nearby_keys_spread_over_low_and_high_bits() {
        let build = FoldBuild::default();
        let mut low = HashSet::new();
        let mut high = HashSet::new();
        for port in 0u16..1024 {
            let h = build.hash_one((0x0a60_0000u32, port));
            low.insert(h & 0x3ff);
            high.insert(h >> 54);
        }
        // 1024 keys into 1024 buckets: a good hash fills about 63% of them.
        assert!(low.len() > 550, "low bits: {}", low.len());
        assert!(high.len() > 550, "high bits: {}", high.len());
        let a = build.hash_one("default/web");
        let b = build.hash_one("default/wec");
        assert_ne!(a, b);
        let mut h = FoldHasher::default();
        "x".hash(&mut h);
        assert_ne!(h.finish(), FoldHasher::default().finish());
    }
}
