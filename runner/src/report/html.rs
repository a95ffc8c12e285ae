//! `report.html`: one self-contained page (inline CSS and SVG, no script, nothing fetched) with
//! the content of `report.md` and a per-second chart of each operation's p95 and failures, the
//! phase windows shaded.
//!
//! Everything that comes from the report goes through [`escape_xml`]; a Content-Security-Policy
//! that allows nothing but inline style backs that up.

use std::fmt::Write as _;

use super::markdown::{self, Align, Cell, Section};
use super::{Point, Report, Series};
use crate::outcome::shorten;

/// Most operations charted.
const MAX_CHARTS: usize = 60;
/// Most points drawn per chart; longer runs are bucketed (worst p95, summed counts).
const MAX_POINTS: u64 = 600;

/// Chart geometry, SVG user units.
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 170.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 18.0;
const BOTTOM: f64 = 22.0;

const STYLE: &str = "
:root { color-scheme: light; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --line: #d0d7de; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: #1f2328;
  margin: 0 auto; padding: 1.5rem; max-width: 1200px; }
header { border-left: 6px solid var(--ok); padding: .2rem 1rem; margin-bottom: 1rem; }
header.fail { border-color: var(--bad); }
h1 { font-size: 1.5rem; margin: .3rem 0; }
h2 { font-size: 1.15rem; margin: 1.6rem 0 .5rem; border-bottom: 1px solid var(--line); }
.meta { color: #59636e; font-size: .9em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .92em; }
th, td { border: 1px solid var(--line); padding: .25rem .5rem; vertical-align: top; }
th { background: #f6f8fa; text-align: left; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
td.c, th.c { text-align: center; }
code { font: .92em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: #f6f8fa; padding: 0 .2em; border-radius: 3px; }
ul.failures li { color: var(--bad); }
.note { color: #59636e; font-style: italic; }
.charts { display: flex; flex-wrap: wrap; gap: .5rem 1.5rem; }
figure { margin: 0; }
figcaption { font-weight: 600; }
svg { display: block; max-width: 100%; height: auto; }
svg text { font: 10px system-ui, sans-serif; fill: #59636e; }
svg .phase { fill: #f6f8fa; }
svg .phase.alt { fill: #eaeef2; }
svg .phase.fault { fill: #ffebe9; }
svg .axis { stroke: #8c959f; stroke-width: 1; }
svg .grid { stroke: #d0d7de; stroke-dasharray: 3 3; }
svg .p95 { fill: none; stroke: #0969da; stroke-width: 1.6; stroke-linejoin: round;
  stroke-linecap: round; }
svg .failed { fill: var(--bad); opacity: .55; }
.legend { font-size: .85em; color: #59636e; }
.legend .p95 { color: #0969da; } .legend .failed { color: var(--bad); }
";

/// Renders the report as one HTML page.
pub fn render(report: &Report) -> String {
    let head = markdown::headline(report);
    let failed = !(report.verdict.passed && report.verdict.exit_code == 0);
    let mut out = String::new();
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" \
         content=\"default-src 'none'; style-src 'unsafe-inline'\">\n",
    );
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(out, "<title>{}</title>", text(&head.title));
    let _ = writeln!(out, "<style>{STYLE}</style>\n</head>\n<body>");

    let _ = writeln!(
        out,
        "<header class=\"{}\">\n<h1>{} {}</h1>\n<p class=\"summary\">{}</p>\n\
         <p class=\"meta\">{}</p>\n</header>",
        if failed { "fail" } else { "pass" },
        head.mark,
        text(&head.title),
        text(&report.verdict.summary),
        text(&markdown::meta_line(report)),
    );

    let failures = markdown::failure_lines(report);
    if !failures.lines.is_empty() {
        out.push_str("<section>\n<h2>Failures</h2>\n<ul class=\"failures\">\n");
        for line in &failures.lines {
            let _ = writeln!(out, "<li>{}</li>", text(line));
        }
        if let Some(note) = &failures.omitted {
            let _ = writeln!(out, "<li class=\"note\">{}</li>", text(note));
        }
        out.push_str("</ul>\n</section>\n");
    }

    let _ = writeln!(
        out,
        "<p><strong>Phases:</strong> {}</p>",
        text(&markdown::phases_line(report))
    );

    write_charts(&mut out, report);

    for section in markdown::sections(report) {
        write_section(&mut out, &section);
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// Escapes text for XML and HTML (text and attribute values alike): `&`, `<`, `>`, `"` and `'`
/// become references, and the characters XML 1.0 forbids (controls other than tab, newline
/// and carriage return; U+FFFE, U+FFFF) are dropped.
pub(crate) fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            '\u{0}'..='\u{1f}' | '\u{fffe}' | '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

/// Report text for the page: on one line, shortened, escaped.
fn text(value: &str) -> String {
    escape_xml(&markdown::one_line(value))
}

fn align_class(align: Align) -> &'static str {
    match align {
        Align::Left => "",
        Align::Right => " class=\"r\"",
        Align::Center => " class=\"c\"",
    }
}

fn write_section(out: &mut String, section: &Section) {
    let _ = writeln!(out, "<section>\n<h2>{}</h2>", text(section.title));
    if section.rows.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"note\">{}</p>\n</section>",
            text(section.empty)
        );
        return;
    }
    out.push_str("<div class=\"scroll\"><table>\n<thead><tr>");
    for (name, align) in &section.columns {
        let _ = write!(out, "<th{}>{}</th>", align_class(*align), text(name));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &section.rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let align = section.columns.get(i).map_or(Align::Left, |(_, a)| *a);
            let inner = match cell {
                Cell::Text(value) => text(value),
                Cell::Code(value) => format!("<code>{}</code>", text(value)),
            };
            let _ = write!(out, "<td{}>{inner}</td>", align_class(align));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table></div>\n");
    if let Some(note) = &section.omitted {
        let _ = writeln!(out, "<p class=\"note\">{}</p>", text(note));
    }
    if !section.evidence.is_empty() {
        out.push_str("<h3>Evidence</h3>\n<ul class=\"evidence\">\n");
        for evidence in &section.evidence {
            let _ = write!(out, "<li>{}<ul>", text(&evidence.heading));
            for line in &evidence.lines {
                let _ = write!(out, "<li><code>{}</code></li>", text(line));
            }
            if evidence.more > 0 {
                let _ = write!(
                    out,
                    "<li class=\"note\">{} more in report.json</li>",
                    evidence.more
                );
            }
            out.push_str("</ul></li>\n");
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</section>\n");
}

/// The run's length in whole seconds, as far as anything in the report reaches (at least 1).
fn run_seconds(report: &Report) -> u64 {
    let planned = report.scenario.duration_ms.div_ceil(1000);
    let phases = report
        .phases
        .iter()
        .map(|p| p.to_ms.div_ceil(1000))
        .max()
        .unwrap_or(0);
    let points = report
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.second + 1))
        .max()
        .unwrap_or(0);
    planned.max(phases).max(points).max(1)
}

/// The points of a series in order, merged into buckets of `width` seconds when there are too
/// many: a bucket keeps its worst p95 and sums its counts. `second` becomes the bucket index.
fn bucketed(points: &[Point], width: u64) -> Vec<Point> {
    let mut sorted: Vec<&Point> = points.iter().collect();
    sorted.sort_by_key(|p| p.second);
    let mut out: Vec<Point> = Vec::new();
    for point in sorted {
        let bucket = point.second / width;
        match out.last_mut() {
            Some(last) if last.second == bucket => {
                last.count += point.count;
                last.failed += point.failed;
                last.p95_ms = last.p95_ms.max(point.p95_ms);
            }
            _ => out.push(Point {
                second: bucket,
                ..point.clone()
            }),
        }
    }
    out
}

/// A round number at or above `value` (1, 2 or 5 times a power of ten).
fn nice_ceiling(value: f64) -> f64 {
    if !value.is_finite() || value <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * power)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * power)
}

fn write_charts(out: &mut String, report: &Report) {
    if report.series.is_empty() {
        return;
    }
    out.push_str("<section>\n<h2>Per second</h2>\n");
    out.push_str(
        "<p class=\"legend\"><span class=\"p95\">━ p95 latency (ms, left)</span> · \
         <span class=\"failed\">▮ failed share (right, 0–100%)</span> · shaded: phases, \
         red: fault windows; a break in the line is a second in which nothing ended.</p>\n",
    );
    out.push_str("<div class=\"charts\">\n");
    for series in report.series.iter().take(MAX_CHARTS) {
        write_chart(out, report, series);
    }
    out.push_str("</div>\n");
    if report.series.len() > MAX_CHARTS {
        let _ = writeln!(
            out,
            "<p class=\"note\">Showing {MAX_CHARTS} of {} operations; report.json has them all.</p>",
            report.series.len()
        );
    }
    out.push_str("</section>\n");
}

fn write_chart(out: &mut String, report: &Report, series: &Series) {
    let seconds = run_seconds(report);
    let width = seconds.div_ceil(MAX_POINTS).max(1);
    let buckets = seconds.div_ceil(width).max(1);
    let points = bucketed(&series.points, width);
    let top = nice_ceiling(
        points
            .iter()
            .map(|p| p.p95_ms)
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max),
    );
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of_ms = |ms: u64| LEFT + plot_w * (ms as f64 / (seconds * 1000) as f64).min(1.0);
    // A bucket's point sits in its middle.
    let x_of_bucket = |b: u64| LEFT + plot_w * ((b as f64 + 0.5) / buckets as f64).min(1.0);
    let y_of = |ms: f64| TOP + plot_h * (1.0 - (ms / top).clamp(0.0, 1.0));
    let name = format!("{}.{}", series.workload, series.operation);

    let _ = writeln!(
        out,
        "<figure>\n<figcaption><code>{}</code></figcaption>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\">\n<title>{} p95 and failures per second</title>",
        text(&name),
        text(&name),
    );

    let fault_phases: Vec<&str> = report
        .degradation
        .iter()
        .map(|f| f.phase.as_str())
        .collect();
    for (i, phase) in report.phases.iter().enumerate() {
        let x0 = x_of_ms(phase.from_ms);
        let x1 = x_of_ms(phase.to_ms.max(phase.from_ms));
        let class = if fault_phases.contains(&phase.name.as_str()) {
            "phase fault"
        } else if i % 2 == 1 {
            "phase alt"
        } else {
            "phase"
        };
        let _ = writeln!(
            out,
            "<rect class=\"{class}\" x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{plot_h}\">\
             <title>{} {}–{} s</title></rect>",
            x1 - x0,
            text(&phase.name),
            markdown::secs(phase.from_ms),
            markdown::secs(phase.to_ms),
        );
        if x1 - x0 >= 36.0 {
            let _ = writeln!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                x0 + 3.0,
                TOP - 5.0,
                text(&shorten(&phase.name, ((x1 - x0) / 6.0) as usize)),
            );
        }
    }

    // Axes, the middle grid line and their labels.
    let bottom = TOP + plot_h;
    let right = LEFT + plot_w;
    let _ = writeln!(
        out,
        "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{mid:.1}\" x2=\"{right}\" y2=\"{mid:.1}\"/>\n\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{bottom}\"/>\n\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\"/>\n\
         <text x=\"{lx}\" y=\"{ty:.1}\" text-anchor=\"end\">{top} ms</text>\n\
         <text x=\"{lx}\" y=\"{my:.1}\" text-anchor=\"end\">{half} ms</text>\n\
         <text x=\"{lx}\" y=\"{bottom}\" text-anchor=\"end\">0</text>\n\
         <text x=\"{rx}\" y=\"{ty:.1}\">100%</text>\n\
         <text x=\"{LEFT}\" y=\"{xy}\">0 s</text>\n\
         <text x=\"{right}\" y=\"{xy}\" text-anchor=\"end\">{seconds} s</text>",
        mid = TOP + plot_h / 2.0,
        lx = LEFT - 4.0,
        rx = right + 3.0,
        ty = TOP + 4.0,
        my = TOP + plot_h / 2.0 + 4.0,
        half = top / 2.0,
        xy = HEIGHT - 6.0,
    );

    // Failed share per bucket, as bars from the bottom (right axis, 0-100%).
    let bar_w = (plot_w / buckets as f64).max(1.0);
    for point in points.iter().filter(|p| p.failed > 0 && p.count > 0) {
        let share = (point.failed as f64 / point.count as f64).min(1.0);
        let h = plot_h * share;
        let _ = writeln!(
            out,
            "<rect class=\"failed\" x=\"{:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\">\
             <title>{} of {} failed</title></rect>",
            x_of_bucket(point.second) - bar_w / 2.0,
            bottom - h,
            point.failed,
            point.count,
        );
    }

    // The p95 line, broken where a bucket saw nothing end.
    let mut path = String::new();
    let mut previous: Option<u64> = None;
    for point in points.iter().filter(|p| p.p95_ms.is_finite()) {
        let command = if previous.is_some_and(|b| b + 1 == point.second) {
            'L'
        } else {
            'M'
        };
        let x = x_of_bucket(point.second);
        let y = y_of(point.p95_ms);
        let _ = write!(path, "{command}{x:.1} {y:.1} ");
        if command == 'M' {
            // A lone point still shows: a zero-length segment with a round cap is a dot.
            path.push_str("h0 ");
        }
        previous = Some(point.second);
    }
    if !path.is_empty() {
        let _ = writeln!(out, "<path class=\"p95\" d=\"{}\"/>", path.trim_end());
    }
    out.push_str("</svg>\n</figure>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::json::sample_report;

    #[test]
    fn escape_xml_escapes_markup_and_drops_what_xml_forbids() {
        assert_eq!(
            escape_xml("a<b>&\"c\"'d'\u{0}\u{1b}\u{fffe}\t\n"),
            "a&lt;b&gt;&amp;&quot;c&quot;&#39;d&#39;\t\n"
        );
        assert_eq!(escape_xml("déjà ✅"), "déjà ✅");
    }

    #[test]
    fn report_text_is_escaped_and_the_page_runs_no_script() {
        let html = render(&sample_report());
        assert!(!html.contains("<script"), "a script got through");
        assert!(html.contains(
            "<td>2 rows: &lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;owners&quot; | count</td>"
        ));
        assert!(
            html.contains(
                "<li><code>date=2025-01-07 | time_of_day=&lt;PM&gt; | owners=3</code></li>"
            )
        );
        assert!(html.contains("default-src 'none'"));
        // Nothing is fetched: no script, stylesheet, image or font from anywhere.
        for fetch in ["src=", "href=", "<link", "url(", "@import"] {
            assert!(!html.contains(fetch), "{fetch}");
        }
    }

    #[test]
    fn the_page_has_the_markdown_content_in_order() {
        let html = render(&sample_report());
        assert!(html.starts_with("<!DOCTYPE html>\n"));
        assert!(html.ends_with("</html>\n"));
        assert!(
            html.contains("<title>chaos smoke: FAIL (exit 1, a required check failed)</title>")
        );
        let order = [
            "<h2>Failures</h2>",
            "<strong>Phases:</strong>",
            "<h2>Per second</h2>",
            "<h2>SLAs</h2>",
            "<h2>Checks</h2>",
            "<h2>Graceful degradation</h2>",
            "<h2>Operations (whole run)</h2>",
            "<h2>Timing</h2>",
        ];
        let at: Vec<usize> = order.iter().map(|h| html.find(h).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
        assert!(html.contains("<td class=\"r\">812.5 ms</td>"));
        assert!(html.contains("<td class=\"c\">⚠️</td>"));
        // Every opened element of the structure is closed.
        for tag in [
            "section", "table", "tr", "ul", "li", "svg", "figure", "code",
        ] {
            let opened = html.matches(&format!("<{tag}>")).count()
                + html.matches(&format!("<{tag} ")).count();
            let closed = html.matches(&format!("</{tag}>")).count();
            assert_eq!(opened, closed, "<{tag}>");
        }
    }

    #[test]
    fn the_chart_shades_phases_and_draws_p95_and_failures() {
        let html = render(&sample_report());
        // Three phases over 20 s on a 544-unit-wide plot; db-slow is a fault window.
        assert!(html.contains("<rect class=\"phase\" x=\"56.0\" y=\"18\" width=\"136.0\""));
        assert!(html.contains("<rect class=\"phase fault\" x=\"192.0\" y=\"18\" width=\"136.0\""));
        assert!(html.contains("<title>1 of 5 failed</title>"));
        assert!(html.contains("<text x=\"52\" y=\"22.0\" text-anchor=\"end\">1000 ms</text>"));
        // One unbroken line of 20 points.
        let path = html.split("<path class=\"p95\" d=\"").nth(1).unwrap();
        let path = &path[..path.find('"').unwrap()];
        assert_eq!(path.matches('M').count(), 1);
        assert_eq!(path.matches('L').count(), 19);
    }

    #[test]
    fn long_series_are_bucketed_and_gaps_break_the_line() {
        let points: Vec<Point> = (0..3_000)
            .filter(|s| !(1_000..1_100).contains(s))
            .map(|second| Point {
                second,
                count: 2,
                failed: 1,
                p95_ms: second as f64,
            })
            .collect();
        let buckets = bucketed(&points, 5);
        assert_eq!(buckets.len(), 600 - 20);
        assert_eq!(buckets[0].count, 10);
        assert_eq!(buckets[0].failed, 5);
        assert_eq!(buckets[0].p95_ms, 4.0);

        let mut report = sample_report();
        report.scenario.duration_ms = 3_000_000;
        report.series[0].points = points;
        let html = render(&report);
        let path = html.split("<path class=\"p95\" d=\"").nth(1).unwrap();
        let path = &path[..path.find('"').unwrap()];
        assert_eq!(path.matches('M').count(), 2);
        assert_eq!(path.matches('L').count(), 600 - 20 - 2);
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(812.5), 1000.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(5.0), 5.0);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
    }
}
