//! The image a rebuild builds while it replays, in bounded memory. Two kinds of keys behave differently:
//!
//! - **Homes** are written over and over (every post fans into many of them) but keep at most
//!   [`HOME_CAP`](crate::HOME_CAP) entries, so their operations are spilled to disk by key range
//!   ([`crate::home_spill`]) until the replay ends; then each range is folded in memory (24 bytes an
//!   entry) and its homes written once each, one range at a time.
//! - **Everything else** (posts, comments, timelines, profiles, follow sets) is written about once and then
//!   rarely touched. It goes through a write-back cache of two generations: a key touched again while in
//!   the older one moves to the younger; when the younger outgrows its budget, the older is written to the
//!   target and forgotten. Later operations on a written key go to the target as they are. A key that grows
//!   past [`BIG_KEY`] members is written out at once, so a hot timeline never sits in memory.
//!
//! Only the hashes of written keys are remembered (8 bytes each). A collision can only send operations of a
//! new key to the target instead of to the cache, which is just as correct.

use crate::dump::ImageValue;
use crate::home_spill::{Home, HomeOp, HomeSpill};
use crate::memory::{Stored, apply_owned};
use crate::ops::Op;
use crate::target::ProjectionError;
use hashbrown::{HashMap, HashSet};
use std::hash::BuildHasher;

/// Members or fields the younger cache generation may gather before the older one is written out.
pub(crate) const CACHE_WEIGHT: usize = 1_000_000;
/// A cached key with more members than this is written out (and its later changes sent as they come).
pub(crate) const BIG_KEY: usize = 2_048;
/// Key ranges the homes are spilled into (the rebuild holds one range's homes at a time).
pub(crate) const HOME_RANGES: usize = 16;

/// What the image asks of the target, in this order.
#[derive(Debug)]
pub(crate) enum Write {
    /// Whole values of keys the target does not have yet.
    Image(Vec<(String, ImageValue)>),
    /// Operations on keys already written.
    Ops(Vec<Op>),
}

#[derive(Debug)]
pub(crate) struct BoundedImage {
    cache_weight: usize,
    big_key: usize,
    young: HashMap<String, Stored>,
    young_weight: usize,
    old: HashMap<String, Stored>,
    written: HashSet<u64>,
    hasher: hashbrown::DefaultHashBuilder,
    homes: HomeSpill,
    out: Vec<Write>,
    out_weight: usize,
}

impl BoundedImage {
    pub(crate) fn new(
        cache_weight: usize,
        big_key: usize,
        home_ranges: usize,
    ) -> Result<Self, ProjectionError> {
        Ok(Self {
            cache_weight,
            big_key,
            young: HashMap::new(),
            young_weight: 0,
            old: HashMap::new(),
            written: HashSet::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            homes: HomeSpill::new(home_ranges)?,
            out: Vec::new(),
            out_weight: 0,
        })
    }

    /// Apply one batch of operations; returns what must be written to the target, in order.
    pub(crate) fn apply(&mut self, ops: Vec<Op>) -> Result<Vec<Write>, ProjectionError> {
        for op in ops {
            match op.key().strip_prefix(HOME_PREFIX) {
                Some(owner) => self.apply_home(owner, &op)?,
                None => self.apply_other(op),
            }
        }
        Ok(std::mem::take(&mut self.out))
    }

    /// The rest of the image, in chunks of about `weight` members: the caches, then the homes, one key
    /// range at a time.
    pub(crate) fn finish(mut self, weight: usize) -> Result<Writes, ProjectionError> {
        let cached: Vec<(String, ImageValue)> =
            self.young.drain().chain(self.old.drain()).map(|(k, v)| (k, v.into_image())).collect();
        let ranges = self.homes.into_ranges()?;
        let homes = ranges.flat_map(move |range| -> Writes {
            match range {
                Ok(homes) => {
                    let values = homes.into_iter().map(|(o, h)| (format!("{HOME_PREFIX}{o}"), home_image(h)));
                    Box::new(chunks(values, weight).map(Ok))
                }
                Err(e) => Box::new(std::iter::once(Err(e))),
            }
        });
        Ok(Box::new(chunks(cached.into_iter(), weight).map(Ok).chain(homes)))
    }

