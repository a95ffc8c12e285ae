//! The RESP codec: frame boundaries, command name and key, and the few encoders faults need.
//!
//! Pure: no sockets, no async. The proxy cuts each direction's byte stream into frames with
//! [`Framer`] (or the one-shot [`frame_len`] / [`request_len`]), asks [`command`] what a request
//! is, and forwards every frame it does not act on byte for byte. Nothing here copies or decodes
//! a body: summaries are borrowed views into the input.
//!
//! # What it covers
//! - RESP2 (`+ - : $ *`, with the `$-1` and `*-1` nulls) and RESP3 (`_ , # ! = ( % ~ > |`) in
//!   either direction, pipelined, nested up to [`MAX_DEPTH`]. An attribute (`|`) is framed
//!   together with the value it annotates, as one frame. `HELLO 3` needs no mode switch: the
//!   framer reads both versions at all times.
//! - Inline commands (`PING\r\n`, `SET a "b c"\n`): a top-level line that does not start with a
//!   RESP type byte, ended by `\n` with or without `\r`, at most [`MAX_INLINE_LEN`] bytes.
//! - [`request_len`] frames requests exactly as `redis-server` does (`networking.c`,
//!   `processInputBuffer`): a request starting with `*` is an array of bulk strings, anything
//!   else is an inline command (so a client's `+PING\r\n` is the inline command `+PING`).
//! - [`command`]: the command name, its first key (see there for the exceptions handled) and the
//!   argument count; [`is_celery_broker`], the preset that tells Celery/kombu broker traffic from
//!   cache traffic on the same database.
//! - Encoders: [`encode_command`], [`error_reply`], and Lua bodies for faults that rewrite a
//!   request so the server itself answers in the request's position: [`error_script`],
//!   [`lose_write_script`], [`eval_command`].
//!
//! # What it does not cover (the proxy passes such traffic through, or closes on `Err`)
//! - RESP3 streamed strings and aggregates (`$?`, `*?` ... `;0`, `.`) are rejected with
//!   [`CodecError::Unsupported`]: no Redis server sends them today (Redis 7 has no code path
//!   that emits them), so a stream containing one is not one we can frame.
//! - The *content* of line types (`+`, `-`, `:`, `,`, `(`, `#`, `_`) is not validated: it does not
//!   move frame boundaries, and rejecting it would close connections a server accepts.
//! - Reply-to-request pairing is the proxy's job, with two facts from this codec: RESP3 push
//!   frames ([`is_push`]) are out of band, and some requests get no reply at all (see
//!   [`command`]). A RESP2 client in subscribe mode receives message arrays that answer nothing.
//! - Keys under a kombu `global_keyprefix` are not recognised by [`is_celery_broker`].
//!
//! References: the RESP specification (redis.io/docs/latest/develop/reference/protocol-spec/),
//! RESP3 (github.com/redis/redis-specifications, `protocol/RESP3.md`), `networking.c` and
//! `sds.c` (`sdssplitargs`) in the Redis sources, and kombu's `kombu/transport/redis.py` and
//! Celery's `celery/backends/redis.py` for the broker preset.

use bytes::{BufMut, Bytes, BytesMut};

/// `+`: a simple string, one line (`+OK\r\n`).
pub const SIMPLE_STRING: u8 = b'+';
/// `-`: a simple error, one line (`-ERR unknown command\r\n`).
pub const SIMPLE_ERROR: u8 = b'-';
/// `:`: a signed 64-bit integer, one line.
pub const INTEGER: u8 = b':';
/// `$`: a bulk string, `$<len>\r\n<bytes>\r\n`; `$-1\r\n` is RESP2's null.
pub const BULK_STRING: u8 = b'$';
/// `*`: an array of `<n>` frames; `*-1\r\n` is RESP2's null array.
pub const ARRAY: u8 = b'*';
/// `_`: RESP3 null, `_\r\n`.
pub const NULL: u8 = b'_';
/// `,`: RESP3 double, one line (`,3.14\r\n`, `,inf\r\n`).
pub const DOUBLE: u8 = b',';
/// `#`: RESP3 boolean, `#t\r\n` or `#f\r\n`.
pub const BOOLEAN: u8 = b'#';
/// `!`: RESP3 blob error, framed like a bulk string.
pub const BLOB_ERROR: u8 = b'!';
/// `=`: RESP3 verbatim string (`=15\r\ntxt:Some string\r\n`), framed like a bulk string.
pub const VERBATIM_STRING: u8 = b'=';
/// `(`: RESP3 big number, one line.
pub const BIG_NUMBER: u8 = b'(';
/// `%`: RESP3 map of `<n>` key/value pairs (2n frames).
pub const MAP: u8 = b'%';
/// `~`: RESP3 set of `<n>` frames.
pub const SET: u8 = b'~';
/// `>`: RESP3 push of `<n>` frames: out-of-band data (pub/sub, tracking), not a reply.
pub const PUSH: u8 = b'>';
/// `|`: RESP3 attribute, a map of `<n>` pairs followed by the value it annotates.
pub const ATTRIBUTE: u8 = b'|';
/// `;`: a chunk of a RESP3 streamed string (unsupported, see the module doc).
pub const STREAMED_CHUNK: u8 = b';';
/// `.`: the end of a RESP3 streamed aggregate (unsupported, see the module doc).
pub const STREAMED_END: u8 = b'.';
/// The length `?` of a RESP3 streamed string or aggregate (unsupported).
const STREAMED_LENGTH: &[u8] = b"?";
/// The line terminator of every RESP header and line.
const CRLF: &[u8] = b"\r\n";

/// Largest bulk string (or blob error, verbatim string) accepted: 512 MiB, Redis's default
/// `proto-max-bulk-len`. A longer one is an error rather than a frame we would buffer forever.
pub const MAX_BULK_LEN: u64 = 512 * 1024 * 1024;
/// Largest element count of one aggregate: a Redis list, set or hash holds at most 2^32 - 1
/// elements, so no real reply is longer. Maps and attributes count pairs.
pub const MAX_AGGREGATE_LEN: u64 = u32::MAX as u64;
/// Deepest nesting of aggregates (and attributes) in one frame. Real replies nest under ten
/// levels (`COMMAND DOCS`, `XREAD`); the bound keeps the framer's state a fixed, small array.
pub const MAX_DEPTH: usize = 32;
/// Longest inline command line, without its `\n`: 64 KiB, the server's `PROTO_INLINE_MAX_SIZE`
/// ("Protocol error: too big inline request").
pub const MAX_INLINE_LEN: usize = 64 * 1024;
/// Longest simple line (`+`, `-`, `:`, `,`, `(`, `#`, `_`) without its `\r\n`: 1 MiB. Servers
/// send short ones (they cut quoted arguments in errors to 128 bytes); only a script's
/// `redis.error_reply` or `redis.status_reply` makes a long one.
pub const MAX_LINE_LEN: usize = 1024 * 1024;
/// Longest length header (`$<len>`, `*<count>`) without its type byte and `\r\n`: room for any
/// `i64` with its sign.
const MAX_HEADER_LEN: usize = 20;

/// Input that can never become a valid RESP frame: the proxy closes that one connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Where a RESP value must start (an aggregate element, the value after an attribute, an
    /// element of a request array), the byte is no type byte this codec frames.
    #[error("RESP: unexpected byte 0x{0:02x} where a value must start")]
    UnexpectedByte(u8),
    /// A length or count header that is not a decimal number (or `-1` where a null is allowed).
    #[error("RESP: invalid length header")]
    InvalidLength,
    /// The bytes after a bulk string's data are not `\r\n`: the stream is out of step.
    #[error("RESP: bulk data not followed by CRLF")]
    MissingCrlf,
    /// A bulk string, aggregate, inline command or line over its limit (the limit is given).
    #[error("RESP: {what} longer than {limit}")]
    TooLong {
        /// What was too long: `bulk string`, `aggregate`, `inline command`, `line`, `header`.
        what: &'static str,
        /// The limit it exceeded, in bytes or elements.
        limit: u64,
    },
    /// Aggregates nested deeper than [`MAX_DEPTH`].
    #[error("RESP: nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// A valid RESP3 construct this codec does not frame (streamed strings and aggregates).
    #[error("RESP: {0} are not supported")]
    Unsupported(&'static str),
}

/// Length of the complete RESP frame at the start of `buf` (any RESP2 or RESP3 type, nested
/// aggregates, an attribute with its value, or an inline command), `Ok(None)` if incomplete.
///
/// Direction-agnostic; for the client-to-server direction [`request_len`] frames exactly as the
/// server does. Re-scans from the start on every call: a caller that keeps a growing buffer
/// should keep a [`Framer`] instead, which resumes where it stopped.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, CodecError> {
    Framer::new().frame_len(buf)
}

/// Length of the complete request at the start of `buf`, framed as `redis-server` frames
/// requests, `Ok(None)` if incomplete.
///
/// A request starting with `*` is an array whose elements must all be bulk strings (anything
/// else is an error, as the server's "Protocol error: expected '$'"); a count of zero or less is a
/// complete request the server skips silently. Every other request is an inline command line.
pub fn request_len(buf: &[u8]) -> Result<Option<usize>, CodecError> {
    Framer::for_requests().frame_len(buf)
}

/// One open aggregate while framing: how many values it still needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Level {
    remaining: u64,
    /// An attribute's pairs: completing them does not complete a value of the parent.
    attribute: bool,
}

impl Level {
    const EMPTY: Level = Level {
        remaining: 0,
        attribute: false,
    };
}

/// A resumable framer for one direction of one connection.
///
/// Call [`Framer::frame_len`] with the bytes buffered since the current frame started; while it
/// returns `Ok(None)`, call it again with the same bytes plus whatever arrived since. It
/// remembers how far it got, so framing a large reply that arrives in many reads costs O(size)
/// in total, not O(size^2). After `Ok(Some(len))` or `Err` it starts afresh: the next call is for
/// the next frame. Passing a buffer shorter than what it already consumed restarts it.
#[derive(Debug, Clone)]
pub struct Framer {
    /// Frame requests as the server does (see [`request_len`]) rather than any RESP value.
    requests: bool,
    /// Bytes of the current frame already consumed: complete values and open headers.
    pos: usize,
    /// Where the search for the current line's terminator resumes.
    scan: usize,
    /// Open aggregates, innermost last.
    depth: usize,
    stack: [Level; MAX_DEPTH],
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new()
    }
}

/// What reading one value header did.
enum Step {
    /// The value is complete and ends at this offset.
    Value(usize),
    /// An aggregate (or attribute) header ends at this offset; its elements follow.
    Open(usize),
    /// More bytes are needed.
    More,
}

