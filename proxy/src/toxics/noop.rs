//! `noop`: passes every chunk through unchanged.
//!
//! Attributes: none. Direction: either. End of stream: closes at once.
//! Useful to check that a chain is wired, and as Toxiproxy's placeholder toxic.

use serde::{Deserialize, Serialize};

use super::{Chunk, ToxicAttributes, ToxicState, Verdict};

/// Attributes of `noop` (none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NoopConfig {}

impl ToxicAttributes for NoopConfig {
    const NAME: &'static str = "noop";

    fn build(&self) -> Box<dyn ToxicState> {
        Box::new(Noop)
    }
}

/// The runtime `noop`.
struct Noop;

impl ToxicState for Noop {
    fn on_chunk(
        &mut self,
        chunk: Chunk,
        _now: tokio::time::Instant,
        out: &mut Vec<Chunk>,
    ) -> Verdict {
        out.push(chunk);
        Verdict::Continue
    }
}
