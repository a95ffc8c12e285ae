//! The load models: closed (N virtual users, each starting its next operation when the last one
//! ends) and open (operations start on an arrival schedule whatever the latency; latency counts
//! from the *intended* start, so a stall shows as latency instead of as fewer requests).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chaos_proxy::timer::PreciseTimer;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::measure::Recorder;
use crate::workloads::Workload;

/// Open-model operations in flight beyond which arrivals are skipped (and counted): the runner
/// must not eat the machine when the target stalls.
pub const MAX_IN_FLIGHT: u64 = 20_000;

/// One workload's load, ready to drive.
pub struct Plan {
    /// The workload's name.
    pub name: String,
    /// The workload.
    pub workload: Arc<dyn Workload>,
    /// Operation names and weights.
    pub mix: Vec<(String, u32)>,
    /// Closed or open.
    pub load: chaos_scenarios::Load,
    /// How long it runs from the start.
    pub duration: Duration,
    /// The first part, not measured.
    pub warmup: Duration,
    /// Seed of the operation draws.
    pub seed: u64,
}

/// What the driver saw of its own schedule.
#[derive(Debug, Clone, Default)]
pub struct Driven {
    /// Operations the schedule asked for (open model) or started (closed model).
    pub intended: u64,
    /// Operations started.
    pub started: u64,
    /// Open model: arrivals skipped because [`MAX_IN_FLIGHT`] operations were in flight.
    pub skipped: u64,
    /// Open model: start lag behind the schedule, microseconds (median, p99, worst).
    pub slip_us: [u64; 3],
    /// Open model: arrivals that started more than 1 ms after their intended time.
    pub late: u64,
}

/// Picks operations by weight.
struct Mix {
    names: Vec<String>,
    cumulative: Vec<u32>,
}

impl Mix {
    fn new(mix: &[(String, u32)]) -> Mix {
        let mut total = 0;
        let mut names = Vec::new();
        let mut cumulative = Vec::new();
        for (name, weight) in mix {
            if *weight > 0 {
                total += weight;
                names.push(name.clone());
                cumulative.push(total);
            }
        }
        Mix { names, cumulative }
    }

    fn pick(&self, rng: &mut StdRng) -> &str {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total == 0 {
            return "";
        }
        let draw = rng.random_range(0..total);
        let at = self.cumulative.partition_point(|c| *c <= draw);
        &self.names[at]
    }
}

/// Drives `plan` from `start` until its duration passes or `stop` is cancelled, recording every
/// operation that began after the warm-up; returns when every operation it started has ended.
pub async fn drive(
    plan: Plan,
    recorder: Arc<Recorder>,
    start: Instant,
    stop: CancellationToken,
) -> Driven {
    match plan.load {
        chaos_scenarios::Load::VirtualUsers(users) => {
            closed(plan, users, recorder, start, stop).await
        }
        chaos_scenarios::Load::Rate(rate) => {
            open(plan, rate.per_second(), recorder, start, stop).await
        }
    }
}

/// Runs one operation and records it (unless it began in the warm-up).
async fn one(
    plan: &Plan,
    op: &str,
    user: u64,
    intended: Instant,
    start: Instant,
    recorder: &Recorder,
) {
    let attempt = plan.workload.run(op, user).await;
    let began = attempt.started.unwrap_or(intended);
    if began.saturating_duration_since(start) < plan.warmup {
        return;
    }
    let operation = attempt.operation.unwrap_or(op);
    recorder.record(&plan.name, operation, began, &attempt);
}

