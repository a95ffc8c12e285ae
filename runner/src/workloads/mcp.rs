//! The `mcp` workload (being written).

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{Options, Workload};
use crate::context::Context;
use crate::outcome::Attempt;
use crate::report::CheckResult;

/// The `mcp` workload.
pub struct McpWorkload {
    ctx: Arc<Context>,
}

impl McpWorkload {
    /// Discovers the data and builds the workload.
    pub async fn setup(ctx: &Arc<Context>, options: &Options<'_>, users: usize) -> anyhow::Result<McpWorkload> {
        let _ = (options, users);
        Ok(McpWorkload { ctx: Arc::clone(ctx) })
    }
}

impl Workload for McpWorkload {
    fn run<'a>(&'a self, op: &'a str, user: u64) -> BoxFuture<'a, Attempt> {
        let _ = (op, user, &self.ctx);
        Box::pin(async { Attempt::ok() })
    }

    fn settle<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Vec<CheckResult>> {
        let _ = ctx;
        Box::pin(async { Vec::new() })
    }
}
