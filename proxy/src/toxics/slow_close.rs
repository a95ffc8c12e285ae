//! `slow_close`: holds the close.
//!
//! Attributes: `delay` (ms). When the input side ends, the output side is closed `delay`
//! milliseconds later; data passes unchanged. Direction: the side whose close is held (a
//! downstream `slow_close` delays the FIN the client sees after the server closed).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Chunk, ToxicAttributes, ToxicState, Verdict};

/// Attributes of `slow_close`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SlowCloseConfig {
    /// How long to hold the close, in milliseconds.
    pub delay: u64,
}

impl ToxicAttributes for SlowCloseConfig {
    const NAME: &'static str = "slow_close";

    fn build(&self) -> Box<dyn ToxicState> {
        Box::new(SlowClose {
            delay: Duration::from_millis(self.delay),
        })
    }
}

/// The runtime `slow_close`.
struct SlowClose {
    delay: Duration,
}

impl ToxicState for SlowClose {
    fn on_chunk(&mut self, chunk: Chunk, _now: Instant, out: &mut Vec<Chunk>) -> Verdict {
        out.push(chunk);
        Verdict::Continue
    }

    fn close_delay(&self) -> Duration {
        self.delay
    }
}
