//! [`ObjectStorage`]: the edge's bounded in-memory cache storage.
//!
//! pingora-cache ships only `MemCache`, which is meant for tests: it keeps
//! the metadata serialised (decompressing and re-parsing the header on every
//! hit) and copies the body. Here each entry keeps the parsed
//! `ResponseHeader` and the body as `Bytes`, so a hit is a map lookup, a
//! header clone and a reference-count increment.
//!
//! Capacity is enforced by the eviction manager ([`super::eviction`]):
//! pingora admits every finished write to it and purges what it evicts.
//! The storage also indexes entries by surrogate key (the origin's
//! `Surrogate-Key` header) and by primary key (all `Vary` variants of one
//! URL) for purges.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, RwLock};
use pingora::cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora::cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, CacheMeta, Storage};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};

/// Shards of the object map (a power of two), to keep lock contention low.
const SHARDS: usize = 16;
/// Fixed per-entry overhead counted against capacity (map slot, `Arc`,
/// metadata), on top of body and header bytes.
const ENTRY_OVERHEAD: usize = 256;
/// Header name of the origin's surrogate keys (space-separated).
pub const SURROGATE_KEY: &str = "surrogate-key";

/// One cached response.
struct Object {
    header: ResponseHeader,
    fresh_until: SystemTime,
    created: SystemTime,
    updated: SystemTime,
    stale_while_revalidate: u32,
    stale_if_error: u32,
    variance: Option<HashBinary>,
    body: Bytes,
    path: HashBinary,
    tags: Box<[Box<str>]>,
    size: usize,
}

impl Object {
    fn meta(&self) -> CacheMeta {
        let mut meta = CacheMeta::new(
            self.fresh_until,
            self.created,
            self.stale_while_revalidate,
            self.stale_if_error,
            self.header.clone(),
        );
        if self.updated != self.created {
            // `Age` counts from the last revalidation.
            meta.set_epoch_override(self.updated);
        }
        if let Some(variance) = self.variance {
            meta.set_variance(variance);
        }
        meta
    }

    /// An object for `meta` and `body`, with the header compacted and its
    /// surrogate keys and size derived from it.
    fn from_meta(meta: &CacheMeta, body: Bytes, path: HashBinary) -> Object {
        let header = compact(meta.response_header());
        let size = body.len() + header_bytes(&header) + ENTRY_OVERHEAD;
        let tags = surrogate_keys(&header);
        Object {
            header,
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            updated: meta.updated(),
            stale_while_revalidate: meta.stale_while_revalidate_sec(),
            stale_if_error: meta.stale_if_error_sec(),
            variance: meta.variance(),
            body,
            path,
            tags,
            size,
        }
    }
}

/// Approximate heap bytes of a compacted header: the map's entries and
/// index, plus each value's own allocation.
fn header_bytes(header: &ResponseHeader) -> usize {
    const ENTRY: usize = 112;
    header.headers.capacity() * (ENTRY + 4)
        + header
            .headers
            .iter()
            .map(|(_, value)| value.len() + 32)
            .sum::<usize>()
}

/// A copy of `header` that owns exactly what it needs: no case map, a map
/// sized to its headers, no hop-by-hop `Connection`/`Keep-Alive`, and values
/// copied out of the upstream's read buffer (which a zero-copy value would
/// otherwise keep alive, whole, for as long as the object is cached).
fn compact(header: &ResponseHeader) -> ResponseHeader {
    let Ok(mut out) = ResponseHeader::build_no_case(header.status, Some(header.headers.len()))
    else {
        return header.clone();
    };
    out.set_version(header.version);
    for (name, value) in &header.headers {
        // Hop-by-hop: about the origin's connection, not the response.
        if name == http::header::CONNECTION || name.as_str() == "keep-alive" {
            continue;
        }
        let value =
            http::HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        if out.append_header(name.clone(), value).is_err() {
            return header.clone();
        }
    }
    out
}

