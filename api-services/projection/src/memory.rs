//! The in-memory target: dev mode's read model and the replay that `verify` compares against. It applies
//! the same [`Op`]s with Redis's semantics (an emptied hash, set or sorted set disappears).

use crate::dump::{Dump, ImageValue, Value};
use crate::ops::Op;
use crate::target::{KvRead, ProjectionError, ProjectionTarget, TargetState};
use crate::zset::ScoredSet;
use async_trait::async_trait;
use hashbrown::HashMap;
use std::collections::HashMap as StdHashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

/// A stored value: [`Value`] with an indexed sorted set.
#[derive(Debug, Clone)]
pub(crate) enum Stored {
    Hash(BTreeMap<String, String>),
    ZSet(ScoredSet),
    Set(BTreeSet<String>),
}

impl Stored {
    fn to_value(&self) -> Value {
        match self {
            Stored::Hash(h) => Value::Hash(h.clone()),
            Stored::ZSet(z) => Value::ZSet(z.to_map()),
            Stored::Set(s) => Value::Set(s.clone()),
        }
    }

    /// Fields or members.
    pub(crate) fn weight(&self) -> usize {
        match self {
            Stored::Hash(h) => h.len(),
            Stored::ZSet(z) => z.len(),
            Stored::Set(s) => s.len(),
        }
    }

    pub(crate) fn into_image(self) -> ImageValue {
        match self {
            Stored::Hash(h) => ImageValue::Hash(h.into_iter().collect()),
            Stored::ZSet(z) => ImageValue::ZSet(z.into_pairs()),
            Stored::Set(s) => ImageValue::Set(s.into_iter().collect()),
        }
    }

    fn from_image(v: &ImageValue) -> Self {
        match v {
            ImageValue::Hash(h) => Stored::Hash(h.iter().cloned().collect()),
            ImageValue::ZSet(z) => {
                let mut set = ScoredSet::default();
                for (m, s) in z {
                    set.insert(m, *s);
                }
                Stored::ZSet(set)
            }
            ImageValue::Set(s) => Stored::Set(s.iter().cloned().collect()),
        }
    }
}

#[derive(Debug, Default)]
struct Generation {
    data: HashMap<String, Stored>,
    state: Option<TargetState>,
}

#[derive(Debug, Default)]
struct Inner {
    current: Option<u64>,
    generations: BTreeMap<u64, Generation>,
    rebuild: Option<contract::admin::RebuildProgress>,
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

/// The value at `key`, created empty by `make` if absent; `None` when the key holds another type (Redis
/// would answer WRONGTYPE; the planner never does this, so the operation is skipped).
fn slot<'a>(data: &'a mut HashMap<String, Stored>, key: &str, make: fn() -> Stored) -> &'a mut Stored {
    data.entry_ref(key).or_insert_with(make)
}

fn apply_all(data: &mut HashMap<String, Stored>, ops: &[Op]) {
    for op in ops {
        apply_op(data, op);
    }
}

/// [`apply_op`] taking the operation, so the values it sets are moved in, not copied.
pub(crate) fn apply_owned(data: &mut HashMap<String, Stored>, op: Op) {
    match op {
        Op::HSet { key, fields } => {
            if let Stored::Hash(h) = slot(data, &key, || Stored::Hash(BTreeMap::new())) {
                h.extend(fields);
            }
        }
        other => apply_op(data, &other),
    }
}

