//! The projection targets a read API can read, their health, breakers, and which one is active.

use crate::cache::{CachedPage, PageCache};
use contract::admin::{Breaker, Checkpoint, HomeCache, ReadApiProjections, ReadTarget, TargetPosition};
use futures::StreamExt;
use projection::{KvRead, ProjectionError, ProjectionTarget, TargetState};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct TargetSetConfig {
    /// How long a failing target is skipped before a request tries it again.
    pub breaker_open_for: Duration,
    /// A target further behind the most advanced one than this many positions is not read.
    pub max_lag_positions: i64,
    /// How often health (generation, checkpoint, reachability) is refreshed.
    pub refresh_every: Duration,
    /// How long a cached home page may be served (module `cache`); zero turns the cache off.
    pub home_cache_ttl: Duration,
    /// Cached home pages per target.
    pub home_cache_pages: usize,
}

impl Default for TargetSetConfig {
    fn default() -> Self {
        Self {
            breaker_open_for: Duration::from_secs(3),
            max_lag_positions: 1000,
            refresh_every: Duration::from_millis(200),
            home_cache_ttl: Duration::from_secs(30),
            // ≈ 5 KB per page of 20 posts: about 100 MB at most.
            home_cache_pages: 20_000,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Health {
    reachable: bool,
    generation: Option<u64>,
    state: Option<TargetState>,
    error: Option<String>,
}

struct Entry {
    target: Arc<dyn ProjectionTarget>,
    health: RwLock<Health>,
    open_until: Mutex<Option<Instant>>,
    cache: PageCache,
}

pub struct TargetSet {
    entries: Vec<Entry>,
    active: RwLock<String>,
    config: TargetSetConfig,
}

impl std::fmt::Debug for TargetSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetSet").field("targets", &self.entries.len()).finish()
    }
}

impl TargetSet {
    /// The first target is active at start.
    pub fn new(targets: Vec<Arc<dyn ProjectionTarget>>, config: TargetSetConfig) -> Arc<Self> {
        let active = targets.first().map(|t| t.name().to_owned()).unwrap_or_default();
        let entries = targets
            .into_iter()
            .map(|target| Entry {
                target,
                health: RwLock::new(Health::default()),
                open_until: Mutex::new(None),
                cache: PageCache::new(config.home_cache_ttl, config.home_cache_pages),
            })
            .collect();
        Arc::new(Self { entries, active: RwLock::new(active), config })
    }

    pub fn active(&self) -> String {
        self.active.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Make `name` the active target; false when there is no such target.
    pub fn set_active(&self, name: &str) -> bool {
        if !self.entries.iter().any(|e| e.target.name() == name) {
            return false;
        }
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = name.to_owned();
        metrics::counter!("socialnet_read_active_switches_total").increment(1);
        true
    }

    pub fn names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.target.name().to_owned()).collect()
    }

    /// Refresh every target's health once.
    pub async fn refresh(&self) {
        for e in &self.entries {
            // Cache counters are exported here rather than per request: a labelled metric lookup per
            // cache hit would cost a noticeable share of one.
            let (hits, misses) = e.cache.hits_and_misses();
            let name = e.target.name().to_owned();
            metrics::counter!("socialnet_read_home_cache_total", "target" => name.clone(), "result" => "hit")
                .absolute(hits);
            metrics::counter!("socialnet_read_home_cache_total", "target" => name.clone(), "result" => "miss")
                .absolute(misses);
            metrics::gauge!("socialnet_read_home_cache_pages", "target" => name).set(e.cache.len() as f64);
            let h = match e.target.current_generation().await {
                Ok(Some(g)) => match e.target.state(g).await {
                    Ok(state) => Health { reachable: true, generation: Some(g), state, error: None },
                    Err(err) => {
                        Health { reachable: false, error: Some(err.to_string()), ..Health::default() }
                    }
                },
                Ok(None) => Health {
                    reachable: true,
                    error: Some("no projection data (empty target)".into()),
                    ..Health::default()
                },
                Err(err) => Health { reachable: false, error: Some(err.to_string()), ..Health::default() },
            };
            *e.health.write().unwrap_or_else(|p| p.into_inner()) = h;
        }
    }

