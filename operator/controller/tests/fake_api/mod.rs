//! A FAKE Kubernetes API server for tests (not a real kube-apiserver): an in-memory object store on
//! loopback that behaves like a real one where controller bugs hide:
//! - uid, resourceVersion and generation assignment; the status subresource kept apart from the spec;
//! - a write that changes nothing keeps the resourceVersion and sends no watch event;
//! - `409 Conflict` on a stale resourceVersion (replace, merge patch and server-side apply alike);
//! - server-side apply emulated per field manager (fields a manager stops applying are removed);
//! - watches that resume from a resourceVersion (history replayed) and can be made to lag behind writes
//!   ([`FakeApi::set_watch_delay`]), so caches are stale as on a real, busy API server;
//! - label and field selectors, owner-reference garbage collection on delete;
//! - every request recorded ([`FakeApi::requests`]), so tests can assert on the sequence of writes.
//!
//! It does not run CEL, admission, defaulting or any controller but GC; what only a real cluster
//! proves is listed in e2e/README.md.
#![allow(dead_code, clippy::unwrap_used)]

mod discovery;
mod merge;
mod watch;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub at: Duration,
    pub method: String,
    /// e.g. `apis/apps/v1/namespaces/apps/deployments/x`.
    pub path: String,
    pub query: HashMap<String, String>,
    pub user_agent: String,
    pub status: u16,
    /// The body of a write.
    pub body: Option<Value>,
}

impl Request {
    pub fn is_watch(&self) -> bool {
        self.query.get("watch").is_some_and(|w| w == "true" || w == "1")
    }
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
    pub fn is_lease(&self) -> bool {
        self.path.contains("/leases")
    }
    pub fn is_status_write(&self) -> bool {
        self.is_write() && self.path.ends_with("/status")
    }
    /// Whether kubectl (not the operator) made it.
    pub fn is_kubectl(&self) -> bool {
        self.user_agent.starts_with("kubectl")
    }
}

/// One stored change, as watches see it.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    /// `{prefix}/{ns}/{plural}`.
    pub path: String,
    pub event: Value,
    pub at: Instant,
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// key: "{prefix}/{ns}/{plural}/{name}" where prefix is "api/v1" or "apis/{group}/{version}".
    objects: BTreeMap<String, Value>,
    /// What each field manager last applied, per object (and per status subresource).
    applied: HashMap<(String, String), Value>,
    history: Vec<Change>,
}

#[derive(Clone)]
pub struct FakeApi {
    inner: Arc<Mutex<Store>>,
    changes: broadcast::Sender<Change>,
    requests: Arc<Mutex<Vec<Request>>>,
    watch_delay: Arc<Mutex<Duration>>,
    started: Instant,
    pub url: String,
}

pub(crate) fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message, "code": code});
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

