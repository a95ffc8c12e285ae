//! The `chaos-testbed` command line, in the library so that `chaos testbed ...` (the runner)
//! runs exactly the same commands with exactly the same arguments, and so the runner's embedded
//! stack can serve the testbed in-process ([`serve_on`]).
//!
//! ```text
//! chaos-testbed migrate                      apply the SQL migrations
//! chaos-testbed seed [--residents N] ...     replace the schedule with a generated one
//! chaos-testbed serve [--flaw NAME]...       serve the API, MCP and a Celery worker
//! chaos-testbed worker [--concurrency N]     run a Celery worker alone
//! ```
//!
//! [`Cli`] is the top-level parser of the `chaos-testbed` binary; [`TestbedArgs`] is the same
//! arguments as a [`clap::Args`], for another command's subcommand:
//!
//! ```no_run
//! use clap::{Parser, Subcommand};
//!
//! #[derive(Parser)]
//! struct Chaos {
//!     #[command(subcommand)]
//!     command: Commands,
//! }
//!
//! #[derive(Subcommand)]
//! enum Commands {
//!     /// Run the testbed
//!     Testbed(chaos_testbed::cli::TestbedArgs),
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let Commands::Testbed(args) = Chaos::parse().command;
//!     chaos_testbed::cli::init_tracing();
//!     chaos_testbed::cli::main_with(args)
//! }
//! ```
//!
//! Exit codes of [`main_with`]: 0 done (or shut down by SIGINT/SIGTERM), 1 failed (the message
//! says why); clap's own 2 for a bad command line. Nothing here installs a global tracing
//! subscriber except [`init_tracing`], which only a binary's `main` should call.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{
    self, Config, DEFAULT_API_BASE_URL, DEFAULT_API_LISTEN, DEFAULT_MCP_LISTEN, DEFAULT_REDIS_URL,
    redact_url,
};
use crate::flaws::{Flaw, Flaws};
use crate::resilience::Resilience;
use crate::seed::{self, SeedOptions};
use crate::state::AppState;
use crate::{api, celery, db, mcp};

/// The `chaos-testbed` command line (the binary's top-level parser).
#[derive(Parser)]
#[command(
    name = "chaos-testbed",
    version,
    about = "A compact stand-in of the residency scheduler (API, MCP, Celery) to break on drill day."
)]
pub struct Cli {
    /// The global flags and the subcommand.
    #[command(flatten)]
    pub args: TestbedArgs,
}

/// The arguments of `chaos-testbed` (global flags, then a subcommand), usable as the args of
/// another command's subcommand (`chaos testbed serve ...`).
#[derive(Args)]
pub struct TestbedArgs {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// PostgreSQL URL [default: postgres://scheduler:***@127.0.0.1:5432/residency_scheduler]
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// Redis URL of the cache
    #[arg(long, env = "REDIS_URL", global = true, hide_env_values = true, default_value = DEFAULT_REDIS_URL)]
    redis_url: String,
    /// Redis URL of the Celery broker and result backend [default: REDIS_URL]
    #[arg(long, env = "CELERY_BROKER_URL", global = true, hide_env_values = true)]
    celery_broker_url: Option<String>,
    /// Base URL the MCP server calls the API back at
    #[arg(long, env = "API_BASE_URL", global = true, default_value = DEFAULT_API_BASE_URL)]
    api_base_url: String,
    /// HS256 secret for the JWTs [default: a fixed development secret]
    #[arg(long, env = "SECRET_KEY", global = true, hide_env_values = true)]
    secret_key: Option<String>,
    /// Server-side statement_timeout of every database session, in milliseconds
    #[arg(
        long,
        env = "STATEMENT_TIMEOUT_MS",
        global = true,
        default_value_t = 5000
    )]
    statement_timeout_ms: u64,
    /// Server-side lock_timeout of every database session, in milliseconds
    #[arg(long, env = "LOCK_TIMEOUT_MS", global = true, default_value_t = 3000)]
    lock_timeout_ms: u64,
    /// Most database connections in the pool
    #[arg(long, env = "DB_POOL_SIZE", global = true, default_value_t = 30)]
    pool_size: usize,
    /// Switch a known flaw on (repeatable); all are off by default
    #[arg(long = "flaw", value_name = "NAME", value_enum, global = true)]
    flaws: Vec<Flaw>,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the migrations, then serve the HTTP API (and run a Celery worker, unless
    /// --no-worker) until SIGINT or SIGTERM
    Serve(ServeArgs),
    /// Apply the migrations, then replace the schedule with a generated one
    Seed(SeedArgs),
    /// Apply the SQL migrations and exit
    Migrate,
    /// Run a Celery worker (BRPOP the queues, run the tasks, write the results) until SIGINT or
    /// SIGTERM
    Worker(WorkerArgs),
}

