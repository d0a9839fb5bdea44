//! `socialnet-operator status NAME`: a readable summary of one cluster and its recent Events.

use k8s_openapi::api::core::v1::Event;
use socialnet_crd::{ComponentStatus, SocialCluster};
use std::fmt::Write;

/// One recent Event, as the summary lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recent {
    pub at: String,
    pub warning: bool,
    pub reason: String,
    pub message: String,
    pub count: i32,
}

impl Recent {
    pub fn of(e: &Event) -> Self {
        let at = e
            .last_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
            .unwrap_or_default();
        Self {
            at,
            warning: e.type_.as_deref() == Some("Warning"),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            count: e.count.unwrap_or(1),
        }
    }
}

/// The ten newest of some Events, newest first.
pub fn newest(events: &[Event]) -> Vec<Recent> {
    let mut recent: Vec<Recent> = events.iter().map(Recent::of).collect();
    recent.sort_by(|a, b| b.at.cmp(&a.at));
    recent.truncate(10);
    recent
}

pub fn render(sc: &SocialCluster, events: &[Recent]) -> String {
    let mut out = String::new();
    let st = sc.status.clone().unwrap_or_default();
    let ns = sc.metadata.namespace.as_deref().unwrap_or("default");
    let name = sc.metadata.name.as_deref().unwrap_or("?");
    let phase = st.phase.map_or("Unknown", |p| p.as_str());
    let _ =
        writeln!(out, "SocialCluster {ns}/{name}: {phase}  (ready {})", st.ready.as_deref().unwrap_or("-"));
    if let Some(m) = &st.message {
        let _ = writeln!(out, "  problem: {m}");
    }
    let _ = writeln!(out, "  image: {}   paused: {}", sc.spec.image, sc.spec.paused);
    let _ = writeln!(out, "\nComponents (ready/wanted):");
    if let Some(c) = &st.components {
        for (n, s) in [
            ("gateway", c.gateway),
            ("write-api", c.write_api),
            ("ingester", c.ingester),
            ("projector", c.projector),
            ("read-api", c.read_api),
        ] {
            let s: ComponentStatus = s.unwrap_or_default();
            let _ = writeln!(out, "  {n:<10} {}/{}", s.ready_replicas, s.replicas);
        }
    }
    projections(&mut out, &st);
    rebuild(&mut out, &st);
    let _ = writeln!(out, "\nConditions:");
    for c in &st.conditions {
        let _ = writeln!(
            out,
            "  {:<12} {:<7} {:<24} {}",
            c.type_.as_str(),
            c.status.as_str(),
            c.reason.as_str(),
            c.message
        );
    }
    if !events.is_empty() {
        let _ = writeln!(out, "\nRecent events:");
        for e in events {
            let kind = if e.warning { "Warning" } else { "Normal" };
            let times = if e.count > 1 { format!(" (x{})", e.count) } else { String::new() };
            let _ = writeln!(out, "  {:<25} {kind:<8} {:<20} {}{times}", e.at, e.reason, e.message);
        }
    }
    out
}

fn projections(out: &mut String, st: &socialnet_crd::SocialClusterStatus) {
    let _ = writeln!(out, "\nProjections: primary {}", st.current_primary.as_deref().unwrap_or("-"));
    if let Some(t) = &st.target_primary {
        let _ = writeln!(
            out,
            "  failing over to: {t} (since {})",
            st.target_primary_timestamp.as_deref().unwrap_or("?")
        );
    }
    for p in &st.projections {
        let _ = writeln!(
            out,
            "  {:<12} {:<9} {:<11} generation {:<4} failures {}{}",
            p.name,
            if p.healthy { "healthy" } else { "FAILING" },
            match p.caught_up {
                Some(true) => "caught up",
                Some(false) => "BEHIND",
                None => "lag ?",
            },
            p.generation.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
            p.consecutive_failures,
            p.failing_since.as_ref().map(|s| format!(" (since {s})")).unwrap_or_default(),
        );
    }
    if let Some(f) = &st.last_failover {
        let _ = writeln!(
            out,
            "  last failover: {} -> {} ({}) at {}{}",
            f.from,
            f.to,
            f.reason,
            f.at,
            f.duration_ms.map(|d| format!(", {d} ms")).unwrap_or_default()
        );
    }
}

fn rebuild(out: &mut String, st: &socialnet_crd::SocialClusterStatus) {
    let Some(r) = &st.rebuild else { return };
    let kind = if r.automatic { "automatic rebuild" } else { "rebuild" };
    let _ = writeln!(out, "\nLast {kind} of {}: {} (job {}, token {})", r.target, r.phase, r.job, r.token);
    if let (Some(done), Some(total)) = (r.events_done, r.events_total) {
        let pct = if total > 0 { done as f64 * 100.0 / total as f64 } else { 100.0 };
        let rate = r.events_per_second.map(|v| format!(", {v} events/s")).unwrap_or_default();
        let eta =
            r.eta_seconds.filter(|_| r.phase.is_active()).map(|v| format!(", ETA {v} s")).unwrap_or_default();
        let _ = writeln!(out, "  progress: {done}/{total} events ({pct:.1}%){rate}{eta}");
    }
    let times = [("started", &r.started_at), ("finished", &r.finished_at)];
    for (what, at) in times.iter().filter_map(|(w, t)| t.as_ref().map(|t| (w, t))) {
        let _ = writeln!(out, "  {what}: {at}");
    }
    if let Some(e) = &r.error {
        let _ = writeln!(out, "  error: {e}");
    }
}
