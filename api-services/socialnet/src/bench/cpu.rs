//! CPU time by process, read from `/proc` (Linux): a benchmark can report CPU per operation for each part
//! of the system, which varies far less from run to run than rates on a shared machine do. Processes that
//! exit between two samples are missed, so only long-lived ones (servers, pooled backends) count fully.

use std::collections::HashMap;

/// Kernel clock ticks per second for `/proc/*/stat` times (`USER_HZ`, 100 on every common Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds used so far, by command name (`postgres`, `nats-server`, …) plus this process as `self`.
#[derive(Debug, Clone, Default)]
pub struct CpuSample(HashMap<String, f64>);

impl CpuSample {
    pub fn take() -> Self {
        let me = std::process::id().to_string();
        Self::sum("/proc", |pid| {
            let name = (pid == me).then(|| "self".to_owned());
            pid.bytes().all(|b| b.is_ascii_digit()).then_some(name)
        })
    }

    /// CPU seconds used so far by this process's threads, by thread name (as the kernel keeps it: the
    /// first 15 bytes): lets a benchmark that runs several parts in one process, each on a runtime with
    /// named threads, count each part's CPU.
    pub fn threads() -> Self {
        Self::sum("/proc/self/task", |_| Some(None))
    }

    /// The CPU seconds of every `DIR/ID/stat` under `dir`, summed by name. `name(ID)` says under which:
    /// `None` skips the entry unread, `Some(None)` counts it under its command name, `Some(Some(n))` under `n`.
    fn sum(dir: &str, name: impl Fn(&str) -> Option<Option<String>>) -> Self {
        let mut by_name: HashMap<String, f64> = HashMap::new();
        let Ok(entries) = std::fs::read_dir(dir) else { return Self::default() };
        for entry in entries.flatten() {
            let Some(fixed) = name(&entry.file_name().to_string_lossy()) else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            let Some((comm, seconds)) = parse_stat(&stat) else { continue };
            *by_name.entry(fixed.unwrap_or(comm)).or_default() += seconds;
        }
        Self(by_name)
    }

    /// CPU seconds of `name` between `earlier` and this sample.
    pub fn since(&self, earlier: &CpuSample, name: &str) -> f64 {
        (self.0.get(name).copied().unwrap_or(0.0) - earlier.0.get(name).copied().unwrap_or(0.0)).max(0.0)
    }
}

/// `(comm, utime + stime in seconds)` from one `/proc/PID/stat` line. The command name is in parentheses
/// and may itself hold spaces or parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(String, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut fields = stat.get(close + 2..)?.split(' ');
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS_PER_SECOND))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_name_and_cpu_seconds() {
        let line = "4242 (nats (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0 100 0 0";
        assert_eq!(parse_stat(line), Some(("nats (x) y".to_owned(), 3.0)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn burning_cpu_shows_in_this_process_s_sample() {
        let start = CpuSample::take();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        // Spin until the kernel has counted at least 5 ticks against this process (or give up after 20 s
        // of wall time, which fails the test).
        while CpuSample::take().since(&start, "self") < 0.05 {
            assert!(started.elapsed() < std::time::Duration::from_secs(20), "no CPU time counted for self");
            for i in 0..1_000_000u64 {
                x = x.wrapping_add(i.wrapping_mul(i));
            }
            std::hint::black_box(x);
        }
        assert_eq!(start.since(&CpuSample::take(), "self"), 0.0, "time never runs backwards");
    }

    #[test]
    fn a_named_thread_s_cpu_is_counted_under_its_name() {
        let start = CpuSample::threads();
        let spinner = std::thread::Builder::new()
            .name("cpu-test-spin".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let mut x = 0u64;
                while CpuSample::threads().since(&start, "cpu-test-spin") < 0.05 {
                    assert!(
                        started.elapsed() < std::time::Duration::from_secs(20),
                        "no CPU counted for the thread"
                    );
                    for i in 0..1_000_000u64 {
                        x = x.wrapping_add(i.wrapping_mul(i));
                    }
                    std::hint::black_box(x);
                }
            })
            .unwrap();
        spinner.join().unwrap();
    }
}
