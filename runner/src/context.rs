//! What every part of a run shares: the target, an API client that stays logged in, the
//! direct database and Redis connections the judge reads the truth from, the proxy's control
//! client, and the inpatient weeks book.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::RwLock;

use crate::control::Control;
use crate::target::{Profile, Target};
use crate::workloads::weeks::WeekBook;

/// Every API request is bounded by this (the testbed's own bound on database work is 11 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The run's shared state.
pub struct Context {
    /// Where the run goes.
    pub target: Target,
    /// The API, logged in.
    pub api: Api,
    /// Direct database connection (not through the proxy), for the workloads' lookups inside
    /// measured operations.
    pub db: tokio_postgres::Client,
    /// Another direct connection, for the invariants and settlement (with a server-side
    /// statement timeout), so a slow check never delays a measured operation's lookup.
    pub checks_db: tokio_postgres::Client,
    /// Direct Redis connection (not through the proxy).
    pub redis: redis::aio::MultiplexedConnection,
    /// The proxy's control API.
    pub control: Control,
    /// The inpatient weeks and their owners.
    pub weeks: Arc<WeekBook>,
    /// This run's id: tags what the run writes (swap reasons, idempotency keys).
    pub run_id: String,
    /// The scenario's seed (0 when it has none).
    pub seed: u64,
    /// The API requests the MCP workloads' tool calls should cause on the `api` proxy, per
    /// (method, route as the proxy folds it): compared with the proxy's own counts after the
    /// run, so a retry storm shows as amplification.
    pub expected_api_calls: Mutex<BTreeMap<(String, String), u64>>,
}

impl Context {
    /// Connects everything and logs in; an error names what could not be reached (without a
    /// password).
    pub async fn connect(target: Target, run_id: String, seed: u64) -> anyhow::Result<Context> {
        use anyhow::Context as _;
        let db = connect_db(&target, None)
            .await
            .context("connecting to the database (direct URL)")?;
        let checks_db = connect_db(&target, Some(crate::invariants::CHECK_TIMEOUT))
            .await
            .context("connecting to the database (direct URL)")?;
        let redis = redis::Client::open(target.redis_url.expose())
            .context("the Redis URL (direct)")?
            .get_multiplexed_async_connection()
            .await
            .context("connecting to Redis (direct URL)")?;
        let api = Api::new(&target)?;
        api.login().await.context("logging in to the API")?;
        let control = Control::new(&target.control_url, target.control_token.clone())?;
        let weeks = Arc::new(
            WeekBook::load(&db, seed)
                .await
                .context("reading the inpatient weeks")?,
        );
        Ok(Context {
            target,
            api,
            db,
            checks_db,
            redis,
            control,
            weeks,
            run_id,
            seed,
            expected_api_calls: Mutex::new(BTreeMap::new()),
        })
    }

    /// Counts one API request that a tool call should cause (`route` as the proxy folds it:
    /// `chaos_proxy::metrics::route_of`).
    pub fn expect_api_call(&self, method: &str, path: &str) {
        let route = chaos_proxy::metrics::route_of(path);
        *self
            .expected_api_calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((method.to_owned(), route))
            .or_default() += 1;
    }

    /// Whether the target is the testbed (its extra evidence can be used).
    pub fn is_testbed(&self) -> bool {
        self.target.profile == Profile::Testbed
    }
}

/// A direct connection to the target's database, its statements bounded by `timeout` on the
/// server side when given (a timed-out check does not keep running there).
async fn connect_db(
    target: &Target,
    timeout: Option<Duration>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = target.database_url.expose().parse()?;
    config.application_name("chaos-runner");
    if let Some(timeout) = timeout {
        config.options(format!("-c statement_timeout={}", timeout.as_millis()));
    }
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(%err, "a judge's database connection ended");
        }
    });
    Ok(client)
}

/// One HTTP answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: bytes::Bytes,
}

impl Answer {
    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// The API client: one pooled reqwest client, a bearer token renewed on 401.
pub struct Api {
    http: reqwest::Client,
    base: String,
    username: String,
    password: crate::target::Secret,
    token: RwLock<String>,
    /// One login at a time: requests that all see their token expire wait for one new login
    /// instead of each logging in (bcrypt makes logins expensive on the target).
    login_lock: tokio::sync::Mutex<()>,
}

impl Api {
    /// A client for the target's API (not logged in yet).
    pub fn new(target: &Target) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .no_proxy()
            .pool_max_idle_per_host(256)
            .build()?;
        Ok(Api {
            http,
            base: target.api_url.clone(),
            username: target.username.clone(),
            password: target.password.clone(),
            token: RwLock::new(String::new()),
            login_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The base URL (no trailing `/`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Logs in (`POST /api/v1/auth/login/json`) and keeps the access token.
    pub async fn login(&self) -> anyhow::Result<()> {
        let body = serde_json::json!({
            "username": self.username,
            "password": self.password.expose(),
        });
        let answer = self
            .http
            .post(format!("{}/api/v1/auth/login/json", self.base))
            .json(&body)
            .send()
            .await?;
        let status = answer.status();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        let token = body["access_token"].as_str().ok_or_else(|| {
            anyhow::anyhow!(
                "login as {:?} answered {status}: {}",
                self.username,
                crate::outcome::reason_of(body.to_string().as_bytes()).unwrap_or_default()
            )
        })?;
        *self.token.write().await = token.to_owned();
        Ok(())
    }

    /// Sends a request with the token; on 401 logs in again once and resends. `headers` are
    /// extra headers (an `Idempotency-Key`).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Answer, reqwest::Error> {
        let mut relogged = false;
        loop {
            let token = self.token.read().await.clone();
            let mut request = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .bearer_auth(&token);
            for (name, value) in headers {
                request = request.header(*name, value);
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await?;
            let status = response.status().as_u16();
            let body = response.bytes().await?;
            if status == 401 && !relogged {
                relogged = true;
                let _one_login = self.login_lock.lock().await;
                // Another request may have logged in while this one waited: use its token.
                if *self.token.read().await != token || self.login().await.is_ok() {
                    continue;
                }
            }
            return Ok(Answer { status, body });
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Answer, reqwest::Error> {
        self.send(reqwest::Method::GET, path, None, &[]).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Answer, reqwest::Error> {
        self.send(reqwest::Method::POST, path, Some(body), &[])
            .await
    }
}
