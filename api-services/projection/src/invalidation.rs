//! Change notices for readers that cache answers (the read API's home-page cache). With every batch it
//! applies, a target that supports them announces which keys of which generation the batch changed, in
//! the same atomic step as the change itself; a reader drops whatever it built from those keys. Keys are
//! sent as 64-bit FNV-1a ids of their relative names (see [`crate::Keys`]): a collision can only drop an
//! answer that did not need dropping.

use crate::ops::Op;

/// One batch's notice: the generation it changed and the ids of the keys it touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalidation {
    pub generation: u64,
    pub keys: Vec<u64>,
}

/// The id of a relative key name.
pub fn key_id(relative_key: &str) -> u64 {
    fnv1a(relative_key.as_bytes())
}

/// 64-bit FNV-1a: cheap and stable across processes and versions (unlike std's hasher).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The notice for `ops` applied to `generation`: 8 bytes of generation, then 8 per distinct key.
/// Empty when no key changed.
pub fn encode(generation: u64, ops: &[Op]) -> Vec<u8> {
    let mut ids: Vec<u64> = ops.iter().map(|op| key_id(op.key())).collect();
    if ids.is_empty() {
        return Vec::new();
    }
    ids.sort_unstable();
    ids.dedup();
    let mut out = Vec::with_capacity(8 * (ids.len() + 1));
    out.extend_from_slice(&generation.to_be_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out
}

/// Read a notice; `None` for anything that is not one.
pub fn decode(payload: &[u8]) -> Option<Invalidation> {
    if payload.len() < 8 || !payload.len().is_multiple_of(8) {
        return None;
    }
    let mut words = payload.chunks_exact(8).map(|c| u64::from_be_bytes(c.try_into().unwrap_or([0; 8])));
    let generation = words.next()?;
    Some(Invalidation { generation, keys: words.collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_names_each_touched_key_once() {
        let ops = vec![
            Op::ZAdd { key: "home:ann".into(), score: 7, member: "p1".into() },
            Op::ZKeepTop { key: "home:ann".into(), keep: 800 },
            Op::HIncr { key: "post:p1".into(), field: "like_count".into(), by: 1 },
        ];
        let notice = decode(&encode(42, &ops)).unwrap();
        assert_eq!(notice.generation, 42);
        let mut want = vec![key_id("home:ann"), key_id("post:p1")];
        want.sort_unstable();
        assert_eq!(notice.keys, want);
    }

    #[test]
    fn no_ops_no_notice_and_garbage_is_refused() {
        assert!(encode(1, &[]).is_empty());
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"123456789"), None);
        assert_ne!(key_id("home:a"), key_id("home:b"));
    }
}
