//! The chart's RBAC against the calls the operator really made: every request the FAKE API recorded from
//! the operator, as (API group, resource, verb), must be granted by a rule of the chart's ClusterRole, or
//! of its Role for Leases in the operator's own namespace.
#![allow(dead_code, clippy::unwrap_used)]

use crate::fake_api::Request;
use serde_json::Value;
use std::collections::BTreeSet;

/// (API group, resource or resource/subresource, verb).
pub type Call = (String, String, String);

/// The rules of one `define` block of the chart's `_rules.tpl` (plain YAML between the define and its end).
fn defined(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!(
        "{}/../../charts/socialnet-operator/templates/_rules.tpl",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let start = format!("{{{{- define \"{name}\" -}}}}");
    let body = text.split(&start).nth(1).unwrap_or_else(|| panic!("no {name} in _rules.tpl"));
    let body = body.split("{{- end }}").next().unwrap();
    assert!(!body.contains("{{"), "{name} uses template syntax this check does not render");
    serde_json::to_value(serde_yaml::from_str::<serde_yaml::Value>(body).unwrap())
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// (rules, for Leases only): the operator's rules and the leader-election rules.
pub fn chart_rules() -> Vec<(Vec<Value>, bool)> {
    vec![(defined("socialnet-operator.rules"), false), (defined("socialnet-operator.leaderRules"), true)]
}

/// What one recorded request asked to do.
pub fn call(r: &Request) -> Option<Call> {
    let parts: Vec<&str> = r.path.split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => (String::new(), rest.to_vec()),
        ["apis", group, _version, rest @ ..] => ((*group).to_owned(), rest.to_vec()),
        _ => return None,
    };
    let (resource, named) = match rest.as_slice() {
        ["namespaces", _, plural] | [plural] => ((*plural).to_owned(), false),
        ["namespaces", _, plural, _name] => ((*plural).to_owned(), true),
        ["namespaces", _, plural, _name, sub] => (format!("{plural}/{sub}"), true),
        _ => return None,
    };
    let verb = match (r.method.as_str(), named) {
        ("GET", true) => "get",
        ("GET", false) if r.is_watch() => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => return None,
    };
    Some((group, resource, verb.to_owned()))
}

fn grants(rule: &Value, (group, resource, verb): &Call) -> bool {
    let has = |field: &str, want: &str| {
        rule[field].as_array().is_some_and(|v| v.iter().any(|x| x == want || x == "*"))
    };
    has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
}

/// Calls no rule grants (Leases only through the namespaced Role).
pub fn missing(calls: &BTreeSet<Call>) -> Vec<Call> {
    let roles = chart_rules();
    calls
        .iter()
        .filter(|c| {
            !roles.iter().any(|(rules, leases)| {
                rules.iter().any(|rule| grants(rule, c) && (!leases || c.1 == "leases"))
            })
        })
        .cloned()
        .collect()
}
