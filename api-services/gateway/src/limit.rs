//! Rate limiting with GCRA (a token bucket kept as one timestamp per key): locally in memory, or in Redis
//! so that several gateway replicas share one limit. The Redis check is one Lua script on the Redis clock,
//! atomic across replicas. If Redis cannot be reached the gateway lets requests through (and counts it):
//! a limiter outage must not become an API outage.

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

const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
return {1, math.floor((now - allow_at) / interval), 0, math.ceil(new_tat - now)}
"#;

pub enum Limiter {
    Local(Mutex<HashMap<String, f64>>),
    Redis { conn: ConnectionManager, script: redis::Script },
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Local(_) => "Limiter::Local",
            Self::Redis { .. } => "Limiter::Redis",
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
        Ok(Self::Redis { conn, script: redis::Script::new(GCRA) })
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
                gcra(map.entry(key.to_owned()).or_insert(0.0), now, rate)
            }
            Self::Redis { conn, script } => {
                let r: Result<(u32, u32, u64, u64), _> = script
                    .key(format!("socialnet:rl:{key}"))
                    .arg(rate.interval_ms())
                    .arg(rate.burst())
                    .invoke_async(&mut conn.clone())
                    .await;
                match r {
                    Ok((allowed, remaining, retry_after_ms, reset_ms)) => Verdict {
                        allowed: allowed == 1,
                        limit: rate.burst(),
                        remaining,
                        retry_after_ms,
                        reset_ms,
                    },
                    Err(e) => {
                        metrics::counter!("socialnet_gateway_limiter_errors_total").increment(1);
                        tracing::warn!(error = %e, "rate limiter unavailable; letting the request through");
                        Verdict {
                            allowed: true,
                            limit: rate.burst(),
                            remaining: 0,
                            retry_after_ms: 0,
                            reset_ms: 0,
                        }
                    }
                }
            }
        }
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
