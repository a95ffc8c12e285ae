//! The `chaos-proxy` binary: config files with toxics, `--check-config`, exit codes, the token
//! from the environment, and a clean shutdown on SIGTERM.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_chaos-proxy");

/// A running `chaos-proxy`, killed on drop if the test did not stop it.
struct Running {
    child: Child,
    api: SocketAddr,
}

impl Running {
    /// Starts the binary with its API on a free port and waits for its "started" log line,
    /// which names the bound API address.
    fn start(args: &[&str], envs: &[(&str, &str)]) -> Running {
        let mut child = Command::new(BIN)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let api = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("chaos-proxy exited before starting:\n{seen}");
            }
            if let Some(rest) = line.split_once("chaos-proxy started api=").map(|(_, r)| r) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
            seen.push_str(&line);
        };
        // Keep draining the log so the proxy never blocks on a full pipe.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Running { child, api }
    }

    /// A blocking HTTP/1.1 request; returns status and body.
    fn http(&self, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.api).unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not HTTP: {response:?}"));
        let body = response
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        (status, body)
    }

    /// The bound listen address of a proxy, from the API.
    fn listen_of(&self, name: &str) -> SocketAddr {
        let (status, body) = self.http("GET", &format!("/proxies/{name}"), "", "");
        assert_eq!(status, 200, "{body}");
        let proxy: serde_json::Value = serde_json::from_str(&body).unwrap();
        proxy["listen"].as_str().unwrap().parse().unwrap()
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    fn terminate(mut self) -> Output {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "chaos-proxy did not exit on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        child.wait_with_output().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn echo_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = stream.try_clone().unwrap();
                let mut writer = stream;
                let _ = std::io::copy(&mut reader, &mut writer);
            });
        }
    });
    addr
}

/// A TOML config declares proxies and their toxics, which exist from the first request.
#[test]
fn config_file_declares_proxies_and_toxics() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "proxies.toml",
        &format!(
            r#"
[[proxies]]
name = "echo"
listen = "127.0.0.1:0"
upstream = "{}"

[[proxies.toxics]]
name = "slow"
type = "latency"
attributes = {{ latency = 200 }}
"#,
            echo_upstream()
        ),
    );
    let proxy = Running::start(&["--config", &config], &[]);
    let (status, body) = proxy.http("GET", "/proxies/echo/toxics/slow", "", "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""latency":200"#), "{body}");

    let mut client = TcpStream::connect(proxy.listen_of("echo")).unwrap();
    let start = Instant::now();
    client.write_all(b"ping").unwrap();
    let mut reply = [0u8; 4];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"ping");
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "{:?}",
        start.elapsed()
    );
}

/// `--check-config` says OK for a good file and names file:line:column for a bad one (exit 2).
#[test]
fn check_config_reports_where() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(
        dir.path(),
        "good.toml",
        "[[proxies]]\nname = \"a\"\nupstream = \"127.0.0.1:1\"\n",
    );
    let out = Command::new(BIN)
        .args(["--config", &good, "--check-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "config OK: 1 proxies, 0 toxics\n"
    );

    let bad = write_config(
        dir.path(),
        "bad.toml",
        "[[proxies]]\nname = \"a\"\nupstream = \"127.0.0.1:1\"\nlisten = 5\n",
    );
    let out = Command::new(BIN)
        .args(["--config", &bad, "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{bad}:4:10: invalid type")),
        "{stderr}"
    );

    let missing = Command::new(BIN)
        .args(["--config", "/nonexistent/x.toml", "--check-config"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/x.toml: cannot read"));
}

/// A configured listen address in use stops startup with exit 2 and says which.
#[test]
fn startup_fails_cleanly_when_a_port_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = write_config(
        dir.path(),
        "c.json",
        &format!(r#"[{{"name": "a", "listen": "{addr}", "upstream": "127.0.0.1:1"}}]"#),
    );
    let out = Command::new(BIN)
        .args(["--port", "0", "--config", &config])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("listen tcp {addr}")), "{stderr}");
}

/// The token can come from CHAOS_API_TOKEN; it is never printed.
#[test]
fn token_from_environment() {
    let proxy = Running::start(&[], &[("CHAOS_API_TOKEN", "tok-123")]);
    assert_eq!(proxy.http("GET", "/proxies", "", "").0, 401);
    assert_eq!(
        proxy
            .http("GET", "/proxies", "Authorization: Bearer tok-123\r\n", "")
            .0,
        200
    );
    let out = proxy.terminate();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("tok-123"));
}

/// SIGTERM: the proxy stops accepting, cuts open connections and exits 0.
#[test]
fn sigterm_closes_connections_and_exits_zero() {
    let proxy = Running::start(&[], &[]);
    let (status, body) = proxy.http(
        "POST",
        "/proxies",
        "",
        &format!(r#"{{"name": "e", "upstream": "{}"}}"#, echo_upstream()),
    );
    assert_eq!(status, 201, "{body}");
    let listen = proxy.listen_of("e");
    let (status, _) = proxy.http("POST", "/proxies/e/toxics", "", r#"{"type": "timeout"}"#);
    assert_eq!(status, 200);
    let mut client = TcpStream::connect(listen).unwrap();
    client.write_all(b"swallowed").unwrap();

    let out = proxy.terminate();
    assert!(out.status.success(), "{out:?}");
    // The open connection was closed (EOF or reset), not left hanging.
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    match client.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("unexpected {n} bytes"),
        Err(e) => assert_ne!(
            e.kind(),
            std::io::ErrorKind::WouldBlock,
            "connection left open"
        ),
    }
    assert!(TcpStream::connect(listen).is_err(), "still accepting");
}

/// A config file declares a protocol-aware proxy with a message fault; a fault that does not
/// fit the protocol is refused with where it is.
#[test]
fn config_file_declares_message_faults() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(
        dir.path(),
        "faults.toml",
        r#"
[[proxies]]
name = "redis"
upstream = "127.0.0.1:6379"
protocol = "redis"

[[proxies.toxics]]
type = "redis_error"
attributes = { match = { preset = "celery_broker" }, error = "LOADING", probability = 0.5 }
"#,
    );
    let out = Command::new(BIN)
        .args(["--config", &good, "--check-config"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "config OK: 1 proxies, 1 toxics\n"
    );

    let typo = write_config(
        dir.path(),
        "typo.toml",
        "[[proxies]]\nname = \"r\"\nupstream = \"127.0.0.1:1\"\nprotocol = \"redis\"\n[[proxies.toxics]]\ntype = \"redis_error\"\nattributes = { match = { comand = [\"GET\"] } }\n",
    );
    let out = Command::new(BIN)
        .args(["--config", &typo, "--check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("toxics[0]") && stderr.contains("unknown field `comand`"),
        "{stderr}"
    );
}

/// The README's main command uses examples/proxy.toml: it must stay valid.
#[test]
fn the_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/proxy.toml");
    let out = Command::new(BIN)
        .args(["--config", example, "--check-config"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
