//! The embedded default stack of `chaos drill`: everything on `127.0.0.1`, started for one run
//! and torn down after it.
//!
//! ```text
//!  workloads ──────────────────────────> testbed API ──> postgres proxy ──> PostgreSQL (throwaway)
//!  (direct)        MCP ──> api proxy ──┘     │     └──> redis proxy ────> Redis (throwaway)
//!                                           worker ──┘
//!  judge (invariants) ──> PostgreSQL, Redis (direct)
//!  runner ──> control API (in-process chaos_proxy::Registry, bearer token)
//! ```
//!
//! The workloads talk to the testbed's API and MCP server directly; only the testbed's own
//! dependencies (its database, its Redis cache and Celery broker, and the MCP server's calls back
//! to the API) cross the three proxies, `postgres`, `redis` and `api`, so a scenario's faults hit
//! what the real stack's dependencies would. The judge reads the truth from PostgreSQL and
//! Redis directly, and the proxy's injectors reach them through `injector_env`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chaos_proxy::Registry;
use chaos_proxy::message::Protocol;
use chaos_proxy::proxy::ProxySpec;
use chaos_testbed::config::Config;
use chaos_testbed::flaws::{Flaw, Flaws};
use chaos_testbed::mcp::{AllowedHosts, Credentials, McpConfig};
use chaos_testbed::seed::SeedOptions;
use chaos_testbed::servers::{PostgresServer, RedisServer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::target::{Profile, Secret, Target};

/// The seeded login user of the embedded testbed.
pub const ADMIN_USERNAME: &str = "admin";

/// How long the testbed may take to answer its readiness probe with 200 after it is started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The Celery visibility timeout of the embedded worker: a message whose worker died is put back
/// in its queue after this (short, so a drill that kills workers sees redelivery).
pub const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long each step of the teardown may take before it is cut short.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The readiness poll interval.
const POLL: Duration = Duration::from_millis(50);

/// What the embedded stack is started with.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The testbed's known flaws to switch on.
    pub flaws: Vec<Flaw>,
    /// Residents to seed.
    pub residents: usize,
    /// Adjunct faculty in the swap-candidate pool to seed.
    pub candidates: usize,
    /// Weeks of the faculty inpatient schedule (what swaps exchange; at least 52): a workload
    /// of N concurrent swaps holds 2N weeks at a time.
    pub fmit_weeks: usize,
    /// The seed's random seed (the same seed and week give the same data).
    pub seed: u64,
}

/// The addresses of the three proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyAddrs {
    /// `postgres` (protocol postgres), in front of PostgreSQL.
    pub postgres: SocketAddr,
    /// `redis` (protocol redis), in front of Redis (cache and Celery broker).
    pub redis: SocketAddr,
    /// `api` (protocol http), in front of the testbed's API (the MCP server's callbacks).
    pub api: SocketAddr,
}

/// A running embedded stack: throwaway PostgreSQL and Redis, an in-process proxy registry with
/// its control API, and the seeded testbed (API, MCP server, Celery worker). See the module docs.
///
/// [`EmbeddedStack::stop`] tears it down in order; dropping it without `stop` does a best-effort
/// teardown (tasks cancelled, servers stopped, which blocks the dropping thread for a moment).
pub struct EmbeddedStack {
    parts: Parts,
    api: SocketAddr,
    mcp: SocketAddr,
    control: SocketAddr,
    proxies: ProxyAddrs,
    token: String,
    password: String,
    database_url: String,
    redis_url: String,
}

/// What has been started so far; [`Parts::teardown`] (or its `Drop`) stops it, whatever is there.
#[derive(Default)]
struct Parts {
    testbed_shutdown: CancellationToken,
    testbed: Option<JoinHandle<anyhow::Result<()>>>,
    registry: Option<Arc<Registry>>,
    control_shutdown: CancellationToken,
    control: Option<JoinHandle<std::io::Result<()>>>,
    // The servers stop last: everything above talks to them.
    redis: Option<RedisServer>,
    postgres: Option<PostgresServer>,
}

