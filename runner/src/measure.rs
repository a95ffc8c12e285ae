//! Measurement: one HdrHistogram per operation per phase (and one for the whole run), outcome
//! counts with a few example reasons, and a per-second series per operation whose memory stays
//! flat however long the run (each second is reduced to three numbers when it closes).
//!
//! Phases come from the proxy's scenario events ([`Recorder::begin_phase`]): an operation counts
//! in every phase window open when it *began* (what happened to the work sent during a fault
//! is charged to that fault, however long it hung), and in the per-second series of the second
//! it ended.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::outcome::{Attempt, Outcome};
use crate::report::{Latency, OperationStats, Point, Series};

/// Highest latency tracked exactly: one hour, in microseconds (longer ones saturate).
const MAX_US: u64 = 3_600_000_000;
/// Distinct example reasons kept per outcome class and phase.
const EXAMPLES: usize = 3;

/// Latencies and outcomes of a set of operations.
#[derive(Clone)]
pub struct Stats {
    /// Latency in microseconds.
    pub histogram: Histogram<u64>,
    /// Count per [`Outcome`] (indexed by [`Outcome::index`]).
    pub outcomes: [u64; 5],
    /// A few distinct reasons per outcome.
    pub examples: Vec<(Outcome, String)>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            histogram: histogram(3),
            outcomes: [0; 5],
            examples: Vec::new(),
        }
    }
}

fn histogram(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, sigfig).expect("static histogram bounds are valid")
}

impl Stats {
    fn record(&mut self, latency_us: u64, attempt: &Attempt) {
        self.histogram
            .saturating_record(latency_us.clamp(1, MAX_US));
        self.outcomes[attempt.outcome.index()] += 1;
        if let Some(detail) = &attempt.detail {
            let same_class = self
                .examples
                .iter()
                .filter(|(o, _)| *o == attempt.outcome)
                .count();
            if same_class < EXAMPLES
                && !self
                    .examples
                    .iter()
                    .any(|(o, d)| *o == attempt.outcome && d == detail)
            {
                self.examples.push((attempt.outcome, detail.clone()));
            }
        }
    }

    /// Adds another set's numbers to this one.
    pub fn merge(&mut self, other: &Stats) {
        let _ = self.histogram.add(&other.histogram);
        for (mine, theirs) in self.outcomes.iter_mut().zip(other.outcomes) {
            *mine += theirs;
        }
        for example in &other.examples {
            if self.examples.len() < EXAMPLES * 5 && !self.examples.contains(example) {
                self.examples.push(example.clone());
            }
        }
    }

    /// Operations measured.
    pub fn count(&self) -> u64 {
        self.outcomes.iter().sum()
    }

    /// Operations that failed (not [`Outcome::Ok`]).
    pub fn failed(&self) -> u64 {
        self.count() - self.outcomes[Outcome::Ok.index()]
    }

    /// Failed / count (0 without operations).
    pub fn error_rate(&self) -> f64 {
        match self.count() {
            0 => 0.0,
            n => self.failed() as f64 / n as f64,
        }
    }

    /// The `q` quantile (0..=1) of latency, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }

    /// The latency summary, in milliseconds.
    pub fn latency(&self) -> Latency {
        if self.histogram.is_empty() {
            return Latency::default();
        }
        Latency {
            min: self.histogram.min() as f64 / 1000.0,
            p50: self.quantile_ms(0.50),
            p90: self.quantile_ms(0.90),
            p95: self.quantile_ms(0.95),
            p99: self.quantile_ms(0.99),
            max: self.histogram.max() as f64 / 1000.0,
            mean: self.histogram.mean() / 1000.0,
        }
    }
}

/// One operation's numbers.
struct OpRecord {
    whole: Stats,
    phases: BTreeMap<String, Stats>,
    series: Vec<Point>,
    second: u64,
    second_histogram: Histogram<u64>,
    second_failed: u64,
}

impl OpRecord {
    fn new() -> OpRecord {
        OpRecord {
            whole: Stats::default(),
            phases: BTreeMap::new(),
            series: Vec::new(),
            second: 0,
            second_histogram: histogram(2),
            second_failed: 0,
        }
    }

