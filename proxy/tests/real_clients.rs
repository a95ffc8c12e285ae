//! Real servers (throwaway `redis-server` and `postgres`) and real clients (the `redis` and
//! `tokio-postgres` crates, the `redis-cli` and `psql` binaries) through the proxy: the
//! protocols work unchanged, large values arrive byte-exact, and a toxic's effect shows.

mod common;
use common::*;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chaos_testbed::servers::{PostgresServer, RedisServer};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use serde_json::json;
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// How long any single step may take before the test fails instead of hanging.
const STEP: Duration = Duration::from_secs(20);

/// Runs blocking work (starting a server) off the runtime's threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    within(STEP, "blocking work", tokio::task::spawn_blocking(work))
        .await
        .unwrap()
}

/// A throwaway Redis and a proxy called `name` in front of it.
async fn redis_behind_proxy(h: &Harness, name: &str) -> (RedisServer, SocketAddr) {
    let server = blocking(RedisServer::start)
        .await
        .expect("redis-server starts");
    let addr = h.proxy(name, server.addr()).await;
    (server, addr)
}

/// A throwaway PostgreSQL and a proxy called `name` in front of it.
async fn postgres_behind_proxy(h: &Harness, name: &str) -> (PostgresServer, SocketAddr) {
    let server = blocking(PostgresServer::start)
        .await
        .expect("postgres starts");
    let addr = h.proxy(name, server.addr()).await;
    (server, addr)
}

/// A multiplexed Redis connection to `addr`, with timeouts loose enough for debug builds.
async fn redis_connection(addr: SocketAddr) -> MultiplexedConnection {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(10)));
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    within(
        STEP,
        "the redis connection",
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .expect("redis connects through the proxy")
}

/// A PostgreSQL session to `addr` as the `postgres` superuser (trust auth).
async fn postgres_connection(addr: SocketAddr) -> tokio_postgres::Client {
    let url = format!("postgres://postgres@{addr}/postgres");
    let (client, connection) = within(
        STEP,
        "the postgres connection",
        tokio_postgres::connect(&url, NoTls),
    )
    .await
    .expect("postgres connects through the proxy");
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postgres connection ended: {e}");
        }
    });
    client
}

/// Runs a real client binary to completion (killed if it outlives [`STEP`]); returns its
/// trimmed stdout and how long it ran. Fails the test if it exits unsuccessfully.
async fn run_binary(program: &str, args: &[&str]) -> (String, Duration) {
    let start = Instant::now();
    let output = within(
        STEP,
        program,
        tokio::process::Command::new(program)
            .args(args)
            .env("PGCONNECT_TIMEOUT", "5")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|e| panic!("{program} could not run: {e}"));
    let elapsed = start.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}): {stdout} {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    (stdout, elapsed)
}

/// `redis-cli ping` through the proxy at `addr`; returns the reply and how long it took.
async fn redis_cli_ping(addr: SocketAddr) -> (String, Duration) {
    let port = addr.port().to_string();
    run_binary("redis-cli", &["-h", "127.0.0.1", "-p", &port, "ping"]).await
}

/// A downstream latency toxic called `slow`.
fn slow_toxic(latency_ms: u64) -> serde_json::Value {
    json!({"name": "slow", "type": "latency", "stream": "downstream",
        "attributes": {"latency": latency_ms}})
}

/// Runs one Redis command through `con`.
async fn redis<T: redis::FromRedisValue>(con: &mut MultiplexedConnection, cmd: &redis::Cmd) -> T {
    within(STEP, "a redis command", cmd.query_async(con))
        .await
        .unwrap()
}

/// `len` random bytes.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::fill(&mut bytes[..]);
    bytes
}

/// At least `len` bytes of random UTF-8 text, mixing one- to four-byte characters.
fn random_text(len: usize) -> String {
    const PALETTE: [char; 8] = ['a', 'Z', '7', ' ', '\'', 'é', '漢', '🦀'];
    let mut text = String::with_capacity(len + 4);
    for byte in random_bytes(len) {
        if text.len() >= len {
            break;
        }
        text.push(PALETTE[usize::from(byte) % PALETTE.len()]);
    }
    text
}

