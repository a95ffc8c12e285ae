//! The control API keeps Toxiproxy's contract: shapes, status codes, error texts; bad input
//! gets a clear error and never takes the proxy down.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;

/// Creating, reading, listing, updating and deleting a proxy returns Toxiproxy's shapes.
#[tokio::test]
async fn proxy_crud_has_toxiproxys_shape() {
    let h = Harness::start().await;
    let upstream = echo_server().await;
    let (status, created) = h
        .call(
            "POST",
            "/proxies",
            Some(json!({"name": "db", "upstream": upstream.to_string()})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(created["name"], "db");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["toxics"], json!([]));
    // No listen given: loopback, a real port echoed back.
    let listen = created["listen"].as_str().unwrap();
    assert!(
        listen.starts_with("127.0.0.1:") && !listen.ends_with(":0"),
        "{listen}"
    );

    let (status, all) = h.call("GET", "/proxies", None).await;
    assert_eq!(status, 200);
    assert_eq!(all["db"], created);

    let (status, patched) = h
        .call("PATCH", "/proxies/db", Some(json!({"enabled": false})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(patched["enabled"], false);
    assert_eq!(patched["listen"], created["listen"]);
    // Legacy POST update, as Toxiproxy still accepts.
    let (status, posted) = h
        .call("POST", "/proxies/db", Some(json!({"enabled": true})))
        .await;
    assert_eq!((status, &posted["enabled"]), (200, &json!(true)));

    assert_eq!(h.call("DELETE", "/proxies/db", None).await.0, 204);
    let (status, body) = h.call("GET", "/proxies/db", None).await;
    assert_eq!(
        (status, body),
        (404, json!({"error": "proxy not found", "status": 404}))
    );
    assert_eq!(h.call("GET", "/proxies", None).await.1, json!({}));
}

/// Toxic CRUD: defaults, 200 on create, merge on update, Toxiproxy's errors.
#[tokio::test]
async fn toxic_crud_and_errors() {
    let h = Harness::start().await;
    h.proxy("p", echo_server().await).await;
    let toxic = h
        .toxic(
            "p",
            json!({"type": "latency", "attributes": {"latency": 10}}),
        )
        .await;
    assert_eq!(
        toxic,
        json!({"name": "latency_downstream", "type": "latency", "stream": "downstream",
               "toxicity": 1.0, "attributes": {"latency": 10, "jitter": 0}})
    );
    let (status, body) = h
        .call(
            "POST",
            "/proxies/p/toxics",
            Some(json!({"type": "latency"})),
        )
        .await;
    assert_eq!(
        (status, body),
        (409, json!({"error": "toxic already exists", "status": 409}))
    );

    let (status, updated) = h
        .call(
            "PATCH",
            "/proxies/p/toxics/latency_downstream",
            Some(json!({"attributes": {"jitter": 5}, "toxicity": 0.5})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(updated["attributes"], json!({"latency": 10, "jitter": 5}));
    assert_eq!(updated["toxicity"], 0.5);
    assert_eq!(
        h.call("GET", "/proxies/p/toxics", None).await.1,
        json!([updated.clone()])
    );
    assert_eq!(
        h.call("GET", "/proxies/p/toxics/latency_downstream", None)
            .await
            .1,
        updated
    );

    let missing = json!({"error": "toxic not found", "status": 404});
    assert_eq!(
        h.call("GET", "/proxies/p/toxics/nope", None).await,
        (404, missing.clone())
    );
    assert_eq!(
        h.call("DELETE", "/proxies/p/toxics/nope", None).await,
        (404, missing)
    );
    h.remove_toxic("p", "latency_downstream").await;
    assert_eq!(h.call("GET", "/proxies/p/toxics", None).await.1, json!([]));
}

/// Malformed and wrong requests get Toxiproxy's status and a text that says what is wrong.
#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let h = Harness::start().await;
    let upstream = echo_server().await.to_string();
    h.proxy("p", echo_server().await).await;

    let (status, body) = h.call_raw("POST", "/proxies", "{not json").await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("bad request body: "),
        "{body}"
    );

    let (status, body) = h
        .call("POST", "/proxies", Some(json!({"upstream": upstream})))
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("missing required field: name"))
    );
    let (status, body) = h.call("POST", "/proxies", Some(json!({"name": "x"}))).await;
    assert_eq!(
        (status, body["error"].clone()),
        (400, json!("missing required field: upstream"))
    );
    let (status, body) = h
        .call(
            "POST",
            "/proxies",
            Some(json!({"name": "p", "upstream": upstream})),
        )
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (409, json!("proxy already exists"))
    );

    let (status, body) = h
        .call("POST", "/proxies/p/toxics", Some(json!({"type": "latncy"})))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        r#"invalid toxic type: "latncy" (did you mean "latency"?)"#
    );
    let (status, body) = h
        .call(
            "POST",
            "/proxies/p/toxics",
            Some(json!({"type": "latency", "stream": "up"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"],
        "stream was invalid, can be either upstream or downstream"
    );
    let (status, body) = h
        .call(
            "POST",
            "/proxies/p/toxics",
            Some(json!({"type": "latency", "attributes": {"latency": "slow"}})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("invalid type: string"),
        "{body}"
    );
    let (status, body) = h
        .call(
            "POST",
            "/proxies/nope/toxics",
            Some(json!({"type": "latency"})),
        )
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (404, json!("proxy not found"))
    );

    // Unknown fields are ignored, as Toxiproxy does.
    let (status, _) = h
        .call(
            "POST",
            "/proxies",
            Some(json!({"name": "q", "upstream": upstream, "color": "blue"})),
        )
        .await;
    assert_eq!(status, 201);
}

/// A listen address in use is a 500 with Go's wording, and no half-made proxy is left.
#[tokio::test]
async fn port_in_use_is_refused_cleanly() {
    let h = Harness::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (status, body) = h
        .call(
            "POST",
            "/proxies",
            Some(json!({"name": "p", "listen": addr, "upstream": "127.0.0.1:1"})),
        )
        .await;
    assert_eq!(status, 500);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("listen tcp {addr}: ")),
        "{error}"
    );
    assert_eq!(h.call("GET", "/proxies", None).await.1, json!({}));
}

