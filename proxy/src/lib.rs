//! The data plane: a Toxiproxy-compatible chaos proxy, with protocol-aware faults (Postgres,
//! Redis, HTTP), injectors that act on the servers themselves, and a timeline executor that
//! carries out scenarios on schedule.
//!
//! Each proxy listens on one address, dials one upstream for every client, and forwards bytes
//! both ways through a chain of toxics per direction (latency, bandwidth, slow_close, timeout,
//! reset_peer, slicer, limit_data, noop). The control API serves Toxiproxy 2.12's shape so its
//! clients keep working, and adds typed events, Prometheus metrics, config files that declare
//! toxics, and a bearer token.
//!
//! # Layout
//! - [`api`]: the HTTP control API (axum), Toxiproxy's routes and error texts.
//! - [`catalogue`]: the fault types as the scenario language sees them (toxics and injectors).
//! - [`cli`]: the `chaos-proxy` command line (also `chaos proxy ...`).
//! - [`config`]: the startup config file (TOML or JSON), with file:line:column errors.
//! - `connection`: one client connection: dial, two links, close or reset.
//! - [`error`]: [`ApiError`], Toxiproxy's `{"error", "status"}`.
//! - [`events`]: typed events, logged, counted and streamed by one `emit()`.
//! - [`executor`]: scenario runs: a compiled timeline carried out on schedule, `/scenarios`.
//! - [`injectors`]: faults on the real server beside the stream (`pg_lock`, `pg_connections`,
//!   `redis_pause`).
//! - `link`: one direction of a connection: read, run the chain, queue, write.
//! - [`metrics`]: per-proxy counters and the Prometheus text.
//! - [`proxy`]: one proxy: listener, upstream, toxics, enable/disable.
//! - [`registry`]: every proxy by name; create, populate, reset, shutdown.
//! - `timer`: the sub-millisecond timer delayed chunks wait on.
//! - [`toxics`]: the toxic table, one file per toxic.

pub mod api;
pub mod catalogue;
pub mod cli;
pub mod config;
mod connection;
pub mod error;
pub mod events;
pub mod executor;
pub mod injectors;
mod link;
pub mod message;
pub mod metrics;
pub mod protocol;
pub mod proxy;
pub mod registry;
pub mod timer;
pub mod toxics;

use std::future::Future;
use std::sync::Arc;

pub use error::ApiError;
pub use registry::Registry;

/// Serves the control API on `listener` until `shutdown` completes.
pub async fn serve_api(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    token: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, api::router(registry, token))
        .with_graceful_shutdown(shutdown)
        .await
}
