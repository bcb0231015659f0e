//! The edge's HTTP response cache: storage, eviction, key and policy, and
//! the purge operations used by the admin API and the Redis listener.
//!
//! - [`storage`]: bounded in-memory object storage with surrogate-key index.
//! - [`eviction`]: TinyUFO admission/eviction behind pingora's manager trait.
//! - [`key`]: cache-key normalisation.
//! - [`policy`]: what may be stored, for how long, and variance.
//!
//! pingora requires the storage, eviction manager and cache lock to be
//! `&'static`; [`EdgeCache::new`] allocates them once per process and leaks
//! them on purpose (they live as long as the proxy).

pub mod eviction;
pub mod key;
pub mod policy;
pub mod storage;

use std::sync::atomic::Ordering;

use pingora::cache::eviction::{CacheEntryKeyRef, EvictionManager};
use pingora::cache::key::{CompactCacheKey, HashBinary};
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};

use crate::config::CacheConfig;
use eviction::TinyUfoEviction;
use storage::ObjectStorage;

/// Rough average object size, to size TinyUFO's tables.
const ESTIMATED_OBJECT_BYTES: usize = 4096;

/// What a purge request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeTarget {
    /// Every copy (any host, any variant) of this path and query; the
    /// query is normalised like a request's.
    Url(String),
    /// Every entry whose `Surrogate-Key` lists this key.
    Tag(String),
    /// Everything.
    All,
}

/// The process's cache: handles pingora needs plus purge.
#[derive(Clone, Copy)]
pub struct EdgeCache {
    pub storage: &'static ObjectStorage,
    pub eviction: &'static TinyUfoEviction,
    pub lock: &'static CacheKeyLockImpl,
    pub config: &'static CacheConfig,
    pub ignored_params: &'static key::IgnoredParams,
    pub key_secret: &'static key::KeySecret,
}

impl EdgeCache {
    pub fn new(config: &CacheConfig) -> Self {
        let estimated_items = (config.max_bytes / ESTIMATED_OBJECT_BYTES).clamp(1024, 4_000_000);
        Self {
            storage: Box::leak(Box::new(ObjectStorage::new(config.max_object_bytes))),
            eviction: Box::leak(Box::new(TinyUfoEviction::new(
                config.max_bytes,
                estimated_items,
            ))),
            lock: Box::leak(Box::new(CacheLock::new(config.lock_timeout))),
            config: Box::leak(Box::new(config.clone())),
            ignored_params: Box::leak(Box::new(key::IgnoredParams::new(
                &config.ignored_query_params,
            ))),
            key_secret: Box::leak(Box::new(key::KeySecret::random())),
        }
    }

    /// Removes what `target` names; returns how many entries went.
    pub fn purge(&self, target: &PurgeTarget) -> usize {
        let ids: Vec<HashBinary> = match target {
            PurgeTarget::Url(path_and_query) => {
                let normalised = match path_and_query.split_once('?') {
                    Some((path, query)) => {
                        key::normalise_path_and_query(path, Some(query), self.ignored_params)
                    }
                    None => path_and_query.clone(),
                };
                self.storage.ids_for_path(&key::path_id(&normalised))
            }
            PurgeTarget::Tag(tag) => self.storage.ids_for_tag(tag),
            PurgeTarget::All => self.storage.all_ids(),
        };
        let mut purged = 0;
        for id in ids {
            if self.storage.remove(&id).is_some() {
                purged += 1;
                let compact = CompactCacheKey {
                    primary: id,
                    variance: None,
                    user_tag: "".into(),
                };
                // The eviction manager keys entries by combined hash, which
                // is the entry id itself.
                self.eviction.remove(CacheEntryKeyRef::KeyOnly(&compact));
            }
        }
        self.storage
            .stats
            .purged
            .fetch_add(purged as u64, Ordering::Relaxed);
        purged
    }

    /// Objects currently stored.
    pub fn items(&self) -> usize {
        self.storage.stats.items.load(Ordering::Relaxed)
    }

    /// Bytes currently stored (bodies, headers and per-entry overhead).
    pub fn bytes(&self) -> usize {
        self.storage.stats.bytes.load(Ordering::Relaxed)
    }

    /// Entries evicted for capacity since start.
    pub fn evictions(&self) -> usize {
        self.eviction.evicted_items()
    }
}