#[derive(Args)]
struct WorkerArgs {
    /// Tasks run at once (each with prefetch 1)
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Queues to consume, comma-separated [default: the real stack's six]
    #[arg(long, value_delimiter = ',')]
    queues: Vec<String>,
    #[command(flatten)]
    visibility: VisibilityArgs,
}

#[derive(Args)]
struct VisibilityArgs {
    /// Seconds before an unacked message (its worker died) is put back in its queue (kombu's
    /// visibility timeout); lower it for drills that kill workers
    #[arg(
        long = "visibility-timeout",
        env = "CELERY_VISIBILITY_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 3600,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    seconds: u64,
}

impl VisibilityArgs {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

#[derive(Args)]
struct ServeArgs {
    /// Where the HTTP API listens
    #[arg(long, env = "API_LISTEN", default_value = DEFAULT_API_LISTEN)]
    listen: SocketAddr,
    /// Where the MCP server listens
    #[arg(long, env = "MCP_LISTEN", default_value = DEFAULT_MCP_LISTEN)]
    mcp_listen: SocketAddr,
    /// Do not run a Celery worker in this process (run `chaos-testbed worker` instead)
    #[arg(long)]
    no_worker: bool,
    #[command(flatten)]
    visibility: VisibilityArgs,
}

#[derive(Args)]
struct SeedArgs {
    /// Residents
    #[arg(long, default_value_t = 100)]
    residents: usize,
    /// Core faculty (they own the inpatient weeks)
    #[arg(long, default_value_t = 30)]
    faculty: usize,
    /// Adjunct faculty in the swap-candidate pool (e.g. 1000)
    #[arg(long, default_value_t = 0)]
    candidates: usize,
    /// Weeks of AM/PM blocks and assignments
    #[arg(long, default_value_t = 4)]
    weeks: usize,
    /// Weeks of the faculty inpatient schedule (half-days and Friday/Saturday calls)
    #[arg(long, default_value_t = 52)]
    fmit_weeks: usize,
    /// First day (moved back to its Monday) [default: this week's Monday]
    #[arg(long, value_name = "YYYY-MM-DD")]
    start: Option<NaiveDate>,
    /// Random seed: the same seed and start give the same data
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The login user's name
    #[arg(long, env = "API_USERNAME", default_value = "admin")]
    username: String,
    /// The login user's password
    #[arg(
        long,
        env = "API_PASSWORD",
        default_value = "admin",
        hide_env_values = true
    )]
    password: String,
    /// bcrypt cost of the password hash (4..=31)
    #[arg(long, default_value_t = 10)]
    password_cost: u32,
}

fn config_from(global: &Global) -> Config {
    let database_url = global
        .database_url
        .clone()
        .unwrap_or_else(|| config::DEFAULT_DATABASE_URL.to_owned());
    let mut config = Config::new(database_url, global.redis_url.clone());
    if let Some(broker) = &global.celery_broker_url {
        config.celery_broker_url = broker.clone();
    }
    config.api_base_url = global.api_base_url.trim_end_matches('/').to_owned();
    if let Some(secret) = &global.secret_key {
        config.secret_key = secret.clone();
    }
    config.statement_timeout = Duration::from_millis(global.statement_timeout_ms);
    config.lock_timeout = Duration::from_millis(global.lock_timeout_ms);
    config.pool_size = global.pool_size.max(1);
    config.flaws = Flaws::new(global.flaws.iter().copied());
    config
}

