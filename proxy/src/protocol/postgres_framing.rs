//! PostgreSQL on a link: frame both directions, keep the session plaintext, realise message
//! faults.
//!
//! Frontend (client -> server):
//! - `SSLRequest` / `GSSENCRequest` are answered `N` by the proxy and not forwarded, so the
//!   session stays plaintext and framable; `CancelRequest` passes through.
//! - A simple `Query` picked by `pg_error` is rewritten into
//!   `DO $chaos$ BEGIN RAISE EXCEPTION USING ERRCODE = '...' ... END $chaos$`: the server itself
//!   raises the SQLSTATE, so the client gets a normal ErrorResponse, the transaction is in
//!   exactly the state a real error leaves (`ReadyForQuery` `E` inside a transaction block), and
//!   a following ROLLBACK works.
//! - In the extended protocol, the SQL of an `Execute` is found through its portal's `Bind` and
//!   the statement's `Parse`. A picked `Execute` is replaced by `Parse`/`Bind`/`Execute` of that
//!   DO statement on the unnamed statement and portal; the server raises, then discards the rest
//!   of the batch up to `Sync` as after any error. The backend side removes the
//!   `ParseComplete`/`BindComplete` pair this adds, so the client sees what a failing Execute
//!   gives: ErrorResponse, then ReadyForQuery.
//! - `pg_refuse` answers a StartupMessage with a FATAL ErrorResponse and closes.
//!
//! The two sides share which batches carry an injected Execute, numbering batches by the
//! messages that end in a `ReadyForQuery` (startup, Query, Sync, FunctionCall).
//! Limitation: if a real error earlier in the same batch makes the server skip the injected
//! Execute, and the real error itself came right after the client's own Parse and Bind, the
//! backend side takes that pair for ours and drops it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::framing::{Decide, Framing, FramingError, Piece, Run};
use super::postgres::{
    Backend, Frontend, FrontendFramer, bind, error_response, execute, frontend_tag, parse,
    parse_backend, query, raise_sql, typed_header,
};
use crate::message::Action;
use crate::toxics::message_faults::Request;

/// Tags of the frontend messages that end in a ReadyForQuery besides Query and Sync.
const FUNCTION_CALL: u8 = b'F';

/// Messages larger than this (DataRow, CopyData, a Bind with big parameters) are forwarded as
/// they arrive instead of being buffered whole: a message may be up to 1 GiB. Only the
/// frontend's Query and Parse, whose SQL the matchers read, are always framed whole.
pub const STREAM_ABOVE: usize = 64 * 1024;

/// Forwards the rest of a streamed message: returns false when more bytes are needed.
fn pass(remaining: &mut usize, buf: &BytesMut, run: &mut Run) -> bool {
    let n = (*remaining).min(buf.len() - run.offset());
    run.keep(n);
    *remaining -= n;
    *remaining == 0
}

/// The portal and statement names at the start of a Bind body, if the prefix holds them.
fn bind_names(message: &[u8]) -> Option<(String, String)> {
    let body = message.get(5..)?;
    let mut names = body.splitn(3, |&b| b == 0);
    let portal = names.next()?;
    let statement = names.next()?;
    names.next()?;
    Some((
        String::from_utf8_lossy(portal).into_owned(),
        String::from_utf8_lossy(statement).into_owned(),
    ))
}

/// Which batches carry an injected Execute whose ParseComplete/BindComplete must be removed.
///
/// Batches are numbered in the order their ReadyForQuery comes back (startup, each Query, Sync
/// and FunctionCall): the frontend counts what it sends, the backend what it receives, so the
/// common case (nothing injected) costs the backend one atomic load per message, no lock.
#[derive(Debug)]
struct Batches {
    /// Numbers of batches with an injection, oldest first.
    injected: Mutex<VecDeque<u64>>,
    /// The oldest number in `injected`, or `u64::MAX`.
    next: AtomicU64,
}

