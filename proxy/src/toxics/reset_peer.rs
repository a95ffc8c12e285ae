//! `reset_peer`: resets the connection (TCP RST, "connection reset by peer").
//!
//! Attributes: `timeout` (ms). At the first chunk after the toxic reached the connection, the
//! chunk is held and a clock starts; `timeout` ms later both sockets are closed with SO_LINGER 0,
//! so both peers see a reset and unsent data is discarded (0 = at once). Removed before then, it
//! hands the held chunks back and the stream goes on. Direction: the data that triggers it.
//! It holds at most [`MAX_HELD`] bytes: a sender that fills that before the timeout is reset at
//! once (the held bytes are outside the link's queue, so nothing else would bound them).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Chunk, ToxicAttributes, ToxicState, Verdict};

/// The most bytes `reset_peer` holds before resetting early.
pub const MAX_HELD: usize = 4 * 1024 * 1024;

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
            held_bytes: 0,
        })
    }
}

/// The runtime `reset_peer`.
struct ResetPeer {
    timeout: Duration,
    reset_at: Option<Instant>,
    held: Vec<Chunk>,
    held_bytes: usize,
}

impl ToxicState for ResetPeer {
    fn on_chunk(&mut self, chunk: Chunk, now: Instant, _out: &mut Vec<Chunk>) -> Verdict {
        if self.timeout.is_zero() {
            return Verdict::Reset;
        }
        self.reset_at.get_or_insert(now + self.timeout);
        self.held_bytes += chunk.data.len();
        self.held.push(chunk);
        if self.held_bytes > MAX_HELD {
            return Verdict::Reset;
        }
        Verdict::Continue
    }

    fn deadline(&self) -> Option<Instant> {
        self.reset_at
    }

    fn on_deadline(&mut self, _now: Instant, _out: &mut Vec<Chunk>) -> Verdict {
        Verdict::Reset
    }

    fn on_remove(&mut self, out: &mut Vec<Chunk>) -> Verdict {
        self.held_bytes = 0;
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

        let mut flooded = ResetPeerConfig { timeout: 60_000 }.build();
        let big = Bytes::from(vec![0u8; MAX_HELD / 2 + 1]);
        let first = flooded.on_chunk(Chunk::new(big.clone(), t0), t0, &mut out);
        assert_eq!(first, Verdict::Continue);
        let second = flooded.on_chunk(Chunk::new(big, t0), t0, &mut out);
        assert_eq!(
            second,
            Verdict::Reset,
            "holding more than MAX_HELD resets early"
        );

        let mut at_once = ResetPeerConfig { timeout: 0 }.build();
        let verdict = at_once.on_chunk(Chunk::new(Bytes::from_static(b"a"), t0), t0, &mut out);
        assert_eq!(verdict, Verdict::Reset);
    }
}
