//! The `swap` workload (being written).

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{Options, Workload};
use crate::context::Context;
use crate::outcome::Attempt;
use crate::report::CheckResult;

/// The `swap` workload.
pub struct SwapWorkload {
    ctx: Arc<Context>,
}

impl SwapWorkload {
    /// Discovers the data and builds the workload.
    pub async fn setup(ctx: &Arc<Context>, options: &Options<'_>, users: usize) -> anyhow::Result<SwapWorkload> {
        let _ = (options, users);
        Ok(SwapWorkload { ctx: Arc::clone(ctx) })
    }
}

impl Workload for SwapWorkload {
    fn run<'a>(&'a self, op: &'a str, user: u64) -> BoxFuture<'a, Attempt> {
        let _ = (op, user, &self.ctx);
        Box::pin(async { Attempt::ok() })
    }

    fn settle<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Vec<CheckResult>> {
        let _ = ctx;
        Box::pin(async { Vec::new() })
    }
}
