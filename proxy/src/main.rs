//! `chaos-proxy`: the data plane alone, a drop-in for `toxiproxy-server`. The command line lives
//! in the library ([`chaos_proxy::cli`]) so `chaos proxy ...` runs the same thing.
//!
//! Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM) or a good `--check-config`; 2 when it
//! cannot start (bad config, address in use).

use std::process::ExitCode;

use chaos_proxy::cli::{self, Args};
use clap::Parser;

fn main() -> ExitCode {
    let args = Args::parse();
    cli::init_logging(args.log_format);
    cli::main_with(args)
}