    fn key_hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn apply_other(&mut self, op: Op) {
        let key = op.key();
        if !self.young.contains_key(key) {
            if let Some(value) = self.old.remove(key) {
                self.young_weight += value.weight();
                self.young.insert(key.to_owned(), value);
            } else if self.written.contains(&self.key_hash(key)) {
                self.pass(op);
                return;
            }
        }
        self.young_weight += 1;
        // A key at the limit may pass it with this operation (its name is kept only then).
        let at_limit = self.young.get(key).is_some_and(|v| v.weight() >= self.big_key);
        let key = at_limit.then(|| key.to_owned());
        apply_owned(&mut self.young, op);
        if let Some(key) = key
            && self.young.get(&key).is_some_and(|v| v.weight() > self.big_key)
            && let Some(v) = self.young.remove(&key)
        {
            self.write_out(key, v.into_image());
        }
        if self.young_weight > self.cache_weight {
            let old = std::mem::replace(&mut self.old, std::mem::take(&mut self.young));
            self.young_weight = 0;
            for (k, v) in old {
                self.write_out(k, v.into_image());
            }
        }
    }

    /// Queue a whole value for the target and remember that the target has it.
    fn write_out(&mut self, key: String, value: ImageValue) {
        self.written.insert(self.key_hash(&key));
        self.out_weight += value.weight() + 1;
        match self.out.last_mut() {
            Some(Write::Image(chunk)) if self.out_weight < crate::rebuild::LOAD_WEIGHT => {
                chunk.push((key, value))
            }
            _ => {
                self.out_weight = value.weight() + 1;
                self.out.push(Write::Image(vec![(key, value)]));
            }
        }
    }

    /// Queue an operation for a key the target already has.
    fn pass(&mut self, op: Op) {
        match self.out.last_mut() {
            Some(Write::Ops(ops)) => ops.push(op),
            _ => self.out.push(Write::Ops(vec![op])),
        }
    }

    fn apply_home(&mut self, owner: &str, op: &Op) -> Result<(), ProjectionError> {
        match op {
            Op::ZAdd { score, member, .. } => {
                self.homes.push(owner, HomeOp::Add(*score, post_bytes(member)?))
            }
            Op::ZKeepTop { keep, .. } => {
                self.homes.push(owner, HomeOp::KeepTop(u32::try_from(*keep).unwrap_or(u32::MAX)))
            }
            Op::ZRem { members, .. } => {
                for m in members {
                    self.homes.push(owner, HomeOp::Remove(post_bytes(m)?))?;
                }
                Ok(())
            }
            Op::Del { .. } => self.homes.push(owner, HomeOp::Clear),
            other => Err(ProjectionError::Corrupt(format!("the planner never sends {other:?} to a home"))),
        }
    }
}

/// What [`BoundedImage::finish`] gives up, in order.
pub(crate) type Writes = Box<dyn Iterator<Item = Result<Write, ProjectionError>> + Send>;

/// Whole values in chunks of about `weight` members.
fn chunks(
    mut values: impl Iterator<Item = (String, ImageValue)> + Send,
    weight: usize,
) -> impl Iterator<Item = Write> + Send {
    std::iter::from_fn(move || {
        let mut chunk = Vec::new();
        let mut w = 0;
        for (k, v) in values.by_ref() {
            w += v.weight() + 1;
            chunk.push((k, v));
            if w >= weight {
                break;
            }
        }
        (!chunk.is_empty()).then_some(Write::Image(chunk))
    })
}

const HOME_PREFIX: &str = "home:";

fn post_bytes(member: &str) -> Result<uuid::Bytes, ProjectionError> {
    uuid::Uuid::parse_str(member)
        .map(|u| *u.as_bytes())
        .map_err(|_| ProjectionError::Corrupt(format!("home member {member:?} is not a post id")))
}

