//! The `chaos-proxy` command line, in the library so that `chaos proxy ...` (the runner) runs
//! exactly the same thing with exactly the same arguments.
//!
//! [`Args`] is the binary's top-level parser; `#[derive(Parser)]` also derives [`clap::Args`],
//! so the same struct is the args of another command's subcommand:
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
//!     /// Run the proxy alone
//!     Proxy(chaos_proxy::cli::Args),
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let Commands::Proxy(args) = Chaos::parse().command;
//!     chaos_proxy::cli::init_logging(args.log_format);
//!     chaos_proxy::cli::main_with(args)
//! }
//! ```
//!
//! Exit codes of [`main_with`]: 0 after a clean shutdown (SIGINT/SIGTERM) or a good
//! `--check-config`; 2 when it cannot start (bad config, address in use). Nothing here installs
//! a global log subscriber except [`init_logging`], which only a binary's `main` should call.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use crate::{Registry, config};

/// How long open connections get to close on shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A Toxiproxy-compatible chaos proxy: byte toxics, typed events, Prometheus metrics.
#[derive(Debug, Parser)]
#[command(name = "chaos-proxy", version)]
pub struct Args {
    /// Address the control API binds to (loopback unless told otherwise).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port of the control API.
    #[arg(long, default_value_t = 8474)]
    pub port: u16,
    /// Proxies and toxics to create at startup (TOML, or JSON such as Toxiproxy's config).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Check the config file and exit without starting anything.
    #[arg(long, requires = "config")]
    pub check_config: bool,
    /// Require `Authorization: Bearer TOKEN` on every API call.
    #[arg(
        long,
        env = "CHAOS_API_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub api_token: Option<String>,
    /// Seed for every probability draw of message faults, so a run can be replayed.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Log format on stderr (filter with RUST_LOG, default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the binary's log subscriber on stderr (`RUST_LOG`, default `info`; colours only on
/// a terminal). For a binary's `main` only; panics if a global subscriber is already set.
pub fn init_logging(format: LogFormat) {
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

/// Runs the proxy until SIGINT or SIGTERM (or checks the config) on a new Tokio runtime, and
/// turns the outcome into the exit code (errors are printed as `chaos-proxy: ...` on stderr).
/// Must not be called from inside a runtime (use [`run`] there). Does not set up logging: see
/// [`init_logging`].
pub fn main_with(args: Args) -> ExitCode {
    let outcome = tokio::runtime::Runtime::new()
        .context("cannot start the runtime")
        .and_then(|runtime| runtime.block_on(run(args)));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chaos-proxy: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Raises the soft open-file limit to the hard one, as Go (and so toxiproxy-server) does at
/// startup: every proxied connection needs two descriptors, and 1,024 is a common default.
pub fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "could not raise the open-file limit");
        }
    }
}

/// Loads the config file; with `--check-config`, prints what it declares and returns; otherwise
/// serves the control API and the configured proxies until SIGINT or SIGTERM, then removes every
/// toxic and closes the connections (up to [`SHUTDOWN_GRACE`]).
pub async fn run(args: Args) -> anyhow::Result<()> {
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
        crate::message::seed(seed);
    }
    raise_open_file_limit();
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
    crate::serve_api(listener, registry, args.api_token, shutdown)
        .await
        .context("the control API failed")
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Subcommand};

    #[test]
    fn the_cli_checks_out() {
        Args::command().debug_assert();
    }

    /// The same struct is the args of another command's subcommand (`chaos proxy ...`).
    #[test]
    fn the_arguments_work_as_a_subcommand() {
        #[derive(Parser)]
        struct Outer {
            #[command(subcommand)]
            command: OuterCommand,
        }
        #[derive(Subcommand)]
        enum OuterCommand {
            /// The proxy alone
            Proxy(Args),
        }
        Outer::command().debug_assert();
        let parse = |args: &[&str]| {
            let OuterCommand::Proxy(args) = Outer::try_parse_from(args)?.command;
            Ok::<_, clap::Error>(args)
        };
        let args = parse(&[
            "chaos",
            "proxy",
            "--port",
            "9474",
            "--log-format",
            "json",
            "--seed",
            "7",
        ])
        .unwrap();
        assert_eq!(args.port, 9474);
        assert_eq!(args.log_format, LogFormat::Json);
        assert_eq!(args.seed, Some(7));
        assert!(parse(&["chaos", "proxy", "--check-config"]).is_err());
        let outer = Outer::command();
        let proxy = outer.find_subcommand("proxy").unwrap();
        assert_eq!(
            proxy.get_about().map(ToString::to_string).as_deref(),
            Some("The proxy alone")
        );
    }
}
