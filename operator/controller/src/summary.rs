//! `socialnet-operator status NAME`: a readable summary of one cluster.

use socialnet_crd::SocialCluster;
use std::fmt::Write;

pub fn render(sc: &SocialCluster, events: &[(String, String, String)]) -> String {
    let mut out = String::new();
    let st = sc.status.clone().unwrap_or_default();
    let name = sc.metadata.name.clone().unwrap_or_default();
    let ns = sc.metadata.namespace.clone().unwrap_or_default();
    let _ = writeln!(out, "SocialCluster {ns}/{name}: {}", st.phase.as_deref().unwrap_or("Unknown"));
    if let Some(m) = &st.message {
        let _ = writeln!(out, "  problem: {m}");
    }
    let _ = writeln!(out, "  image: {}   paused: {}", sc.spec.image, sc.spec.paused);
    let _ = writeln!(out, "\nComponents (ready/wanted):");
    for (c, s) in &st.components {
        let _ = writeln!(out, "  {c:<10} {}/{}", s.ready_replicas, s.replicas);
    }
    let _ = writeln!(out, "\nProjections: primary {}", st.current_primary.as_deref().unwrap_or("-"));
    if let Some(t) = &st.target_primary {
        let _ = writeln!(out, "  failing over to: {t}");
    }
    for p in &st.projections {
        let _ = writeln!(
            out,
            "  {:<12} {:<9} lag {:<8} generation {:<4} failures {}",
            p.name,
            if p.healthy { "healthy" } else { "FAILING" },
            p.lag_events.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
            p.generation.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
            p.consecutive_failures
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
    if let Some(r) = &st.rebuild {
        let _ = writeln!(
            out,
            "\nRebuild of {}: {} {}{}",
            r.target,
            r.phase,
            r.progress.clone().unwrap_or_default(),
            r.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
        );
    }
    let _ = writeln!(out, "\nConditions:");
    for c in &st.conditions {
        let _ = writeln!(out, "  {:<12} {:<5} {:<24} {}", c.type_, c.status, c.reason, c.message);
    }
    if !events.is_empty() {
        let _ = writeln!(out, "\nRecent events:");
        for (t, reason, note) in events {
            let _ = writeln!(out, "  {t:<8} {reason:<20} {note}");
        }
    }
    out
}
