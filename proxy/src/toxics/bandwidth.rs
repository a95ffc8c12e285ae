//! `bandwidth`: limits throughput.
//!
//! Attributes: `rate` (KB/s, 1 KB = 1000 bytes; 0 = unlimited). Each chunk is written when the
//! bytes before it have drained at `rate`; a chunk larger than 100 ms worth of bytes is cut into
//! 100 ms pieces so the stream flows evenly, as in Toxiproxy. Direction: either. End of stream:
//! closes once the throttled bytes are written.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Chunk, ToxicAttributes, ToxicState, Verdict};

/// Attributes of `bandwidth`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BandwidthConfig {
    /// Throughput limit in KB/s (1000 bytes per second each); 0 = unlimited.
    pub rate: u64,
}

/// The highest rate accepted, in KB/s (1 TB/s): beyond it, throttling means nothing and the
/// arithmetic would overflow.
pub const MAX_RATE: u64 = 1_000_000_000;

impl ToxicAttributes for BandwidthConfig {
    const NAME: &'static str = "bandwidth";

    fn validate(&self) -> Result<(), String> {
        if self.rate > MAX_RATE {
            return Err(format!(
                "bandwidth rate must be at most {MAX_RATE} KB/s, got {}",
                self.rate
            ));
        }
        Ok(())
    }

    fn build(&self) -> Box<dyn ToxicState> {
        Box::new(Bandwidth {
            rate: self.rate,
            free_at: None,
        })
    }
}

/// The runtime `bandwidth`.
struct Bandwidth {
    /// Bytes per millisecond.
    rate: u64,
    /// When the bytes already scheduled have drained.
    free_at: Option<Instant>,
}

impl ToxicState for Bandwidth {
    fn on_chunk(&mut self, chunk: Chunk, _now: Instant, out: &mut Vec<Chunk>) -> Verdict {
        if self.rate == 0 {
            out.push(chunk);
            return Verdict::Continue;
        }
        let piece_len = (self.rate * 100) as usize;
        let mut data = chunk.data;
        while !data.is_empty() {
            let piece = data.split_to(piece_len.min(data.len()));
            let start = self.free_at.map_or(chunk.due, |free| free.max(chunk.due));
            let drain = Duration::from_nanos(piece.len() as u64 * 1_000_000 / self.rate);
            let due = start + drain;
            self.free_at = Some(due);
            out.push(Chunk {
                data: piece,
                read_at: chunk.read_at,
                due,
            });
        }
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn schedules_bytes_at_the_rate_in_100ms_pieces() {
        let t0 = Instant::now();
        // 10 KB/s = 10 bytes per ms: 2,500 bytes take 250 ms, in pieces of 1,000 bytes.
        let mut toxic = BandwidthConfig { rate: 10 }.build();
        let mut out = Vec::new();
        toxic.on_chunk(Chunk::new(Bytes::from(vec![0u8; 2500]), t0), t0, &mut out);
        let lens: Vec<_> = out.iter().map(|c| c.data.len()).collect();
        assert_eq!(lens, [1000, 1000, 500]);
        let dues: Vec<_> = out.iter().map(|c| (c.due - t0).as_millis()).collect();
        assert_eq!(dues, [100, 200, 250]);
        // The next chunk queues behind the first.
        toxic.on_chunk(Chunk::new(Bytes::from(vec![0u8; 10]), t0), t0, &mut out);
        assert_eq!((out[3].due - t0).as_millis(), 251);
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let t0 = Instant::now();
        let mut toxic = BandwidthConfig { rate: 0 }.build();
        let mut out = Vec::new();
        toxic.on_chunk(Chunk::new(Bytes::from(vec![0u8; 10]), t0), t0, &mut out);
        assert_eq!(out[0].due, t0);
    }
}
