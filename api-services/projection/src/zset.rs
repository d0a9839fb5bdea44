//! A sorted set with Redis's ordering (score, then member bytes) for the in-memory target: a hash index
//! (member to score) beside a ring buffer kept in rank order. Scores are event positions, so almost every
//! add lands at the end and trimming to the top N pops from the front, both O(1); other changes are a
//! binary search and a shift. A member that is a canonical UUID (post ids: almost every member of a home
//! timeline) is kept as 16 bytes instead of a 36-byte string. A rebuild replays millions of fan-out writes
//! into capped home timelines in memory before loading Redis, and memory traffic is most of its time.

use hashbrown::{Equivalent, HashMap};
use std::cmp::Ordering;
use std::collections::{BTreeMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The member `s` as a number when it is a UUID in canonical form (lowercase, hyphenated), which orders
/// as its string does.
fn canonical_uuid(s: &str) -> Option<[u8; 16]> {
    if s.len() != 36 {
        return None;
    }
    let id = uuid::Uuid::try_parse(s).ok()?;
    let mut buf = [0u8; 36];
    (id.hyphenated().encode_lower(&mut buf).as_bytes() == s.as_bytes()).then_some(*id.as_bytes())
}

#[derive(Debug, Clone)]
enum Member {
    /// Big-endian bytes, which order as the canonical text does.
    Id([u8; 16]),
    Text(Arc<str>),
}

impl Member {
    fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            Member::Id(id) => {
                let mut buf = [0u8; 36];
                f(uuid::Uuid::from_bytes(*id).hyphenated().encode_lower(&mut buf))
            }
            Member::Text(s) => f(s),
        }
    }

    fn text(&self) -> String {
        self.with_str(str::to_owned)
    }
}

impl PartialEq for Member {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Member::Id(a), Member::Id(b)) => a == b,
            (Member::Text(a), Member::Text(b)) => a == b,
            // A canonical UUID is never stored as text.
            _ => false,
        }
    }
}

impl Eq for Member {}

impl Hash for Member {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            Member::Id(id) => id.hash(state),
            Member::Text(s) => s.hash(state),
        }
    }
}

impl Ord for Member {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Member::Id(a), Member::Id(b)) => a.cmp(b),
            _ => self.with_str(|a| other.with_str(|b| a.as_bytes().cmp(b.as_bytes()))),
        }
    }
}

impl PartialOrd for Member {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A member looked up by its text, without allocating; hashes and compares as [`Member`] does.
struct Probe<'a> {
    text: &'a str,
    id: Option<[u8; 16]>,
}

impl<'a> Probe<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, id: canonical_uuid(text) }
    }
}

impl Hash for Probe<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self.id {
            Some(id) => id.hash(state),
            None => self.text.hash(state),
        }
    }
}

