//! `report.md`: the report as GitHub-flavoured Markdown, sized for a CI job summary
//! (`$GITHUB_STEP_SUMMARY` takes up to 1 MiB).
//!
//! The verdict comes first (title, summary, failures, phases), then one table per part of the
//! report. Tables and lists are capped (the failed rows are kept first) and say so when they
//! are; `report.json` always has everything.
//!
//! The tables themselves are built here as plain text ([`sections`]) and shared with the HTML
//! page, which renders the same content.

use std::fmt::Write as _;

use chaos_scenarios::threshold::{Stat, Threshold};

use super::{CheckResult, FaultSummary, OperationStats, Report, SlaResult};
use crate::outcome::shorten;

/// Longest text kept in one cell or list line, in characters.
pub(crate) const MAX_TEXT: usize = 300;
/// Most failure lines listed.
pub(crate) const MAX_FAILURES: usize = 50;
/// Most rows in one table.
pub(crate) const MAX_ROWS: usize = 200;
/// Most evidence lines shown per failed check.
pub(crate) const MAX_EVIDENCE: usize = 5;
/// Most operation names listed per blast-radius cell (kept, and missed).
pub(crate) const MAX_NAMES: usize = 20;
/// Most phases on the phases line.
pub(crate) const MAX_PHASES: usize = 100;
/// The whole file's budget, bytes (GitHub's step summary limit is 1 MiB).
const MAX_BYTES: usize = 1_000_000;

/// Renders the report as Markdown.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let head = headline(report);
    let _ = writeln!(out, "# {} {}\n", head.mark, md_text(&head.title));
    let _ = writeln!(out, "{}\n", md_item(&report.verdict.summary));
    let _ = writeln!(out, "{}\n", md_text(&meta_line(report)));

    let failures = failure_lines(report);
    if !failures.lines.is_empty() {
        out.push_str("## Failures\n\n");
        for line in &failures.lines {
            let _ = writeln!(out, "- {}", md_item(line));
        }
        if let Some(note) = &failures.omitted {
            let _ = writeln!(out, "- _{}_", md_text(note));
        }
        out.push('\n');
    }

    let _ = writeln!(out, "**Phases:** {}\n", md_text(&phases_line(report)));

    for section in sections(report) {
        let _ = writeln!(out, "## {}\n", section.title);
        if section.rows.is_empty() {
            let _ = writeln!(out, "{}\n", md_text(section.empty));
            continue;
        }
        write_table(&mut out, &section);
        if let Some(note) = &section.omitted {
            let _ = writeln!(out, "_{}_\n", md_text(note));
        }
        if !section.evidence.is_empty() {
            out.push_str("**Evidence**\n\n");
            for evidence in &section.evidence {
                let _ = writeln!(out, "- {}", md_item(&evidence.heading));
                for line in &evidence.lines {
                    let _ = writeln!(out, "  - {}", md_item(line));
                }
                if evidence.more > 0 {
                    let _ = writeln!(out, "  - _{} more in report.json_", evidence.more);
                }
            }
            out.push('\n');
        }
    }
    cap_bytes(out, MAX_BYTES)
}

fn write_table(out: &mut String, section: &Section) {
    out.push('|');
    for (name, _) in &section.columns {
        let _ = write!(out, " {} |", md_text(name));
    }
    out.push_str("\n|");
    for (_, align) in &section.columns {
        out.push_str(match align {
            Align::Left => " --- |",
            Align::Right => " ---: |",
            Align::Center => " :---: |",
        });
    }
    out.push('\n');
    for row in &section.rows {
        out.push('|');
        for cell in row {
            let text = match cell {
                Cell::Text(text) => md_text(text),
                Cell::Code(text) => md_code(text),
            };
            let _ = write!(out, " {text} |");
        }
        out.push('\n');
    }
    out.push('\n');
}

