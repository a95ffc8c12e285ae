//! The shipped `smoke` scenario, end to end on the embedded default (throwaway PostgreSQL and
//! Redis, the testbed and the proxy in process): it passes, and writes the four reports.
//! Alone in its test binary, so no other drill shares the machine's two cores with it.

use chaos_runner::drill::{self, Request, Where};
use chaos_runner::library;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn smoke_passes_on_the_embedded_default_and_writes_every_report() {
    let out = tempfile::tempdir().unwrap();
    let request = Request {
        source: library::resolve("smoke").unwrap(),
        target: Where::Embedded { flaws: Vec::new() },
        out: out.path().to_owned(),
        live: false,
    };
    let started = std::time::Instant::now();
    let (report, written) = drill::run(request, CancellationToken::new()).await.unwrap();
    let verdict = &report.verdict;
    assert_eq!(
        verdict.exit_code, 0,
        "{}\n{:#?}",
        verdict.summary, verdict.failures
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(120),
        "the 55 s smoke took {:?}",
        started.elapsed()
    );

    // Every phase the proxy ran, every workload measured, every check judged.
    let phases: Vec<&str> = report.phases.iter().map(|p| p.name.as_str()).collect();
    for phase in [
        "baseline",
        "db-slow",
        "recovery",
        "cache-loading",
        "api-503",
    ] {
        assert!(phases.contains(&phase), "{phases:?}");
    }
    for workload in ["swaps", "resilience", "mcp", "celery"] {
        let measured: u64 = report
            .operations
            .iter()
            .filter(|o| o.workload == workload && o.phase == "*")
            .map(|o| o.count)
            .sum();
        assert!(measured > 0, "{workload} measured nothing");
    }
    assert!(
        report
            .checks
            .iter()
            .any(|c| c.name == "no-double-booking" && c.passed)
    );
    assert!(
        report
            .checks
            .iter()
            .any(|c| c.name == "celery-every-task-ran" && c.passed)
    );
    assert_eq!(report.degradation.len(), 3);

    // The four files, and what each must carry.
    let names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["report.json", "report.md", "report.html", "junit.xml"]
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["verdict"]["exit_code"], 0);
    let junit = std::fs::read_to_string(out.path().join("junit.xml")).unwrap();
    let cases = junit.matches("<testcase ").count();
    assert_eq!(
        cases,
        report.slas.len() + report.checks.len() + 1,
        "{junit}"
    );
    let markdown = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(markdown.contains("PASS"), "{markdown}");
    // No secret reached a report.
    for file in &written {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            !text.contains("postgres://"),
            "{} carries a database URL",
            file.display()
        );
    }
}
