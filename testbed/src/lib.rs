//! A compact stand-in of the residency scheduler (HTTP API, MCP server, Celery-protocol worker
//! over Postgres and Redis) for drills on one machine.
//!
//! Not built yet: this crate is filled by the testbed issue.
//!
//! # Layout
//!
//! - [`servers`]: throwaway real `redis-server` and PostgreSQL instances on free loopback ports,
//!   for tests and the runner's embedded default; killed and removed on drop.

pub mod servers;
