//! Validate: the first step of the pipeline. The CRD's schema and CEL rules reject most bad specs at
//! `kubectl apply`; these checks catch the rest (and everything, where an API server does not run CEL)
//! and become a clear reason in status instead of a crash loop.

use socialnet_crd::SocialCluster;
use std::collections::HashSet;

pub fn validate(sc: &SocialCluster) -> Result<(), String> {
    let s = &sc.spec;
    let mut problems = Vec::new();
    if s.image.trim().is_empty() {
        problems.push("spec.image must not be empty".to_owned());
    }
    for (name, c) in [
        ("gateway", &s.gateway),
        ("writeApi", &s.write_api),
        ("ingester", &s.ingester),
        ("projector", &s.projector),
        ("readApi", &s.read_api),
    ] {
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
    if s.projector.replicas > 1 || s.projector.autoscaling.is_some() {
        problems
            .push("spec.projector must run one replica (it is the single writer of its targets)".to_owned());
    }
    let targets = &s.projections.targets;
    if targets.is_empty() {
        problems.push("spec.projections.targets must name at least one target".to_owned());
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
    if let Some(r) = &s.rebuild
        && !known(&r.target)
    {
        problems.push(format!("spec.rebuild.target {:?} is not a projection target", r.target));
    }
    if let Some(w) = &s.switchover
        && !known(&w.target)
    {
        problems.push(format!("spec.switchover.target {:?} is not a projection target", w.target));
    }
    if let Some(p) = &s.projections.primary
        && !known(p)
    {
        problems.push(format!("spec.projections.primary {p:?} is not a projection target"));
    }
    if let Some(g) = &s.gateway_policy {
        for (name, v) in [
            ("readsPerUser", g.reads_per_user),
            ("writesPerUser", g.writes_per_user),
            ("requestsPerIp", g.requests_per_ip),
        ] {
            if let Some(v) = v
                && !(1..=1_000_000).contains(&v)
            {
                problems.push(format!("spec.gatewayPolicy.{name} must be between 1 and 1000000, got {v}"));
            }
        }
        for o in &g.cors_allowed_origins {
            let rest = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://"));
            if o != "*" && !rest.is_some_and(|r| !r.is_empty() && !r.contains('/')) {
                problems.push(format!(
                    "spec.gatewayPolicy.corsAllowedOrigins: {o:?} must be '*' or scheme://host[:port] without a path"
                ));
            }
        }
        if let Some(e) = &g.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            problems.push(format!("spec.gatewayPolicy.otlpEndpoint {e:?} must be an http or https URL"));
        }
        if let Some(p) = g.access_log_success_percent
            && !(0..=100).contains(&p)
        {
            problems.push(format!(
                "spec.gatewayPolicy.accessLogSuccessPercent must be between 0 and 100, got {p}"
            ));
        }
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
