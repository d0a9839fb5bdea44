//! What every operation of the public API shares, added to the generated document in one place: the
//! bearer-JWT scheme, the error answers each route can give (all `application/problem+json` with the one
//! [`Problem`] schema), the headers (`Idempotency-Key`, `ETag`/`If-None-Match`, `RateLimit-*`,
//! `Retry-After`, `Location`, `x-request-id`) and the links that describe the asynchronous write model.

use super::{CommandIdParam, Cursor, Limit, PostIdParam, Problem, StreamIdParam, UserIdParam};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Header, OpenApi, Ref, RefOr, Required, Response, ResponseBuilder};
use utoipa::{Modify, PartialSchema, ToSchema};

/// How a route behaves, as far as the shared parts of its description go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub has_body: bool,
}

impl Route<'_> {
    fn is_write(&self) -> bool {
        self.method != "get"
    }

    /// Reads answered with a weak `ETag` (and `304` to `If-None-Match`).
    pub fn is_cached_read(&self) -> bool {
        !self.is_write() && !self.path.starts_with("/v1/commands/") && !self.path.starts_with("/v1/streams/")
    }

    /// Every error status this route can answer, with what it means here.
    pub fn errors(&self) -> Vec<(u16, &'static str)> {
        let mut out = vec![
            (400, "Bad input: a path, query or body value breaks a rule stated in this document"),
            (401, "No token, or a token that is expired, malformed or wrongly signed"),
        ];
        let acts_as_user = self.is_write() && self.path.contains("{user_id}");
        if acts_as_user {
            out.push((403, "The path's user is not the caller: a user acts only as itself"));
        } else if self.path.ends_with("/home") {
            out.push((403, "Only the owner reads a home feed"));
        } else if self.path.starts_with("/v1/streams/") {
            out.push((403, "The token lacks the `admin` role"));
        }
        if !self.is_write()
            && ["/v1/users/{user_id}", "/v1/posts/{post_id}", "/v1/commands/{command_id}"]
                .contains(&self.path)
        {
            out.push((404, "Not found (or, for a command, not issued by the caller)"));
        }
        if self.has_body {
            out.push((413, "The body is larger than 1 MiB"));
            out.push((415, "The body is not sent as `application/json`"));
        }
        if self.is_write() {
            out.push((422, "The `Idempotency-Key` was already used for a different request"));
        }
        out.push((429, "Rate limited: wait `Retry-After` seconds"));
        out.push((502, "The gateway got no valid answer from the service behind it"));
        out.push((
            503,
            "A dependency is down (queue, store or projection): retry after `Retry-After` seconds",
        ));
        out.push((504, "The service behind the gateway did not answer in time"));
        out
    }
}

/// Adds the shared parts to a generated document (see the module docs). Idempotent.
pub struct Complete;

impl Modify for Complete {
    fn modify(&self, doc: &mut OpenApi) {
        complete(doc);
    }
}

pub fn complete(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.insert(Problem::name().into_owned(), Problem::schema());
    // Parameter schemas are referenced by name but not collected by the derive.
    for (name, schema) in [
        (UserIdParam::name(), UserIdParam::schema()),
        (PostIdParam::name(), PostIdParam::schema()),
        (CommandIdParam::name(), CommandIdParam::schema()),
        (StreamIdParam::name(), StreamIdParam::schema()),
        (Limit::name(), Limit::schema()),
        (Cursor::name(), Cursor::schema()),
    ] {
        components.schemas.insert(name.into_owned(), schema);
    }
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        let ops = [
            ("get", &mut item.get),
            ("put", &mut item.put),
            ("post", &mut item.post),
            ("delete", &mut item.delete),
            ("patch", &mut item.patch),
        ];
        for (method, op) in ops {
            if let Some(op) = op.as_mut() {
                let route = Route { method, path, has_body: op.request_body.is_some() };
                describe(op, route);
            }
        }
    }
}

fn describe(op: &mut Operation, route: Route<'_>) {
    op.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
    let params = op.parameters.get_or_insert_with(Vec::new);
    if route.is_write() {
        push_param(params, idempotency_key());
    }
    if route.is_cached_read() {
        push_param(params, if_none_match());
    }
    for (status, description) in route.errors() {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(problem(status, description)));
    }
    if route.is_cached_read() {
        op.responses.responses.entry("304".into()).or_insert_with(|| {
            RefOr::T(
                ResponseBuilder::new()
                    .description("Not modified: the `If-None-Match` tag is still current")
                    .header("ETag", etag())
                    .build(),
            )
        });
    }
    for (status, response) in op.responses.responses.iter_mut() {
        let RefOr::T(response) = response else { continue };
        response.headers.entry("x-request-id".into()).or_insert_with(request_id);
        for (name, description) in RATE_LIMIT_HEADERS {
            response.headers.entry(name.into()).or_insert_with(|| RefOr::T(seconds(description)));
        }
        match status.as_str() {
            "200" if route.is_cached_read() => {
                response.headers.entry("ETag".into()).or_insert_with(|| RefOr::T(etag()));
            }
            "202" => accepted(response, route),
            _ => {}
        }
    }
}

/// The gateway's rate-limit headers (IETF draft `RateLimit-*`), on every answer of a limited route.
const RATE_LIMIT_HEADERS: [(&str, &str); 3] = [
    ("RateLimit-Limit", "Requests allowed per window"),
    ("RateLimit-Remaining", "Requests left in this window"),
    ("RateLimit-Reset", "Seconds until the window resets"),
];

