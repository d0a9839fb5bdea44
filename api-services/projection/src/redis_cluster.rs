//! A projection target on a Redis Cluster. The model is cut into partitions (see
//! [`crate::cluster_layout`]), each in one slot: `{target}:g{N}:{tag}:{relative key}`. The target's own
//! keys (current generation, generation counter, rebuild progress, each generation's checkpoint) share the
//! hash tag `{target}`.
//!
//! **Applying a batch** (checkpoint X → Y) takes three steps, so that each partition changes atomically
//! and a batch torn by a crash is finished, never applied twice:
//! 1. *intent*: on the target's slot, compare-and-set: the checkpoint must be X and no other batch pending;
//!    Y is recorded as pending. This also orders writers: only one batch from X can be pending.
//! 2. *partitions*, concurrently, one script each: a partition whose checkpoint (an event count) is
//!    already Y has this batch and skips it; one past X was moved by someone else (conflict); otherwise its
//!    operations run, its change notice is published and its checkpoint becomes Y.
//! 3. *commit*: on the target's slot, X → Y, pending cleared.
//!
//! A writer that finds a batch pending finishes exactly that batch first (same events, X to Y; see
//! [`ProjectionTarget::pending`]); partitions that already have it skip it.

use crate::cluster_layout::{Layout, PARTITIONS};
use crate::dump::{Dump, ImageValue};
use crate::invalidation::Invalidation;
use crate::keys::Keys;
use crate::ops::Op;
use crate::redis_commands::{
    ALLOCATE, push_load, push_op, read_rebuild, read_state, read_value, write_rebuild,
};
use crate::redis_target::{OPS, encode, scored, state_string, unavailable};
use crate::target::{HomePage, KvRead, ProjectionError, ProjectionTarget, TargetState};
use async_trait::async_trait;
use contract::admin::RebuildProgress;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// A partition's part of a batch: skip it if the partition already has it, refuse if the partition moved
/// past the batch's start, else run [`OPS`] and move the partition's checkpoint.
/// KEYS[1] = the partition's checkpoint; ARGV: prefix, -, start (events), end (events), channel, notice.
const PARTITION_HEAD: &str = r#"
local prefix = ARGV[1]
local cp = tonumber(redis.call('GET', KEYS[1]) or '0')
if cp == tonumber(ARGV[4]) then return 0 end
if cp > tonumber(ARGV[3]) then
  return redis.error_reply('CONFLICT partition checkpoint is ' .. cp)
end
"#;

const PARTITION_TAIL: &str = r#"
if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
redis.call('SET', KEYS[1], ARGV[4])
return 1
"#;

/// Step 1. KEYS: checkpoint, pending. ARGV: expected checkpoint, next checkpoint.
const INTENT: &str = r#"
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return redis.error_reply('CONFLICT checkpoint is ' .. cur) end
local pending = redis.call('GET', KEYS[2])
if pending and pending ~= ARGV[2] then return redis.error_reply('CONFLICT pending ' .. pending) end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"#;

/// Step 3. KEYS: checkpoint, pending. ARGV: expected checkpoint, next checkpoint.
const COMMIT: &str = r#"
local cur = redis.call('GET', KEYS[1]) or ''
if cur ~= ARGV[1] then return redis.error_reply('CONFLICT checkpoint is ' .. cur) end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return redis.error_reply('CONFLICT not pending') end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
return 1
"#;

/// How long a batch waits for a replica to confirm a partition's change.
const REPLICA_WAIT_MS: u64 = 200;

/// Suffix of a partition's checkpoint key (not part of the model).
const PARTITION_CHECKPOINT: &str = "~cp";

#[derive(Clone)]
pub struct RedisClusterTarget {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    seeds: Vec<String>,
    client: redis::cluster::ClusterClient,
    conn: OnceCell<ClusterConnection>,
    replicas: OnceCell<usize>,
    layout: Layout,
    partition: redis::Script,
    intent: redis::Script,
    commit: redis::Script,
}

impl std::fmt::Debug for RedisClusterTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisClusterTarget").field("name", &self.inner.name).finish()
    }
}

/// A key's partition tag and absolute name in one generation.
fn absolute(name: &str, generation: u64, tag: &str, relative: &str) -> String {
    format!("{name}:g{generation}:{{{tag}}}:{relative}")
}

