//! SIGTERM (what `docker stop` and CI timeouts send) takes the Ctrl-C way out: the run stops,
//! the proxy's run is aborted, the reports say why, and the exit code is 2.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigterm_mid_drill_aborts_and_still_writes_the_reports() {
    let out = tempfile::tempdir().unwrap();
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios/judge.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(["drill", scenario, "--out"])
        .arg(out.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Off a terminal, the live view prints a line every 10 s: the run is under way.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let started = Instant::now();
    loop {
        let line = lines
            .next()
            .expect("chaos printed its live view before exiting")
            .unwrap();
        if line.starts_with("[judge]") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no live view");
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a child has a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(2), "{rest:#?}");
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:#?}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["verdict"]["exit_code"], 2);
    let error = report["verdict"]["error"].as_str().unwrap();
    assert!(error.contains("interrupted"), "{error}");
    // What was measured before the signal is in the report.
    assert!(
        report["operations"]
            .as_array()
            .is_some_and(|ops| !ops.is_empty())
    );
}