/// Cuts `out` at a line boundary below `max` bytes, saying so, if it is longer.
fn cap_bytes(mut out: String, max: usize) -> String {
    if out.len() <= max {
        return out;
    }
    let note = "\n\n_The rest is cut: this summary is limited to 1 MB. report.json has it all._\n";
    let mut at = max.saturating_sub(note.len());
    while !out.is_char_boundary(at) {
        at -= 1;
    }
    let at = out[..at].rfind('\n').unwrap_or(at);
    out.truncate(at);
    out.push_str(note);
    out
}

/// Text for Markdown: on one line, shortened, with every character Markdown (or a table's
/// `|`) would read escaped by a backslash.
pub(crate) fn md_text(text: &str) -> String {
    escape_md(&one_line(text), None)
}

/// [`md_text`] for the start of a list item, where `- `, `+ ` or `1. ` would nest a list.
fn md_item(text: &str) -> String {
    let text = one_line(text);
    let digits = text.chars().take_while(char::is_ascii_digit).count();
    let at = if text.starts_with(['-', '+']) {
        0
    } else {
        digits
    };
    // A marker is followed by a space or ends the line.
    let follows = text[at..].chars().nth(1).is_none_or(|c| c == ' ');
    let marker = match text[at..].chars().next() {
        Some('-' | '+') if at == 0 && follows => Some(0),
        Some('.' | ')') if at > 0 && follows => Some(at),
        _ => None,
    };
    escape_md(&text, marker)
}

/// Backslash-escapes Markdown's punctuation, and the character at `marker` (a char index).
fn escape_md(text: &str, marker: Option<usize>) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        if Some(i) == marker
            || matches!(
                c,
                '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '&' | '|' | '~' | '#'
            )
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An identifier as a code span, for a table cell (`|` still escaped, as GitHub wants inside
/// tables); plain escaped text when it holds a backtick.
fn md_code(text: &str) -> String {
    let text = one_line(text);
    if text.is_empty() || text.contains('`') {
        return md_text(&text);
    }
    format!("`{}`", text.replace('|', "\\|"))
}

/// `text` on one line (control characters become spaces), at most [`MAX_TEXT`] characters.
pub(crate) fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    shorten(flat.trim(), MAX_TEXT)
}

/// Milliseconds with one decimal; `-` when not a number.
pub(crate) fn ms(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.1}")
    } else {
        "-".to_owned()
    }
}

/// A fraction as a percentage with two decimals.
pub(crate) fn pct(fraction: f64) -> String {
    if fraction.is_finite() {
        format!("{:.2}%", fraction * 100.0)
    } else {
        "-".to_owned()
    }
}

/// Milliseconds from the run's start as seconds (`12`, `12.5`).
pub(crate) fn secs(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("{}", ms / 1000)
    } else {
        format!("{:.1}", ms as f64 / 1000.0)
    }
}

/// An SLA's observed value in its threshold's unit: ms, a percentage or a count.
pub(crate) fn observed(sla: &SlaResult) -> String {
    let Some(value) = sla.observed else {
        return "-".to_owned();
    };
    match sla.threshold.parse::<Threshold>().map(|t| t.stat) {
        Ok(Stat::Rate) => pct(value),
        Ok(Stat::Count) if value.is_finite() => format!("{value:.0}"),
        Ok(_) => format!("{} ms", ms(value)),
        Err(_) => format!("{value}"),
    }
}

/// The title's parts.
pub(crate) struct Headline {
    /// ✅ or ❌.
    pub mark: &'static str,
    /// `smoke: PASS (exit 0)`.
    pub title: String,
}

/// The title: PASS or FAIL, and the exit code.
pub(crate) fn headline(report: &Report) -> Headline {
    let verdict = &report.verdict;
    let (mark, word) = if verdict.passed && verdict.exit_code == 0 {
        ("✅", "PASS")
    } else {
        ("❌", "FAIL")
    };
    let why = match verdict.exit_code {
        0 => "",
        1 => ", a required check failed",
        2 => ", the run could not be done",
        _ => "",
    };
    Headline {
        mark,
        title: format!(
            "chaos {}: {word} (exit {}{why})",
            report.scenario.name, verdict.exit_code
        ),
    }
}

