//! The Redis target. Keys live under `{target}:g{N}:` per generation, with `{target}:current` naming the
//! generation reads use. A batch is applied by one Lua script: it compares the generation's checkpoint
//! with the one the batch was planned from, runs every operation, announces the changed keys on
//! `{target}:changes` (see [`crate::invalidation`]) and writes the new checkpoint — one round trip, all or
//! nothing, and a replayed batch is refused instead of counted twice.

use crate::dump::{Dump, ImageValue};
use crate::invalidation::Invalidation;
use crate::keys::Keys;
use crate::ops::Op;
use crate::redis_commands::{
    ALLOCATE, push_load, push_op, read_rebuild, read_state, read_value, write_rebuild,
};
use crate::target::{HomeItem, HomePage, KvRead, ProjectionError, ProjectionTarget, TargetState};
use async_trait::async_trait;
use contract::admin::RebuildProgress;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// The compare-and-set of a standalone target's checkpoint, before [`OPS`].
const APPLY_HEAD: &str = r#"
local prefix = ARGV[1]
local current = redis.call('GET', ARGV[2])
if (current or '') ~= ARGV[3] then
  return redis.error_reply('CONFLICT checkpoint is ' .. tostring(current))
end
"#;

/// Runs the encoded operations (see [`encode`]) found from `ARGV[7]` on, under key prefix `prefix`. Shared
/// by the standalone and the cluster scripts.
pub(crate) const OPS: &str = r#"
local i = 7
local n = #ARGV
while i <= n do
  local op = ARGV[i]
  local key = prefix .. ARGV[i + 1]
  if op == 'H' then
    local count = tonumber(ARGV[i + 2])
    local args = {}
    for j = 1, 2 * count do args[j] = ARGV[i + 2 + j] end
    redis.call('HSET', key, unpack(args))
    i = i + 3 + 2 * count
  elseif op == 'D' then
    local count = tonumber(ARGV[i + 2])
    for j = 1, count do redis.call('HDEL', key, ARGV[i + 2 + j]) end
    i = i + 3 + count
  elseif op == 'I' then
    redis.call('HINCRBY', key, ARGV[i + 2], ARGV[i + 3])
    i = i + 4
  elseif op == 'X' then
    redis.call('DEL', key)
    i = i + 2
  elseif op == 'Z' then
    redis.call('ZADD', key, ARGV[i + 2], ARGV[i + 3])
    i = i + 4
  elseif op == 'R' then
    local count = tonumber(ARGV[i + 2])
    for j = 1, count do redis.call('ZREM', key, ARGV[i + 2 + j]) end
    i = i + 3 + count
  elseif op == 'T' then
    redis.call('ZREMRANGEBYRANK', key, 0, -1 - tonumber(ARGV[i + 2]))
    i = i + 3
  elseif op == 'S' then
    redis.call('SADD', key, ARGV[i + 2])
    i = i + 3
  else
    return redis.error_reply('BADOP ' .. tostring(op))
  end
end
"#;

/// Announce the change and move the checkpoint, after [`OPS`].
const APPLY_TAIL: &str = r#"
if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[5], ARGV[6]) end
redis.call('SET', ARGV[2], ARGV[4])
return 1
"#;

#[derive(Clone)]
pub struct RedisTarget {
    name: String,
    /// For change-notice subscriptions, which need a connection of their own.
    client: redis::Client,
    conn: ConnectionManager,
    apply: Arc<redis::Script>,
    home_page: Arc<redis::Script>,
    posts: Arc<PostCache>,
}

/// Post hashes by (generation prefix + post id), each with the version it was read at. A hit is used only
/// when Redis reports the same version in the same request, so nothing stale is ever served; the cache
/// only saves reading and shipping the hash. Bounded: emptied when it grows past its limit.
#[derive(Debug, Default)]
struct PostCache {
    entries: std::sync::Mutex<HashMap<String, Versioned>>,
}

