//! `markdown` rendering of a [`super::Report`].

/// Renders the report.
pub fn render(report: &super::Report) -> String {
    let _ = report;
    String::new()
}