impl Equivalent<Member> for Probe<'_> {
    fn equivalent(&self, key: &Member) -> bool {
        match (self.id, key) {
            (Some(a), Member::Id(b)) => a == *b,
            (None, Member::Text(b)) => self.text == &**b,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ScoredSet {
    scores: HashMap<Member, i64>,
    /// Ascending by (score, member).
    ranked: VecDeque<(i64, Member)>,
}

impl ScoredSet {
    pub fn insert(&mut self, member: &str, score: i64) {
        let probe = Probe::new(member);
        match self.scores.get_key_value_mut(&probe) {
            Some((_, old)) if *old == score => {}
            Some((m, old)) => {
                let previous = std::mem::replace(old, score);
                let m = m.clone();
                self.unrank(previous, &m);
                self.rank(score, m);
            }
            None => {
                let m = match probe.id {
                    Some(id) => Member::Id(id),
                    None => Member::Text(Arc::from(member)),
                };
                self.scores.insert(m.clone(), score);
                self.rank(score, m);
            }
        }
    }

    fn rank(&mut self, score: i64, m: Member) {
        let after_last = self.ranked.back().is_none_or(|(s, last)| (*s, last) < (score, &m));
        if after_last {
            self.ranked.push_back((score, m));
        } else {
            let i = self.ranked.partition_point(|(s, x)| (*s, x) < (score, &m));
            self.ranked.insert(i, (score, m));
        }
    }

    fn unrank(&mut self, score: i64, m: &Member) {
        let i = self.ranked.partition_point(|(s, x)| (*s, x) < (score, m));
        if self.ranked.get(i).is_some_and(|(s, x)| *s == score && x == m) {
            self.ranked.remove(i);
        }
    }

    pub fn remove(&mut self, member: &str) {
        if let Some((m, score)) = self.scores.remove_entry(&Probe::new(member)) {
            self.unrank(score, &m);
        }
    }

    /// Keep only the `keep` highest-ranked members (Redis's `ZREMRANGEBYRANK key 0 -(keep+1)`).
    pub fn keep_top(&mut self, keep: usize) {
        while self.ranked.len() > keep {
            if let Some((_, m)) = self.ranked.pop_front() {
                self.scores.remove(&m);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    #[cfg(test)]
    pub fn contains(&self, member: &str) -> bool {
        self.scores.contains_key(&Probe::new(member))
    }

    /// Highest first (score, then member, both descending), scores strictly below `below` if given.
    pub fn desc_below(&self, below: Option<i64>) -> impl Iterator<Item = (String, i64)> {
        let end = match below {
            Some(b) => self.ranked.partition_point(|(s, _)| *s < b),
            None => self.ranked.len(),
        };
        self.ranked.range(..end).rev().map(|(s, m)| (m.text(), *s))
    }

    /// Lowest first.
    pub fn asc(&self) -> impl Iterator<Item = (String, i64)> {
        self.ranked.iter().map(|(s, m)| (m.text(), *s))
    }

    /// Members of this set that are also in `other`.
    pub fn intersect(&self, other: &ScoredSet) -> Vec<String> {
        self.scores.keys().filter(|m| other.scores.contains_key(*m)).map(Member::text).collect()
    }

    pub fn to_map(&self) -> BTreeMap<String, i64> {
        self.scores.iter().map(|(m, s)| (m.text(), *s)).collect()
    }

    /// Members with scores, lowest first.
    pub fn into_pairs(self) -> Vec<(String, i64)> {
        self.ranked.into_iter().map(|(s, m)| (m.text(), s)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(it: impl Iterator<Item = (String, i64)>) -> Vec<(String, i64)> {
        it.collect()
    }

    fn p(m: &str, s: i64) -> (String, i64) {
        (m.to_owned(), s)
    }

    #[test]
    fn orders_trims_and_rescores_like_redis() {
        let mut z = ScoredSet::default();
        for (m, s) in [("a", 3), ("b", 1), ("c", 3), ("d", 2)] {
            z.insert(m, s);
        }
        assert_eq!(pairs(z.desc_below(None)), vec![p("c", 3), p("a", 3), p("d", 2), p("b", 1)]);
        assert_eq!(pairs(z.desc_below(Some(3))), vec![p("d", 2), p("b", 1)]);
        z.insert("b", 5);
        assert_eq!(z.asc().last(), Some(p("b", 5)));
        assert_eq!(z.len(), 4);
        z.keep_top(2);
        assert_eq!(pairs(z.asc()), vec![p("c", 3), p("b", 5)]);
        assert!(!z.contains("a") && z.contains("c"));
        z.remove("c");
        z.remove("missing");
        assert_eq!(z.to_map(), BTreeMap::from([("b".to_owned(), 5)]));
        assert_eq!(z.clone().into_pairs(), vec![p("b", 5)]);
    }

    #[test]
    fn uuid_members_round_trip_and_order_as_their_text() {
        let lower = "0f0e0d0c-0b0a-4908-8706-050403020100";
        let upper = "0F0E0D0C-0B0A-4908-8706-050403020100";
        let high = "ff0e0d0c-0b0a-4908-8706-050403020100";
        assert!(canonical_uuid(lower).is_some());
        assert!(canonical_uuid(upper).is_none(), "not canonical: kept as text so it round-trips");
        let mut z = ScoredSet::default();
        // Equal scores: Redis orders by member bytes, whatever their kind.
        for m in [high, "zzz", lower, upper, "1"] {
            z.insert(m, 7);
        }
        let mut by_bytes = [high, "zzz", lower, upper, "1"];
        by_bytes.sort();
        assert_eq!(pairs(z.asc()), by_bytes.iter().map(|m| p(m, 7)).collect::<Vec<_>>());
        assert!(z.contains(lower) && z.contains(upper));
        z.insert(lower, 9);
        assert_eq!(z.len(), 5, "re-scoring keeps one entry");
        assert_eq!(z.desc_below(None).next(), Some(p(lower, 9)));
        let mut other = ScoredSet::default();
        other.insert(lower, 1);
        other.insert("zzz", 1);
        let mut both = z.intersect(&other);
        both.sort();
        assert_eq!(both, vec![lower.to_owned(), "zzz".to_owned()]);
        z.remove(lower);
        assert!(!z.contains(lower));
    }
}