/// A parsed length header.
enum Length {
    Null,
    Streamed,
    Count(u64),
    /// Below -1: only meaningful for requests, where the server skips `*<n>` with n <= 0.
    Negative,
}

impl Framer {
    /// A framer for any RESP2/RESP3 frame or inline command, as [`frame_len`].
    pub const fn new() -> Framer {
        Framer {
            requests: false,
            pos: 0,
            scan: 0,
            depth: 0,
            stack: [Level::EMPTY; MAX_DEPTH],
        }
    }

    /// A framer for client requests, framing as the server does, as [`request_len`].
    pub const fn for_requests() -> Framer {
        let mut framer = Framer::new();
        framer.requests = true;
        framer
    }

    /// Forgets the frame in progress, keeping the mode.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.scan = 0;
        self.depth = 0;
    }

    /// Length of the complete frame at the start of `buf`, `Ok(None)` if more bytes are needed.
    /// See the type's doc for how to call it again.
    pub fn frame_len(&mut self, buf: &[u8]) -> Result<Option<usize>, CodecError> {
        if self.pos > buf.len() || self.scan > buf.len() {
            self.reset();
        }
        let result = self.run(buf);
        if !matches!(result, Ok(None)) {
            self.reset();
        }
        result
    }

    fn run(&mut self, buf: &[u8]) -> Result<Option<usize>, CodecError> {
        loop {
            let start = self.pos;
            let Some(&tag) = buf.get(start) else {
                return Ok(None);
            };
            if start == 0 && self.depth == 0 {
                let inline = if self.requests {
                    tag != ARRAY
                } else {
                    !is_type_byte(tag)
                };
                if inline {
                    return self.inline(buf);
                }
            } else if self.requests && tag != BULK_STRING {
                return Err(CodecError::UnexpectedByte(tag));
            }
            match self.value(buf, start, tag)? {
                Step::More => return Ok(None),
                Step::Open(end) => self.pos = end,
                Step::Value(end) => {
                    self.pos = end;
                    if self.close_value() {
                        return Ok(Some(end));
                    }
                }
            }
        }
    }

    /// Counts one complete value against the open aggregates; true when the frame is complete.
    fn close_value(&mut self) -> bool {
        loop {
            let Some(index) = self.depth.checked_sub(1) else {
                return true;
            };
            let Some(level) = self.stack.get_mut(index) else {
                return true;
            };
            level.remaining = level.remaining.saturating_sub(1);
            if level.remaining > 0 {
                return false;
            }
            let attribute = level.attribute;
            self.depth = index;
            if attribute {
                // The attribute is done; the value it annotates is still to come.
                return false;
            }
        }
    }

    fn inline(&mut self, buf: &[u8]) -> Result<Option<usize>, CodecError> {
        let from = self.scan;
        match buf
            .get(from..)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
        {
            Some(offset) => {
                let newline = from.saturating_add(offset);
                if newline > MAX_INLINE_LEN.saturating_add(1) {
                    return Err(too_long("inline command", MAX_INLINE_LEN));
                }
                Ok(Some(newline.saturating_add(1)))
            }
            None if buf.len() > MAX_INLINE_LEN.saturating_add(1) => {
                Err(too_long("inline command", MAX_INLINE_LEN))
            }
            None => {
                self.scan = buf.len();
                Ok(None)
            }
        }
    }

    /// Reads the value (or aggregate header) starting at `start` with type byte `tag`.
    fn value(&mut self, buf: &[u8], start: usize, tag: u8) -> Result<Step, CodecError> {
        match tag {
            SIMPLE_STRING | SIMPLE_ERROR | INTEGER | DOUBLE | BIG_NUMBER | BOOLEAN | NULL => {
                self.line(buf, start)
            }
            BULK_STRING | BLOB_ERROR | VERBATIM_STRING => {
                let Some((length, data)) = header(buf, start)? else {
                    return Ok(Step::More);
                };
                let len = match length {
                    Length::Count(len) => len,
                    Length::Null if tag == BULK_STRING && !self.requests => {
                        return Ok(Step::Value(data));
                    }
                    Length::Streamed if !self.requests => {
                        return Err(CodecError::Unsupported("streamed strings"));
                    }
                    _ => return Err(CodecError::InvalidLength),
                };
                if len > MAX_BULK_LEN {
                    return Err(CodecError::TooLong {
                        what: "bulk string",
                        limit: MAX_BULK_LEN,
                    });
                }
                let data_end = usize::try_from(len)
                    .ok()
                    .and_then(|len| data.checked_add(len))
                    .ok_or(CodecError::InvalidLength)?;
                let end = data_end
                    .checked_add(CRLF.len())
                    .ok_or(CodecError::InvalidLength)?;
                match buf.get(data_end..end) {
                    None => Ok(Step::More),
                    Some(CRLF) => Ok(Step::Value(end)),
                    Some(_) => Err(CodecError::MissingCrlf),
                }
            }
            ARRAY | SET | PUSH | MAP | ATTRIBUTE => {
                let Some((length, end)) = header(buf, start)? else {
                    return Ok(Step::More);
                };
                let count = match length {
                    Length::Count(count) => count,
                    Length::Null if tag == ARRAY => return Ok(Step::Value(end)),
                    Length::Negative | Length::Null if self.requests => {
                        return Ok(Step::Value(end));
                    }
                    Length::Streamed if !self.requests => {
                        return Err(CodecError::Unsupported("streamed aggregates"));
                    }
                    _ => return Err(CodecError::InvalidLength),
                };
                if count > MAX_AGGREGATE_LEN {
                    return Err(CodecError::TooLong {
                        what: "aggregate",
                        limit: MAX_AGGREGATE_LEN,
                    });
                }
                let pairs = matches!(tag, MAP | ATTRIBUTE);
                let remaining = if pairs {
                    count.saturating_mul(2)
                } else {
                    count
                };
                if remaining == 0 {
                    // An empty attribute annotates the value that follows: nothing to count.
                    return Ok(if tag == ATTRIBUTE {
                        Step::Open(end)
                    } else {
                        Step::Value(end)
                    });
                }
                let level = self.stack.get_mut(self.depth).ok_or(CodecError::TooDeep)?;
                *level = Level {
                    remaining,
                    attribute: tag == ATTRIBUTE,
                };
                self.depth += 1;
                Ok(Step::Open(end))
            }
            STREAMED_CHUNK | STREAMED_END => Err(CodecError::Unsupported("streamed aggregates")),
            other => Err(CodecError::UnexpectedByte(other)),
        }
    }

    /// A one-line value starting at `start`: ends after the first `\r\n`.
    fn line(&mut self, buf: &[u8], start: usize) -> Result<Step, CodecError> {
        let from = self.scan.max(start.saturating_add(1));
        match find_crlf(buf, from) {
            Some(cr) if cr - start > MAX_LINE_LEN.saturating_add(1) => {
                Err(too_long("line", MAX_LINE_LEN))
            }
            Some(cr) => Ok(Step::Value(cr.saturating_add(CRLF.len()))),
            None if buf.len() - start > MAX_LINE_LEN.saturating_add(2) => {
                Err(too_long("line", MAX_LINE_LEN))
            }
            None => {
                // The last byte may be a `\r` whose `\n` has not arrived yet.
                self.scan = buf.len().saturating_sub(1).max(from);
                Ok(Step::More)
            }
        }
    }
}

fn too_long(what: &'static str, limit: usize) -> CodecError {
    CodecError::TooLong {
        what,
        limit: limit as u64,
    }
}

/// Whether `byte` starts a RESP value at the top level (the streamed-only `;` and `.` do not).
fn is_type_byte(byte: u8) -> bool {
    matches!(
        byte,
        SIMPLE_STRING
            | SIMPLE_ERROR
            | INTEGER
            | BULK_STRING
            | ARRAY
            | NULL
            | DOUBLE
            | BOOLEAN
            | BLOB_ERROR
            | VERBATIM_STRING
            | BIG_NUMBER
            | MAP
            | SET
            | PUSH
            | ATTRIBUTE
    )
}

/// Offset of the first `\r\n` at or after `from`.
fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let cr = at.checked_add(buf.get(at..)?.iter().position(|&b| b == b'\r')?)?;
        let next = cr.checked_add(1)?;
        match buf.get(next) {
            Some(b'\n') => return Some(cr),
            Some(_) => at = next,
            None => return None,
        }
    }
}

/// Parses the length header of the value at `start`: its length and where its data begins.
fn header(buf: &[u8], start: usize) -> Result<Option<(Length, usize)>, CodecError> {
    let digits_start = start.saturating_add(1);
    let rest = buf.get(digits_start..).unwrap_or_default();
    let Some(cr) = rest
        .iter()
        .take(MAX_HEADER_LEN + 1)
        .position(|&b| b == b'\r')
    else {
        return if rest.len() > MAX_HEADER_LEN {
            Err(too_long("header", MAX_HEADER_LEN))
        } else {
            Ok(None)
        };
    };
    match rest.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(CodecError::InvalidLength),
    }
    let digits = rest.get(..cr).unwrap_or_default();
    let length = if digits == STREAMED_LENGTH {
        Length::Streamed
    } else {
        match parse_i64(digits).ok_or(CodecError::InvalidLength)? {
            -1 => Length::Null,
            n if n < 0 => Length::Negative,
            n => Length::Count(n.unsigned_abs()),
        }
    };
    Ok(Some((length, digits_start + cr + CRLF.len())))
}

/// A decimal `i64` with an optional leading `-`, nothing else; None on overflow or junk.
fn parse_i64(digits: &[u8]) -> Option<i64> {
    let (negative, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let digit = i64::from(d - b'0');
        value = value.checked_mul(10)?;
        value = if negative {
            value.checked_sub(digit)?
        } else {
            value.checked_add(digit)?
        };
    }
    Some(value)
}

/// Whether `frame` is a RESP3 push (`>`): out-of-band data such as a pub/sub message or a
/// client-tracking invalidation, which answers no request and must not be paired with one.
pub fn is_push(frame: &[u8]) -> bool {
    frame.first() == Some(&PUSH)
}

/// Whether `frame` is an error reply (`-` or RESP3's `!`), for counting real server failures.
pub fn is_error(frame: &[u8]) -> bool {
    matches!(frame.first(), Some(&SIMPLE_ERROR) | Some(&BLOB_ERROR))
}

/// A request's name, first key and argument count: what matchers select on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command<'a> {
    /// The command name as sent; compare with [`Command::is`] (names are case-insensitive).
    pub name: &'a [u8],
    /// The first key, if the command has one (see [`command`] for which argument that is).
    pub key: Option<&'a [u8]>,
    /// Number of arguments including the name.
    pub argc: usize,
}

