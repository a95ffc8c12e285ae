//! The judge: the `chaos` command drives real work through the proxy, measures it, checks
//! invariants against the database and writes the verdict.
//!
//! ```text
//! scenario ──parse/compile──> timeline ──POST /scenarios──> proxy (faults on schedule)
//!     │                                        └── phase events ──> measure (per phase)
//!     └── workloads ──load──> target (API, MCP, Celery) ──> measure (HdrHistogram)
//!                                 invariants (database, Redis, HTTP) ──> verdict ──> reports
//! ```
//!
//! # Layout
//! - [`drill`]: one run from start to verdict (the orchestration).
//! - [`embedded`]: the embedded default stack (throwaway PostgreSQL and Redis, the testbed
//!   and the proxy in process).
//! - [`target`]: target files (`chaos run --target`), resolved [`target::Target`]s.
//! - [`context`]: what the parts of a run share (API client, direct database and Redis).
//! - [`control`]: the proxy's control API.
//! - [`library`]: the shipped scenarios, by name.
//! - [`workloads`]: one file per workload kind; [`load`]: closed and open load models.
//! - [`outcome`]: how an operation ended; [`measure`]: histograms per operation and phase.
//! - [`invariants`]: the scenario's checks; [`verdict`]: SLAs and graceful degradation.
//! - [`report`]: JSON, Markdown, HTML and JUnit; [`live`]: the terminal view.

pub mod context;
pub mod control;
pub mod drill;
pub mod embedded;
pub mod invariants;
pub mod library;
pub mod live;
pub mod load;
pub mod measure;
pub mod outcome;
pub mod report;
pub mod target;
pub mod verdict;
pub mod workloads;
