//! The verdict: every SLA judged per phase, a graceful-degradation summary per fault, and the
//! exit code.

use std::collections::BTreeMap;

use chaos_scenarios::{OperationRef, Scenario, Sla, Stat, Threshold, Timeline};

use crate::measure::{Recorder, Stats};
use crate::report::{BlastEntry, CheckResult, FaultSummary, PhaseInfo, Series, SlaResult, Verdict};
use crate::workloads;

/// Whether `operation` selects (`workload`, `op`).
pub fn selects(operation: &OperationRef, workload: &str, op: &str) -> bool {
    match operation {
        OperationRef::All => true,
        OperationRef::Workload(name) => name == workload,
        OperationRef::Operation {
            workload: name,
            operation,
        } => name == workload && operation == op,
    }
}

/// The value of `stat` in `stats` (milliseconds, a fraction or a count); `None` without samples.
pub fn observe(stat: Stat, stats: &Stats) -> Option<f64> {
    if stats.count() == 0 {
        return None;
    }
    Some(match stat {
        Stat::Percentile(p) => stats.quantile_ms(p / 100.0),
        Stat::Avg => stats.latency().mean,
        Stat::Min => stats.latency().min,
        Stat::Max => stats.latency().max,
        Stat::Med => stats.quantile_ms(0.5),
        Stat::Rate => stats.error_rate(),
        Stat::Count => stats.failed() as f64,
    })
}

/// `12.3ms`, `4.20%` or `7`: an observed value as its threshold reads.
pub fn show(stat: Stat, value: f64) -> String {
    match stat {
        Stat::Rate => format!("{:.2}%", value * 100.0),
        Stat::Count => format!("{value}"),
        _ => format!("{value:.1}ms"),
    }
}

/// Judges one threshold on `stats`.
fn judge(threshold: &Threshold, stats: &Stats) -> (Option<f64>, bool, String) {
    match observe(threshold.stat, stats) {
        None => (None, true, "not judged: no operation measured".to_owned()),
        Some(value) => {
            let passed = threshold.evaluate(value);
            let detail = format!(
                "{} {} {threshold} ({} operations)",
                show(threshold.stat, value),
                if passed { "meets" } else { "misses" },
                stats.count()
            );
            (Some(value), passed, detail)
        }
    }
}

/// Every SLA of the scenario, judged.
pub fn slas(scenario: &Scenario, recorder: &Recorder) -> Vec<SlaResult> {
    scenario
        .sla
        .iter()
        .map(|sla| {
            let stats = recorder.merged(sla.phase.as_deref(), |w, o| selects(&sla.operation, w, o));
            let (observed, passed, detail) = judge(&sla.threshold, &stats);
            SlaResult {
                operation: sla.operation.to_string(),
                phase: sla.phase.clone().unwrap_or_else(|| "*".to_owned()),
                threshold: sla.threshold.to_string(),
                required: sla.required,
                observed,
                samples: stats.count(),
                passed,
                detail,
            }
        })
        .collect()
}

/// The SLAs that apply to (`workload`, `op`) in the baseline: the phase-less ones and those of
/// phase `baseline`.
fn baseline_slas<'a>(scenario: &'a Scenario, workload: &str, op: &str) -> Vec<&'a Sla> {
    scenario
        .sla
        .iter()
        .filter(|sla| matches!(sla.phase.as_deref(), None | Some("baseline")))
        .filter(|sla| selects(&sla.operation, workload, op))
        .collect()
}

/// A fault's windows: (from, to) in milliseconds, from its apply and remove events.
fn windows(timeline: &Timeline, fault: &str) -> Vec<(u64, u64)> {
    let mut open: BTreeMap<u32, u64> = BTreeMap::new();
    let mut windows = Vec::new();
    for event in timeline.events.iter().filter(|e| e.fault == fault) {
        let at = event.at.as_millis() as u64;
        match event.action {
            chaos_scenarios::Action::Apply { .. } => {
                open.insert(event.occurrence, at);
            }
            chaos_scenarios::Action::Remove => {
                if let Some(from) = open.remove(&event.occurrence) {
                    windows.push((from, at));
                }
            }
            chaos_scenarios::Action::Update { .. } => {}
        }
    }
    let end = timeline.duration.as_millis() as u64;
    windows.extend(open.into_values().map(|from| (from, end)));
    windows
}

