//! `socialnet-operator run | crd | status NAME`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ListParams};
use kube::runtime::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use socialnet_crd::SocialCluster;
use socialnet_operator::{crd_yaml, leader, reconcile};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "socialnet-operator", version, about = "Runs socialnet on Kubernetes")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Reconcile SocialCluster resources (with leader election).
    Run {
        /// Address for /healthz, /readyz and /metrics.
        #[arg(long, env = "SOCIALNET_OPERATOR_LISTEN", default_value = "0.0.0.0:8090")]
        listen: SocketAddr,
        /// Namespace of the leader-election Lease.
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        /// Who we are in the Lease (defaults to the pod name).
        #[arg(long, env = "POD_NAME", default_value = "socialnet-operator")]
        identity: String,
        /// Only watch this namespace (default: all).
        #[arg(long, env = "SOCIALNET_OPERATOR_NAMESPACE")]
        namespace: Option<String>,
        /// How long a leader's Lease lasts without renewal (renewed every third of it); a standby
        /// replica takes over after this long.
        #[arg(long, env = "SOCIALNET_OPERATOR_LEASE_SECONDS", default_value_t = 15,
              value_parser = clap::value_parser!(u64).range(2..=300))]
        lease_seconds: u64,
    },
    /// Print the CustomResourceDefinition YAML.
    Crd,
    /// Print a readable summary of one SocialCluster.
    Status {
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Crd => {
            use std::io::Write;
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(crd_yaml().as_bytes());
            Ok(())
        }
        Cmd::Status { name, namespace } => {
            let client = kube::Client::try_default().await.context("connecting to Kubernetes")?;
            let api: Api<SocialCluster> = Api::namespaced(client.clone(), &namespace);
            let sc =
                api.get(&name).await.with_context(|| format!("getting socialcluster {namespace}/{name}"))?;
            let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, &namespace);
            let mut recent: Vec<(String, String, String, String)> = events
                .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
                .await
                .map(|l| l.items)
                .unwrap_or_default()
                .into_iter()
                .map(|e| {
                    let at = e
                        .last_timestamp
                        .map(|t| t.0.to_string())
                        .or(e.event_time.map(|t| t.0.to_string()))
                        .unwrap_or_default();
                    (
                        at,
                        e.type_.unwrap_or_default(),
                        e.reason.unwrap_or_default(),
                        e.message.unwrap_or_default(),
                    )
                })
                .collect();
            recent.sort();
            let recent: Vec<(String, String, String)> =
                recent.into_iter().rev().take(10).map(|(_, t, r, m)| (t, r, m)).collect();
            print!("{}", socialnet_operator::summary::render(&sc, &recent));
            Ok(())
        }
        Cmd::Run { listen, lease_namespace, identity, namespace, lease_seconds } => {
            run(listen, lease_namespace, identity, namespace, Duration::from_secs(lease_seconds)).await
        }
    }
}

async fn run(
    listen: SocketAddr,
    lease_ns: String,
    identity: String,
    namespace: Option<String>,
    lease: Duration,
) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .json()
        .init();
    let client = kube::Client::try_default().await.context("connecting to Kubernetes")?;
    let ready: http_kit::Readiness = Arc::new(|| Box::pin(async { Ok(()) }));
    let ops = axum::Router::new().merge(http_kit::ops_routes(ready));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tokio::spawn(async move { axum::serve(listener, ops).await });

    let elector =
        leader::Elector::new(client.clone(), &lease_ns, "socialnet-operator-leader", &identity, lease);
    elector.acquire().await;

    let reporter = Reporter { controller: "socialnet-operator".into(), instance: Some(identity.clone()) };
    let ctx = Arc::new(reconcile::Ctx::new(client.clone(), Recorder::new(client.clone(), reporter)));
    fn api<K>(client: &kube::Client, ns: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = namespace.as_deref();
    let clusters: Api<SocialCluster> = api(&client, ns);
    let deployments: Api<Deployment> = api(&client, ns);
    let services: Api<Service> = api(&client, ns);
    let configmaps: Api<ConfigMap> = api(&client, ns);
    let jobs: Api<Job> = api(&client, ns);
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=socialnet-operator");
    let controller = Controller::new(clusters, watcher::Config::default())
        .owns(deployments, owned.clone())
        .owns(services, owned.clone())
        .owns(configmaps, owned.clone())
        .owns(jobs, owned)
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile");
            }
        });
    tokio::select! {
        _ = controller => Ok(()),
        _ = elector.hold() => anyhow::bail!("lost leadership; exiting so another replica can lead"),
    }
}
