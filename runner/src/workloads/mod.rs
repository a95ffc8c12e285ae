//! The workloads: what load a scenario's `[[workloads]]` entries drive, one file per kind.
//!
//! A workload is built once per run ([`setup`]) from its scenario entry: it discovers the data
//! it needs from the database (direct, not through the proxy), then the load driver calls
//! [`Workload::run`] for each operation of the mix. After the load stops, [`Workload::settle`]
//! returns the workload's own checks: unknown outcomes settled against the database, answers
//! that turned out to be made up, tasks that never ran, calls that were amplified.
//!
//! | kind | file | operations |
//! |---|---|---|
//! | `swap` | [`swap`] | execute, validate, candidates, rollback, history |
//! | `resilience` | [`resilience`] | health, vulnerability, defense_level, utilization, burnout_rt, circuit_breakers, analysis |
//! | `mcp` | [`mcp`] | list_tools, call_read, call_write, chain, callback, error_path |
//! | `celery` | [`celery`] | enqueue |

pub mod celery;
pub mod mcp;
pub mod resilience;
pub mod swap;
pub mod weeks;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value};

use crate::context::Context;
use crate::outcome::Attempt;
use crate::report::CheckResult;

/// A running workload.
pub trait Workload: Send + Sync {
    /// Runs one operation of the mix (`op` is one of [`Kind::operations`]) for virtual user
    /// `user` (the user's index in the closed model; a running count in the open model) and
    /// says how it ended. Never panics on a bad answer: that is an outcome.
    fn run<'a>(&'a self, op: &'a str, user: u64) -> BoxFuture<'a, Attempt>;

    /// After the load stopped: the workload's own checks (see the module docs). `ctx` is the
    /// run's context.
    fn settle<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Vec<CheckResult>>;
}

/// A workload kind: its name, operations and what each operation depends on.
pub struct Kind {
    /// The `kind` in a scenario file.
    pub name: &'static str,
    /// Its operations, with the proxies (`postgres`, `redis`, `api`) each one's path crosses:
    /// what a fault on that proxy can touch. Operations that do not cross a faulted proxy are
    /// the blast-radius control group.
    pub operations: &'static [(&'static str, &'static [&'static str])],
    /// The options its entries may set.
    pub options: &'static [&'static str],
}

/// Every API call crosses `postgres` (authentication reads the token blacklist).
const DB: &[&str] = &["postgres"];
const DB_CACHE: &[&str] = &["postgres", "redis"];
const DB_BROKER: &[&str] = &["postgres", "redis"];
const MCP_LOCAL: &[&str] = &[];
const MCP_CALLBACK: &[&str] = &["api", "postgres", "redis"];

/// The kinds the runner knows.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "swap",
        operations: &[
            ("execute", DB),
            ("validate", DB),
            ("candidates", DB),
            ("rollback", DB),
            ("history", DB),
        ],
        options: &["pairs", "rollback_after", "candidate_pool", "complex"],
    },
    Kind {
        name: "resilience",
        operations: &[
            ("health", DB_CACHE),
            ("vulnerability", DB_CACHE),
            ("defense_level", DB),
            ("utilization", DB),
            ("burnout_rt", DB_CACHE),
            ("circuit_breakers", DB),
            ("analysis", DB_BROKER),
        ],
        options: &["residents", "include_n2"],
    },
    Kind {
        name: "mcp",
        operations: &[
            ("list_tools", MCP_LOCAL),
            ("call_read", MCP_LOCAL),
            ("call_write", MCP_CALLBACK),
            ("chain", MCP_CALLBACK),
            ("callback", MCP_CALLBACK),
            ("error_path", MCP_LOCAL),
        ],
        options: &["clients"],
    },
    Kind {
        name: "celery",
        operations: &[("enqueue", DB_BROKER)],
        options: &["drain_timeout"],
    },
];

/// The kind named `name`.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|kind| kind.name == name)
}

impl Kind {
    /// The proxies operation `op` crosses (empty for an unknown operation).
    pub fn touches(&self, op: &str) -> &'static [&'static str] {
        self.operations
            .iter()
            .find(|(name, _)| *name == op)
            .map_or(&[], |(_, touches)| *touches)
    }
}

