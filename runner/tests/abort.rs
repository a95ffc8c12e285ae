//! `chaos abort`, the abort switch: it ends a running scenario on a proxy, and the proxy has
//! removed the run's faults when it answers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_abort_ends_every_running_run_and_its_faults() {
    let registry = Arc::new(chaos_proxy::Registry::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(chaos_proxy::serve_api(
        listener,
        Arc::clone(&registry),
        Some("s3cret".to_owned()),
        std::future::pending(),
    ));
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut request = http
            .request(method, format!("{control}{path}"))
            .bearer_auth("s3cret");
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let answer = request.send().await.unwrap();
            let status = answer.status().as_u16();
            (status, answer.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = closed.local_addr().unwrap().to_string();
    drop(closed);
    let (status, _) = call(
        reqwest::Method::POST,
        "/proxies",
        Some(json!({"name": "p", "listen": "127.0.0.1:0", "upstream": upstream})),
    )
    .await;
    assert_eq!(status, 201);
    // A one-hour fault that only the abort switch can end early.
    let timeline = json!({
        "scenario": "long", "duration_ms": 3_600_000,
        "proxies": [{"name": "p", "existing": true}],
        "phases": [{"name": "slow", "from_ms": 0, "to_ms": 3_600_000}],
        "events": [
            {"at_ms": 0, "fault": "slow", "occurrence": 0, "proxy": "p", "action": "apply",
             "toxic": {"name": "slow", "type": "latency", "toxicity": 1.0, "attributes": {"latency": 500}}},
            {"at_ms": 3_600_000, "fault": "slow", "occurrence": 0, "proxy": "p", "action": "remove"}
        ]
    });
    let (status, run) = call(
        reqwest::Method::POST,
        "/scenarios",
        Some(json!({"timeline": timeline, "ttl_ms": 60_000})),
    )
    .await;
    assert_eq!(status, 201, "{run}");
    let id = run["id"].as_str().unwrap().to_owned();
    // The fault is on before the switch is pulled.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, toxics) = call(reqwest::Method::GET, "/proxies/p/toxics", None).await;
        if toxics.as_array().is_some_and(|t| !t.is_empty()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fault never applied"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let abort = |args: Vec<String>| {
        let control = control.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_chaos"))
                .arg("abort")
                .arg("--control")
                .arg(&control)
                .args(["--token-env", "TEST_ABORT_TOKEN"])
                .args(args)
                .env("TEST_ABORT_TOKEN", "s3cret")
                .output()
                .unwrap()
        })
    };
    let unknown = abort(vec!["no-such-run".into()]).await.unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no run \"no-such-run\""));

    let output = abort(Vec::new()).await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains(&format!("aborted {id}")));
    let (_, status) = call(reqwest::Method::GET, &format!("/scenarios/{id}"), None).await;
    assert_eq!(status["state"], "aborted", "{status}");
    let (_, toxics) = call(reqwest::Method::GET, "/proxies/p/toxics", None).await;
    assert_eq!(toxics, json!([]), "the abort removed the fault");

    let again = abort(Vec::new()).await.unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("no scenario run is running"));
}