impl Default for Batches {
    fn default() -> Self {
        Batches {
            injected: Mutex::new(VecDeque::new()),
            next: AtomicU64::new(u64::MAX),
        }
    }
}

impl Batches {
    fn mark(&self, batch: u64) {
        let mut injected = self.injected.lock().unwrap_or_else(|e| e.into_inner());
        injected.push_back(batch);
        self.next.store(injected[0], Ordering::Release);
    }

    /// Whether `batch` still waits for its injected pair to be removed.
    fn pending(&self, batch: u64) -> bool {
        self.next.load(Ordering::Acquire) == batch
    }

    /// `batch` is done with (its pair was removed, or its ReadyForQuery came).
    fn done(&self, batch: u64) {
        if self.next.load(Ordering::Acquire) > batch {
            return;
        }
        let mut injected = self.injected.lock().unwrap_or_else(|e| e.into_inner());
        while injected.front().is_some_and(|b| *b <= batch) {
            injected.pop_front();
        }
        self.next.store(
            injected.front().copied().unwrap_or(u64::MAX),
            Ordering::Release,
        );
    }
}

/// Records `value` under `key` unless it is already there (most clients reuse names, so this
/// allocates only when something changed).
fn remember(map: &mut HashMap<String, String>, key: &str, value: &str) {
    if map.get(key).is_none_or(|v| v != value) {
        map.insert(key.to_owned(), value.to_owned());
    }
}

/// The framings of both directions of one Postgres connection.
pub fn framings() -> (PgFrontend, PgBackend) {
    let batches = Arc::new(Batches::default());
    (
        PgFrontend {
            framer: FrontendFramer::new(),
            statements: HashMap::new(),
            portals: HashMap::new(),
            injected: false,
            sent: 0,
            streaming: 0,
            batches: Arc::clone(&batches),
        },
        PgBackend {
            held: Vec::new(),
            received: 0,
            streaming: 0,
            batches,
        },
    )
}

/// The client -> server side.
pub struct PgFrontend {
    framer: FrontendFramer,
    /// Prepared statement name -> SQL (from Parse).
    statements: HashMap<String, String>,
    /// Portal name -> statement name (from Bind).
    portals: HashMap<String, String>,
    /// The batch being sent (up to the next Sync) carries an injected Execute.
    injected: bool,
    /// Batches sent so far (messages that end in a ReadyForQuery).
    sent: u64,
    /// Bytes of a large message still to forward unframed.
    streaming: usize,
    batches: Arc<Batches>,
}

impl PgFrontend {
    /// A message that ends in a ReadyForQuery was sent; `injected` if its batch carries an
    /// injected Execute.
    fn batch(&mut self, injected: bool) {
        if injected {
            self.batches.mark(self.sent);
        }
        self.sent += 1;
    }

    /// Starts streaming a large message at the front of the unread bytes, if it is one: returns
    /// false to frame it whole instead.
    fn stream_large(&mut self, rest: &[u8]) -> Result<bool, FramingError> {
        if self.framer.in_startup() {
            return Ok(false);
        }
        let header = typed_header(rest).map_err(|e| FramingError(format!("postgres: {e}")))?;
        let Some((tag, total)) = header else {
            return Ok(false);
        };
        let framed_whole = tag == frontend_tag::QUERY || tag == frontend_tag::PARSE;
        if total <= STREAM_ABOVE || framed_whole {
            return Ok(false);
        }
        if tag == frontend_tag::BIND {
            // Keep the portal map right; when the names are not in the first bytes, forget
            // every portal rather than match an Execute against the wrong statement.
            match bind_names(rest) {
                Some((portal, statement)) => {
                    self.portals.insert(portal, statement);
                }
                None => self.portals.clear(),
            }
        }
        self.streaming = total;
        Ok(true)
    }
}

enum Outcome {
    Keep,
    Replace(Bytes),
    Delay(Duration),
    Reply(Bytes),
    ReplyAndClose(Bytes, String),
    Close(String),
    Blackhole(String),
}

