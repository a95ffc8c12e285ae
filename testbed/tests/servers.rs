//! The throwaway servers against the real `redis-server`, `initdb`, `postgres` and `psql`.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chaos_testbed::servers::{
    PostgresServer, RedisServer, ServerError, default_search_path, find_binary,
};

/// Sends one inline command over a fresh connection and returns the first reply bytes.
fn redis_command(addr: SocketAddr, command: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to redis");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(format!("{command}\r\n").as_bytes())
        .unwrap();
    let mut reply = [0u8; 512];
    let n = stream.read(&mut reply).expect("redis reply");
    String::from_utf8_lossy(&reply[..n]).into_owned()
}

fn psql(url: &str, sql: &str) -> String {
    let output = Command::new("psql")
        .args([url, "-X", "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn refuses_connections(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err()
}

fn is_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Pids whose parent is `pid` (the postmaster's backends and auxiliary processes).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // Fields after the parenthesised command name: state, ppid, ...
            let ppid: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == pid).then_some(child)
        })
        .collect()
}

#[test]
fn redis_answers_ping_and_is_gone_after_drop() {
    let redis = RedisServer::start().expect("start redis");
    let addr = redis.addr();
    assert!(addr.ip().is_loopback());
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/", addr.port()));
    assert!(redis_command(addr, "PING").starts_with("+PONG"));
    let pid = redis.pid();

    drop(redis);
    assert!(refuses_connections(addr), "{addr} still accepts after drop");
    assert!(!is_alive(pid), "redis-server {pid} survived the drop");
}

#[test]
fn redis_takes_extra_args() {
    let redis = RedisServer::start_with(&["--maxmemory", "1mb"]).expect("start redis");
    let reply = redis_command(redis.addr(), "CONFIG GET maxmemory");
    assert!(reply.contains("1048576"), "{reply}\n{}", redis.log_tail());
}

#[test]
fn two_redis_servers_get_different_ports() {
    let a = RedisServer::start().expect("start first redis");
    let b = RedisServer::start().expect("start second redis");
    assert_ne!(a.addr(), b.addr());
    assert!(redis_command(a.addr(), "PING").starts_with("+PONG"));
    assert!(redis_command(b.addr(), "PING").starts_with("+PONG"));
}

#[test]
fn postgres_answers_psql_and_is_gone_after_drop() {
    let pg = PostgresServer::start().expect("start postgres");
    let addr = pg.addr();
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{}/postgres", addr.port())
    );
    assert_eq!(psql(&pg.url(), "select 1"), "1");
    assert_eq!(psql(&pg.url(), "show fsync"), "off");
    assert_eq!(psql(&pg.url(), "show max_connections"), "200");
    psql(&pg.url(), "create database drill");
    assert_eq!(
        psql(&pg.url_for("drill"), "select current_database()"),
        "drill"
    );
    assert!(
        pg.socket_dir()
            .join(format!(".s.PGSQL.{}", addr.port()))
            .exists()
    );

    let postmaster = pg.pid();
    let helpers = children_of(postmaster);
    assert!(
        !helpers.is_empty(),
        "postmaster {postmaster} has no children"
    );
    let dir = pg.socket_dir().to_owned();

    drop(pg);
    assert!(refuses_connections(addr), "{addr} still accepts after drop");
    assert!(
        !is_alive(postmaster),
        "postmaster {postmaster} survived the drop"
    );
    let survivors: Vec<u32> = helpers.into_iter().filter(|&pid| is_alive(pid)).collect();
    assert!(
        survivors.is_empty(),
        "postgres processes {survivors:?} survived the drop"
    );
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[test]
fn two_postgres_servers_get_different_ports() {
    let a = PostgresServer::start().expect("start first postgres");
    let b =
        PostgresServer::start_with(&["-c", "max_connections=20"]).expect("start second postgres");
    assert_ne!(a.addr(), b.addr());
    assert_eq!(psql(&a.url(), "show max_connections"), "200");
    assert_eq!(psql(&b.url(), "show max_connections"), "20");
}

#[test]
fn missing_binary_names_the_debian_package() {
    for (binary, package) in [
        ("redis-server", "redis-server"),
        ("initdb", "postgresql"),
        ("postgres", "postgresql"),
    ] {
        let err = find_binary(binary, OsStr::new("/nonexistent:/also/nonexistent"))
            .expect_err("nothing to find");
        match &err {
            ServerError::MissingBinary {
                binary: b,
                package: p,
            } => {
                assert_eq!((b.as_str(), p.as_str()), (binary, package));
            }
            other => panic!("expected MissingBinary, got {other:?}"),
        }
        let message = err.to_string();
        assert!(
            message.contains(&format!("install the Debian package `{package}`")),
            "{message}"
        );
        assert!(message.contains(binary), "{message}");
    }
}

#[test]
fn default_search_path_finds_the_installed_servers() {
    let path = default_search_path();
    for binary in ["redis-server", "initdb", "postgres"] {
        let found = find_binary(binary, &path).expect(binary);
        assert!(found.ends_with(binary), "{}", found.display());
    }
}
