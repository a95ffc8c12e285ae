//! `reset_peer`: resets the connection (TCP RST, "connection reset by peer").
//!
//! Attributes: `timeout` (ms). At the first chunk after the toxic reached the connection, the
//! chunk is held and a clock starts; `timeout` ms later both sockets are closed with SO_LINGER 0,
//! so both peers see a reset and unsent data is discarded (0 = at once). Removed before then, it
//! hands the held chunks back and the stream goes on. Direction: the data that triggers it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Chunk, ToxicAttributes, ToxicState, Verdict};

/// Attributes of `reset_peer`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResetPeerConfig {
    /// Milliseconds from the first chunk to the reset.
    pub timeout: u64,
}

impl ToxicAttributes for ResetPeerConfig {
    const NAME: &'static str = "reset_peer";

    fn build(&self) -> Box<dyn ToxicState> {
        Box::new(ResetPeer {
            timeout: Duration::from_millis(self.timeout),
            reset_at: None,
            held: Vec::new(),
        })
    }
}

/// The runtime `reset_peer`.
struct ResetPeer {
    timeout: Duration,
    reset_at: Option<Instant>,
    held: Vec<Chunk>,
}

impl ToxicState for ResetPeer {
    fn on_chunk(&mut self, chunk: Chunk, now: Instant, _out: &mut Vec<Chunk>) -> Verdict {
        if self.timeout.is_zero() {
            return Verdict::Reset;
        }
        self.reset_at.get_or_insert(now + self.timeout);
        self.held.push(chunk);
        Verdict::Continue
    }

    fn deadline(&self) -> Option<Instant> {
        self.reset_at
    }

    fn on_deadline(&mut self, _now: Instant, _out: &mut Vec<Chunk>) -> Verdict {
        Verdict::Reset
    }

    fn on_remove(&mut self, out: &mut Vec<Chunk>) -> Verdict {
        out.append(&mut self.held);
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn holds_data_then_resets_and_gives_it_back_when_removed() {
        let t0 = Instant::now();
        let mut toxic = ResetPeerConfig { timeout: 50 }.build();
        assert_eq!(toxic.deadline(), None);
        let mut out = Vec::new();
        toxic.on_chunk(Chunk::new(Bytes::from_static(b"a"), t0), t0, &mut out);
        assert!(out.is_empty());
        assert_eq!(toxic.deadline(), Some(t0 + Duration::from_millis(50)));
        assert_eq!(toxic.on_deadline(t0, &mut out), Verdict::Reset);
        assert_eq!(toxic.on_remove(&mut out), Verdict::Continue);
        assert_eq!(out.len(), 1);

        let mut at_once = ResetPeerConfig { timeout: 0 }.build();
        let verdict = at_once.on_chunk(Chunk::new(Bytes::from_static(b"a"), t0), t0, &mut out);
        assert_eq!(verdict, Verdict::Reset);
    }
}
