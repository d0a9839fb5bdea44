//! `socialnet gateway`.

use crate::cli::GatewayArgs;
use anyhow::Context;
use gateway::limit::Limiter;
use gateway::{Gateway, Runtime};
use std::process::ExitCode;
use std::time::Duration;
use utoipa::OpenApi;

/// The public API document the gateway (and dev mode) serves: the write and the read routes.
pub fn openapi_doc() -> bytes::Bytes {
    let mut doc = write_api::ApiDoc::openapi();
    doc.merge(read_api::ApiDoc::openapi());
    doc.info.title = "socialnet API".into();
    // Relative: the gateway (or dev mode) that served the document serves the API.
    doc.servers = Some(vec![utoipa::openapi::server::Server::new("/")]);
    doc.info.description = Some(
        "Writes answer 202 once the command is durably queued; reads come from the active projection.".into(),
    );
    bytes::Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let runtime = Runtime::load(&args.config).await.map_err(anyhow::Error::msg)?;
    let limiter = match &args.redis_url {
        Some(url) => Limiter::redis(url).await.context("connecting to the rate-limit Redis")?,
        None => Limiter::local(),
    };
    let gw = Gateway::new(runtime, limiter, openapi_doc());
    tokio::spawn(gateway::watch_config(
        gw.clone(),
        args.config.clone(),
        Duration::from_millis(args.reload_ms),
    ));
    // Ready once serving: each upstream has its own readiness, and a failing one is the breaker's business.
    let ready: http_kit::Readiness = std::sync::Arc::new(|| Box::pin(async { Ok(()) }));
    crate::serve::serve(args.listen, gateway::app(gw, ready), "gateway").await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// The served document, walked operation by operation: what every client may rely on is there.
    #[test]
    fn every_operation_states_security_errors_headers_and_the_async_model() {
        let doc: Value = serde_json::from_slice(&super::openapi_doc()).unwrap_or_default();
        let problem = "#/components/schemas/Problem";
        let mut operations = 0;
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                operations += 1;
                let what = format!("{method} {path}");
                assert_eq!(op["security"][0]["bearer"], Value::Array(vec![]), "{what}");
                assert!(op["summary"].is_string() && op["operationId"].is_string(), "{what}");
                let params: Vec<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["name"].as_str())
                    .collect();
                for (code, response) in op["responses"].as_object().into_iter().flatten() {
                    assert!(response["headers"]["x-request-id"].is_object(), "{what} {code}");
                    if code.starts_with('4') || code.starts_with('5') {
                        let schema = &response["content"]["application/problem+json"]["schema"]["$ref"];
                        assert_eq!(schema, problem, "{what} {code}");
                    }
                }
                if method == "get" {
                    continue;
                }
                assert!(params.contains(&"Idempotency-Key"), "{what}");
                let accepted = &op["responses"]["202"];
                assert!(accepted["headers"]["Location"].is_object(), "{what}");
                assert_eq!(accepted["links"]["GetCommand"]["operationId"], "getCommand", "{what}");
                assert!(op["responses"]["422"].is_object(), "{what}");
            }
        }
        assert_eq!(operations, 19, "every public route");
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
