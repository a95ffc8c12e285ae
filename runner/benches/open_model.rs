//! The open model's own schedule keeping at a fixed arrival rate: is the runner ever the
//! bottleneck? Drives `GET <url>` through `chaos_runner::load` (the code every drill uses) and
//! prints one JSON line: arrivals intended and started, achieved rate, start lag behind the
//! schedule (p50/p99/max and the share later than 1 ms), latency, and the process's RSS sampled
//! every `--sample` seconds (flat memory over a soak).
//!
//! ```text
//! cargo bench -p chaos_runner --bench open_model -- --url http://127.0.0.1:8000/health \
//!     --rate 5000 --seconds 20 [--sample 60]
//! ```
//! `bench/runner-open-model.sh` runs it next to `hey -q` (a fixed-rate tool) against the
//! testbed's cheapest endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chaos_runner::context::Context;
use chaos_runner::load::{self, Plan};
use chaos_runner::measure::Recorder;
use chaos_runner::outcome::{Attempt, classify_status, classify_transport};
use chaos_runner::report::CheckResult;
use chaos_runner::workloads::Workload;
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

/// `GET url`, nothing else.
struct Get {
    http: reqwest::Client,
    url: String,
}

impl Workload for Get {
    fn run<'a>(&'a self, _op: &'a str, _user: u64) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            match self.http.get(&self.url).send().await {
                Ok(answer) => {
                    let status = answer.status().as_u16();
                    let body = answer.bytes().await.unwrap_or_default();
                    classify_status(status, &body)
                }
                Err(err) => classify_transport(&err, false),
            }
        })
    }

    fn settle<'a>(&'a self, _ctx: &'a Context) -> BoxFuture<'a, Vec<CheckResult>> {
        Box::pin(async { Vec::new() })
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// CPU time this process used (user + system), in seconds (Linux clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split(' ').collect();
            let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
            Some((ticks(11)? + ticks(12)?) / 100.0)
        })
        .unwrap_or(0.0)
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; without a URL there is nothing to measure (CI builds it).
    let Some(url) = arg("--url") else {
        eprintln!("open_model: give --url (see the file's docs); nothing measured");
        return;
    };
    let rate: f64 = arg("--rate").and_then(|r| r.parse().ok()).unwrap_or(5000.0);
    let seconds: u64 = arg("--seconds").and_then(|s| s.parse().ok()).unwrap_or(20);
    let sample: u64 = arg("--sample").and_then(|s| s.parse().ok()).unwrap_or(10);
    assert!(
        url.starts_with("http://127.0.0.1") || url.starts_with("http://[::1]"),
        "loopback only"
    );
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async move {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .no_proxy()
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a client");
        let workload = Arc::new(Get { http, url });
        let start = Instant::now() + Duration::from_millis(200);
        let recorder = Arc::new(Recorder::new(start));
        let plan = Plan {
            name: "get".into(),
            workload,
            mix: vec![("get".into(), 1)],
            load: chaos_scenarios::Load::Rate(
                format!("{rate}/s").parse().expect("a valid rate"),
            ),
            duration: Duration::from_secs(seconds),
            warmup: Duration::ZERO,
            seed: 1,
        };
        let rss_start = rss_kib();
        let cpu_start = cpu_seconds();
        let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sampler = tokio::spawn({
            let samples = Arc::clone(&samples);
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(sample));
                loop {
                    tick.tick().await;
                    samples.lock().expect("not poisoned").push(rss_kib());
                }
            }
        });
        let driven = load::drive(plan, Arc::clone(&recorder), start, CancellationToken::new()).await;
        let elapsed = start.elapsed().as_secs_f64();
        sampler.abort();
        let stats = recorder.merged(None, |_, _| true);
        let latency = stats.latency();
        println!(
            "{}",
            serde_json::json!({
                "target_rate": rate,
                "seconds": seconds,
                "intended": driven.intended,
                "started": driven.started,
                "skipped": driven.skipped,
                "achieved_rate": driven.started as f64 / seconds as f64,
                "wall_s": elapsed,
                "ok": stats.outcomes[0],
                "failed": stats.failed(),
                "start_lag_us": {"p50": driven.slip_us[0], "p99": driven.slip_us[1], "max": driven.slip_us[2]},
                "late_over_1ms": driven.late,
                "latency_ms": {"p50": latency.p50, "p99": latency.p99, "max": latency.max},
                "cpu_pct": 100.0 * (cpu_seconds() - cpu_start) / elapsed,
                "rss_kib": {"start": rss_start, "end": rss_kib(), "samples": *samples.lock().expect("not poisoned")},
            })
        );
    });
}