fn uuid_like(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let (changes, _) = broadcast::channel(65_536);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let api = FakeApi {
            inner: Arc::default(),
            changes,
            requests: Arc::default(),
            watch_delay: Arc::default(),
            started: Instant::now(),
            url,
        };
        let app = discovery::routes()
            .route("/api/v1/{*rest}", axum::routing::any(core_handler))
            .route("/apis/{group}/{version}/{*rest}", axum::routing::any(group_handler))
            .fallback(|uri: axum::http::Uri| async move {
                status(404, "NotFound", &format!("the fake API does not serve {uri}"))
            })
            .with_state(api.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        api
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    /// Deliver watch events this long after the write (caches lag behind, as on a busy API server).
    pub fn set_watch_delay(&self, d: Duration) {
        *self.watch_delay.lock().unwrap() = d;
    }

    pub fn watch_delay(&self) -> Duration {
        *self.watch_delay.lock().unwrap()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Time since the fake started (the clock of [`Request::at`]).
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every change stored so far (what watches replay), oldest first.
    pub fn history(&self) -> Vec<Change> {
        self.inner.lock().unwrap().history.clone()
    }

    /// All objects of a kind path (`apis/apps/v1`, `deployments`) in a namespace.
    pub fn list(&self, prefix: &str, ns: &str, plural: &str) -> Vec<Value> {
        let p = format!("{prefix}/{ns}/{plural}/");
        let s = self.inner.lock().unwrap();
        s.objects.iter().filter(|(k, _)| k.starts_with(&p)).map(|(_, v)| v.clone()).collect()
    }

    pub fn get(&self, prefix: &str, ns: &str, plural: &str, name: &str) -> Option<Value> {
        self.inner.lock().unwrap().objects.get(&format!("{prefix}/{ns}/{plural}/{name}")).cloned()
    }

    /// Write an object as a controller would (e.g. the test playing the Job or Deployment controller).
    pub fn put(&self, prefix: &str, ns: &str, plural: &str, obj: Value) -> Value {
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        self.store(prefix, ns, plural, &name, obj, false)
    }

    /// Write an object's main resource as a client would (`kubectl edit`): its status is left as it is.
    pub fn update(&self, prefix: &str, ns: &str, plural: &str, obj: Value) -> Value {
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        self.store(prefix, ns, plural, &name, obj, true)
    }

    /// Delete an object, and (as the garbage collector would) every object it controls.
    pub fn delete(&self, prefix: &str, ns: &str, plural: &str, name: &str) -> Option<Value> {
        let key = format!("{prefix}/{ns}/{plural}/{name}");
        let mut s = self.inner.lock().unwrap();
        let obj = s.objects.remove(&key)?;
        s.rv += 1;
        let rv = s.rv;
        let mut gone = obj.clone();
        gone["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(&mut s, format!("{prefix}/{ns}/{plural}"), json!({"type": "DELETED", "object": gone}));
        let uid = obj["metadata"]["uid"].clone();
        let owned: Vec<String> = s
            .objects
            .iter()
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        drop(s);
        for k in owned {
            let parts: Vec<&str> = k.rsplitn(4, '/').collect();
            if let [n, pl, namespace, pre] = parts.as_slice() {
                self.delete(pre, namespace, pl, n);
            }
        }
        Some(obj)
    }

    fn record(&self, s: &mut Store, path: String, event: Value) {
        let change = Change { rv: s.rv, path, event, at: Instant::now() };
        s.history.push(change.clone());
        let _ = self.changes.send(change);
    }

    /// Store `obj` (a create or a whole new version). `keep_status`: a write to the main resource,
    /// which never changes status. A write that changes nothing keeps the resourceVersion.
    fn store(
        &self,
        prefix: &str,
        ns: &str,
        plural: &str,
        name: &str,
        mut obj: Value,
        keep_status: bool,
    ) -> Value {
        let key = format!("{prefix}/{ns}/{plural}/{name}");
        if plural == "secrets" {
            // As the real API server does: `stringData` is write-only, merged into `data` as base64.
            if let Some(Value::Object(plain)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
                for (k, v) in plain {
                    obj["data"][k] =
                        Value::String(testkit::base64(v.as_str().unwrap_or("").as_bytes(), false));
                }
            }
        }
        let mut s = self.inner.lock().unwrap();
        let existing = s.objects.get(&key).cloned();
        let meta = obj["metadata"].as_object_mut().unwrap();
        meta.insert("name".into(), name.into());
        if ns != "_" {
            meta.insert("namespace".into(), ns.into());
        }
        meta.remove("managedFields");
        match &existing {
            Some(old) => {
                for k in ["uid", "creationTimestamp", "resourceVersion", "generation"] {
                    obj["metadata"][k] = old["metadata"][k].clone();
                }
                if keep_status {
                    match old.get("status") {
                        Some(st) => obj["status"] = st.clone(),
                        None => {
                            obj.as_object_mut().unwrap().remove("status");
                        }
                    }
                }
                if merge::same_content(old, &obj) {
                    return old.clone();
                }
                if old.get("spec") != obj.get("spec") {
                    obj["metadata"]["generation"] =
                        json!(old["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
                }
            }
            None => {
                let n = s.rv + 1;
                obj["metadata"]["uid"] = json!(uuid_like(n));
                obj["metadata"]["creationTimestamp"] =
                    json!(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                obj["metadata"]["generation"] = json!(1);
            }
        }
        s.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        s.objects.insert(key, obj.clone());
        let kind = if existing.is_some() { "MODIFIED" } else { "ADDED" };
        self.record(&mut s, format!("{prefix}/{ns}/{plural}"), json!({"type": kind, "object": obj}));
        obj
    }
}

async fn core_handler(
    State(api): State<FakeApi>,
    Path(rest): Path<String>,
    method: Method,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    handle(api, "api/v1".into(), rest, method, headers, q, body).await
}

async fn group_handler(
    State(api): State<FakeApi>,
    Path((group, version, rest)): Path<(String, String, String)>,
    method: Method,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    handle(api, format!("apis/{group}/{version}"), rest, method, headers, q, body).await
}

/// What a request is about.
struct Target {
    prefix: String,
    ns: Option<String>,
    plural: String,
    name: Option<String>,
    sub: Option<String>,
}

impl Target {
    fn ns(&self) -> &str {
        self.ns.as_deref().unwrap_or("_")
    }
    fn key(&self) -> String {
        format!("{}/{}/{}/{}", self.prefix, self.ns(), self.plural, self.name.as_deref().unwrap_or(""))
    }
}

async fn handle(
    api: FakeApi,
    prefix: String,
    rest: String,
    method: Method,
    headers: HeaderMap,
    q: HashMap<String, String>,
    body: Bytes,
) -> Response {
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let (ns, plural, name, sub) = match parts.as_slice() {
        ["namespaces", ns, plural] => (Some(*ns), *plural, None, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), None),
        ["namespaces", ns, plural, name, sub] => (Some(*ns), *plural, Some(*name), Some(*sub)),
        [plural] => (None, *plural, None, None),
        _ => return status(404, "NotFound", &format!("no route {rest}")),
    };
    let t = Target {
        prefix: prefix.clone(),
        ns: ns.map(str::to_owned),
        plural: plural.to_owned(),
        name: name.map(str::to_owned),
        sub: sub.map(str::to_owned),
    };
    let body_json: Option<Value> = if body.is_empty() { None } else { serde_json::from_slice(&body).ok() };
    let written =
        matches!(method, Method::POST | Method::PUT | Method::PATCH).then(|| body_json.clone()).flatten();
    let resp = route(&api, &t, &method, &headers, &q, body_json);
    api.requests.lock().unwrap().push(Request {
        at: api.started.elapsed(),
        method: method.to_string(),
        path: format!("{prefix}/{rest}"),
        query: q,
        user_agent: headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned(),
        status: resp.status().as_u16(),
        body: written,
    });
    resp
}

fn route(
    api: &FakeApi,
    t: &Target,
    method: &Method,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    body: Option<Value>,
) -> Response {
    let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
    match (method, t.name.is_some()) {
        (&Method::GET, false) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            watch::serve(api, t, q)
        }
        (&Method::GET, false) => list(api, t, q, accept),
        (&Method::GET, true) => match api.inner.lock().unwrap().objects.get(&t.key()).cloned() {
            Some(obj) if discovery::wants_table(accept) => {
                let rv = obj["metadata"]["resourceVersion"].as_str().unwrap_or("").to_owned();
                axum::Json(discovery::table(&t.plural, &[obj], &rv)).into_response()
            }
            Some(obj) => axum::Json(obj).into_response(),
            None => status(
                404,
                "NotFound",
                &format!("{} {} not found", t.plural, t.name.as_deref().unwrap_or("")),
            ),
        },
        (&Method::POST, false) => create(api, t, body),
        (&Method::PUT, true) => replace(api, t, body),
        (&Method::PATCH, true) => {
            let ctype = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
            let manager = q.get("fieldManager").cloned().unwrap_or_default();
            patch(api, t, body, ctype, &manager)
        }
        (&Method::DELETE, true) => match api.delete(&t.prefix, t.ns(), &t.plural, t.name.as_deref().unwrap())
        {
            Some(obj) => axum::Json(obj).into_response(),
            None => status(404, "NotFound", "not found"),
        },
        _ => status(405, "MethodNotAllowed", "not supported by the fake API"),
    }
}

/// `a.b.c=value` selectors, comma-separated (equality only, as the operator and kubectl here use them).
fn matches_fields(obj: &Value, selector: Option<&String>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else { return true };
    sel.split(',').all(|term| {
        let (path, want) = term.split_once('=').unwrap_or((term, ""));
        let got = path.trim().split('.').fold(obj, |v, seg| &v[seg]);
        got.as_str() == Some(want.trim_start_matches('=').trim())
    })
}

pub(crate) fn matches_labels(obj: &Value, selector: Option<&String>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else { return true };
    sel.split(',').all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj["metadata"]["labels"][k.trim()].as_str() == Some(v.trim_start_matches('=').trim())
    })
}

fn list(api: &FakeApi, t: &Target, q: &HashMap<String, String>, accept: &str) -> Response {
    let s = api.inner.lock().unwrap();
    let items: Vec<Value> = s
        .objects
        .iter()
        .filter(|(k, _)| {
            let rest = k.strip_prefix(&format!("{}/", t.prefix)).unwrap_or("");
            let segs: Vec<&str> = rest.splitn(3, '/').collect();
            segs.len() == 3 && segs[1] == t.plural && t.ns.as_deref().is_none_or(|n| n == segs[0])
        })
        .map(|(_, v)| v.clone())
        .filter(|v| matches_labels(v, q.get("labelSelector")) && matches_fields(v, q.get("fieldSelector")))
        .collect();
    let rv = s.rv.to_string();
    drop(s);
    if discovery::wants_table(accept) {
        return axum::Json(discovery::table(&t.plural, &items, &rv)).into_response();
    }
    axum::Json(
        json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items}),
    )
    .into_response()
}

