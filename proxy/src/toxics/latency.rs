//! `latency`: delays each chunk.
//!
//! Attributes: `latency` (ms), `jitter` (ms). Each chunk is written `latency` +/- a uniform
//! random `jitter` after it was read, as in Toxiproxy: the delay counts from the read, not from
//! when the previous chunk left, so a steady stream is shifted, not slowed. Order is kept: a
//! chunk never overtakes the one before it. Direction: either. End of stream: closes once the
//! delayed chunks are written.

use std::time::Duration;

use rand::RngExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Chunk, ToxicAttributes, ToxicState, Verdict};

/// Attributes of `latency`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencyConfig {
    /// Added delay in milliseconds.
    pub latency: u64,
    /// Uniform +/- variation of the delay in milliseconds.
    pub jitter: u64,
}

impl ToxicAttributes for LatencyConfig {
    const NAME: &'static str = "latency";

    fn build(&self) -> Box<dyn ToxicState> {
        Box::new(Latency {
            config: self.clone(),
        })
    }
}

/// The runtime `latency`.
struct Latency {
    config: LatencyConfig,
}

impl Latency {
    fn delay(&self) -> Duration {
        let base = Duration::from_millis(self.config.latency);
        if self.config.jitter == 0 {
            return base;
        }
        let jitter = self.config.jitter as f64 * 1e-3;
        let offset = rand::rng().random_range(-jitter..=jitter);
        Duration::from_secs_f64((base.as_secs_f64() + offset).max(0.0))
    }
}

impl ToxicState for Latency {
    fn on_chunk(&mut self, mut chunk: Chunk, _now: Instant, out: &mut Vec<Chunk>) -> Verdict {
        chunk.due = chunk.due.max(chunk.read_at + self.delay());
        out.push(chunk);
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn delay_counts_from_the_read() {
        let t0 = Instant::now();
        let mut toxic = LatencyConfig {
            latency: 10,
            jitter: 0,
        }
        .build();
        let mut out = Vec::new();
        toxic.on_chunk(Chunk::new(Bytes::from_static(b"a"), t0), t0, &mut out);
        // A chunk that already waited 4 ms elsewhere only waits the remaining 6 ms.
        let mut late = Chunk::new(Bytes::from_static(b"b"), t0);
        late.due = t0 + Duration::from_millis(4);
        toxic.on_chunk(late, t0, &mut out);
        assert_eq!(out[0].due, t0 + Duration::from_millis(10));
        assert_eq!(out[1].due, t0 + Duration::from_millis(10));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let t0 = Instant::now();
        let mut toxic = LatencyConfig {
            latency: 10,
            jitter: 3,
        }
        .build();
        let mut out = Vec::new();
        for _ in 0..200 {
            toxic.on_chunk(Chunk::new(Bytes::from_static(b"x"), t0), t0, &mut out);
        }
        for chunk in out {
            let delay = chunk.due - t0;
            assert!(delay >= Duration::from_millis(7) && delay <= Duration::from_millis(13));
        }
    }
}
