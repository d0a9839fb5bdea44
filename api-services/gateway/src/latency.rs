//! The per-request latency histogram (`socialnet_gateway_request_seconds` by route, upstream and status),
//! with each label set registered once. The `histogram!` macro with owned labels allocated three strings
//! and looked the series up in the recorder's registry on every request; here a request hashes its labels
//! by reference and finds its handle without allocating.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

/// Label sets kept at most; past this (many reloads renaming routes) requests record through the macro.
const MAX_SERIES: usize = 4096;

type Series = (String, String, u16, metrics::Histogram);

#[derive(Default)]
pub struct LatencyHistograms {
    /// By the hash of (route, upstream, status) a bucket of every label set with that hash; and how many
    /// label sets are kept.
    series: Mutex<(HashMap<u64, Vec<Series>>, usize)>,
}

impl std::fmt::Debug for LatencyHistograms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LatencyHistograms")
    }
}

impl LatencyHistograms {
    /// Record one request's latency. The handle is bound to the recorder installed when its label set
    /// is first seen, so the recorder must be installed before requests arrive (`app` does it).
    pub fn record(&self, route: &str, upstream: &str, status: u16, secs: f64) {
        let mut h = DefaultHasher::new();
        (route, upstream, status).hash(&mut h);
        let key = h.finish();
        let mut guard = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let (series, kept) = &mut *guard;
        let bucket = series.entry(key).or_default();
        if let Some((_, _, _, histogram)) =
            bucket.iter().find(|(r, u, s, _)| r == route && u == upstream && *s == status)
        {
            histogram.record(secs);
            return;
        }
        let histogram = metrics::histogram!("socialnet_gateway_request_seconds", "route" => route.to_owned(), "upstream" => upstream.to_owned(), "status" => status.to_string());
        histogram.record(secs);
        if *kept < MAX_SERIES {
            *kept += 1;
            bucket.push((route.to_owned(), upstream.to_owned(), status, histogram));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Sink(String, Arc<Mutex<Vec<(String, f64)>>>);

    impl metrics::HistogramFn for Sink {
        fn record(&self, value: f64) {
            self.1.lock().unwrap().push((self.0.clone(), value));
        }
    }

    #[test]
    fn each_label_set_is_registered_once_and_every_value_lands_in_its_own_series() {
        // Every registration (by its labels), and every value recorded with those labels.
        let registered: Arc<Mutex<Vec<String>>> = Arc::default();
        let values: Arc<Mutex<Vec<(String, f64)>>> = Arc::default();
        let recorder = {
            let (registered, values) = (registered.clone(), values.clone());
            crate::test_recorder::TestRecorder::histograms(move |key| {
                let labels: Vec<String> =
                    key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
                let name = format!("{}{{{}}}", key.name(), labels.join(","));
                registered.lock().unwrap().push(name.clone());
                metrics::Histogram::from_arc(Arc::new(Sink(name, values.clone())))
            })
        };
        let latency = LatencyHistograms::default();
        metrics::with_local_recorder(&recorder, || {
            latency.record("/v1/", "read", 200, 0.001);
            latency.record("/v1/", "read", 200, 0.002);
            latency.record("/v1/", "read", 404, 0.003);
            latency.record("/v1/", "write", 200, 0.004);
            latency.record("/v1/", "read", 200, 0.005);
        });
        let series = |route: &str, upstream: &str, status: u16| {
            format!("socialnet_gateway_request_seconds{{route={route},upstream={upstream},status={status}}}")
        };
        assert_eq!(
            *registered.lock().unwrap(),
            vec![series("/v1/", "read", 200), series("/v1/", "read", 404), series("/v1/", "write", 200)]
        );
        let ok_reads: Vec<f64> = values
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| *s == series("/v1/", "read", 200))
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(ok_reads, vec![0.001, 0.002, 0.005]);
        assert_eq!(values.lock().unwrap().len(), 5, "every request recorded once");
    }
}
