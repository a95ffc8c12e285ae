//! The contract between a link and a protocol's framing.
//!
//! On a protocol-aware proxy each link owns a [`Framing`] for its direction. The link reads
//! bytes into a buffer and hands it over; the framing cuts every complete message off the
//! front, asks [`Decide`] about each request (the link runs the message faults of its chain),
//! and says what to do with the bytes as a list of [`Piece`]s. Unmatched messages are forwarded
//! as they came, consecutive ones in one piece, without decoding their bodies. Incomplete
//! bytes stay in the buffer for the next read.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::message::Action;
use crate::toxics::message_faults::Request;

/// Asks the link's message faults about one request: the action of the first fault that picks
/// it, with that fault's name.
pub type Decide<'d> = dyn FnMut(&Request<'_>) -> Option<(Action, String)> + 'd;

/// What to do with the bytes framing cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Forward these bytes.
    Forward(Bytes),
    /// Forward these bytes after holding them this long.
    Delayed(Bytes, Duration),
    /// Write these bytes back to the sender (Postgres's `N` to an SSLRequest, a refusal).
    Reply(Bytes),
    /// Close the connection here, after everything before; a fault of this name asked.
    Close(String),
    /// Swallow this and everything after it on this link; a fault of this name asked.
    Blackhole(String),
}

/// Framing broke: the bytes cannot be this protocol. The link closes that one connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FramingError(pub String);

/// One direction of one connection of a protocol-aware proxy.
pub trait Framing: Send + Sync {
    /// Cuts every complete message off the front of `buf` and pushes what to do onto `out`.
    fn frame(
        &mut self,
        buf: &mut BytesMut,
        decide: &mut Decide<'_>,
        out: &mut Vec<Piece>,
    ) -> Result<(), FramingError>;

    /// Whether everything framed so far has been passed on (nothing held, no message half
    /// streamed): bytes may be inserted into the stream here.
    fn at_boundary(&self) -> bool {
        true
    }
}

/// What becomes of one framed message.
#[derive(Debug)]
pub enum Outcome {
    /// Forward it unchanged (with its neighbours, in one piece).
    Keep,
    /// Forward these bytes instead.
    Replace(Bytes),
    /// Forward it after this long.
    Delay(Duration),
    /// Send these bytes back to the sender instead.
    Reply(Bytes),
    /// Send these bytes back to the sender, then close; a fault of this name asked.
    ReplyAndClose(Bytes, String),
    /// Close the connection here; a fault of this name asked.
    Close(String),
    /// Swallow this and everything after it; a fault of this name asked.
    Blackhole(String),
}

/// Collects consecutive forwarded messages at the front of a buffer into one piece.
#[derive(Debug, Default)]
pub struct Run {
    len: usize,
}

impl Run {
    /// Where the next unread message starts in the buffer.
    pub fn offset(&self) -> usize {
        self.len
    }

    /// The message of `len` bytes at [`Run::offset`] is forwarded unchanged.
    pub fn keep(&mut self, len: usize) {
        self.len += len;
    }

    /// Emits the kept messages as one piece.
    pub fn flush(&mut self, buf: &mut BytesMut, out: &mut Vec<Piece>) {
        if self.len > 0 {
            out.push(Piece::Forward(buf.split_to(self.len).freeze()));
            self.len = 0;
        }
    }

    /// Emits the kept messages, then takes the `len` bytes of the next message out of `buf`.
    pub fn take(&mut self, buf: &mut BytesMut, len: usize, out: &mut Vec<Piece>) -> Bytes {
        self.flush(buf, out);
        buf.split_to(len).freeze()
    }

    /// Carries out the outcome of the `len`-byte message at [`Run::offset`]. Returns true when
    /// framing must stop: the connection closes or is black-holed, and the rest of `buf` is
    /// dropped.
    pub fn apply(
        &mut self,
        outcome: Outcome,
        buf: &mut BytesMut,
        len: usize,
        out: &mut Vec<Piece>,
    ) -> bool {
        let last = match outcome {
            Outcome::Keep => {
                self.keep(len);
                return false;
            }
            Outcome::Replace(bytes) => {
                self.take(buf, len, out);
                out.push(Piece::Forward(bytes));
                return false;
            }
            Outcome::Delay(delay) => {
                let message = self.take(buf, len, out);
                out.push(Piece::Delayed(message, delay));
                return false;
            }
            Outcome::Reply(bytes) => {
                self.take(buf, len, out);
                out.push(Piece::Reply(bytes));
                return false;
            }
            Outcome::ReplyAndClose(bytes, toxic) => {
                self.flush(buf, out);
                out.push(Piece::Reply(bytes));
                Piece::Close(toxic)
            }
            Outcome::Close(toxic) => {
                self.flush(buf, out);
                Piece::Close(toxic)
            }
            Outcome::Blackhole(toxic) => {
                self.flush(buf, out);
                Piece::Blackhole(toxic)
            }
        };
        out.push(last);
        buf.clear();
        true
    }
}
