//! A compact stand-in of the residency scheduler (HTTP API, MCP server, Celery-protocol worker
//! over Postgres and Redis) for drills on one machine.
//!
//! `docs/testbed.md` lists every endpoint, tool and flaw; `chaos-testbed --help` the commands.
//!
//! # Layout
//!
//! - [`api`]: the axum router at the real paths, FastAPI-style `{"detail"}` errors, the
//!   readiness probe, the server loop (TCP_NODELAY, graceful shutdown); other parts merge here.
//! - [`auth`]: login (JSON and form), HS256 JWTs, refresh, the token blacklist, [`auth::AuthUser`].
//! - [`celery`]: Celery protocol v2 on the kombu Redis transport: producer and worker.
//! - [`cli`]: the `chaos-testbed` command line (also `chaos testbed ...`), and [`cli::serve_on`],
//!   the whole server (API, MCP, worker) on given listeners for the runner's embedded stack.
//! - [`config`]: configuration by the real stack's names (`DATABASE_URL`, `REDIS_URL`, ...).
//! - [`db`]: the pool (statement and lock timeouts), migrations, database errors.
//! - [`flaws`]: the known-flaw switches (`--flaw NAME`).
//! - [`mcp`]: the MCP server (rmcp, Streamable HTTP at `POST /mcp`): the real stack's tools, the
//!   API callbacks, the `fake-fallback`/`retry-storm` flaws.
//! - [`resilience`]: contingency, defense level, utilization, burnout Rt, circuit breakers, cache.
//! - [`seed`]: a realistic, deterministic schedule (`chaos-testbed seed`).
//! - [`servers`]: throwaway real `redis-server` and PostgreSQL instances on free loopback ports,
//!   for tests and the runner's embedded default; killed and removed on drop.
//! - [`state`]: [`state::AppState`], what every route shares.
//! - [`swaps`]: faculty week swaps (validate, execute, rollback, history) and swap candidates.

pub mod api;
pub mod auth;
pub mod celery;
pub mod cli;
pub mod config;
pub mod db;
mod errors;
pub mod flaws;
pub mod mcp;
pub mod resilience;
pub mod seed;
pub mod servers;
pub mod state;
pub mod swaps;