fn surrogate_keys(header: &ResponseHeader) -> Box<[Box<str>]> {
    header
        .headers
        .get_all(SURROGATE_KEY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(str::split_ascii_whitespace)
        .map(Box::from)
        .collect::<Vec<_>>()
        .into_boxed_slice()
}

#[derive(Default)]
struct Index {
    by_tag: HashMap<Box<str>, HashSet<HashBinary>>,
    by_path: HashMap<HashBinary, HashSet<HashBinary>>,
}

impl Index {
    fn add(&mut self, id: HashBinary, object: &Object) {
        for tag in &object.tags {
            self.by_tag.entry(tag.clone()).or_default().insert(id);
        }
        self.by_path.entry(object.path).or_default().insert(id);
    }

    fn remove(&mut self, id: &HashBinary, object: &Object) {
        for tag in &object.tags {
            if let Some(ids) = self.by_tag.get_mut(tag) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_tag.remove(tag);
                }
            }
        }
        if let Some(ids) = self.by_path.get_mut(&object.path) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_path.remove(&object.path);
            }
        }
    }
}

/// Counters the metrics module reads.
#[derive(Default)]
pub struct StorageStats {
    pub items: AtomicUsize,
    pub bytes: AtomicUsize,
    pub purged: AtomicU64,
    pub evicted: AtomicU64,
}

/// A stored response that is fresh now and does not vary, so it can be
/// sent as it is: what the proxy's fast hit path serves.
pub struct FreshObject {
    /// The stored header (a copy the caller may decorate).
    pub header: ResponseHeader,
    pub body: Bytes,
    /// Seconds since the response was stored or last revalidated.
    pub age: u64,
}

/// The edge's cache storage. Created once per process and leaked
/// (pingora requires `&'static` storage).
pub struct ObjectStorage {
    shards: Vec<RwLock<HashMap<HashBinary, Arc<Object>>>>,
    index: Mutex<Index>,
    max_object_bytes: usize,
    pub stats: StorageStats,
}