/// SET then GET of a small value through the proxy.
#[tokio::test]
async fn redis_set_and_get_through_the_proxy() {
    let h = Harness::start().await;
    let (_redis, addr) = redis_behind_proxy(&h, "redis").await;
    let mut con = redis_connection(addr).await;
    let () = redis(&mut con, redis::cmd("SET").arg("greeting").arg("hello")).await;
    let value: String = redis(&mut con, redis::cmd("GET").arg("greeting")).await;
    assert_eq!(value, "hello");
}

/// A 5 MiB random value comes back byte-exact.
#[tokio::test]
async fn redis_large_value_round_trips_byte_exact() {
    let h = Harness::start().await;
    let (_redis, addr) = redis_behind_proxy(&h, "redis").await;
    let mut con = redis_connection(addr).await;
    let value = random_bytes(5 * 1024 * 1024);
    let () = redis(&mut con, redis::cmd("SET").arg("big").arg(&value[..])).await;
    let back: Vec<u8> = redis(&mut con, redis::cmd("GET").arg("big")).await;
    assert!(
        back == value,
        "5 MiB value altered: {} bytes came back",
        back.len()
    );
}

/// A pipeline of 1,000 INCRs answers 1..=1000, in order.
#[tokio::test]
async fn redis_pipeline_of_a_thousand_commands() {
    let h = Harness::start().await;
    let (_redis, addr) = redis_behind_proxy(&h, "redis").await;
    let mut con = redis_connection(addr).await;
    let mut pipe = redis::pipe();
    for _ in 0..1000 {
        pipe.cmd("INCR").arg("counter");
    }
    let replies: Vec<u64> = within(STEP, "the pipeline", pipe.query_async(&mut con))
        .await
        .unwrap();
    assert_eq!(replies, (1..=1000).collect::<Vec<u64>>());
}

/// The real `redis-cli` gets PONG through the proxy.
#[tokio::test]
async fn redis_cli_pings_through_the_proxy() {
    let h = Harness::start().await;
    let (_redis, addr) = redis_behind_proxy(&h, "redis").await;
    let (reply, _) = redis_cli_ping(addr).await;
    assert_eq!(reply, "PONG");
}

/// With a 200 ms latency toxic, `redis-cli ping` still gets PONG, 200 ms or more later.
#[tokio::test]
async fn redis_cli_ping_is_delayed_by_a_latency_toxic() {
    let h = Harness::start().await;
    let (_redis, addr) = redis_behind_proxy(&h, "redis").await;
    h.toxic("redis", slow_toxic(200)).await;
    let (reply, elapsed) = redis_cli_ping(addr).await;
    assert_eq!(reply, "PONG");
    assert!(
        elapsed >= Duration::from_millis(200) && elapsed < Duration::from_secs(5),
        "redis-cli ping took {elapsed:?}"
    );
}

/// A connection busy with INCRs keeps working while a latency toxic is added (it visibly slows
/// the connection) and removed: no command fails, none is lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_connection_survives_a_toxic_added_and_removed_in_use() {
    let h = Harness::start().await;
    let (_redis, addr) = redis_behind_proxy(&h, "redis").await;
    let mut con = redis_connection(addr).await;

    let stop = Arc::new(AtomicBool::new(false));
    let busy = tokio::spawn({
        let mut con = con.clone();
        let stop = Arc::clone(&stop);
        async move {
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let value: u64 = redis::cmd("INCR")
                    .arg("counter")
                    .query_async(&mut con)
                    .await?;
                done += 1;
                assert_eq!(value, done, "an INCR was lost or repeated");
            }
            redis::RedisResult::Ok(done)
        }
    });

    let latency = Duration::from_millis(100);
    h.toxic("redis", slow_toxic(100)).await;
    let start = Instant::now();
    let () = redis(&mut con, redis::cmd("SET").arg("probe").arg("slowed")).await;
    let slowed = start.elapsed();
    assert!(
        slowed >= latency,
        "a command with the toxic took {slowed:?}"
    );

    h.remove_toxic("redis", "slow").await;
    let probe: String = redis(&mut con, redis::cmd("GET").arg("probe")).await;
    assert_eq!(probe, "slowed");

    stop.store(true, Ordering::Relaxed);
    let done = within(STEP, "the busy client", busy)
        .await
        .unwrap()
        .expect("every INCR succeeded");
    let counter: u64 = redis(&mut con, redis::cmd("GET").arg("counter")).await;
    assert!(done > 0);
    assert_eq!(
        counter, done,
        "the server saw a different number of INCRs than were answered"
    );
}