/// Installs the binary's log subscriber: stderr, filtered by `RUST_LOG` (default
/// `info,rmcp=warn`). For a binary's `main` only; panics if a global subscriber is already set.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rmcp=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Runs the command on a new Tokio runtime and turns the outcome into the exit code (errors are
/// printed as `chaos-testbed: ...` on stderr). Must not be called from inside a runtime (use
/// [`run`] there). Does not set up logging: see [`init_tracing`].
pub fn main_with(args: TestbedArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("chaos-testbed: starting the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chaos-testbed: {err:#}");
            ExitCode::from(1)
        }
    }
}

/// Runs the command (`serve` and `worker` until SIGINT or SIGTERM).
pub async fn run(args: TestbedArgs) -> anyhow::Result<()> {
    let mut config = config_from(&args.global);
    match args.command {
        Command::Migrate => {
            let pool = db::connect_pool(&config)?;
            let applied = db::migrate(&pool)
                .await
                .with_context(|| format!("migrating {}", redact_url(&config.database_url)))?;
            if applied.is_empty() {
                println!("migrations: up to date");
            } else {
                println!("migrations applied: {}", applied.join(", "));
            }
            Ok(())
        }
        Command::Seed(seed_args) => {
            let pool = db::connect_pool(&config)?;
            db::migrate(&pool)
                .await
                .with_context(|| format!("migrating {}", redact_url(&config.database_url)))?;
            let options = SeedOptions {
                residents: seed_args.residents,
                faculty: seed_args.faculty,
                candidates: seed_args.candidates,
                weeks: seed_args.weeks,
                fmit_weeks: seed_args.fmit_weeks,
                start: seed_args.start,
                seed: seed_args.seed,
                admin_username: seed_args.username,
                admin_password: seed_args.password,
                password_cost: seed_args.password_cost,
            };
            let summary = seed::seed(&pool, &options)
                .await
                .with_context(|| format!("seeding {}", redact_url(&config.database_url)))?;
            println!(
                "seeded from {}: {} residents, {} faculty, {} pool faculty, {} blocks, \
                 {} assignments, {} half-days, {} calls, {} absences; login user {:?}",
                summary.start,
                summary.residents,
                summary.faculty,
                summary.candidates,
                summary.blocks,
                summary.assignments,
                summary.half_day_assignments,
                summary.call_assignments,
                summary.absences,
                summary.admin_username
            );
            Ok(())
        }
        Command::Serve(serve_args) => {
            if args.global.secret_key.is_none() {
                tracing::warn!(
                    "SECRET_KEY is not set: tokens are signed with the development secret"
                );
            }
            config.api_listen = serve_args.listen;
            config.mcp_listen = serve_args.mcp_listen;
            let worker = (!serve_args.no_worker).then(|| serve_args.visibility.timeout());
            serve(config, worker).await
        }
        Command::Worker(worker_args) => {
            let pool = db::connect_pool(&config)?;
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            let options = WorkerOptions {
                concurrency: worker_args.concurrency,
                queues: worker_args.queues,
                visibility_timeout: worker_args.visibility.timeout(),
            };
            worker(&config, pool, options, shutdown).await
        }
    }
}

/// What the command line sets of a worker.
struct WorkerOptions {
    concurrency: usize,
    /// Empty: the real stack's six.
    queues: Vec<String>,
    visibility_timeout: Duration,
}