/// A post hash and the version (`v`) it had when read.
type Versioned = (String, HashMap<String, String>);

const POST_CACHE_LIMIT: usize = 100_000;

impl PostCache {
    fn get(&self, key: &str, version: &str) -> Option<HashMap<String, String>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.get(key).filter(|(v, _)| v == version).map(|(_, h)| h.clone())
    }

    fn put(&self, key: String, post: &HashMap<String, String>) {
        let Some(version) = post.get(crate::planner::POST_VERSION) else { return };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= POST_CACHE_LIMIT {
            entries.clear();
        }
        entries.insert(key, (version.clone(), post.clone()));
    }
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget").field("name", &self.name).finish()
    }
}

pub(crate) fn unavailable(e: redis::RedisError) -> ProjectionError {
    ProjectionError::Unavailable(e.to_string())
}

impl RedisTarget {
    /// Connect lazily with short timeouts: a dead Redis must fail a read fast so the read API fails over.
    pub fn connect(name: &str, url: &str) -> Result<Self, ProjectionError> {
        Self::connect_with_timeout(name, url, Duration::from_secs(2))
    }

    /// For writers (projector, rebuild): a large batch script may run for seconds on a busy server.
    pub fn connect_for_writing(name: &str, url: &str) -> Result<Self, ProjectionError> {
        Self::connect_with_timeout(name, url, Duration::from_secs(60))
    }

    fn connect_with_timeout(
        name: &str,
        url: &str,
        response_timeout: Duration,
    ) -> Result<Self, ProjectionError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)?;
        Ok(Self {
            name: name.to_owned(),
            client,
            conn,
            apply: Arc::new(redis::Script::new(&format!("{APPLY_HEAD}{OPS}{APPLY_TAIL}"))),
            home_page: Arc::new(redis::Script::new(HOME_PAGE)),
            posts: Arc::default(),
        })
    }

    fn changes_channel(&self) -> String {
        format!("{}:changes", self.name)
    }

    fn current_key(&self) -> String {
        format!("{}:current", self.name)
    }

    /// Outside every generation: a rebuild writes it while it builds a new one.
    fn rebuild_key(&self) -> String {
        format!("{}:rebuild", self.name)
    }

    fn prefix(&self, generation: u64) -> String {
        format!("{}:g{generation}:", self.name)
    }

    fn checkpoint_key(&self, generation: u64) -> String {
        format!("{}:g{generation}:~checkpoint", self.name)
    }

    /// Every key of one generation (SCAN, not KEYS, so a big target is not blocked).
    async fn generation_keys(&self, generation: u64) -> Result<Vec<String>, ProjectionError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", self.prefix(generation));
        let mut cursor: u64 = 0;
        let mut keys = Vec::new();
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

pub(crate) fn encode(ops: &[Op], args: &mut Vec<String>) {
    for op in ops {
        match op {
            Op::HSet { key, fields } => {
                args.extend(["H".into(), key.clone(), fields.len().to_string()]);
                for (f, v) in fields {
                    args.push(f.clone());
                    args.push(v.clone());
                }
            }
            Op::HDel { key, fields } => {
                args.extend(["D".into(), key.clone(), fields.len().to_string()]);
                args.extend(fields.iter().cloned());
            }
            Op::HIncr { key, field, by } => {
                args.extend(["I".into(), key.clone(), field.clone(), by.to_string()])
            }
            Op::Del { key } => args.extend(["X".into(), key.clone()]),
            Op::ZAdd { key, score, member } => {
                args.extend(["Z".into(), key.clone(), score.to_string(), member.clone()])
            }
            Op::ZRem { key, members } => {
                args.extend(["R".into(), key.clone(), members.len().to_string()]);
                args.extend(members.iter().cloned());
            }
            Op::ZKeepTop { key, keep } => args.extend(["T".into(), key.clone(), keep.to_string()]),
            Op::SAdd { key, member } => args.extend(["S".into(), key.clone(), member.clone()]),
        }
    }
}