/// Checks a scenario's workloads against [`KINDS`]: known kind, known operations, known
/// options. Every problem, each naming the workload and the field.
pub fn check(workloads: &[chaos_scenarios::Workload]) -> Vec<String> {
    let mut problems = Vec::new();
    for (index, workload) in workloads.iter().enumerate() {
        let at = format!("workloads[{index}] ({:?})", workload.name);
        let Some(kind) = kind(&workload.kind) else {
            let names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
            problems.push(format!(
                "{at}.kind: unknown workload kind {:?}; known: {}",
                workload.kind,
                names.join(", ")
            ));
            continue;
        };
        for op in workload.mix.keys() {
            if !kind.operations.iter().any(|(name, _)| name == op) {
                let names: Vec<&str> = kind.operations.iter().map(|(n, _)| *n).collect();
                problems.push(format!(
                    "{at}.mix.{op}: {:?} has no operation {op:?}; known: {}",
                    kind.name,
                    names.join(", ")
                ));
            }
        }
        for key in workload.options.keys() {
            if !kind.options.contains(&key.as_str()) {
                problems.push(format!(
                    "{at}.options.{key}: {:?} takes no option {key:?}; known: {}",
                    kind.name,
                    kind.options.join(", ")
                ));
            }
        }
    }
    problems
}

/// Builds the workload for a scenario entry (already [`check`]ed): discovers its data and
/// prepares its clients. An error says what could not be set up.
pub async fn setup(
    spec: &chaos_scenarios::Workload,
    ctx: &Arc<Context>,
) -> anyhow::Result<Arc<dyn Workload>> {
    let options = Options::new(&spec.name, &spec.options);
    let users = match spec.load {
        chaos_scenarios::Load::VirtualUsers(users) => users as usize,
        chaos_scenarios::Load::Rate(_) => 0,
    };
    Ok(match spec.kind.as_str() {
        "swap" => Arc::new(swap::SwapWorkload::setup(ctx, &options, users).await?),
        "resilience" => Arc::new(resilience::ResilienceWorkload::setup(ctx, &options).await?),
        "mcp" => Arc::new(mcp::McpWorkload::setup(ctx, &options, users).await?),
        "celery" => Arc::new(celery::CeleryWorkload::setup(ctx, &options).await?),
        other => anyhow::bail!("workload {:?}: unknown kind {other:?}", spec.name),
    })
}

/// A workload's `options`, with typed getters whose errors name the workload and option.
pub struct Options<'a> {
    /// The workload's name.
    pub workload: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Options<'a> {
    /// Wraps a workload's options.
    pub fn new(workload: &'a str, map: &'a Map<String, Value>) -> Options<'a> {
        Options { workload, map }
    }

    /// A non-negative integer option, or `default`.
    pub fn u64(&self, name: &str, default: u64) -> anyhow::Result<u64> {
        match self.map.get(name) {
            None => Ok(default),
            Some(value) => value.as_u64().ok_or_else(|| {
                anyhow::anyhow!(
                    "workload {:?}: options.{name} must be a non-negative integer, not {value}",
                    self.workload
                )
            }),
        }
    }

    /// A boolean option, or `default`.
    pub fn bool(&self, name: &str, default: bool) -> anyhow::Result<bool> {
        match self.map.get(name) {
            None => Ok(default),
            Some(value) => value.as_bool().ok_or_else(|| {
                anyhow::anyhow!(
                    "workload {:?}: options.{name} must be true or false, not {value}",
                    self.workload
                )
            }),
        }
    }

    /// A text option that must be one of `allowed`, or the first of them.
    pub fn choice(&self, name: &str, allowed: &[&'static str]) -> anyhow::Result<&'static str> {
        match self.map.get(name) {
            None => Ok(allowed[0]),
            Some(value) => value
                .as_str()
                .and_then(|text| allowed.iter().find(|a| **a == text).copied())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "workload {:?}: options.{name} must be one of {}, not {value}",
                        self.workload,
                        allowed.join(", ")
                    )
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kinds_operations_and_options_are_named() {
        let scenario = r#"
[scenario]
name = "x"
duration = "10s"
[[workloads]]
name = "a"
kind = "swapz"
rate = "1/s"
[[workloads]]
name = "b"
kind = "swap"
mix = { execute = 1, explode = 1 }
rate = "1/s"
options = { pairs = "disjoint", colour = "red" }
"#;
        let parsed: chaos_scenarios::Scenario = toml::from_str(scenario).unwrap();
        let problems = check(&parsed.workloads);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(
            problems[0].starts_with(r#"workloads[0] ("a").kind: unknown workload kind "swapz""#)
        );
        assert!(
            problems[1].starts_with(r#"workloads[1] ("b").mix.explode: "swap" has no operation"#)
        );
        assert!(
            problems[2].starts_with(r#"workloads[1] ("b").options.colour: "swap" takes no option"#)
        );
    }

    #[test]
    fn every_operation_says_what_it_crosses() {
        let swap = kind("swap").unwrap();
        assert_eq!(swap.touches("execute"), &["postgres"]);
        assert!(kind("mcp").unwrap().touches("list_tools").is_empty());
        assert!(kind("mcp").unwrap().touches("callback").contains(&"api"));
    }
}
