//! A copy-on-write hash map split into shards, so that a new snapshot shares
//! every shard an update did not touch with the previous one.
//!
//! Publishing a change to one Service copies the shard array (256 pointers)
//! and the one or two shards that hold its keys (a few dozen entries each at
//! 10,000 Services), instead of the whole index. A key is hashed once per
//! lookup: the same hash picks the shard and probes it (hashbrown's
//! `HashTable` takes the hash from the caller, which `std`'s map cannot).

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use hashbrown::HashTable;

use crate::hash::FoldBuild;

const SHARDS: usize = 256;

type Shard<K, V> = HashTable<(K, V)>;

/// See the module documentation.
pub(crate) struct ShardedMap<K, V> {
    shards: Box<[Arc<Shard<K, V>>]>,
    len: usize,
}

impl<K, V> Clone for ShardedMap<K, V> {
    fn clone(&self) -> Self {
        ShardedMap {
            shards: self.shards.clone(),
            len: self.len,
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Default for ShardedMap<K, V> {
    fn default() -> Self {
        let empty = Arc::new(Shard::new());
        ShardedMap {
            shards: (0..SHARDS).map(|_| empty.clone()).collect(),
            len: 0,
        }
    }
}

#[inline(always)]
fn hash_of<Q: Hash + ?Sized>(key: &Q) -> u64 {
    FoldBuild::default().hash_one(key)
}

/// Bits 24..32 pick the shard: hashbrown takes bucket bits from the bottom and
/// tag bits from the top, so keys in one shard still differ in both.
#[inline(always)]
fn shard_of(hash: u64) -> usize {
    (hash >> 24) as usize & (SHARDS - 1)
}

impl<K: Hash + Eq + Clone, V: Clone> ShardedMap<K, V> {
    /// Looks a key up.
    #[inline]
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = hash_of(key);
        self.shards[shard_of(hash)]
            .find(hash, |(k, _)| k.borrow() == key)
            .map(|(_, v)| v)
    }

    /// Looks up the entry whose key hashes to `hash` (as [`Hash`] on the key
    /// with [`FoldBuild`] would) and satisfies `is`: a search by a borrowed
    /// form of the key that is not one value (two strings, say).
    #[inline]
    pub(crate) fn get_hashed(&self, hash: u64, mut is: impl FnMut(&K) -> bool) -> Option<&V> {
        self.shards[shard_of(hash)]
            .find(hash, |(k, _)| is(k))
            .map(|(_, v)| v)
    }

    /// Inserts, copying the shard first if a snapshot still shares it.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let hash = hash_of(&key);
        let shard = Arc::make_mut(&mut self.shards[shard_of(hash)]);
        match shard.find_mut(hash, |(k, _)| *k == key) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                shard.insert_unique(hash, (key, value), |(k, _)| hash_of(k));
                self.len += 1;
                None
            }
        }
    }

    /// Removes, copying the shard first if a snapshot still shares it.
    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = hash_of(key);
        let i = shard_of(hash);
        self.shards[i].find(hash, |(k, _)| k.borrow() == key)?;
        let shard = Arc::make_mut(&mut self.shards[i]);
        let entry = shard.find_entry(hash, |(k, _)| k.borrow() == key).ok()?;
        let ((_, v), _) = entry.remove();
        self.len -= 1;
        Some(v)
    }

    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards
            .iter()
            .flat_map(|s| s.iter().map(|(k, v)| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_on_write_leaves_the_original_alone() {
        let mut a: ShardedMap<u32, u32> = ShardedMap::default();
        for i in 0..1000 {
            assert_eq!(a.insert(i, i), None);
        }
        let mut b = a.clone();
        assert_eq!(b.insert(5, 50), Some(5));
        assert_eq!(b.remove(&6), Some(6));
        assert_eq!(b.remove(&6), None);
        b.insert(2000, 1);
        assert_eq!(a.get(&5), Some(&5));
        assert_eq!(a.get(&6), Some(&6));
        assert_eq!(a.get(&2000), None);
        assert_eq!(a.len(), 1000);
        assert_eq!(b.get(&5), Some(&50));
        assert_eq!(b.get(&6), None);
        assert_eq!(b.len(), 1000);
        assert_eq!(b.iter().count(), 1000);
        // Untouched shards are shared, not copied.
        let shared = a
            .shards
            .iter()
            .zip(b.shards.iter())
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        assert!(shared >= SHARDS - 3, "shared {shared}");
    }
}