pub(crate) fn apply_op(data: &mut HashMap<String, Stored>, op: &Op) {
    match op {
        Op::HSet { key, fields } => {
            if let Stored::Hash(h) = slot(data, key, || Stored::Hash(BTreeMap::new())) {
                for (f, v) in fields {
                    h.insert(f.clone(), v.clone());
                }
            }
        }
        Op::HDel { key, fields } => {
            if let Some(Stored::Hash(h)) = data.get_mut(key) {
                for f in fields {
                    h.remove(f);
                }
                if h.is_empty() {
                    data.remove(key);
                }
            }
        }
        Op::HIncr { key, field, by } => {
            if let Stored::Hash(h) = slot(data, key, || Stored::Hash(BTreeMap::new())) {
                let current: i64 = h.get(field).and_then(|v| v.parse().ok()).unwrap_or(0);
                h.insert(field.clone(), (current + by).to_string());
            }
        }
        Op::Del { key } => {
            data.remove(key);
        }
        Op::ZAdd { key, score, member } => {
            if let Stored::ZSet(z) = slot(data, key, || Stored::ZSet(ScoredSet::default())) {
                z.insert(member, *score);
            }
        }
        Op::ZRem { key, members } => {
            if let Some(Stored::ZSet(z)) = data.get_mut(key) {
                for m in members {
                    z.remove(m);
                }
                if z.is_empty() {
                    data.remove(key);
                }
            }
        }
        Op::ZKeepTop { key, keep } => {
            if let Some(Stored::ZSet(z)) = data.get_mut(key) {
                z.keep_top(*keep);
            }
        }
        Op::SAdd { key, member } => {
            if let Stored::Set(s) = slot(data, key, || Stored::Set(BTreeSet::new())) {
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
    fn with<R>(&self, key: &str, f: impl FnOnce(Option<&Stored>) -> R) -> R {
        let inner = self.target.read();
        f(inner.generations.get(&self.generation).and_then(|g| g.data.get(key)))
    }
}

#[async_trait]
impl KvRead for MemoryView {
    async fn hgetall_many(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<StdHashMap<String, String>>>, ProjectionError> {
        Ok(keys
            .iter()
            .map(|k| {
                self.with(k, |v| match v {
                    Some(Stored::Hash(h)) => Some(h.iter().map(|(a, b)| (a.clone(), b.clone())).collect()),
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
            Some(Stored::ZSet(z)) => z.desc_below(below).take(limit).collect(),
            _ => Vec::new(),
        }))
    }

    async fn zrange_all(&self, key: &str) -> Result<Vec<(String, i64)>, ProjectionError> {
        Ok(self.with(key, |v| match v {
            Some(Stored::ZSet(z)) => z.asc().collect(),
            _ => Vec::new(),
        }))
    }

    async fn zinter_members(&self, a: &str, b: &str) -> Result<Vec<String>, ProjectionError> {
        let inner = self.target.read();
        let Some(g) = inner.generations.get(&self.generation) else { return Ok(Vec::new()) };
        match (g.data.get(a), g.data.get(b)) {
            (Some(Stored::ZSet(x)), Some(Stored::ZSet(y))) => Ok(x.intersect(y)),
            _ => Ok(Vec::new()),
        }
    }

    async fn zcard_many(&self, keys: &[String]) -> Result<Vec<usize>, ProjectionError> {
        Ok(keys
            .iter()
            .map(|k| {
                self.with(k, |v| match v {
                    Some(Stored::ZSet(z)) => z.len(),
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
                    Some(Stored::Hash(h)) => h.get(field).cloned(),
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

    async fn record_rebuild(
        &self,
        progress: &contract::admin::RebuildProgress,
    ) -> Result<(), ProjectionError> {
        self.inner.write().unwrap_or_else(|p| p.into_inner()).rebuild = Some(progress.clone());
        Ok(())
    }

    async fn last_rebuild(&self) -> Result<Option<contract::admin::RebuildProgress>, ProjectionError> {
        Ok(self.read().rebuild.clone())
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
        apply_all(&mut g.data, ops);
        g.state = Some(next);
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
        let mut inner = self.write();
        let g = inner.generations.entry(generation).or_default();
        for (k, v) in image {
            g.data.insert(k.clone(), Stored::from_image(v));
        }
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
            .map(|g| g.data.iter().map(|(k, v)| (k.clone(), v.to_value())).collect())
            .unwrap_or_default())
    }

    async fn ping(&self) -> Result<(), ProjectionError> {
        Ok(())
    }
}