/// Scenario, target, times, seed and tool, on one line.
pub(crate) fn meta_line(report: &Report) -> String {
    let scenario = &report.scenario;
    let mut line = format!("Scenario {} ({})", scenario.name, scenario.source);
    if let Some(description) = &scenario.description {
        let _ = write!(line, ": {description}");
    }
    let _ = write!(
        line,
        " · target {} ({}) · {} → {} · planned {} s",
        report.target.kind,
        report.target.profile,
        report.started_at,
        report.finished_at,
        secs(scenario.duration_ms)
    );
    if let Some(seed) = scenario.seed {
        let _ = write!(line, " · seed {seed}");
    }
    let _ = write!(line, " · {}", report.tool);
    line
}

/// The phases, in order: `baseline 0–10 s · db-slow 10–15 s`.
pub(crate) fn phases_line(report: &Report) -> String {
    if report.phases.is_empty() {
        return "none".to_owned();
    }
    let mut parts: Vec<String> = report
        .phases
        .iter()
        .take(MAX_PHASES)
        .map(|p| format!("{} {}–{} s", p.name, secs(p.from_ms), secs(p.to_ms)))
        .collect();
    if report.phases.len() > MAX_PHASES {
        parts.push(format!("and {} more", report.phases.len() - MAX_PHASES));
    }
    parts.join(" · ")
}

/// The failure lines (the run's error first), capped.
pub(crate) struct Failures {
    /// The lines shown.
    pub lines: Vec<String>,
    /// Said when some were left out.
    pub omitted: Option<String>,
}

/// The verdict's failures, the run's error (exit code 2) first.
pub(crate) fn failure_lines(report: &Report) -> Failures {
    let verdict = &report.verdict;
    let mut all: Vec<String> = Vec::new();
    if let Some(error) = &verdict.error {
        all.push(format!("The run could not be done: {error}"));
    } else if verdict.exit_code == 2 {
        all.push("The run could not be done.".to_owned());
    }
    all.extend(verdict.failures.iter().cloned());
    let omitted = (all.len() > MAX_FAILURES).then(|| {
        format!(
            "{} more failures not shown; report.json has them all",
            all.len() - MAX_FAILURES
        )
    });
    all.truncate(MAX_FAILURES);
    Failures {
        lines: all,
        omitted,
    }
}

/// A column's alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
    /// Marks.
    Center,
}

/// One table cell, as plain text (each renderer escapes it).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    /// Prose.
    Text(String),
    /// An identifier: an operation, a phase, a threshold, a check's name.
    Code(String),
}

/// The evidence of one failed check.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Evidence {
    /// `name [when]: detail`.
    pub heading: String,
    /// At most [`MAX_EVIDENCE`] lines.
    pub lines: Vec<String>,
    /// Lines left out.
    pub more: usize,
}

/// One part of the report as a table.
#[derive(Debug, Clone)]
pub(crate) struct Section {
    /// Its heading.
    pub title: &'static str,
    /// Column names and alignments.
    pub columns: Vec<(&'static str, Align)>,
    /// The rows shown.
    pub rows: Vec<Vec<Cell>>,
    /// Said under the table when rows were left out.
    pub omitted: Option<String>,
    /// Said instead of the table when it has no rows.
    pub empty: &'static str,
    /// Evidence of failed checks, listed after the table.
    pub evidence: Vec<Evidence>,
}

/// The report's tables: SLAs, checks, graceful degradation, operations, timing.
pub(crate) fn sections(report: &Report) -> Vec<Section> {
    vec![
        sla_section(&report.slas),
        check_section(&report.checks),
        degradation_section(&report.degradation),
        operation_section(&report.operations),
        timing_section(report),
    ]
}

/// The indices of the rows to show, in their order: all of them when they fit, else the
/// `failed` ones first, then the others, up to [`MAX_ROWS`].
fn pick<T>(items: &[T], failed: impl Fn(&T) -> bool) -> (Vec<usize>, Option<String>) {
    if items.len() <= MAX_ROWS {
        return ((0..items.len()).collect(), None);
    }
    let mut chosen: Vec<usize> = (0..items.len()).filter(|&i| failed(&items[i])).collect();
    chosen.extend((0..items.len()).filter(|&i| !failed(&items[i])));
    chosen.truncate(MAX_ROWS);
    chosen.sort_unstable();
    let note = format!(
        "Showing {MAX_ROWS} of {} rows (failures first); report.json has them all.",
        items.len()
    );
    (chosen, Some(note))
}

/// ✅ passed, ❌ failed and required, ⚠️ failed but advisory.
pub(crate) fn mark(passed: bool, required: bool) -> &'static str {
    match (passed, required) {
        (true, _) => "✅",
        (false, true) => "❌",
        (false, false) => "⚠️",
    }
}

