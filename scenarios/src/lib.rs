//! The scenario language: which faults happen when, on which proxy, what load runs meanwhile,
//! and what "good enough" means (SLA thresholds and invariants).
//!
//! Not built yet: this crate is filled by the scenario-language issue. It holds no I/O and no
//! tokio, so the proxy and the runner can both depend on it.
