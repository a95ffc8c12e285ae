//! The embedded default stack: it starts, its three proxies exist behind the token, the testbed
//! is ready and its database traffic crosses the `postgres` proxy, a login through the target
//! works, and after `stop()` nothing listens any more.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use chaos_runner::embedded::{EmbeddedOptions, EmbeddedStack};
use serde_json::{Value, json};

/// `host:port` of a `scheme://[user@]host:port/...` URL.
fn addr_of(url: &str) -> SocketAddr {
    let rest = url.split_once("://").expect("a URL").1;
    let authority = rest.split('/').next().unwrap();
    let host_port = authority.rsplit('@').next().unwrap();
    host_port
        .parse()
        .unwrap_or_else(|_| panic!("no host:port in {url}"))
}

/// The value of `family{proxy="name"}` in a Prometheus text.
fn metric(text: &str, family: &str, proxy: &str) -> u64 {
    let prefix = format!("{family}{{proxy=\"{proxy}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_stack_starts_serves_through_the_proxy_and_stops() {
    let options = EmbeddedOptions {
        flaws: Vec::new(),
        residents: 20,
        candidates: 5,
        fmit_weeks: 52,
        seed: 7,
    };
    let stack = tokio::time::timeout(Duration::from_secs(120), EmbeddedStack::start(options))
        .await
        .expect("the stack starts within 2 minutes")
        .unwrap_or_else(|err| panic!("{err:#}"));
    let target = stack.target();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let token = target.control_token.as_ref().expect("a token").expose();

    // The control API wants the token, and has the three proxies with their protocols.
    let answer = http
        .get(format!("{}/proxies", target.control_url))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let proxies: Value = http
        .get(format!("{}/proxies", target.control_url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    for (name, protocol) in [
        ("postgres", "postgres"),
        ("redis", "redis"),
        ("api", "http"),
    ] {
        assert_eq!(proxies[name]["protocol"], protocol, "{proxies:#}");
        assert_eq!(proxies[name]["enabled"], true, "{proxies:#}");
    }
    let addrs = stack.proxies();
    assert_eq!(
        proxies["api"]["upstream"],
        addr_of(&target.api_url).to_string()
    );
    assert_eq!(
        proxies["postgres"]["upstream"],
        addr_of(target.database_url.expose()).to_string()
    );
    assert_eq!(
        proxies["redis"]["upstream"],
        addr_of(target.redis_url.expose()).to_string()
    );

    // Ready, and a login through the target works.
    let ready = http
        .get(format!("{}/api/v1/health/ready", target.api_url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let login: Value = http
        .post(format!("{}/api/v1/auth/login/json", target.api_url))
        .json(&json!({"username": target.username, "password": target.password.expose()}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = login["access_token"].as_str().expect("an access token");
    let history = http
        .get(format!("{}/api/v1/swaps/history", target.api_url))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(history.status(), 200);

    // The api proxy forwards to the testbed (the MCP server's way back to the API).
    let health = http
        .get(format!("http://{}/api/v1/health", addrs.api))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    // The testbed's database and Redis traffic crosses the proxies.
    let metrics = http
        .get(format!("{}/metrics", target.control_url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric(&metrics, "chaos_proxy_connections_total", "postgres") > 0,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "chaos_proxy_connections_total", "redis") > 0,
        "{metrics}"
    );

    // The injectors get the direct URLs.
    let env: Vec<(&str, &str)> = target
        .injector_env
        .iter()
        .map(|(name, value)| (name.as_str(), value.expose()))
        .collect();
    assert_eq!(
        env,
        [
            ("CHAOS_DATABASE_URL", target.database_url.expose()),
            ("CHAOS_REDIS_URL", target.redis_url.expose()),
        ]
    );

    let listening = [
        addr_of(target.database_url.expose()),
        addr_of(target.redis_url.expose()),
        addr_of(&target.api_url),
        addr_of(&target.mcp_url),
        addr_of(&target.control_url),
        addrs.postgres,
        addrs.redis,
        addrs.api,
    ];
    tokio::time::timeout(Duration::from_secs(60), stack.stop())
        .await
        .expect("the stack stops within a minute");
    for addr in listening {
        assert!(refused(addr), "{addr} still accepts connections");
    }
}