fn create(api: &FakeApi, t: &Target, body: Option<Value>) -> Response {
    let Some(obj) = body else { return status(400, "BadRequest", "no body") };
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
    if api.get(&t.prefix, t.ns(), &t.plural, &name).is_some() {
        return status(409, "AlreadyExists", &format!("{} {name} already exists", t.plural));
    }
    (StatusCode::CREATED, axum::Json(api.store(&t.prefix, t.ns(), &t.plural, &name, obj, false)))
        .into_response()
}

fn stale(current: &Value, body: &Value) -> bool {
    let sent = &body["metadata"]["resourceVersion"];
    !sent.is_null() && *sent != current["metadata"]["resourceVersion"]
}

fn replace(api: &FakeApi, t: &Target, body: Option<Value>) -> Response {
    let Some(mut obj) = body else { return status(400, "BadRequest", "no body") };
    let name = t.name.clone().unwrap();
    let Some(current) = api.get(&t.prefix, t.ns(), &t.plural, &name) else {
        return status(404, "NotFound", "not found");
    };
    if obj["metadata"]["resourceVersion"].is_null() || stale(&current, &obj) {
        return status(
            409,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version",
        );
    }
    if t.sub.as_deref() == Some("status") {
        let mut whole = current.clone();
        whole["status"] = obj["status"].take();
        obj = whole;
    }
    axum::Json(api.store(&t.prefix, t.ns(), &t.plural, &name, obj, t.sub.is_none())).into_response()
}

