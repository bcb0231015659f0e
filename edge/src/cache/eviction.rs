//! [`TinyUfoEviction`]: pingora's `EvictionManager` backed by TinyUFO
//! (S3-FIFO queues with TinyLFU admission), sized in bytes.
//!
//! pingora calls `admit` when a response has been written to storage and
//! purges whatever comes back; a one-hit wonder may be refused admission
//! (returned as evicted itself), which keeps a scan of distinct URLs from
//! flushing the popular objects. TinyUFO weighs entries in `u16`, so sizes
//! are counted in [`UNIT`]-byte units.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use pingora::Result;
use pingora::cache::eviction::{CacheEntryKey, CacheEntryKeyRef, EvictionManager};
use pingora::cache::key::{CacheHashKey, HashBinary};
use tinyufo::TinyUfo;

/// Bytes per TinyUFO weight unit.
pub const UNIT: usize = 256;

fn units(size: usize) -> u16 {
    u16::try_from(size.div_ceil(UNIT).max(1)).unwrap_or(u16::MAX)
}

fn id(key: &CacheEntryKey) -> u128 {
    u128::from_be_bytes(key.key().combined_bin())
}

/// Byte-sized TinyUFO admission and eviction.
pub struct TinyUfoEviction {
    ufo: TinyUfo<u128, (CacheEntryKey, usize)>,
    items: AtomicUsize,
    bytes: AtomicUsize,
    evicted_items: AtomicUsize,
    evicted_bytes: AtomicUsize,
}

impl TinyUfoEviction {
    /// `capacity` in bytes; `estimated_items` sizes TinyUFO's tables.
    pub fn new(capacity: usize, estimated_items: usize) -> Self {
        Self {
            ufo: TinyUfo::new(capacity.div_ceil(UNIT).max(1), estimated_items.max(16)),
            items: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            evicted_items: AtomicUsize::new(0),
            evicted_bytes: AtomicUsize::new(0),
        }
    }

    /// Counts a hit on the entry stored under `entry_id` that was served
    /// outside pingora's cache path (the proxy's fast hit path), as
    /// pingora's `access` would; whether the entry is tracked.
    pub fn touch(&self, entry_id: &HashBinary) -> bool {
        self.ufo.get(&u128::from_be_bytes(*entry_id)).is_some()
    }

    fn forget(&self, size: usize) {
        self.items.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(size, Ordering::Relaxed);
    }
}

#[async_trait]
impl EvictionManager for TinyUfoEviction {
    fn total_size(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    fn total_items(&self) -> usize {
        self.items.load(Ordering::Relaxed)
    }

    fn evicted_size(&self) -> usize {
        self.evicted_bytes.load(Ordering::Relaxed)
    }

    fn evicted_items(&self) -> usize {
        self.evicted_items.load(Ordering::Relaxed)
    }

    fn admit(
        &self,
        item: CacheEntryKey,
        size: usize,
        _fresh_until: SystemTime,
    ) -> Vec<CacheEntryKey> {
        let key = id(&item);
        // A re-admission (revalidated or refreshed object) replaces the old weight.
        if let Some((_, old)) = self.ufo.remove(&key) {
            self.forget(old);
        }
        self.items.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        let evicted = self.ufo.put(key, (item, size), units(size));
        evicted
            .into_iter()
            .map(|kv| {
                let (entry, size) = kv.data;
                self.forget(size);
                self.evicted_items.fetch_add(1, Ordering::Relaxed);
                self.evicted_bytes.fetch_add(size, Ordering::Relaxed);
                entry
            })
            .collect()
    }

    fn increment_weight(
        &self,
        item: &CacheEntryKey,
        delta: usize,
        _max_weight: Option<usize>,
    ) -> Vec<CacheEntryKey> {
        let size = self
            .ufo
            .get(&id(item))
            .map_or(delta, |(_, size)| size + delta);
        self.admit(item.clone(), size, SystemTime::now())
    }

    fn remove(&self, item: CacheEntryKeyRef<'_>) {
        let key = u128::from_be_bytes(item.key().combined_bin());
        if let Some((_, size)) = self.ufo.remove(&key) {
            self.forget(size);
        }
    }

    fn access(&self, item: &CacheEntryKey, _size: usize, _fresh_until: SystemTime) -> bool {
        self.ufo.get(&id(item)).is_some()
    }

    fn peek(&self, item: &CacheEntryKey) -> bool {
        self.ufo.get(&id(item)).is_some()
    }

    async fn save(&self, _dir_path: &str) -> Result<()> {
        // An in-memory cache starts empty; nothing to persist.
        Ok(())
    }

    async fn load(&self, _dir_path: &str) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::cache::CacheKey;

    fn entry(n: usize) -> CacheEntryKey {
        CacheEntryKey::key_only(CacheKey::new(format!("h/p/{n}"), "").to_compact())
    }

    #[test]
    fn stays_within_capacity_and_counts_evictions() {
        let eviction = TinyUfoEviction::new(64 * UNIT, 128);
        let mut evicted = 0;
        for n in 0..1000 {
            evicted += eviction.admit(entry(n), UNIT, SystemTime::now()).len();
        }
        assert!(
            eviction.total_size() <= 64 * UNIT,
            "{}",
            eviction.total_size()
        );
        assert_eq!(eviction.total_items() + evicted, 1000);
        assert_eq!(eviction.evicted_items(), evicted);
    }

    #[test]
    fn frequently_used_entries_survive_a_scan() {
        let eviction = TinyUfoEviction::new(64 * UNIT, 128);
        let hot = entry(0);
        eviction.admit(hot.clone(), UNIT, SystemTime::now());
        for n in 1..2000 {
            eviction.access(&hot, UNIT, SystemTime::now());
            eviction.admit(entry(n), UNIT, SystemTime::now());
        }
        assert!(eviction.peek(&hot));
    }

    #[test]
    fn remove_releases_the_bytes() {
        let eviction = TinyUfoEviction::new(64 * UNIT, 128);
        let one = entry(1);
        eviction.admit(one.clone(), 1000, SystemTime::now());
        assert_eq!(eviction.total_size(), 1000);
        eviction.remove((&one).into());
        assert_eq!(eviction.total_size(), 0);
        assert_eq!(eviction.total_items(), 0);
    }
}
