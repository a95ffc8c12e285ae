//! The run's report: one [`Report`] value, written as `report.json` (the versioned schema of
//! `docs/report.md`), `report.md` (fits a CI job summary), `report.html` (one self-contained
//! page) and `junit.xml` (one test case per SLA and check).

pub mod html;
pub mod json;
pub mod junit;
pub mod markdown;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The version of `report.json`'s schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything a run found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// `chaos <version>`.
    pub tool: String,
    /// The scenario.
    pub scenario: ScenarioInfo,
    /// Where it ran (no secrets).
    pub target: TargetInfo,
    /// RFC 3339 wall-clock start.
    pub started_at: String,
    /// RFC 3339 wall-clock end.
    pub finished_at: String,
    /// The verdict.
    pub verdict: Verdict,
    /// The phases as the proxy ran them.
    pub phases: Vec<PhaseInfo>,
    /// One entry per (workload, operation, phase), plus phase `"*"` for the whole run.
    pub operations: Vec<OperationStats>,
    /// Per-second series per (workload, operation).
    pub series: Vec<Series>,
    /// Every SLA, per phase.
    pub slas: Vec<SlaResult>,
    /// Invariants and the workloads' own checks.
    pub checks: Vec<CheckResult>,
    /// One graceful-degradation summary per fault window.
    pub degradation: Vec<FaultSummary>,
    /// How well the load and the faults kept their schedule.
    pub timing: Timing,
}

/// The scenario that ran.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioInfo {
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: Option<String>,
    /// Where it came from (a path, or `library:<name>`).
    pub source: String,
    /// Planned length, milliseconds.
    pub duration_ms: u64,
    /// Its seed.
    pub seed: Option<u64>,
}

/// Where the run went.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetInfo {
    /// `embedded` or the target file's path.
    pub kind: String,
    /// `testbed` or `residency-scheduler`.
    pub profile: String,
    /// The API's base URL.
    pub api_url: String,
    /// The MCP endpoint.
    pub mcp_url: String,
}

/// The verdict and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    /// Every required SLA and check passed.
    pub passed: bool,
    /// 0 passed, 1 a required check failed, 2 the run could not be done.
    pub exit_code: i32,
    /// One line.
    pub summary: String,
    /// Each failed required SLA or check, one line each.
    pub failures: Vec<String>,
    /// Why the run could not be done (exit code 2), if so.
    pub error: Option<String>,
}

/// One phase window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseInfo {
    /// Its name.
    pub name: String,
    /// Start, milliseconds from the run's start.
    pub from_ms: u64,
    /// End (exclusive).
    pub to_ms: u64,
}

/// Latency statistics, milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Lowest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Highest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// One operation in one phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperationStats {
    /// The workload.
    pub workload: String,
    /// The operation.
    pub operation: String,
    /// The phase, or `"*"` for the whole measured run.
    pub phase: String,
    /// Operations measured.
    pub count: u64,
    /// Count per outcome (`ok`, `clean_error`, `unclean_error`, `fallback`, `unknown`).
    pub outcomes: BTreeMap<String, u64>,
    /// Failed (not `ok`) / count; 0 when count is 0.
    pub error_rate: f64,
    /// Latency of every measured operation, failed ones included.
    pub latency_ms: Latency,
    /// A few distinct reasons, per outcome, as seen.
    pub examples: Vec<String>,
}

/// A per-second series.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    /// The workload.
    pub workload: String,
    /// The operation.
    pub operation: String,
    /// One point per second that saw operations end.
    pub points: Vec<Point>,
}

/// One second of one operation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Point {
    /// Seconds from the run's start.
    pub second: u64,
    /// Operations that ended in this second.
    pub count: u64,
    /// Of which failed.
    pub failed: u64,
    /// Their 95th percentile latency, milliseconds.
    pub p95_ms: f64,
}

/// One SLA in one phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SlaResult {
    /// The operations it covers, as written (`swaps.execute`, `mcp.*`, `*`).
    pub operation: String,
    /// The phase (`"*"`: the whole run).
    pub phase: String,
    /// The threshold, as written.
    pub threshold: String,
    /// Whether a miss fails the run.
    pub required: bool,
    /// The observed value (milliseconds, a fraction or a count); `None` without samples.
    pub observed: Option<f64>,
    /// Operations it was computed from.
    pub samples: u64,
    /// Met (an SLA without samples is met, and says so in `detail`).
    pub passed: bool,
    /// Human-readable: observed vs threshold, or why there was nothing to judge.
    pub detail: String,
}

