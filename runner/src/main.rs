//! `chaos`: break a service stack on a schedule, drive real work through it, and say plainly
//! what held and what did not.
//!
//! ```text
//! chaos drill [SCENARIO] [--out DIR]        the main job, on the embedded default stack
//! chaos run SCENARIO --target FILE          the same against an existing stack
//! chaos validate SCENARIO...                check scenario files (and shipped names)
//! chaos list                                the shipped scenarios
//! chaos abort [--control URL] [RUN_ID]...   end runs on a proxy now (all running ones)
//! chaos proxy [FLAGS]                       the proxy alone (chaos-proxy's flags)
//! chaos testbed COMMAND                     the testbed alone (chaos-testbed's commands)
//! ```
//!
//! Exit codes: 0 every required SLA and check held; 1 one failed; 2 the run could not be done
//! (bad scenario or target, a stack that would not start, the proxy lost, Ctrl-C).

use std::path::PathBuf;
use std::process::ExitCode;

use chaos_runner::drill::{self, Request, Where};
use chaos_runner::library;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "chaos",
    version,
    about = "Chaos drills for a Postgres + Redis + Celery + API + MCP stack: faults on a schedule, real work through them, an honest verdict."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Judge(Judge),
    /// The data plane alone: a Toxiproxy-compatible chaos proxy (the same flags as
    /// `chaos-proxy`).
    Proxy(chaos_proxy::cli::Args),
    /// The stand-in residency scheduler alone (the same commands as `chaos-testbed`).
    Testbed(chaos_testbed::cli::TestbedArgs),
}