impl Command<'_> {
    /// Whether this is the command `name`, ignoring ASCII case as the server does.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name.as_bytes())
    }

    /// The key as UTF-8, for string matchers (globs); None without a key or if not UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key.and_then(|key| std::str::from_utf8(key).ok())
    }
}

/// A request's command name and first key, for matchers: from an array of bulk strings, or from
/// an inline command (`PING\r\n`, `SET a b\r\n`). `frame` is one complete request.
///
/// The key is the second argument, except:
/// - commands without keys give None: connection, server and transaction commands (`PING`,
///   `HELLO`, `AUTH`, `SELECT`, `CLIENT`, `INFO`, `MULTI`, `EXEC`, `CONFIG`, `SCRIPT`, `KEYS`
///   (a pattern), `SCAN`, ...; the table is `key_rule`);
/// - `EVAL`/`EVALSHA`/`FCALL` (and `_RO`), `BLMPOP`, `BZMPOP`: `<x> <numkeys> key...` gives the
///   first key if numkeys > 0; `LMPOP`, `ZMPOP`, `SINTERCARD`, `ZINTERCARD`, `ZUNION`, `ZINTER`,
///   `ZDIFF`: `<numkeys> key...` likewise;
/// - `XREAD` and `XREADGROUP`: the argument after `STREAMS`;
/// - `BITOP op destkey ...`: destkey; `MIGRATE host port key ...`: key (None when empty);
/// - `OBJECT`, `MEMORY USAGE`, `XINFO`, `XGROUP`: the argument after the subcommand;
/// - pub/sub commands (`PUBLISH`, `SUBSCRIBE`, `PSUBSCRIBE`, `SPUBLISH`, ...): the first channel
///   or pattern, so a key glob can select channels too;
/// - `BRPOP k1 k2 timeout` and other multi-key commands: the first key (the default rule).
///
/// Unknown commands (modules) use the default rule. Inline arguments are split as the server's
/// `sdssplitargs` does; a quoted argument is returned without its quotes, but escapes
/// (`"\x41"`) are not decoded (the raw text is returned).
///
/// None when `frame` holds no command: no arguments (an empty inline line, `*0`, `*-1`, which
/// the server skips without replying), an inline line with unbalanced quotes (the server
/// answers with a protocol error and closes), or an array with a non-bulk element.
pub fn command(frame: &[u8]) -> Option<Command<'_>> {
    let args = Args::new(frame)?;
    let argc = args.count_valid()?;
    let name = args.clone().next()?;
    let key = first_key(name, &args);
    Some(Command { name, key, argc })
}

/// The first key of the command `name` among `args` (the name included), per [`key_rule`].
fn first_key<'a>(name: &[u8], args: &Args<'a>) -> Option<&'a [u8]> {
    let arg = |index: usize| args.clone().nth(index);
    match key_rule(name) {
        KeyRule::None => None,
        KeyRule::At(index) => arg(index),
        KeyRule::NonEmptyAt(index) => arg(index).filter(|key| !key.is_empty()),
        KeyRule::NumKeysAt(index) => arg(index)
            .and_then(parse_i64)
            .filter(|&numkeys| numkeys > 0)
            .and_then(|_| arg(index + 1)),
        KeyRule::AfterStreams { from } => {
            let mut rest = args.clone().skip(from);
            rest.find(|arg| arg.eq_ignore_ascii_case(b"STREAMS"))
                .and_then(|_| rest.next())
        }
        KeyRule::AfterSubcommand(subcommands) => arg(1)
            .filter(|sub| {
                subcommands
                    .iter()
                    .any(|s| sub.eq_ignore_ascii_case(s.as_bytes()))
            })
            .and_then(|_| arg(2)),
    }
}

/// Where a command's first key is.
enum KeyRule {
    /// The command takes no key.
    None,
    /// The key is this argument (the name is 0).
    At(usize),
    /// Like `At`, but an empty argument means no key (`MIGRATE ... "" ... KEYS k`).
    NonEmptyAt(usize),
    /// This argument is numkeys; the first key follows it when numkeys > 0.
    NumKeysAt(usize),
    /// The key follows the word `STREAMS`, searched from this argument on.
    AfterStreams { from: usize },
    /// The key is argument 2 if argument 1 is one of these subcommands.
    AfterSubcommand(&'static [&'static str]),
}

/// Longest command name `key_rule` looks up (longer names use the default rule).
const MAX_KNOWN_NAME: usize = 24;

fn key_rule(name: &[u8]) -> KeyRule {
    if name.len() > MAX_KNOWN_NAME {
        return KeyRule::At(1);
    }
    let mut upper = [0u8; MAX_KNOWN_NAME];
    let Some(upper) = upper.get_mut(..name.len()) else {
        return KeyRule::At(1);
    };
    upper.copy_from_slice(name);
    upper.make_ascii_uppercase();
    match &*upper {
        b"PING" | b"ECHO" | b"HELLO" | b"AUTH" | b"SELECT" | b"CLIENT" | b"INFO" | b"MULTI"
        | b"EXEC" | b"DISCARD" | b"UNWATCH" | b"QUIT" | b"RESET" | b"DBSIZE" | b"FLUSHDB"
        | b"FLUSHALL" | b"KEYS" | b"SCAN" | b"RANDOMKEY" | b"TIME" | b"CONFIG" | b"COMMAND"
        | b"SCRIPT" | b"FUNCTION" | b"SAVE" | b"BGSAVE" | b"BGREWRITEAOF" | b"LASTSAVE"
        | b"SHUTDOWN" | b"SLAVEOF" | b"REPLICAOF" | b"ROLE" | b"MONITOR" | b"SYNC" | b"PSYNC"
        | b"REPLCONF" | b"DEBUG" | b"SLOWLOG" | b"LATENCY" | b"MODULE" | b"ACL" | b"CLUSTER"
        | b"READONLY" | b"READWRITE" | b"ASKING" | b"WAIT" | b"WAITAOF" | b"SWAPDB" | b"LOLWUT"
        | b"PUBSUB" | b"FAILOVER" => KeyRule::None,
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" | b"BLMPOP"
        | b"BZMPOP" => KeyRule::NumKeysAt(2),
        b"LMPOP" | b"ZMPOP" | b"SINTERCARD" | b"ZINTERCARD" | b"ZUNION" | b"ZINTER" | b"ZDIFF" => {
            KeyRule::NumKeysAt(1)
        }
        b"XREAD" => KeyRule::AfterStreams { from: 1 },
        // XREADGROUP GROUP <group> <consumer> ...: the names cannot shadow STREAMS.
        b"XREADGROUP" => KeyRule::AfterStreams { from: 4 },
        b"BITOP" => KeyRule::At(2),
        b"MIGRATE" => KeyRule::NonEmptyAt(3),
        b"OBJECT" => KeyRule::AfterSubcommand(&["ENCODING", "FREQ", "IDLETIME", "REFCOUNT"]),
        b"MEMORY" => KeyRule::AfterSubcommand(&["USAGE"]),
        b"XINFO" => KeyRule::AfterSubcommand(&["CONSUMERS", "GROUPS", "STREAM"]),
        b"XGROUP" => KeyRule::AfterSubcommand(&[
            "CREATE",
            "SETID",
            "DESTROY",
            "CREATECONSUMER",
            "DELCONSUMER",
        ]),
        _ => KeyRule::At(1),
    }
}

/// The arguments of a request, borrowed from the frame.
#[derive(Clone)]
enum Args<'a> {
    /// `*<declared>\r\n` followed by bulk strings.
    Array {
        rest: &'a [u8],
        left: usize,
        declared: usize,
    },
    /// One inline line, without its terminator.
    Inline { rest: &'a [u8], failed: bool },
}

impl<'a> Args<'a> {
    fn new(frame: &'a [u8]) -> Option<Args<'a>> {
        if frame.first() == Some(&ARRAY) {
            let (length, data) = header(frame, 0).ok()??;
            let Length::Count(count) = length else {
                return None;
            };
            let declared = usize::try_from(count).ok()?;
            return Some(Args::Array {
                rest: frame.get(data..)?,
                left: declared,
                declared,
            });
        }
        let mut line = match frame.iter().position(|&b| b == b'\n') {
            Some(newline) => frame.get(..newline)?,
            None => frame,
        };
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        // The server splits a C string: a NUL ends the line.
        if let Some(nul) = line.iter().position(|&b| b == 0) {
            line = line.get(..nul)?;
        }
        Some(Args::Inline {
            rest: line,
            failed: false,
        })
    }

    /// The number of arguments, or None if any is malformed.
    fn count_valid(&self) -> Option<usize> {
        let mut iter = self.clone();
        let count = iter.by_ref().count();
        match iter {
            Args::Array { declared, .. } => (count == declared).then_some(count),
            Args::Inline { failed, .. } => (!failed).then_some(count),
        }
    }
}

impl<'a> Iterator for Args<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Args::Array { rest, left, .. } => {
                if *left == 0 {
                    return None;
                }
                let (arg, after) = bulk_arg(rest)?;
                *rest = after;
                *left -= 1;
                Some(arg)
            }
            Args::Inline { rest, failed } => {
                if *failed {
                    return None;
                }
                match split_inline(rest) {
                    Ok(Some((arg, after))) => {
                        *rest = after;
                        Some(arg)
                    }
                    Ok(None) => None,
                    Err(()) => {
                        *failed = true;
                        None
                    }
                }
            }
        }
    }
}

/// One `$<len>\r\n<data>\r\n` at the start of `buf`: the data and what follows.
fn bulk_arg(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    if buf.first() != Some(&BULK_STRING) {
        return None;
    }
    let (Length::Count(len), data) = header(buf, 0).ok()?? else {
        return None;
    };
    let data_end = data.checked_add(usize::try_from(len).ok()?)?;
    let end = data_end.checked_add(CRLF.len())?;
    if buf.get(data_end..end)? != CRLF {
        return None;
    }
    Some((buf.get(data..data_end)?, buf.get(end..)?))
}

/// An argument and what follows it on the line.
type ArgAndRest<'a> = (&'a [u8], &'a [u8]);

