//! The home-page cache of one projection target: finished answers (JSON bytes and ETag) by generation and
//! request, each with the ids of the keys it was read from. The target's change notices drop every page
//! built from a changed key, so a cached page is never older than the notices received. Three rules keep
//! that true:
//! - a page read while a notice for one of its keys arrived is not stored (each read holds a ticket, the
//!   notice sequence number when it started, and each key remembers the last notice that named it);
//! - nothing is cached while the subscription is down, and everything is dropped when it goes down or
//!   comes back (notices may have been missed in between);
//! - every page also expires after a time to live, which bounds staleness from changes made behind the
//!   projector's back (someone editing Redis by hand).

use axum::body::Bytes;
use axum::http::HeaderValue;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A stored answer.
#[derive(Debug, Clone)]
pub struct CachedPage {
    pub body: Bytes,
    pub etag: HeaderValue,
}

impl CachedPage {
    /// A JSON body and its weak ETag: FNV-1a of the bytes, cheap and stable; an ETag needs no
    /// cryptographic strength.
    pub fn new(body: Vec<u8>) -> Self {
        let hash = projection::invalidation::fnv1a(&body);
        let etag = HeaderValue::from_str(&format!("W/\"{hash:016x}\""))
            .unwrap_or(HeaderValue::from_static("W/\"0\""));
        Self { body: Bytes::from(body), etag }
    }
}

/// A key of the read model: generation and key id.
type SourceKey = (u64, u64);

#[derive(Debug)]
struct Stored {
    page: CachedPage,
    at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    live: bool,
    /// Bumped by every notice and every reset.
    seq: u64,
    /// Tickets below this are refused (set by resets, which forget `recent`).
    floor: u64,
    /// The sequence number of the last notice that named each key.
    recent: HashMap<SourceKey, u64>,
    /// By generation, then by request key (route parameters); nested so a lookup borrows the key.
    pages: HashMap<u64, HashMap<String, Stored>>,
    pages_len: usize,
    /// Pages built from each key. May name pages already gone, which costs only a failed removal.
    readers: HashMap<SourceKey, Vec<String>>,
}

impl Inner {
    /// Drop about `n` pages, whichever the map yields first (its order is effectively random). Their
    /// entries in `readers` stay until a notice or a reset; removing a page twice is harmless.
    fn evict(&mut self, n: usize) {
        let mut left = n;
        for pages in self.pages.values_mut() {
            let victims: Vec<String> = pages.keys().take(left).cloned().collect();
            for v in &victims {
                pages.remove(v);
            }
            left -= victims.len();
            if left == 0 {
                break;
            }
        }
        self.pages_len -= n - left;
    }

    fn reset(&mut self) {
        self.seq += 1;
        self.floor = self.seq;
        self.recent.clear();
        self.pages.clear();
        self.pages_len = 0;
        self.readers.clear();
    }
}

