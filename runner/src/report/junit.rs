//! `junit.xml`: the SLAs and checks as JUnit test cases, for CI test-report views.
//!
//! Three suites: `slas` (one case per SLA and phase, classname `sla.<phase>`), `checks` (one
//! per check, classname `check.<source>`) and `run` (one case, `run completed`, failed when the
//! run could not be done). A missed required SLA or failed required check is a `<failure>`; an
//! advisory one is `<skipped>` (reported, never failing the build).

use std::fmt::Write as _;

use super::Report;
use super::html::escape_xml;
use super::markdown::one_line;

/// Most evidence lines written per failed check (a [`super::CheckResult`] keeps ten).
const MAX_EVIDENCE: usize = 10;

/// How one test case ended.
enum Status {
    Passed,
    /// A required SLA or check that did not hold: message, body.
    Failed(String, String),
    /// An advisory one that did not hold: message.
    Skipped(String),
}

struct Case {
    classname: String,
    name: String,
    status: Status,
    /// Written as `<system-out>` when set.
    out: Option<String>,
}

struct Suite {
    name: &'static str,
    cases: Vec<Case>,
}

impl Suite {
    fn count(&self, which: fn(&Status) -> bool) -> usize {
        self.cases.iter().filter(|c| which(&c.status)).count()
    }

    fn failures(&self) -> usize {
        self.count(|s| matches!(s, Status::Failed(..)))
    }

    fn skipped(&self) -> usize {
        self.count(|s| matches!(s, Status::Skipped(_)))
    }
}