/// `isspace` in the C locale, which `sdssplitargs` skips between arguments.
fn is_c_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// The next inline argument as `sdssplitargs` splits it, and what follows; `Ok(None)` at the
/// end; `Err` on unbalanced quotes (or a closing quote not followed by a space).
fn split_inline(line: &[u8]) -> Result<Option<ArgAndRest<'_>>, ()> {
    let Some(start) = line.iter().position(|&b| !is_c_space(b)) else {
        return Ok(None);
    };
    let mut at = start;
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    let mut quotes = 0usize;
    let end = loop {
        let byte = line.get(at).copied();
        match (quote, byte) {
            (Some(_), None) => return Err(()),
            (None, None) => break at,
            (Some(b'"'), Some(b'\\')) if line.get(at + 1).is_some() => {
                escaped = true;
                let hex = line.get(at + 1) == Some(&b'x')
                    && line.get(at + 2).is_some_and(u8::is_ascii_hexdigit)
                    && line.get(at + 3).is_some_and(u8::is_ascii_hexdigit);
                at += if hex { 4 } else { 2 };
            }
            (Some(b'\''), Some(b'\\')) if line.get(at + 1) == Some(&b'\'') => {
                escaped = true;
                at += 2;
            }
            (Some(open), Some(close)) if open == close => {
                if line.get(at + 1).is_some_and(|&b| !is_c_space(b)) {
                    return Err(());
                }
                at += 1;
                break at;
            }
            (Some(_), Some(_)) => at += 1,
            (None, Some(b' ' | b'\n' | b'\r' | b'\t')) => break at,
            (None, Some(open @ (b'"' | b'\''))) => {
                quote = Some(open);
                quotes += 1;
                at += 1;
            }
            (None, Some(_)) => at += 1,
        }
    };
    let raw = line.get(start..end).ok_or(())?;
    let rest = line.get(end..).unwrap_or_default();
    // `"abc"` as a whole, without escapes: the text between the quotes.
    let simple_quoted = quotes == 1
        && !escaped
        && raw.len() >= 2
        && matches!(raw.first(), Some(b'"' | b'\''))
        && raw.first() == raw.last();
    let arg = if simple_quoted {
        raw.get(1..raw.len() - 1).unwrap_or(raw)
    } else {
        raw
    };
    Ok(Some((arg, rest)))
}

/// The list commands kombu uses on a queue (plus those that delete or expire the queue key).
const QUEUE_COMMANDS: &[&str] = &[
    "LPUSH",
    "RPUSH",
    "LPUSHX",
    "RPUSHX",
    "BRPOP",
    "BLPOP",
    "RPOP",
    "LPOP",
    "LLEN",
    "LRANGE",
    "LREM",
    "LINDEX",
    "LTRIM",
    "LMOVE",
    "BLMOVE",
    "RPOPLPUSH",
    "BRPOPLPUSH",
    "DEL",
    "UNLINK",
    "EXPIRE",
    "PEXPIRE",
];
/// Pub/sub commands, whose "key" is the first channel or pattern.
const PUBSUB_COMMANDS: &[&str] = &[
    "PUBLISH",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "UNSUBSCRIBE",
    "PUNSUBSCRIBE",
    "SPUBLISH",
    "SSUBSCRIBE",
    "SUNSUBSCRIBE",
];
/// Key prefixes that are broker or result-backend state whatever the command.
const CELERY_KEY_PREFIXES: &[&[u8]] = &[
    b"_kombu.",
    b"unacked",
    b"celery-task-meta-",
    b"celery-taskset-meta-",
    b"chord-unlock-",
];
/// kombu's separator between a queue name and its priority (`celery\x06\x163`).
const KOMBU_PRIORITY_SEP: &[u8] = b"\x06\x16";
/// How kombu's pidbox (remote control) queue names end.
const KOMBU_PIDBOX_SUFFIX: &[u8] = b".pidbox";
/// How Celery's event queue names start (its `event_queue_prefix`).
const KOMBU_EVENT_QUEUE_PREFIX: &[u8] = b"celeryev.";

/// Whether a request is Celery/kombu broker traffic (the `celery_broker` preset; everything else
/// is `cache`). `queues` are the Celery queue names (`celery`, `default`, ...).
///
/// The rules follow kombu's Redis transport (`kombu/transport/redis.py`) and Celery's Redis
/// result backend (`celery/backends/redis.py`):
/// - any command whose key starts with `_kombu.` (exchange bindings `_kombu.binding.<exchange>`,
///   `_kombu.binding_deadlines`, ...), `unacked` (the `unacked` hash of delivered messages,
///   `unacked_index` zset, `unacked_mutex` lock), `celery-task-meta-` (task results, written
///   with `SET`/`SETEX`, read with `GET`/`MGET`), `celery-taskset-meta-` (group and chord state)
///   or `chord-unlock-`. Scripts count through their first key (`EVALSHA sha 1 unacked_mutex`);
/// - list commands (`LPUSH`, `RPUSH`, `BRPOP`, `BLPOP`, `RPOP`, `LPOP`, `LLEN`, `LRANGE`, `LREM`,
///   `LMOVE`, ... and `DEL`, `UNLINK`, `EXPIRE`, `PEXPIRE` on the queue key) whose first key is a
///   queue: the queue's name, or the name plus kombu's priority suffix `\x06\x16<digits>`
///   (priority 0 is the bare name, so `BRPOP celery celery\x06\x163 ... 1` matches on `celery`),
///   or one of kombu's own queues whatever `queues` says: `<host>.celery.pidbox` and
///   `<uuid>.reply.celery.pidbox` (remote control and its replies), `celeryev.<uuid>` (events);
/// - pub/sub on a kombu fanout channel `/<db>.<exchange>[/<routing key>]` (`/0.celery.pidbox`,
///   `/0.celeryev/worker.heartbeat`) or on a channel starting with `celery` (result
///   notifications are published on `celery-task-meta-<id>`; fanout without a prefix).
///
/// Not matched: keys under a kombu `global_keyprefix`, and `MULTI`/`EXEC` around broker commands
/// (they have no key; the commands inside match one by one).
pub fn is_celery_broker(cmd: &Command, queues: &[&str]) -> bool {
    let Some(key) = cmd.key else {
        return false;
    };
    if CELERY_KEY_PREFIXES.iter().any(|p| key.starts_with(p)) {
        return true;
    }
    if PUBSUB_COMMANDS.iter().any(|c| cmd.is(c)) {
        return key.starts_with(b"celery") || is_kombu_fanout(key);
    }
    QUEUE_COMMANDS.iter().any(|c| cmd.is(c))
        && (queues
            .iter()
            .any(|queue| is_queue_key(key, queue.as_bytes()))
            || is_kombu_internal_queue(key))
}

/// `/<digits>.<anything>`: kombu's fanout prefix `/{db}.` followed by an exchange.
fn is_kombu_fanout(channel: &[u8]) -> bool {
    let Some(rest) = channel.strip_prefix(b"/") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && rest.get(digits) == Some(&b'.')
}

/// `queue` itself, or `queue` + `\x06\x16` + a priority number.
fn is_queue_key(key: &[u8], queue: &[u8]) -> bool {
    strip_priority(key) == queue
}

/// kombu's own queues: pidbox (remote control) queues `<host>.celery.pidbox` and their reply
/// queues `<uuid>.reply.celery.pidbox`, and event queues `celeryev.<uuid>`, with or without a
/// priority suffix.
fn is_kombu_internal_queue(key: &[u8]) -> bool {
    let queue = strip_priority(key);
    queue.ends_with(KOMBU_PIDBOX_SUFFIX) || queue.starts_with(KOMBU_EVENT_QUEUE_PREFIX)
}

/// The queue name without kombu's priority suffix `\x06\x16<digits>`, if it has one.
fn strip_priority(key: &[u8]) -> &[u8] {
    let digits = key.iter().rev().take_while(|b| b.is_ascii_digit()).count();
    match key
        .get(..key.len() - digits)
        .and_then(|rest| rest.strip_suffix(KOMBU_PRIORITY_SEP))
    {
        Some(queue) if digits > 0 => queue,
        _ => key,
    }
}

/// Encodes a request as an array of bulk strings, as clients send it.
pub fn encode_command(args: &[&[u8]]) -> Bytes {
    let size: usize = args.iter().map(|arg| arg.len() + 16).sum::<usize>() + 16;
    let mut out = BytesMut::with_capacity(size);
    out.put_u8(ARRAY);
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(CRLF);
    for arg in args {
        out.put_u8(BULK_STRING);
        out.extend_from_slice(arg.len().to_string().as_bytes());
        out.extend_from_slice(CRLF);
        out.extend_from_slice(arg);
        out.extend_from_slice(CRLF);
    }
    out.freeze()
}

/// Makes `message` fit on one error line: one leading `-` dropped (it is added back), `\r`,
/// `\n` and NUL replaced by spaces as the server does, and `ERR` if nothing is left.
fn sanitize_error(message: &str) -> String {
    let message = message.strip_prefix('-').unwrap_or(message);
    let clean: String = message
        .chars()
        .map(|c| {
            if matches!(c, '\r' | '\n' | '\0') {
                ' '
            } else {
                c
            }
        })
        .collect();
    if clean.trim().is_empty() {
        "ERR".to_owned()
    } else {
        clean
    }
}

/// An error reply the proxy sends itself: `-<message>\r\n`. `message` starts with the error
/// code clients dispatch on (`ERR ...`, `BUSY ...`, `LOADING ...`); line breaks in it become
/// spaces, so the reply is always one line.
pub fn error_reply(message: &str) -> Bytes {
    let message = sanitize_error(message);
    let mut out = BytesMut::with_capacity(message.len() + 3);
    out.put_u8(SIMPLE_ERROR);
    out.extend_from_slice(message.as_bytes());
    out.extend_from_slice(CRLF);
    out.freeze()
}

/// A Lua body for `EVAL <body> 0` that makes the server answer `-<message>`:
/// `return redis.error_reply('<message>')`, with the message sanitized as in [`error_reply`] and
/// escaped for a Lua string. Rewriting the matched request into this keeps the error in the
/// request's position in a pipeline or `MULTI` (inside `MULTI` the client sees `+QUEUED`, then the
/// error inside `EXEC`'s array). The server reads the first word as the error code, so a message
/// without one (`"disk full"`) arrives as the code `disk`.
///
/// Where `EVAL` cannot run, the proxy must answer with [`error_reply`] itself: a RESP2 client in
/// subscribe mode (the server allows only (P|S)(UN)SUBSCRIBE, PING, QUIT and RESET there), a user
/// whose ACL denies `@scripting`, or a server that is itself `-LOADING`. Each distinct script
/// body stays in the server's script cache until `SCRIPT FLUSH` (Redis < 7.4), so messages
/// should come from configuration, not from per-request data.
pub fn error_script(message: &str) -> String {
    let message = sanitize_error(message);
    let mut script = String::with_capacity(message.len() + 40);
    script.push_str("return redis.error_reply('");
    for c in message.chars() {
        if matches!(c, '\\' | '\'') {
            script.push('\\');
        }
        script.push(c);
    }
    script.push_str("')");
    script
}

