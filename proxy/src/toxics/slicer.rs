//! `slicer`: splits data into small writes, as a real network often delivers it.
//!
//! Attributes: `average_size` (bytes, > 0), `size_variation` (bytes, < `average_size`), `delay`
//! (microseconds between pieces). A chunk is halved recursively at a point varied by
//! `size_variation` until every piece is at most `average_size + size_variation` bytes, as in
//! Toxiproxy, and the pieces are written `delay` us apart. Direction: either. The bytes arrive
//! whole and in order; only the write boundaries change.

use std::time::Duration;

use rand::RngExt;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Chunk, ToxicAttributes, ToxicState, Verdict};

/// Attributes of `slicer`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SlicerConfig {
    /// Average piece size in bytes.
    pub average_size: u64,
    /// +/- variation of the piece size in bytes.
    pub size_variation: u64,
    /// Pause between pieces in microseconds.
    pub delay: u64,
}

/// The largest `average_size` accepted (1 GiB): more than any chunk a link reads.
pub const MAX_SIZE: u64 = 1 << 30;

impl ToxicAttributes for SlicerConfig {
    const NAME: &'static str = "slicer";

    fn validate(&self) -> Result<(), String> {
        if self.average_size == 0 || self.average_size > MAX_SIZE {
            return Err(format!(
                "slicer average_size must be between 1 and {MAX_SIZE}, got {}",
                self.average_size
            ));
        }
        if self.size_variation >= self.average_size {
            return Err("slicer size_variation must be less than average_size".into());
        }
        Ok(())
    }

    fn build(&self) -> Box<dyn ToxicState> {
        Box::new(Slicer {
            config: self.clone(),
        })
    }
}

/// The runtime `slicer`.
struct Slicer {
    config: SlicerConfig,
}

impl Slicer {
    /// Cut points of `[start, end)`, pushed in order onto `cuts`.
    fn cut(&self, start: usize, end: usize, cuts: &mut Vec<usize>) {
        let average = self.config.average_size as usize;
        let variation = self.config.size_variation as usize;
        if end - start <= average + variation {
            cuts.push(end);
            return;
        }
        let half = start + (end - start) / 2;
        let mid = if variation == 0 {
            half
        } else {
            let offset = rand::rng().random_range(0..=2 * variation);
            (half + offset)
                .saturating_sub(variation)
                .clamp(start + 1, end - 1)
        };
        self.cut(start, mid, cuts);
        self.cut(mid, end, cuts);
    }
}

impl ToxicState for Slicer {
    fn on_chunk(&mut self, chunk: Chunk, _now: Instant, out: &mut Vec<Chunk>) -> Verdict {
        let mut cuts = Vec::new();
        self.cut(0, chunk.data.len(), &mut cuts);
        let gap = Duration::from_micros(self.config.delay);
        let mut data = chunk.data;
        let mut taken = 0;
        for (i, cut) in cuts.into_iter().enumerate() {
            out.push(Chunk {
                data: data.split_to(cut - taken),
                read_at: chunk.read_at,
                due: chunk.due + gap * i as u32,
            });
            taken = cut;
        }
        Verdict::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn pieces_are_bounded_ordered_and_whole() {
        let t0 = Instant::now();
        let config = SlicerConfig {
            average_size: 10,
            size_variation: 4,
            delay: 100,
        };
        let mut toxic = config.build();
        let input: Vec<u8> = (0..=255).collect();
        let mut out = Vec::new();
        toxic.on_chunk(Chunk::new(Bytes::from(input.clone()), t0), t0, &mut out);
        assert!(out.len() > 10);
        assert!(out.iter().all(|c| !c.data.is_empty() && c.data.len() <= 14));
        let joined: Vec<u8> = out.iter().flat_map(|c| c.data.to_vec()).collect();
        assert_eq!(joined, input);
        assert_eq!(out[2].due - t0, Duration::from_micros(200));
    }

    #[test]
    fn nonsense_sizes_are_refused() {
        assert!(
            SlicerConfig {
                average_size: 0,
                ..Default::default()
            }
            .validate()
            .is_err()
        );
        let config = SlicerConfig {
            average_size: 4,
            size_variation: 4,
            delay: 0,
        };
        assert!(config.validate().is_err());
    }
}
