//! Compatibility with a real Toxiproxy client: `toxiproxy-python` from PyPI, installed in a
//! fresh venv and used unchanged (`tests/python/compat.py`) against the `chaos-proxy` binary to
//! create proxies, add, update and remove toxics, take proxies down, and observe the effect on a
//! TCP echo server's traffic.
//!
//! Needs `python3` with the `venv` module (Debian: `python3`, `python3-venv`) and access to PyPI
//! (or a pip cache). Set `CHAOS_PIP_CACHE=DIR` to reuse a pip cache directory between runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{ProxyProcess, std_echo_server, wait_within};

/// The client under test, pinned (PyPI name; it is imported as `toxiproxy`).
const CLIENT: &str = "toxiproxy-python==0.1.1";
/// The script that drives the client.
const COMPAT_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/compat.py");

const VENV_LIMIT: Duration = Duration::from_secs(60);
const PIP_LIMIT: Duration = Duration::from_secs(180);
const COMPAT_LIMIT: Duration = Duration::from_secs(90);

#[test]
fn toxiproxy_python_client_works_unchanged() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("cannot create a temp dir");

    let python = python_venv_with_client(dir.path());
    eprintln!("venv with {CLIENT} ready after {:.1?}", started.elapsed());

    let upstream = std_echo_server();
    let mut proxy = ProxyProcess::start(&[], &[]);
    eprintln!(
        "chaos-proxy API on {} (upstream echo {upstream})",
        proxy.api
    );

    let mut compat = Command::new(&python);
    compat
        .arg(COMPAT_PY)
        .arg(proxy.api.to_string())
        .arg(upstream.to_string())
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // `requests` honours proxy variables; the API is on loopback.
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        compat.env_remove(var);
    }
    let run = run_bounded(&mut compat, COMPAT_LIMIT, "compat.py");
    if !run.status.success() {
        panic!(
            "compat.py failed ({}): toxiproxy-python is not served as Toxiproxy would\n\
             --- compat.py stdout ---\n{}\n--- compat.py stderr ---\n{}\n--- chaos-proxy log ---\n{}",
            run.status,
            run.stdout,
            run.stderr,
            proxy.log(),
        );
    }
    eprintln!("{}", run.stdout);

    let (status, log) = proxy.terminate();
    assert!(
        status.success(),
        "chaos-proxy exited with {status} after SIGTERM, expected 0\n--- chaos-proxy log ---\n{log}"
    );
    eprintln!("done in {:.1?}", started.elapsed());
}

/// Creates a venv under `dir`, installs the pinned client, and returns the venv's python.
/// Fails (never skips) when python3 or its venv module is missing.
fn python_venv_with_client(dir: &Path) -> PathBuf {
    match Command::new("python3").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`python3 --version` failed ({}): {}\ninstall the Debian package `python3` (and `python3-venv`)",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "cannot run python3 ({e}): this test needs it; install the Debian packages `python3` and `python3-venv`"
        ),
    }

    let venv = dir.join("venv");
    let made = run_bounded(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        VENV_LIMIT,
        "python3 -m venv",
    );
    let python = venv.join("bin").join("python");
    if !made.status.success() || !python.exists() {
        panic!(
            "`python3 -m venv {}` failed ({}): install the Debian package `python3-venv` \
             (it provides venv and ensurepip)\n--- stdout ---\n{}\n--- stderr ---\n{}",
            venv.display(),
            made.status,
            made.stdout,
            made.stderr
        );
    }

    let mut pip = Command::new(&python);
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "-q",
        CLIENT,
    ]);
    if let Some(cache) = std::env::var_os("CHAOS_PIP_CACHE") {
        pip.arg("--cache-dir").arg(cache);
    }
    let installed = run_bounded(&mut pip, PIP_LIMIT, "pip install");
    if !installed.status.success() {
        panic!(
            "`pip install {CLIENT}` failed ({}): PyPI (or a pip cache in CHAOS_PIP_CACHE) is needed\n\
             --- stdout ---\n{}\n--- stderr ---\n{}",
            installed.status, installed.stdout, installed.stderr
        );
    }
    python
}

/// What a bounded command printed.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs a command with piped output; kills it and fails the test when it outlives `limit`.
fn run_bounded(command: &mut Command, limit: Duration, what: &str) -> Ran {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let output = wait_within(child, limit)
        .unwrap_or_else(|| panic!("{what} did not finish within {limit:?} (killed)"));
    Ran {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
