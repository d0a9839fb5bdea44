//! Where the read model's keys live on a Redis Cluster. The model is cut into [`PARTITIONS`] partitions;
//! every key of a partition carries the partition's hash tag, so it sits in one slot and one script can
//! change it atomically, and a resharding moves whole partitions. A user's keys (profile, follows, own
//! timeline, home) share the user's partition; a post's hash and its comments share the post's. The small
//! `celebs` set is copied into every partition, so a home page is read from its owner's partition alone.
//!
//! Tags are chosen so that partition `k` hashes into the `k`-th equal share of the 16 384 slots: a cluster
//! made with `redis-cli --cluster create` (equal slot ranges per master) then holds an equal number of
//! partitions per master.

use crate::keys::Keys;

/// Partitions of a cluster target: the most masters a target can spread over. Part of the key layout:
/// changing it needs a rebuild.
pub const PARTITIONS: usize = 128;

const SLOTS: u16 = 16_384;

/// The partition tags, `PARTITIONS` of them, tag `k` hashing into slot share `k`.
#[derive(Debug, Clone)]
pub struct Layout {
    tags: Vec<String>,
}

impl Default for Layout {
    fn default() -> Self {
        Self::new()
    }
}

impl Layout {
    pub fn new() -> Self {
        let share = usize::from(SLOTS) / PARTITIONS;
        let tags = (0..PARTITIONS)
            .map(|k| {
                let range = k * share..(k + 1) * share;
                (0u32..)
                    .map(|n| format!("p{k}.{n}"))
                    .find(|t| range.contains(&usize::from(slot_of(t.as_bytes()))))
                    .unwrap_or_else(|| format!("p{k}"))
            })
            .collect();
        Self { tags }
    }

    #[cfg(test)]
    fn tags(&self) -> &[String] {
        &self.tags
    }

    pub fn tag(&self, partition: usize) -> &str {
        &self.tags[partition % PARTITIONS]
    }

    /// The partition of a relative key; `None` for `celebs`, which every partition holds.
    pub fn partition(&self, relative_key: &str) -> Option<usize> {
        if relative_key == Keys::CELEBS {
            return None;
        }
        // `kind:id`: the id decides (a post's comments go with the post, a user's keys with the user).
        let owner = relative_key.split_once(':').map_or(relative_key, |(_, id)| id);
        Some(partition_of(owner))
    }

    /// The partition whose copy of `celebs` a read of `relative_key` should use.
    pub fn partition_or_first(&self, relative_key: &str) -> usize {
        self.partition(relative_key).unwrap_or(0)
    }
}

/// The partition of an owner id (a user id or a post id).
pub fn partition_of(owner: &str) -> usize {
    (crate::invalidation::fnv1a(owner.as_bytes()) % PARTITIONS as u64) as usize
}

/// Redis Cluster's slot of a key: CRC16-XMODEM of its hash tag (or of the whole key) modulo 16 384.
pub fn slot_of(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter().position(|b| *b == b'}').filter(|close| *close > 0).map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(tagged) % SLOTS
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for b in bytes {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_redis_cluster_specification() {
        // The reference value of the cluster spec for "123456789".
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"{user1000}.followers"));
        assert_eq!(slot_of(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
    }

    #[test]
    fn partition_tags_spread_evenly_over_the_slots() {
        let layout = Layout::new();
        let share = usize::from(SLOTS) / PARTITIONS;
        for (k, tag) in layout.tags().iter().enumerate() {
            let slot = usize::from(slot_of(format!("x:{{{tag}}}:y").as_bytes()));
            assert!(
                (k * share..(k + 1) * share).contains(&slot),
                "tag {tag} of partition {k} in slot {slot}"
            );
        }
        // Three masters with equal slot ranges hold 42 or 43 partitions each.
        let per_master = |m: usize| {
            let range = m * 16_384 / 3..(m + 1) * 16_384 / 3;
            layout.tags().iter().filter(|t| range.contains(&usize::from(slot_of(t.as_bytes())))).count()
        };
        assert_eq!((0..3).map(per_master).sum::<usize>(), PARTITIONS);
        assert!((0..3).all(|m| (42..=43).contains(&per_master(m))));
    }

    #[test]
    fn an_owner_s_keys_share_a_partition_and_celebs_is_everywhere() {
        let layout = Layout::new();
        let u = domain::UserId::parse("alice").unwrap();
        let p = uuid::Uuid::now_v7().to_string();
        let user = layout.partition(&Keys::user(&u));
        for k in [Keys::home(&u), Keys::following(&u), Keys::followers(&u), Keys::user_timeline(&u)] {
            assert_eq!(layout.partition(&k), user, "{k}");
        }
        assert_eq!(layout.partition(&Keys::post_of(&p)), layout.partition(&format!("comments:{p}")));
        assert_eq!(layout.partition(Keys::CELEBS), None);
    }
}