/// What a statement-level action becomes; `raise` builds the replacement for an error.
fn statement_outcome(
    decision: Option<(Action, String)>,
    raise: impl FnOnce(&str) -> Bytes,
) -> (Outcome, bool) {
    match decision {
        None => (Outcome::Keep, false),
        Some((action, toxic)) => match action {
            Action::Delay(delay) => (Outcome::Delay(delay), false),
            Action::Error { code, message } => match raise_sql(&code, &message) {
                Ok(sql) => (Outcome::Replace(raise(&sql)), true),
                Err(_) => (Outcome::Keep, false),
            },
            Action::Drop => (Outcome::Close(toxic), false),
            Action::Blackhole => (Outcome::Blackhole(toxic), false),
            Action::LoseWrite | Action::Refuse { .. } => (Outcome::Keep, false),
        },
    }
}

impl Framing for PgFrontend {
    fn frame(
        &mut self,
        buf: &mut BytesMut,
        decide: &mut Decide<'_>,
        out: &mut Vec<Piece>,
    ) -> Result<(), FramingError> {
        let mut run = Run::default();
        loop {
            if self.streaming > 0 && !pass(&mut self.streaming, buf, &mut run) {
                break;
            }
            let rest = &buf[run.offset()..];
            if self.stream_large(rest)? {
                continue;
            }
            let (message, len) = match self.framer.next(rest) {
                Ok(Some(found)) => found,
                Ok(None) => break,
                Err(e) => return Err(FramingError(format!("postgres: {e}"))),
            };
            let outcome = match message {
                Frontend::SslRequest | Frontend::GssEncRequest => {
                    Outcome::Reply(Bytes::from_static(b"N"))
                }
                Frontend::Startup { .. } => match decide(&Request::PgStartup) {
                    Some((Action::Refuse { code, message }, toxic)) => {
                        Outcome::ReplyAndClose(error_response("FATAL", &code, &message), toxic)
                    }
                    _ => {
                        self.batch(false);
                        Outcome::Keep
                    }
                },
                Frontend::Query { sql } => {
                    self.batch(false);
                    let decision = decide(&Request::PgStatement { sql });
                    statement_outcome(decision, query).0
                }
                Frontend::Parse { statement, sql } => {
                    remember(&mut self.statements, statement, sql);
                    Outcome::Keep
                }
                Frontend::Bind { portal, statement } => {
                    remember(&mut self.portals, portal, statement);
                    Outcome::Keep
                }
                Frontend::Execute { portal } => {
                    let sql = self
                        .portals
                        .get(portal)
                        .and_then(|s| self.statements.get(s));
                    match sql {
                        None => Outcome::Keep,
                        Some(sql) => {
                            let decision = decide(&Request::PgStatement { sql });
                            let (outcome, injected) = statement_outcome(decision, |sql| {
                                let mut bytes = BytesMut::new();
                                bytes.extend_from_slice(&parse("", sql));
                                bytes.extend_from_slice(&bind("", ""));
                                bytes.extend_from_slice(&execute(""));
                                bytes.freeze()
                            });
                            self.injected |= injected;
                            outcome
                        }
                    }
                }
                Frontend::Sync => {
                    let injected = std::mem::take(&mut self.injected);
                    self.batch(injected);
                    Outcome::Keep
                }
                Frontend::Other { tag: FUNCTION_CALL } => {
                    self.batch(false);
                    Outcome::Keep
                }
                _ => Outcome::Keep,
            };
            match outcome {
                Outcome::Keep => run.keep(len),
                Outcome::Replace(bytes) => {
                    run.take(buf, len, out);
                    out.push(Piece::Forward(bytes));
                }
                Outcome::Delay(delay) => {
                    let message = run.take(buf, len, out);
                    out.push(Piece::Delayed(message, delay));
                }
                Outcome::Reply(bytes) => {
                    run.take(buf, len, out);
                    out.push(Piece::Reply(bytes));
                }
                Outcome::ReplyAndClose(bytes, toxic) => {
                    run.flush(buf, out);
                    buf.clear();
                    out.push(Piece::Reply(bytes));
                    out.push(Piece::Close(toxic));
                    return Ok(());
                }
                Outcome::Close(toxic) => {
                    run.flush(buf, out);
                    buf.clear();
                    out.push(Piece::Close(toxic));
                    return Ok(());
                }
                Outcome::Blackhole(toxic) => {
                    run.flush(buf, out);
                    buf.clear();
                    out.push(Piece::Blackhole(toxic));
                    return Ok(());
                }
            }
        }
        run.flush(buf, out);
        Ok(())
    }
}