impl RedisClusterTarget {
    /// Short timeouts and one retry: a read must fail fast so the read API fails over.
    pub fn connect(name: &str, seeds: &[String]) -> Result<Self, ProjectionError> {
        Self::with_timeouts(name, seeds, Duration::from_secs(2), 1)
    }

    /// For writers: a large batch script may run for seconds, and a failover of a master is waited out.
    pub fn connect_for_writing(name: &str, seeds: &[String]) -> Result<Self, ProjectionError> {
        Self::with_timeouts(name, seeds, Duration::from_secs(60), 8)
    }

    fn with_timeouts(
        name: &str,
        seeds: &[String],
        response_timeout: Duration,
        retries: u32,
    ) -> Result<Self, ProjectionError> {
        if seeds.is_empty() {
            return Err(ProjectionError::Unavailable(format!("cluster target {name} has no seed nodes")));
        }
        let client = redis::cluster::ClusterClientBuilder::new(seeds.to_vec())
            .connection_timeout(Duration::from_millis(500))
            .response_timeout(response_timeout)
            .retries(retries)
            .max_retry_wait(1000)
            .build()
            .map_err(unavailable)?;
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                seeds: seeds.to_vec(),
                client,
                conn: OnceCell::new(),
                replicas: OnceCell::new(),
                layout: Layout::new(),
                partition: redis::Script::new(&format!("{PARTITION_HEAD}{OPS}{PARTITION_TAIL}")),
                intent: redis::Script::new(INTENT),
                commit: redis::Script::new(COMMIT),
            }),
        })
    }

    async fn conn(&self) -> Result<ClusterConnection, ProjectionError> {
        let conn = self
            .inner
            .conn
            .get_or_try_init(|| async { self.inner.client.get_async_connection().await.map_err(unavailable) })
            .await?;
        Ok(conn.clone())
    }

    fn meta(&self, what: &str) -> String {
        format!("{{{}}}:{what}", self.inner.name)
    }

    fn checkpoint_key(&self, generation: u64) -> String {
        self.meta(&format!("g{generation}:~checkpoint"))
    }

    fn pending_key(&self, generation: u64) -> String {
        self.meta(&format!("g{generation}:~pending"))
    }

    fn changes_channel(&self) -> String {
        format!("{}:changes", self.inner.name)
    }

    fn key(&self, generation: u64, partition: usize, relative: &str) -> String {
        absolute(&self.inner.name, generation, self.inner.layout.tag(partition), relative)
    }

    /// `ops` by partition; an operation on `celebs` goes to every partition.
    fn split(&self, ops: &[Op]) -> BTreeMap<usize, Vec<Op>> {
        let mut parts: BTreeMap<usize, Vec<Op>> = BTreeMap::new();
        for op in ops {
            match self.inner.layout.partition(op.key()) {
                Some(p) => parts.entry(p).or_default().push(op.clone()),
                None => (0..PARTITIONS).for_each(|p| parts.entry(p).or_default().push(op.clone())),
            }
        }
        parts
    }

    async fn run_global(
        &self,
        script: &redis::Script,
        generation: u64,
        expected: &str,
        next: &str,
    ) -> Result<(), ProjectionError> {
        let result: Result<i64, redis::RedisError> = script
            .key(self.checkpoint_key(generation))
            .key(self.pending_key(generation))
            .arg(expected)
            .arg(next)
            .invoke_async(&mut self.conn().await?)
            .await;
        conflict_or_unavailable(result.map(|_| ()))
    }

    async fn apply_partition(
        &self,
        generation: u64,
        partition: usize,
        ops: &[Op],
        span: (u64, u64),
    ) -> Result<(), ProjectionError> {
        let tag = self.inner.layout.tag(partition);
        let mut args = Vec::with_capacity(ops.len() * 4);
        encode(ops, &mut args);
        let mut invocation =
            self.inner.partition.key(absolute(&self.inner.name, generation, tag, PARTITION_CHECKPOINT));
        invocation
            .arg(format!("{}:g{generation}:{{{tag}}}:", self.inner.name))
            .arg("")
            .arg(span.0)
            .arg(span.1)
            .arg(self.changes_channel())
            .arg(crate::invalidation::encode(generation, ops));
        for a in &args {
            invocation.arg(a);
        }
        let result: Result<i64, redis::RedisError> = invocation.invoke_async(&mut self.conn().await?).await;
        conflict_or_unavailable(result.map(|_| ()))
    }

    /// Wait until a replica has each partition's change (`WAIT 1`, on each partition's master) before the
    /// batch is committed: a master that dies right after would otherwise take the change with it while its
    /// promoted replica and the committed checkpoint say it happened. Skipped on a cluster without
    /// replicas; a replica that does not answer within the timeout costs that timeout, not the batch.
    async fn replicate(&self, partitions: impl Iterator<Item = usize>) -> Result<(), ProjectionError> {
        if self.replicas().await? == 0 {
            return Ok(());
        }
        let conn = self.conn().await?;
        let waits = partitions.map(|p| {
            let slot = crate::cluster_layout::slot_of(self.inner.layout.tag(p).as_bytes());
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
                slot,
                SlotAddr::Master,
            )));
            let mut conn = conn.clone();
            async move {
                let mut wait = redis::cmd("WAIT");
                wait.arg(1).arg(REPLICA_WAIT_MS);
                conn.route_command(wait, route).await.map_err(unavailable)
            }
        });
        let acked = futures::future::try_join_all(waits).await?;
        if acked.iter().any(|a| matches!(a, redis::Value::Int(0))) {
            tracing::warn!(target = %self.inner.name, "a partition's change reached no replica in time");
        }
        Ok(())
    }

    /// Replicas per master (the fewest over all slot ranges), read once.
    async fn replicas(&self) -> Result<usize, ProjectionError> {
        let n = self
            .inner
            .replicas
            .get_or_try_init(|| async {
                let ranges: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async(&mut self.conn().await?)
                    .await
                    .map_err(unavailable)?;
                Ok::<_, ProjectionError>(ranges.iter().map(|r| r.len().saturating_sub(3)).min().unwrap_or(0))
            })
            .await?;
        Ok(*n)
    }

    /// The masters' addresses, from `CLUSTER SLOTS` (each range: start, end, master, replicas…).
    async fn masters(&self) -> Result<Vec<(String, u16)>, ProjectionError> {
        let ranges: Vec<Vec<redis::Value>> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut self.conn().await?)
            .await
            .map_err(unavailable)?;
        let mut masters = Vec::new();
        for range in ranges {
            let node = range
                .into_iter()
                .nth(2)
                .ok_or_else(|| ProjectionError::Corrupt("CLUSTER SLOTS entry without a master".into()))?;
            let node: Vec<redis::Value> =
                redis::from_redis_value(node).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
            let mut fields = node.into_iter();
            let (Some(host), Some(port)) = (fields.next(), fields.next()) else {
                return Err(ProjectionError::Corrupt("CLUSTER SLOTS master without an address".into()));
            };
            let parse = |e: redis::ParsingError| ProjectionError::Corrupt(e.to_string());
            masters.push((
                redis::from_redis_value::<String>(host).map_err(parse)?,
                redis::from_redis_value::<u16>(port).map_err(parse)?,
            ));
        }
        masters.sort();
        masters.dedup();
        Ok(masters)
    }

    /// Every key of one generation on every master (SCAN, not KEYS, so a big target is not blocked).
    async fn generation_keys(&self, generation: u64) -> Result<Vec<String>, ProjectionError> {
        let pattern = format!("{}:g{generation}:*", self.inner.name);
        let mut keys = Vec::new();
        for (host, port) in self.masters().await? {
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host, port });
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(1000);
                let raw = self.conn().await?.route_command(scan, route.clone()).await.map_err(unavailable)?;
                let (next, batch): (u64, Vec<String>) =
                    redis::from_redis_value(raw).map_err(|e| ProjectionError::Corrupt(e.to_string()))?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(keys)
    }

    /// The relative name and partition tag of an absolute key of `generation`.
    fn relative<'k>(&self, generation: u64, key: &'k str) -> Option<(&'k str, &'k str)> {
        let rest = key.strip_prefix(&format!("{}:g{generation}:{{", self.inner.name))?;
        let (tag, relative) = rest.split_once("}:")?;
        Some((tag, relative))
    }
}

