//! A FAKE Kubernetes API server for tests (not a real kube-apiserver): an in-memory object store on
//! loopback with the behaviour the operator relies on — uid, resourceVersion and generation assignment,
//! the status subresource kept apart from the spec, label-selector lists, create/replace (with
//! resourceVersion conflicts)/delete, server-side apply (approximated as "create, or merge the applied
//! fields") and JSON merge patches, and streaming watches. It does not run CEL, admission, defaulting,
//! garbage collection or any controller; what only a real cluster proves is listed in e2e/README.md.
#![allow(dead_code, clippy::unwrap_used)]

mod discovery;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

#[derive(Clone)]
pub struct FakeApi {
    inner: Arc<Mutex<Store>>,
    events: broadcast::Sender<(String, Value)>,
    pub url: String,
}

#[derive(Default)]
struct Store {
    rv: u64,
    /// key: "{prefix}/{ns}/{plural}/{name}" where prefix is "api/v1" or "apis/{group}/{version}".
    objects: BTreeMap<String, Value>,
}

fn merge(target: &mut Value, patch: &Value) {
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

fn matches_labels(obj: &Value, selector: Option<&String>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_empty()) else { return true };
    sel.split(',').all(|term| {
        let (k, v) = term.split_once('=').unwrap_or((term, ""));
        obj["metadata"]["labels"][k.trim()].as_str() == Some(v.trim_start_matches('=').trim())
    })
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message, "code": code});
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let (events, _) = broadcast::channel(4096);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let api = FakeApi { inner: Arc::default(), events, url };
        let app = axum::Router::new()
            .route("/api", axum::routing::get(|| async { axum::Json(discovery::api_versions()) }))
            .route("/apis", axum::routing::get(|| async { axum::Json(discovery::api_groups()) }))
            .route("/api/v1", axum::routing::get(|| async { resource_list("api/v1".into()) }))
            .route(
                "/apis/{group}/{version}",
                axum::routing::get(|Path((g, v)): Path<(String, String)>| async move {
                    resource_list(format!("apis/{g}/{v}"))
                }),
            )
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

    /// All objects of a kind path (`apis/apps/v1`, `deployments`) in a namespace.
    pub fn list(&self, prefix: &str, ns: &str, plural: &str) -> Vec<Value> {
        let p = format!("{prefix}/{ns}/{plural}/");
        self.inner
            .lock()
            .unwrap()
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(&p))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn get(&self, prefix: &str, ns: &str, plural: &str, name: &str) -> Option<Value> {
        self.inner.lock().unwrap().objects.get(&format!("{prefix}/{ns}/{plural}/{name}")).cloned()
    }

    /// Write an object as a controller would (e.g. the test playing the Job or Deployment controller).
    pub fn put(&self, prefix: &str, ns: &str, plural: &str, obj: Value) -> Value {
        let name = obj["metadata"]["name"].as_str().unwrap().to_owned();
        self.store(prefix, ns, plural, &name, obj, false)
    }

    pub fn delete(&self, prefix: &str, ns: &str, plural: &str, name: &str) {
        let key = format!("{prefix}/{ns}/{plural}/{name}");
        let removed = self.inner.lock().unwrap().objects.remove(&key);
        if let Some(obj) = removed {
            let _ = self
                .events
                .send((format!("{prefix}/{ns}/{plural}"), json!({"type": "DELETED", "object": obj})));
        }
    }

    fn store(
        &self,
        prefix: &str,
        ns: &str,
        plural: &str,
        name: &str,
        mut obj: Value,
        keep_status_of_existing: bool,
    ) -> Value {
        let key = format!("{prefix}/{ns}/{plural}/{name}");
        if plural == "secrets" {
            // As the real API server does: `stringData` is write-only, merged into `data` as base64.
            if let Some(Value::Object(plain)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
                for (k, v) in plain {
                    let encoded = testkit::base64(v.as_str().unwrap_or("").as_bytes(), false);
                    obj["data"][k] = Value::String(encoded);
                }
            }
        }
        let mut s = self.inner.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        let existing = s.objects.get(&key).cloned();
        let meta = obj["metadata"].as_object_mut().unwrap();
        meta.insert("name".into(), name.into());
        if ns != "_" {
            meta.insert("namespace".into(), ns.into());
        }
        meta.insert("resourceVersion".into(), rv.to_string().into());
        let kind_type = if existing.is_some() { "MODIFIED" } else { "ADDED" };
        match &existing {
            Some(old) => {
                meta.insert("uid".into(), old["metadata"]["uid"].clone());
                meta.insert("creationTimestamp".into(), old["metadata"]["creationTimestamp"].clone());
                let old_gen = old["metadata"]["generation"].as_i64().unwrap_or(1);
                let changed = old.get("spec") != obj.get("spec");
                obj["metadata"]["generation"] = json!(if changed { old_gen + 1 } else { old_gen });
                if keep_status_of_existing {
                    match old.get("status") {
                        Some(st) => obj["status"] = st.clone(),
                        None => {
                            obj.as_object_mut().unwrap().remove("status");
                        }
                    }
                }
            }
            None => {
                meta.insert("uid".into(), uuid_like(rv).into());
                meta.insert(
                    "creationTimestamp".into(),
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into(),
                );
                obj["metadata"]["generation"] = json!(1);
            }
        }
        s.objects.insert(key, obj.clone());
        drop(s);
        let _ =
            self.events.send((format!("{prefix}/{ns}/{plural}"), json!({"type": kind_type, "object": obj})));
        obj
    }
}

fn resource_list(prefix: String) -> Response {
    match discovery::resources(&prefix) {
        Some(list) => axum::Json(list).into_response(),
        None => status(404, "NotFound", &format!("no group version {prefix}")),
    }
}