/// A simple query, and extended queries (a prepared statement run twice with parameters).
#[tokio::test]
async fn postgres_simple_and_extended_queries_work() {
    let h = Harness::start().await;
    let (_postgres, addr) = postgres_behind_proxy(&h, "pg").await;
    let client = postgres_connection(addr).await;

    let messages = within(
        STEP,
        "the simple query",
        client.simple_query("select 1 + 1"),
    )
    .await
    .unwrap();
    let rows: Vec<_> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
            _ => None,
        })
        .collect();
    assert_eq!(rows, [Some("2".to_owned())]);

    let statement = within(
        STEP,
        "prepare",
        client.prepare("select $1::int4 * $2::int4, $3::text || '!'"),
    )
    .await
    .unwrap();
    for (a, b, word) in [(6, 7, "hello"), (-3, 5, "again")] {
        let row = within(
            STEP,
            "the prepared query",
            client.query_one(&statement, &[&a, &b, &word]),
        )
        .await
        .unwrap();
        assert_eq!(row.get::<_, i32>(0), a * b);
        assert_eq!(row.get::<_, String>(1), format!("{word}!"));
    }
}

/// A 2 MiB text parameter comes back byte-exact from `select $1::text`.
#[tokio::test]
async fn postgres_large_text_round_trips_byte_exact() {
    let h = Harness::start().await;
    let (_postgres, addr) = postgres_behind_proxy(&h, "pg").await;
    let client = postgres_connection(addr).await;
    let text = random_text(2 * 1024 * 1024);
    let row = within(
        STEP,
        "the 2 MiB query",
        client.query_one("select $1::text", &[&text]),
    )
    .await
    .unwrap();
    let back: String = row.get(0);
    assert!(
        back == text,
        "2 MiB text altered: {} bytes came back",
        back.len()
    );
}

/// A committed transaction's row stays; a rolled-back one's does not.
#[tokio::test]
async fn postgres_transactions_commit_and_roll_back() {
    let h = Harness::start().await;
    let (_postgres, addr) = postgres_behind_proxy(&h, "pg").await;
    let mut client = postgres_connection(addr).await;
    within(
        STEP,
        "create table",
        client.batch_execute("create table items (id int primary key, name text)"),
    )
    .await
    .unwrap();

    for (id, name, commit) in [(1, "kept", true), (2, "dropped", false)] {
        within(STEP, "a transaction", async {
            let tx = client.transaction().await?;
            tx.execute("insert into items values ($1, $2)", &[&id, &name])
                .await?;
            if commit {
                tx.commit().await
            } else {
                tx.rollback().await
            }
        })
        .await
        .unwrap();
    }

    let rows = within(
        STEP,
        "select",
        client.query("select id, name from items order by id", &[]),
    )
    .await
    .unwrap();
    let items: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(items, [(1, "kept".to_owned())]);
}

/// The real `psql` runs a query through the proxy.
#[tokio::test]
async fn psql_queries_through_the_proxy() {
    let h = Harness::start().await;
    let (_postgres, addr) = postgres_behind_proxy(&h, "pg").await;
    let url = format!("postgres://postgres@{addr}/postgres");
    let (out, _) = run_binary("psql", &["-X", "-w", &url, "-Atc", "select 42"]).await;
    assert_eq!(out, "42");
}
