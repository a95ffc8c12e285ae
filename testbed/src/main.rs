//! `chaos-testbed`: the stand-in residency scheduler (see `docs/testbed.md`). The command line
//! lives in the library ([`chaos_testbed::cli`]) so `chaos testbed ...` runs the same thing.
//!
//! Exit codes: 0 done (or shut down by SIGINT/SIGTERM), 1 failed (the message says why),
//! 2 bad command line.

use std::process::ExitCode;

use chaos_testbed::cli::{self, Cli};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::init_tracing();
    cli::main_with(cli.args)
}
