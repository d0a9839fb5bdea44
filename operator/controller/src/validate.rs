//! Validate: the first step of plan. The CRD's schema and CEL rules reject bad specs at `kubectl apply`;
//! these checks catch them again where an API server did not (an old one, or CEL disabled) and become
//! a clear reason in status instead of a crash loop.

use socialnet_crd::{GatewayPolicySpec, SocialCluster, SocialClusterSpec};
use std::collections::HashSet;

/// Every problem with the spec, joined; `Ok` when there is none.
pub fn validate(sc: &SocialCluster) -> Result<(), String> {
    let s = &sc.spec;
    let mut problems = Vec::new();
    if s.image.trim().is_empty() || s.image.len() > 512 {
        problems.push("spec.image must be 1 to 512 characters".to_owned());
    }
    components(s, &mut problems);
    targets(s, &mut problems);
    if let Some(g) = &s.gateway_policy {
        gateway_policy(g, &mut problems);
    }
    let f = &s.projections.failover;
    if !(1..=20).contains(&f.failure_threshold) {
        problems.push("spec.projections.failover.failureThreshold must be between 1 and 20".to_owned());
    }
    if !(0..=300).contains(&f.delay_seconds) {
        problems.push("spec.projections.failover.delaySeconds must be between 0 and 300".to_owned());
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

fn components(s: &SocialClusterSpec, problems: &mut Vec<String>) {
    let all = [
        ("gateway", &s.gateway),
        ("writeApi", &s.write_api),
        ("ingester", &s.ingester),
        ("projector", &s.projector),
        ("readApi", &s.read_api),
    ];
    for (name, c) in all {
        if !(0..=100).contains(&c.replicas) {
            problems.push(format!("spec.{name}.replicas must be between 0 and 100, got {}", c.replicas));
        }
        if let Some(a) = &c.autoscaling {
            if a.min_replicas > a.max_replicas {
                problems.push(format!(
                    "spec.{name}.autoscaling: minReplicas ({}) exceeds maxReplicas ({})",
                    a.min_replicas, a.max_replicas
                ));
            }
            if a.min_replicas < 1 || a.max_replicas > 100 {
                problems.push(format!("spec.{name}.autoscaling: replicas must be between 1 and 100"));
            }
        }
    }
    if s.queue.partitions > 1
        && (s.ingester.autoscaling.is_some() || s.ingester.replicas > s.queue.partitions)
    {
        problems.push(format!(
            "spec.ingester: on a queue of {} partitions the ingester cannot autoscale and runs at most one replica per partition (each replica owns its partitions)",
            s.queue.partitions
        ));
    }
    if !(1..=256).contains(&s.queue.partitions) || !(1..=5).contains(&s.queue.stream_replicas) {
        problems.push("spec.queue: partitions must be 1 to 256 and streamReplicas 1 to 5".to_owned());
    }
    if s.projector.replicas > 1 || s.projector.autoscaling.is_some() {
        problems
            .push("spec.projector must run one replica (it is the single writer of its targets)".to_owned());
    }
}

fn targets(s: &SocialClusterSpec, problems: &mut Vec<String>) {
    let targets = &s.projections.targets;
    if !(1..=8).contains(&targets.len()) {
        problems.push(format!("spec.projections.targets must name 1 to 8 targets, not {}", targets.len()));
    }
    let mut seen = HashSet::new();
    for t in targets {
        if !seen.insert(t.name.as_str()) {
            problems.push(format!("projection target {} is listed twice", t.name));
        }
        let ok = t.name.len() <= 31
            && t.name.starts_with(|c: char| c.is_ascii_lowercase())
            && t.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            problems.push(format!(
                "projection target name {:?} must be lower-case letters, digits or dashes",
                t.name
            ));
        }
    }
    let known = |n: &str| targets.iter().any(|t| t.name == n);
    if let Some(r) = s.rebuild.as_ref().filter(|r| !known(&r.target)) {
        problems.push(format!("spec.rebuild.target {:?} is not a projection target", r.target));
    }
    if let Some(w) = s.switchover.as_ref().filter(|w| !known(&w.target)) {
        problems.push(format!("spec.switchover.target {:?} is not a projection target", w.target));
    }
    if let Some(p) = s.projections.primary.as_ref().filter(|p| !known(p)) {
        problems.push(format!("spec.projections.primary {p:?} is not a projection target"));
    }
}

fn gateway_policy(g: &GatewayPolicySpec, problems: &mut Vec<String>) {
    let rates = [
        ("readsPerUser", g.reads_per_user),
        ("writesPerUser", g.writes_per_user),
        ("requestsPerIp", g.requests_per_ip),
    ];
    for (name, v) in rates {
        if let Some(v) = v.filter(|v| !(1..=1_000_000).contains(v)) {
            problems.push(format!("spec.gatewayPolicy.{name} must be between 1 and 1000000, got {v}"));
        }
    }
    if g.cors_allowed_origins.len() > 32 {
        problems.push("spec.gatewayPolicy.corsAllowedOrigins holds at most 32 origins".to_owned());
    }
    for o in &g.cors_allowed_origins {
        let rest = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://"));
        if o != "*" && !rest.is_some_and(|r| !r.is_empty() && !r.contains('/')) {
            problems.push(format!(
                "spec.gatewayPolicy.corsAllowedOrigins: {o:?} must be '*' or scheme://host[:port] without a path"
            ));
        }
    }
    if let Some(e) =
        g.otlp_endpoint.as_ref().filter(|e| !(e.starts_with("http://") || e.starts_with("https://")))
    {
        problems.push(format!("spec.gatewayPolicy.otlpEndpoint {e:?} must be an http or https URL"));
    }
    if let Some(p) = g.access_log_success_percent.filter(|p| !(0..=100).contains(p)) {
        problems
            .push(format!("spec.gatewayPolicy.accessLogSuccessPercent must be between 0 and 100, got {p}"));
    }
}