/// Runs a Celery worker with the built-in tasks (the resilience analysis reads `pool`) until
/// `shutdown`.
async fn worker(
    config: &Config,
    pool: db::Pool,
    options: WorkerOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut tasks = celery::TaskRegistry::with_builtins();
    tasks.connect_resilience(pool, config.db_deadline());
    let mut worker = celery::WorkerConfig::new(config.celery_broker_url.clone());
    worker.concurrency = options.concurrency.max(1);
    if !options.queues.is_empty() {
        worker.queues = options.queues;
    }
    worker.visibility_timeout = options.visibility_timeout;
    tracing::info!(
        broker = %redact_url(&config.celery_broker_url),
        visibility_timeout = ?worker.visibility_timeout,
        "worker started"
    );
    celery::run_worker(worker, tasks, shutdown)
        .await
        .context("running the Celery worker")
}

/// `chaos-testbed serve`: binds `config.api_listen` and `config.mcp_listen`, stops on SIGINT or
/// SIGTERM, and does the rest through [`serve_on`].
async fn serve(config: Config, worker: Option<Duration>) -> anyhow::Result<()> {
    let api = TcpListener::bind(config.api_listen)
        .await
        .with_context(|| format!("binding the API to {}", config.api_listen))?;
    let mcp = TcpListener::bind(config.mcp_listen)
        .await
        .with_context(|| format!("binding the MCP server to {}", config.mcp_listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    serve_on(config, api, mcp, worker, shutdown).await
}

/// Serves the API on `api` and MCP on `mcp` (already bound) until `shutdown` is cancelled; with
/// `worker` (its visibility timeout), runs a Celery worker in-process too. What `chaos-testbed
/// serve` does, minus binding and signals; the MCP server calls the API back at
/// `config.api_base_url` as [`mcp::McpConfig::from_config`] says (so with `API_USERNAME` and
/// `API_PASSWORD` from the environment; [`serve_with`] takes them explicitly).
///
/// Applies the migrations in the background (retrying every 2 s while the database is down; the
/// readiness probe says 503 meanwhile). `config.api_listen` and `config.mcp_listen` are replaced
/// by the listeners' addresses. Returns once the API has drained its in-flight requests and the
/// MCP server and the worker have stopped; an error of one of them stops the others.
pub async fn serve_on(
    config: Config,
    api: TcpListener,
    mcp: TcpListener,
    worker: Option<Duration>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mcp_config = mcp::McpConfig::from_config(&config);
    serve_with(config, mcp_config, api, mcp, worker, shutdown).await
}

/// [`serve_on`] with the MCP server's configuration given (its API login, call policy, allowed
/// hosts) instead of read from the environment.
pub async fn serve_with(
    mut config: Config,
    mcp_config: mcp::McpConfig,
    api: TcpListener,
    mcp: TcpListener,
    worker: Option<Duration>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.api_listen = api.local_addr().context("reading the API address")?;
    config.mcp_listen = mcp.local_addr().context("reading the MCP address")?;
    tracing::info!(
        database = %redact_url(&config.database_url),
        redis = %redact_url(&config.redis_url),
        broker = %redact_url(&config.celery_broker_url),
        flaws = ?config.flaws,
        "starting"
    );
    // Cancelled on every way out (an error included), so no task outlives this call.
    let shutdown = shutdown.child_token();
    let _stop_all = shutdown.clone().drop_guard();
    let state = AppState::new(config)?.shared();
    tokio::spawn(migrate_until_done(state.pool.clone(), shutdown.clone()));

    let worker = worker.map(|visibility_timeout| {
        tokio::spawn({
            let (config, pool, shutdown) =
                (state.config.clone(), state.pool.clone(), shutdown.clone());
            let options = WorkerOptions {
                concurrency: 1,
                queues: Vec::new(),
                visibility_timeout,
            };
            async move { self::worker(&config, pool, options, shutdown).await }
        })
    });
    let resilience = Resilience::new(&state);
    let mcp_server = mcp::server(
        &mcp_config,
        state.celery.clone(),
        resilience.breakers.clone(),
    )
    .context("building the MCP server")?;
    tracing::info!(
        addr = %state.config.mcp_listen,
        api = %redact_url(&mcp_config.api_base_url),
        "MCP listening"
    );
    let mcp_task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { mcp::serve(mcp, mcp_server, &mcp_config, shutdown).await }
    });

    tracing::info!(addr = %state.config.api_listen, "API listening");
    api::serve(
        api,
        api::router_with(state.clone(), resilience),
        shutdown.clone().cancelled_owned(),
    )
    .await
    .context("serving the API")?;
    shutdown.cancel();
    mcp_task
        .await
        .context("the MCP task")?
        .context("serving MCP")?;
    if let Some(worker) = worker {
        worker.await.context("the worker task")??;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Applies the migrations, retrying every 2 s while the database is unreachable, so the testbed
/// can start before PostgreSQL (the readiness probe says 503 meanwhile).
async fn migrate_until_done(pool: db::Pool, shutdown: CancellationToken) {
    loop {
        match db::migrate(&pool).await {
            Ok(applied) => {
                if !applied.is_empty() {
                    tracing::info!(?applied, "migrations applied");
                }
                return;
            }
            Err(err) => tracing::warn!(%err, "migrations failed; retrying in 2 s"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = terminate => tracing::info!("SIGTERM: shutting down"),
    }
    shutdown.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn visibility_of(args: &[&str]) -> Result<Duration, clap::Error> {
        let cli = Cli::try_parse_from(args)?;
        Ok(match cli.args.command {
            Command::Worker(args) => args.visibility.timeout(),
            Command::Serve(args) => args.visibility.timeout(),
            _ => unreachable!("only worker and serve take it"),
        })
    }

    #[test]
    fn the_visibility_timeout_is_a_flag_of_worker_and_serve() {
        if std::env::var_os("CELERY_VISIBILITY_TIMEOUT").is_none() {
            let hour = Duration::from_secs(3600);
            assert_eq!(visibility_of(&["chaos-testbed", "worker"]).unwrap(), hour);
            assert_eq!(visibility_of(&["chaos-testbed", "serve"]).unwrap(), hour);
        }
        assert_eq!(
            visibility_of(&["chaos-testbed", "worker", "--visibility-timeout", "30"]).unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            visibility_of(&["chaos-testbed", "serve", "--visibility-timeout", "5"]).unwrap(),
            Duration::from_secs(5)
        );
        assert!(visibility_of(&["chaos-testbed", "worker", "--visibility-timeout", "0"]).is_err());
    }

    #[test]
    fn the_cli_checks_out() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    /// The same arguments work under another command (`chaos testbed ...`), global flags
    /// before or after the inner subcommand.
    #[test]
    fn the_arguments_work_as_a_subcommand() {
        #[derive(Parser)]
        struct Outer {
            #[command(subcommand)]
            command: OuterCommand,
        }
        #[derive(Subcommand)]
        enum OuterCommand {
            /// The testbed
            Testbed(TestbedArgs),
        }
        use clap::CommandFactory as _;
        Outer::command().debug_assert();

        let parse = |args: &[&str]| {
            let OuterCommand::Testbed(args) = Outer::try_parse_from(args)?.command;
            Ok::<_, clap::Error>(args)
        };
        let args = parse(&[
            "chaos",
            "testbed",
            "--flaw",
            "no-row-lock",
            "serve",
            "--no-worker",
            "--listen",
            "127.0.0.1:9000",
            "--pool-size",
            "7",
        ])
        .unwrap();
        assert_eq!(args.global.pool_size, 7);
        assert_eq!(args.global.flaws, vec![Flaw::NoRowLock]);
        let Command::Serve(serve) = args.command else {
            panic!("serve expected");
        };
        assert!(serve.no_worker);
        assert_eq!(serve.listen, "127.0.0.1:9000".parse().unwrap());

        let args = parse(&["chaos", "testbed", "seed", "--residents", "3"]).unwrap();
        assert!(matches!(
            args.command,
            Command::Seed(SeedArgs { residents: 3, .. })
        ));
        // A subcommand is required, as at the top level.
        assert!(parse(&["chaos", "testbed"]).is_err());
        assert!(Cli::try_parse_from(["chaos-testbed"]).is_err());
    }
}
