//! The input rules are stated twice: as patterns and lengths in the OpenAPI document (for clients) and as
//! the domain's newtypes (for the server). This checks, on boundary samples, that a value satisfies the
//! document exactly when the server accepts it, so a generated client never sends what the server refuses.
#![allow(clippy::unwrap_used)]

use domain::{Bio, DisplayName, Handle, InvalidValue, PostBody, UserId};
use serde_json::Value;
use utoipa::OpenApi;

/// Whether `value` satisfies a string schema (pattern, minLength, maxLength in code points).
fn satisfies(schema: &Value, value: &str) -> bool {
    let n = value.chars().count() as u64;
    let pattern = schema["pattern"].as_str().map(|p| regex::Regex::new(p).unwrap());
    pattern.is_none_or(|p| p.is_match(value))
        && schema["minLength"].as_u64().is_none_or(|min| n >= min)
        && schema["maxLength"].as_u64().is_none_or(|max| n <= max)
}

fn samples() -> Vec<String> {
    let mut out: Vec<String> = [
        "", "a", "ab", "abc", "abc_123", "ABC", "ab-c", "a.b@c-d", "a b", "abc\n", "\nabc", "x\ty", "x\r\ny",
        "a\u{0}", "a\u{7}", "a\u{7f}", "a\u{85}", "a\u{9f}", "é", "日本", "🙂", "  x  ",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Every white-space character alone and around a letter.
    for ws in [
        '\t', '\n', '\u{b}', '\u{c}', '\r', ' ', '\u{85}', '\u{a0}', '\u{1680}', '\u{2000}', '\u{200a}',
        '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}', '\u{3000}', '\u{180e}', '\u{200b}', '\u{feff}',
    ] {
        out.push(ws.to_string());
        out.push(format!("{ws}x{ws}"));
    }
    for n in [29, 30, 31, 63, 64, 65, 279, 280, 281, 1999, 2000, 2001] {
        out.push("a".repeat(n));
    }
    out
}

fn check(schema: &Value, what: &str, parse: impl Fn(String) -> Result<(), InvalidValue>) {
    for s in samples() {
        assert_eq!(satisfies(schema, &s), parse(s.clone()).is_ok(), "{what} disagrees on {s:?} ({schema})");
    }
}

#[test]
fn the_document_states_exactly_the_rules_the_server_enforces() {
    let doc = serde_json::to_value(write_api::ApiDoc::openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let field = |schema: &str, f: &str| schemas[schema]["properties"][f].clone();
    check(&field("CreateUser", "handle"), "handle", |s| Handle::parse(s).map(drop));
    check(&field("CreateUser", "display_name"), "display_name", |s| DisplayName::parse(s).map(drop));
    check(&field("UpdateUser", "display_name"), "display_name", |s| DisplayName::parse(s).map(drop));
    check(&field("CreateUser", "bio"), "bio", |s| Bio::parse(s).map(drop));
    check(&field("CreatePost", "body"), "body", |s| PostBody::parse(s).map(drop));
    check(&field("TextBody", "body"), "body", |s| PostBody::parse(s).map(drop));
    check(&schemas["UserIdParam"], "user id", |s| UserId::parse(s).map(drop));
}
