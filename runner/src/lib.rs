//! The judge: the `chaos` command drives real work through the proxy, measures it, checks
//! invariants against the database and writes the verdict.
//!
//! Not built yet: this crate is filled by the runner issue.