fn patch(api: &FakeApi, t: &Target, body: Option<Value>, ctype: &str, manager: &str) -> Response {
    let Some(patch) = body else { return status(400, "BadRequest", "no body") };
    let name = t.name.clone().unwrap();
    let current = api.get(&t.prefix, t.ns(), &t.plural, &name);
    if current.as_ref().is_some_and(|c| stale(c, &patch)) {
        return status(
            409,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version",
        );
    }
    let is_apply = ctype.starts_with("application/apply-patch");
    let on_status = t.sub.as_deref() == Some("status");
    let section = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove(if on_status { "spec" } else { "status" });
            if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("resourceVersion");
            }
        }
        v
    };
    let patch = section(&patch);
    let obj = match (current, is_apply) {
        (None, false) => return status(404, "NotFound", "not found"),
        (None, true) if on_status => return status(404, "NotFound", "not found"),
        (current, true) => {
            let key = (t.key() + if on_status { "/status" } else { "" }, manager.to_owned());
            let mut s = api.inner.lock().unwrap();
            let previous = s.applied.insert(key, patch.clone());
            drop(s);
            merge::apply(current, &patch, previous.as_ref())
        }
        (Some(mut cur), false) => {
            merge::merge(&mut cur, &patch);
            cur
        }
    };
    axum::Json(api.store(&t.prefix, t.ns(), &t.plural, &name, obj, !on_status)).into_response()
}