/// The Lua body for `EVAL <body> 0` that answers as if the write `cmd` succeeded, without
/// doing it (the `lose_write` fault: a lost Celery message). None for commands that are not
/// writes, or whose success reply depends on stored data (`INCR`, `GETSET`, `XADD`'s id, ...):
/// those cannot be faked convincingly.
///
/// - `return 1` (`:1`): `LPUSH`, `RPUSH`, `LPUSHX`, `RPUSHX`, `SADD`, `SREM`, `SMOVE`, `HSET`,
///   `HSETNX`, `HDEL`, `ZADD`, `ZREM`, `LREM`, `DEL`, `UNLINK`, `EXPIRE`, `PEXPIRE`,
///   `EXPIREAT`, `PEXPIREAT`, `PERSIST`, `SETNX`, `MSETNX`, `RENAMENX`, `COPY`, `PFADD`,
///   `GEOADD`, `PUBLISH`, `SPUBLISH` (one element added, removed or delivered);
/// - `return redis.status_reply('OK')` (`+OK`): `SET`, `SETEX`, `PSETEX`, `MSET`, `HMSET`,
///   `LSET`, `LTRIM`, `RENAME`. (`SET ... GET` would have returned the old value.)
pub fn lose_write_script(cmd: &Command) -> Option<&'static str> {
    const INTEGER_ONE: &[&str] = &[
        "LPUSH",
        "RPUSH",
        "LPUSHX",
        "RPUSHX",
        "SADD",
        "SREM",
        "SMOVE",
        "HSET",
        "HSETNX",
        "HDEL",
        "ZADD",
        "ZREM",
        "LREM",
        "DEL",
        "UNLINK",
        "EXPIRE",
        "PEXPIRE",
        "EXPIREAT",
        "PEXPIREAT",
        "PERSIST",
        "SETNX",
        "MSETNX",
        "RENAMENX",
        "COPY",
        "PFADD",
        "GEOADD",
        "PUBLISH",
        "SPUBLISH",
    ];
    const STATUS_OK: &[&str] = &[
        "SET", "SETEX", "PSETEX", "MSET", "HMSET", "LSET", "LTRIM", "RENAME",
    ];
    if INTEGER_ONE.iter().any(|name| cmd.is(name)) {
        Some("return 1")
    } else if STATUS_OK.iter().any(|name| cmd.is(name)) {
        Some("return redis.status_reply('OK')")
    } else {
        None
    }
}