/// The server -> client side: removes the ParseComplete/BindComplete pair an injected Execute
/// adds (held back until the next message shows whether it is ours).
pub struct PgBackend {
    /// ParseComplete, then BindComplete, held while a batch waits for its injected pair.
    held: Vec<(Backend, Bytes)>,
    /// ReadyForQuery messages received so far: the number of the batch now answering.
    received: u64,
    /// Bytes of a large message still to forward unframed.
    streaming: usize,
    batches: Arc<Batches>,
}

impl PgBackend {
    fn release(&mut self, out: &mut Vec<Piece>) {
        for (_, bytes) in self.held.drain(..) {
            out.push(Piece::Forward(bytes));
        }
    }
}

impl Framing for PgBackend {
    fn at_boundary(&self) -> bool {
        self.streaming == 0 && self.held.is_empty()
    }

    fn frame(
        &mut self,
        buf: &mut BytesMut,
        _decide: &mut Decide<'_>,
        out: &mut Vec<Piece>,
    ) -> Result<(), FramingError> {
        let mut run = Run::default();
        loop {
            if self.streaming > 0 && !pass(&mut self.streaming, buf, &mut run) {
                break;
            }
            let rest = &buf[run.offset()..];
            let header = typed_header(rest).map_err(|e| FramingError(format!("postgres: {e}")))?;
            if let Some((_, total)) = header.filter(|(_, total)| *total > STREAM_ABOVE) {
                // No message the framing acts on is large: stream it, after anything held.
                run.flush(buf, out);
                self.release(out);
                self.streaming = total;
                continue;
            }
            let (message, len) = match parse_backend(rest) {
                Ok(Some(found)) => found,
                Ok(None) => break,
                Err(e) => return Err(FramingError(format!("postgres: {e}"))),
            };
            if !self.batches.pending(self.received) {
                if matches!(message, Backend::ReadyForQuery { .. }) {
                    self.received += 1;
                }
                run.keep(len);
                continue;
            }
            // This batch carries an injected Execute: hold ParseComplete, BindComplete.
            let held_kinds: Vec<&Backend> = self.held.iter().map(|(kind, _)| kind).collect();
            let expected = match held_kinds.as_slice() {
                [] => matches!(message, Backend::ParseComplete),
                [Backend::ParseComplete] => matches!(message, Backend::BindComplete),
                _ => false,
            };
            if expected {
                let bytes = run.take(buf, len, out);
                self.held.push((message, bytes));
                continue;
            }
            let ours = self.held.len() == 2 && matches!(message, Backend::ErrorResponse);
            if ours {
                self.held.clear();
                self.batches.done(self.received);
            } else {
                run.flush(buf, out);
                self.release(out);
                if matches!(message, Backend::ParseComplete) {
                    let bytes = run.take(buf, len, out);
                    self.held.push((message, bytes));
                    continue;
                }
            }
            if matches!(message, Backend::ReadyForQuery { .. }) {
                self.batches.done(self.received);
                self.received += 1;
            }
            run.keep(len);
        }
        run.flush(buf, out);
        Ok(())
    }
}
