//! A canonical, comparable image of one generation of a target, and the differences between two images
//! (what `socialnet projector verify` reports).

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Hash(BTreeMap<String, String>),
    /// Members with scores, ordered by member.
    ZSet(BTreeMap<String, i64>),
    Set(BTreeSet<String>),
}

pub type Dump = BTreeMap<String, Value>;

/// One key's whole value as a rebuild loads it into a new generation (no ordering needed, so no maps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageValue {
    Hash(Vec<(String, String)>),
    /// Members with scores, in any order.
    ZSet(Vec<(String, i64)>),
    Set(Vec<String>),
}

impl ImageValue {
    /// Fields or members: the size of the commands that write it.
    pub fn weight(&self) -> usize {
        match self {
            ImageValue::Hash(h) => h.len(),
            ImageValue::ZSet(z) => z.len(),
            ImageValue::Set(s) => s.len(),
        }
    }
}

/// Every difference between `expected` (a replay) and `actual` (the live target), one line each.
pub fn diff(expected: &Dump, actual: &Dump) -> Vec<String> {
    let mut out = Vec::new();
    for (key, want) in expected {
        match actual.get(key) {
            None => out.push(format!("missing key {key}")),
            Some(got) if got != want => out.extend(diff_value(key, want, got)),
            Some(_) => {}
        }
    }
    for key in actual.keys() {
        if !expected.contains_key(key) {
            out.push(format!("unexpected key {key}"));
        }
    }
    out
}

fn diff_value(key: &str, want: &Value, got: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match (want, got) {
        (Value::Hash(w), Value::Hash(g)) => {
            for (f, v) in w {
                match g.get(f) {
                    None => out.push(format!("{key}: field {f} missing (expected {v:?})")),
                    Some(gv) if gv != v => out.push(format!("{key}: field {f} is {gv:?}, expected {v:?}")),
                    Some(_) => {}
                }
            }
            for f in g.keys().filter(|f| !w.contains_key(*f)) {
                out.push(format!("{key}: unexpected field {f}"));
            }
        }
        (Value::ZSet(w), Value::ZSet(g)) => {
            for (m, s) in w {
                match g.get(m) {
                    None => out.push(format!("{key}: member {m} missing")),
                    Some(gs) if gs != s => {
                        out.push(format!("{key}: member {m} has score {gs}, expected {s}"))
                    }
                    Some(_) => {}
                }
            }
            for m in g.keys().filter(|m| !w.contains_key(*m)) {
                out.push(format!("{key}: unexpected member {m}"));
            }
        }
        (Value::Set(w), Value::Set(g)) => {
            for m in w.difference(g) {
                out.push(format!("{key}: member {m} missing"));
            }
            for m in g.difference(w) {
                out.push(format!("{key}: unexpected member {m}"));
            }
        }
        _ => out.push(format!("{key}: has the wrong type")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_each_kind_of_difference() {
        let mut a = Dump::new();
        a.insert("h".into(), Value::Hash(BTreeMap::from([("x".into(), "1".into())])));
        a.insert("z".into(), Value::ZSet(BTreeMap::from([("m".into(), 5)])));
        a.insert("gone".into(), Value::Set(BTreeSet::from(["a".to_string()])));
        let mut b = a.clone();
        assert!(diff(&a, &b).is_empty());
        b.insert("h".into(), Value::Hash(BTreeMap::from([("x".into(), "2".into())])));
        b.insert("z".into(), Value::ZSet(BTreeMap::from([("m".into(), 5), ("n".into(), 1)])));
        b.remove("gone");
        b.insert("extra".into(), Value::Set(BTreeSet::new()));
        let d = diff(&a, &b);
        assert_eq!(d.len(), 4, "{d:?}");
        assert!(d.iter().any(|l| l.contains("field x is \"2\"")));
        assert!(d.iter().any(|l| l.contains("unexpected member n")));
        assert!(d.iter().any(|l| l == "missing key gone"));
        assert!(d.iter().any(|l| l == "unexpected key extra"));
    }
}