fn yes_no(value: bool) -> &'static str {
    if value { "✅" } else { "❌" }
}

fn text(value: impl Into<String>) -> Cell {
    Cell::Text(value.into())
}

fn code(value: impl Into<String>) -> Cell {
    Cell::Code(value.into())
}

fn sla_section(slas: &[SlaResult]) -> Section {
    let (shown, omitted) = pick(slas, |s| !s.passed);
    let rows = shown
        .into_iter()
        .map(|i| {
            let sla = &slas[i];
            vec![
                code(&sla.operation),
                code(&sla.phase),
                code(&sla.threshold),
                text(observed(sla)),
                text(sla.samples.to_string()),
                text(if sla.required { "yes" } else { "advisory" }),
                text(mark(sla.passed, sla.required)),
                text(&sla.detail),
            ]
        })
        .collect();
    Section {
        title: "SLAs",
        columns: vec![
            ("Operation", Align::Left),
            ("Phase", Align::Left),
            ("Threshold", Align::Left),
            ("Observed", Align::Right),
            ("Samples", Align::Right),
            ("Required", Align::Left),
            ("Result", Align::Center),
            ("Detail", Align::Left),
        ],
        rows,
        omitted,
        empty: "No SLAs.",
        evidence: Vec::new(),
    }
}

fn check_section(checks: &[CheckResult]) -> Section {
    let (shown, omitted) = pick(checks, |c| !c.passed);
    let mut rows = Vec::new();
    let mut evidence = Vec::new();
    for i in shown {
        let check = &checks[i];
        rows.push(vec![
            code(&check.name),
            code(&check.source),
            code(&check.when),
            text(if check.passed {
                "✅ held"
            } else if check.required {
                "❌ failed"
            } else {
                "⚠️ failed (advisory)"
            }),
            text(&check.detail),
        ]);
        if !check.passed && !check.evidence.is_empty() {
            evidence.push(Evidence {
                heading: format!("{} [{}]: {}", check.name, check.when, check.detail),
                lines: check.evidence.iter().take(MAX_EVIDENCE).cloned().collect(),
                more: check.evidence.len().saturating_sub(MAX_EVIDENCE),
            });
        }
    }
    Section {
        title: "Checks",
        columns: vec![
            ("Check", Align::Left),
            ("Source", Align::Left),
            ("When", Align::Left),
            ("Result", Align::Left),
            ("Detail", Align::Left),
        ],
        rows,
        omitted,
        empty: "No checks.",
        evidence,
    }
}

/// `name, name, ... (+N more)`.
fn names(items: &[&str]) -> String {
    let mut text = items
        .iter()
        .take(MAX_NAMES)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > MAX_NAMES {
        let _ = write!(text, " (+{} more)", items.len() - MAX_NAMES);
    }
    text
}

fn blast_radius(fault: &FaultSummary) -> String {
    if fault.blast_radius.is_empty() {
        return "- (no unrelated operation)".to_owned();
    }
    let kept: Vec<&str> = fault
        .blast_radius
        .iter()
        .filter(|b| b.kept)
        .map(|b| b.operation.as_str())
        .collect();
    let missed: Vec<String> = fault
        .blast_radius
        .iter()
        .filter(|b| !b.kept)
        .map(|b| {
            if b.detail.is_empty() {
                b.operation.clone()
            } else {
                format!("{} ({})", b.operation, b.detail)
            }
        })
        .collect();
    let mut parts = Vec::new();
    if !kept.is_empty() {
        parts.push(format!("✅ kept {}: {}", kept.len(), names(&kept)));
    }
    if !missed.is_empty() {
        let missed: Vec<&str> = missed.iter().map(String::as_str).collect();
        parts.push(format!("❌ missed {}: {}", missed.len(), names(&missed)));
    }
    parts.join("; ")
}

