//! The tiered cache: L1 in process (moka, bounded by bytes, TTL) → L2 in the
//! regional Redis ([`l2`]) → the loader (a replica read).
//!
//! - Single-flight: concurrent misses for one key run one load; the others
//!   wait for it (moka's `or_try_insert_with`).
//! - Values are serialized bodies ([`Bytes`]) with their ETag, so an L1 hit
//!   serves the bytes as they are; "not found" is cached too, briefly.
//! - Invalidation ([`TieredCache::invalidate`]) drops L1 and L2 entries; an
//!   epoch counter makes sure a load that raced an invalidation is not kept.
//! - Traces (when exported): a span per tier asked (`cache.l1`, `cache.l2`,
//!   with the result) and `cache.load` around a miss's L2 and loader.

pub mod l2;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use bytes::{BufMut, Bytes, BytesMut};
use moka::Expiry;
use tracing::Instrument;

use crate::config::CacheConfig;
use crate::metrics::Metrics;
pub use l2::{L2, L2Get};

/// Which tier answered a look-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    L1,
    L2,
    Origin,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::L1 => "l1",
            Tier::L2 => "l2",
            Tier::Origin => "origin",
        }
    }
}

/// A cached value: a serialized body and its strong ETag, or "not found".
#[derive(Debug, Clone)]
pub struct CacheEntry(Arc<EntryInner>);

#[derive(Debug)]
struct EntryInner {
    body: Option<Bytes>,
    /// The strong ETag, ready to send: a hit copies no strings.
    etag: HeaderValue,
    /// Surrogate keys of the response (`product:1 category:shoes`), ready
    /// to send as `Surrogate-Key`.
    tags: HeaderValue,
    ttl: Option<Duration>,
}

/// What a loader returns for a found value.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub body: Bytes,
    pub tags: String,
}

impl CacheEntry {
    pub fn found(body: Bytes, tags: String) -> Self {
        CacheEntry(Arc::new(EntryInner {
            etag: etag_of(&body),
            body: Some(body),
            tags: header_value(&tags),
            ttl: None,
        }))
    }

    pub fn not_found() -> Self {
        CacheEntry(Arc::new(EntryInner {
            body: None,
            etag: HeaderValue::from_static(""),
            tags: HeaderValue::from_static(""),
            ttl: None,
        }))
    }

    fn with_ttl(self, ttl: Option<Duration>) -> Self {
        match Arc::try_unwrap(self.0) {
            Ok(mut inner) => {
                inner.ttl = ttl;
                CacheEntry(Arc::new(inner))
            }
            Err(shared) => CacheEntry(shared),
        }
    }

    pub fn body(&self) -> Option<&Bytes> {
        self.0.body.as_ref()
    }

    pub fn etag(&self) -> HeaderValue {
        self.0.etag.clone()
    }

    pub fn tags(&self) -> HeaderValue {
        self.0.tags.clone()
    }

    fn weight(&self, key: &str) -> u32 {
        let size = key.len()
            + self.0.body.as_ref().map_or(0, Bytes::len)
            + self.0.etag.len()
            + self.0.tags.len()
            + 96;
        u32::try_from(size).unwrap_or(u32::MAX)
    }

    /// L2 encoding: `1`, the tags, a newline, the body — or `0` for "not found".
    fn encode(&self) -> Bytes {
        match &self.0.body {
            Some(body) => {
                let tags = self.0.tags.as_bytes();
                let mut out = BytesMut::with_capacity(body.len() + tags.len() + 2);
                out.put_u8(b'1');
                out.put_slice(tags);
                out.put_u8(b'\n');
                out.put_slice(body);
                out.freeze()
            }
            None => Bytes::from_static(b"0"),
        }
    }

    fn decode(raw: Bytes) -> Option<Self> {
        match raw.first() {
            Some(b'1') => {
                let newline = raw.iter().position(|b| *b == b'\n')?;
                let tags = std::str::from_utf8(&raw[1..newline]).ok()?.to_string();
                Some(CacheEntry::found(raw.slice(newline + 1..), tags))
            }
            Some(b'0') => Some(CacheEntry::not_found()),
            _ => None,
        }
    }
}

/// A span for one step of a look-up (`cache.l1`, `cache.l2`,
/// `cache.load`), recorded only while traces are exported.
fn tier_span(name: &'static str) -> tracing::Span {
    tracing::info_span!(
        target: meridian_telemetry::SPAN_TARGET,
        "cache",
        otel.name = name,
        meridian.cache.result = tracing::field::Empty,
    )
}

/// A header value from text we produced (ASCII); empty if it is not valid.
pub fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static(""))
}

/// A strong ETag from the body's 64-bit xxh3 hash, as a header value.
pub fn etag_of(body: &[u8]) -> HeaderValue {
    header_value(&format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(body)))
}

struct EntryExpiry {
    ttl: Duration,
    negative_ttl: Duration,
}

impl Expiry<String, CacheEntry> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &CacheEntry,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(if value.body().is_some() {
            value.0.ttl.unwrap_or(self.ttl)
        } else {
            self.negative_ttl
        })
    }
}