/// One graceful-degradation summary per fault.
pub fn degradation(
    scenario: &Scenario,
    timeline: &Timeline,
    recorder: &Recorder,
    series: &[Series],
    phases: &[PhaseInfo],
    slas: &[SlaResult],
    checks: &[CheckResult],
) -> Vec<FaultSummary> {
    let kinds: BTreeMap<&str, &str> = scenario
        .workloads
        .iter()
        .map(|w| (w.name.as_str(), w.kind.as_str()))
        .collect();
    let mut summaries = Vec::new();
    for fault in &scenario.faults {
        let fault_windows = windows(timeline, &fault.name);
        let (Some(from), Some(to)) = (
            fault_windows.iter().map(|w| w.0).min(),
            fault_windows.iter().map(|w| w.1).max(),
        ) else {
            continue;
        };
        // The phase that is this fault's window: named after it (alone or overlapping others).
        let phase = phases
            .iter()
            .map(|p| p.name.as_str())
            .find(|name| name.split('+').any(|part| part == fault.name))
            .unwrap_or(fault.name.as_str())
            .to_owned();
        let in_phase = recorder.merged(Some(&phase), |_, _| true);
        let required: Vec<&SlaResult> = slas
            .iter()
            .filter(|s| s.phase == phase && s.required)
            .collect();
        let sla_kept = (!required.is_empty()).then(|| required.iter().all(|s| s.passed));
        let [_, clean, unclean, fallbacks, unknown] = in_phase.outcomes;
        let blast_radius = recorder
            .operations()
            .into_iter()
            .filter(|(workload, op)| {
                kinds
                    .get(workload.as_str())
                    .and_then(|kind| workloads::kind(kind))
                    .is_some_and(|kind| !kind.touches(op).contains(&fault.proxy.as_str()))
            })
            .filter_map(|(workload, op)| {
                let slas = baseline_slas(scenario, &workload, &op);
                if slas.is_empty() {
                    return None;
                }
                let stats = recorder.merged(Some(&phase), |w, o| w == workload && o == op);
                let missed: Vec<String> = slas
                    .iter()
                    .filter_map(|sla| {
                        let (_, passed, detail) = judge(&sla.threshold, &stats);
                        (!passed).then_some(detail)
                    })
                    .collect();
                Some(BlastEntry {
                    operation: format!("{workload}.{op}"),
                    kept: missed.is_empty(),
                    detail: missed.join("; "),
                })
            })
            .collect();
        let after = format!("after {phase}");
        let invariants_held = checks
            .iter()
            .filter(|c| c.when.starts_with(&after) && c.required)
            .all(|c| c.passed);
        summaries.push(FaultSummary {
            fault: fault.name.clone(),
            fault_type: fault.fault_type.clone(),
            proxy: fault.proxy.clone(),
            phase,
            from_ms: from,
            to_ms: to,
            sla_kept,
            clean_errors: clean,
            unclean_errors: unclean,
            fallbacks,
            unknown,
            errors_clean: unclean + fallbacks + unknown == 0,
            blast_radius,
            recovery_s: recovery(scenario, series, to),
            invariants_held,
        });
    }
    summaries
}

/// Seconds after `to_ms` until every operation with a baseline latency SLA (`p(N)<x`) had a
/// second whose p95 was back under its strictest such threshold; `None` if one never did.
fn recovery(scenario: &Scenario, series: &[Series], to_ms: u64) -> Option<u64> {
    let end_second = to_ms.div_ceil(1000);
    let mut worst = 0;
    for line in series {
        let limit = baseline_slas(scenario, &line.workload, &line.operation)
            .iter()
            .filter(|sla| matches!(sla.threshold.stat, Stat::Percentile(_)))
            .map(|sla| sla.threshold.value)
            .reduce(f64::min);
        let Some(limit) = limit else { continue };
        let mut after = line
            .points
            .iter()
            .filter(|p| p.second >= end_second)
            .peekable();
        if after.peek().is_none() {
            continue;
        }
        let back = after.find(|p| p.p95_ms < limit && p.failed == 0)?;
        worst = worst.max(back.second - end_second);
    }
    Some(worst)
}

