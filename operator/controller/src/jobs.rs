//! The rebuild Job: `socialnet projector rebuild --target T` with the projector's environment, owned by
//! the cluster, named after the target and the request token so one request makes one Job.

use crate::build::{Component, deployment, labels};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use socialnet_crd::SocialCluster;

/// A Kubernetes-safe name for the rebuild of `target` answering `token`.
pub fn job_name(sc: &SocialCluster, target: &str, token: &str) -> String {
    // FNV-1a of the token keeps names short and valid whatever the token holds.
    let mut h: u32 = 0x811c_9dc5;
    for b in token.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let base = format!("{}-rebuild-{target}", sc.name_any());
    let base: String = base.chars().take(52).collect();
    format!("{base}-{h:08x}")
}

pub fn rebuild_job(sc: &SocialCluster, target: &str, token: &str) -> Job {
    // Only the spec's own request can ask for streaming; an automatic rebuild replays in memory.
    let streaming =
        sc.spec.rebuild.as_ref().is_some_and(|r| r.target == target && r.token == token && r.streaming);
    let projector = deployment(sc, Component::Projector);
    let mut pod = projector.spec.template;
    if let Some(spec) = pod.spec.as_mut() {
        spec.restart_policy = Some("Never".into());
        for c in &mut spec.containers {
            c.name = "rebuild".into();
            let run_id = job_name(sc, target, token);
            let mut args = vec![
                "projector".into(),
                "rebuild".into(),
                "--target".into(),
                target.to_owned(),
                "--run-id".into(),
                run_id,
            ];
            if streaming {
                args.push("--streaming".into());
            }
            c.args = Some(args);
            c.readiness_probe = None;
            c.liveness_probe = None;
            c.ports = None;
        }
    }
    let mut l = labels(sc, None);
    l.insert("socialnet.io/rebuild-target".into(), target.to_owned());
    pod.metadata = Some(ObjectMeta { labels: Some(l.clone()), ..ObjectMeta::default() });
    let owner = deployment(sc, Component::Projector).metadata.owner_references;
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(sc, target, token)),
            namespace: sc.namespace(),
            labels: Some(l),
            annotations: Some([("socialnet.io/rebuild-token".to_owned(), token.to_owned())].into()),
            owner_references: owner,
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(2),
            ttl_seconds_after_finished: Some(86_400),
            template: PodTemplateSpec { metadata: pod.metadata, spec: pod.spec },
            ..JobSpec::default()
        }),
        status: None,
    }
}

/// Where a Job is, from its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Active,
    Succeeded,
    /// Failed, with the reason its `Failed` condition gives (or the retries used up).
    Failed(String),
}

pub fn job_state(job: &Job) -> JobState {
    let s = job.status.as_ref();
    let backoff_limit = job.spec.as_ref().and_then(|s| s.backoff_limit).unwrap_or(6);
    let failed_condition = s
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Failed" && c.status == "True"));
    if s.and_then(|s| s.succeeded).unwrap_or(0) > 0 {
        JobState::Succeeded
    } else if let Some(c) = failed_condition {
        JobState::Failed(c.message.clone().or_else(|| c.reason.clone()).unwrap_or_else(|| "failed".into()))
    } else if s.and_then(|s| s.failed).unwrap_or(0) > backoff_limit {
        JobState::Failed(format!("failed {} times", backoff_limit + 1))
    } else {
        JobState::Active
    }
}