/// `/populate` validates the whole list before changing anything, keeps unchanged proxies,
/// and accepts toxics (our extension).
#[tokio::test]
async fn populate_is_all_or_nothing() {
    let h = Harness::start().await;
    let upstream = echo_server().await.to_string();
    let good = json!({"name": "a", "upstream": upstream});
    let (status, body) = h
        .call("POST", "/populate", Some(json!([good, {"name": "b"}])))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "missing required field: upstream at proxy 2");
    assert_eq!(h.call("GET", "/proxies", None).await.1, json!({}));

    let with_toxic = json!({"name": "b", "upstream": upstream,
        "toxics": [{"type": "latency", "attributes": {"latency": 5}}]});
    let (status, body) = h
        .call("POST", "/populate", Some(json!([good, with_toxic])))
        .await;
    assert_eq!(status, 201, "{body}");
    let proxies = body["proxies"].as_array().unwrap();
    assert_eq!(proxies.len(), 2);
    assert_eq!(proxies[1]["toxics"][0]["attributes"]["latency"], 5);

    // Populating again with the same addresses keeps the proxy (same bound port).
    let first_listen = proxies[0]["listen"].clone();
    let again = json!({"name": "a", "listen": first_listen, "upstream": upstream});
    let (status, body) = h.call("POST", "/populate", Some(json!([again]))).await;
    assert_eq!(status, 201);
    assert_eq!(body["proxies"][0]["listen"], first_listen);

    let (status, body) = h.call("POST", "/populate", Some(json!([good, good]))).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("duplicate proxy name"),
        "{body}"
    );
}

/// `/reset` enables every proxy and removes every toxic.
#[tokio::test]
async fn reset_enables_and_clears() {
    let h = Harness::start().await;
    h.proxy("p", echo_server().await).await;
    h.toxic("p", json!({"type": "timeout"})).await;
    h.call("PATCH", "/proxies/p", Some(json!({"enabled": false})))
        .await;
    assert_eq!(h.call("POST", "/reset", None).await.0, 204);
    let (_, proxy) = h.call("GET", "/proxies/p", None).await;
    assert_eq!(proxy["enabled"], true);
    assert_eq!(proxy["toxics"], json!([]));
}

/// `/version` answers in Toxiproxy's shape, and unknown paths get a JSON 404.
#[tokio::test]
async fn version_and_unknown_routes() {
    let h = Harness::start().await;
    let (status, body) = h.call("GET", "/version", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["version"], "2.12.0");
    assert_eq!(
        h.call("GET", "/nope", None).await,
        (404, json!({"error": "not found", "status": 404}))
    );
}

/// With a token set, calls without it are refused with 401; browsers are always refused.
#[tokio::test]
async fn token_and_browser_guard() {
    let h = Harness::start_with_token(Some("s3cret")).await;
    assert_eq!(h.call("GET", "/proxies", None).await.0, 200);
    let anonymous = reqwest::get(format!("{}/proxies", h.base)).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let wrong = reqwest::Client::new()
        .get(format!("{}/proxies", h.base))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let browser = h
        .http
        .get(format!("{}/proxies", h.base))
        .header("user-agent", "Mozilla/5.0")
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), 403);
}

