//! `report.json`: the whole [`Report`], pretty-printed (the schema of `docs/report.md`).

use super::Report;

/// Renders the report as pretty JSON with a trailing newline.
///
/// Non-finite numbers (NaN, infinities) have no JSON form: `serde_json` writes them as `null`.
pub fn render(report: &Report) -> String {
    let mut text = match serde_json::to_string_pretty(report) {
        Ok(text) => text,
        // The report is plain data (string-keyed maps, numbers, strings): this cannot happen,
        // but a report file that says why beats a panic at the end of a long run.
        Err(err) => serde_json::json!({
            "schema_version": report.schema_version,
            "error": format!("cannot serialize the report: {err}"),
        })
        .to_string(),
    };
    text.push('\n');
    text
}

/// A small report with a bit of everything, for the renderers' tests: a failed required SLA, a
/// failed advisory SLA, a failed check whose detail and evidence hold `<&"|` and a `<script>`,
/// an advisory check that failed, a fault window, a series and timing.
#[cfg(test)]
pub(crate) fn sample_report() -> Report {
    use std::collections::BTreeMap;

    use super::{
        BlastEntry, CheckResult, FaultSummary, Latency, OperationStats, PhaseInfo, Point,
        ScenarioInfo, Series, SlaResult, TargetInfo, Timing, Verdict,
    };

    let phase = |name: &str, from_ms: u64, to_ms: u64| PhaseInfo {
        name: name.to_owned(),
        from_ms,
        to_ms,
    };
    let latency = |p50: f64, p95: f64, p99: f64| Latency {
        min: p50 / 2.0,
        p50,
        p90: p95 * 0.9,
        p95,
        p99,
        max: p99 * 1.5,
        mean: p50 * 1.1,
    };
    let stats = |operation: &str, phase: &str, count: u64, failed: &[(&str, u64)]| {
        let failed_total: u64 = failed.iter().map(|(_, n)| n).sum();
        let mut outcomes = BTreeMap::from([("ok".to_owned(), count - failed_total)]);
        for (class, n) in failed {
            outcomes.insert((*class).to_owned(), *n);
        }
        OperationStats {
            workload: "swaps".to_owned(),
            operation: operation.to_owned(),
            phase: phase.to_owned(),
            count,
            outcomes,
            error_rate: if count == 0 {
                0.0
            } else {
                failed_total as f64 / count as f64
            },
            latency_ms: latency(42.25, 180.04, 420.0),
            examples: failed
                .iter()
                .map(|(class, _)| format!("{class}: 503 without a reason"))
                .collect(),
        }
    };
    let sla = |operation: &str, phase: &str, threshold: &str, required: bool, observed, passed| {
        SlaResult {
            operation: operation.to_owned(),
            phase: phase.to_owned(),
            threshold: threshold.to_owned(),
            required,
            observed,
            samples: if observed.is_some() { 50 } else { 0 },
            passed,
            detail: match observed {
                Some(value) => format!("observed {value} vs {threshold}"),
                None => "no samples: nothing to judge".to_owned(),
            },
        }
    };
    let mut stuck = CheckResult::fail(
        "no-double-booking",
        "invariant",
        "2 rows: <script>alert(1)</script> & \"owners\" | count",
        vec![
            "date=2025-01-06 | time_of_day=AM | owners=2".to_owned(),
            "date=2025-01-07 | time_of_day=<PM> | owners=3".to_owned(),
        ],
    );
    stuck.when = "after db-slow at 10s".to_owned();
    Report {
        schema_version: super::SCHEMA_VERSION,
        tool: "chaos 0.1.0".to_owned(),
        scenario: ScenarioInfo {
            name: "smoke".to_owned(),
            description: Some("CI smoke: one fault per proxy".to_owned()),
            source: "library:smoke".to_owned(),
            duration_ms: 20_000,
            seed: Some(1),
        },
        target: TargetInfo {
            kind: "embedded".to_owned(),
            profile: "testbed".to_owned(),
            api_url: "http://127.0.0.1:8000".to_owned(),
            mcp_url: "http://127.0.0.1:8001/mcp".to_owned(),
        },
        started_at: "2025-01-06T10:00:00Z".to_owned(),
        finished_at: "2025-01-06T10:00:20Z".to_owned(),
        verdict: Verdict {
            passed: false,
            exit_code: 1,
            summary: "1 of 3 required SLAs missed, 1 of 2 required checks failed".to_owned(),
            failures: vec![
                "SLA swaps.execute in db-slow: p(95) 812.5 ms vs p(95)<500ms".to_owned(),
                "check no-double-booking: 2 rows | owners > 1".to_owned(),
            ],
            error: None,
        },
        phases: vec![
            phase("baseline", 0, 5_000),
            phase("db-slow", 5_000, 10_000),
            phase("recovery", 10_000, 20_000),
        ],
        operations: vec![
            stats("execute", "baseline", 25, &[]),
            stats("execute", "db-slow", 25, &[("unclean_error", 2)]),
            stats(
                "execute",
                "*",
                100,
                &[("clean_error", 1), ("unclean_error", 2)],
            ),
            stats("history", "*", 40, &[]),
        ],
        series: vec![Series {
            workload: "swaps".to_owned(),
            operation: "execute".to_owned(),
            points: (0..20)
                .map(|second| Point {
                    second,
                    count: 5,
                    failed: u64::from(second == 6 || second == 7),
                    p95_ms: if (5..10).contains(&second) {
                        812.5
                    } else {
                        120.0
                    },
                })
                .collect(),
        }],
        slas: vec![
            sla(
                "swaps.execute",
                "baseline",
                "p(95)<500ms",
                true,
                Some(120.0),
                true,
            ),
            sla(
                "swaps.execute",
                "db-slow",
                "p(95)<500ms",
                true,
                Some(812.5),
                false,
            ),
            sla("*", "db-slow", "rate<0.01", false, Some(0.04), false),
            sla("mcp.*", "recovery", "count==0", true, None, true),
        ],
        checks: vec![
            stuck,
            CheckResult::pass("api-ready", "invariant", "200 from /api/v1/health/ready"),
            CheckResult::fail(
                "celery-every-task-ran-once",
                "celery",
                "1 task ran twice",
                vec!["task 7f3a ran 2 times".to_owned()],
            )
            .advisory(),
        ],
        degradation: vec![FaultSummary {
            fault: "db-slow".to_owned(),
            fault_type: "pg_delay".to_owned(),
            proxy: "postgres".to_owned(),
            phase: "db-slow".to_owned(),
            from_ms: 5_000,
            to_ms: 10_000,
            sla_kept: Some(false),
            clean_errors: 1,
            unclean_errors: 2,
            fallbacks: 0,
            unknown: 0,
            errors_clean: false,
            blast_radius: vec![
                BlastEntry {
                    operation: "mcp.list_tools".to_owned(),
                    kept: true,
                    detail: String::new(),
                },
                BlastEntry {
                    operation: "resilience.defense_level".to_owned(),
                    kept: false,
                    detail: "p(95) 1200.0 ms vs p(95)<1s".to_owned(),
                },
            ],
            recovery_s: Some(3),
            invariants_held: false,
        }],
        timing: Timing {
            fault_slip_us: [120, 900, 2_500],
            load_slip_us: BTreeMap::from([("swaps".to_owned(), [50, 400, 1_200])]),
            intended: BTreeMap::from([("swaps".to_owned(), [100, 99])]),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_round_trips_through_serde() {
        let report = sample_report();
        let text = render(&report);
        assert!(text.ends_with("}\n"));
        assert!(text.contains("\n  \"schema_version\": 1,\n"));
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(render(&back), text);
        assert_eq!(back.checks, report.checks);
        assert_eq!(back.series[0].points, report.series[0].points);
        assert_eq!(back.slas[3].observed, None);
    }

    #[test]
    fn every_top_level_field_is_written() {
        let value: serde_json::Value = serde_json::from_str(&render(&sample_report())).unwrap();
        let keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "schema_version",
            "tool",
            "scenario",
            "target",
            "started_at",
            "finished_at",
            "verdict",
            "phases",
            "operations",
            "series",
            "slas",
            "checks",
            "degradation",
            "timing",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        assert_eq!(value["timing"]["fault_slip_us"][2], 2_500);
        assert_eq!(value["operations"][2]["outcomes"]["unclean_error"], 2);
    }

    #[test]
    fn the_example_in_docs_report_md_is_a_report() {
        let doc = include_str!("../../../docs/report.md");
        let start = doc.find("```json\n").expect("an example") + "```json\n".len();
        let end = start + doc[start..].find("\n```").expect("its end");
        let example: Report = serde_json::from_str(&doc[start..end]).unwrap();
        assert_eq!(example.schema_version, crate::report::SCHEMA_VERSION);
        assert_eq!(example.verdict.exit_code, 1);
    }
}
