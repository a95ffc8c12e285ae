//! The judge can fail: each testbed flaw makes the `judge` scenario fail, naming the broken
//! invariant or the fallback or amplification it saw; the flawless testbed passes the same
//! scenario, with exactly one winner per contested shift.

use chaos_runner::drill::{self, Request, Where};
use chaos_runner::library::Source;
use chaos_runner::report::Report;
use chaos_testbed::flaws::Flaw;
use tokio_util::sync::CancellationToken;

/// Runs `runner/tests/scenarios/judge.toml` on the embedded default with `flaws`.
async fn judge(flaws: Vec<Flaw>) -> Report {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios/judge.toml");
    let source = Source {
        text: std::fs::read_to_string(path).unwrap(),
        origin: path.to_owned(),
    };
    let out = tempfile::tempdir().unwrap();
    let request = Request {
        source,
        target: Where::Embedded { flaws },
        out: out.path().to_owned(),
        live: false,
    };
    let (report, _) = drill::run(request, CancellationToken::new()).await.unwrap();
    report
}

/// The names of the required checks and SLAs that failed.
fn failed(report: &Report) -> Vec<String> {
    let mut names: Vec<String> = report
        .checks
        .iter()
        .filter(|c| c.required && !c.passed)
        .map(|c| c.name.clone())
        .collect();
    names.extend(
        report
            .slas
            .iter()
            .filter(|s| s.required && !s.passed)
            .map(|s| format!("sla {} {}", s.operation, s.threshold)),
    );
    names
}

/// Asserts that `flaw` fails the judge with one of `expected` among the failed checks.
async fn caught(flaw: Flaw, expected: &[&str]) {
    let report = judge(vec![flaw]).await;
    let failed = failed(&report);
    assert_eq!(
        report.verdict.exit_code, 1,
        "{flaw:?} was not caught: {}\n{:#?}",
        report.verdict.summary, report.verdict.failures
    );
    assert!(
        expected.iter().any(|name| failed.iter().any(|f| f == name)),
        "{flaw:?}: expected one of {expected:?} to fail, failed: {failed:?}\n{:#?}",
        report.verdict.failures
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_flawless_testbed_passes_with_one_winner_per_shift() {
    let report = judge(Vec::new()).await;
    assert_eq!(
        report.verdict.exit_code, 0,
        "{}\n{:#?}",
        report.verdict.summary, report.verdict.failures
    );
    let race = report
        .checks
        .iter()
        .find(|c| c.name == "swap-race-one-winner")
        .expect("the race was judged");
    assert!(race.passed, "{race:?}");
    let one_winner = report
        .checks
        .iter()
        .find(|c| c.name == "one-executed-swap-per-week")
        .unwrap();
    assert!(one_winner.passed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_row_lock_is_caught() {
    caught(
        Flaw::NoRowLock,
        &[
            "swap-race-one-winner",
            "one-executed-swap-per-week",
            "executed-swaps-fully-applied",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commit_then_error_is_caught() {
    caught(Flaw::CommitThenError, &["swap-answers-match-the-database"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fake_fallback_is_caught() {
    caught(Flaw::FakeFallback, &["mcp-answers-are-real"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retry_storm_is_caught() {
    caught(Flaw::RetryStorm, &["mcp-calls-not-amplified"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_task_is_caught() {
    caught(Flaw::LostTask, &["celery-every-task-ran"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cache_stale_is_caught() {
    caught(Flaw::CacheStale, &["resilience-answers-fresh"]).await;
}