/// The request that runs `script` with no keys: `EVAL <script> 0`, what a matched request is
/// rewritten into so the server answers with the script's reply in its place.
pub fn eval_command(script: &str) -> Bytes {
    encode_command(&[b"EVAL", script.as_bytes(), b"0"])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // ---- helpers ----------------------------------------------------------------------------

    /// Frames `stream` front to back with `frame`, returning the frames; panics on an error or a
    /// trailing partial frame.
    fn frames_with(
        stream: &[u8],
        frame: fn(&[u8]) -> Result<Option<usize>, CodecError>,
    ) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut rest = stream;
        while !rest.is_empty() {
            let len = frame(rest)
                .unwrap_or_else(|e| panic!("{e} at offset {}", stream.len() - rest.len()))
                .unwrap_or_else(|| panic!("partial frame at {}", stream.len() - rest.len()));
            assert!(len > 0 && len <= rest.len());
            out.push(&rest[..len]);
            rest = &rest[len..];
        }
        out
    }

    /// Splitting at every offset, frame by frame: for each frame, every proper prefix needs more
    /// bytes (with a fresh call and with one resumable `Framer` fed the growing prefix), and the
    /// whole frame has exactly its length. Since a frame's length depends only on its own bytes,
    /// this is the same as cutting the stream at every offset k and framing both parts in order,
    /// in O(sum of frame_len^2) instead of O(stream^2). Returns the frames.
    fn check_splits(stream: &[u8], requests: bool) -> Vec<&[u8]> {
        let one_shot: fn(&[u8]) -> Result<Option<usize>, CodecError> =
            if requests { request_len } else { frame_len };
        let frames = frames_with(stream, one_shot);
        for frame in &frames {
            let mut framer = if requests {
                Framer::for_requests()
            } else {
                Framer::new()
            };
            for k in 0..frame.len() {
                assert_eq!(one_shot(&frame[..k]), Ok(None), "prefix {k} of {frame:?}");
                assert_eq!(
                    framer.frame_len(&frame[..k]),
                    Ok(None),
                    "resumed {k} of {frame:?}"
                );
            }
            assert_eq!(one_shot(frame), Ok(Some(frame.len())));
            assert_eq!(framer.frame_len(frame), Ok(Some(frame.len())));
        }
        frames
    }

    /// What a proxy does: the stream arrives in `chunks`, each appended to a buffer that is framed
    /// with one resumable framer as far as it goes. Returns the frame lengths.
    fn frame_chunked(stream: &[u8], cuts: &[usize], requests: bool) -> Vec<usize> {
        let mut framer = if requests {
            Framer::for_requests()
        } else {
            Framer::new()
        };
        let mut lens = Vec::new();
        let mut start = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
        cuts.sort_unstable();
        cuts.push(stream.len());
        for end in cuts {
            while let Some(len) = framer.frame_len(&stream[start..end]).expect("valid stream") {
                lens.push(len);
                start += len;
            }
        }
        assert_eq!(start, stream.len(), "a partial frame is left");
        lens
    }

    fn cmd(frame: &[u8]) -> Command<'_> {
        command(frame).unwrap_or_else(|| panic!("no command in {frame:?}"))
    }

    fn key_of(args: &[&[u8]]) -> Option<Vec<u8>> {
        let frame = encode_command(args);
        command(&frame).and_then(|c| c.key.map(<[u8]>::to_vec))
    }

    // ---- framing: known messages -------------------------------------------------------------

    #[test]
    fn frames_every_resp2_and_resp3_type() {
        let cases: &[&[u8]] = &[
            b"+OK\r\n",
            b"-ERR unknown command 'FOO'\r\n",
            b":-42\r\n",
            b"$5\r\nhello\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"$6\r\na\r\nb\r\n\r\n",
            b"*-1\r\n",
            b"*0\r\n",
            b"*2\r\n$3\r\nfoo\r\n$-1\r\n",
            b"*3\r\n:1\r\n*1\r\n+x\r\n*0\r\n",
            b"_\r\n",
            b",3.14\r\n",
            b",-inf\r\n",
            b"#t\r\n",
            b"!21\r\nSYNTAX invalid syntax\r\n",
            b"=15\r\ntxt:Some string\r\n",
            b"(3492890328409238509324850943850943825024385\r\n",
            b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n",
            b"~2\r\n+a\r\n+b\r\n",
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
            // An attribute is framed with the value it annotates.
            b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*1\r\n:2039123\r\n",
            // ... also inside an aggregate, where it does not count as an element.
            b"*2\r\n:1\r\n|1\r\n+ttl\r\n:3600\r\n$1\r\nv\r\n",
            b"|0\r\n+OK\r\n",
            b"|1\r\n+a\r\n+b\r\n|1\r\n+c\r\n+d\r\n:1\r\n",
            // A lone `\r` or `\n` does not end a simple line.
            b"+a\rb\nc\r\n",
            // Inline commands, with and without `\r`, and the empty line.
            b"PING\r\n",
            b"SET a \"b c\"\n",
            b"\r\n",
            b"\n",
        ];
        for &case in cases {
            assert_eq!(
                frame_len(case),
                Ok(Some(case.len())),
                "{:?}",
                case.escape_ascii()
            );
            let mut trailing = case.to_vec();
            trailing.extend_from_slice(b"+NEXT\r\n");
            assert_eq!(frame_len(&trailing), Ok(Some(case.len())));
        }
    }

    #[test]
    fn incomplete_frames_need_more_bytes() {
        for case in [
            &b""[..],
            b"+OK\r",
            b"$5\r\nhel",
            b"$5\r\nhello\r",
            b"*2\r\n$3\r\nfoo\r\n",
            b"|1\r\n+a\r\n+b\r\n",
            b"%1\r\n+a\r\n",
            b"PING",
            b"$-1\r",
        ] {
            assert_eq!(frame_len(case), Ok(None), "{:?}", case.escape_ascii());
        }
    }

    #[test]
    fn rejects_input_that_can_never_frame() {
        use CodecError::*;
        let cases: &[(&[u8], CodecError)] = &[
            (b"$abc\r\n", InvalidLength),
            (b"$\r\n", InvalidLength),
            (b"$-2\r\n", InvalidLength),
            (b"*-2\r\n", InvalidLength),
            (b"%-1\r\n", InvalidLength),
            (b"!-1\r\n", InvalidLength),
            (b"$3\rx", InvalidLength),
            (b"$99999999999999999999\r\n", InvalidLength),
            (b"$3\r\nfooXX", MissingCrlf),
            (b"*1\r\nfoo\r\n", UnexpectedByte(b'f')),
            (b"|1\r\n+a\r\n+b\r\nPING\r\n", UnexpectedByte(b'P')),
            (
                b"$?\r\n;4\r\nHell\r\n;0\r\n",
                Unsupported("streamed strings"),
            ),
            (b"*?\r\n:1\r\n.\r\n", Unsupported("streamed aggregates")),
            (b"*1\r\n;4\r\n", Unsupported("streamed aggregates")),
        ];
        for (input, error) in cases {
            assert_eq!(
                frame_len(input).as_ref(),
                Err(error),
                "{:?}",
                input.escape_ascii()
            );
        }
    }

    #[test]
    fn limits_are_errors_not_endless_buffering() {
        let deep = b"*1\r\n".repeat(MAX_DEPTH + 1);
        assert_eq!(frame_len(&deep), Err(CodecError::TooDeep));
        let mut ok_deep = b"*1\r\n".repeat(MAX_DEPTH);
        ok_deep.extend_from_slice(b":1\r\n");
        assert_eq!(frame_len(&ok_deep), Ok(Some(ok_deep.len())));

        let big = format!("${}\r\n", MAX_BULK_LEN + 1);
        assert!(matches!(
            frame_len(big.as_bytes()),
            Err(CodecError::TooLong { .. })
        ));
        assert_eq!(
            frame_len(format!("${MAX_BULK_LEN}\r\n").as_bytes()),
            Ok(None)
        );
        let wide = format!("*{}\r\n", MAX_AGGREGATE_LEN + 1);
        assert!(matches!(
            frame_len(wide.as_bytes()),
            Err(CodecError::TooLong { .. })
        ));
        assert!(matches!(
            frame_len(&[b'$'; 40]),
            Err(CodecError::TooLong { what: "header", .. })
        ));

        let mut inline = vec![b'a'; MAX_INLINE_LEN];
        assert_eq!(frame_len(&inline), Ok(None));
        inline.extend_from_slice(b"\r\n");
        assert_eq!(frame_len(&inline), Ok(Some(inline.len())));
        let long = vec![b'a'; MAX_INLINE_LEN + 2];
        assert!(matches!(
            frame_len(&long),
            Err(CodecError::TooLong {
                what: "inline command",
                ..
            })
        ));

        let mut line = vec![b'+'];
        line.resize(MAX_LINE_LEN + 1, b'x');
        assert_eq!(frame_len(&line), Ok(None));
        line.extend_from_slice(b"\r\n");
        assert_eq!(frame_len(&line), Ok(Some(line.len())));
        let mut long_line = vec![b'+'];
        long_line.resize(MAX_LINE_LEN + 4, b'x');
        assert!(matches!(
            frame_len(&long_line),
            Err(CodecError::TooLong { what: "line", .. })
        ));
    }

    #[test]
    fn request_len_frames_as_the_server_does() {
        // Only `*` starts an array request; anything else is an inline line.
        assert_eq!(request_len(b"+PING\r\n"), Ok(Some(7)));
        assert_eq!(request_len(b"$3\r\nfoo\r\n"), Ok(Some(4)));
        assert_eq!(request_len(b"|1\r\n"), Ok(Some(4)));
        // Counts <= 0 are complete requests the server skips.
        assert_eq!(request_len(b"*0\r\n"), Ok(Some(4)));
        assert_eq!(request_len(b"*-1\r\n"), Ok(Some(5)));
        assert_eq!(request_len(b"*-7\r\n"), Ok(Some(5)));
        // Elements must be non-null bulk strings ("Protocol error: expected '$', got ':'").
        assert_eq!(
            request_len(b"*1\r\n:1\r\n"),
            Err(CodecError::UnexpectedByte(b':'))
        );
        assert_eq!(
            request_len(b"*1\r\n*1\r\n"),
            Err(CodecError::UnexpectedByte(b'*'))
        );
        assert_eq!(
            request_len(b"*1\r\n$-1\r\n"),
            Err(CodecError::InvalidLength)
        );
        assert_eq!(request_len(b"*?\r\n"), Err(CodecError::InvalidLength));
        let ping = encode_command(&[b"PING"]);
        assert_eq!(request_len(&ping), Ok(Some(ping.len())));
        assert_eq!(request_len(&ping[..ping.len() - 1]), Ok(None));
    }

    #[test]
    fn framer_restarts_on_a_shorter_buffer() {
        let mut framer = Framer::new();
        assert_eq!(framer.frame_len(b"*2\r\n$3\r\nfoo\r\n"), Ok(None));
        assert_eq!(framer.frame_len(b"+OK\r\n"), Ok(Some(5)));
        assert_eq!(framer.frame_len(b"+OK"), Ok(None));
        framer.reset();
        assert_eq!(framer.frame_len(b":1\r\n"), Ok(Some(4)));
    }

    #[test]
    fn push_and_error_frames_are_recognised() {
        assert!(is_push(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n"));
        assert!(!is_push(b"*2\r\n"));
        assert!(is_error(b"-ERR x\r\n"));
        assert!(is_error(b"!3\r\nERR\r\n"));
        assert!(!is_error(b"+OK\r\n"));
    }

    // ---- commands and keys ------------------------------------------------------------------

    #[test]
    fn command_from_arrays() {
        let frame = encode_command(&[b"set", b"user:1", b"v", b"EX", b"10"]);
        let c = cmd(&frame);
        assert_eq!(c.name, b"set");
        assert!(c.is("SET") && c.is("set") && !c.is("GET"));
        assert_eq!(c.key, Some(&b"user:1"[..]));
        assert_eq!(c.key_str(), Some("user:1"));
        assert_eq!(c.argc, 5);

        let c = cmd(b"*1\r\n$4\r\nPING\r\n");
        assert_eq!((c.name, c.key, c.argc), (&b"PING"[..], None, 1));
        // Binary keys are kept; key_str only gives UTF-8.
        let frame = encode_command(&[b"GET", b"\xff\r\n"]);
        assert_eq!(cmd(&frame).key, Some(&b"\xff\r\n"[..]));
        assert_eq!(cmd(&frame).key_str(), None);
        // Not commands: no arguments, non-bulk elements, declared count not met.
        assert_eq!(command(b"*0\r\n"), None);
        assert_eq!(command(b"*-1\r\n"), None);
        assert_eq!(command(b"*2\r\n$3\r\nGET\r\n:1\r\n"), None);
        assert_eq!(command(b"*3\r\n$3\r\nGET\r\n$1\r\nk\r\n"), None);
        assert_eq!(command(b"*1\r\n$3\r\nGETXX"), None);
    }

    #[test]
    fn command_from_inline_lines() {
        let c = cmd(b"PING\r\n");
        assert_eq!((c.name, c.key, c.argc), (&b"PING"[..], None, 1));
        let c = cmd(b"  get   key1 \n");
        assert_eq!(
            (c.name, c.key, c.argc),
            (&b"get"[..], Some(&b"key1"[..]), 2)
        );
        // Quotes group words; a plain quoted argument comes back without its quotes.
        let c = cmd(b"SET \"a b\" 'c d'\r\n");
        assert_eq!((c.key, c.argc), (Some(&b"a b"[..]), 3));
        // Escapes are not decoded: the raw text is returned.
        let c = cmd(b"GET \"a\\x41\\\"\"\r\n");
        assert_eq!((c.key, c.argc), (Some(&b"\"a\\x41\\\"\""[..]), 2));
        let c = cmd(b"ECHO 'it\\'s' x\r\n");
        assert_eq!((c.key, c.argc), (None, 3));
        // Tabs separate, \v does not (as sdssplitargs).
        assert_eq!(cmd(b"GET\tk\r\n").argc, 2);
        assert_eq!(cmd(b"GET k\x0bx\r\n").key, Some(&b"k\x0bx"[..]));
        // A NUL ends the line, as in the server's C string.
        assert_eq!(cmd(b"GET k\0 more\r\n").argc, 2);
        // The server answers nothing to an empty line, and closes on unbalanced quotes.
        for silent in [&b"\r\n"[..], b"\n", b"   \t\r\n", b"\0GET k\r\n"] {
            assert_eq!(command(silent), None, "{:?}", silent.escape_ascii());
        }
        for bad in [
            &b"SET \"a b\r\n"[..],
            b"SET 'a\r\n",
            b"SET \"a\"b\r\n",
            b"GET \"a\\\r\n",
        ] {
            assert_eq!(command(bad), None, "{:?}", bad.escape_ascii());
        }
    }

    #[test]
    fn key_rules_for_the_exceptions() {
        let k = |args: &[&str]| {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            key_of(&args).map(|k| String::from_utf8(k).unwrap())
        };
        let some = |s: &str| Some(s.to_owned());
        for keyless in [
            &["PING"][..],
            &["ping", "hello"],
            &["HELLO", "3", "AUTH", "u", "p"],
            &["AUTH", "secret"],
            &["SELECT", "1"],
            &["CLIENT", "SETNAME", "x"],
            &["INFO", "memory"],
            &["MULTI"],
            &["EXEC"],
            &["CONFIG", "GET", "maxmemory"],
            &["SCRIPT", "LOAD", "return 1"],
            &["KEYS", "*"],
            &["SCAN", "0", "MATCH", "a*"],
            &["EVAL", "return 1", "0"],
            &["EVAL", "return 1", "x"],
            &["OBJECT", "HELP"],
            &["MEMORY", "STATS"],
            &["MIGRATE", "h", "1", "", "0", "5", "KEYS", "a"],
            &["XREAD", "COUNT", "1"],
            &["UNSUBSCRIBE"],
        ] {
            assert_eq!(k(keyless), None, "{keyless:?}");
        }
        assert_eq!(k(&["EVAL", "return 1", "2", "k1", "k2", "a"]), some("k1"));
        assert_eq!(
            k(&["evalsha", "abc", "1", "unacked_mutex", "t"]),
            some("unacked_mutex")
        );
        assert_eq!(k(&["FCALL", "f", "1", "fk"]), some("fk"));
        assert_eq!(k(&["BRPOP", "q1", "q2", "1"]), some("q1"));
        assert_eq!(k(&["BLMPOP", "0", "2", "l1", "l2", "LEFT"]), some("l1"));
        assert_eq!(k(&["LMPOP", "1", "l1", "LEFT"]), some("l1"));
        assert_eq!(k(&["ZUNION", "2", "z1", "z2"]), some("z1"));
        assert_eq!(k(&["ZUNIONSTORE", "dest", "2", "z1", "z2"]), some("dest"));
        assert_eq!(
            k(&["XREAD", "COUNT", "2", "STREAMS", "s1", "s2", "0", "0"]),
            some("s1")
        );
        assert_eq!(
            k(&["xread", "block", "0", "streams", "s1", "$"]),
            some("s1")
        );
        assert_eq!(
            k(&[
                "XREADGROUP",
                "GROUP",
                "g",
                "STREAMS",
                "COUNT",
                "1",
                "STREAMS",
                "s",
                ">"
            ]),
            some("s")
        );
        assert_eq!(k(&["BITOP", "AND", "dest", "a", "b"]), some("dest"));
        assert_eq!(k(&["MIGRATE", "h", "1", "mk", "0", "5"]), some("mk"));
        assert_eq!(k(&["OBJECT", "ENCODING", "ok"]), some("ok"));
        assert_eq!(k(&["MEMORY", "USAGE", "mk"]), some("mk"));
        assert_eq!(k(&["XINFO", "STREAM", "xs"]), some("xs"));
        assert_eq!(k(&["XGROUP", "CREATE", "xs", "g", "$"]), some("xs"));
        assert_eq!(
            k(&["PUBLISH", "/0.celery.pidbox", "m"]),
            some("/0.celery.pidbox")
        );
        assert_eq!(k(&["SUBSCRIBE", "c1", "c2"]), some("c1"));
        assert_eq!(k(&["MSET", "a", "1", "b", "2"]), some("a"));
        assert_eq!(k(&["JSON.GET", "doc", "$"]), some("doc"));
        assert_eq!(k(&["GET"]), None);
        let long_name = "X".repeat(MAX_KNOWN_NAME + 5);
        assert_eq!(k(&[&long_name, "k"]), some("k"));
    }

    // ---- the Celery preset ------------------------------------------------------------------

    #[test]
    fn celery_preset_selects_broker_traffic() {
        let queues = ["celery", "default", "resilience"];
        let broker: &[&[&[u8]]] = &[
            &[b"LPUSH", b"celery", b"{\"body\": \"...\"}"],
            &[b"LPUSH", b"default\x06\x166", b"{}"],
            &[
                b"BRPOP",
                b"default",
                b"default\x06\x163",
                b"default\x06\x166",
                b"1",
            ],
            &[b"RPOP", b"resilience"],
            &[b"LLEN", b"celery\x06\x169"],
            &[b"DEL", b"default"],
            &[b"BRPOP", b"7bbbbdd2-9c0b.reply.celery.pidbox", b"1"],
            &[b"LLEN", b"celery@vm.celery.pidbox\x06\x163"],
            &[b"LLEN", b"celeryev.e367015b-a047-4437-9bdd-05ae8b8a115b"],
            &[
                b"SADD",
                b"_kombu.binding.default",
                b"default\x06\x16\x06\x16default",
            ],
            &[b"SMEMBERS", b"_kombu.binding.celery.pidbox"],
            &[b"ZADD", b"unacked_index", b"1795388648.5", b"tag"],
            &[b"HSET", b"unacked", b"tag", b"[...]"],
            &[b"SET", b"unacked_mutex", b"token", b"NX", b"PX", b"300000"],
            &[b"EVALSHA", b"c3f8", b"1", b"unacked_mutex", b"token"],
            &[b"EVALSHA", b"9a2b", b"1", b"_kombu.binding_deadlines", b"x"],
            &[b"SETEX", b"celery-task-meta-af9b", b"86400", b"{}"],
            &[b"GET", b"celery-task-meta-af9b"],
            &[b"SET", b"celery-taskset-meta-93cb.s", b"2", b"EX", b"86400"],
            &[b"PUBLISH", b"celery-task-meta-af9b", b"{}"],
            &[b"SUBSCRIBE", b"celery-task-meta-af9b"],
            &[b"PUBLISH", b"/0.celery.pidbox", b"{}"],
            &[b"PUBLISH", b"/0.celeryev/worker.heartbeat", b"{}"],
            &[b"PSUBSCRIBE", b"/0.celeryev/worker.*"],
            &[b"PSUBSCRIBE", b"/12.celery.pidbox"],
        ];
        for args in broker {
            let frame = encode_command(args);
            assert!(is_celery_broker(&cmd(&frame), &queues), "{args:?}");
        }
        let cache: &[&[&[u8]]] = &[
            &[b"GET", b"session:abc"],
            &[b"SET", b"celery", b"not a list command"],
            &[b"GET", b"default"],
            &[b"LPUSH", b"recent-items", b"x"],
            &[b"LPUSH", b"celery2", b"x"],
            &[b"LPUSH", b"celery\x06\x16", b"x"],
            &[b"LPUSH", b"celery\x06\x16x", b"x"],
            &[b"PUBLISH", b"notifications", b"x"],
            &[b"PUBLISH", b"/x.celery", b"x"],
            &[b"PING"],
            &[b"MULTI"],
            &[b"SCRIPT", b"LOAD", b"return 1"],
            &[b"EVAL", b"return 1", b"0"],
        ];
        for args in cache {
            let frame = encode_command(args);
            assert!(!is_celery_broker(&cmd(&frame), &queues), "{args:?}");
        }
        // Queue names come from the caller.
        let frame = encode_command(&[b"LPUSH", b"celery", b"x"]);
        assert!(!is_celery_broker(&cmd(&frame), &["default"]));
    }

    #[test]
    fn celery_preset_covers_every_keyed_command_of_a_real_worker() {
        // Captured from Celery 5.7 / kombu 5.7 / redis-py 8.1 with queue `default`: every
        // command that has a key is broker or result-backend traffic.
        for name in [
            "celery_worker",
            "celery_brpop",
            "celery_producer",
            "celery_result_pubsub",
        ] {
            let stream = std::fs::read(corpus_dir().join(format!("{name}.client.bin"))).unwrap();
            let mut keyed = 0;
            for frame in frames_with(&stream, request_len) {
                let c = cmd(frame);
                if c.key.is_some() {
                    keyed += 1;
                    assert!(is_celery_broker(&c, &["default"]), "{name}: {c:?}");
                } else {
                    assert!(!is_celery_broker(&c, &["default"]));
                }
            }
            assert!(keyed > 0, "{name}");
        }
    }

    // ---- encoders ---------------------------------------------------------------------------

    #[test]
    fn encode_command_reads_back() {
        let args: &[&[u8]] = &[b"SET", b"k", b"", b"a\r\nb"];
        let frame = encode_command(args);
        assert_eq!(
            &frame[..],
            b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n$4\r\na\r\nb\r\n"
        );
        assert_eq!(request_len(&frame), Ok(Some(frame.len())));
        assert_eq!(frame_len(&frame), Ok(Some(frame.len())));
        let c = cmd(&frame);
        assert_eq!((c.name, c.key, c.argc), (&b"SET"[..], Some(&b"k"[..]), 4));
        assert_eq!(&encode_command(&[])[..], b"*0\r\n");
    }

    #[test]
    fn error_reply_is_one_line() {
        assert_eq!(
            &error_reply("BUSY Redis is busy")[..],
            b"-BUSY Redis is busy\r\n"
        );
        assert_eq!(
            &error_reply("-ERR already dashed")[..],
            b"-ERR already dashed\r\n"
        );
        assert_eq!(&error_reply("ERR a\r\nb\nc\0")[..], b"-ERR a  b c \r\n");
        assert_eq!(&error_reply("")[..], b"-ERR\r\n");
        for message in ["x", "-", "\r\n", "ERR \u{e9}t\u{e9}", "LOADING\r\n+OK"] {
            let reply = error_reply(message);
            assert_eq!(frame_len(&reply), Ok(Some(reply.len())), "{message:?}");
            assert!(is_error(&reply));
        }
    }

    #[test]
    fn scripts_are_escaped_lua() {
        assert_eq!(
            error_script("LOADING Redis is loading"),
            "return redis.error_reply('LOADING Redis is loading')"
        );
        assert_eq!(
            error_script("-ERR it's a \\ and\r\nmore"),
            r"return redis.error_reply('ERR it\'s a \\ and  more')"
        );
        let eval = eval_command("return 1");
        assert_eq!(
            &eval[..],
            b"*3\r\n$4\r\nEVAL\r\n$8\r\nreturn 1\r\n$1\r\n0\r\n"
        );
        assert!(cmd(&eval).is("EVAL") && cmd(&eval).key.is_none());
    }

    #[test]
    fn lose_write_scripts_by_command() {
        let script = |args: &[&[u8]]| lose_write_script(&cmd(&encode_command(args)));
        assert_eq!(script(&[b"LPUSH", b"celery", b"m"]), Some("return 1"));
        assert_eq!(script(&[b"rpush", b"q", b"m"]), Some("return 1"));
        assert_eq!(script(&[b"HSET", b"unacked", b"t", b"m"]), Some("return 1"));
        assert_eq!(script(&[b"PUBLISH", b"c", b"m"]), Some("return 1"));
        assert_eq!(
            script(&[b"SETEX", b"celery-task-meta-1", b"10", b"{}"]),
            Some("return redis.status_reply('OK')")
        );
        assert_eq!(
            script(&[b"set", b"k", b"v"]),
            Some("return redis.status_reply('OK')")
        );
        for not_faked in [
            &[&b"GET"[..], b"k"][..],
            &[b"INCR", b"k"],
            &[b"BRPOP", b"q", b"1"],
        ] {
            assert_eq!(script(not_faked), None, "{not_faked:?}");
        }
    }

    /// The scripts against a real redis-server, in RESP2 and RESP3 and inside MULTI: the reply is
    /// exactly the intended one, in the rewritten request's position.
    #[test]
    fn scripts_answer_as_intended_on_a_real_server() {
        use std::io::{Read, Write};
        use std::time::Duration;

        let server = chaos_testbed::servers::RedisServer::start().expect("redis-server");
        let mut conn = std::net::TcpStream::connect(server.addr()).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = Vec::new();
        let mut exchange = |request: &[u8], replies: usize| -> Vec<Vec<u8>> {
            conn.write_all(request).unwrap();
            let mut out = Vec::new();
            let mut chunk = [0u8; 4096];
            while out.len() < replies {
                if let Some(len) = frame_len(&buf).unwrap() {
                    out.push(buf.drain(..len).collect());
                    continue;
                }
                let n = conn.read(&mut chunk).unwrap();
                assert!(n > 0, "server closed");
                buf.extend_from_slice(&chunk[..n]);
            }
            out
        };
        let set = encode_command(&[b"SET", b"k", b"v"]);
        let lpush = encode_command(&[b"LPUSH", b"celery", b"m"]);
        let cases: Vec<(String, &[u8])> = vec![
            (
                lose_write_script(&cmd(&lpush)).unwrap().to_owned(),
                b":1\r\n",
            ),
            (
                lose_write_script(&cmd(&set)).unwrap().to_owned(),
                b"+OK\r\n",
            ),
            (
                error_script("BUSY Redis is busy running a script."),
                b"-BUSY Redis is busy running a script.\r\n",
            ),
            (
                error_script("LOADING Redis is loading the dataset in memory"),
                b"-LOADING Redis is loading the dataset in memory\r\n",
            ),
            (
                error_script("OOM command not allowed when used memory > 'maxmemory'."),
                b"-OOM command not allowed when used memory > 'maxmemory'.\r\n",
            ),
            (
                error_script("-READONLY You can't write against a read only replica."),
                b"-READONLY You can't write against a read only replica.\r\n",
            ),
            (
                error_script("NOAUTH Authentication required."),
                b"-NOAUTH Authentication required.\r\n",
            ),
            (
                error_script("ERR back\\slash\r\nand 'quotes'"),
                b"-ERR back\\slash  and 'quotes'\r\n",
            ),
        ];
        for hello in ["2", "3"] {
            exchange(&encode_command(&[b"HELLO", hello.as_bytes()]), 1);
            for (script, expected) in &cases {
                let reply = exchange(&eval_command(script), 1);
                assert_eq!(
                    reply[0].escape_ascii().to_string(),
                    expected.escape_ascii().to_string()
                );
            }
            // Pipelined inside MULTI: the error is in the rewritten command's position.
            let mut pipeline = encode_command(&[b"MULTI"]).to_vec();
            pipeline.extend_from_slice(&encode_command(&[b"SET", b"a", b"1"]));
            pipeline.extend_from_slice(&eval_command(&error_script("LOADING injected")));
            pipeline.extend_from_slice(&encode_command(&[b"GET", b"a"]));
            pipeline.extend_from_slice(&encode_command(&[b"EXEC"]));
            let replies = exchange(&pipeline, 5);
            assert_eq!(
                &replies[4][..],
                b"*3\r\n+OK\r\n-LOADING injected\r\n$1\r\n1\r\n"
            );
        }
    }

    // ---- splitting and the corpus ------------------------------------------------------------

    /// A hand-made stream with every type, nesting, attributes, pushes and inline commands.
    fn mixed_stream() -> Vec<u8> {
        let mut s = Vec::new();
        for part in [
            &b"PING\r\n"[..],
            b"*3\r\n$3\r\nSET\r\n$5\r\nmykey\r\n$7\r\na\r\nb\r\nc\r\n",
            b"+OK\r\n-ERR x\r\n:1000\r\n$-1\r\n*-1\r\n$0\r\n\r\n",
            b"*2\r\n*2\r\n:1\r\n:2\r\n*1\r\n*0\r\n",
            b"%2\r\n+a\r\n~2\r\n:1\r\n#f\r\n+b\r\n%1\r\n_\r\n,1.5\r\n",
            b">3\r\n$7\r\nmessage\r\n$7\r\nchannel\r\n$2\r\nhi\r\n",
            b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:1\r\n(12345678901234567890\r\n",
            b"!10\r\nERR failed\r\n=8\r\ntxt:abcd\r\n",
            b"GET \"a b\"\n",
            b"\r\n",
        ] {
            s.extend_from_slice(part);
        }
        s
    }

    #[test]
    fn splitting_at_every_offset_gives_the_same_frames() {
        let stream = mixed_stream();
        let whole = frames_with(&stream, frame_len);
        assert_eq!(whole.len(), 16);
        assert_eq!(check_splits(&stream, false), whole);
        let lens: Vec<usize> = whole.iter().map(|f| f.len()).collect();
        // Literally: the stream arrives in two reads cut at k, for every k.
        for k in 0..=stream.len() {
            assert_eq!(frame_chunked(&stream, &[k], false), lens, "cut at {k}");
        }
        // And byte by byte.
        let every: Vec<usize> = (0..stream.len()).collect();
        assert_eq!(frame_chunked(&stream, &every, false), lens);
    }

    fn corpus_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/redis")
    }

    #[test]
    fn corpus_frames_completely_at_every_split() {
        let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
            .expect("corpus dir")
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 10, "corpus: {files:?}");
        for path in files {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let stream = std::fs::read(&path).unwrap();
            assert!(stream.len() < 20 * 1024, "{name} is too big for the corpus");
            let frames = check_splits(&stream, false);
            assert!(!frames.is_empty(), "{name}");
            if name.ends_with(".client.bin") {
                // Real clients send nothing where the two framings differ.
                assert_eq!(check_splits(&stream, true), frames, "{name}");
            }
        }
    }

    /// Requests and replies of each captured session pair up once pushes and requests the
    /// server skips are set aside, which is what the proxy's pairing will rely on.
    #[test]
    fn corpus_sessions_pair_requests_with_replies() {
        // (session, requests, requests the server skips, replies, pushes)
        // Counted independently with a small Python parser when the corpus was captured.
        let sessions = [
            ("resp2_redis_py", 46, 0, 46, 0),
            ("resp3_types", 31, 0, 31, 2),
            ("inline", 11, 2, 9, 0),
            ("celery_worker", 90, 0, 90, 0),
            ("celery_producer", 19, 0, 19, 0),
            // The last BRPOP was still blocked when the worker stopped.
            ("celery_brpop", 46, 0, 45, 0),
            // In RESP3, (un)subscribe confirmations are pushes, not replies.
            ("celery_result_pubsub", 14, 0, 4, 15),
        ];
        for (name, requests, skipped, replies, pushes) in sessions {
            let read = |side: &str| std::fs::read(corpus_dir().join(format!("{name}.{side}.bin")));
            let client = read("client").unwrap();
            let server = read("server").unwrap();
            let sent = frames_with(&client, request_len);
            let got = frames_with(&server, frame_len);
            let silent = sent.iter().filter(|f| command(f).is_none()).count();
            let push = got.iter().filter(|f| is_push(f)).count();
            assert_eq!(
                (sent.len(), silent, got.len() - push, push),
                (requests, skipped, replies, pushes),
                "{name}"
            );
        }
    }

    // ---- fuzzing ----------------------------------------------------------------------------

    /// A generated RESP value, encoded by the test itself.
    #[derive(Debug, Clone)]
    enum Value {
        Line(u8, Vec<u8>),
        Blob(u8, Vec<u8>),
        NullBulk,
        NullArray,
        Aggregate(u8, Vec<Value>),
        Map(Vec<(Value, Value)>),
        Attributed(Vec<(Value, Value)>, Box<Value>),
    }

    fn encode(value: &Value, out: &mut Vec<u8>) {
        match value {
            Value::Line(tag, text) => {
                out.push(*tag);
                out.extend_from_slice(text);
                out.extend_from_slice(CRLF);
            }
            Value::Blob(tag, data) => {
                out.extend_from_slice(format!("{}{}\r\n", *tag as char, data.len()).as_bytes());
                out.extend_from_slice(data);
                out.extend_from_slice(CRLF);
            }
            Value::NullBulk => out.extend_from_slice(b"$-1\r\n"),
            Value::NullArray => out.extend_from_slice(b"*-1\r\n"),
            Value::Aggregate(tag, items) => {
                out.extend_from_slice(format!("{}{}\r\n", *tag as char, items.len()).as_bytes());
                items.iter().for_each(|item| encode(item, out));
            }
            Value::Map(pairs) | Value::Attributed(pairs, _) => {
                let tag = if matches!(value, Value::Map(_)) {
                    '%'
                } else {
                    '|'
                };
                out.extend_from_slice(format!("{tag}{}\r\n", pairs.len()).as_bytes());
                for (k, v) in pairs {
                    encode(k, out);
                    encode(v, out);
                }
                if let Value::Attributed(_, inner) = value {
                    encode(inner, out);
                }
            }
        }
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        let line_text =
            proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), 0x20u8..0x7f], 0..12)
                .prop_filter("no CRLF inside a line", |t| {
                    !t.windows(2).any(|w| w == CRLF)
                });
        let leaf = prop_oneof![
            (proptest::sample::select(b"+-:,(#_".to_vec()), line_text)
                .prop_map(|(tag, text)| Value::Line(tag, text)),
            (
                proptest::sample::select(b"$!=".to_vec()),
                proptest::collection::vec(any::<u8>(), 0..24)
            )
                .prop_map(|(tag, data)| Value::Blob(tag, data)),
            Just(Value::NullBulk),
            Just(Value::NullArray),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                (
                    proptest::sample::select(b"*~>".to_vec()),
                    proptest::collection::vec(inner.clone(), 0..6)
                )
                    .prop_map(|(tag, items)| Value::Aggregate(tag, items)),
                proptest::collection::vec((inner.clone(), inner.clone()), 0..4)
                    .prop_map(Value::Map),
                (
                    proptest::collection::vec((inner.clone(), inner.clone()), 0..3),
                    inner
                )
                    .prop_map(|(pairs, v)| Value::Attributed(pairs, Box::new(v))),
            ]
        })
    }

    /// A top-level frame: a value, or an inline command line.
    fn frame_strategy() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => value_strategy().prop_map(|v| {
                let mut out = Vec::new();
                encode(&v, &mut out);
                out
            }),
            1 => ("[A-Za-z][A-Za-z0-9 \"'.:-]{0,20}", any::<bool>()).prop_map(|(line, cr)| {
                let mut out = line.into_bytes();
                out.extend_from_slice(if cr { b"\r\n" } else { b"\n" });
                out
            }),
        ]
    }

    /// Bytes that look like RESP, to reach deep into the framer.
    fn resp_soup() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            proptest::sample::select(vec![
                &b"*1\r\n"[..],
                b"*2\r\n",
                b"%1\r\n",
                b"|1\r\n",
                b"~0\r\n",
                b">1\r\n",
                b"$3\r\n",
                b"$-1\r\n",
                b"*-1\r\n",
                b"foo",
                b"\r\n",
                b"\r",
                b"\n",
                b":1\r\n",
                b"+OK\r\n",
                b"$?\r\n",
                b";",
                b".",
                b"-",
                b"?",
                b"99999999999999999999",
                b"_\r\n",
                b"#t",
                b" \"",
                b"'",
            ])
            .prop_map(<[u8]>::to_vec),
            any::<u8>().prop_map(|b| vec![b]),
        ];
        proptest::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
    }

    /// Never panics, and a resumable framer fed every prefix agrees with a fresh one.
    fn check_arbitrary(bytes: &[u8]) {
        let _ = command(bytes);
        let _ = (is_push(bytes), is_error(bytes));
        for requests in [false, true] {
            let fresh = |prefix: &[u8]| {
                if requests {
                    request_len(prefix)
                } else {
                    frame_len(prefix)
                }
            };
            let mut framer = if requests {
                Framer::for_requests()
            } else {
                Framer::new()
            };
            for k in 0..=bytes.len() {
                let resumed = framer.frame_len(&bytes[..k]);
                assert_eq!(resumed, fresh(&bytes[..k]), "prefix {k}");
                match resumed {
                    Ok(None) => {}
                    Ok(Some(len)) => {
                        assert!(len > 0 && len <= k);
                        let _ = command(&bytes[..len]);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            check_arbitrary(&bytes);
        }

        #[test]
        fn resp_like_bytes_never_panic(bytes in resp_soup()) {
            check_arbitrary(&bytes);
        }

        #[test]
        fn generated_streams_frame_at_their_boundaries(
            frames in proptest::collection::vec(frame_strategy(), 1..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let stream = frames.concat();
            let expected: Vec<usize> = frames.iter().map(Vec::len).collect();
            let whole: Vec<usize> = frames_with(&stream, frame_len).iter().map(|f| f.len()).collect();
            prop_assert_eq!(&whole, &expected);
            let cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            prop_assert_eq!(&frame_chunked(&stream, &cuts, false), &expected);
            for frame in &frames {
                prop_assert_eq!(check_splits(frame, false).len(), 1);
            }
        }

        #[test]
        fn generated_commands_round_trip(
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 1..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let mut args = args;
            args[0].splice(0..0, b"X-".iter().copied()); // not in the key table
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let frame = encode_command(&refs);
            prop_assert_eq!(request_len(&frame), Ok(Some(frame.len())));
            let c = command(&frame).unwrap();
            prop_assert_eq!(c.name, refs[0]);
            prop_assert_eq!(c.key, refs.get(1).copied());
            prop_assert_eq!(c.argc, refs.len());
            let pipeline = frame.repeat(3);
            let cuts: Vec<usize> = cuts.iter().map(|i| i.index(pipeline.len() + 1)).collect();
            prop_assert_eq!(frame_chunked(&pipeline, &cuts, true), vec![frame.len(); 3]);
        }
    }
}
