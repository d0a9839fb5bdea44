//! The failover decision as a pure function: never two primaries, only a healthy and most caught-up
//! standby, the threshold and the delay respected, paused respected, switchovers take the same path.
#![allow(clippy::unwrap_used)]

use chrono::{Duration, Utc};
use socialnet_crd::{FailoverPolicy, ProjectionHealth};
use socialnet_operator::failover::{Decision, Sample, decide, observe};

fn sample(name: &str, healthy: bool, lag: Option<i64>) -> Sample {
    Sample { name: name.into(), healthy, reachable: true, lag_events: lag, generation: Some(1) }
}

fn policy() -> FailoverPolicy {
    FailoverPolicy::default() // threshold 3, delay 2 s, max lag 10 000
}

/// Observe the same samples `n` times, one second apart, starting `start` seconds ago.
fn observed(samples: &[Sample], n: usize, start: i64) -> Vec<ProjectionHealth> {
    let mut h = Vec::new();
    for i in 0..n {
        h = observe(&h, samples, Utc::now() - Duration::seconds(start - i as i64));
    }
    h
}

#[test]
fn a_healthy_primary_stays() {
    let h = observed(&[sample("p", true, Some(0)), sample("s", true, Some(0))], 5, 5);
    assert_eq!(decide(&policy(), false, "p", &h, None, Utc::now()), Decision::Stay);
}

#[test]
fn the_threshold_and_the_delay_are_respected() {
    let samples = [sample("p", false, None), sample("s", true, Some(3))];
    let h = observed(&samples, 2, 10);
    assert!(
        matches!(decide(&policy(), false, "p", &h, None, Utc::now()), Decision::Wait(w) if w.contains("2 of 3"))
    );
    // Three failures, but the first only a second ago: the 2 s delay is not over.
    let h = observe(
        &observe(&observe(&[], &samples, Utc::now() - Duration::milliseconds(1000)), &samples, Utc::now()),
        &samples,
        Utc::now(),
    );
    assert!(
        matches!(decide(&policy(), false, "p", &h, None, Utc::now()), Decision::Wait(w) if w.contains("delay"))
    );
    let h = observed(&samples, 3, 10);
    assert_eq!(
        decide(&policy(), false, "p", &h, None, Utc::now()),
        Decision::Promote { to: "s".into(), reason: "PrimaryFailed" }
    );
}

#[test]
fn only_a_healthy_most_caught_up_standby_is_promoted() {
    let samples = [
        sample("p", false, None),
        sample("far", true, Some(5000)),
        sample("near", true, Some(12)),
        sample("sick", false, Some(0)),
        sample("too-far", true, Some(50_000)),
    ];
    let h = observed(&samples, 4, 10);
    assert_eq!(
        decide(&policy(), false, "p", &h, None, Utc::now()),
        Decision::Promote { to: "near".into(), reason: "PrimaryFailed" }
    );
    let h = observed(
        &[sample("p", false, None), sample("sick", false, Some(0)), sample("too-far", true, Some(50_000))],
        4,
        10,
    );
    assert!(matches!(decide(&policy(), false, "p", &h, None, Utc::now()), Decision::NoCandidate(_)));
}

#[test]
fn never_two_primaries_and_never_the_failed_one() {
    // Whatever the health, a decision names at most one target, and never the current primary.
    let names = ["p", "a", "b"];
    for mask in 0..8u8 {
        let samples: Vec<Sample> =
            names.iter().enumerate().map(|(i, n)| sample(n, mask & (1 << i) != 0, Some(i as i64))).collect();
        let h = observed(&samples, 5, 10);
        match decide(&policy(), false, "p", &h, None, Utc::now()) {
            Decision::Promote { to, .. } => {
                assert_ne!(to, "p");
                assert!(h.iter().any(|x| x.name == to && x.healthy));
                assert!(mask & 1 == 0, "promoted away from a healthy primary");
            }
            Decision::Stay => assert!(mask & 1 != 0),
            _ => {}
        }
    }
}