fn degradation_section(faults: &[FaultSummary]) -> Section {
    let (shown, omitted) = pick(faults, |f| {
        f.sla_kept == Some(false)
            || !f.errors_clean
            || !f.invariants_held
            || f.recovery_s.is_none()
            || f.blast_radius.iter().any(|b| !b.kept)
    });
    let rows = shown
        .into_iter()
        .map(|i| {
            let fault = &faults[i];
            vec![
                text(format!("{} ({})", fault.fault, fault.fault_type)),
                code(&fault.proxy),
                text(format!(
                    "{} {}–{} s",
                    fault.phase,
                    secs(fault.from_ms),
                    secs(fault.to_ms)
                )),
                text(match fault.sla_kept {
                    Some(kept) => yes_no(kept),
                    None => "- (no required SLA)",
                }),
                text(format!(
                    "{} clean {}, unclean {}, fallback {}, unknown {}",
                    yes_no(fault.errors_clean),
                    fault.clean_errors,
                    fault.unclean_errors,
                    fault.fallbacks,
                    fault.unknown
                )),
                text(blast_radius(fault)),
                text(match fault.recovery_s {
                    Some(s) => format!("{s} s"),
                    None => "❌ not before the end".to_owned(),
                }),
                text(yes_no(fault.invariants_held)),
            ]
        })
        .collect();
    Section {
        title: "Graceful degradation",
        columns: vec![
            ("Fault", Align::Left),
            ("Proxy", Align::Left),
            ("Window", Align::Left),
            ("SLA kept", Align::Center),
            ("Errors clean", Align::Left),
            ("Blast radius", Align::Left),
            ("Recovery", Align::Right),
            ("Invariants held", Align::Center),
        ],
        rows,
        omitted,
        empty: "No fault windows.",
        evidence: Vec::new(),
    }
}