impl ObjectStorage {
    pub fn new(max_object_bytes: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            index: Mutex::new(Index::default()),
            max_object_bytes,
            stats: StorageStats::default(),
        }
    }

    fn shard(&self, id: &HashBinary) -> &RwLock<HashMap<HashBinary, Arc<Object>>> {
        &self.shards[usize::from(id[0]) % SHARDS]
    }

    fn get(&self, id: &HashBinary) -> Option<Arc<Object>> {
        self.shard(id).read().get(id).cloned()
    }

    fn insert(&self, id: HashBinary, object: Object) {
        let object = Arc::new(object);
        let previous = self.shard(&id).write().insert(id, object.clone());
        self.account(id, previous.as_ref(), &object);
    }

    /// Replaces an entry's metadata (a revalidation), only if it is still
    /// stored: a purge that raced the revalidation stays a purge.
    fn replace_meta(&self, id: HashBinary, meta: &CacheMeta) -> bool {
        let (previous, object) = {
            let mut shard = self.shard(&id).write();
            let Some(previous) = shard.get(&id).cloned() else {
                return false;
            };
            let object = Arc::new(Object::from_meta(
                meta,
                previous.body.clone(),
                previous.path,
            ));
            shard.insert(id, object.clone());
            (previous, object)
        };
        self.account(id, Some(&previous), &object);
        true
    }

    /// Index and counters for `object` replacing `previous` under `id`.
    fn account(&self, id: HashBinary, previous: Option<&Arc<Object>>, object: &Object) {
        let mut index = self.index.lock();
        if let Some(previous) = &previous {
            index.remove(&id, previous);
            self.stats.items.fetch_sub(1, Ordering::Relaxed);
            self.stats.bytes.fetch_sub(previous.size, Ordering::Relaxed);
        }
        index.add(id, object);
        self.stats.items.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes.fetch_add(object.size, Ordering::Relaxed);
    }

    /// Removes one entry; returns its size if it was present.
    pub fn remove(&self, id: &HashBinary) -> Option<usize> {
        let removed = self.shard(id).write().remove(id)?;
        self.index.lock().remove(id, &removed);
        self.stats.items.fetch_sub(1, Ordering::Relaxed);
        self.stats.bytes.fetch_sub(removed.size, Ordering::Relaxed);
        Some(removed.size)
    }

    /// Entry ids carrying surrogate key `tag`.
    pub fn ids_for_tag(&self, tag: &str) -> Vec<HashBinary> {
        self.index
            .lock()
            .by_tag
            .get(tag)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Entry ids of every host's and variant's copy of one path and query
    /// (see [`super::key::path_id`]).
    pub fn ids_for_path(&self, path: &HashBinary) -> Vec<HashBinary> {
        self.index
            .lock()
            .by_path
            .get(path)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The object stored under `id` if it is a `200` fresh at `now`, has no
    /// variants (no `Vary`) and declares its `Content-Length`; `None` sends
    /// the request through pingora's full cache path instead, which handles
    /// every other case (stale, variants, revalidation, locking).
    pub fn fresh_plain(&self, id: &HashBinary, now: SystemTime) -> Option<FreshObject> {
        let object = self.get(id)?;
        let headers = &object.header.headers;
        let plain = object.header.status == http::StatusCode::OK
            && object.variance.is_none()
            && !headers.contains_key(http::header::VARY)
            && headers.contains_key(http::header::CONTENT_LENGTH);
        // pingora's own test (`CacheMeta::is_fresh`): fresh up to and
        // including `fresh_until`.
        if !plain || object.fresh_until < now {
            return None;
        }
        Some(FreshObject {
            header: object.header.clone(),
            body: object.body.clone(),
            age: now
                .duration_since(object.updated)
                .unwrap_or_default()
                .as_secs(),
        })
    }

    /// Every entry id (purge all).
    pub fn all_ids(&self) -> Vec<HashBinary> {
        self.shards
            .iter()
            .flat_map(|shard| shard.read().keys().copied().collect::<Vec<_>>())
            .collect()
    }
}

/// Entry id of a key: its combined (primary + variance) hash.
pub fn entry_id(key: &impl CacheHashKey) -> HashBinary {
    key.combined_bin()
}

struct Hit {
    body: Bytes,
    done: bool,
    range: (usize, usize),
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.range.0..self.range.1)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.body.len();
        if start >= len {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek start {start} out of range (body is {len} bytes)"),
            );
        }
        self.range = (start, end.map_or(len, |end| end.min(len)));
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.body.len()
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

struct Miss {
    storage: &'static ObjectStorage,
    id: HashBinary,
    path: HashBinary,
    meta: Option<CacheMeta>,
    body: BytesMut,
    too_large: bool,
}

#[async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.body.len() + data.len() > self.storage.max_object_bytes {
            // Keep proxying, stop buffering: the response is not stored.
            self.too_large = true;
            self.body = BytesMut::new();
        }
        if !self.too_large {
            self.body.extend_from_slice(&data);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let Some(meta) = self.meta.take() else {
            return Error::e_explain(ErrorType::InternalError, "cache miss finished twice");
        };
        if self.too_large {
            return Error::e_explain(
                ErrorType::InternalError,
                "response larger than cache.max_object_bytes; not stored",
            );
        }
        let body = std::mem::take(&mut self.body);
        // Growth may have left up to twice the body allocated; keep it exact.
        let body = if body.capacity() > body.len() + body.len() / 8 {
            Bytes::copy_from_slice(&body)
        } else {
            body.freeze()
        };
        let object = Object::from_meta(&meta, body, self.path);
        let size = object.size;
        self.storage.insert(self.id, object);
        Ok(MissFinishType::Created(size))
    }
}

