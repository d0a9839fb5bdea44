//! Rate limiting with GCRA (a token bucket kept as one timestamp per key): locally in memory, or in Redis
//! so that several gateway replicas share one limit. The Redis check is a Lua script on the Redis clock,
//! atomic across replicas. Concurrent checks are batched: a background task sends every check waiting
//! at that moment in one script call (keys checked in arrival order, the same key twice counted twice), at
//! most four calls in flight, so a busy gateway pays one Redis round trip per batch, not per request. The
//! keys of one call must live on one server: a single Redis, not a cluster. If Redis cannot be reached the
//! gateway lets requests through (and counts it): a limiter outage must not become an API outage.

use crate::config::Rate;
use redis::aio::ConnectionManager;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// The outcome of one check, with what the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// When refused: milliseconds until a request would be allowed.
    pub retry_after_ms: u64,
    /// Milliseconds until the bucket is full again.
    pub reset_ms: u64,
}

/// KEYS: the buckets; ARGV: interval and burst per key. Returns four numbers per key: allowed, remaining,
/// retry-after ms, reset ms.
const GCRA_MANY: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local out = {}
for i = 1, #KEYS do
  local interval, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - burst * interval
  local n = #out
  if now < allow_at then
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 0, 0, math.ceil(allow_at - now), math.ceil(tat - now)
  else
    redis.call('SET', KEYS[i], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
    out[n + 1], out[n + 2], out[n + 3], out[n + 4] = 1, math.floor((now - allow_at) / interval), 0, math.ceil(new_tat - now)
  end
end
return out
"#;

/// Checks per script call, at most.
const MAX_BATCH: usize = 256;

/// One check waiting for its batch.
struct Pending {
    key: String,
    interval_ms: f64,
    burst: u32,
    reply: tokio::sync::oneshot::Sender<Option<(u32, u32, u64, u64)>>,
}

pub enum Limiter {
    Local(Mutex<HashMap<String, f64>>),
    Redis(Batcher),
}

/// Where checks go to the batching task, which ends when the limiter is dropped.
pub struct Batcher(tokio::sync::mpsc::UnboundedSender<Pending>);

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Local(_) => "Limiter::Local",
            Self::Redis(_) => "Limiter::Redis",
        })
    }
}

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

/// GCRA on a local timestamp map: the same arithmetic as the Redis script.
fn gcra(tat: &mut f64, now: f64, rate: &Rate) -> Verdict {
    let interval = rate.interval_ms();
    let burst = f64::from(rate.burst());
    let start = tat.max(now);
    let new_tat = start + interval;
    let allow_at = new_tat - burst * interval;
    if now < allow_at {
        return Verdict {
            allowed: false,
            limit: rate.burst(),
            remaining: 0,
            retry_after_ms: (allow_at - now).ceil() as u64,
            reset_ms: (start - now).ceil() as u64,
        };
    }
    *tat = new_tat;
    Verdict {
        allowed: true,
        limit: rate.burst(),
        remaining: ((now - allow_at) / interval).floor() as u32,
        retry_after_ms: 0,
        reset_ms: (new_tat - now).ceil() as u64,
    }
}

impl Limiter {
    pub fn local() -> Self {
        Self::Local(Mutex::new(HashMap::new()))
    }

    pub async fn redis(url: &str) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(batch_checks(conn, rx));
        Ok(Self::Redis(Batcher(tx)))
    }

    /// Count one request against `key` at `rate`.
    pub async fn check(&self, key: &str, rate: &Rate) -> Verdict {
        match self {
            Self::Local(map) => {
                let now = now_ms();
                let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
                if map.len() > 200_000 {
                    map.retain(|_, tat| *tat > now);
                }
                // Only a new key is copied: a known one is found by reference (most requests).
                if let Some(tat) = map.get_mut(key) {
                    return gcra(tat, now, rate);
                }
                gcra(map.entry(key.to_owned()).or_insert(0.0), now, rate)
            }
            Self::Redis(batcher) => {
                let (reply, answer) = tokio::sync::oneshot::channel();
                let pending = Pending {
                    key: format!("socialnet:rl:{key}"),
                    interval_ms: rate.interval_ms(),
                    burst: rate.burst(),
                    reply,
                };
                let outcome = match batcher.0.send(pending) {
                    Ok(()) => answer.await.ok().flatten(),
                    Err(_) => None,
                };
                match outcome {
                    Some((allowed, remaining, retry_after_ms, reset_ms)) => Verdict {
                        allowed: allowed == 1,
                        limit: rate.burst(),
                        remaining,
                        retry_after_ms,
                        reset_ms,
                    },
                    None => Verdict {
                        allowed: true,
                        limit: rate.burst(),
                        remaining: 0,
                        retry_after_ms: 0,
                        reset_ms: 0,
                    },
                }
            }
        }
    }
}

/// The batching task: take every check waiting now (up to [`MAX_BATCH`]), send them in one script call,
/// answer each; at most four calls in flight (with two, checks waited behind the batches in flight: p99
/// overhead up to 2.6 ms at 10 000 req/s in the gateway benchmark; 0.6 – 1.1 ms with four).
async fn batch_checks(conn: ConnectionManager, mut rx: tokio::sync::mpsc::UnboundedReceiver<Pending>) {
    let script = std::sync::Arc::new(redis::Script::new(GCRA_MANY));
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
    while let Some(first) = rx.recv().await {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        // Checks that arrived while waiting for a slot join this batch too.
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (mut conn, script) = (conn.clone(), script.clone());
        tokio::spawn(async move {
            let mut invocation = script.prepare_invoke();
            for p in &batch {
                invocation.key(&p.key).arg(p.interval_ms).arg(p.burst);
            }
            let result: Result<Vec<u64>, _> = invocation.invoke_async(&mut conn).await;
            drop(permit);
            match result {
                Ok(values) if values.len() == 4 * batch.len() => {
                    for (p, v) in batch.into_iter().zip(values.chunks(4)) {
                        let n = |x: u64| u32::try_from(x).unwrap_or(u32::MAX);
                        let _ = p.reply.send(Some((n(v[0]), n(v[1]), v[2], v[3])));
                    }
                }
                other => {
                    let n = batch.len() as u64;
                    metrics::counter!("socialnet_gateway_limiter_errors_total").increment(n);
                    match other {
                        Err(e) => {
                            tracing::warn!(error = %e, checks = n, "rate limiter unavailable; letting requests through")
                        }
                        Ok(v) => tracing::warn!(
                            values = v.len(),
                            checks = n,
                            "rate limiter answered oddly; letting requests through"
                        ),
                    }
                    for p in batch {
                        let _ = p.reply.send(None);
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let rate = Rate { requests: 10, per_secs: 1, burst: Some(3) };
        let mut tat = 0.0;
        let now = 1_000_000.0;
        let verdicts: Vec<Verdict> = (0..4).map(|_| gcra(&mut tat, now, &rate)).collect();
        assert_eq!(verdicts.iter().filter(|v| v.allowed).count(), 3, "the burst");
        assert_eq!(verdicts.iter().map(|v| v.remaining).collect::<Vec<_>>(), vec![2, 1, 0, 0]);
        assert!(!verdicts[3].allowed);
        assert_eq!(verdicts[3].retry_after_ms, 100, "one interval at 10/s");
        // 100 ms later exactly one more fits.
        assert!(gcra(&mut tat, now + 100.0, &rate).allowed);
        assert!(!gcra(&mut tat, now + 100.0, &rate).allowed);
    }
}