fn conflict_or_unavailable(result: Result<(), redis::RedisError>) -> Result<(), ProjectionError> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.to_string().contains("CONFLICT") => Err(ProjectionError::Conflict(e.to_string())),
        Err(e) => Err(unavailable(e)),
    }
}

#[async_trait]
impl ProjectionTarget for RedisClusterTarget {
    fn name(&self) -> &str {
        &self.inner.name
    }

    fn view(&self, generation: u64) -> Arc<dyn KvRead> {
        Arc::new(ClusterView { target: self.clone(), generation })
    }

    async fn current_generation(&self) -> Result<Option<u64>, ProjectionError> {
        redis::cmd("GET")
            .arg(self.meta("current"))
            .query_async(&mut self.conn().await?)
            .await
            .map_err(unavailable)
    }

    async fn allocate_generation(&self) -> Result<u64, ProjectionError> {
        redis::Script::new(ALLOCATE)
            .key(self.meta("current"))
            .key(self.meta("generations"))
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(unavailable)
    }

    async fn state(&self, generation: u64) -> Result<Option<TargetState>, ProjectionError> {
        read_state(&mut self.conn().await?, &self.checkpoint_key(generation)).await
    }

    async fn pending(&self, generation: u64) -> Result<Option<TargetState>, ProjectionError> {
        read_state(&mut self.conn().await?, &self.pending_key(generation)).await
    }