#[test]
fn paused_and_disabled_policies_do_nothing() {
    let h = observed(&[sample("p", false, None), sample("s", true, Some(0))], 5, 10);
    assert!(matches!(decide(&policy(), true, "p", &h, None, Utc::now()), Decision::Wait(w) if w == "paused"));
    let off = FailoverPolicy { enabled: false, ..policy() };
    assert_eq!(decide(&off, false, "p", &h, None, Utc::now()), Decision::Stay);
}

#[test]
fn a_switchover_takes_the_same_path_to_a_healthy_target_only() {
    let h =
        observed(&[sample("p", true, Some(0)), sample("s", true, Some(0)), sample("x", false, None)], 2, 5);
    assert_eq!(
        decide(&policy(), false, "p", &h, Some("s"), Utc::now()),
        Decision::Promote { to: "s".into(), reason: "Switchover" }
    );
    assert!(matches!(decide(&policy(), false, "p", &h, Some("x"), Utc::now()), Decision::Wait(_)));
    assert_eq!(decide(&policy(), false, "p", &h, Some("p"), Utc::now()), Decision::Stay, "already there");
    assert!(matches!(decide(&policy(), true, "p", &h, Some("s"), Utc::now()), Decision::Wait(_)), "paused");
}

#[test]
fn observing_counts_failures_and_resets_on_recovery() {
    let h = observed(&[sample("p", false, None)], 3, 3);
    assert_eq!(h[0].consecutive_failures, 3);
    assert!(h[0].failing_since.is_some());
    let h = observe(&h, &[sample("p", true, Some(0))], Utc::now());
    assert_eq!(h[0].consecutive_failures, 0);
    assert!(h[0].failing_since.is_none());
}

#[test]
fn a_failed_over_target_is_rebuilt_once_it_answers_again_unusable() {
    use socialnet_operator::failover::needs_rebuild;
    let dead = Sample { reachable: false, ..sample("p", false, None) };
    let back_empty = Sample { reachable: true, generation: None, ..sample("p", false, None) };
    let fine = sample("p", true, Some(0));
    assert!(!needs_rebuild(&dead, true), "still down: nothing to rebuild into");
    assert!(needs_rebuild(&back_empty, true));
    assert!(!needs_rebuild(&fine, true));
    assert!(!needs_rebuild(&back_empty, false), "only a target that was failed over from");
}

#[test]
fn the_status_summary_shows_what_an_operator_needs() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/full.yaml")).unwrap();
    let mut sc: socialnet_crd::SocialCluster = serde_yaml::from_str(&text).unwrap();
    sc.metadata.namespace = Some("apps".into());
    let mut status = socialnet_crd::SocialClusterStatus {
        phase: Some("Available".into()),
        current_primary: Some("standby".into()),
        ready: Some("9/9".into()),
        ..Default::default()
    };
    status
        .components
        .insert("read-api".into(), socialnet_crd::ComponentStatus { ready_replicas: 2, replicas: 2 });
    status.projections =
        observe(&[], &[sample("primary", false, None), sample("standby", true, Some(4))], Utc::now());
    status.last_failover = Some(socialnet_crd::FailoverRecord {
        from: "primary".into(),
        to: "standby".into(),
        reason: "PrimaryFailed".into(),
        at: "2026-11-27T00:00:00Z".into(),
        duration_ms: Some(2200),
        rebuilt: false,
    });
    sc.status = Some(status);
    let events = vec![(
        "Normal".to_owned(),
        "FailoverCompleted".to_owned(),
        "2 read API pods now read standby".to_owned(),
    )];
    let out = socialnet_operator::summary::render(&sc, &events);
    for needle in [
        "SocialCluster apps/social: Available",
        "read-api   2/2",
        "primary standby",
        "FAILING",
        "lag 4",
        "last failover: primary -> standby (PrimaryFailed)",
        "2200 ms",
        "FailoverCompleted",
    ] {
        assert!(out.contains(needle), "summary lacks {needle:?}:\n{out}");
    }
}
