//! The `chaos` binary's front door: bad input gets a clear error (what and where) and exit
//! code 2, before anything starts.

use std::process::{Command, Output};

fn chaos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(args)
        .output()
        .expect("chaos runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_shipped_scenario_validates() {
    let output = chaos(&["validate", "smoke", "drill-day", "soak", "swap-load"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("library:drill-day: ok (9m30s,"), "{stdout}");
    let list = chaos(&["list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert_eq!(listed.lines().count(), 13, "{listed}");
}

#[test]
fn a_bad_scenario_is_named_with_its_place_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[scenario]\nname = \"bad\"\nduration = \"10s\"\n\n[[workloads]]\nname = \"w\"\nkind = \"swap\"\nmix = { execute = 1, teleport = 2 }\nrate = \"1/s\"\n\n[[sla]]\noperation = \"w.execute\"\nthreshold = \"p(95)<fast\"\n",
    )
    .unwrap();
    let shown = path.display().to_string();
    let output = chaos(&["validate", &shown]);
    assert_eq!(output.status.code(), Some(2));
    let err = stderr(&output);
    assert!(err.contains(&format!("{shown}:13:")), "{err}");
    assert!(err.contains("threshold"), "{err}");

    std::fs::write(
        &path,
        "[scenario]\nname = \"bad\"\nduration = \"10s\"\n\n[[workloads]]\nname = \"w\"\nkind = \"swap\"\nmix = { execute = 1, teleport = 2 }\nrate = \"1/s\"\n",
    )
    .unwrap();
    let output = chaos(&["validate", &shown]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output)
            .contains(r#"workloads[0] ("w").mix.teleport: "swap" has no operation "teleport""#),
        "{}",
        stderr(&output)
    );
}

#[test]
fn an_unknown_scenario_name_gets_a_hint() {
    let output = chaos(&["drill", "smok", "--quiet"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(r#"(did you mean "smoke"?)"#),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_missing_target_file_is_exit_2_with_a_report_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("reports");
    let output = chaos(&[
        "run",
        "smoke",
        "--target",
        "/nonexistent/target.toml",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot read target file /nonexistent/target.toml"),
        "{}",
        stderr(&output)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["verdict"]["exit_code"], 2);
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(junit.contains("cannot read target file"), "{junit}");
}