    async fn apply(
        &self,
        generation: u64,
        ops: &[Op],
        expected: Option<TargetState>,
        next: TargetState,
    ) -> Result<(), ProjectionError> {
        let (from, to) = (state_string(expected), state_string(Some(next)));
        self.run_global(&self.inner.intent, generation, &from, &to).await?;
        let span = (expected.map_or(0, |s| s.events), next.events);
        let parts = self.split(ops);
        let runs = parts.iter().map(|(p, ops)| self.apply_partition(generation, *p, ops, span));
        futures::future::try_join_all(runs).await?;
        self.replicate(parts.keys().copied()).await?;
        self.run_global(&self.inner.commit, generation, &from, &to).await
    }

    async fn apply_unchecked(
        &self,
        generation: u64,
        ops: &[Op],
        next: TargetState,
    ) -> Result<(), ProjectionError> {
        let parts = self.split(ops);
        let runs = parts.iter().map(|(p, ops)| async move {
            let mut pipe = redis::pipe();
            for op in ops {
                push_op(&mut pipe, &self.key(generation, *p, op.key()), op);
            }
            pipe.query_async::<()>(&mut self.conn().await?).await.map_err(unavailable)
        });
        futures::future::try_join_all(runs).await?;
        let _: () = redis::cmd("SET")
            .arg(self.checkpoint_key(generation))
            .arg(state_string(Some(next)))
            .query_async(&mut self.conn().await?)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn bulk_loads(&self) -> bool {
        true
    }

    async fn load_image(
        &self,
        generation: u64,
        image: &[(String, ImageValue)],
    ) -> Result<(), ProjectionError> {
        let mut parts: BTreeMap<usize, redis::Pipeline> = BTreeMap::new();
        for (key, value) in image {
            let targets: Vec<usize> = match self.inner.layout.partition(key) {
                Some(p) => vec![p],
                None => (0..PARTITIONS).collect(),
            };
            for p in targets {
                push_load(parts.entry(p).or_insert_with(redis::pipe), &self.key(generation, p, key), value);
            }
        }
        let runs = parts.into_values().map(|pipe| async move {
            pipe.query_async::<()>(&mut self.conn().await?).await.map_err(unavailable)
        });
        futures::future::try_join_all(runs).await?;
        Ok(())
    }

    async fn set_current(&self, generation: u64) -> Result<(), ProjectionError> {
        let _: () = redis::cmd("SET")
            .arg(self.meta("current"))
            .arg(generation)
            .query_async(&mut self.conn().await?)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn drop_generation(&self, generation: u64) -> Result<u64, ProjectionError> {
        let keys = self.generation_keys(generation).await?;
        let mut by_slot: HashMap<&str, Vec<&String>> = HashMap::new();
        for k in &keys {
            let tag = self.relative(generation, k).map_or(k.as_str(), |(tag, _)| tag);
            by_slot.entry(tag).or_default().push(k);
        }
        for group in by_slot.values() {
            for chunk in group.chunks(500) {
                let _: i64 = redis::cmd("UNLINK")
                    .arg(chunk)
                    .query_async(&mut self.conn().await?)
                    .await
                    .map_err(unavailable)?;
            }
        }
        let meta = [self.checkpoint_key(generation), self.pending_key(generation)];
        let _: i64 = redis::cmd("UNLINK")
            .arg(&meta)
            .query_async(&mut self.conn().await?)
            .await
            .map_err(unavailable)?;
        Ok(keys.len() as u64)
    }

    async fn dump(&self, generation: u64) -> Result<Dump, ProjectionError> {
        let mut conn = self.conn().await?;
        let mut out = Dump::new();
        let mut celebs: Vec<(String, crate::dump::Value)> = Vec::new();
        for key in self.generation_keys(generation).await? {
            let Some((tag, relative)) = self.relative(generation, &key) else { continue };
            if relative == PARTITION_CHECKPOINT {
                continue;
            }
            let kind: String =
                redis::cmd("TYPE").arg(&key).query_async(&mut conn).await.map_err(unavailable)?;
            let Some(value) = read_value(&mut conn, &key, &kind).await? else { continue };
            if relative == Keys::CELEBS {
                celebs.push((tag.to_owned(), value));
            } else {
                out.insert(relative.to_owned(), value);
            }
        }
        merge_celebs(&mut out, self.inner.layout.tag(0), celebs);
        Ok(out)
    }

    async fn record_rebuild(&self, progress: &RebuildProgress) -> Result<(), ProjectionError> {
        write_rebuild(&mut self.conn().await?, &self.meta("rebuild"), progress).await
    }

    async fn last_rebuild(&self) -> Result<Option<RebuildProgress>, ProjectionError> {
        read_rebuild(&mut self.conn().await?, &self.meta("rebuild")).await
    }

    /// Notices are published inside the partition scripts; a cluster forwards every `PUBLISH` to all its
    /// nodes, so one subscription on any reachable node hears them all.
    async fn invalidations(
        &self,
    ) -> Result<Option<futures::stream::BoxStream<'static, Invalidation>>, ProjectionError> {
        use futures::StreamExt;
        let mut last = None;
        for seed in &self.inner.seeds {
            let connect = async {
                let client = redis::Client::open(seed.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(self.changes_channel()).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::time::timeout(Duration::from_secs(2), connect).await {
                Ok(Ok(pubsub)) => {
                    let notices = pubsub.into_on_message().filter_map(|msg| {
                        std::future::ready(crate::invalidation::decode(msg.get_payload_bytes()))
                    });
                    return Ok(Some(notices.boxed()));
                }
                Ok(Err(e)) => last = Some(e.to_string()),
                Err(_) => last = Some(format!("subscribing on {seed} timed out")),
            }
        }
        Err(ProjectionError::Unavailable(last.unwrap_or_default()))
    }

    async fn ping(&self) -> Result<(), ProjectionError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn().await?).await.map_err(unavailable)?;
        Ok(())
    }
}

/// The copies of `celebs` as the one key the model has; a copy that differs from the first partition's is
/// kept as `celebs@{tag}`, so that a comparison reports it.
fn merge_celebs(out: &mut Dump, first_tag: &str, mut copies: Vec<(String, crate::dump::Value)>) {
    copies.sort_by_key(|(tag, _)| *tag != first_tag);
    let Some((_, reference)) = copies.first().cloned() else { return };
    let complete = copies.len() == PARTITIONS;
    for (tag, value) in copies.into_iter().skip(1) {
        if value != reference {
            out.insert(format!("{}@{tag}", Keys::CELEBS), value);
        }
    }
    if !complete {
        out.insert(format!("{}@missing", Keys::CELEBS), reference.clone());
    }
    out.insert(Keys::CELEBS.to_owned(), reference);
}

/// Reads on one generation of a cluster target.
struct ClusterView {
    target: RedisClusterTarget,
    generation: u64,
}

impl ClusterView {
    fn at(&self, relative: &str) -> String {
        let layout = &self.target.inner.layout;
        self.target.key(self.generation, layout.partition_or_first(relative), relative)
    }