/// The commands that run or check scenarios.
#[derive(Subcommand)]
enum Judge {
    /// Run a scenario on the embedded default: throwaway PostgreSQL and Redis, the testbed and
    /// the proxy, all in this process, torn down after.
    Drill {
        /// A scenario file, or the name of a shipped one (`chaos list`).
        #[arg(default_value = library::DEFAULT)]
        scenario: String,
        /// Where the reports go [default: chaos-reports/<scenario>].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Switch a testbed flaw on (repeatable): a drill that must fail, to prove the judge can.
        #[arg(long = "flaw", value_name = "NAME", value_enum)]
        flaws: Vec<chaos_testbed::flaws::Flaw>,
        /// No live view.
        #[arg(long)]
        quiet: bool,
    },
    /// Run a scenario against an existing stack described by a target file.
    Run {
        /// A scenario file, or the name of a shipped one.
        scenario: String,
        /// The target file (TOML): API, MCP, proxy control API, direct database and Redis.
        #[arg(long, value_name = "FILE")]
        target: PathBuf,
        /// Where the reports go [default: chaos-reports/<scenario>].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// No live view.
        #[arg(long)]
        quiet: bool,
    },
    /// Check scenarios without running them; every problem with its file:line:column.
    Validate {
        /// Scenario files or shipped names.
        #[arg(required = true)]
        scenarios: Vec<String>,
    },
    /// List the shipped scenarios.
    List,
    /// The abort switch: end scenario runs on a proxy now (every fault removed, every injected
    /// lock released before the proxy answers).
    Abort {
        /// The proxy's control API.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8474")]
        control: String,
        /// Environment variable holding the control API's bearer token (unset: no token).
        #[arg(long, value_name = "VAR", default_value = "CHAOS_API_TOKEN")]
        token_env: String,
        /// Runs to abort; none: every running one.
        run_ids: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Proxy(args) => {
            chaos_proxy::cli::init_logging(args.log_format);
            return chaos_proxy::cli::main_with(args);
        }
        Command::Testbed(args) => {
            chaos_testbed::cli::init_tracing();
            return chaos_testbed::cli::main_with(args);
        }
        Command::Judge(command) => command,
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error,chaos_runner=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match command {
        Judge::Validate { scenarios } => validate(&scenarios),
        Judge::List => {
            for (name, text) in library::SHIPPED {
                let description = text
                    .lines()
                    .find_map(|l| l.strip_prefix("description = "))
                    .unwrap_or("\"\"")
                    .trim_matches('"');
                println!("{name:<28} {description}");
            }
            ExitCode::SUCCESS
        }
        Judge::Abort {
            control,
            token_env,
            run_ids,
        } => abort(&control, &token_env, run_ids),
        Judge::Drill {
            scenario,
            out,
            flaws,
            quiet,
        } => run(scenario, Where::Embedded { flaws }, out, quiet),
        Judge::Run {
            scenario,
            target,
            out,
            quiet,
        } => run(scenario, Where::File(target), out, quiet),
    }
}

fn abort(control: &str, token_env: &str, run_ids: Vec<String>) -> ExitCode {
    let token = std::env::var(token_env)
        .ok()
        .map(chaos_runner::target::Secret::new);
    let result = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            runtime.block_on(async move {
                let control = chaos_runner::control::Control::new(control, token)?;
                let ids = if run_ids.is_empty() {
                    control
                        .runs()
                        .await?
                        .into_iter()
                        .filter(|(_, _, state)| state == "running")
                        .map(|(id, _, _)| id)
                        .collect()
                } else {
                    for id in &run_ids {
                        let run = chaos_runner::control::RunHandle { id: id.clone() };
                        control.status(&run).await.map_err(|err| {
                            anyhow::anyhow!("no run {id:?} on the proxy ({err:#})")
                        })?;
                    }
                    run_ids
                };
                if ids.is_empty() {
                    println!("no scenario run is running");
                }
                for id in ids {
                    control
                        .abort(&chaos_runner::control::RunHandle { id: id.clone() })
                        .await?;
                    println!("aborted {id}: its faults are removed and its locks released");
                }
                anyhow::Ok(())
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chaos: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn validate(scenarios: &[String]) -> ExitCode {
    let mut bad = 0;
    for arg in scenarios {
        match library::resolve(arg).and_then(|source| drill::prepare(&source).map(|p| (source, p)))
        {
            Ok((source, prepared)) => println!(
                "{}: ok ({}, {} faults, {} workloads, {} SLAs, {} invariants)",
                source.origin,
                chaos_scenarios::duration::format(prepared.timeline.duration),
                prepared.scenario.faults.len(),
                prepared.scenario.workloads.len(),
                prepared.scenario.sla.len(),
                prepared.scenario.invariants.len()
            ),
            Err(err) => {
                bad += 1;
                eprintln!("{err}");
            }
        }
    }
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}

fn run(scenario: String, target: Where, out: Option<PathBuf>, quiet: bool) -> ExitCode {
    let source = match library::resolve(&scenario) {
        Ok(source) => source,
        Err(err) => {
            eprintln!("chaos: {err}");
            return ExitCode::from(2);
        }
    };
    let name = scenario
        .rsplit('/')
        .next()
        .unwrap_or(&scenario)
        .trim_end_matches(".toml")
        .to_owned();
    let out = out.unwrap_or_else(|| PathBuf::from("chaos-reports").join(name));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("chaos: starting the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async move {
        let interrupt = CancellationToken::new();
        tokio::spawn({
            let interrupt = interrupt.clone();
            async move {
                // SIGTERM (`docker stop`, a CI timeout) is Ctrl-C: the same clean way out.
                let mut terminate =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                let mut signalled = async || {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = async {
                            match terminate.as_mut() {
                                Some(signal) => { signal.recv().await; }
                                None => std::future::pending::<()>().await,
                            }
                        } => {}
                    }
                };
                signalled().await;
                eprintln!(
                    "chaos: interrupted: removing every fault, then writing the reports \
                     (again to quit at once; the proxy's dead-man TTL removes what is left)"
                );
                interrupt.cancel();
                signalled().await;
                eprintln!("chaos: interrupted twice: quitting");
                std::process::exit(2);
            }
        });
        let request = Request {
            source,
            target,
            out,
            live: !quiet,
        };
        match drill::run(request, interrupt).await {
            Ok((report, written)) => {
                let verdict = &report.verdict;
                eprintln!("{}: {}", report.scenario.name, verdict.summary);
                for failure in &verdict.failures {
                    eprintln!("  - {failure}");
                }
                for path in written {
                    eprintln!("  wrote {}", path.display());
                }
                ExitCode::from(verdict.exit_code.clamp(0, 2) as u8)
            }
            Err(err) => {
                eprintln!("chaos: {err:#}");
                ExitCode::from(2)
            }
        }
    })
}
