//! Events on a `SocialCluster` (core/v1, what `kubectl describe` and `kubectl get events` show). The same
//! reason with the same message within an hour is counted on one Event; a new message is a new Event, so
//! a second failover never hides behind the first one's text (kube's recorder keys on the reason alone).

use crate::conditions::to_jiff;
use crate::plan::Note;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use socialnet_crd::SocialCluster;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const SERIES_WINDOW: Duration = Duration::from_secs(3600);

/// (object uid, reason, message): what makes two Events the same.
type SeriesKey = (String, String, String);

/// The Event a series is counted on.
struct Series {
    name: String,
    count: i32,
    written: Instant,
}

/// The merge patch that counts one more occurrence on an Event.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Repeat {
    count: i32,
    last_timestamp: Time,
}

/// Records Events, folding repeats.
pub struct EventSink {
    client: kube::Client,
    instance: String,
    seen: Mutex<HashMap<SeriesKey, Series>>,
}

impl EventSink {
    pub fn new(client: kube::Client, instance: &str) -> Self {
        Self { client, instance: instance.to_owned(), seen: Mutex::default() }
    }

    /// Record one Event about `sc`; a failure is logged, never fatal (status is the record that counts).
    pub async fn publish(&self, sc: &SocialCluster, note: &Note) {
        if let Err(e) = self.try_publish(sc, note).await {
            tracing::warn!(error = %e, reason = %note.reason, "could not record an event");
        }
    }

    async fn try_publish(&self, sc: &SocialCluster, note: &Note) -> Result<(), kube::Error> {
        let ns = sc.namespace().unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let key = (sc.uid().unwrap_or_default(), note.reason.to_string(), note.message.clone());
        let now = Utc::now();
        let repeat = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.retain(|_, s| s.written.elapsed() < SERIES_WINDOW);
            seen.get_mut(&key).map(|s| {
                s.count += 1;
                s.written = Instant::now();
                (s.name.clone(), s.count)
            })
        };
        if let Some((name, count)) = repeat {
            let patch = Repeat { count, last_timestamp: Time(to_jiff(now)) };
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            return Ok(());
        }
        let event = self.event(sc, &ns, note, now);
        let name = event.name_any();
        api.create(&PostParams::default(), &event).await?;
        let series = Series { name, count: 1, written: Instant::now() };
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(key, series);
        Ok(())
    }

    fn event(&self, sc: &SocialCluster, ns: &str, note: &Note, now: DateTime<Utc>) -> Event {
        let nanos = now.timestamp_nanos_opt().unwrap_or_default();
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{nanos:x}", sc.name_any())),
                namespace: Some(ns.to_owned()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some(SocialCluster::api_version(&()).into_owned()),
                kind: Some(SocialCluster::kind(&()).into_owned()),
                name: Some(sc.name_any()),
                namespace: Some(ns.to_owned()),
                uid: sc.uid(),
                resource_version: sc.resource_version(),
                field_path: None,
            },
            reason: Some(note.reason.to_string()),
            message: Some(crate::conditions::truncate(&note.message, 1024)),
            type_: Some(if note.warning { "Warning" } else { "Normal" }.into()),
            count: Some(1),
            first_timestamp: Some(Time(to_jiff(now))),
            last_timestamp: Some(Time(to_jiff(now))),
            action: Some(note.reason.to_string()),
            reporting_component: Some(crate::FIELD_MANAGER.into()),
            reporting_instance: Some(self.instance.clone()),
            source: Some(EventSource { component: Some(crate::FIELD_MANAGER.into()), host: None }),
            ..Event::default()
        }
    }
}