#[async_trait]
impl Storage for ObjectStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(object) = self.get(&entry_id(key)) else {
            return Ok(None);
        };
        let hit = Hit {
            body: object.body.clone(),
            done: false,
            range: (0, object.body.len()),
        };
        Ok(Some((object.meta(), Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        // `CacheMeta` is not `Clone`; rebuild it from its parts.
        let mut copy = CacheMeta::new(
            meta.fresh_until(),
            meta.created(),
            meta.stale_while_revalidate_sec(),
            meta.stale_if_error_sec(),
            meta.response_header_copy(),
        );
        if let Some(variance) = meta.variance() {
            copy.set_variance(variance);
        }
        let expected = meta
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|len| *len <= self.max_object_bytes)
            .unwrap_or(0);
        Ok(Box::new(Miss {
            storage: self,
            id: entry_id(key),
            path: super::key::path_id_of(key),
            meta: Some(copy),
            body: BytesMut::with_capacity(expected),
            too_large: false,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let key: &CompactCacheKey = target.key();
        match self.remove(&entry_id(key)) {
            Some(_) => {
                let counter = match purge_type {
                    PurgeType::Eviction => &self.stats.evicted,
                    PurgeType::Invalidation => &self.stats.purged,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(PurgeOutcome::Purged(None))
            }
            None => Ok(PurgeOutcome::NotFound),
        }
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        Ok(self.replace_meta(entry_id(key), meta))
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::cache::trace::Span;
    use std::time::Duration;

    fn leak() -> &'static ObjectStorage {
        Box::leak(Box::new(ObjectStorage::new(1024 * 1024)))
    }

    fn meta(tags: &str) -> CacheMeta {
        let mut header = ResponseHeader::build(200, None).unwrap();
        header.insert_header(SURROGATE_KEY, tags).unwrap();
        let now = SystemTime::now();
        CacheMeta::new(now + Duration::from_secs(60), now, 5, 10, header)
    }

    async fn put(storage: &'static ObjectStorage, key: &CacheKey, tags: &str, body: &'static [u8]) {
        let span = Span::inactive().handle();
        let mut miss = storage
            .get_miss_handler(key, &meta(tags), &span)
            .await
            .unwrap();
        miss.write_body(Bytes::from_static(body), true)
            .await
            .unwrap();
        miss.finish().await.unwrap();
    }

    #[tokio::test]
    async fn stores_and_serves_without_copying_the_body() {
        let storage = leak();
        let key = CacheKey::new("h/v1/products/1", "");
        put(storage, &key, "product:1 products", b"{\"id\":1}").await;
        let span = Span::inactive().handle();
        let (meta, mut hit) = storage.lookup(&key, &span).await.unwrap().unwrap();
        assert_eq!(meta.stale_if_error_sec(), 10);
        assert_eq!(hit.read_body().await.unwrap().unwrap(), &b"{\"id\":1}"[..]);
        assert!(hit.read_body().await.unwrap().is_none());
        assert_eq!(storage.stats.items.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn indexes_by_surrogate_key_and_cleans_the_index_on_remove() {
        let storage = leak();
        let one = CacheKey::new("h/v1/products/1", "");
        let two = CacheKey::new("h/v1/products/2", "");
        put(storage, &one, "product:1 products", b"1").await;
        put(storage, &two, "product:2 products", b"2").await;
        assert_eq!(storage.ids_for_tag("products").len(), 2);
        assert_eq!(storage.ids_for_tag("product:1"), vec![entry_id(&one)]);
        storage.remove(&entry_id(&one)).unwrap();
        assert_eq!(storage.ids_for_tag("products"), vec![entry_id(&two)]);
        assert!(storage.ids_for_tag("product:1").is_empty());
        assert_eq!(storage.stats.items.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn refuses_objects_over_the_size_limit() {
        let storage = Box::leak(Box::new(ObjectStorage::new(4)));
        let key = CacheKey::new("h/big", "");
        let span = Span::inactive().handle();
        let mut miss = storage
            .get_miss_handler(&key, &meta(""), &span)
            .await
            .unwrap();
        miss.write_body(Bytes::from_static(b"too large"), true)
            .await
            .unwrap();
        assert!(miss.finish().await.is_err());
        assert!(storage.lookup(&key, &span).await.unwrap().is_none());
    }
}
