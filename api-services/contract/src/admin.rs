//! `/admin/projections` on the read API and on the projector, and what a rebuild reports while it runs.
//! Field names are snake_case JSON; one name per quantity (`lag_events` everywhere).

use serde::{Deserialize, Serialize};

/// Where a target's projection has got to in the event store's global order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub tx_id: i64,
    pub position: i64,
}

/// A read API pod's breaker on one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Breaker {
    Closed,
    Open,
}

/// The read API's home-page cache of one target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HomeCache {
    /// Change notices are subscribed, so pages may be cached.
    pub live: bool,
    pub pages: u64,
    pub hits: u64,
    pub misses: u64,
}

/// Where a target stands: its generation, how far it has applied the event store, how far behind it is.
/// Shared by the read API's and the projector's views (flattened into each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetPosition {
    pub generation: Option<u64>,
    pub checkpoint: Option<Checkpoint>,
    /// Events applied to the current generation.
    pub events_applied: Option<u64>,
    /// Events behind: the projector's exact count of events after the checkpoint; a read API pod's
    /// estimate from global positions against the most advanced target it sees (an upper bound).
    pub lag_events: Option<i64>,
    /// Seconds between the newest event (in the store, or applied by any target) and the last one applied.
    pub lag_seconds: Option<f64>,
}

/// One target as a read API pod sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadTarget {
    pub name: String,
    /// This pod reads this target first.
    pub active: bool,
    /// This pod would serve reads from it now.
    pub healthy: bool,
    /// Why it would not, when it would not.
    pub reason: Option<String>,
    /// It answers at all (it may answer and still be unusable: empty, or far behind).
    pub reachable: bool,
    pub breaker: Breaker,
    #[serde(flatten)]
    pub position: TargetPosition,
    pub error: Option<String>,
    pub home_cache: HomeCache,
}

/// `GET /admin/projections` on a read API pod, and its answer to `PUT /admin/projections/active`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadApiProjections {
    /// The target this pod reads first.
    pub active: String,
    pub targets: Vec<ReadTarget>,
}

/// `PUT /admin/projections/active` on a read API pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchActive {
    pub target: String,
}

/// One target as the projector (its one writer) sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectorTarget {
    pub name: String,
    /// The last round of projecting into it succeeded.
    pub healthy: bool,
    #[serde(flatten)]
    pub position: TargetPosition,
    pub error: Option<String>,
    /// The last rebuild recorded in this target, running or finished.
    pub rebuild: Option<RebuildProgress>,
}

/// `GET /admin/projections` on the projector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectorProjections {
    pub targets: Vec<ProjectorTarget>,
}

/// Where a rebuild is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RebuildStage {
    /// Reading history and planning it (in memory, or applied event by event).
    Replaying,
    /// Every event replayed: loading the image, flipping the generation, catching up.
    Finishing,
    Done,
    Failed,
}

/// A rebuild's progress, written into the target it rebuilds (so whoever watches the target, the
/// projector and through it the operator, can read it) and printed as JSON lines by the rebuild itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RebuildProgress {
    /// Names the run (the operator passes its Job's name), so a watcher can tell its rebuild from an older one.
    pub run_id: Option<String>,
    pub stage: RebuildStage,
    /// Events replayed so far.
    pub done: u64,
    /// Events in the store when the rebuild started (raised to `done` if more arrived meanwhile).
    pub total: u64,
    pub events_per_second: u64,
    pub eta_seconds: u64,
    /// When it started and when this record was written (ms since the epoch).
    pub started_ms: i64,
    pub updated_ms: i64,
    pub error: Option<String>,
}

impl RebuildProgress {
    /// A record for `done` of `total` events after `elapsed_ms` of a run started at `started_ms`.
    pub fn at(run_id: Option<String>, done: u64, total: u64, started_ms: i64, now_ms: i64) -> Self {
        let total = total.max(done);
        let elapsed = (now_ms - started_ms).max(1) as f64 / 1000.0;
        let rate = done as f64 / elapsed;
        let eta = if rate > 0.0 { (total - done) as f64 / rate } else { 0.0 };
        Self {
            run_id,
            stage: if done < total { RebuildStage::Replaying } else { RebuildStage::Finishing },
            done,
            total,
            events_per_second: rate.round() as u64,
            eta_seconds: eta.ceil() as u64,
            started_ms,
            updated_ms: now_ms,
            error: None,
        }
    }

    /// The same run, finished (`error` set: failed).
    pub fn finished(mut self, now_ms: i64, error: Option<String>) -> Self {
        self.stage = if error.is_some() { RebuildStage::Failed } else { RebuildStage::Done };
        if error.is_none() {
            self.total = self.total.max(self.done);
            self.done = self.total;
        }
        self.eta_seconds = 0;
        self.updated_ms = now_ms;
        self.error = error;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reports_rate_and_eta_and_never_more_done_than_total() {
        let p = RebuildProgress::at(Some("job-1".into()), 500, 2000, 0, 1000);
        assert_eq!((p.events_per_second, p.eta_seconds, p.stage), (500, 3, RebuildStage::Replaying));
        let p = RebuildProgress::at(None, 2100, 2000, 0, 1000);
        assert_eq!((p.done, p.total, p.stage), (2100, 2100, RebuildStage::Finishing));
        let done = RebuildProgress::at(None, 10, 20, 0, 10).finished(20, None);
        assert_eq!((done.done, done.total, done.stage, done.eta_seconds), (20, 20, RebuildStage::Done, 0));
        let failed = RebuildProgress::at(None, 10, 20, 0, 10).finished(20, Some("boom".into()));
        assert_eq!((failed.done, failed.stage), (10, RebuildStage::Failed));
    }

    #[test]
    fn the_shared_position_is_flat_in_the_json() {
        let t = ProjectorTarget {
            name: "p".into(),
            healthy: true,
            position: TargetPosition { lag_events: Some(3), ..TargetPosition::default() },
            error: None,
            rebuild: None,
        };
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["lag_events"], 3);
        assert_eq!(serde_json::from_value::<ProjectorTarget>(json).unwrap(), t);
    }

    #[test]
    fn the_switch_request_refuses_unknown_fields() {
        assert!(serde_json::from_str::<SwitchActive>(r#"{"target":"a","extra":1}"#).is_err());
        let ok: SwitchActive = serde_json::from_str(r#"{"target":"a"}"#).unwrap();
        assert_eq!(ok.target, "a");
    }
}