pub(crate) fn state_string(state: Option<TargetState>) -> String {
    state.map(|s| serde_json::to_string(&s).unwrap_or_default()).unwrap_or_default()
}

/// A home page's ids in one round trip: the home range, the followed celebrities, their recent posts
/// (merged, newest first) and each post's version (`v`, false when the post is gone), all inside Redis;
/// returned with the celebrities merged in.
/// The posts themselves come from the [`PostCache`] when their version matches, else from `HGETALL`. Key names are built in the script from the
/// user id, so this needs a standalone Redis (not Redis Cluster), as every socialnet target is.
/// ARGV: generation prefix, user id, max score (`+inf` or `(N`), count.
const HOME_PAGE: &str = r#"
local p, user, max, n = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
-- Each list is newest first: merge them (k-way, n steps) instead of sorting their union.
local lists = {redis.call('ZREVRANGEBYSCORE', p .. 'home:' .. user, max, '-inf', 'WITHSCORES', 'LIMIT', 0, n)}
local celebs = redis.call('ZINTER', 2, p .. 'following:' .. user, p .. 'celebs')
for _, c in ipairs(celebs) do
  lists[#lists + 1] = redis.call('ZREVRANGEBYSCORE', p .. 'utl:' .. c, max, '-inf', 'WITHSCORES', 'LIMIT', 0, n)
end
local at, seen, out = {}, {}, {}
for k = 1, #lists do at[k] = 1 end
while #out < n do
  local best, best_score = nil, nil
  for k = 1, #lists do
    local l, i = lists[k], at[k]
    while l[i] ~= nil and seen[l[i]] do i = i + 2 end
    at[k] = i
    if l[i] ~= nil then
      local s = tonumber(l[i + 1])
      if best == nil or s > best_score then best, best_score = k, s end
    end
  end
  if best == nil then break end
  local l, i = lists[best], at[best]
  seen[l[i]] = true
  at[best] = i + 2
  out[#out + 1] = {l[i], l[i + 1], redis.call('HGET', p .. 'post:' .. l[i], 'v')}
end
return {out, celebs}
"#;

/// Reads on one generation.
struct RedisView {
    conn: ConnectionManager,
    prefix: String,
    home_page: Arc<redis::Script>,
    posts: Arc<PostCache>,
}

impl RedisView {
    fn k(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

pub(crate) fn scored(raw: Vec<(String, f64)>) -> Vec<(String, i64)> {
    raw.into_iter().map(|(m, s)| (m, s as i64)).collect()
}

#[async_trait]
impl KvRead for RedisView {
    async fn hgetall_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<HashMap<String, String>>>, ProjectionError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("HGETALL").arg(self.k(k));
        }
        let maps: Vec<HashMap<String, String>> =
            pipe.query_async(&mut self.conn.clone()).await.map_err(unavailable)?;
        Ok(maps.into_iter().map(|m| (!m.is_empty()).then_some(m)).collect())
    }

    async fn zrevrange_by_score(
        &self,
        key: &str,
        below: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, ProjectionError> {
        let max = below.map(|b| format!("({b}")).unwrap_or_else(|| "+inf".into());
        let raw: Vec<(String, f64)> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(self.k(key))
            .arg(max)
            .arg("-inf")
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(scored(raw))
    }

    async fn zrange_all(&self, key: &str) -> Result<Vec<(String, i64)>, ProjectionError> {
        let raw: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(self.k(key))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(scored(raw))
    }

    async fn zinter_members(&self, a: &str, b: &str) -> Result<Vec<String>, ProjectionError> {
        redis::cmd("ZINTER")
            .arg(2)
            .arg(self.k(a))
            .arg(self.k(b))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn zcard_many(&self, keys: &[String]) -> Result<Vec<usize>, ProjectionError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("ZCARD").arg(self.k(k));
        }
        pipe.query_async(&mut self.conn.clone()).await.map_err(unavailable)
    }

    async fn zrevrange_many(
        &self,
        keys: &[String],
        below: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Vec<(String, i64)>>, ProjectionError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let max = below.map(|b| format!("({b}")).unwrap_or_else(|| "+inf".into());
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("ZREVRANGEBYSCORE")
                .arg(self.k(k))
                .arg(&max)
                .arg("-inf")
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(limit);
        }
        let raw: Vec<Vec<(String, f64)>> =
            pipe.query_async(&mut self.conn.clone()).await.map_err(unavailable)?;
        Ok(raw.into_iter().map(scored).collect())
    }

    async fn home_page(
        &self,
        user: &domain::UserId,
        below: Option<i64>,
        limit: usize,
    ) -> Result<HomePage, ProjectionError> {
        let max = below.map(|b| format!("({b}")).unwrap_or_else(|| "+inf".into());
        let (raw, celebrities): (Vec<(String, String, Option<String>)>, Vec<String>) = self
            .home_page
            .prepare_invoke()
            .arg(&self.prefix)
            .arg(user.as_str())
            .arg(max)
            .arg(limit)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let cache_key = |id: &str| format!("{}{id}", self.prefix);
        let mut items = Vec::with_capacity(raw.len());
        let mut missing = Vec::new();
        for (i, (id, score, version)) in raw.into_iter().enumerate() {
            let score = score
                .parse::<f64>()
                .map_err(|_| ProjectionError::Corrupt(format!("home score {score:?} of post {id}")))?;
            let post = version.as_deref().and_then(|v| self.posts.get(&cache_key(&id), v));
            // Fetched when not cached at this version: also without a version (a deleted post reads as
            // nothing, a hash from before versions were kept is used uncached).
            if post.is_none() {
                missing.push((i, Keys::post_of(&id)));
            }
            items.push(HomeItem { id, score: score as i64, post });
        }
        if !missing.is_empty() {
            let keys: Vec<String> = missing.iter().map(|(_, k)| k.clone()).collect();
            for ((i, _), post) in missing.into_iter().zip(self.hgetall_many(&keys).await?) {
                if let Some(post) = &post {
                    self.posts.put(cache_key(&items[i].id), post);
                }
                items[i].post = post;
            }
        }
        Ok(HomePage { items, celebrities })
    }

    async fn hget_many(&self, keys: &[String], field: &str) -> Result<Vec<Option<String>>, ProjectionError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("HGET").arg(self.k(k)).arg(field);
        }
        pipe.query_async(&mut self.conn.clone()).await.map_err(unavailable)
    }
}

