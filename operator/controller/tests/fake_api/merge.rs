//! JSON merge patch (RFC 7386) and an emulation of server-side apply for one field manager: fields the
//! manager applied before and leaves out now are removed, the rest is merged (lists are replaced whole,
//! as for atomic lists). Enough for an operator that is the only manager of what it applies.

use serde_json::Value;

/// RFC 7386: `null` removes a key, objects merge, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Remove from `target` every field `before` set and `now` does not.
pub fn remove_dropped(target: &mut Value, before: &Value, now: &Value) {
    let (Value::Object(t), Value::Object(b)) = (target, before) else { return };
    for (k, bv) in b {
        match now.get(k) {
            None | Some(Value::Null) => {
                t.remove(k);
            }
            Some(nv) => {
                if let Some(tv) = t.get_mut(k) {
                    remove_dropped(tv, bv, nv);
                }
            }
        }
    }
}

/// Server-side apply of `applied` over `existing`, given what the same manager applied last time.
pub fn apply(existing: Option<Value>, applied: &Value, previous: Option<&Value>) -> Value {
    let mut out = existing.unwrap_or_else(|| serde_json::json!({}));
    if let Some(before) = previous {
        remove_dropped(&mut out, before, applied);
    }
    merge(&mut out, applied);
    out
}

/// Whether two objects are the same apart from what the server maintains (a write that changes
/// nothing keeps the resourceVersion, as on a real API server).
pub fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in ["resourceVersion", "generation", "managedFields", "creationTimestamp", "uid"] {
                m.remove(k);
            }
        }
        v
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn apply_removes_what_the_manager_stopped_applying_and_keeps_the_rest() {
        let existing = json!({"status": {"a": 1, "nested": {"x": 1, "y": 2}, "other": 3}});
        let before = json!({"status": {"a": 1, "nested": {"x": 1, "y": 2}}});
        let now = json!({"status": {"nested": {"x": 5}}});
        let out = apply(Some(existing), &now, Some(&before));
        assert_eq!(out, json!({"status": {"nested": {"x": 5}, "other": 3}}));
    }
}