/// Garbage bytes and abrupt resets on a proxy port leave it serving other connections.
#[tokio::test]
async fn broken_clients_do_not_hurt_others() {
    let h = Harness::start().await;
    let addr = h.proxy("p", echo_server().await).await;
    let mut healthy = connect(addr).await;
    for _ in 0..20 {
        let mut bad = connect(addr).await;
        bad.write_all(&[0xff, 0x00, 0x13, 0x37, b'\r', b'\n'])
            .await
            .unwrap();
        // SO_LINGER 0: the close is a reset.
        bad.set_zero_linger().unwrap();
        drop(bad);
    }
    healthy.write_all(b"still here").await.unwrap();
    let echoed = within(Duration::from_secs(5), "echo", read_n(&mut healthy, 10)).await;
    assert_eq!(echoed, b"still here");
    let mut fresh = connect(addr).await;
    fresh.write_all(b"new").await.unwrap();
    assert_eq!(
        within(Duration::from_secs(5), "echo", read_n(&mut fresh, 3)).await,
        b"new"
    );
}

/// `/metrics` is Prometheus text with the byte and connection counters of each proxy.
#[tokio::test]
async fn metrics_count_bytes_and_connections() {
    let h = Harness::start().await;
    let addr = h.proxy("m", echo_server().await).await;
    let mut client = connect(addr).await;
    client.write_all(b"12345").await.unwrap();
    assert_eq!(read_n(&mut client, 5).await, b"12345");
    let text = h
        .http
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap();
    assert!(
        text.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = text.text().await.unwrap();
    for line in [
        r#"chaos_proxy_bytes_total{proxy="m",direction="upstream"} 5"#,
        r#"chaos_proxy_bytes_total{proxy="m",direction="downstream"} 5"#,
        r#"chaos_proxy_connections_open{proxy="m"} 1"#,
        r#"chaos_proxy_connections_total{proxy="m"} 1"#,
        "# TYPE chaos_proxy_bytes_total counter",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

/// Regression (found by toxiproxy-python's `down()`): disabling or deleting a proxy answered
/// before its listener closed, so a connect right after was accepted, then reset; and changing
/// `upstream` on the same `listen` failed with "address in use".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_take_effect_before_the_reply() {
    let h = Harness::start().await;
    let addr = h.proxy("p", echo_server().await).await;
    for _ in 0..30 {
        let (status, _) = h
            .call("PATCH", "/proxies/p", Some(json!({"enabled": false})))
            .await;
        assert_eq!(status, 200);
        let refused = tokio::net::TcpStream::connect(addr).await;
        assert!(refused.is_err(), "connect accepted on a disabled proxy");
        let (status, _) = h
            .call("PATCH", "/proxies/p", Some(json!({"enabled": true})))
            .await;
        assert_eq!(status, 200);
    }

    let other = send_and_close_server(b"other".to_vec()).await;
    let (status, body) = h
        .call(
            "PATCH",
            "/proxies/p",
            Some(json!({"upstream": other.to_string()})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["enabled"].clone(), body["listen"].clone()),
        (json!(true), json!(addr.to_string()))
    );
    let mut client = connect(addr).await;
    assert_eq!(
        within(
            Duration::from_secs(5),
            "new upstream",
            read_n(&mut client, 5)
        )
        .await,
        b"other"
    );

    assert_eq!(h.call("DELETE", "/proxies/p", None).await.0, 204);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "connect accepted after delete"
    );
}

/// Regression (review): attribute values that overflowed the arithmetic (a bandwidth `rate` of
/// 2^62 hung a worker, a slicer `average_size` of u64::MAX panicked every connection) are
/// refused; `chunk_toxicity` is refused on toxics that hold data; `toxicity` echoes exactly.
#[tokio::test]
async fn out_of_range_attributes_are_refused() {
    let h = Harness::start().await;
    h.proxy("p", echo_server().await).await;
    for (toxic, field) in [
        (
            json!({"type": "bandwidth", "attributes": {"rate": 4611686018427387904u64}}),
            "rate",
        ),
        (
            json!({"type": "slicer", "attributes": {"average_size": u64::MAX, "size_variation": 1}}),
            "average_size",
        ),
        (
            json!({"type": "reset_peer", "chunk_toxicity": 0.5}),
            "chunk_toxicity",
        ),
    ] {
        let (status, body) = h.call("POST", "/proxies/p/toxics", Some(toxic)).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(field), "{body}");
    }
    let toxic = h.toxic("p", json!({"type": "noop", "toxicity": 0.1})).await;
    assert_eq!(toxic["toxicity"].to_string(), "0.1");
}

/// Regression (review): `/populate` discovered a duplicate toxic name only after it had
/// already closed the proxy it was replacing.
#[tokio::test]
async fn populate_checks_toxics_before_replacing_anything() {
    let h = Harness::start().await;
    let upstream = echo_server().await.to_string();
    h.proxy("keep", echo_server().await).await;
    let twice = json!([{"name": "keep", "upstream": upstream,
        "toxics": [{"name": "x", "type": "noop"}, {"name": "x", "type": "noop"}]}]);
    let (status, body) = h.call("POST", "/populate", Some(twice)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(h.call("GET", "/proxies/keep", None).await.0, 200);
}
