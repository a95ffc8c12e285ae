//! `pg_terminate`: ends live PostgreSQL sessions the way a failover or `pg_terminate_backend`
//! does (postgres proxies only).
//!
//! Attributes: `sqlstate` (default 57P01 admin_shutdown), `message`. When the toxic reaches a
//! session (when it is added, for every open session; when a session opens while it exists),
//! the proxy sends the client a FATAL ErrorResponse with that SQLSTATE at the next message
//! boundary of the server's stream, and closes the connection. `toxicity` picks which sessions.
//! Direction: downstream (it speaks to the client); `stream` is set accordingly.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::message_faults::check_sqlstate;
use super::noop::NoopConfig;
use super::{Direction, ToxicAttributes, ToxicState};
use crate::message::Protocol;
use crate::protocol::postgres::error_response;

/// Attributes of `pg_terminate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PgTerminateConfig {
    /// SQLSTATE of the FATAL error (57P01 admin_shutdown by default).
    pub sqlstate: String,
    /// The error message.
    pub message: String,
}

impl Default for PgTerminateConfig {
    fn default() -> Self {
        PgTerminateConfig {
            sqlstate: "57P01".into(),
            message:
                "terminating connection due to administrator command (injected by chaos-proxy)"
                    .into(),
        }
    }
}

impl ToxicAttributes for PgTerminateConfig {
    const NAME: &'static str = "pg_terminate";

    fn validate(&self) -> Result<(), String> {
        check_sqlstate(&self.sqlstate)
    }

    fn build(&self) -> Box<dyn ToxicState> {
        NoopConfig {}.build()
    }

    fn protocol(&self) -> Option<Protocol> {
        Some(Protocol::Postgres)
    }

    fn fixed_stream(&self) -> Option<Direction> {
        Some(Direction::Downstream)
    }

    fn terminate(&self) -> Option<Bytes> {
        Some(error_response("FATAL", &self.sqlstate, &self.message))
    }
}