    /// One command per key, sent as one pipeline per partition, all partitions at once; answers in the
    /// order of `keys`.
    async fn per_partition<T: redis::FromRedisValue + Send>(
        &self,
        keys: &[String],
        command: impl Fn(&mut redis::Pipeline, String),
    ) -> Result<Vec<T>, ProjectionError> {
        let layout = &self.target.inner.layout;
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, k) in keys.iter().enumerate() {
            groups.entry(layout.partition_or_first(k)).or_default().push(i);
        }
        let conn = self.target.conn().await?;
        let runs = groups.into_values().map(|indices| {
            let mut pipe = redis::pipe();
            for i in &indices {
                command(&mut pipe, self.at(&keys[*i]));
            }
            let mut conn = conn.clone();
            async move {
                let answers: Vec<T> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
                Ok::<_, ProjectionError>(indices.into_iter().zip(answers))
            }
        });
        let mut out: Vec<Option<T>> = (0..keys.len()).map(|_| None).collect();
        for group in futures::future::try_join_all(runs).await? {
            for (i, answer) in group {
                out[i] = Some(answer);
            }
        }
        out.into_iter()
            .map(|a| a.ok_or_else(|| ProjectionError::Corrupt("a pipelined answer is missing".into())))
            .collect()
    }
}

fn below_arg(below: Option<i64>) -> String {
    below.map(|b| format!("({b}")).unwrap_or_else(|| "+inf".into())
}