    /// Closes the current second into the series if `now_second` is past it.
    fn roll(&mut self, now_second: u64) {
        if now_second <= self.second {
            return;
        }
        if !self.second_histogram.is_empty() {
            self.series.push(Point {
                second: self.second,
                count: self.second_histogram.len(),
                failed: self.second_failed,
                p95_ms: self.second_histogram.value_at_quantile(0.95) as f64 / 1000.0,
            });
        }
        self.second_histogram.reset();
        self.second_failed = 0;
        self.second = now_second;
    }
}

struct Inner {
    /// Every phase window so far: name, start, end.
    windows: Vec<(String, Instant, Instant)>,
    ops: BTreeMap<(String, String), OpRecord>,
}

/// Records every measured operation of a run.
pub struct Recorder {
    origin: Instant,
    inner: Mutex<Inner>,
}

/// A workload's last seconds, for the live view.
#[derive(Debug, Clone, PartialEq)]
pub struct Recent {
    /// The workload.
    pub workload: String,
    /// Operations that ended in the window.
    pub count: u64,
    /// Of which failed.
    pub failed: u64,
    /// The worst per-second p95 in the window, milliseconds.
    pub p95_ms: f64,
}

impl Recorder {
    /// A recorder whose second 0 starts at `origin` (the scenario's start).
    pub fn new(origin: Instant) -> Recorder {
        Recorder {
            origin,
            inner: Mutex::new(Inner {
                windows: Vec::new(),
                ops: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When second 0 began.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// A phase window: from `from` to `to` (exclusive), offsets from the origin.
    pub fn begin_phase(&self, name: &str, from: Duration, to: Duration) {
        let window = (name.to_owned(), self.origin + from, self.origin + to);
        self.lock().windows.push(window);
    }

    /// Records one operation that began at `began` and ended now.
    pub fn record(&self, workload: &str, operation: &str, began: Instant, attempt: &Attempt) {
        let mut inner = self.lock();
        // Read the clock under the lock, so the seconds of the series only move forward.
        let now = Instant::now();
        let second = now.saturating_duration_since(self.origin).as_secs();
        let latency = now.saturating_duration_since(began);
        let latency_us = latency.as_micros().min(u128::from(MAX_US)) as u64;
        let phases: Vec<String> = inner
            .windows
            .iter()
            .filter(|(_, from, to)| *from <= began && began < *to)
            .map(|(name, _, _)| name.clone())
            .collect();
        let key = (workload.to_owned(), operation.to_owned());
        let op = inner.ops.entry(key).or_insert_with(OpRecord::new);
        op.roll(second);
        op.second_histogram
            .saturating_record(latency_us.clamp(1, MAX_US));
        if attempt.outcome.failed() {
            op.second_failed += 1;
        }
        op.whole.record(latency_us, attempt);
        for phase in phases {
            op.phases
                .entry(phase)
                .or_default()
                .record(latency_us, attempt);
        }
    }

    /// The merged stats of the operations `select` accepts, in `phase` (`None`: the whole
    /// run).
    pub fn merged(&self, phase: Option<&str>, select: impl Fn(&str, &str) -> bool) -> Stats {
        let inner = self.lock();
        let mut total = Stats::default();
        for ((workload, operation), op) in &inner.ops {
            if !select(workload, operation) {
                continue;
            }
            let stats = match phase {
                None => Some(&op.whole),
                Some(phase) => op.phases.get(phase),
            };
            if let Some(stats) = stats {
                total.merge(stats);
            }
        }
        total
    }

    /// The (workload, operation) pairs seen so far.
    pub fn operations(&self) -> Vec<(String, String)> {
        self.lock().ops.keys().cloned().collect()
    }

    /// Every workload's last `window` seconds (closed seconds only).
    pub fn recent(&self, window: u64) -> Vec<Recent> {
        let now_second = self.origin.elapsed().as_secs();
        let mut inner = self.lock();
        let mut by_workload: BTreeMap<String, Recent> = BTreeMap::new();
        for ((workload, _), op) in inner.ops.iter_mut() {
            op.roll(now_second);
            let entry = by_workload
                .entry(workload.clone())
                .or_insert_with(|| Recent {
                    workload: workload.clone(),
                    count: 0,
                    failed: 0,
                    p95_ms: 0.0,
                });
            for point in op
                .series
                .iter()
                .rev()
                .take_while(|p| p.second + window >= now_second)
            {
                entry.count += point.count;
                entry.failed += point.failed;
                entry.p95_ms = entry.p95_ms.max(point.p95_ms);
            }
        }
        by_workload.into_values().collect()
    }

    /// The report's operation table (whole run as phase `"*"`, then each phase) and series.
    pub fn finish(&self) -> (Vec<OperationStats>, Vec<Series>) {
        let now_second = self.origin.elapsed().as_secs() + 1;
        let mut inner = self.lock();
        let mut table = Vec::new();
        let mut series = Vec::new();
        for ((workload, operation), op) in inner.ops.iter_mut() {
            op.roll(now_second);
            let row = |phase: &str, stats: &Stats| OperationStats {
                workload: workload.clone(),
                operation: operation.clone(),
                phase: phase.to_owned(),
                count: stats.count(),
                outcomes: Outcome::ALL
                    .iter()
                    .map(|o| (o.as_str().to_owned(), stats.outcomes[o.index()]))
                    .collect(),
                error_rate: stats.error_rate(),
                latency_ms: stats.latency(),
                examples: stats
                    .examples
                    .iter()
                    .map(|(o, d)| format!("{o}: {d}"))
                    .collect(),
            };
            table.push(row("*", &op.whole));
            for (phase, stats) in &op.phases {
                table.push(row(phase, stats));
            }
            series.push(Series {
                workload: workload.clone(),
                operation: operation.clone(),
                points: op.series.clone(),
            });
        }
        (table, series)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_count_in_the_phases_open_when_they_began() {
        let origin = Instant::now() - Duration::from_secs(10);
        let recorder = Recorder::new(origin);
        recorder.begin_phase("fault", Duration::from_secs(5), Duration::from_secs(60));
        let ago = |ms: u64| Instant::now() - Duration::from_millis(ms);
        // Began at second 1, before the fault: not in it, though it ended during it.
        recorder.record("w", "op", origin + Duration::from_secs(1), &Attempt::ok());
        recorder.record("w", "op", ago(30), &Attempt::ok());
        recorder.record(
            "w",
            "op",
            ago(50),
            &Attempt::new(Outcome::UncleanError, "500 without a reason"),
        );
        let whole = recorder.merged(None, |_, _| true);
        assert_eq!(whole.count(), 3);
        let fault = recorder.merged(Some("fault"), |w, o| w == "w" && o == "op");
        assert_eq!(fault.count(), 2);
        assert_eq!(fault.failed(), 1);
        assert!((fault.error_rate() - 0.5).abs() < 1e-9);
        assert!(fault.latency().max >= 50.0 && fault.latency().max < 1000.0);
        assert_eq!(
            fault.examples,
            vec![(Outcome::UncleanError, "500 without a reason".to_owned())]
        );
        assert_eq!(recorder.merged(Some("other"), |_, _| true).count(), 0);
    }

    #[test]
    fn the_series_keeps_one_point_per_second_and_the_table_has_every_phase() {
        let recorder = Recorder::new(Instant::now() - Duration::from_secs(5));
        recorder.begin_phase("baseline", Duration::ZERO, Duration::from_secs(100));
        for _ in 0..10 {
            recorder.record("w", "op", Instant::now(), &Attempt::ok());
        }
        let (table, series) = recorder.finish();
        assert_eq!(table.len(), 2);
        assert_eq!(table[0].phase, "*");
        assert_eq!(table[1].phase, "baseline");
        assert_eq!(table[1].count, 10);
        assert_eq!(series[0].points.len(), 1);
        assert_eq!(series[0].points[0].second, 5);
        assert_eq!(series[0].points[0].count, 10);
    }
}