async fn closed(
    plan: Plan,
    users: u32,
    recorder: Arc<Recorder>,
    start: Instant,
    stop: CancellationToken,
) -> Driven {
    let plan = Arc::new(plan);
    let end = start + plan.duration;
    let started = Arc::new(AtomicU64::new(0));
    let tracker = TaskTracker::new();
    for user in 0..u64::from(users) {
        let (plan, recorder, stop, started) = (
            Arc::clone(&plan),
            Arc::clone(&recorder),
            stop.clone(),
            Arc::clone(&started),
        );
        tracker.spawn(async move {
            let mix = Mix::new(&plan.mix);
            let mut rng = StdRng::seed_from_u64(plan.seed ^ user.wrapping_mul(0x9e37_79b9));
            while !stop.is_cancelled() && Instant::now() < end {
                let op = mix.pick(&mut rng).to_owned();
                started.fetch_add(1, Ordering::Relaxed);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = one(&plan, &op, user, Instant::now(), start, &recorder) => {}
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
    let started = started.load(Ordering::Relaxed);
    Driven {
        intended: started,
        started,
        ..Driven::default()
    }
}

async fn open(
    plan: Plan,
    per_second: f64,
    recorder: Arc<Recorder>,
    start: Instant,
    stop: CancellationToken,
) -> Driven {
    let plan = Arc::new(plan);
    let interval = Duration::from_secs_f64(1.0 / per_second);
    let total = (plan.duration.as_secs_f64() * per_second).floor() as u64;
    let mix = Mix::new(&plan.mix);
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let in_flight = Arc::new(AtomicU64::new(0));
    let tracker = TaskTracker::new();
    let mut slip = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .expect("static histogram bounds are valid");
    let mut driven = Driven::default();
    // tokio's timer rounds up to the next millisecond: every arrival would start up to 1 ms
    // late (and its latency, counted from the intended start, would carry that). The proxy's
    // timerfd timer wakes within the kernel's wake-up latency; `wake_at` does not spin to be
    // exact, so thousands of arrivals a second cost little CPU (BENCHMARKS.md).
    let timer = PreciseTimer::new().ok();
    let mut next = 0u64;
    'schedule: while next < total {
        let due = start + interval.mul_f64(next as f64);
        tokio::select! {
            _ = stop.cancelled() => break 'schedule,
            _ = wait_until(timer.as_ref(), due) => {}
        }
        // Every arrival whose time has come starts now (a late timer catches up at once).
        let now = Instant::now();
        while next < total {
            let intended = start + interval.mul_f64(next as f64);
            if intended > now {
                break;
            }
            next += 1;
            driven.intended += 1;
            if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
                driven.skipped += 1;
                continue;
            }
            let lag_us = now.saturating_duration_since(intended).as_micros() as u64;
            slip.saturating_record(lag_us.max(1));
            if lag_us > 1000 {
                driven.late += 1;
            }
            driven.started += 1;
            let op = mix.pick(&mut rng).to_owned();
            let (plan, recorder, stop, in_flight) = (
                Arc::clone(&plan),
                Arc::clone(&recorder),
                stop.clone(),
                Arc::clone(&in_flight),
            );
            let user = next;
            in_flight.fetch_add(1, Ordering::Relaxed);
            tracker.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = one(&plan, &op, user, intended, start, &recorder) => {}
                }
                in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
    tracker.close();
    tracker.wait().await;
    if !slip.is_empty() {
        driven.slip_us = [
            slip.value_at_quantile(0.5),
            slip.value_at_quantile(0.99),
            slip.max(),
        ];
    }
    driven
}

/// Waits until `due` on the precise timer, or on tokio's when there is none.
async fn wait_until(timer: Option<&PreciseTimer>, due: Instant) {
    let due = tokio::time::Instant::from_std(due);
    match timer {
        Some(timer) if timer.wake_at(due).await.is_ok() => {}
        _ => tokio::time::sleep_until(due).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Context;
    use crate::outcome::Attempt;
    use crate::report::CheckResult;
    use futures_util::future::BoxFuture;

    /// Answers after a fixed delay and counts calls per operation.
    struct Fixed {
        delay: Duration,
        calls: std::sync::Mutex<Vec<String>>,
    }

    impl Workload for Fixed {
        fn run<'a>(&'a self, op: &'a str, _user: u64) -> BoxFuture<'a, Attempt> {
            self.calls.lock().unwrap().push(op.to_owned());
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                Attempt::ok()
            })
        }

        fn settle<'a>(&'a self, _ctx: &'a Context) -> BoxFuture<'a, Vec<CheckResult>> {
            Box::pin(async { Vec::new() })
        }
    }

    fn plan(workload: Arc<Fixed>, load: chaos_scenarios::Load, warmup: Duration) -> Plan {
        Plan {
            name: "w".into(),
            workload,
            mix: vec![("a".into(), 3), ("b".into(), 1)],
            load,
            duration: Duration::from_millis(1000),
            warmup,
            seed: 1,
        }
    }

    #[tokio::test]
    async fn the_open_model_keeps_its_rate_whatever_the_latency() {
        let workload = Arc::new(Fixed {
            delay: Duration::from_millis(300),
            calls: Default::default(),
        });
        let rate = "200/s".parse().unwrap();
        let recorder = Arc::new(Recorder::new(Instant::now()));
        let start = Instant::now();
        let driven = drive(
            plan(
                Arc::clone(&workload),
                chaos_scenarios::Load::Rate(rate),
                Duration::ZERO,
            ),
            Arc::clone(&recorder),
            start,
            CancellationToken::new(),
        )
        .await;
        // 200/s for 1 s while each operation takes 300 ms: a closed model would start ~4 per
        // user; the open one starts all 200.
        assert_eq!(driven.intended, 200);
        assert_eq!(driven.started, 200);
        assert_eq!(recorder.merged(None, |_, _| true).count(), 200);
        let calls = workload.calls.lock().unwrap();
        let a = calls.iter().filter(|op| *op == "a").count();
        assert!((110..=190).contains(&a), "weights 3:1 gave {a} of 200");
        // Latency counts from the intended start: never below the operation's own 300 ms.
        assert!(recorder.merged(None, |_, _| true).latency().min >= 299.0);
    }

    #[tokio::test]
    async fn the_closed_model_runs_its_users_back_to_back_and_skips_the_warmup() {
        let workload = Arc::new(Fixed {
            delay: Duration::from_millis(100),
            calls: Default::default(),
        });
        let recorder = Arc::new(Recorder::new(Instant::now()));
        let driven = drive(
            plan(
                Arc::clone(&workload),
                chaos_scenarios::Load::VirtualUsers(2),
                Duration::from_millis(500),
            ),
            Arc::clone(&recorder),
            Instant::now(),
            CancellationToken::new(),
        )
        .await;
        // Two users, 100 ms each, for 1 s: about 20 operations, about half after the warm-up.
        assert!((14..=22).contains(&driven.started), "{driven:?}");
        let measured = recorder.merged(None, |_, _| true).count();
        assert!(
            measured < driven.started && measured >= 6,
            "{measured} of {driven:?}"
        );
    }

    #[tokio::test]
    async fn a_cancelled_run_stops_at_once() {
        let workload = Arc::new(Fixed {
            delay: Duration::from_secs(60),
            calls: Default::default(),
        });
        let stop = CancellationToken::new();
        let recorder = Arc::new(Recorder::new(Instant::now()));
        let mut long = plan(
            workload,
            chaos_scenarios::Load::VirtualUsers(3),
            Duration::ZERO,
        );
        long.duration = Duration::from_secs(3600);
        let driving = tokio::spawn(drive(long, recorder, Instant::now(), stop.clone()));
        stop.cancel();
        let driven = tokio::time::timeout(Duration::from_secs(5), driving)
            .await
            .expect("stops within 5 s")
            .unwrap();
        assert!(driven.started <= 3);
    }
}