#[derive(Clone)]
pub struct TieredCache {
    l1: moka::future::Cache<String, CacheEntry>,
    l2: Option<L2>,
    config: CacheConfig,
    epoch: Arc<AtomicU64>,
    metrics: Metrics,
}

impl TieredCache {
    pub fn new(config: &CacheConfig, l2: Option<L2>, metrics: Metrics) -> Self {
        let l1 = moka::future::Cache::builder()
            .max_capacity(config.l1_max_bytes)
            .weigher(|key: &String, value: &CacheEntry| value.weight(key))
            .expire_after(EntryExpiry {
                ttl: config.l1_ttl,
                negative_ttl: config.negative_ttl,
            })
            .build();
        TieredCache {
            l1,
            l2,
            config: config.clone(),
            epoch: Arc::new(AtomicU64::new(0)),
            metrics,
        }
    }

    pub fn l2(&self) -> Option<&L2> {
        self.l2.as_ref()
    }

    /// Looks `key` up in L1, then L2, then runs `load` — once for all
    /// concurrent callers. `load` returns `None` for "not found". `ttl`
    /// overrides the configured L1 and L2 time-to-live for this key.
    pub async fn get_or_load<F, Fut, E>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        load: F,
    ) -> Result<(CacheEntry, Tier), Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Loaded>, E>>,
        E: Send + Sync + 'static,
    {
        let l1_enabled = self.config.l1_max_bytes > 0;
        if l1_enabled {
            let span = tier_span("cache.l1");
            if let Some(entry) = self.l1.get(key).await {
                let result = if entry.body().is_some() {
                    "hit"
                } else {
                    "negative_hit"
                };
                span.record("meridian.cache.result", result);
                self.count("l1", result);
                return Ok((entry, Tier::L1));
            }
            span.record("meridian.cache.result", "miss");
        }
        // The miss path is large and rare: boxed, so the hit path's future
        // stays small.
        Box::pin(self.load_through(key, ttl, load, l1_enabled)).await
    }

    /// L2, then `load`, single-flight through moka's entry API.
    async fn load_through<F, Fut, E>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        load: F,
        l1_enabled: bool,
    ) -> Result<(CacheEntry, Tier), Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Loaded>, E>>,
        E: Send + Sync + 'static,
    {
        let started_epoch = self.epoch.load(Ordering::Acquire);
        let mut tier = Tier::L1;
        let tier_ref = &mut tier;
        let init = async move {
            self.count("l1", "miss");
            if let Some(l2) = &self.l2 {
                let span = tier_span("cache.l2");
                let result = match l2.get(key).await {
                    L2Get::Hit(raw) => match CacheEntry::decode(raw) {
                        Some(entry) => {
                            span.record("meridian.cache.result", "hit");
                            self.count("l2", "hit");
                            *tier_ref = Tier::L2;
                            return Ok(entry.with_ttl(ttl));
                        }
                        None => "error",
                    },
                    L2Get::Miss => "miss",
                    L2Get::Unavailable => "skipped",
                };
                span.record("meridian.cache.result", result);
                self.count("l2", result);
            }
            let entry = match load().await? {
                Some(loaded) => CacheEntry::found(loaded.body, loaded.tags).with_ttl(ttl),
                None => CacheEntry::not_found(),
            };
            *tier_ref = Tier::Origin;
            if let Some(l2) = &self.l2
                && self.epoch.load(Ordering::Acquire) == started_epoch
            {
                let l2_ttl = if entry.body().is_some() {
                    ttl.unwrap_or(self.config.l2_ttl)
                } else {
                    self.config.negative_ttl
                };
                l2.set(key, entry.encode(), l2_ttl).await;
            }
            Ok(entry)
        };
        // The load's own spans (L2, the database) are children of this one.
        let load_span = tier_span("cache.load");
        let result = self
            .l1
            .entry_by_ref(key)
            .or_try_insert_with(init.instrument(load_span))
            .await?;
        let fresh = result.is_fresh();
        let entry = result.into_value();
        if !fresh {
            // Another caller's load answered this one: a coalesced L1 hit.
            self.count("l1", "coalesced");
            return Ok((entry, Tier::L1));
        }
        if !l1_enabled || self.epoch.load(Ordering::Acquire) != started_epoch {
            // L1 is off, or an invalidation ran while this value was loading:
            // serve it to the callers that waited (single-flight), but do not
            // keep it.
            self.l1.invalidate(key).await;
        }
        Ok((entry, tier))
    }

    /// Drops `keys` from this process's L1 only (pub/sub from other instances).
    pub async fn invalidate_local(&self, keys: &[String]) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for key in keys {
            self.l1.invalidate(key).await;
        }
    }

    /// Drops `keys` from L1 and L2.
    pub async fn invalidate(&self, keys: &[String]) {
        self.invalidate_local(keys).await;
        if let Some(l2) = &self.l2 {
            l2.delete(keys).await;
        }
    }

    /// Number of L1 entries and their weighted size in bytes (approximate).
    pub fn l1_usage(&self) -> (u64, u64) {
        (self.l1.entry_count(), self.l1.weighted_size())
    }

    fn count(&self, tier: &str, result: &str) {
        self.metrics
            .cache_requests
            .with_label_values(&[tier, result])
            .inc();
    }
}