fn uuid_like(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
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
    // namespaces/{ns}/{plural}[/{name}[/{sub}]] or {plural} (all namespaces)
    let (ns, plural, name, sub) = match parts.as_slice() {
        ["namespaces", ns, plural] => (Some(*ns), *plural, None, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name), None),
        ["namespaces", ns, plural, name, sub] => (Some(*ns), *plural, Some(*name), Some(*sub)),
        [plural] => (None, *plural, None, None),
        _ => return status(404, "NotFound", &format!("no route {rest}")),
    };
    let body_json: Option<Value> = if body.is_empty() { None } else { serde_json::from_slice(&body).ok() };
    match (method, name) {
        (Method::GET, None) => {
            let selector = q.get("labelSelector");
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return watch(api, prefix, ns.map(str::to_owned), plural.to_owned(), selector.cloned());
            }
            let items: Vec<Value> = {
                let s = api.inner.lock().unwrap();
                s.objects
                    .iter()
                    .filter(|(k, _)| {
                        let rest = k.strip_prefix(&format!("{prefix}/")).unwrap_or("");
                        let segs: Vec<&str> = rest.splitn(3, '/').collect();
                        segs.len() == 3 && segs[1] == plural && ns.is_none_or(|n| n == segs[0])
                    })
                    .map(|(_, v)| v.clone())
                    .filter(|v| matches_labels(v, selector))
                    .collect()
            };
            let rv = api.inner.lock().unwrap().rv.to_string();
            let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
            if discovery::wants_table(accept) {
                return axum::Json(discovery::table(plural, &items, &rv)).into_response();
            }
            axum::Json(json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items})).into_response()
        }
        (Method::GET, Some(name)) => match api.get(&prefix, ns.unwrap_or("_"), plural, name) {
            Some(obj)
                if discovery::wants_table(
                    headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or(""),
                ) =>
            {
                let rv = obj["metadata"]["resourceVersion"].as_str().unwrap_or("").to_owned();
                axum::Json(discovery::table(plural, &[obj], &rv)).into_response()
            }
            Some(obj) => axum::Json(obj).into_response(),
            None => status(404, "NotFound", &format!("{plural} {name} not found")),
        },
        (Method::POST, None) => {
            let Some(obj) = body_json else { return status(400, "BadRequest", "no body") };
            let name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
            if api.get(&prefix, ns.unwrap_or("_"), plural, &name).is_some() {
                return status(409, "AlreadyExists", &format!("{plural} {name} already exists"));
            }
            (
                StatusCode::CREATED,
                axum::Json(api.store(&prefix, ns.unwrap_or("_"), plural, &name, obj, false)),
            )
                .into_response()
        }
        (Method::PUT, Some(name)) => {
            let Some(obj) = body_json else { return status(400, "BadRequest", "no body") };
            let current = api.get(&prefix, ns.unwrap_or("_"), plural, name);
            let Some(current) = current else { return status(404, "NotFound", "not found") };
            if obj["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                return status(409, "Conflict", "the object has been modified");
            }
            axum::Json(api.store(&prefix, ns.unwrap_or("_"), plural, name, obj, sub.is_none()))
                .into_response()
        }
        (Method::PATCH, Some(name)) => {
            let Some(patch) = body_json else { return status(400, "BadRequest", "no body") };
            let ctype = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
            let current = api.get(&prefix, ns.unwrap_or("_"), plural, name);
            let ns_ = ns.unwrap_or("_");
            if sub == Some("status") {
                let Some(mut obj) = current else { return status(404, "NotFound", "not found") };
                let st = patch.get("status").cloned().unwrap_or(Value::Null);
                let mut merged = obj.get("status").cloned().unwrap_or(json!({}));
                merge(&mut merged, &st);
                obj["status"] = merged;
                return axum::Json(api.store(&prefix, ns_, plural, name, obj, false)).into_response();
            }
            let obj = match (current, ctype.starts_with("application/apply-patch")) {
                (None, true) => patch,
                (None, false) => return status(404, "NotFound", "not found"),
                (Some(mut cur), _) => {
                    let mut p = patch;
                    if let Some(m) = p.as_object_mut() {
                        m.remove("status");
                    }
                    merge(&mut cur, &p);
                    cur
                }
            };
            axum::Json(api.store(&prefix, ns_, plural, name, obj, true)).into_response()
        }
        (Method::DELETE, Some(name)) => match api.get(&prefix, ns.unwrap_or("_"), plural, name) {
            Some(obj) => {
                api.delete(&prefix, ns.unwrap_or("_"), plural, name);
                axum::Json(obj).into_response()
            }
            None => status(404, "NotFound", "not found"),
        },
        _ => status(405, "MethodNotAllowed", "not supported by the fake API"),
    }
}

fn watch(
    api: FakeApi,
    prefix: String,
    ns: Option<String>,
    plural: String,
    selector: Option<String>,
) -> Response {
    let mut rx = api.events.subscribe();
    let stream = async_stream_lines(move |tx| async move {
        loop {
            match rx.recv().await {
                Ok((path, ev)) => {
                    let Some(rest) = path.strip_prefix(&format!("{prefix}/")) else { continue };
                    let (evns, evplural) = rest.split_once('/').unwrap_or(("", ""));
                    if evplural != plural
                        || ns.as_deref().is_some_and(|n| n != evns)
                        || !matches_labels(&ev["object"], selector.as_ref())
                    {
                        continue;
                    }
                    let mut line = serde_json::to_vec(&ev).unwrap();
                    line.push(b'\n');
                    if tx.send(Ok(Bytes::from(line))).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    });
    Response::builder().header("content-type", "application/json").body(Body::from_stream(stream)).unwrap()
}

fn async_stream_lines<F, Fut>(f: F) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    tokio_stream_from(rx)
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
