//! Shared pieces of the proxy's integration tests: an in-process proxy with its control API on
//! a free loopback port, a small API client, and plain TCP peers (echo, sink) for byte-level
//! toxics. Real Redis and PostgreSQL come from `chaos_testbed::servers`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chaos_proxy::Registry;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// A registry plus its control API, served in this process on 127.0.0.1:<free port>.
pub struct Harness {
    /// The registry behind the API (for direct inspection).
    pub registry: Arc<Registry>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The API client (carries the token when there is one).
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
}

impl Harness {
    /// Starts a registry and its API without a token.
    pub async fn start() -> Harness {
        Harness::start_with_token(None).await
    }

    /// Starts a registry and its API; with a token, the client sends it.
    pub async fn start_with_token(token: Option<&str>) -> Harness {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let registry = Arc::new(Registry::new());
        let (stop, stopped) = oneshot::channel::<()>();
        let on_stop = Arc::clone(&registry);
        tokio::spawn(chaos_proxy::serve_api(
            listener,
            Arc::clone(&registry),
            token.map(str::to_owned),
            async move {
                let _ = stopped.await;
                on_stop.shutdown(Duration::from_secs(2)).await;
            },
        ));
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap();
        Harness {
            registry,
            base,
            http,
            stop: Some(stop),
        }
    }

    /// Sends a request; returns the status and the body parsed as JSON (or as a JSON string
    /// when it is not JSON, or null when empty).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    /// Sends a raw body (for malformed JSON tests).
    pub async fn call_raw(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Creates a proxy on a free loopback port in front of `upstream`; returns its address.
    pub async fn proxy(&self, name: &str, upstream: SocketAddr) -> SocketAddr {
        let (status, body) = self
            .call(
                "POST",
                "/proxies",
                Some(json!({"name": name, "listen": "127.0.0.1:0", "upstream": upstream.to_string()})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["listen"].as_str().unwrap().parse().unwrap()
    }

    /// Adds a toxic (JSON as the API takes it) and checks it was accepted.
    pub async fn toxic(&self, proxy: &str, toxic: Value) -> Value {
        let (status, body) = self
            .call("POST", &format!("/proxies/{proxy}/toxics"), Some(toxic))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Removes a toxic and checks it was there.
    pub async fn remove_toxic(&self, proxy: &str, toxic: &str) {
        let (status, body) = self
            .call("DELETE", &format!("/proxies/{proxy}/toxics/{toxic}"), None)
            .await;
        assert_eq!(status, 204, "{body}");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A TCP server on 127.0.0.1 that echoes every byte back, for any number of connections.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            socket.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = socket.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A TCP server that sends `payload` to each client and then closes.
pub async fn send_and_close_server(payload: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let payload = payload.clone();
            tokio::spawn(async move {
                let _ = socket.write_all(&payload).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    addr
}

/// Connects to `addr` with TCP_NODELAY.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// Reads until `n` bytes arrived or the stream ended.
pub async fn read_n(stream: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match stream.read(&mut out[got..]).await {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    out.truncate(got);
    out
}

/// Bounds a test step in time, so a hang fails instead of blocking the suite.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {limit:?}"))
}