impl EmbeddedStack {
    /// Starts PostgreSQL and Redis, the proxy registry and its control API (random bearer token),
    /// the `postgres`, `redis` and `api` proxies, migrates and seeds the database (directly), and
    /// serves the testbed with its dependencies behind the proxies; returns once the testbed's
    /// readiness probe answers 200 (at most [`READY_TIMEOUT`]). What was started is stopped
    /// again if a later step fails.
    ///
    /// A missing `initdb`/`postgres` or `redis-server` fails with a message naming the Debian
    /// package to install (`postgresql`, `redis-server`).
    pub async fn start(options: EmbeddedOptions) -> anyhow::Result<EmbeddedStack> {
        let mut parts = Parts::default();
        match boot(&mut parts, options).await {
            Ok(mut stack) => {
                stack.parts = parts;
                Ok(stack)
            }
            Err(err) => {
                parts.teardown().await;
                Err(err)
            }
        }
    }

    /// Where the run goes: the testbed's API and MCP directly, the seeded login, the in-process
    /// control API and its token, direct database and Redis URLs (also given to the proxy's
    /// injectors as `CHAOS_DATABASE_URL` and `CHAOS_REDIS_URL`).
    pub fn target(&self) -> Target {
        Target {
            profile: Profile::Testbed,
            api_url: format!("http://{}", self.api),
            username: ADMIN_USERNAME.to_owned(),
            password: Secret::new(&self.password),
            mcp_url: format!("http://{}{}", self.mcp, chaos_testbed::mcp::MCP_PATH),
            control_url: format!("http://{}", self.control),
            control_token: Some(Secret::new(&self.token)),
            database_url: Secret::new(&self.database_url),
            redis_url: Secret::new(&self.redis_url),
            injector_env: vec![
                (
                    "CHAOS_DATABASE_URL".to_owned(),
                    Secret::new(&self.database_url),
                ),
                ("CHAOS_REDIS_URL".to_owned(), Secret::new(&self.redis_url)),
            ],
        }
    }

    /// The three proxies' listen addresses.
    pub fn proxies(&self) -> ProxyAddrs {
        self.proxies
    }

    /// The in-process proxy registry (the control API serves the same one).
    pub fn registry(&self) -> Option<&Arc<Registry>> {
        self.parts.registry.as_ref()
    }

    /// Tears the stack down: stops the testbed (in-flight requests finish, bounded), shuts the
    /// registry down (every scenario aborted, injector locks released, toxics removed,
    /// connections closed), stops the control API, then stops Redis and PostgreSQL and removes
    /// their data. Each step is bounded; a step that overruns is cut short.
    pub async fn stop(mut self) {
        self.parts.teardown().await;
    }
}