/// An invariant or a workload's own check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckResult {
    /// Its name (`no-double-booking`, `celery-every-task-ran-once`, ...).
    pub name: String,
    /// Where it comes from: `invariant` (the scenario) or the workload's name.
    pub source: String,
    /// When it ran: `after <phase> at <N>s` (N: when that phase window ended), or `end`.
    pub when: String,
    /// Whether a failure fails the run.
    pub required: bool,
    /// Whether it held.
    pub passed: bool,
    /// One line: what was found.
    pub detail: String,
    /// Up to ten offending rows or items, as text.
    pub evidence: Vec<String>,
}

impl CheckResult {
    /// A required check that held.
    pub fn pass(name: &str, source: &str, detail: impl Into<String>) -> CheckResult {
        CheckResult {
            name: name.to_owned(),
            source: source.to_owned(),
            when: "end".to_owned(),
            required: true,
            passed: true,
            detail: detail.into(),
            evidence: Vec::new(),
        }
    }

    /// A required check that failed, with its evidence (kept to ten items).
    pub fn fail(
        name: &str,
        source: &str,
        detail: impl Into<String>,
        mut evidence: Vec<String>,
    ) -> CheckResult {
        evidence.truncate(10);
        CheckResult {
            name: name.to_owned(),
            source: source.to_owned(),
            when: "end".to_owned(),
            required: true,
            passed: false,
            detail: detail.into(),
            evidence,
        }
    }

    /// The same check, advisory (reported, never fails the run).
    pub fn advisory(mut self) -> CheckResult {
        self.required = false;
        self
    }
}

/// Graceful degradation in one fault window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultSummary {
    /// The fault.
    pub fault: String,
    /// Its type.
    pub fault_type: String,
    /// The proxy it acted on.
    pub proxy: String,
    /// The phase that is its window.
    pub phase: String,
    /// Window start, milliseconds.
    pub from_ms: u64,
    /// Window end.
    pub to_ms: u64,
    /// Every required SLA of the phase met (`None`: the phase has none).
    pub sla_kept: Option<bool>,
    /// Errors in the window, by class.
    pub clean_errors: u64,
    /// Unclean errors (5xx without reason, resets, timeouts).
    pub unclean_errors: u64,
    /// Fallback answers seen.
    pub fallbacks: u64,
    /// Unknown outcomes.
    pub unknown: u64,
    /// No unclean error, fallback or unknown in the window.
    pub errors_clean: bool,
    /// Operations whose path does not cross the faulted proxy, and whether they kept the
    /// SLAs they have in the baseline.
    pub blast_radius: Vec<BlastEntry>,
    /// Seconds from the window's end until every operation with a latency SLA was back under
    /// it (per-second p95); `None` when that never happened before the run ended.
    pub recovery_s: Option<u64>,
    /// Every invariant checked after this phase held.
    pub invariants_held: bool,
}

/// One unrelated operation in a fault window.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlastEntry {
    /// `workload.operation`.
    pub operation: String,
    /// Kept its baseline SLAs in the window.
    pub kept: bool,
    /// What missed, if anything.
    pub detail: String,
}

/// Schedule keeping.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timing {
    /// The proxy's fault slip: median, p99 and worst, microseconds.
    pub fault_slip_us: [u64; 3],
    /// Open-model start lag (actual start vs intended), per workload: median, p99, worst, µs.
    pub load_slip_us: BTreeMap<String, [u64; 3]>,
    /// Operations intended vs started per workload (open model: by the arrival schedule).
    pub intended: BTreeMap<String, [u64; 2]>,
}

/// Writes the four reports into `dir` (created if needed); returns their paths.
pub fn write_all(report: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = [
        ("report.json", json::render(report)),
        ("report.md", markdown::render(report)),
        ("report.html", html::render(report)),
        ("junit.xml", junit::render(report)),
    ];
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
