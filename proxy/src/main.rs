//! `chaos-proxy`: the data plane alone, a drop-in for `toxiproxy-server`.
//!
//! Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM) or a good `--check-config`; 2 when it
//! cannot start (bad config, address in use).

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chaos_proxy::{Registry, config};
use clap::{Parser, ValueEnum};

/// How long open connections get to close on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A Toxiproxy-compatible chaos proxy: byte toxics, typed events, Prometheus metrics.
#[derive(Debug, Parser)]
#[command(name = "chaos-proxy", version)]
struct Args {
    /// Address the control API binds to (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port of the control API.
    #[arg(long, default_value_t = 8474)]
    port: u16,
    /// Proxies and toxics to create at startup (TOML, or JSON such as Toxiproxy's config).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the config file and exit without starting anything.
    #[arg(long, requires = "config")]
    check_config: bool,
    /// Require `Authorization: Bearer TOKEN` on every API call.
    #[arg(
        long,
        env = "CHAOS_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    api_token: Option<String>,
    /// Seed for every probability draw of message faults, so a run can be replayed.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Log format on stderr (filter with RUST_LOG, default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chaos-proxy: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Raises the soft open-file limit to the hard one, as Go (and so toxiproxy-server) does at
/// startup: every proxied connection needs two descriptors, and 1,024 is a common default.
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "could not raise the open-file limit");
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let specs = match &args.config {
        Some(path) => config::load(path)?,
        None => Vec::new(),
    };
    if args.check_config {
        let toxics: usize = specs
            .iter()
            .filter_map(|s| s.toxics.as_ref())
            .map(Vec::len)
            .sum();
        println!("config OK: {} proxies, {toxics} toxics", specs.len());
        return Ok(());
    }
    if let Some(seed) = args.seed {
        chaos_proxy::message::seed(seed);
    }
    raise_open_file_limit();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the runtime")?;
    runtime.block_on(async move {
        let api_addr = (args.host, args.port);
        let listener = tokio::net::TcpListener::bind(api_addr)
            .await
            .with_context(|| format!("cannot bind the API to {}:{}", args.host, args.port))?;
        let registry = Arc::new(Registry::new());
        registry
            .populate(specs)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))
            .context("cannot create the configured proxies")?;
        if !args.host.is_loopback() && args.api_token.is_none() {
            tracing::warn!(
                "the control API listens on {} without a token: anyone who can reach it can \
                 break your traffic; set --api-token or CHAOS_API_TOKEN",
                args.host
            );
        }
        tracing::info!(
            api = %listener.local_addr()?,
            proxies = registry.proxies().len(),
            "chaos-proxy started"
        );
        let on_signal = Arc::clone(&registry);
        let shutdown = async move {
            wait_for_signal().await;
            tracing::info!("shutting down: removing toxics, closing connections");
            on_signal.shutdown(SHUTDOWN_GRACE).await;
        };
        chaos_proxy::serve_api(listener, registry, args.api_token, shutdown)
            .await
            .context("the control API failed")
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