    /// Refresh health in the background until the task is aborted; also start listening to each
    /// target's change notices, which is what lets its home pages be cached.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        if !self.config.home_cache_ttl.is_zero() {
            for i in 0..self.entries.len() {
                tokio::spawn(self.clone().listen_for_changes(i));
            }
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                me.refresh().await;
                tokio::time::sleep(me.config.refresh_every).await;
            }
        })
    }

    fn best_position(&self) -> i64 {
        self.entries
            .iter()
            .filter_map(|e| {
                e.health.read().unwrap_or_else(|p| p.into_inner()).state.map(|s| s.cursor.position)
            })
            .max()
            .unwrap_or(0)
    }

    fn breaker_open(e: &Entry) -> bool {
        e.open_until.lock().unwrap_or_else(|p| p.into_inner()).is_some_and(|t| Instant::now() < t)
    }

    /// Whether a target may serve reads now, and why not.
    fn usable(&self, e: &Entry, best: i64) -> Result<u64, String> {
        if Self::breaker_open(e) {
            return Err("breaker open".into());
        }
        let h = e.health.read().unwrap_or_else(|p| p.into_inner()).clone();
        let generation =
            h.generation.ok_or_else(|| h.error.clone().unwrap_or_else(|| "not checked yet".into()))?;
        let state = h.state.ok_or("no checkpoint yet")?;
        let lag = best - state.cursor.position;
        if lag > self.config.max_lag_positions {
            return Err(format!("{lag} positions behind"));
        }
        Ok(generation)
    }

    /// The targets to try for a read, in order: the active one if usable, then the others, most caught up first.
    fn candidates(&self) -> Vec<(usize, u64)> {
        let best = self.best_position();
        let active = self.active();
        let mut order: Vec<(usize, i64)> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let pos = e
                    .health
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .state
                    .map(|s| s.cursor.position)
                    .unwrap_or(-1);
                (i, pos)
            })
            .collect();
        order.sort_by_key(|(i, pos)| (self.entries[*i].target.name() != active, -pos));
        order
            .into_iter()
            .filter_map(|(i, _)| self.usable(&self.entries[i], best).ok().map(|g| (i, g)))
            .collect()
    }

    fn trip(&self, i: usize, err: &ProjectionError) {
        let e = &self.entries[i];
        *e.open_until.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Instant::now() + self.config.breaker_open_for);
        e.health.write().unwrap_or_else(|p| p.into_inner()).error = Some(err.to_string());
        metrics::counter!("socialnet_read_breaker_trips_total", "target" => e.target.name().to_owned())
            .increment(1);
        tracing::warn!(target = e.target.name(), error = %err, "read failed; breaker open, failing over");
    }

    /// Run a read on the best target, failing over to the next on an error. Returns the answer and the
    /// target that gave it.
    pub async fn read<T, F, Fut>(&self, f: F) -> Result<(T, String), ProjectionError>
    where
        F: Fn(Arc<dyn KvRead>) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProjectionError>>,
    {
        self.first_answer(|e, generation| f(e.target.view(generation))).await
    }

    /// The failover loop of every read: `f` on each usable target in order until one answers. An answer
    /// closes that target's breaker; an error trips it and moves on, except corrupt data, which no other
    /// target would explain.
    async fn first_answer<'a, T, F, Fut>(&'a self, f: F) -> Result<(T, String), ProjectionError>
    where
        F: Fn(&'a Entry, u64) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProjectionError>>,
    {
        let mut last = ProjectionError::Unavailable("no projection target is usable".into());
        for (i, generation) in self.candidates() {
            let e = &self.entries[i];
            match f(e, generation).await {
                Ok(v) => {
                    *e.open_until.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    return Ok((v, e.target.name().to_owned()));
                }
                Err(err @ ProjectionError::Corrupt(_)) => return Err(err),
                Err(err) => {
                    self.trip(i, &err);
                    last = err;
                }
            }
        }
        Err(last)
    }

    /// Keep target `i`'s page cache fed with its change notices, resubscribing after a loss; returns at
    /// once for a target that sends none (its pages are then never cached).
    async fn listen_for_changes(self: Arc<Self>, i: usize) {
        let e = &self.entries[i];
        loop {
            match e.target.invalidations().await {
                Ok(None) => return,
                Ok(Some(mut notices)) => {
                    e.cache.set_live(true);
                    tracing::info!(target = e.target.name(), "home pages cached: change notices subscribed");
                    while let Some(n) = notices.next().await {
                        e.cache.invalidate(n.generation, &n.keys);
                    }
                    e.cache.set_live(false);
                    tracing::warn!(target = e.target.name(), "change notices lost; home-page cache off");
                }
                Err(err) => tracing::debug!(target = e.target.name(), error = %err, "cannot subscribe"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Like [`TargetSet::read`], for an answer that may be cached: `key` identifies the request, and `f`
    /// returns the JSON body with the keys it was read from. Returns the page, the target that gave it
    /// and whether it came from the cache.
    pub async fn read_cached<F, Fut>(
        &self,
        key: &str,
        f: F,
    ) -> Result<(CachedPage, String, bool), ProjectionError>
    where
        F: Fn(Arc<dyn KvRead>) -> Fut,
        Fut: std::future::Future<Output = Result<(Vec<u8>, Vec<String>), ProjectionError>>,
    {
        let ((page, hit), by) = self
            .first_answer(|e, generation| {
                let f = &f;
                async move {
                    if let Some(hit) = e.cache.get(generation, key, Instant::now()) {
                        return Ok((hit, true));
                    }
                    let ticket = e.cache.ticket();
                    let (body, sources) = f(e.target.view(generation)).await?;
                    let page = CachedPage::new(body);
                    if let Some(ticket) = ticket {
                        let ids: Vec<u64> =
                            sources.iter().map(|s| projection::invalidation::key_id(s)).collect();
                        let stored = page.clone();
                        e.cache.insert(ticket, generation, key.to_owned(), &ids, stored, Instant::now());
                    }
                    Ok((page, false))
                }
            })
            .await?;
        Ok((page, by, hit))
    }

    /// Home-page cache lookups over all targets: (hits, misses).
    pub fn home_cache_stats(&self) -> (u64, u64) {
        self.entries.iter().map(|e| e.cache.hits_and_misses()).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    /// Whether target `name`'s home pages can be cached now (its change notices are subscribed).
    pub fn home_cache_live(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.target.name() == name && e.cache.is_live())
    }

    /// The admin view of every target.
    pub fn describe(&self) -> Vec<ReadTarget> {
        let best = self.best_position();
        let active = self.active();
        self.entries
            .iter()
            .map(|e| {
                let h = e.health.read().unwrap_or_else(|p| p.into_inner()).clone();
                let usable = self.usable(e, best);
                let (hits, misses) = e.cache.hits_and_misses();
                ReadTarget {
                    name: e.target.name().to_owned(),
                    active: e.target.name() == active,
                    healthy: usable.is_ok(),
                    reason: usable.err(),
                    reachable: h.reachable,
                    breaker: if Self::breaker_open(e) { Breaker::Open } else { Breaker::Closed },
                    position: TargetPosition {
                        generation: h.generation,
                        checkpoint: h
                            .state
                            .map(|s| Checkpoint { tx_id: s.cursor.tx_id, position: s.cursor.position }),
                        events_applied: h.state.map(|s| s.events),
                        lag_events: h.state.map(|s| best - s.cursor.position),
                        lag_seconds: h.state.map(|s| Self::lag_seconds(s, best)),
                    },
                    error: h.error,
                    home_cache: HomeCache {
                        live: e.cache.is_live(),
                        pages: e.cache.len() as u64,
                        hits,
                        misses,
                    },
                }
            })
            .collect()
    }

    /// Seconds between the newest event any target has applied and the last one this one applied.
    fn lag_seconds(s: TargetState, best: i64) -> f64 {
        if s.cursor.position >= best {
            0.0
        } else {
            ((chrono::Utc::now().timestamp_millis() - s.last_event_ms).max(0) as f64) / 1000.0
        }
    }

    /// The admin view of this pod: its active target and every target.
    pub fn view(&self) -> ReadApiProjections {
        ReadApiProjections { active: self.active(), targets: self.describe() }
    }
}
