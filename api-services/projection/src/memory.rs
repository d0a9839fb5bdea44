//! The in-memory target: dev mode's read model and the replay that `verify` compares against. It applies
//! the same [`Op`]s with Redis's semantics (an emptied hash, set or sorted set disappears).

use crate::dump::{Dump, Value};
use crate::ops::Op;
use crate::target::{KvRead, ProjectionError, ProjectionTarget, TargetState};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

#[derive(Debug, Default)]
struct Generation {
    data: HashMap<String, Value>,
    state: Option<TargetState>,
}

#[derive(Debug, Default)]
struct Inner {
    current: Option<u64>,
    generations: BTreeMap<u64, Generation>,
}

#[derive(Debug, Clone)]
pub struct MemoryTarget {
    name: String,
    inner: Arc<RwLock<Inner>>,
}

impl MemoryTarget {
    pub fn new(name: &str) -> Self {
        Self { name: name.to_owned(), inner: Arc::default() }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn apply_op(data: &mut HashMap<String, Value>, op: &Op) {
    match op {
        Op::HSet { key, fields } => {
            if let Value::Hash(h) = data.entry(key.clone()).or_insert_with(|| Value::Hash(BTreeMap::new())) {
                for (f, v) in fields {
                    h.insert(f.clone(), v.clone());
                }
            }
        }
        Op::HDel { key, fields } => {
            if let Some(Value::Hash(h)) = data.get_mut(key) {
                for f in fields {
                    h.remove(f);
                }
                if h.is_empty() {
                    data.remove(key);
                }
            }
        }
        Op::HIncr { key, field, by } => {
            if let Value::Hash(h) = data.entry(key.clone()).or_insert_with(|| Value::Hash(BTreeMap::new())) {
                let current: i64 = h.get(field).and_then(|v| v.parse().ok()).unwrap_or(0);
                h.insert(field.clone(), (current + by).to_string());
            }
        }
        Op::Del { key } => {
            data.remove(key);
        }
        Op::ZAdd { key, score, member } => {
            if let Value::ZSet(z) = data.entry(key.clone()).or_insert_with(|| Value::ZSet(BTreeMap::new())) {
                z.insert(member.clone(), *score);
            }
        }
        Op::ZRem { key, members } => {
            if let Some(Value::ZSet(z)) = data.get_mut(key) {
                for m in members {
                    z.remove(m);
                }
                if z.is_empty() {
                    data.remove(key);
                }
            }
        }
        Op::ZKeepTop { key, keep } => {
            if let Some(Value::ZSet(z)) = data.get_mut(key)
                && z.len() > *keep
            {
                // Redis ranks by (score, member) ascending and removes the lowest ranks.
                let mut ranked: Vec<(i64, String)> = z.iter().map(|(m, s)| (*s, m.clone())).collect();
                ranked.sort();
                let drop = ranked.len() - keep;
                for (_, m) in ranked.into_iter().take(drop) {
                    z.remove(&m);
                }
            }
        }
        Op::SAdd { key, member } => {
            if let Value::Set(s) = data.entry(key.clone()).or_insert_with(|| Value::Set(Default::default())) {
                s.insert(member.clone());
            }
        }
    }
}

/// Reads on one generation of a memory target.
struct MemoryView {
    target: MemoryTarget,
    generation: u64,
}

impl MemoryView {
    fn with<R>(&self, key: &str, f: impl FnOnce(Option<&Value>) -> R) -> R {
        let inner = self.target.read();
        f(inner.generations.get(&self.generation).and_then(|g| g.data.get(key)))
    }
}

fn sorted_desc(z: &BTreeMap<String, i64>) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = z.iter().map(|(m, s)| (m.clone(), *s)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    v
}

#[async_trait]
impl KvRead for MemoryView {
    async fn hgetall_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<HashMap<String, String>>>, ProjectionError> {
        Ok(keys
            .iter()
            .map(|k| {
                self.with(k, |v| match v {
                    Some(Value::Hash(h)) => Some(h.iter().map(|(a, b)| (a.clone(), b.clone())).collect()),
                    _ => None,
                })
            })
            .collect())
    }

    async fn zrevrange_by_score(
        &self,
        key: &str,
        below: Option<i64>,
        limit: usize,
    ) -> Result<Vec<(String, i64)>, ProjectionError> {
        Ok(self.with(key, |v| match v {
            Some(Value::ZSet(z)) => {
                sorted_desc(z).into_iter().filter(|(_, s)| below.is_none_or(|b| *s < b)).take(limit).collect()
            }
            _ => Vec::new(),
        }))
    }

    async fn zrange_all(&self, key: &str) -> Result<Vec<(String, i64)>, ProjectionError> {
        Ok(self.with(key, |v| match v {
            Some(Value::ZSet(z)) => {
                let mut all = sorted_desc(z);
                all.reverse();
                all
            }
            _ => Vec::new(),
        }))
    }

    async fn zinter_members(&self, a: &str, b: &str) -> Result<Vec<String>, ProjectionError> {
        let inner = self.target.read();
        let Some(g) = inner.generations.get(&self.generation) else { return Ok(Vec::new()) };
        match (g.data.get(a), g.data.get(b)) {
            (Some(Value::ZSet(x)), Some(Value::ZSet(y))) => {
                Ok(x.keys().filter(|m| y.contains_key(*m)).cloned().collect())
            }
            _ => Ok(Vec::new()),
        }
    }

    async fn zcard_many(&self, keys: &[String]) -> Result<Vec<usize>, ProjectionError> {
        Ok(keys
            .iter()
            .map(|k| {
                self.with(k, |v| match v {
                    Some(Value::ZSet(z)) => z.len(),
                    _ => 0,
                })
            })
            .collect())
    }

    async fn hget_many(&self, keys: &[String], field: &str) -> Result<Vec<Option<String>>, ProjectionError> {
        Ok(keys
            .iter()
            .map(|k| {
                self.with(k, |v| match v {
                    Some(Value::Hash(h)) => h.get(field).cloned(),
                    _ => None,
                })
            })
            .collect())
    }
}

#[async_trait]
impl ProjectionTarget for MemoryTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn view(&self, generation: u64) -> Arc<dyn KvRead> {
        Arc::new(MemoryView { target: self.clone(), generation })
    }

    async fn current_generation(&self) -> Result<Option<u64>, ProjectionError> {
        Ok(self.read().current)
    }

    async fn allocate_generation(&self) -> Result<u64, ProjectionError> {
        let mut inner = self.write();
        let next =
            inner.generations.keys().next_back().copied().unwrap_or(0).max(inner.current.unwrap_or(0)) + 1;
        inner.generations.entry(next).or_default();
        Ok(next)
    }

    async fn state(&self, generation: u64) -> Result<Option<TargetState>, ProjectionError> {
        Ok(self.read().generations.get(&generation).and_then(|g| g.state))
    }

    async fn apply(
        &self,
        generation: u64,
        ops: &[Op],
        expected: Option<TargetState>,
        next: TargetState,
    ) -> Result<(), ProjectionError> {
        let mut inner = self.write();
        let g = inner.generations.entry(generation).or_default();
        if g.state.map(|s| s.cursor) != expected.map(|s| s.cursor) {
            return Err(ProjectionError::Conflict(format!("generation {generation} checkpoint moved")));
        }
        for op in ops {
            apply_op(&mut g.data, op);
        }
        g.state = Some(next);
        Ok(())
    }

    async fn set_current(&self, generation: u64) -> Result<(), ProjectionError> {
        let mut inner = self.write();
        inner.generations.entry(generation).or_default();
        inner.current = Some(generation);
        Ok(())
    }

    async fn drop_generation(&self, generation: u64) -> Result<u64, ProjectionError> {
        Ok(self.write().generations.remove(&generation).map(|g| g.data.len() as u64).unwrap_or(0))
    }

    async fn dump(&self, generation: u64) -> Result<Dump, ProjectionError> {
        let inner = self.read();
        Ok(inner
            .generations
            .get(&generation)
            .map(|g| g.data.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default())
    }

    async fn ping(&self) -> Result<(), ProjectionError> {
        Ok(())
    }
}
