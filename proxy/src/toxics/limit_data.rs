//! `limit_data`: closes the connection after a number of bytes.
//!
//! Attributes: `bytes`. Passes the first `bytes` bytes of the link, then closes the connection
//! gracefully once they are written (a chunk that crosses the limit is cut at it). Counted per
//! link from when the toxic reached it. Direction: the data counted.

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Chunk, ToxicAttributes, ToxicState, Verdict};

/// Attributes of `limit_data`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitDataConfig {
    /// How many bytes pass before the close.
    pub bytes: u64,
}

impl ToxicAttributes for LimitDataConfig {
    const NAME: &'static str = "limit_data";

    fn build(&self) -> Box<dyn ToxicState> {
        Box::new(LimitData {
            remaining: self.bytes,
        })
    }
}

/// The runtime `limit_data`.
struct LimitData {
    remaining: u64,
}

impl ToxicState for LimitData {
    fn on_chunk(&mut self, mut chunk: Chunk, _now: Instant, out: &mut Vec<Chunk>) -> Verdict {
        let len = chunk.data.len() as u64;
        if len < self.remaining {
            self.remaining -= len;
            out.push(chunk);
            return Verdict::Continue;
        }
        if self.remaining > 0 {
            chunk.data.truncate(self.remaining as usize);
            self.remaining = 0;
            out.push(chunk);
        }
        Verdict::Close
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn cuts_at_the_limit_and_closes() {
        let t0 = Instant::now();
        let mut toxic = LimitDataConfig { bytes: 5 }.build();
        let mut out = Vec::new();
        let chunk = |s: &'static [u8]| Chunk::new(Bytes::from_static(s), t0);
        assert_eq!(
            toxic.on_chunk(chunk(b"abc"), t0, &mut out),
            Verdict::Continue
        );
        assert_eq!(toxic.on_chunk(chunk(b"defg"), t0, &mut out), Verdict::Close);
        let passed: Vec<u8> = out.iter().flat_map(|c| c.data.to_vec()).collect();
        assert_eq!(passed, b"abcde");
    }
}