#[async_trait]
impl KvRead for ClusterView {
    async fn hgetall_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<HashMap<String, String>>>, ProjectionError> {
        let maps: Vec<HashMap<String, String>> = self
            .per_partition(keys, |pipe, k| {
                pipe.cmd("HGETALL").arg(k);
            })
            .await?;
        Ok(maps.into_iter().map(|m| (!m.is_empty()).then_some(m)).collect())
    }

    async fn zrevrange_by_score(
        &self,
        key: &str,
        below: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, ProjectionError> {
        let mut all = self.zrevrange_many(&[key.to_owned()], below, limit).await?;
        Ok(all.pop().unwrap_or_default())
    }

    async fn zrange_all(&self, key: &str) -> Result<Vec<(String, i64)>, ProjectionError> {
        let raw: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.at(key))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.target.conn().await?)
            .await
            .map_err(unavailable)?;
        Ok(scored(raw))
    }

    /// `b` is read from `a`'s partition when it is `celebs` (every partition has a copy); otherwise both
    /// are read and intersected here.
    async fn zinter_members(&self, a: &str, b: &str) -> Result<Vec<String>, ProjectionError> {
        let layout = &self.target.inner.layout;
        let pa = layout.partition_or_first(a);
        if b == Keys::CELEBS || layout.partition(b) == Some(pa) {
            let b_key = self.target.key(self.generation, pa, b);
            return redis::cmd("ZINTER")
                .arg(2)
                .arg(self.at(a))
                .arg(b_key)
                .query_async(&mut self.target.conn().await?)
                .await
                .map_err(unavailable);
        }
        let (left, right) = (self.zrange_all(a).await?, self.zrange_all(b).await?);
        let right: std::collections::HashSet<String> = right.into_iter().map(|(m, _)| m).collect();
        Ok(left.into_iter().map(|(m, _)| m).filter(|m| right.contains(m)).collect())
    }

    async fn zcard_many(&self, keys: &[String]) -> Result<Vec<usize>, ProjectionError> {
        self.per_partition(keys, |pipe, k| {
            pipe.cmd("ZCARD").arg(k);
        })
        .await
    }

    async fn zrevrange_many(
        &self,
        keys: &[String],
        below: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Vec<(String, i64)>>, ProjectionError> {
        let max = below_arg(below);
        let raw: Vec<Vec<(String, f64)>> = self
            .per_partition(keys, |pipe, k| {
                pipe.cmd("ZREVRANGEBYSCORE").arg(k).arg(&max).arg("-inf");
                pipe.arg("WITHSCORES").arg("LIMIT").arg(0).arg(limit);
            })
            .await?;
        Ok(raw.into_iter().map(scored).collect())
    }

    async fn hget_many(&self, keys: &[String], field: &str) -> Result<Vec<Option<String>>, ProjectionError> {
        self.per_partition(keys, |pipe, k| {
            pipe.cmd("HGET").arg(k).arg(field);
        })
        .await
    }

    /// The home and the followed celebrities from the owner's partition in one pipeline, the celebrities'
    /// timelines (if any) in one pipeline per partition, then the posts likewise.
    async fn home_page(
        &self,
        user: &domain::UserId,
        below: Option<i64>,
        limit: usize,
    ) -> Result<HomePage, ProjectionError> {
        let (home, following) = (Keys::home(user), Keys::following(user));
        let own = self.target.inner.layout.partition_or_first(&home);
        let mut pipe = redis::pipe();
        pipe.cmd("ZREVRANGEBYSCORE").arg(self.at(&home)).arg(below_arg(below)).arg("-inf");
        pipe.arg("WITHSCORES").arg("LIMIT").arg(0).arg(limit);
        pipe.cmd("ZINTER").arg(2).arg(self.at(&following)).arg(self.target.key(
            self.generation,
            own,
            Keys::CELEBS,
        ));
        let (ids, celebrities): (Vec<(String, f64)>, Vec<String>) =
            pipe.query_async(&mut self.target.conn().await?).await.map_err(unavailable)?;
        crate::target::merge_and_hydrate(self, scored(ids), celebrities, below, limit).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use eventstore::GlobalCursor;

    fn at(events: u64) -> TargetState {
        TargetState { cursor: GlobalCursor { tx_id: 1, position: events as i64 }, events, last_event_ms: 0 }
    }

    fn likes(posts: &[String]) -> Vec<Op> {
        posts.iter().map(|p| Op::HIncr { key: Keys::post_of(p), field: "like_count".into(), by: 1 }).collect()
    }

    /// A batch torn after some partitions: another batch is refused, the same batch again completes it,
    /// and no partition counts it twice.
    #[tokio::test]
    async fn a_torn_batch_is_completed_once_and_nothing_else_gets_in() {
        let seeds = testkit::env_urls("SOCIALNET_TEST_REDIS_CLUSTER_URLS");
        let target =
            RedisClusterTarget::connect_for_writing(&format!("u{}", uuid::Uuid::new_v4().simple()), &seeds)
                .unwrap();
        let posts: Vec<String> = (0..40).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        let ops = likes(&posts);
        target.apply(1, &ops, None, at(1)).await.unwrap();
        // Batch 1 → 2 torn: intent recorded, half of its partitions applied, then the writer died.
        let (from, to) = (state_string(Some(at(1))), state_string(Some(at(2))));
        target.run_global(&target.inner.intent, 1, &from, &to).await.unwrap();
        let parts = target.split(&ops);
        assert!(parts.len() > 10, "40 posts fall in many partitions");
        for (p, part) in parts.iter().take(parts.len() / 2) {
            target.apply_partition(1, *p, part, (1, 2)).await.unwrap();
        }
        assert_eq!(target.state(1).await.unwrap(), Some(at(1)));
        assert_eq!(target.pending(1).await.unwrap(), Some(at(2)));
        let other = target.apply(1, &ops, Some(at(1)), at(3)).await.unwrap_err();
        assert!(matches!(other, ProjectionError::Conflict(_)), "{other:?}");
        target.apply(1, &ops, Some(at(1)), at(2)).await.unwrap();
        assert_eq!((target.state(1).await.unwrap(), target.pending(1).await.unwrap()), (Some(at(2)), None));
        let keys: Vec<String> = posts.iter().map(|p| Keys::post_of(p)).collect();
        let counts = target.view(1).hget_many(&keys, "like_count").await.unwrap();
        assert!(counts.iter().all(|c| c.as_deref() == Some("2")), "{counts:?}");
        // A stale writer replaying batch 0 → 1 is refused before it touches any partition.
        let stale = target.apply(1, &ops, None, at(1)).await.unwrap_err();
        assert!(matches!(stale, ProjectionError::Conflict(_)), "{stale:?}");
        let counts = target.view(1).hget_many(&keys, "like_count").await.unwrap();
        assert!(counts.iter().all(|c| c.as_deref() == Some("2")), "{counts:?}");
        target.drop_generation(1).await.unwrap();
    }
}
