//! Watches: every change after the resourceVersion the client gives (replayed from history, then live),
//! each delivered no sooner than the configured delay after it was stored.

use super::{Change, FakeApi, Target};
use axum::body::{Body, Bytes};
use axum::response::Response;
use std::collections::HashMap;
use tokio::sync::broadcast;

pub(super) fn serve(api: &FakeApi, t: &Target, q: &HashMap<String, String>) -> Response {
    let from: u64 = q.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let path_prefix = format!("{}/", t.prefix);
    let (plural, ns, selector) = (t.plural.clone(), t.ns.clone(), q.get("labelSelector").cloned());
    let wanted = move |c: &Change| {
        let Some(rest) = c.path.strip_prefix(&path_prefix) else { return false };
        let (evns, evplural) = rest.split_once('/').unwrap_or(("", ""));
        c.rv > from
            && evplural == plural
            && ns.as_deref().is_none_or(|n| n == evns)
            && super::matches_labels(&c.event["object"], selector.as_ref())
    };
    // Subscribe before reading history, under the store's lock: no change falls between the two.
    let (backlog, mut rx) = {
        let s = api.inner.lock().unwrap();
        (s.history.iter().filter(|c| wanted(c)).cloned().collect::<Vec<_>>(), api.changes.subscribe())
    };
    let delay = api.watch_delay.clone();
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let mut last = backlog.last().map_or(0, |c| c.rv);
        for c in backlog {
            if !send(&tx, &c, &delay).await {
                return;
            }
        }
        loop {
            match rx.recv().await {
                Ok(c) if c.rv > last && wanted(&c) => {
                    last = c.rv;
                    if !send(&tx, &c, &delay).await {
                        return;
                    }
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(receiver_stream(out)))
        .unwrap()
}

fn receiver_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

async fn send(
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    c: &Change,
    delay: &std::sync::Arc<std::sync::Mutex<std::time::Duration>>,
) -> bool {
    let d = *delay.lock().unwrap();
    let due = c.at + d;
    tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
    let mut line = serde_json::to_vec(&c.event).unwrap();
    line.push(b'\n');
    tx.send(Ok(Bytes::from(line))).await.is_ok()
}