async fn boot(parts: &mut Parts, options: EmbeddedOptions) -> anyhow::Result<EmbeddedStack> {
    // The servers start at once, each on a blocking thread; a failure drops the other one
    // (which stops it), also when this future is dropped mid-start.
    let postgres = tokio::task::spawn_blocking(PostgresServer::start);
    let redis = tokio::task::spawn_blocking(RedisServer::start);
    let (postgres, redis) = tokio::join!(postgres, redis);
    let postgres = postgres.context("the PostgreSQL start task")?;
    let redis = redis.context("the Redis start task")?;
    // Keep whichever started, so the teardown stops it; name every server that failed (both
    // may lack their package).
    let (postgres, redis) = match (postgres, redis) {
        (Ok(postgres), Ok(redis)) => (postgres, redis),
        (Err(pg_err), Err(redis_err)) => anyhow::bail!(
            "starting PostgreSQL for the embedded stack: {:#}\n\
             starting Redis for the embedded stack: {:#}",
            anyhow::Error::from(pg_err),
            anyhow::Error::from(redis_err)
        ),
        (Err(err), Ok(redis)) => {
            parts.redis = Some(redis);
            return Err(err).context("starting PostgreSQL for the embedded stack");
        }
        (Ok(postgres), Err(err)) => {
            parts.postgres = Some(postgres);
            return Err(err).context("starting Redis for the embedded stack");
        }
    };
    let database_url = postgres.url();
    let redis_url = redis.url();
    let postgres_addr = postgres.addr();
    let redis_addr = redis.addr();
    parts.postgres = Some(postgres);
    parts.redis = Some(redis);

    // The proxy registry and its control API.
    let registry = Arc::new(Registry::new());
    parts.registry = Some(Arc::clone(&registry));
    let token = uuid::Uuid::new_v4().to_string();
    let control_listener = bind("the proxy's control API").await?;
    let control = control_listener.local_addr()?;
    parts.control = Some(tokio::spawn(chaos_proxy::serve_api(
        control_listener,
        Arc::clone(&registry),
        Some(token.clone()),
        parts.control_shutdown.clone().cancelled_owned(),
    )));

    // The testbed's listeners first, so the api proxy knows its upstream.
    let api_listener = bind("the testbed's API").await?;
    let mcp_listener = bind("the testbed's MCP server").await?;
    let api = api_listener.local_addr()?;
    let mcp = mcp_listener.local_addr()?;

    let proxies = ProxyAddrs {
        postgres: create_proxy(&registry, "postgres", Protocol::Postgres, postgres_addr).await?,
        redis: create_proxy(&registry, "redis", Protocol::Redis, redis_addr).await?,
        api: create_proxy(&registry, "api", Protocol::Http, api).await?,
    };

    // Migrate and seed directly, not through the proxy.
    let password = uuid::Uuid::new_v4().simple().to_string();
    let direct = Config::new(database_url.clone(), redis_url.clone());
    let pool = chaos_testbed::db::connect_pool(&direct).context("the seeding pool")?;
    chaos_testbed::db::migrate(&pool)
        .await
        .context("migrating the embedded database")?;
    let seed = SeedOptions {
        residents: options.residents,
        candidates: options.candidates,
        fmit_weeks: options.fmit_weeks.max(52),
        seed: options.seed,
        admin_username: ADMIN_USERNAME.to_owned(),
        admin_password: password.clone(),
        password_cost: 4,
        ..SeedOptions::default()
    };
    chaos_testbed::seed::seed(&pool, &seed)
        .await
        .context("seeding the embedded database")?;
    pool.close();

    // The testbed, its dependencies behind the proxies.
    let proxied_database = replace_addr(&database_url, postgres_addr, proxies.postgres)?;
    let mut config = Config::new(proxied_database, format!("redis://{}/", proxies.redis));
    config.api_base_url = format!("http://{}", proxies.api);
    config.secret_key = uuid::Uuid::new_v4().simple().to_string();
    config.flaws = Flaws::new(options.flaws.iter().copied());
    let mut mcp_config = McpConfig::from_config(&config);
    mcp_config.credentials = Credentials::new(ADMIN_USERNAME, password.clone());
    mcp_config.allowed_hosts = AllowedHosts::Any;
    parts.testbed = Some(tokio::spawn(chaos_testbed::cli::serve_with(
        config,
        mcp_config,
        api_listener,
        mcp_listener,
        Some(VISIBILITY_TIMEOUT),
        parts.testbed_shutdown.clone(),
    )));
    wait_ready(parts, api).await?;

    Ok(EmbeddedStack {
        parts: Parts::default(),
        api,
        mcp,
        control,
        proxies,
        token,
        password,
        database_url,
        redis_url,
    })
}

async fn bind(what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .with_context(|| format!("binding {what} to 127.0.0.1:0"))
}

