//! The proxy's control API, as the runner uses it: check that the scenario's proxies exist,
//! start the scenario's timeline, renew it, follow its events, abort it, and read the per-route
//! request counts of `http` proxies.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::target::Secret;

/// A client of one proxy's control API.
#[derive(Clone)]
pub struct Control {
    http: reqwest::Client,
    base: String,
    token: Option<Secret>,
}

/// A scenario run on the proxy.
#[derive(Debug, Clone)]
pub struct RunHandle {
    /// Its id.
    pub id: String,
}

/// `(method, route) -> count` for one `http` proxy.
pub type RouteCounts = BTreeMap<(String, String), u64>;

impl Control {
    /// A client for `base` (no trailing `/`).
    pub fn new(base: &str, token: Option<Secret>) -> anyhow::Result<Control> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .tcp_keepalive(Duration::from_secs(15))
            .no_proxy()
            .build()?;
        Ok(Control {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token.expose()),
            None => request,
        }
    }

    /// Sends a request bounded by 10 s and returns the JSON body of a 2xx answer; any other
    /// answer is an error with the proxy's own message.
    async fn call(&self, request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let answer = request
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .with_context(|| format!("{what}: the proxy's control API at {}", self.base))?;
        let status = answer.status();
        let body = answer.bytes().await.unwrap_or_default();
        if !status.is_success() {
            let reason = crate::outcome::reason_of(&body)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            anyhow::bail!("{what}: the proxy answered {status}: {reason}");
        }
        Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// The names of the proxies that exist, with their protocol (`tcp` when not given).
    pub async fn proxies(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let body = self
            .call(
                self.request(reqwest::Method::GET, "/proxies"),
                "listing proxies",
            )
            .await?;
        Ok(body
            .as_object()
            .map(|map| {
                map.iter()
                    .map(|(name, proxy)| {
                        let protocol = proxy["protocol"].as_str().unwrap_or("tcp").to_owned();
                        (name.clone(), protocol)
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Creates a proxy (`POST /proxies`).
    pub async fn create_proxy(
        &self,
        name: &str,
        listen: &str,
        upstream: &str,
        protocol: &str,
    ) -> anyhow::Result<()> {
        let body =
            json!({"name": name, "listen": listen, "upstream": upstream, "protocol": protocol});
        self.call(
            self.request(reqwest::Method::POST, "/proxies").json(&body),
            &format!("creating proxy {name:?}"),
        )
        .await
        .map(drop)
    }

    /// Starts a timeline (`POST /scenarios`) with a dead-man TTL.
    pub async fn start(&self, timeline: &Value, ttl: Duration) -> anyhow::Result<RunHandle> {
        let body = json!({"timeline": timeline, "ttl_ms": ttl.as_millis() as u64});
        let answer = self
            .call(
                self.request(reqwest::Method::POST, "/scenarios")
                    .json(&body),
                "starting the scenario",
            )
            .await?;
        let id = answer["id"]
            .as_str()
            .context("starting the scenario: the proxy's answer has no id")?;
        Ok(RunHandle { id: id.to_owned() })
    }

    /// Renews a run's TTL.
    pub async fn renew(&self, run: &RunHandle) -> anyhow::Result<()> {
        let path = format!("/scenarios/{}/renew", run.id);
        self.call(
            self.request(reqwest::Method::POST, &path),
            "renewing the scenario",
        )
        .await
        .map(drop)
    }

    /// Every run the proxy knows (`GET /scenarios`): id, scenario name and state.
    pub async fn runs(&self) -> anyhow::Result<Vec<(String, String, String)>> {
        let body = self
            .call(
                self.request(reqwest::Method::GET, "/scenarios"),
                "listing scenario runs",
            )
            .await?;
        Ok(body["scenarios"]
            .as_array()
            .map(|runs| {
                runs.iter()
                    .map(|run| {
                        let text = |key: &str| run[key].as_str().unwrap_or_default().to_owned();
                        (text("id"), text("scenario"), text("state"))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// A run's status (`GET /scenarios/{id}`).
    pub async fn status(&self, run: &RunHandle) -> anyhow::Result<Value> {
        let path = format!("/scenarios/{}", run.id);
        self.call(
            self.request(reqwest::Method::GET, &path),
            "reading the scenario",
        )
        .await
    }

    /// Aborts a run; answers once every fault is removed and every lock released. A run the
    /// proxy no longer knows (404: ended and forgotten) has nothing left to release.
    pub async fn abort(&self, run: &RunHandle) -> anyhow::Result<()> {
        let path = format!("/scenarios/{}", run.id);
        let answer = self
            .request(reqwest::Method::DELETE, &path)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .with_context(|| {
                format!(
                    "aborting the scenario: the proxy's control API at {}",
                    self.base
                )
            })?;
        let status = answer.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_FOUND {
            return Ok(());
        }
        let body = answer.bytes().await.unwrap_or_default();
        let reason = crate::outcome::reason_of(&body)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        anyhow::bail!("aborting the scenario: the proxy answered {status}: {reason}")
    }

    /// Follows a run's events (`GET /scenarios/{id}/events`, NDJSON): each event is sent to the
    /// returned channel; the channel closes after the `ended` event or when the stream breaks.
    pub async fn events(&self, run: &RunHandle) -> anyhow::Result<mpsc::Receiver<Value>> {
        let path = format!("/scenarios/{}/events", run.id);
        let answer = self
            .request(reqwest::Method::GET, &path)
            .send()
            .await
            .context("following the scenario's events")?;
        anyhow::ensure!(
            answer.status().is_success(),
            "following the scenario's events: the proxy answered {}",
            answer.status()
        );
        let (sender, receiver) = mpsc::channel(1024);
        tokio::spawn(async move {
            let mut stream = answer.bytes_stream();
            let mut buffer = Vec::new();
            while let Some(Ok(chunk)) = stream.next().await {
                buffer.extend_from_slice(&chunk);
                while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buffer.drain(..=end).collect();
                    let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                        continue;
                    };
                    let ended = event["kind"] == "ended";
                    if sender.send(event).await.is_err() || ended {
                        return;
                    }
                }
            }
        });
        Ok(receiver)
    }

    /// The per-route request counts of the `http` proxy `proxy`, from `/metrics`.
    pub async fn route_counts(&self, proxy: &str) -> anyhow::Result<RouteCounts> {
        let answer = self
            .request(reqwest::Method::GET, "/metrics")
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .context("reading the proxy's metrics")?
            .text()
            .await
            .context("reading the proxy's metrics")?;
        Ok(parse_route_counts(&answer, proxy))
    }
}

/// The `chaos_http_requests_total` samples of `proxy` in a Prometheus text.
pub fn parse_route_counts(metrics: &str, proxy: &str) -> RouteCounts {
    let mut counts = RouteCounts::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("chaos_http_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
            let end = labels[start..].find('"')? + start;
            Some(labels[start..end].to_owned())
        };
        if label("proxy").as_deref() != Some(proxy) {
            continue;
        }
        if let (Some(method), Some(route), Ok(value)) =
            (label("method"), label("route"), value.trim().parse::<f64>())
        {
            counts.insert((method, route), value as u64);
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_counts_are_read_for_one_proxy() {
        let text = "# HELP x\n\
            chaos_http_requests_total{proxy=\"api\",method=\"POST\",route=\"/api/v1/swaps/execute\"} 6\n\
            chaos_http_requests_total{proxy=\"other\",method=\"GET\",route=\"/x\"} 2\n\
            chaos_http_requests_total{proxy=\"api\",method=\"GET\",route=\"/api/v1/swaps/{id}\"} 3\n";
        let counts = parse_route_counts(text, "api");
        assert_eq!(counts.len(), 2);
        assert_eq!(
            counts[&("POST".to_owned(), "/api/v1/swaps/execute".to_owned())],
            6
        );
        assert_eq!(
            counts[&("GET".to_owned(), "/api/v1/swaps/{id}".to_owned())],
            3
        );
    }
}