#[async_trait]
impl ProjectionTarget for RedisTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn view(&self, generation: u64) -> Arc<dyn KvRead> {
        Arc::new(RedisView {
            conn: self.conn.clone(),
            prefix: self.prefix(generation),
            home_page: self.home_page.clone(),
            posts: self.posts.clone(),
        })
    }

    async fn current_generation(&self) -> Result<Option<u64>, ProjectionError> {
        let v: Option<u64> = redis::cmd("GET")
            .arg(self.current_key())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(v)
    }

    async fn allocate_generation(&self) -> Result<u64, ProjectionError> {
        redis::Script::new(ALLOCATE)
            .key(self.current_key())
            .key(format!("{}:generations", self.name))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }

    async fn state(&self, generation: u64) -> Result<Option<TargetState>, ProjectionError> {
        read_state(&mut self.conn.clone(), &self.checkpoint_key(generation)).await
    }

    async fn apply(
        &self,
        generation: u64,
        ops: &[Op],
        expected: Option<TargetState>,
        next: TargetState,
    ) -> Result<(), ProjectionError> {
        let mut args = Vec::with_capacity(ops.len() * 4);
        encode(ops, &mut args);
        let mut invocation = self.apply.prepare_invoke();
        invocation
            .arg(self.prefix(generation))
            .arg(self.checkpoint_key(generation))
            .arg(state_string(expected))
            .arg(state_string(Some(next)))
            .arg(self.changes_channel())
            .arg(crate::invalidation::encode(generation, ops));
        for a in &args {
            invocation.arg(a);
        }
        let result: Result<i64, redis::RedisError> = invocation.invoke_async(&mut self.conn.clone()).await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.to_string().contains("CONFLICT") => Err(ProjectionError::Conflict(e.to_string())),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn apply_unchecked(
        &self,
        generation: u64,
        ops: &[Op],
        next: TargetState,
    ) -> Result<(), ProjectionError> {
        let prefix = self.prefix(generation);
        let mut pipe = redis::pipe();
        for op in ops {
            push_op(&mut pipe, &format!("{prefix}{}", op.key()), op);
        }
        pipe.cmd("SET").arg(self.checkpoint_key(generation)).arg(state_string(Some(next))).ignore();
        let _: () = pipe.query_async(&mut self.conn.clone()).await.map_err(unavailable)?;
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
        let prefix = self.prefix(generation);
        let mut pipe = redis::pipe();
        for (key, value) in image {
            push_load(&mut pipe, &format!("{prefix}{key}"), value);
        }
        let _: () = pipe.query_async(&mut self.conn.clone()).await.map_err(unavailable)?;
        Ok(())
    }

    async fn set_current(&self, generation: u64) -> Result<(), ProjectionError> {
        let _: () = redis::cmd("SET")
            .arg(self.current_key())
            .arg(generation)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn drop_generation(&self, generation: u64) -> Result<u64, ProjectionError> {
        let keys = self.generation_keys(generation).await?;
        let mut conn = self.conn.clone();
        for chunk in keys.chunks(500) {
            let _: i64 = redis::cmd("UNLINK").arg(chunk).query_async(&mut conn).await.map_err(unavailable)?;
        }
        Ok(keys.len() as u64)
    }

    async fn dump(&self, generation: u64) -> Result<Dump, ProjectionError> {
        let prefix = self.prefix(generation);
        let checkpoint = self.checkpoint_key(generation);
        let keys: Vec<String> =
            self.generation_keys(generation).await?.into_iter().filter(|k| *k != checkpoint).collect();
        let mut conn = self.conn.clone();
        let mut out = Dump::new();
        for chunk in keys.chunks(200) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("TYPE").arg(k);
            }
            let types: Vec<String> = pipe.query_async(&mut conn).await.map_err(unavailable)?;
            for (k, t) in chunk.iter().zip(types) {
                let rel = k.strip_prefix(&prefix).unwrap_or(k).to_owned();
                let Some(value) = read_value(&mut conn, k, &t).await? else { continue };
                out.insert(rel, value);
            }
        }
        Ok(out)
    }

    async fn record_rebuild(&self, progress: &RebuildProgress) -> Result<(), ProjectionError> {
        write_rebuild(&mut self.conn.clone(), &self.rebuild_key(), progress).await
    }

    async fn last_rebuild(&self) -> Result<Option<RebuildProgress>, ProjectionError> {
        read_rebuild(&mut self.conn.clone(), &self.rebuild_key()).await
    }

    async fn invalidations(
        &self,
    ) -> Result<Option<futures::stream::BoxStream<'static, Invalidation>>, ProjectionError> {
        use futures::StreamExt;
        let connect = async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(self.changes_channel()).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::time::timeout(Duration::from_secs(2), connect)
            .await
            .map_err(|_| ProjectionError::Unavailable("subscribing to change notices timed out".into()))?
            .map_err(unavailable)?;
        let notices = pubsub
            .into_on_message()
            .filter_map(|msg| std::future::ready(crate::invalidation::decode(msg.get_payload_bytes())));
        Ok(Some(notices.boxed()))
    }

    async fn ping(&self) -> Result<(), ProjectionError> {
        let _: String = redis::cmd("PING").query_async(&mut self.conn.clone()).await.map_err(unavailable)?;
        Ok(())
    }
}
