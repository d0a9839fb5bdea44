//! What a real API server checks when a `SocialCluster` is written, done locally: the CRD's structural
//! schema (types, required fields, enums, bounds, patterns, unique list-map keys, unknown fields as
//! `kubectl --validate=strict` reports them) and its CEL rules (kube's own evaluator). Used to show that
//! every bad spec the operator refuses is also refused at `kubectl apply`.
#![allow(dead_code, clippy::unwrap_used)]

use kube::CustomResourceExt;
use serde_json::Value;

/// The `spec` schema of the generated CRD.
pub fn spec_schema() -> Value {
    let crd = serde_json::to_value(socialnet_crd::SocialCluster::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

/// Every violation of the schema and the CEL rules, each with the field's path.
pub fn check(spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(&spec_schema(), spec, "spec", &mut out);
    if let Err(e) = socialnet_crd::SocialClusterSpec::validate_cel(spec, None) {
        out.push(format!("CEL: {e:?}"));
    }
    out
}

fn walk(schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    if v.is_null() {
        if schema["nullable"] != true {
            out.push(format!("{path}: must not be null"));
        }
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        out.push(format!("{path}: {v} is not one of {allowed:?}"));
    }
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    match (schema["type"].as_str(), v) {
        (Some("object"), Value::Object(m)) => object(schema, m, path, out),
        (Some("array"), Value::Array(items)) => array(schema, items, path, out),
        (Some("string"), Value::String(s)) => string(schema, s, path, out),
        (_, Value::String(s)) if int_or_string => string(schema, s, path, out),
        (Some("integer"), Value::Number(n)) if n.is_i64() || n.is_u64() => number(schema, n, path, out),
        (_, Value::Number(n)) if int_or_string => number(schema, n, path, out),
        (Some("number"), Value::Number(n)) => number(schema, n, path, out),
        (Some("boolean"), Value::Bool(_)) => {}
        (None, _) => {}
        (Some(t), v) => out.push(format!("{path}: expected {t}, got {v}")),
    }
}

fn object(schema: &Value, m: &serde_json::Map<String, Value>, path: &str, out: &mut Vec<String>) {
    let props = schema["properties"].as_object();
    for r in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if !m.contains_key(r) {
            out.push(format!("{path}.{r}: required"));
        }
    }
    for (k, v) in m {
        match props.and_then(|p| p.get(k)) {
            Some(s) => walk(s, v, &format!("{path}.{k}"), out),
            None if schema["additionalProperties"].is_object() => {
                walk(&schema["additionalProperties"], v, &format!("{path}.{k}"), out)
            }
            None if schema["x-kubernetes-preserve-unknown-fields"] == true => {}
            None => out.push(format!("{path}.{k}: unknown field")),
        }
    }
}

fn array(schema: &Value, items: &[Value], path: &str, out: &mut Vec<String>) {
    let n = items.len() as u64;
    if schema["maxItems"].as_u64().is_some_and(|m| n > m)
        || schema["minItems"].as_u64().is_some_and(|m| n < m)
    {
        out.push(format!("{path}: {n} items is out of bounds"));
    }
    if schema["x-kubernetes-list-type"] == "map" {
        let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let mut seen = std::collections::HashSet::new();
        for item in items {
            let key: Vec<String> = keys.iter().map(|k| item[*k].to_string()).collect();
            if !seen.insert(key.clone()) {
                out.push(format!("{path}: duplicate entry {key:?}"));
            }
        }
    }
    for (i, item) in items.iter().enumerate() {
        walk(&schema["items"], item, &format!("{path}[{i}]"), out);
    }
}

fn string(schema: &Value, s: &str, path: &str, out: &mut Vec<String>) {
    let n = s.chars().count() as u64;
    if schema["maxLength"].as_u64().is_some_and(|m| n > m)
        || schema["minLength"].as_u64().is_some_and(|m| n < m)
    {
        out.push(format!("{path}: length {n} is out of bounds"));
    }
    if let Some(p) = schema["pattern"].as_str()
        && !regex::Regex::new(p).unwrap().is_match(s)
    {
        out.push(format!("{path}: {s:?} does not match {p}"));
    }
}

fn number(schema: &Value, n: &serde_json::Number, path: &str, out: &mut Vec<String>) {
    let x = n.as_f64().unwrap();
    if schema["minimum"].as_f64().is_some_and(|m| x < m) || schema["maximum"].as_f64().is_some_and(|m| x > m)
    {
        out.push(format!("{path}: {x} is out of bounds"));
    }
}

/// Every place in a schema that leaves a value unbounded: a string with neither `maxLength` nor `enum`,
/// a list without `maxItems`, a number without `minimum` and `maximum`, a map without `maxProperties`.
pub fn unbounded(schema: &Value, path: &str, out: &mut Vec<String>) {
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    match schema["type"].as_str() {
        Some("string") if schema["maxLength"].is_null() && schema["enum"].is_null() => {
            out.push(format!("{path}: string without maxLength"))
        }
        Some("array") if schema["maxItems"].is_null() => out.push(format!("{path}: list without maxItems")),
        Some("integer" | "number") if schema["minimum"].is_null() || schema["maximum"].is_null() => {
            out.push(format!("{path}: number without minimum and maximum"))
        }
        Some("object") if schema["additionalProperties"].is_object() && schema["maxProperties"].is_null() => {
            out.push(format!("{path}: map without maxProperties"))
        }
        None if int_or_string && (schema["maxLength"].is_null() || schema["maximum"].is_null()) => {
            out.push(format!("{path}: int-or-string without maxLength and maximum"))
        }
        _ => {}
    }
    for (k, s) in schema["properties"].as_object().into_iter().flatten() {
        unbounded(s, &format!("{path}.{k}"), out);
    }
    if schema["items"].is_object() {
        unbounded(&schema["items"], &format!("{path}[]"), out);
    }
    if schema["additionalProperties"].is_object() {
        unbounded(&schema["additionalProperties"], &format!("{path}{{}}"), out);
    }
}
