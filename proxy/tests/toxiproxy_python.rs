//! Compatibility with a real Toxiproxy client: `toxiproxy-python` from PyPI, installed in a
//! fresh venv and used unchanged (`tests/python/compat.py`) against the `chaos-proxy` binary to
//! create proxies, add, update and remove toxics, take proxies down, and observe the effect on a
//! TCP echo server's traffic.
//!
//! Needs `python3` with the `venv` module (Debian: `python3`, `python3-venv`) and access to PyPI
//! (or a pip cache). Set `CHAOS_PIP_CACHE=DIR` to reuse a pip cache directory between runs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The client under test, pinned (PyPI name; it is imported as `toxiproxy`).
const CLIENT: &str = "toxiproxy-python==0.1.1";
/// The script that drives the client.
const COMPAT_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/compat.py");

const VENV_LIMIT: Duration = Duration::from_secs(60);
const PIP_LIMIT: Duration = Duration::from_secs(180);
const COMPAT_LIMIT: Duration = Duration::from_secs(90);
const READY_LIMIT: Duration = Duration::from_secs(15);
const EXIT_LIMIT: Duration = Duration::from_secs(5);

#[test]
fn toxiproxy_python_client_works_unchanged() {
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("cannot create a temp dir");

    let python = python_venv_with_client(dir.path());
    eprintln!("venv with {CLIENT} ready after {:.1?}", started.elapsed());

    let upstream = echo_server();
    let mut proxy = ChaosProxy::start(&dir.path().join("chaos-proxy.log"));
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
            proxy.log_text(),
        );
    }
    eprintln!("{}", run.stdout);

    let status = proxy.terminate();
    assert!(
        status.success(),
        "chaos-proxy exited with {status} after SIGTERM, expected 0\n--- chaos-proxy log ---\n{}",
        proxy.log_text()
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

/// The real binary, with its API on a free loopback port; killed on drop if still running.
struct ChaosProxy {
    child: Option<Child>,
    api: SocketAddr,
    log: PathBuf,
}

impl ChaosProxy {
    /// Starts `chaos-proxy --host 127.0.0.1 --port <free>` (stderr to `log`) and waits until
    /// `GET /version` answers 200.
    fn start(log: &Path) -> ChaosProxy {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("cannot find a free port")
            .port();
        let api = SocketAddr::from(([127, 0, 0, 1], port));
        let log_file = std::fs::File::create(log).expect("cannot create the proxy log");
        let child = Command::new(env!("CARGO_BIN_EXE_chaos-proxy"))
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env_remove("CHAOS_API_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("cannot start chaos-proxy");
        let mut proxy = ChaosProxy {
            child: Some(child),
            api,
            log: log.to_owned(),
        };
        proxy.wait_ready();
        proxy
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_LIMIT;
        let mut last = String::from("no attempt yet");
        while Instant::now() < deadline {
            let child = self.child.as_mut().expect("chaos-proxy handle");
            if let Some(status) = child.try_wait().expect("cannot poll chaos-proxy") {
                panic!(
                    "chaos-proxy exited early with {status}\n--- log ---\n{}",
                    self.log_text()
                );
            }
            match get_version(self.api) {
                Ok(response) if response.starts_with("HTTP/1.1 200") => return,
                Ok(response) => {
                    last = format!("answered {:?}", response.lines().next().unwrap_or(""))
                }
                Err(e) => last = e.to_string(),
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "chaos-proxy API on {} not ready after {READY_LIMIT:?} (last: {last})\n--- log ---\n{}",
            self.api,
            self.log_text()
        );
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(cannot read the log: {e})"))
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("chaos-proxy already stopped");
        let pid = child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("cannot run kill");
        assert!(sent.success(), "`kill -TERM {pid}` failed: {sent}");
        let deadline = Instant::now() + EXIT_LIMIT;
        loop {
            if let Some(status) = child.try_wait().expect("cannot poll chaos-proxy") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "chaos-proxy still running {EXIT_LIMIT:?} after SIGTERM\n--- log ---\n{}",
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One `GET /version` over a plain socket; returns the raw response.
fn get_version(api: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&api, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// A TCP echo server on 127.0.0.1:<free port>, one thread per connection, for the whole test.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind the echo server");
    let addr = listener.local_addr().expect("echo server address");
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                if let Ok(mut reader) = stream.try_clone() {
                    let mut writer = stream;
                    let _ = std::io::copy(&mut reader, &mut writer);
                }
            });
        }
    });
    addr
}

/// What a bounded command printed.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs a command with piped output; kills it and fails the test when it outlives `limit`.
fn run_bounded(command: &mut Command, limit: Duration, what: &str) -> Ran {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .unwrap_or_else(|e| panic!("cannot poll {what}: {e}"))
        {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not finish within {limit:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                collect(&stdout),
                collect(&stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    Ran {
        status,
        stdout: collect(&stdout),
        stderr: collect(&stderr),
    }
}

/// Reads a pipe to its end on a thread; the text arrives on the channel.
fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

/// The drained text, waiting a little for a pipe a grandchild may still hold open.
fn collect(rx: &mpsc::Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| "(output not available: the pipe is still open)".to_owned())
}