/// What a new post's id leads to at once (all writes: accepted now, decided later). Reading the post itself
/// is not among them: it is `404` until the command is committed and projected.
const POST_LINKS: [(&str, &str); 4] = [
    ("EditPost", "editPost"),
    ("DeletePost", "deletePost"),
    ("AddComment", "addComment"),
    ("GetComments", "getComments"),
];

fn push_param(params: &mut Vec<RefOr<Parameter>>, p: Parameter) {
    let exists = params.iter().any(|q| matches!(q, RefOr::T(q) if q.name == p.name));
    if !exists {
        params.push(RefOr::T(p));
    }
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn param(name: &str, description: &str, schema: ObjectBuilder) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema.build()))
        .build()
}

fn header(description: &str, schema: ObjectBuilder) -> Header {
    HeaderBuilder::new().schema(Some(schema.build())).description(Some(description)).build()
}

fn idempotency_key() -> Parameter {
    param(
        "Idempotency-Key",
        "Makes a retry safe: the same key with the same request (method, path, body) within 24 hours \
             answers the first `202` again (same `command_id`, same `post_id`/`comment_id`) and has no \
             second effect; the same key with a different request is `422`. Scoped to the caller.",
        string().min_length(Some(1)).max_length(Some(128)).pattern(Some("^[!-~]{1,128}$")),
    )
}

fn if_none_match() -> Parameter {
    param(
        "If-None-Match",
        "An `ETag` from an earlier answer: `304` with no body if it is still current",
        string(),
    )
}

fn etag() -> Header {
    header("Weak tag of the body; send it back as `If-None-Match`", string())
}

fn request_id() -> RefOr<Header> {
    RefOr::T(header(
        "The request's id (the client's, or one the gateway made), also in logs and traces",
        string(),
    ))
}

fn seconds(description: &str) -> Header {
    header(description, ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)))
}

fn problem(status: u16, description: &str) -> Response {
    let mut r = ResponseBuilder::new()
        .description(description)
        .content("application/problem+json", Content::new(Some(Ref::from_schema_name(Problem::name()))));
    if status == 429 {
        r = r.header("Retry-After", seconds("Seconds until a request may succeed"));
    } else if status == 503 {
        r = r.header(
            "Retry-After",
            seconds("Seconds to wait before retrying (with the same `Idempotency-Key`)"),
        );
    }
    r.build()
}

/// The asynchronous write model: the 202 names the command, where to follow it, and links to it.
fn accepted(response: &mut Response, route: Route<'_>) {
    let location = header(
        "`/v1/commands/{command_id}`: where the command's outcome is read",
        string().format(Some(SchemaFormat::Custom("uri-reference".into()))),
    );
    response.headers.entry("Location".into()).or_insert(RefOr::T(location));
    response.links.entry("GetCommand".into()).or_insert_with(|| {
        RefOr::T(
            LinkBuilder::new()
                .operation_id("getCommand")
                .parameter("command_id", "$response.body#/command_id")
                .description(
                    "The command's outcome. The write is applied once it is `committed`, and reaches the \
                     reads as soon as the projection has caught up (usually within milliseconds).",
                )
                .build(),
        )
    });
    if route.method == "post" && route.path == "/v1/posts" {
        for (name, operation) in POST_LINKS {
            response.links.entry(name.into()).or_insert_with(|| {
                RefOr::T(
                    LinkBuilder::new()
                        .operation_id(operation)
                        .parameter("post_id", "$response.body#/post_id")
                        .description("Accepted at once; decided (and possibly rejected) when the post exists")
                        .build(),
                )
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Route;

    fn statuses(method: &str, path: &str, has_body: bool) -> Vec<u16> {
        Route { method, path, has_body }.errors().into_iter().map(|(s, _)| s).collect()
    }

    #[test]
    fn each_route_documents_the_errors_it_can_answer() {
        let common = [400, 401, 429, 502, 503, 504];
        let cases: [(&str, &str, bool, &[u16]); 8] = [
            ("post", "/v1/posts", true, &[413, 415, 422]),
            ("put", "/v1/users/{user_id}/following/{target_id}", false, &[403, 422]),
            ("patch", "/v1/posts/{post_id}", true, &[413, 415, 422]),
            ("get", "/v1/users/{user_id}", false, &[404]),
            ("get", "/v1/users/{user_id}/home", false, &[403]),
            ("get", "/v1/users/{user_id}/timeline", false, &[]),
            ("get", "/v1/streams/{stream_id}/events", false, &[403]),
            ("get", "/v1/commands/{command_id}", false, &[404]),
        ];
        for (method, path, body, extra) in cases {
            let mut want: Vec<u16> = common.iter().chain(extra).copied().collect();
            want.sort_unstable();
            assert_eq!(statuses(method, path, body), want, "{method} {path}");
        }
    }

    #[test]
    fn only_projection_reads_are_cached() {
        let read = |path| Route { method: "get", path, has_body: false }.is_cached_read();
        assert!(read("/v1/users/{user_id}/home") && read("/v1/posts/{post_id}"));
        assert!(!read("/v1/commands/{command_id}") && !read("/v1/streams/{stream_id}/events"));
        assert!(!Route { method: "post", path: "/v1/posts", has_body: true }.is_cached_read());
    }
}
