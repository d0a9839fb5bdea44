//! `socialnet-operator run | crd | render -f FILE | status NAME`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams};
use socialnet_crd::SocialCluster;
use socialnet_operator::leader::{Elector, Timing};
use socialnet_operator::reconcile::{Operator, Settings};
use socialnet_operator::{crd_yaml, render, summary};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
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
    Run(RunArgs),
    /// Print the CustomResourceDefinition YAML.
    Crd,
    /// Print every object the operator would create for a SocialCluster manifest (like `helm template`).
    Render {
        /// The manifest (`-` for standard input).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Namespace for a manifest that names none.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The SocialCluster's uid, for owner references (left out without it).
        #[arg(long)]
        uid: Option<String>,
    },
    /// Print a readable summary of one SocialCluster and its recent Events.
    Status {
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
}

#[derive(clap::Args)]
struct RunArgs {
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
    /// How long a leader's Lease lasts without renewal; a standby replica takes over after this long.
    #[arg(long, env = "SOCIALNET_OPERATOR_LEASE_SECONDS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(2..=300))]
    lease_seconds: u64,
    /// How often each cluster's read API and projector pods are asked for projection health.
    #[arg(long, env = "SOCIALNET_OPERATOR_HEALTH_INTERVAL_MS", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    health_interval_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Crd => {
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(crd_yaml().as_bytes());
            Ok(())
        }
        Cmd::Render { file, namespace, uid } => {
            let mut text = String::new();
            if file.as_os_str() == "-" {
                std::io::stdin().read_to_string(&mut text).context("reading standard input")?;
            } else {
                text =
                    std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            }
            let sc = render::parse(&text, &namespace, uid.as_deref())
                .with_context(|| file.display().to_string())?;
            let _ = std::io::stdout().write_all(render::to_yaml(&render::objects(&sc)).as_bytes());
            Ok(())
        }
        Cmd::Status { name, namespace } => status(&name, &namespace).await,
        Cmd::Run(args) => run(args).await,
    }
}

async fn status(name: &str, namespace: &str) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.context("connecting to Kubernetes")?;
    let api: Api<SocialCluster> = Api::namespaced(client.clone(), namespace);
    let sc = api.get(name).await.with_context(|| format!("getting socialcluster {namespace}/{name}"))?;
    let events: Api<Event> = Api::namespaced(client, namespace);
    let selector = format!("involvedObject.kind=SocialCluster,involvedObject.name={name}");
    let recent = match events.list(&ListParams::default().fields(&selector)).await {
        Ok(list) => summary::newest(&list.items),
        Err(e) => {
            eprintln!("(events unavailable: {e})");
            Vec::new()
        }
    };
    let _ = std::io::stdout().write_all(summary::render(&sc, &recent).as_bytes());
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .json()
        .init();
    let client = kube::Client::try_default().await.context("connecting to Kubernetes")?;
    let ready: http_kit::Readiness = Arc::new(|| Box::pin(async { Ok(()) }));
    let ops = axum::Router::new().merge(http_kit::ops_routes(ready));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tokio::spawn(async move { axum::serve(listener, ops).await });

    let timing = Timing::for_lease(Duration::from_secs(args.lease_seconds));
    let elector = Elector::new(
        client.clone(),
        &args.lease_namespace,
        "socialnet-operator-leader",
        &args.identity,
        timing,
    );
    tokio::select! {
        _ = elector.acquire() => {}
        _ = tokio::signal::ctrl_c() => return Ok(()),
        _ = terminated() => return Ok(()),
    }
    let settings = Settings {
        namespace: args.namespace,
        health_interval: Duration::from_millis(args.health_interval_ms),
        identity: args.identity,
    };
    let operator = Operator::start(client, &settings);
    tokio::select! {
        _ = operator.run() => {
            elector.release().await;
            Ok(())
        }
        _ = elector.hold() => anyhow::bail!("lost leadership; exiting so another replica can lead"),
    }
}

/// SIGTERM, as Kubernetes stops a pod (never resolves where there is no such signal).
async fn terminated() {
    #[cfg(unix)]
    if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        s.recv().await;
        return;
    }
    std::future::pending::<()>().await;
}