/// The non-`ok` outcomes with their counts: `clean_error 1, unclean_error 2`.
fn error_breakdown(stats: &OperationStats) -> String {
    let parts: Vec<String> = stats
        .outcomes
        .iter()
        .filter(|(class, n)| class.as_str() != "ok" && **n > 0)
        .map(|(class, n)| format!("{class} {n}"))
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

fn operation_section(operations: &[OperationStats]) -> Section {
    let whole: Vec<&OperationStats> = operations.iter().filter(|o| o.phase == "*").collect();
    let (shown, omitted) = pick(&whole, |o| o.error_rate > 0.0);
    let rows = shown
        .into_iter()
        .map(|i| {
            let stats = whole[i];
            let ok = if stats.count == 0 {
                "-".to_owned()
            } else {
                pct(1.0 - stats.error_rate)
            };
            vec![
                code(format!("{}.{}", stats.workload, stats.operation)),
                text(stats.count.to_string()),
                text(ok),
                text(ms(stats.latency_ms.p50)),
                text(ms(stats.latency_ms.p95)),
                text(ms(stats.latency_ms.p99)),
                text(error_breakdown(stats)),
            ]
        })
        .collect();
    Section {
        title: "Operations (whole run)",
        columns: vec![
            ("Operation", Align::Left),
            ("Count", Align::Right),
            ("OK", Align::Right),
            ("p50 ms", Align::Right),
            ("p95 ms", Align::Right),
            ("p99 ms", Align::Right),
            ("Errors", Align::Left),
        ],
        rows,
        omitted,
        empty: "No operations measured.",
        evidence: Vec::new(),
    }
}

/// Microseconds as milliseconds with one decimal.
fn us(value: u64) -> String {
    ms(value as f64 / 1000.0)
}

fn timing_section(report: &Report) -> Section {
    let timing = &report.timing;
    let [median, p99, worst] = timing.fault_slip_us;
    let mut rows = vec![vec![
        text("faults (proxy)"),
        text(us(median)),
        text(us(p99)),
        text(us(worst)),
        text("-"),
        text("-"),
    ]];
    let mut workloads: Vec<&String> = timing
        .load_slip_us
        .keys()
        .chain(timing.intended.keys())
        .collect();
    workloads.sort();
    workloads.dedup();
    let omitted = (workloads.len() >= MAX_ROWS).then(|| {
        format!(
            "Showing {} of {} workloads; report.json has them all.",
            MAX_ROWS - 1,
            workloads.len()
        )
    });
    for workload in workloads.into_iter().take(MAX_ROWS - 1) {
        let slip = timing.load_slip_us.get(workload);
        let slip_cell = |i: usize| text(slip.map_or_else(|| "-".to_owned(), |s| us(s[i])));
        let (intended, started) = match timing.intended.get(workload) {
            Some([intended, started]) => {
                let share = if *intended == 0 {
                    String::new()
                } else {
                    format!(" ({})", pct(*started as f64 / *intended as f64))
                };
                (intended.to_string(), format!("{started}{share}"))
            }
            None => ("-".to_owned(), "-".to_owned()),
        };
        rows.push(vec![
            code(format!("load: {workload}")),
            slip_cell(0),
            slip_cell(1),
            slip_cell(2),
            text(intended),
            text(started),
        ]);
    }
    Section {
        title: "Timing",
        columns: vec![
            ("Slip", Align::Left),
            ("Median ms", Align::Right),
            ("p99 ms", Align::Right),
            ("Worst ms", Align::Right),
            ("Intended", Align::Right),
            ("Started", Align::Right),
        ],
        rows,
        omitted,
        empty: "No timing.",
        evidence: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::json::sample_report;

    #[test]
    fn failures_come_first_then_phases_then_tables() {
        let md = render(&sample_report());
        assert!(md.starts_with("# ❌ chaos smoke: FAIL (exit 1, a required check failed)\n"));
        let failures = md.find("## Failures").unwrap();
        let phases = md.find("**Phases:**").unwrap();
        let slas = md.find("## SLAs").unwrap();
        let checks = md.find("## Checks").unwrap();
        let degradation = md.find("## Graceful degradation").unwrap();
        let operations = md.find("## Operations (whole run)").unwrap();
        let timing = md.find("## Timing").unwrap();
        assert!(failures < phases && phases < slas && slas < checks);
        assert!(checks < degradation && degradation < operations && operations < timing);
        assert!(md.contains("\n- SLA swaps.execute in db-slow: p(95) 812.5 ms vs p(95)\\<500ms\n"));
        assert!(md.contains("**Phases:** baseline 0–5 s · db-slow 5–10 s · recovery 10–20 s"));
    }

    #[test]
    fn pipes_are_escaped_in_cells_and_lists() {
        let md = render(&sample_report());
        assert!(md.contains("- check no-double-booking: 2 rows \\| owners \\> 1\n"));
        assert!(md.contains(
            "| `no-double-booking` | `invariant` | `after db-slow at 10s` | ❌ failed | 2 rows: \
             \\<script\\>alert(1)\\</script\\> \\& \"owners\" \\| count |"
        ));
        assert!(md.contains("  - date=2025-01-07 \\| time\\_of\\_day=\\<PM\\> \\| owners=3\n"));
        // Every table row has as many unescaped pipes as its header.
        for line in md.lines().filter(|l| l.starts_with('|')) {
            let pipes = line
                .match_indices('|')
                .filter(|(i, _)| *i == 0 || line.as_bytes()[i - 1] != b'\\');
            assert!(pipes.count() >= 2, "{line}");
        }
    }

    #[test]
    fn tables_format_numbers_and_marks() {
        let md = render(&sample_report());
        assert!(md.contains(
            "| `swaps.execute` | `db-slow` | `p(95)<500ms` | 812.5 ms | 50 | yes | ❌ |"
        ));
        assert!(md.contains("| `*` | `db-slow` | `rate<0.01` | 4.00% | 50 | advisory | ⚠️ |"));
        assert!(md.contains("| `mcp.*` | `recovery` | `count==0` | - | 0 | yes | ✅ |"));
        assert!(md.contains("| `swaps.execute` | 100 | 97.00% | 42.2 | 180.0 | 420.0 | clean\\_error 1, unclean\\_error 2 |"));
        assert!(md.contains("⚠️ failed (advisory)"));
        assert!(md.contains(
            "| db-slow (pg\\_delay) | `postgres` | db-slow 5–10 s | ❌ | ❌ clean 1, unclean 2, \
             fallback 0, unknown 0 | ✅ kept 1: mcp.list\\_tools; ❌ missed 1: \
             resilience.defense\\_level (p(95) 1200.0 ms vs p(95)\\<1s) | 3 s | ❌ |"
        ));
        assert!(md.contains("| faults (proxy) | 0.1 | 0.9 | 2.5 | - | - |"));
        assert!(md.contains("| `load: swaps` | 0.1 | 0.4 | 1.2 | 100 | 99 (99.00%) |"));
    }

    #[test]
    fn a_passed_run_has_no_failures_section() {
        let mut report = sample_report();
        report.verdict.passed = true;
        report.verdict.exit_code = 0;
        report.verdict.failures.clear();
        let md = render(&report);
        assert!(md.starts_with("# ✅ chaos smoke: PASS (exit 0)\n"));
        assert!(!md.contains("## Failures"));
    }

    #[test]
    fn a_run_that_could_not_be_done_says_why_first() {
        let mut report = sample_report();
        report.verdict.exit_code = 2;
        report.verdict.error = Some("proxy did not start".to_owned());
        let md = render(&report);
        assert!(md.starts_with("# ❌ chaos smoke: FAIL (exit 2, the run could not be done)\n"));
        assert!(md.contains("## Failures\n\n- The run could not be done: proxy did not start\n"));
    }

    #[test]
    fn large_runs_are_capped_well_under_a_megabyte() {
        let mut report = sample_report();
        let sla = report.slas[0].clone();
        let check = report.checks[0].clone();
        for i in 0..5_000 {
            let mut sla = sla.clone();
            sla.detail = format!("{i} {}", "|x".repeat(500));
            report.slas.push(sla);
            let mut check = check.clone();
            check.evidence = vec!["row | row".repeat(100); 10];
            report.checks.push(check);
            report
                .verdict
                .failures
                .push(format!("failure {i} {}", "y".repeat(1000)));
        }
        let md = render(&report);
        assert!(md.len() < MAX_BYTES, "{} bytes", md.len());
        assert!(
            md.contains("Showing 200 of 5004 rows (failures first); report.json has them all.")
        );
        assert!(md.contains("4952 more failures not shown"));
        assert!(md.contains("  - _5 more in report.json_"));
        // The failed SLA (row 1) is kept although it is not among the first 200 passed rows.
        assert!(md.contains("| 812.5 ms |"));
    }

    #[test]
    fn the_byte_cap_cuts_at_a_line_and_says_so() {
        let text = format!("{}\n{}\n", "a".repeat(60), "é".repeat(100));
        let cut = cap_bytes(text, 150);
        assert!(cut.len() <= 150);
        assert!(cut.starts_with(&"a".repeat(60)));
        assert!(cut.ends_with("report.json has it all._\n"));
    }

    #[test]
    fn list_items_cannot_nest_lists() {
        assert_eq!(md_item("- a"), "\\- a");
        assert_eq!(md_item("12. a"), "12\\. a");
        assert_eq!(md_item("3) a"), "3\\) a");
        assert_eq!(md_item("12.5 ms"), "12.5 ms");
        assert_eq!(md_item("-1 s"), "-1 s");
        assert_eq!(md_item("+"), "\\+");
        assert_eq!(md_item("12 rows"), "12 rows");
        assert_eq!(md_text("12.5"), "12.5");
        assert_eq!(md_text("a\nb\t| *c*"), "a b \\| \\*c\\*");
    }
}