#[derive(Debug)]
pub struct PageCache {
    inner: Mutex<Inner>,
    ttl: Duration,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Remembered keys allowed per page of capacity (a home page reads about 25).
const KEYS_PER_PAGE: usize = 32;

/// Proof of when a read started; see [`PageCache::ticket`].
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl PageCache {
    /// `capacity` bounds the pages (past it, an eighth are dropped to make room) and, 32 per page, the
    /// remembered keys (past that, everything is dropped).
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ttl,
            capacity: capacity.max(1),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A stored, unexpired page, if the cache is live (counted as a hit or a miss).
    pub fn get(&self, generation: u64, key: &str, now: Instant) -> Option<CachedPage> {
        let found = {
            let inner = self.lock();
            let stored = inner.pages.get(&generation).and_then(|p| p.get(key)).filter(|_| inner.live);
            stored.filter(|s| now.duration_since(s.at) < self.ttl).map(|s| s.page.clone())
        };
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Lookups answered from the cache and not, since start.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    /// Take before reading the target; `None` when pages cannot be cached now.
    pub fn ticket(&self) -> Option<Ticket> {
        let inner = self.lock();
        inner.live.then_some(Ticket(inner.seq))
    }

    /// Store a page read under `ticket` from the keys `sources`, unless a notice named one of them since.
    /// Returns whether it was stored.
    pub fn insert(
        &self,
        ticket: Ticket,
        generation: u64,
        key: String,
        sources: &[u64],
        page: CachedPage,
        now: Instant,
    ) -> bool {
        let mut inner = self.lock();
        if !inner.live || ticket.0 < inner.floor {
            return false;
        }
        if sources.iter().any(|s| inner.recent.get(&(generation, *s)).is_some_and(|&seq| seq > ticket.0)) {
            return false;
        }
        if inner.readers.len() >= self.capacity * KEYS_PER_PAGE {
            inner.reset();
            return false;
        }
        if inner.pages_len >= self.capacity {
            inner.evict(self.capacity / 8 + 1);
        }
        // A newer generation (a rebuild flipped) means older pages will not be asked for again.
        if inner.pages.keys().any(|g| *g < generation) {
            let old: usize = inner.pages.iter().filter(|(g, _)| **g < generation).map(|(_, p)| p.len()).sum();
            inner.pages.retain(|g, _| *g >= generation);
            inner.pages_len -= old;
        }
        for s in sources {
            inner.readers.entry((generation, *s)).or_default().push(key.clone());
        }
        if inner.pages.entry(generation).or_default().insert(key, Stored { page, at: now }).is_none() {
            inner.pages_len += 1;
        }
        true
    }

    /// A change notice: drop every page read from these keys.
    pub fn invalidate(&self, generation: u64, keys: &[u64]) {
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        for k in keys {
            inner.recent.insert((generation, *k), seq);
            if let Some(keys) = inner.readers.remove(&(generation, *k)) {
                let removed = match inner.pages.get_mut(&generation) {
                    Some(pages) => keys.iter().filter(|p| pages.remove(p.as_str()).is_some()).count(),
                    None => 0,
                };
                inner.pages_len -= removed;
            }
        }
        if inner.recent.len() >= self.capacity * KEYS_PER_PAGE {
            // Forgetting notices is safe only if no read started before them may still store its page.
            inner.reset();
        }
    }

    /// The subscription came up (`true`) or was lost: either way, start empty.
    pub fn set_live(&self, live: bool) {
        let mut inner = self.lock();
        inner.reset();
        inner.live = live;
    }

    pub fn is_live(&self) -> bool {
        self.lock().live
    }

    pub fn len(&self) -> usize {
        self.lock().pages_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(s: &str) -> CachedPage {
        CachedPage { body: Bytes::from(s.to_owned()), etag: HeaderValue::from_static("W/\"x\"") }
    }

    fn live() -> PageCache {
        let c = PageCache::new(Duration::from_secs(60), 1000);
        c.set_live(true);
        c
    }

    #[test]
    fn a_stored_page_is_served_until_one_of_its_keys_changes() {
        let (c, now) = (live(), Instant::now());
        let t = c.ticket().unwrap();
        assert!(c.insert(t, 1, "ann".into(), &[10, 11], page("a"), now));
        assert_eq!(c.get(1, "ann", now).unwrap().body, "a");
        assert!(c.get(2, "ann", now).is_none(), "another generation is another page");
        c.invalidate(1, &[99]);
        assert!(c.get(1, "ann", now).is_some(), "an unrelated key changes nothing");
        c.invalidate(2, &[11]);
        assert!(c.get(1, "ann", now).is_some(), "the same key in another generation changes nothing");
        c.invalidate(1, &[11]);
        assert!(c.get(1, "ann", now).is_none());
        assert_eq!(c.hits_and_misses(), (3, 2));
    }

    #[test]
    fn a_page_read_while_its_key_changed_is_not_stored() {
        let (c, now) = (live(), Instant::now());
        let t = c.ticket().unwrap();
        c.invalidate(1, &[10]);
        assert!(!c.insert(t, 1, "ann".into(), &[10], page("old"), now));
        assert!(c.get(1, "ann", now).is_none());
        // A read that starts after the notice saw the change, and may be stored.
        let t = c.ticket().unwrap();
        assert!(c.insert(t, 1, "ann".into(), &[10], page("new"), now));
        assert_eq!(c.get(1, "ann", now).unwrap().body, "new");
    }

    #[test]
    fn nothing_is_cached_without_a_subscription_and_losing_it_empties_the_cache() {
        let now = Instant::now();
        let c = PageCache::new(Duration::from_secs(60), 1000);
        assert!(c.ticket().is_none());
        c.set_live(true);
        let t = c.ticket().unwrap();
        assert!(c.insert(t, 1, "ann".into(), &[10], page("a"), now));
        c.set_live(false);
        assert!(c.get(1, "ann", now).is_none());
        assert!(!c.insert(t, 1, "bob".into(), &[12], page("b"), now));
        // Back up: a read that started before the outage may have missed a notice.
        c.set_live(true);
        assert!(!c.insert(t, 1, "bob".into(), &[12], page("b"), now));
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn a_newer_generation_drops_the_pages_of_older_ones() {
        let (c, now) = (live(), Instant::now());
        let t = c.ticket().unwrap();
        assert!(c.insert(t, 1, "ann".into(), &[1], page("a"), now));
        assert!(c.insert(t, 1, "bob".into(), &[2], page("b"), now));
        assert!(c.insert(t, 2, "ann".into(), &[1], page("a2"), now));
        assert_eq!(c.len(), 1);
        assert!(c.get(1, "bob", now).is_none());
        assert_eq!(c.get(2, "ann", now).unwrap().body, "a2");
    }

    #[test]
    fn pages_expire_and_the_cache_stays_bounded() {
        let now = Instant::now();
        let c = PageCache::new(Duration::from_secs(5), 3);
        c.set_live(true);
        let t = c.ticket().unwrap();
        assert!(c.insert(t, 1, "ann".into(), &[1], page("a"), now));
        assert!(c.get(1, "ann", now + Duration::from_secs(4)).is_some());
        assert!(c.get(1, "ann", now + Duration::from_secs(5)).is_none());
        assert!(c.insert(t, 1, "bob".into(), &[2], page("b"), now));
        assert!(c.insert(t, 1, "cid".into(), &[3], page("c"), now));
        // Full: one page makes room for the new one.
        assert!(c.insert(t, 1, "dan".into(), &[4], page("d"), now));
        assert_eq!(c.len(), 3);
        assert!(c.get(1, "dan", now).is_some());
        // Too many remembered keys (32 per page of capacity): everything goes, and reads that started
        // before are refused.
        let many: Vec<u64> = (100..200).collect();
        assert!(c.insert(t, 1, "eve".into(), &many, page("e"), now));
        assert!(!c.insert(t, 1, "fay".into(), &[6], page("f"), now));
        assert_eq!(c.len(), 0);
        let t2 = c.ticket().unwrap();
        assert!(!c.insert(t, 1, "eve".into(), &[5], page("e"), now));
        assert!(c.insert(t2, 1, "eve".into(), &[5], page("e"), now));
    }
}