fn home_image(home: Home) -> ImageValue {
    ImageValue::ZSet(home.into_iter().map(|(s, p)| (uuid::Uuid::from_bytes(p).to_string(), s)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryTarget;
    use crate::target::{ProjectionTarget, TargetState};

    /// A small deterministic generator (xorshift), so a failure can be replayed.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    fn post(i: u64) -> String {
        uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 + u128::from(i)).to_string()
    }

    /// Operations of every kind on a few keys of each kind, homes among them, in the planner's ways (a
    /// post's score in a home is always the same).
    fn random_ops(rng: &mut Rng, n: usize) -> Vec<Op> {
        (0..n)
            .map(|_| {
                let k = rng.below(6);
                let p = rng.below(40);
                let (score, member) = (p as i64 * 10, post(p));
                match rng.below(9) {
                    0 | 1 => Op::ZAdd { key: format!("home:u{k}"), score, member },
                    2 => Op::ZKeepTop { key: format!("home:u{k}"), keep: 1 + rng.below(6) as usize },
                    3 => Op::ZRem { key: format!("home:u{k}"), members: vec![member] },
                    4 => Op::ZAdd { key: format!("utl:u{k}"), score, member },
                    5 => {
                        Op::HSet { key: format!("post:{p}"), fields: vec![("body".into(), format!("b{n}"))] }
                    }
                    6 => Op::HIncr { key: format!("post:{}", p % 8), field: "like_count".into(), by: 1 },
                    7 => Op::Del { key: format!("post:{}", p % 8) },
                    _ => Op::SAdd { key: format!("set:{k}"), member: format!("m{p}") },
                }
            })
            .collect()
    }

    async fn write(target: &MemoryTarget, writes: impl IntoIterator<Item = Write>) {
        for w in writes {
            match w {
                Write::Image(chunk) => target.load_image(1, &chunk).await.unwrap(),
                Write::Ops(ops) => target.apply_unchecked(1, &ops, TargetState::default()).await.unwrap(),
            }
        }
    }

    #[tokio::test]
    async fn a_bounded_image_writes_what_replaying_into_memory_gives() {
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let (direct, bounded) = (MemoryTarget::new("direct"), MemoryTarget::new("bounded"));
            direct.set_current(1).await.unwrap();
            bounded.set_current(1).await.unwrap();
            // Tiny budgets, so keys are written out, moved between generations and passed through often.
            let mut image = BoundedImage::new(7, 4, 3).unwrap();
            let mut passed = 0;
            for _ in 0..30 {
                let ops = random_ops(&mut rng, 12);
                direct.apply_unchecked(1, &ops, TargetState::default()).await.unwrap();
                let writes = image.apply(ops.clone()).unwrap();
                passed += writes.iter().filter(|w| matches!(w, Write::Ops(_))).count();
                write(&bounded, writes).await;
            }
            write(&bounded, image.finish(5).unwrap().map(Result::unwrap)).await;
            let (want, got) = (direct.dump(1).await.unwrap(), bounded.dump(1).await.unwrap());
            assert_eq!(crate::diff(&want, &got), Vec::<String>::new(), "seed {seed}");
            assert!(!want.is_empty());
            assert!(passed > 0, "seed {seed}: some operations must reach keys already written");
        }
    }

    #[test]
    fn a_home_member_that_is_not_a_post_id_is_an_error_not_a_panic() {
        let mut image = BoundedImage::new(CACHE_WEIGHT, BIG_KEY, 2).unwrap();
        let op = Op::ZAdd { key: "home:u1".into(), score: 1, member: "nope".into() };
        assert!(matches!(image.apply(vec![op]), Err(ProjectionError::Corrupt(_))));
    }

    #[test]
    fn homes_keep_their_newest_entries_compactly() {
        let mut image = BoundedImage::new(CACHE_WEIGHT, BIG_KEY, 2).unwrap();
        let ops: Vec<Op> = (0..10u64)
            .rev()
            .map(|i| Op::ZAdd { key: "home:u1".into(), score: i as i64, member: post(i) })
            .chain([Op::ZKeepTop { key: "home:u1".into(), keep: 3 }])
            .collect();
        assert!(image.apply(ops).unwrap().is_empty(), "homes are written only at the end");
        let written: Vec<Write> = image.finish(100).unwrap().map(Result::unwrap).collect();
        let [Write::Image(chunk)] = written.as_slice() else { panic!("one chunk expected: {written:?}") };
        let ImageValue::ZSet(mut home) = chunk[0].1.clone() else { panic!("a sorted set expected") };
        home.sort_by_key(|(_, s)| *s);
        assert_eq!(home, vec![(post(7), 7), (post(8), 8), (post(9), 9)]);
    }
}
