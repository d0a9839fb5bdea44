//! The access log: one JSON line per request, in the shape of the other structured logs
//! (`{"timestamp", "level", "fields": {...}, "target": "access"}`), formatted by hand into a shared buffer
//! that a background thread writes out every 20 ms. Formatting it through the tracing subscriber's JSON
//! layer cost a sixth of the gateway's throughput, and waking a writer thread per line cost more still
//! (both measured with the gateway benchmark). It follows the same filter (`RUST_LOG`, target `access`).
//! Nothing is dropped: past 1 MiB the request that fills the buffer writes it out itself, and dropping the
//! log writes what is left.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// One request as logged.
#[derive(Debug)]
pub struct Entry<'a> {
    pub request_id: &'a str,
    pub trace_id: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub upstream: &'a str,
    pub status: u16,
    pub user: &'a str,
    pub ms: f64,
}

const FLUSH_EVERY: Duration = Duration::from_millis(20);
const FLUSH_AT: usize = 1 << 20;

struct Shared {
    pending: Mutex<Vec<u8>>,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Shared {
    fn flush(&self) {
        let data = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if !data.is_empty() {
            let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
            let _ = out.write_all(&data);
            let _ = out.flush();
        }
    }
}

pub struct AccessLog {
    shared: Arc<Shared>,
    /// Successful answers seen, for sampling them.
    successes: AtomicU64,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessLog")
    }
}

impl AccessLog {
    /// A log written to stderr (its thread ends when the log is dropped).
    pub fn stderr() -> Self {
        Self::to(std::io::stderr())
    }

    /// A log written to `out`.
    pub fn to(out: impl Write + Send + 'static) -> Self {
        let shared = Arc::new(Shared { pending: Mutex::new(Vec::new()), out: Mutex::new(Box::new(out)) });
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        let spawned = std::thread::Builder::new().name("access-log".into()).spawn(move || {
            loop {
                std::thread::sleep(FLUSH_EVERY);
                match weak.upgrade() {
                    Some(s) => s.flush(),
                    None => return,
                }
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no access-log thread: lines are written when 1 MiB is pending");
        }
        Self { shared, successes: AtomicU64::new(0) }
    }

    /// Log one request, if the `access` target is enabled at INFO: always when it failed (status 400 or
    /// more), and `successes` (0 to 1) of the successful ones.
    pub fn record(&self, e: &Entry<'_>, successes: f64) {
        if !tracing::enabled!(target: "access", tracing::Level::INFO) {
            return;
        }
        if e.status < 400
            && successes < 1.0
            && !keep(successes, self.successes.fetch_add(1, Ordering::Relaxed))
        {
            return;
        }
        let full = {
            let mut pending = self.shared.pending.lock().unwrap_or_else(|p| p.into_inner());
            write_line(&mut pending, e);
            pending.len() >= FLUSH_AT
        };
        if full {
            self.shared.flush();
        }
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        self.shared.flush();
    }
}

/// Whether the `n`-th success (from 0) is logged when a `fraction` of them are: when `n · fraction` crosses
/// an integer, so exactly that share is kept, evenly spread (0.25: the 4th, 8th, …).
fn keep(fraction: f64, n: u64) -> bool {
    let crossed = |k: u64| (k as f64 * fraction).floor();
    crossed(n + 1) > crossed(n)
}

/// Append the JSON line of one entry, newline included, to `b`.
fn write_line(b: &mut Vec<u8>, e: &Entry<'_>) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    b.extend_from_slice(b"{\"timestamp\":\"");
    b.extend_from_slice(now.as_bytes());
    b.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"request_id\":");
    string(b, e.request_id);
    b.extend_from_slice(b",\"trace_id\":");
    string(b, e.trace_id);
    b.extend_from_slice(b",\"method\":");
    string(b, e.method);
    b.extend_from_slice(b",\"path\":");
    string(b, e.path);
    b.extend_from_slice(b",\"route\":");
    string(b, e.route);
    b.extend_from_slice(b",\"upstream\":");
    string(b, e.upstream);
    let _ = write!(b, ",\"status\":{},\"user\":", e.status);
    string(b, e.user);
    let ms = if e.ms.is_finite() { e.ms } else { 0.0 };
    let _ = writeln!(b, ",\"ms\":{ms:.3}}},\"target\":\"access\"}}");
}

/// `s` as a JSON string (quotes, backslashes and control characters escaped). Runs of plain bytes are
/// copied whole: every other byte of UTF-8, multi-byte characters included, goes out as it is.
fn string(b: &mut Vec<u8>, s: &str) {
    b.push(b'"');
    let bytes = s.as_bytes();
    let mut run = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let escape: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            c if c < 0x20 => {
                b.extend_from_slice(&bytes[run..i]);
                let _ = write!(b, "\\u{:04x}", c);
                run = i + 1;
                continue;
            }
            _ => continue,
        };
        b.extend_from_slice(&bytes[run..i]);
        b.extend_from_slice(escape);
        run = i + 1;
    }
    b.extend_from_slice(&bytes[run..]);
    b.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(e: &Entry<'_>) -> Vec<u8> {
        let mut b = Vec::new();
        write_line(&mut b, e);
        b
    }

    #[test]
    fn a_line_is_json_with_every_field_escaped() {
        let e = Entry {
            request_id: "r\"1",
            trace_id: "t",
            method: "GET",
            path: "/v1/users/a\\b\n\u{1}é",
            route: "/v1/",
            upstream: "read",
            status: 200,
            user: "-",
            ms: 1.23456,
        };
        let text = line(&e);
        assert_eq!(text.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(v["target"], "access");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["fields"]["request_id"], "r\"1");
        assert_eq!(v["fields"]["path"], "/v1/users/a\\b\n\u{1}é");
        assert_eq!(v["fields"]["status"], 200);
        assert_eq!(v["fields"]["ms"], 1.235);
        assert!(chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).is_ok());
    }

    #[test]
    fn a_sample_of_successes_keeps_exactly_its_share() {
        let kept = |fraction: f64| (0..1000).filter(|n| keep(fraction, *n)).count();
        assert_eq!(kept(0.25), 250);
        assert_eq!(kept(0.1), 100);
        assert_eq!(kept(0.0), 0);
        assert_eq!(kept(1.0), 1000);
        assert!(!keep(0.25, 0) && !keep(0.25, 2) && keep(0.25, 3), "spread evenly: every fourth");
    }

    #[test]
    fn the_thread_writes_every_line_and_drop_writes_the_rest() {
        #[derive(Clone)]
        struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink(Default::default());
        let lines = |s: &Sink| s.0.lock().unwrap().iter().filter(|b| **b == b'\n').count();
        let e = Entry {
            request_id: "r",
            trace_id: "t",
            method: "GET",
            path: "/",
            route: "-",
            upstream: "-",
            status: 404,
            user: "-",
            ms: 0.5,
        };
        let log = AccessLog::to(sink.clone());
        for _ in 0..100 {
            write_line(&mut log.shared.pending.lock().unwrap(), &e);
        }
        // The background thread writes them within a few ticks, without any further request.
        for _ in 0..200 {
            if lines(&sink) == 100 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(lines(&sink), 100, "the writer thread did not write all 100 lines");
        write_line(&mut log.shared.pending.lock().unwrap(), &e);
        drop(log);
        assert_eq!(lines(&sink), 101, "dropping the log writes what is pending");
    }
}