/// Creates proxy `name` on a free loopback port in front of `upstream`; returns its address.
async fn create_proxy(
    registry: &Registry,
    name: &str,
    protocol: Protocol,
    upstream: SocketAddr,
) -> anyhow::Result<SocketAddr> {
    let spec = ProxySpec {
        name: name.to_owned(),
        listen: chaos_proxy::proxy::DEFAULT_LISTEN.to_owned(),
        upstream: upstream.to_string(),
        enabled: true,
        protocol,
        toxics: None,
    };
    let proxy = registry
        .create(spec)
        .await
        .with_context(|| format!("creating the {name} proxy"))?;
    let listen = proxy.to_json()["listen"]
        .as_str()
        .and_then(|listen| listen.parse().ok())
        .with_context(|| format!("the {name} proxy has no listen address"))?;
    Ok(listen)
}

/// `url` with its `host:port` (`from`) replaced by `to`.
fn replace_addr(url: &str, from: SocketAddr, to: SocketAddr) -> anyhow::Result<String> {
    let from = format!("@{from}/");
    anyhow::ensure!(
        url.contains(&from),
        "the PostgreSQL URL has no {from}: {}",
        chaos_testbed::config::redact_url(url)
    );
    Ok(url.replacen(&from, &format!("@{to}/"), 1))
}

/// Polls `GET /api/v1/health/ready` every [`POLL`] until 200, at most [`READY_TIMEOUT`]; fails
/// early if the testbed stopped.
async fn wait_ready(parts: &mut Parts, api: SocketAddr) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()?;
    let url = format!("http://{api}/api/v1/health/ready");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(task) = parts.testbed.take_if(|task| task.is_finished()) {
            let outcome = task.await.context("the testbed task")?;
            outcome.context("the embedded testbed stopped while starting")?;
            anyhow::bail!("the embedded testbed stopped while starting");
        }
        let last = match http.get(&url).send().await {
            Ok(answer) if answer.status().is_success() => return Ok(()),
            Ok(answer) => {
                let status = answer.status();
                format!("{status}: {}", answer.text().await.unwrap_or_default())
            }
            Err(err) => format!("{:#}", anyhow::Error::from(err)),
        };
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the embedded testbed was not ready within {READY_TIMEOUT:?} (last answer: {last})"
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

impl Parts {
    async fn teardown(&mut self) {
        self.testbed_shutdown.cancel();
        // The testbed drains its requests first; a toxic holding one back is removed by the
        // registry's shutdown below, so the wait goes on after it.
        let mut testbed = self.testbed.take();
        if let Some(task) = testbed.as_mut() {
            if tokio::time::timeout(STOP_GRACE, &mut *task).await.is_ok() {
                testbed = None;
            }
        }
        if let Some(registry) = self.registry.take() {
            registry.shutdown(STOP_GRACE).await;
        }
        if let Some(mut task) = testbed {
            if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
                tracing::warn!("the embedded testbed did not stop in time; aborted");
                task.abort();
            }
        }
        self.control_shutdown.cancel();
        if let Some(mut task) = self.control.take() {
            if tokio::time::timeout(STOP_GRACE, &mut task).await.is_err() {
                task.abort();
            }
        }
        // Stopping a server waits for its process (up to its own grace): not on a runtime thread.
        let servers = (self.redis.take(), self.postgres.take());
        if servers.0.is_some() || servers.1.is_some() {
            let _ = tokio::task::spawn_blocking(move || drop(servers)).await;
        }
    }
}

impl Drop for Parts {
    /// Best effort when [`Parts::teardown`] did not run: cancel and abort what runs on the
    /// runtime; the servers stop as their handles drop (blocking this thread briefly).
    fn drop(&mut self) {
        self.testbed_shutdown.cancel();
        self.control_shutdown.cancel();
        if let Some(task) = self.testbed.take() {
            task.abort();
        }
        if let Some(registry) = self.registry.take() {
            registry.shutdown_token().cancel();
        }
        if let Some(task) = self.control.take() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_url_is_moved_to_the_proxy() {
        let from: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let to: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(
            replace_addr("postgres://postgres@127.0.0.1:5432/postgres", from, to).unwrap(),
            "postgres://postgres@127.0.0.1:40000/postgres"
        );
        assert!(replace_addr("postgres://postgres@127.0.0.1:1/postgres", from, to).is_err());
    }
}
