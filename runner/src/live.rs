//! The live terminal view: the phase, the time left, and each workload's recent p95 and error
//! rate. On a terminal it redraws in place (indicatif); elsewhere (CI logs) it prints one line
//! every ten seconds.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::measure::{Recent, Recorder};

/// The seconds of history each line summarises.
const WINDOW_S: u64 = 5;

/// What the view shows besides the numbers: set by the run as phases begin.
#[derive(Default)]
pub struct Status {
    /// The current phase.
    pub phase: String,
}

/// One workload's line: `name  p95 12.3 ms  errors 0.00 %  (n ops/5 s)`.
pub fn line(recent: &Recent) -> String {
    let rate = if recent.count == 0 {
        0.0
    } else {
        recent.failed as f64 / recent.count as f64 * 100.0
    };
    format!(
        "{:<16} p95 {:>9.1} ms   errors {:>6.2} %   ({} ops/{WINDOW_S} s)",
        recent.workload, recent.p95_ms, rate, recent.count
    )
}

/// Shows the run until `stop`; `length` is the scenario's duration.
pub async fn show(
    recorder: Arc<Recorder>,
    status: Arc<Mutex<Status>>,
    scenario: String,
    length: Duration,
    stop: CancellationToken,
) {
    let terminal = std::io::stderr().is_terminal();
    let bars = MultiProgress::with_draw_target(if terminal {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let header = bars.add(ProgressBar::new(length.as_secs().max(1)));
    header.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    header.set_prefix(scenario.clone());
    let mut lines: Vec<ProgressBar> = Vec::new();
    let mut last_print = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let elapsed = recorder.origin().elapsed();
        let left = length.saturating_sub(elapsed);
        let phase = status.lock().map(|s| s.phase.clone()).unwrap_or_default();
        let recent = recorder.recent(WINDOW_S);
        header.set_position(elapsed.as_secs().min(length.as_secs()));
        header.set_message(format!("phase {phase}, {}s left", left.as_secs()));
        while lines.len() < recent.len() {
            let bar = bars.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            lines.push(bar);
        }
        for (bar, recent) in lines.iter().zip(&recent) {
            bar.set_message(line(recent));
        }
        if !terminal && last_print.elapsed() >= Duration::from_secs(10) {
            last_print = Instant::now();
            eprintln!(
                "[{scenario}] {:>4}s  phase {phase}, {}s left",
                elapsed.as_secs(),
                left.as_secs()
            );
            for recent in &recent {
                eprintln!("  {}", line(recent));
            }
        }
    }
    for bar in lines {
        bar.finish_and_clear();
    }
    header.finish_and_clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_shows_p95_and_error_rate() {
        let recent = Recent {
            workload: "swaps".into(),
            count: 200,
            failed: 3,
            p95_ms: 41.25,
        };
        assert_eq!(
            line(&recent),
            "swaps            p95      41.2 ms   errors   1.50 %   (200 ops/5 s)"
        );
    }
}