/// Renders the report as JUnit XML.
pub fn render(report: &Report) -> String {
    let suites = [sla_suite(report), check_suite(report), run_suite(report)];
    let tests: usize = suites.iter().map(|s| s.cases.len()).sum();
    let failures: usize = suites.iter().map(Suite::failures).sum();
    let skipped: usize = suites.iter().map(Suite::skipped).sum();

    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" \
         skipped=\"{skipped}\">",
        attr(&format!("chaos {}", report.scenario.name)),
    );
    for suite in &suites {
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" \
             timestamp=\"{}\">",
            suite.name,
            suite.cases.len(),
            suite.failures(),
            suite.skipped(),
            attr(&report.started_at),
        );
        for case in &suite.cases {
            let _ = write!(
                out,
                "    <testcase classname=\"{}\" name=\"{}\"",
                attr(&case.classname),
                attr(&case.name)
            );
            if matches!(case.status, Status::Passed) && case.out.is_none() {
                out.push_str("/>\n");
                continue;
            }
            out.push_str(">\n");
            match &case.status {
                Status::Passed => {}
                Status::Failed(message, body) => {
                    let _ = writeln!(
                        out,
                        "      <failure message=\"{}\">{}</failure>",
                        attr(message),
                        escape_xml(body)
                    );
                }
                Status::Skipped(message) => {
                    let _ = writeln!(out, "      <skipped message=\"{}\"/>", attr(message));
                }
            }
            if let Some(text) = &case.out {
                let _ = writeln!(out, "      <system-out>{}</system-out>", escape_xml(text));
            }
            out.push_str("    </testcase>\n");
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// An attribute value: one line (a newline in an attribute reads back as a space), escaped.
fn attr(value: &str) -> String {
    escape_xml(&one_line(value))
}

fn sla_suite(report: &Report) -> Suite {
    let cases = report
        .slas
        .iter()
        .map(|sla| {
            let status = if sla.passed {
                Status::Passed
            } else if sla.required {
                let observed = sla
                    .observed
                    .map_or_else(|| "none".to_owned(), |v| v.to_string());
                Status::Failed(
                    sla.detail.clone(),
                    format!(
                        "{}\nobserved: {observed}\nsamples: {}",
                        sla.detail, sla.samples
                    ),
                )
            } else {
                Status::Skipped(format!("advisory: {}", sla.detail))
            };
            Case {
                classname: format!("sla.{}", sla.phase),
                name: format!("{} {}", sla.operation, sla.threshold),
                status,
                out: None,
            }
        })
        .collect();
    Suite {
        name: "slas",
        cases,
    }
}

fn check_suite(report: &Report) -> Suite {
    let cases = report
        .checks
        .iter()
        .map(|check| {
            let status = if check.passed {
                Status::Passed
            } else if check.required {
                let mut body = check.detail.clone();
                for line in check.evidence.iter().take(MAX_EVIDENCE) {
                    let _ = write!(body, "\n  {line}");
                }
                if check.evidence.len() > MAX_EVIDENCE {
                    let more = check.evidence.len() - MAX_EVIDENCE;
                    let _ = write!(body, "\n  ({more} more)");
                }
                Status::Failed(check.detail.clone(), body)
            } else {
                Status::Skipped(format!("advisory: {}", check.detail))
            };
            Case {
                classname: format!("check.{}", check.source),
                name: format!("{} [{}]", check.name, check.when),
                status,
                out: None,
            }
        })
        .collect();
    Suite {
        name: "checks",
        cases,
    }
}

fn run_suite(report: &Report) -> Suite {
    let verdict = &report.verdict;
    let status = if verdict.exit_code == 2 {
        let error = verdict
            .error
            .clone()
            .unwrap_or_else(|| "the run could not be done".to_owned());
        Status::Failed(error.clone(), error)
    } else {
        Status::Passed
    };
    Suite {
        name: "run",
        cases: vec![Case {
            classname: "run".to_owned(),
            name: "run completed".to_owned(),
            status,
            out: Some(format!(
                "{} (exit {})\n{} {} -> {}",
                verdict.summary,
                verdict.exit_code,
                report.tool,
                report.started_at,
                report.finished_at
            )),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::json::sample_report;

    /// A small well-formedness check: a declaration first, every element closed in order, one
    /// root, quoted attributes, no raw `<` or `>` in text or values, only known entities, no
    /// forbidden characters.
    fn assert_well_formed(xml: &str) {
        let body = xml
            .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
            .expect("declaration");
        let mut stack: Vec<&str> = Vec::new();
        let mut roots = 0;
        let mut rest = body;
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open]);
            let close = rest[open..].find('>').expect("unclosed tag") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "< inside a tag: {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name), "mismatched </{name}>");
            } else {
                let self_closing = tag.ends_with('/');
                let tag = tag.trim_end_matches('/');
                let name = tag.split_whitespace().next().expect("element name");
                let attrs = &tag[name.len()..];
                // name="value" pairs, values without quotes or raw markup.
                let parts: Vec<&str> = attrs.split('"').collect();
                assert!(parts.len() % 2 == 1, "unbalanced quotes in {tag}");
                for (i, part) in parts.iter().enumerate() {
                    if i % 2 == 1 {
                        check_text(part);
                    } else if i + 1 < parts.len() {
                        assert!(part.trim().ends_with('='), "bad attribute in {tag}");
                    }
                }
                if stack.is_empty() {
                    roots += 1;
                }
                if !self_closing {
                    stack.push(name);
                }
            }
            rest = &rest[close + 1..];
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed {stack:?}");
        assert_eq!(roots, 1);
    }

    fn check_text(text: &str) {
        assert!(!text.contains('>'), "raw > in {text:?}");
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..i + text[i..].find(';').expect("entity end") + 1];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"].contains(&entity),
                "{entity}"
            );
        }
        assert!(
            text.chars()
                .all(|c| !c.is_control() || matches!(c, '\t' | '\n' | '\r')),
            "control character in {text:?}"
        );
    }

    #[test]
    fn counts_are_right_per_suite_and_in_total() {
        let xml = render(&sample_report());
        assert_well_formed(&xml);
        assert!(xml.contains(
            "<testsuites name=\"chaos smoke\" tests=\"8\" failures=\"2\" errors=\"0\" skipped=\"2\">"
        ));
        assert!(xml.contains(
            "<testsuite name=\"slas\" tests=\"4\" failures=\"1\" errors=\"0\" skipped=\"1\" "
        ));
        assert!(xml.contains(
            "<testsuite name=\"checks\" tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\" "
        ));
        assert!(xml.contains(
            "<testsuite name=\"run\" tests=\"1\" failures=\"0\" errors=\"0\" skipped=\"0\" "
        ));
        assert_eq!(xml.matches("<testcase ").count(), 8);
        assert_eq!(xml.matches("<failure ").count(), 2);
        assert_eq!(xml.matches("<skipped ").count(), 2);
    }

    #[test]
    fn cases_are_named_and_escaped() {
        let xml = render(&sample_report());
        assert!(xml.contains(
            "    <testcase classname=\"sla.baseline\" name=\"swaps.execute p(95)&lt;500ms\"/>\n"
        ));
        assert!(xml.contains(
            "    <testcase classname=\"sla.db-slow\" name=\"swaps.execute p(95)&lt;500ms\">\n      \
             <failure message=\"observed 812.5 vs p(95)&lt;500ms\">observed 812.5 vs \
             p(95)&lt;500ms\nobserved: 812.5\nsamples: 50</failure>\n    </testcase>\n"
        ));
        assert!(xml.contains(
            "<testcase classname=\"sla.db-slow\" name=\"* rate&lt;0.01\">\n      \
             <skipped message=\"advisory: observed 0.04 vs rate&lt;0.01\"/>"
        ));
        assert!(xml.contains(
            "<testcase classname=\"check.invariant\" name=\"no-double-booking [after db-slow at 10s]\">\n      \
             <failure message=\"2 rows: &lt;script&gt;alert(1)&lt;/script&gt; &amp; \
             &quot;owners&quot; | count\">2 rows: &lt;script&gt;alert(1)&lt;/script&gt; &amp; \
             &quot;owners&quot; | count\n  date=2025-01-06 | time_of_day=AM | owners=2\n  \
             date=2025-01-07 | time_of_day=&lt;PM&gt; | owners=3</failure>"
        ));
        assert!(xml.contains(
            "<testcase classname=\"check.celery\" name=\"celery-every-task-ran-once [end]\">\n      \
             <skipped message=\"advisory: 1 task ran twice\"/>"
        ));
        assert!(xml.contains("<testcase classname=\"check.invariant\" name=\"api-ready [end]\"/>"));
        assert!(
            xml.contains("<testcase classname=\"run\" name=\"run completed\">\n      <system-out>")
        );
    }

    #[test]
    fn a_run_that_could_not_be_done_fails_the_run_case() {
        let mut report = sample_report();
        report.verdict.exit_code = 2;
        report.verdict.error = Some("proxy \"main\" <down> & out\u{0}".to_owned());
        report.slas.clear();
        report.checks.clear();
        let xml = render(&report);
        assert_well_formed(&xml);
        assert!(xml.contains("tests=\"1\" failures=\"1\" errors=\"0\" skipped=\"0\">"));
        assert!(xml.contains(
            "<failure message=\"proxy &quot;main&quot; &lt;down&gt; &amp; out\">\
             proxy &quot;main&quot; &lt;down&gt; &amp; out</failure>"
        ));
        assert!(xml.contains("<testsuite name=\"slas\" tests=\"0\" failures=\"0\""));
    }

    #[test]
    fn forbidden_characters_and_newlines_never_reach_the_xml() {
        let mut report = sample_report();
        report.checks[0].detail = "line one\nline\u{1b}[31m two\u{fffe}".to_owned();
        let xml = render(&report);
        assert_well_formed(&xml);
        assert!(xml.contains("<failure message=\"line one line [31m two\">line one\nline[31m two"));
    }
}
