//! `timeout`: stops all data, then closes.
//!
//! Attributes: `timeout` (ms). While the toxic is on a link, every chunk is swallowed; `timeout`
//! ms after the toxic reached the connection, the connection is closed (0 = never close, the
//! data just stops). Toxiproxy restarts that clock on every chunk, so a chatty client is never
//! closed; we keep it fixed, which is what the attribute says. Removing the toxic closes a
//! connection that lost bytes to it (its stream is no longer whole, and a client waiting for a
//! reply to a swallowed request would wait forever); a connection that lost nothing goes on.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Chunk, ToxicAttributes, ToxicState, Verdict};

/// Attributes of `timeout`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TimeoutConfig {
    /// Milliseconds until the connection is closed; 0 = never.
    pub timeout: u64,
}

impl ToxicAttributes for TimeoutConfig {
    const NAME: &'static str = "timeout";

    fn build(&self) -> Box<dyn ToxicState> {
        Box::new(Timeout {
            close_at: (self.timeout > 0)
                .then(|| Instant::now() + Duration::from_millis(self.timeout)),
            swallowed: 0,
        })
    }
}

/// The runtime `timeout`.
struct Timeout {
    close_at: Option<Instant>,
    swallowed: u64,
}

impl ToxicState for Timeout {
    fn on_chunk(&mut self, chunk: Chunk, _now: Instant, _out: &mut Vec<Chunk>) -> Verdict {
        self.swallowed += chunk.data.len() as u64;
        Verdict::Continue
    }

    fn deadline(&self) -> Option<Instant> {
        self.close_at
    }

    fn on_deadline(&mut self, _now: Instant, _out: &mut Vec<Chunk>) -> Verdict {
        Verdict::Close
    }

    fn on_remove(&mut self, _out: &mut Vec<Chunk>) -> Verdict {
        if self.swallowed > 0 {
            Verdict::Close
        } else {
            Verdict::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn swallows_and_closes_only_if_it_lost_bytes() {
        let t0 = Instant::now();
        let mut quiet = TimeoutConfig { timeout: 0 }.build();
        assert_eq!(quiet.deadline(), None);
        assert_eq!(quiet.on_remove(&mut Vec::new()), Verdict::Continue);

        let mut toxic = TimeoutConfig { timeout: 100 }.build();
        assert!(toxic.deadline().is_some());
        let mut out = Vec::new();
        toxic.on_chunk(Chunk::new(Bytes::from_static(b"lost"), t0), t0, &mut out);
        assert!(out.is_empty());
        assert_eq!(toxic.on_remove(&mut out), Verdict::Close);
        assert_eq!(toxic.on_deadline(t0, &mut out), Verdict::Close);
    }
}
