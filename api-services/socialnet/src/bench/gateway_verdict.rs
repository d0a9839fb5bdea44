//! `socialnet bench gateway`, last part: the targets (at least 0.70 of the direct rate, p99
//! overhead under 1 ms) checked against every measured configuration and printed as one line each, so
//! that a reader sees at a glance where they are met, where not, and the raw limit beside each.

use serde_json::Value;

/// The throughput target: this share of the direct rate at the same concurrency.
pub const RATE_TARGET: f64 = 0.70;
/// The latency target: p99 overhead below this, in milliseconds.
pub const P99_TARGET_MS: f64 = 1.0;

/// One line per (route, gateway) of a measurement (`routes` as `bench gateway` prints it in its JSON),
/// each headed by `setting`. The p99 is the paced one (below saturation, paired with direct) when it was
/// measured: at saturation a closed loop's tail is its queue, not the gateway's cost.
pub fn lines(setting: &str, routes: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for route in routes.as_array().into_iter().flatten() {
        let name = route["route"].as_str().unwrap_or("?");
        let direct = route["direct_rps"].as_f64().unwrap_or(0.0);
        let ceiling = route["bare_pipelined_proxy_rps"].as_f64().unwrap_or(0.0) / direct.max(1.0);
        let paced = route["paced"]["gateways"].as_array();
        for gw in route["gateways"].as_array().into_iter().flatten() {
            let label = gw["gateway"].as_str().unwrap_or("?");
            let ratio = gw["ratio"].as_f64().unwrap_or(0.0);
            let p99 = paced
                .and_then(|p| p.iter().find(|g| g["gateway"] == gw["gateway"]))
                .and_then(|g| g["p99_overhead_ms"].as_f64())
                .map(|ms| (ms, "below saturation"))
                .or_else(|| gw["p99_overhead_ms"].as_f64().map(|ms| (ms, "at saturation")));
            let p99 = match p99 {
                Some((ms, when)) => {
                    format!("p99 overhead {ms:.2} ms {when} ({})", met(ms < P99_TARGET_MS))
                }
                None => "p99 overhead not measured".to_owned(),
            };
            out.push(format!(
                "  {setting}, {name}, {label}: {ratio:.2} of direct ({}; bare pipelined proxy {ceiling:.2}), {p99}",
                met(ratio >= RATE_TARGET)
            ));
        }
    }
    out
}

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "NOT met" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_gateway_of_each_route_gets_a_line_with_both_verdicts() {
        let routes = serde_json::json!([{
            "route": "GET /v1/users/{id}", "direct_rps": 1000.0, "bare_pipelined_proxy_rps": 690.0,
            "gateways": [
                {"gateway": "local", "ratio": 0.55, "p99_overhead_ms": 2.5},
                {"gateway": "redis", "ratio": 0.71, "p99_overhead_ms": 0.2},
            ],
            "paced": {"gateways": [{"gateway": "local", "p99_overhead_ms": 0.84}]},
        }]);
        let got = lines("shared cores", &routes);
        assert_eq!(
            got,
            vec![
                "  shared cores, GET /v1/users/{id}, local: 0.55 of direct (NOT met; bare pipelined proxy 0.69), p99 overhead 0.84 ms below saturation (met)",
                "  shared cores, GET /v1/users/{id}, redis: 0.71 of direct (met; bare pipelined proxy 0.69), p99 overhead 0.20 ms at saturation (met)",
            ]
        );
    }

    #[test]
    fn a_skipped_measurement_gives_no_line() {
        assert!(lines("own core", &serde_json::json!({"skipped": "fewer than two cores"})).is_empty());
        assert!(lines("own core", &Value::Null).is_empty());
    }
}
