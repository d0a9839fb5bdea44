//! A `metrics::Recorder` for unit tests: counters are dropped; gauges and histograms are whatever the
//! test's closure makes of their key, so a test can see what a module registers and records.

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};

type Make<T> = Box<dyn Fn(&Key) -> T>;

pub struct TestRecorder {
    gauge: Make<Gauge>,
    histogram: Make<Histogram>,
}

impl TestRecorder {
    pub fn gauges(make: impl Fn(&Key) -> Gauge + 'static) -> Self {
        Self { gauge: Box::new(make), histogram: Box::new(|_| Histogram::noop()) }
    }

    pub fn histograms(make: impl Fn(&Key) -> Histogram + 'static) -> Self {
        Self { gauge: Box::new(|_| Gauge::noop()), histogram: Box::new(make) }
    }
}

impl metrics::Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
        Counter::noop()
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        (self.gauge)(key)
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        (self.histogram)(key)
    }
}
