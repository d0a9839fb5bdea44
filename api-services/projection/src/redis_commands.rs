//! Redis commands shared by the standalone and the cluster targets: an operation or an image value as
//! plain commands in a pipeline, and a key's value read back by its type.

use crate::dump::{ImageValue, Value};
use crate::ops::Op;
use crate::redis_target::unavailable;
use crate::target::ProjectionError;
use std::collections::{BTreeMap, BTreeSet};

/// Members per command when loading an image.
const LOAD_CHUNK: usize = 1000;

/// `op` as one command on `key` (its absolute name).
pub(crate) fn push_op(pipe: &mut redis::Pipeline, key: &str, op: &Op) {
    match op {
        Op::HSet { fields, .. } => {
            let c = pipe.cmd("HSET").arg(key);
            for (f, v) in fields {
                c.arg(f).arg(v);
            }
            c.ignore();
        }
        Op::HDel { fields, .. } => {
            pipe.cmd("HDEL").arg(key).arg(fields).ignore();
        }
        Op::HIncr { field, by, .. } => {
            pipe.cmd("HINCRBY").arg(key).arg(field).arg(*by).ignore();
        }
        Op::Del { .. } => {
            pipe.cmd("DEL").arg(key).ignore();
        }
        Op::ZAdd { score, member, .. } => {
            pipe.cmd("ZADD").arg(key).arg(*score).arg(member).ignore();
        }
        Op::ZRem { members, .. } => {
            pipe.cmd("ZREM").arg(key).arg(members).ignore();
        }
        Op::ZKeepTop { keep, .. } => {
            pipe.cmd("ZREMRANGEBYRANK").arg(key).arg(0).arg(-1 - i64::try_from(*keep).unwrap_or(0)).ignore();
        }
        Op::SAdd { member, .. } => {
            pipe.cmd("SADD").arg(key).arg(member).ignore();
        }
    }
}

/// Replace `key` (absolute) with `value`. Many members per command: one ZADD of 800 members costs Redis
/// far less than 800 ZADDs.
pub(crate) fn push_load(pipe: &mut redis::Pipeline, key: &str, value: &ImageValue) {
    pipe.cmd("DEL").arg(key).ignore();
    match value {
        ImageValue::Hash(h) => {
            for chunk in h.chunks(LOAD_CHUNK) {
                let c = pipe.cmd("HSET").arg(key);
                for (f, v) in chunk {
                    c.arg(f).arg(v);
                }
                c.ignore();
            }
        }
        ImageValue::ZSet(z) => {
            for chunk in z.chunks(LOAD_CHUNK) {
                let c = pipe.cmd("ZADD").arg(key);
                for (m, s) in chunk {
                    c.arg(*s).arg(m);
                }
                c.ignore();
            }
        }
        ImageValue::Set(s) => {
            for chunk in s.chunks(LOAD_CHUNK) {
                pipe.cmd("SADD").arg(key).arg(chunk).ignore();
            }
        }
    }
}

/// The value of `key`, whose `TYPE` is `kind`; `None` when it is gone. A string or list has no place in
/// the read model: it is reported as a hash with one marker field, so that a comparison shows it.
pub(crate) async fn read_value(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
    kind: &str,
) -> Result<Option<Value>, ProjectionError> {
    Ok(Some(match kind {
        "hash" => {
            let h: BTreeMap<String, String> =
                redis::cmd("HGETALL").arg(key).query_async(conn).await.map_err(unavailable)?;
            Value::Hash(h)
        }
        "zset" => {
            let z: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(conn)
                .await
                .map_err(unavailable)?;
            Value::ZSet(z.into_iter().map(|(m, s)| (m, s as i64)).collect())
        }
        "set" => {
            let s: BTreeSet<String> =
                redis::cmd("SMEMBERS").arg(key).query_async(conn).await.map_err(unavailable)?;
            Value::Set(s)
        }
        "none" => return Ok(None),
        other => Value::Hash(BTreeMap::from([("~unexpected_type".to_owned(), other.to_owned())])),
    }))
}

/// Allocate a never-used generation: one past both the current one and every one handed out before.
/// KEYS: the current-generation key, the generation counter (same slot on a cluster).
pub(crate) const ALLOCATE: &str = "local c = tonumber(redis.call('GET', KEYS[1]) or '0') \
    local n = tonumber(redis.call('GET', KEYS[2]) or '0') \
    if n < c then n = c end \
    n = n + 1 \
    redis.call('SET', KEYS[2], n) \
    return n";

/// The checkpoint (or pending batch) stored at `key`.
pub(crate) async fn read_state(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
) -> Result<Option<crate::target::TargetState>, ProjectionError> {
    let raw: Option<String> = redis::cmd("GET").arg(key).query_async(conn).await.map_err(unavailable)?;
    raw.map(|r| serde_json::from_str(&r).map_err(|e| ProjectionError::Corrupt(format!("checkpoint: {e}"))))
        .transpose()
}

/// Record a rebuild's progress at `key`, kept a week: long enough to be read after the run, gone when
/// nobody cares any more.
pub(crate) async fn write_rebuild(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
    progress: &contract::admin::RebuildProgress,
) -> Result<(), ProjectionError> {
    let json = serde_json::to_string(progress)
        .map_err(|e| ProjectionError::Corrupt(format!("encoding rebuild progress: {e}")))?;
    redis::cmd("SET")
        .arg(key)
        .arg(json)
        .arg("EX")
        .arg(7 * 86_400)
        .query_async(conn)
        .await
        .map_err(unavailable)
}

/// The rebuild progress recorded at `key`, if any.
pub(crate) async fn read_rebuild(
    conn: &mut impl redis::aio::ConnectionLike,
    key: &str,
) -> Result<Option<contract::admin::RebuildProgress>, ProjectionError> {
    let raw: Option<String> = redis::cmd("GET").arg(key).query_async(conn).await.map_err(unavailable)?;
    raw.map(|r| {
        serde_json::from_str(&r).map_err(|e| ProjectionError::Corrupt(format!("rebuild progress: {e}")))
    })
    .transpose()
}