/// The verdict from the SLAs and checks; `error` makes it "could not be done" (exit code 2).
pub fn verdict(slas: &[SlaResult], checks: &[CheckResult], error: Option<String>) -> Verdict {
    let mut failures: Vec<String> = slas
        .iter()
        .filter(|s| s.required && !s.passed)
        .map(|s| {
            format!(
                "SLA {} {} in phase {}: {}",
                s.operation, s.threshold, s.phase, s.detail
            )
        })
        .collect();
    failures.extend(
        checks
            .iter()
            .filter(|c| c.required && !c.passed)
            .map(|c| format!("check {} ({}, {}): {}", c.name, c.source, c.when, c.detail)),
    );
    let advisory = slas.iter().filter(|s| !s.required && !s.passed).count()
        + checks.iter().filter(|c| !c.required && !c.passed).count();
    let judged = slas.len() + checks.len();
    let (passed, exit_code, summary) = match &error {
        Some(error) => (false, 2, format!("the run could not be done: {error}")),
        None if failures.is_empty() => (
            true,
            0,
            format!("passed: {judged} SLAs and checks held ({advisory} advisory misses)"),
        ),
        None => (
            false,
            1,
            format!(
                "failed: {} of {judged} required SLAs and checks missed ({advisory} advisory misses)",
                failures.len()
            ),
        ),
    };
    Verdict {
        passed,
        exit_code,
        summary,
        failures,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{Attempt, Outcome};
    use std::time::{Duration, Instant};

    #[test]
    fn operation_refs_select_what_they_say() {
        let all = OperationRef::All;
        let swaps: OperationRef = "swaps.*".parse().unwrap();
        let exec: OperationRef = "swaps.execute".parse().unwrap();
        assert!(selects(&all, "mcp", "list_tools"));
        assert!(selects(&swaps, "swaps", "history") && !selects(&swaps, "mcp", "x"));
        assert!(selects(&exec, "swaps", "execute") && !selects(&exec, "swaps", "history"));
    }

    #[test]
    fn thresholds_are_judged_and_empty_phases_are_not() {
        let recorder = Recorder::new(Instant::now() - Duration::from_secs(2));
        recorder.begin_phase("baseline", Duration::ZERO, Duration::from_secs(60));
        let ago = |ms: u64| Instant::now() - Duration::from_millis(ms);
        for ms in [10, 20, 30, 40, 900] {
            recorder.record("w", "op", ago(ms), &Attempt::ok());
        }
        recorder.record("w", "op", ago(5), &Attempt::new(Outcome::CleanError, "409"));
        let stats = recorder.merged(Some("baseline"), |_, _| true);
        let p95: Threshold = "p(95)<500ms".parse().unwrap();
        let (value, passed, detail) = judge(&p95, &stats);
        assert!(!passed && value.unwrap() > 800.0, "{detail}");
        let rate: Threshold = "rate<0.2".parse().unwrap();
        let (value, passed, _) = judge(&rate, &stats);
        assert!(passed && (value.unwrap() - 1.0 / 6.0).abs() < 1e-9);
        let (value, passed, detail) = judge(&rate, &Stats::default());
        assert_eq!((value, passed), (None, true));
        assert_eq!(detail, "not judged: no operation measured");
    }

    #[test]
    fn the_exit_code_follows_required_failures_only() {
        let sla = |required, passed| SlaResult {
            operation: "*".into(),
            phase: "baseline".into(),
            threshold: "rate<0.01".into(),
            required,
            observed: Some(0.5),
            samples: 10,
            passed,
            detail: "50.00% misses rate<0.01".into(),
        };
        assert_eq!(
            verdict(&[sla(true, true), sla(false, false)], &[], None).exit_code,
            0
        );
        let failed = verdict(&[sla(true, false)], &[], None);
        assert_eq!(failed.exit_code, 1);
        assert_eq!(failed.failures.len(), 1);
        let check = CheckResult::fail("no-double-booking", "invariant", "2 rows", vec![]);
        assert_eq!(
            verdict(&[], std::slice::from_ref(&check), None).exit_code,
            1
        );
        assert_eq!(verdict(&[], &[check.advisory()], None).exit_code, 0);
        assert_eq!(verdict(&[], &[], Some("proxy gone".into())).exit_code, 2);
    }
}
