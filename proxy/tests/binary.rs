//! The `chaos-proxy` binary: config files with toxics, `--check-config`, exit codes, the token
//! from the environment, and a clean shutdown on SIGTERM.

mod common;

use common::{ProxyProcess, std_echo_server};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_chaos-proxy");

/// A running `chaos-proxy` (see `common::ProxyProcess`) and small blocking API calls.
struct Running(ProxyProcess);

impl Running {
    fn start(args: &[&str], envs: &[(&str, &str)]) -> Running {
        Running(ProxyProcess::start(args, envs))
    }

    /// A blocking HTTP/1.1 request; returns status and body.
    fn http(&self, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.0.api).unwrap();
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

    /// Sends SIGTERM and waits (bounded) for the exit: status and log.
    fn terminate(mut self) -> (ExitStatus, String) {
        self.0.terminate()
    }
}

fn write_config(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
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
            std_echo_server()
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
    let (status, log) = proxy.terminate();
    assert!(status.success());
    assert!(!log.contains("tok-123"));
}

/// SIGTERM: the proxy stops accepting, cuts open connections and exits 0.
#[test]
fn sigterm_closes_connections_and_exits_zero() {
    let proxy = Running::start(&[], &[]);
    let (status, body) = proxy.http(
        "POST",
        "/proxies",
        "",
        &format!(r#"{{"name": "e", "upstream": "{}"}}"#, std_echo_server()),
    );
    assert_eq!(status, 201, "{body}");
    let listen = proxy.listen_of("e");
    let (status, _) = proxy.http("POST", "/proxies/e/toxics", "", r#"{"type": "timeout"}"#);
    assert_eq!(status, 200);
    let mut client = TcpStream::connect(listen).unwrap();
    client.write_all(b"swallowed").unwrap();

    let (status, log) = proxy.terminate();
    assert!(status.success(), "{status}\n{log}");
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
