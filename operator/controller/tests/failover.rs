//! The failover decision as a pure function: never two primaries, only a healthy and most caught-up
//! standby, the threshold and the delay respected, unknown health decides nothing, paused respected,
//! switchovers take the same path; and the status summary shows what an operator needs.
#![allow(clippy::unwrap_used)]

use chrono::{Duration, Utc};
use socialnet_crd::{FailoverPolicy, FailoverReason};
use socialnet_operator::failover::{Decision, decide, needs_rebuild};
use socialnet_operator::health::TargetHealth;

fn target(
    name: &str,
    healthy: Option<bool>,
    failures: u32,
    failing_for_s: i64,
    lag: Option<i64>,
) -> TargetHealth {
    TargetHealth {
        healthy,
        reachable: healthy,
        has_data: healthy.map(|_| true),
        consecutive_failures: failures,
        failing_since: (failures > 0).then(|| Utc::now() - Duration::seconds(failing_for_s)),
        lag_events: lag,
        generation: Some(1),
        ..TargetHealth::unknown(name)
    }
}

fn ok(name: &str, lag: i64) -> TargetHealth {
    target(name, Some(true), 0, 0, Some(lag))
}

fn failed(name: &str, failures: u32, for_s: i64) -> TargetHealth {
    target(name, Some(false), failures, for_s, None)
}

fn policy() -> FailoverPolicy {
    FailoverPolicy::default() // threshold 3, delay 1 s, max lag 10 000
}

fn promote(to: &str, reason: FailoverReason) -> Decision {
    Decision::Promote { to: to.into(), reason }
}

#[test]
fn a_healthy_primary_stays() {
    assert_eq!(decide(&policy(), false, "p", &[ok("p", 0), ok("s", 0)], None, Utc::now()), Decision::Stay);
}

#[test]
fn the_threshold_and_the_delay_are_respected() {
    let d = decide(&policy(), false, "p", &[failed("p", 2, 10), ok("s", 3)], None, Utc::now());
    assert!(matches!(d, Decision::Wait { ref why, .. } if why.contains("2 of 3")), "{d:?}");
    let d = decide(&policy(), false, "p", &[failed("p", 3, 0), ok("s", 3)], None, Utc::now());
    assert!(
        matches!(d, Decision::Wait { recheck: Some(r), .. } if r <= std::time::Duration::from_secs(1)),
        "{d:?}"
    );
    let d = decide(&policy(), false, "p", &[failed("p", 3, 2), ok("s", 3)], None, Utc::now());
    assert_eq!(d, promote("s", FailoverReason::PrimaryFailed));
}

#[test]
fn unknown_health_decides_nothing() {
    let unknown = target("p", None, 0, 0, None);
    let d = decide(&policy(), false, "p", &[unknown, ok("s", 0)], None, Utc::now());
    assert!(matches!(d, Decision::Wait { ref why, .. } if why.contains("unknown")), "{d:?}");
    let d =
        decide(&policy(), false, "p", &[ok("p", 0), target("s", None, 0, 0, None)], Some("s"), Utc::now());
    assert!(matches!(d, Decision::Wait { .. }), "no switchover to a target nobody could check: {d:?}");
}

#[test]
fn only_a_healthy_most_caught_up_standby_is_promoted() {
    let all =
        [failed("p", 4, 10), ok("far", 5000), ok("near", 12), failed("sick", 4, 10), ok("too-far", 50_000)];
    assert_eq!(
        decide(&policy(), false, "p", &all, None, Utc::now()),
        promote("near", FailoverReason::PrimaryFailed)
    );
    let none = [failed("p", 4, 10), failed("sick", 4, 10), ok("too-far", 50_000)];
    assert!(matches!(decide(&policy(), false, "p", &none, None, Utc::now()), Decision::NoCandidate(_)));
}

#[test]
fn never_two_primaries_and_never_the_failed_one() {
    let names = ["p", "a", "b"];
    for mask in 0..8u8 {
        let health: Vec<TargetHealth> = names
            .iter()
            .enumerate()
            .map(|(i, n)| if mask & (1 << i) != 0 { ok(n, i as i64) } else { failed(n, 5, 10) })
            .collect();
        match decide(&policy(), false, "p", &health, None, Utc::now()) {
            Decision::Promote { to, .. } => {
                assert_ne!(to, "p");
                assert!(health.iter().any(|x| x.name == to && x.healthy == Some(true)));
                assert!(mask & 1 == 0, "promoted away from a healthy primary");
            }
            Decision::Stay => assert!(mask & 1 != 0),
            _ => {}
        }
    }
}

#[test]
fn a_primary_that_is_only_behind_stays() {
    let behind =
        TargetHealth { healthy: Some(false), reachable: Some(true), has_data: Some(true), ..ok("p", 90_000) };
    assert_eq!(decide(&policy(), false, "p", &[behind, ok("s", 0)], None, Utc::now()), Decision::Stay);
    let empty = TargetHealth { has_data: Some(false), ..failed("p", 5, 10) };
    assert_eq!(
        decide(&policy(), false, "p", &[empty, ok("s", 0)], None, Utc::now()),
        promote("s", FailoverReason::PrimaryFailed),
        "empty is failed"
    );
}

#[test]
fn paused_and_disabled_policies_do_nothing() {
    let h = [failed("p", 5, 10), ok("s", 0)];
    assert!(
        matches!(decide(&policy(), true, "p", &h, None, Utc::now()), Decision::Wait { ref why, .. } if why == "paused")
    );
    let off = FailoverPolicy { enabled: false, ..policy() };
    assert_eq!(decide(&off, false, "p", &h, None, Utc::now()), Decision::Stay);
}

#[test]
fn a_switchover_takes_the_same_path_to_a_healthy_target_only() {
    let h = [ok("p", 0), ok("s", 0), failed("x", 5, 10)];
    assert_eq!(
        decide(&policy(), false, "p", &h, Some("s"), Utc::now()),
        promote("s", FailoverReason::Switchover)
    );
    assert!(matches!(decide(&policy(), false, "p", &h, Some("x"), Utc::now()), Decision::Wait { .. }));
    assert_eq!(decide(&policy(), false, "p", &h, Some("p"), Utc::now()), Decision::Stay, "already there");
    assert!(
        matches!(decide(&policy(), true, "p", &h, Some("s"), Utc::now()), Decision::Wait { .. }),
        "paused"
    );
}

#[test]
fn a_failed_over_target_is_rebuilt_once_it_answers_again_unusable() {
    let dead = TargetHealth { reachable: Some(false), ..failed("p", 5, 10) };
    let back_empty = TargetHealth { reachable: Some(true), generation: None, ..failed("p", 5, 10) };
    assert!(!needs_rebuild(&dead), "still down: nothing to rebuild into");
    assert!(needs_rebuild(&back_empty));
    assert!(!needs_rebuild(&ok("p", 0)));
    assert!(!needs_rebuild(&target("p", None, 0, 0, None)), "unknown is not unusable");
}
