//! The PostgreSQL frontend/backend protocol, version 3: a pure framing codec.
//!
//! Covers what the proxy needs to cut both directions into messages and to rewrite a matched
//! request so that the real server produces the error itself:
//! - Frontend (client -> server), with a two-phase [`FrontendFramer`]: first the untyped startup
//!   packets (`int32 length` + `int32 code`: StartupMessage, SSLRequest, GSSENCRequest,
//!   CancelRequest), then typed messages (`byte tag` + `int32 length`, the length counting itself
//!   but not the tag). Query, Parse, Bind and Execute expose the SQL text and the statement and
//!   portal names as borrowed `&str`; every other message is only framed.
//! - Backend (server -> client), all typed: [`parse_backend`] reports ReadyForQuery (with the
//!   transaction status), ErrorResponse, ParseComplete, BindComplete and CommandComplete; the rest
//!   is framed as [`Backend::Other`].
//! - Encoders for the messages the proxy injects ([`error_response`], [`ready_for_query`],
//!   [`query`], [`parse`], [`bind`], [`execute`]) and [`raise_sql`], a statement that makes the
//!   server raise a chosen SQLSTATE and message.
//! - Matcher helpers on SQL text: [`statement_kind`] and [`tables`] (both heuristic, no parser).
//!
//! Not covered, and what the proxy does then:
//! - Bodies the matcher does not need are never decoded: Bind parameters, DataRow values, COPY
//!   data, authentication exchanges (`p`), FunctionCall. They are framed and forwarded byte for
//!   byte.
//! - Unknown tags and malformed bodies whose length header is sound (a Query without its NUL,
//!   SQL that is not UTF-8) become `Other { tag }`: pass-through, and the server or the client
//!   reports the protocol violation itself, as it would without the proxy.
//! - Encryption: the proxy answers SSLRequest and GSSENCRequest with `N` itself (so they never
//!   reach the server and the session stays plaintext). If one were forwarded and the server
//!   answered `S` or `G`, the stream would turn into TLS/GSS bytes this codec cannot frame.
//!   Likewise [`parse_backend`] assumes that single-byte answer was not forwarded.
//! - Protocol versions other than 3.x, and unknown startup request codes, are framed as
//!   [`Frontend::Startup`] without decoding the body; the server rejects them with an
//!   ErrorResponse and closes, which reaches the client unchanged.
//! - Replication (`replication=...` startup parameter, CopyBoth) frames like any other session
//!   but nothing in it is matched.
//!
//! Errors ([`CodecError`]) are kept for streams that can never be valid: a length header out of
//! range, bytes after a CancelRequest, a ReadyForQuery without its status byte. The proxy closes
//! that one connection.
//!
//! Limits: [`MAX_STARTUP_LEN`] and [`MAX_MESSAGE_LEN`] (the server's own). Nothing in this
//! protocol nests and nothing here recurses (nested SQL block comments are counted), so there is
//! no depth limit; the SQL helpers run in time linear in the SQL text.
//!
//! References: <https://www.postgresql.org/docs/current/protocol-overview.html>,
//! <https://www.postgresql.org/docs/current/protocol-flow.html>,
//! <https://www.postgresql.org/docs/current/protocol-message-formats.html>,
//! <https://www.postgresql.org/docs/current/protocol-error-fields.html>,
//! <https://www.postgresql.org/docs/current/plpgsql-errors-and-messages.html>.

use std::collections::HashSet;

use bytes::{BufMut, Bytes, BytesMut};

/// Largest accepted typed message, in bytes, counting the length field but not the tag.
///
/// The server's own limit for its largest messages (Query, Bind, CopyData: `PQ_LARGE_MESSAGE_LIMIT`
/// = `MaxAllocSize - 1`, 1 GiB - 1); a longer length header can only be a corrupt or hostile
/// stream, so it is refused before buffering anything.
pub const MAX_MESSAGE_LEN: usize = 0x3FFF_FFFF;

/// Largest accepted startup packet, in bytes, counting the length field.
///
/// PostgreSQL's `MAX_STARTUP_PACKET_LENGTH`: the server drops a longer startup packet.
pub const MAX_STARTUP_LEN: usize = 10_000;

/// Smallest startup packet: the length and the request code, 4 bytes each.
pub const MIN_STARTUP_LEN: usize = 8;

/// Smallest typed message length: the length field alone (an empty body, e.g. Sync).
pub const MIN_MESSAGE_LEN: usize = 4;

/// Bytes before a typed message's body: the tag and the length.
const TYPED_HEADER_LEN: usize = 5;

/// Length of a CancelRequest: length, code, process id, secret key.
pub const CANCEL_REQUEST_LEN: usize = 16;

/// Request codes of the untyped startup packets (the second int32).
pub mod startup_code {
    /// StartupMessage, protocol 3.0 (`3 << 16`); 3.x minor versions share its layout.
    pub const PROTOCOL_3_0: u32 = 196_608;
    /// The major protocol version a StartupMessage's code carries in its high 16 bits.
    pub const PROTOCOL_MAJOR_3: u32 = 3;
    /// SSLRequest (`1234 << 16 | 5679`): asks to switch to TLS; the proxy answers `N`.
    pub const SSL_REQUEST: u32 = 80_877_103;
    /// GSSENCRequest (`1234 << 16 | 5680`): asks for GSSAPI encryption; the proxy answers `N`.
    pub const GSSENC_REQUEST: u32 = 80_877_104;
    /// CancelRequest (`1234 << 16 | 5678`): cancels a query of another session, then closes.
    pub const CANCEL_REQUEST: u32 = 80_877_102;
}

/// Tags (first byte) of typed frontend messages (client -> server).
pub mod frontend_tag {
    /// Query: one SQL string, simple query protocol.
    pub const QUERY: u8 = b'Q';
    /// Parse: statement name, SQL, parameter type OIDs (extended protocol).
    pub const PARSE: u8 = b'P';
    /// Bind: portal name, statement name, parameters, result formats.
    pub const BIND: u8 = b'B';
    /// Execute: portal name, row limit.
    pub const EXECUTE: u8 = b'E';
    /// Describe: a statement (`S`) or a portal (`P`).
    pub const DESCRIBE: u8 = b'D';
    /// Close: a statement (`S`) or a portal (`P`).
    pub const CLOSE: u8 = b'C';
    /// Flush: asks the server to send what it has.
    pub const FLUSH: u8 = b'H';
    /// Sync: ends an extended-protocol batch; the server answers ReadyForQuery.
    pub const SYNC: u8 = b'S';
    /// Terminate: the client is leaving.
    pub const TERMINATE: u8 = b'X';
    /// CopyData (both directions).
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone (both directions).
    pub const COPY_DONE: u8 = b'c';
    /// CopyFail: the client aborts COPY FROM STDIN.
    pub const COPY_FAIL: u8 = b'f';
    /// FunctionCall (legacy fast-path).
    pub const FUNCTION_CALL: u8 = b'F';
    /// PasswordMessage, SASLInitialResponse, SASLResponse or GSSResponse (by context).
    pub const PASSWORD: u8 = b'p';
}

/// Tags (first byte) of backend messages (server -> client).
pub mod backend_tag {
    /// Authentication request or result (`AuthenticationOk`, SASL steps, ...).
    pub const AUTHENTICATION: u8 = b'R';
    /// BackendKeyData: the process id and secret a CancelRequest needs.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// ParameterStatus: a run-time parameter's value.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// ReadyForQuery: the server waits for a new query; body = transaction status.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// ErrorResponse: fields (`S`, `V`, `C`, `M`, ...) each a code byte and a C-string.
    pub const ERROR_RESPONSE: u8 = b'E';
    /// NoticeResponse: same layout as ErrorResponse, not an error.
    pub const NOTICE_RESPONSE: u8 = b'N';
    /// ParseComplete.
    pub const PARSE_COMPLETE: u8 = b'1';
    /// BindComplete.
    pub const BIND_COMPLETE: u8 = b'2';
    /// CloseComplete.
    pub const CLOSE_COMPLETE: u8 = b'3';
    /// CommandComplete: the command tag, e.g. `INSERT 0 1`.
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// RowDescription.
    pub const ROW_DESCRIPTION: u8 = b'T';
    /// DataRow.
    pub const DATA_ROW: u8 = b'D';
    /// NoData: the statement returns no rows.
    pub const NO_DATA: u8 = b'n';
    /// EmptyQueryResponse: the query string was empty.
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    /// ParameterDescription.
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    /// PortalSuspended: Execute's row limit was reached.
    pub const PORTAL_SUSPENDED: u8 = b's';
    /// NotificationResponse (LISTEN/NOTIFY), asynchronous.
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
}

/// Transaction status bytes carried by ReadyForQuery.
pub mod transaction_status {
    /// Idle: not in a transaction block.
    pub const IDLE: u8 = b'I';
    /// In a transaction block.
    pub const IN_TRANSACTION: u8 = b'T';
    /// In a failed transaction block: queries are rejected until the block ends.
    pub const FAILED: u8 = b'E';
}

/// Field codes of ErrorResponse and NoticeResponse.
pub mod error_field {
    /// Severity, localized (`ERROR`, `FATAL`, ... or a translation).
    pub const SEVERITY: u8 = b'S';
    /// Severity, never localized (PostgreSQL 9.6+).
    pub const SEVERITY_NONLOCALIZED: u8 = b'V';
    /// SQLSTATE code.
    pub const CODE: u8 = b'C';
    /// Primary human-readable message.
    pub const MESSAGE: u8 = b'M';
    /// Ends the field list.
    pub const TERMINATOR: u8 = 0;
}

/// A stream the codec can never frame; the proxy closes that one connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// A startup packet's length is outside `MIN_STARTUP_LEN..=MAX_STARTUP_LEN`.
    #[error("invalid startup packet length {len} (expected {MIN_STARTUP_LEN}..={MAX_STARTUP_LEN})")]
    StartupLength {
        /// The length header as sent.
        len: i32,
    },
    /// A typed message's length is below `MIN_MESSAGE_LEN` or above `MAX_MESSAGE_LEN`.
    #[error(
        "message {} has invalid length {len} (expected {MIN_MESSAGE_LEN}..={MAX_MESSAGE_LEN})",
        show_tag(*tag)
    )]
    MessageLength {
        /// The message's tag byte.
        tag: u8,
        /// The length header as sent.
        len: i32,
    },
    /// A CancelRequest whose length is not `CANCEL_REQUEST_LEN`.
    #[error("invalid CancelRequest length {len} (expected {CANCEL_REQUEST_LEN})")]
    CancelLength {
        /// The length header as sent.
        len: i32,
    },
    /// The client sent more bytes after a CancelRequest, which ends its connection.
    #[error("bytes after a CancelRequest")]
    AfterCancel,
    /// A ReadyForQuery whose body is not the single transaction status byte.
    #[error("ReadyForQuery with a {len}-byte body (expected 1)")]
    ReadyForQueryLength {
        /// The body length found.
        len: usize,
    },
}

/// `'Q' (0x51)`, for error texts; a tag may be any byte.
fn show_tag(tag: u8) -> String {
    if tag.is_ascii_graphic() {
        format!("'{}' (0x{tag:02x})", char::from(tag))
    } else {
        format!("0x{tag:02x}")
    }
}

/// A frontend message, as far as matchers look into it; borrows the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend<'a> {
    /// StartupMessage. For protocol 3.x, `user` and `database` are the parameters of those names
    /// when present and UTF-8 (the server defaults a missing database to the user; this does
    /// not). Other protocol versions and unknown request codes are framed as `Startup` with
    /// `None`/`None` and left for the server to reject. The framer is in the typed phase after it.
    Startup {
        /// The `user` parameter.
        user: Option<&'a str>,
        /// The `database` parameter.
        database: Option<&'a str>,
    },
    /// SSLRequest: the proxy answers `N` and the client sends another startup packet.
    SslRequest,
    /// GSSENCRequest: the proxy answers `N` and the client sends another startup packet.
    GssEncRequest,
    /// CancelRequest: forwarded; the connection carries nothing else.
    Cancel,
    /// Query (`Q`), simple protocol: the SQL string (possibly several statements).
    Query {
        /// The SQL text.
        sql: &'a str,
    },
    /// Parse (`P`), extended protocol: the statement name (`""` = unnamed) and its SQL.
    Parse {
        /// The prepared statement's name.
        statement: &'a str,
        /// The SQL text.
        sql: &'a str,
    },
    /// Bind (`B`): the portal (`""` = unnamed) created from a prepared statement.
    Bind {
        /// The portal's name.
        portal: &'a str,
        /// The prepared statement's name.
        statement: &'a str,
    },
    /// Execute (`E`): runs a portal.
    Execute {
        /// The portal's name.
        portal: &'a str,
    },
    /// Describe (`D`).
    Describe,
    /// Close (`C`).
    Close,
    /// Flush (`H`).
    Flush,
    /// Sync (`S`).
    Sync,
    /// Terminate (`X`).
    Terminate,
    /// Any other typed message (CopyData, CopyDone, CopyFail, FunctionCall, password, unknown
    /// tags), and Query/Parse/Bind/Execute whose body is malformed or not UTF-8: forwarded as is.
    Other {
        /// The message's tag byte.
        tag: u8,
    },
}

/// Which kind of message the framer expects next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Untyped startup packets: before the StartupMessage.
    Startup,
    /// Typed messages: after the StartupMessage.
    Typed,
    /// After a CancelRequest: nothing may follow.
    Cancelled,
}

/// Cuts the client's byte stream into [`Frontend`] messages, tracking the startup phase.
///
/// The framer owns no buffer: the caller keeps the bytes, calls [`FrontendFramer::next`] on the
/// unconsumed part, and drops the returned length once the message is forwarded. Only a
/// complete message changes the phase, so calling again with more bytes after `Ok(None)` is
/// always right.
#[derive(Debug, Clone)]
pub struct FrontendFramer {
    phase: Phase,
}

impl Default for FrontendFramer {
    fn default() -> Self {
        Self::new()
    }
}

impl FrontendFramer {
    /// A framer at the start of a connection (expecting a startup packet).
    pub fn new() -> Self {
        Self {
            phase: Phase::Startup,
        }
    }

    /// Whether the next message is an untyped startup packet (no StartupMessage seen yet).
    pub fn in_startup(&self) -> bool {
        self.phase == Phase::Startup
    }

    /// Parses the next message at the start of `buf`; `Ok(None)` = need more bytes.
    ///
    /// On success returns the message and its length in bytes (header included).
    pub fn next<'a>(&mut self, buf: &'a [u8]) -> Result<Option<(Frontend<'a>, usize)>, CodecError> {
        match self.phase {
            Phase::Startup => {
                let parsed = parse_startup(buf)?;
                if let Some((message, _)) = parsed {
                    match message {
                        Frontend::Startup { .. } => self.phase = Phase::Typed,
                        Frontend::Cancel => self.phase = Phase::Cancelled,
                        _ => {}
                    }
                }
                Ok(parsed)
            }
            Phase::Typed => parse_frontend_typed(buf),
            Phase::Cancelled if buf.is_empty() => Ok(None),
            Phase::Cancelled => Err(CodecError::AfterCancel),
        }
    }
}

/// Big-endian `i32` at `at`, if the bytes are there.
fn read_i32(buf: &[u8], at: usize) -> Option<i32> {
    let end = at.checked_add(4)?;
    let bytes: [u8; 4] = buf.get(at..end)?.try_into().ok()?;
    Some(i32::from_be_bytes(bytes))
}

/// Splits a NUL-terminated string off the front of `buf`: `(string, rest after the NUL)`.
fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|&b| b == 0)?;
    Some((buf.get(..nul)?, buf.get(nul + 1..)?))
}

/// A NUL-terminated UTF-8 string off the front of `buf`.
fn cstr_utf8(buf: &[u8]) -> Option<(&str, &[u8])> {
    let (s, rest) = cstr(buf)?;
    Some((std::str::from_utf8(s).ok()?, rest))
}

/// One untyped startup packet.
fn parse_startup(buf: &[u8]) -> Result<Option<(Frontend<'_>, usize)>, CodecError> {
    let Some(len) = read_i32(buf, 0) else {
        return Ok(None);
    };
    let total = usize::try_from(len)
        .ok()
        .filter(|l| (MIN_STARTUP_LEN..=MAX_STARTUP_LEN).contains(l))
        .ok_or(CodecError::StartupLength { len })?;
    let Some(packet) = buf.get(..total) else {
        return Ok(None);
    };
    // `total >= MIN_STARTUP_LEN`, so the code is there.
    let code = read_i32(packet, 4).ok_or(CodecError::StartupLength { len })? as u32;
    let body = packet.get(MIN_STARTUP_LEN..).unwrap_or_default();
    let message = match code {
        startup_code::SSL_REQUEST => Frontend::SslRequest,
        startup_code::GSSENC_REQUEST => Frontend::GssEncRequest,
        startup_code::CANCEL_REQUEST if total == CANCEL_REQUEST_LEN => Frontend::Cancel,
        startup_code::CANCEL_REQUEST => return Err(CodecError::CancelLength { len }),
        code if code >> 16 == startup_code::PROTOCOL_MAJOR_3 => {
            let (user, database) = startup_user_database(body);
            Frontend::Startup { user, database }
        }
        _ => Frontend::Startup {
            user: None,
            database: None,
        },
    };
    Ok(Some((message, total)))
}

/// The `user` and `database` values of a StartupMessage's key/value list (best effort: stops at
/// the first malformed pair).
fn startup_user_database(mut body: &[u8]) -> (Option<&str>, Option<&str>) {
    let (mut user, mut database) = (None, None);
    while let Some((key, rest)) = cstr(body) {
        if key.is_empty() {
            break;
        }
        let Some((value, rest)) = cstr(rest) else {
            break;
        };
        let value = std::str::from_utf8(value).ok();
        match key {
            b"user" => user = value,
            b"database" => database = value,
            _ => {}
        }
        body = rest;
    }
    (user, database)
}

/// Reads the 5-byte header of the typed message at the start of `buf`: its tag and its total
/// length in bytes (tag included). `Ok(None)` = fewer than 5 bytes.
///
/// The header alone is enough to forward a large message (CopyData, DataRow) in pieces as it
/// arrives instead of buffering it whole; [`FrontendFramer::next`] and [`parse_backend`] need
/// the complete message.
pub fn typed_header(buf: &[u8]) -> Result<Option<(u8, usize)>, CodecError> {
    let (Some(&tag), Some(len)) = (buf.first(), read_i32(buf, 1)) else {
        return Ok(None);
    };
    let body_and_len = usize::try_from(len)
        .ok()
        .filter(|l| (MIN_MESSAGE_LEN..=MAX_MESSAGE_LEN).contains(l))
        .ok_or(CodecError::MessageLength { tag, len })?;
    Ok(Some((tag, body_and_len + 1)))
}

/// A complete typed message, borrowed from the input.
struct Typed<'a> {
    tag: u8,
    body: &'a [u8],
    /// Length in bytes, header included.
    total: usize,
}

/// The complete typed message at the start of `buf`, if it is all there.
fn frame_typed(buf: &[u8]) -> Result<Option<Typed<'_>>, CodecError> {
    let Some((tag, total)) = typed_header(buf)? else {
        return Ok(None);
    };
    Ok(buf
        .get(TYPED_HEADER_LEN..total)
        .map(|body| Typed { tag, body, total }))
}

/// One typed frontend message.
fn parse_frontend_typed(buf: &[u8]) -> Result<Option<(Frontend<'_>, usize)>, CodecError> {
    let Some(Typed { tag, body, total }) = frame_typed(buf)? else {
        return Ok(None);
    };
    Ok(Some((decode_frontend(tag, body), total)))
}

/// What a typed frontend message says; a body that does not decode is `Other`.
fn decode_frontend(tag: u8, body: &[u8]) -> Frontend<'_> {
    use frontend_tag as t;
    let decoded = match tag {
        t::QUERY => cstr_utf8(body)
            .filter(|(_, rest)| rest.is_empty())
            .map(|(sql, _)| Frontend::Query { sql }),
        t::PARSE => cstr_utf8(body).and_then(|(statement, rest)| {
            let (sql, _param_types) = cstr_utf8(rest)?;
            Some(Frontend::Parse { statement, sql })
        }),
        t::BIND => cstr_utf8(body).and_then(|(portal, rest)| {
            let (statement, _params) = cstr_utf8(rest)?;
            Some(Frontend::Bind { portal, statement })
        }),
        t::EXECUTE => cstr_utf8(body).map(|(portal, _max_rows)| Frontend::Execute { portal }),
        t::DESCRIBE => Some(Frontend::Describe),
        t::CLOSE => Some(Frontend::Close),
        t::FLUSH => Some(Frontend::Flush),
        t::SYNC => Some(Frontend::Sync),
        t::TERMINATE => Some(Frontend::Terminate),
        _ => None,
    };
    decoded.unwrap_or(Frontend::Other { tag })
}

/// A backend message, as far as the proxy looks into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// ReadyForQuery (`Z`): the end of a query cycle, with the transaction status
    /// ([`transaction_status`]: `I`, `T` or `E`).
    ReadyForQuery {
        /// The transaction status byte.
        status: u8,
    },
    /// ErrorResponse (`E`).
    ErrorResponse,
    /// ParseComplete (`1`).
    ParseComplete,
    /// BindComplete (`2`).
    BindComplete,
    /// CommandComplete (`C`).
    CommandComplete,
    /// Any other message, forwarded as is.
    Other {
        /// The message's tag byte.
        tag: u8,
    },
}

/// Parses the backend message at the start of `buf`; `Ok(None)` = need more bytes.
///
/// On success returns the message and its length in bytes (header included). The server's
/// single-byte answer to SSLRequest/GSSENCRequest is not a typed message: the proxy answers
/// those itself and never forwards them.
pub fn parse_backend(buf: &[u8]) -> Result<Option<(Backend, usize)>, CodecError> {
    use backend_tag as t;
    let Some(Typed { tag, body, total }) = frame_typed(buf)? else {
        return Ok(None);
    };
    let message = match tag {
        t::READY_FOR_QUERY => match body {
            &[status] => Backend::ReadyForQuery { status },
            _ => return Err(CodecError::ReadyForQueryLength { len: body.len() }),
        },
        t::ERROR_RESPONSE => Backend::ErrorResponse,
        t::PARSE_COMPLETE => Backend::ParseComplete,
        t::BIND_COMPLETE => Backend::BindComplete,
        t::COMMAND_COMPLETE => Backend::CommandComplete,
        tag => Backend::Other { tag },
    };
    Ok(Some((message, total)))
}

/// Builds a typed message: tag, length, then what `body` writes.
///
/// A body over [`MAX_MESSAGE_LEN`] gets a saturated length header that [`typed_header`] rejects,
/// rather than a panic; the proxy only encodes short texts.
fn typed_message(tag: u8, body_len: usize, body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let len = body_len.saturating_add(MIN_MESSAGE_LEN);
    let mut out = BytesMut::with_capacity(len.saturating_add(1));
    out.put_u8(tag);
    out.put_i32(i32::try_from(len).unwrap_or(i32::MAX));
    body(&mut out);
    out.freeze()
}

/// Bytes of `s` as a C-string body: NUL cannot be represented in one, so NULs are dropped.
fn cstr_len(s: &str) -> usize {
    s.bytes().filter(|&b| b != 0).count().saturating_add(1)
}

/// Writes `s` as a C-string, dropping any NUL inside it (see [`cstr_len`]).
fn put_cstr(out: &mut BytesMut, s: &str) {
    for part in s.split('\0') {
        out.put_slice(part.as_bytes());
    }
    out.put_u8(0);
}

/// An ErrorResponse with `S` and `V` (both `severity`), `C` (`sqlstate`) and `M` (`message`).
///
/// For errors the proxy answers itself (e.g. `FATAL` 53300 when refusing a session). NUL bytes
/// inside the texts are dropped (fields are C-strings).
pub fn error_response(severity: &str, sqlstate: &str, message: &str) -> Bytes {
    use error_field as f;
    let fields = [
        (f::SEVERITY, severity),
        (f::SEVERITY_NONLOCALIZED, severity),
        (f::CODE, sqlstate),
        (f::MESSAGE, message),
    ];
    let body_len = fields.iter().fold(1usize, |n, (_, s)| {
        n.saturating_add(1).saturating_add(cstr_len(s))
    });
    typed_message(backend_tag::ERROR_RESPONSE, body_len, |out| {
        for (code, text) in fields {
            out.put_u8(code);
            put_cstr(out, text);
        }
        out.put_u8(f::TERMINATOR);
    })
}

/// A ReadyForQuery with transaction status `status` (see [`transaction_status`]).
pub fn ready_for_query(status: u8) -> Bytes {
    typed_message(backend_tag::READY_FOR_QUERY, 1, |out| out.put_u8(status))
}

/// A simple-protocol Query (`Q`) for `sql` (NUL bytes dropped).
pub fn query(sql: &str) -> Bytes {
    typed_message(frontend_tag::QUERY, cstr_len(sql), |out| put_cstr(out, sql))
}

/// A Parse (`P`) of `sql` as prepared statement `statement` (`""` = unnamed), with no
/// parameter types.
pub fn parse(statement: &str, sql: &str) -> Bytes {
    let body_len = cstr_len(statement)
        .saturating_add(cstr_len(sql))
        .saturating_add(2);
    typed_message(frontend_tag::PARSE, body_len, |out| {
        put_cstr(out, statement);
        put_cstr(out, sql);
        out.put_i16(0); // parameter type count
    })
}

/// A Bind (`B`) of prepared statement `statement` to portal `portal` (`""` = unnamed), with no
/// parameters and default (text) result formats.
pub fn bind(portal: &str, statement: &str) -> Bytes {
    let body_len = cstr_len(portal)
        .saturating_add(cstr_len(statement))
        .saturating_add(6);
    typed_message(frontend_tag::BIND, body_len, |out| {
        put_cstr(out, portal);
        put_cstr(out, statement);
        out.put_i16(0); // parameter format codes
        out.put_i16(0); // parameter values
        out.put_i16(0); // result format codes
    })
}

/// An Execute (`E`) of portal `portal` with no row limit.
pub fn execute(portal: &str) -> Bytes {
    typed_message(
        frontend_tag::EXECUTE,
        cstr_len(portal).saturating_add(4),
        |out| {
            put_cstr(out, portal);
            out.put_i32(0); // max rows: 0 = all
        },
    )
}

/// Dollar-quote delimiter of the `DO` body [`raise_sql`] builds.
pub const RAISE_DELIMITER: &str = "$chaos$";

/// Why [`raise_sql`] refused its input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RaiseError {
    /// The SQLSTATE is not 5 characters of `0-9` and `A-Z`.
    #[error("invalid SQLSTATE {sqlstate:?}: expected 5 characters 0-9 or A-Z, e.g. 40001")]
    InvalidSqlstate {
        /// The SQLSTATE given.
        sqlstate: String,
    },
    /// `00000` (successful_completion) cannot be raised: the server reports P0001 instead.
    #[error("SQLSTATE 00000 (successful_completion) cannot be raised")]
    SuccessSqlstate,
    /// The message contains the `$chaos$` delimiter, which would end the `DO` body.
    #[error("the error message must not contain {RAISE_DELIMITER}")]
    MessageContainsDelimiter,
    /// The message contains a NUL byte, which no SQL text can carry.
    #[error("the error message must not contain a NUL byte")]
    MessageContainsNul,
}

/// SQL that makes the server itself raise an ERROR with SQLSTATE `sqlstate` and text `message`:
/// `DO $chaos$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = E'...'; END $chaos$`.
///
/// Running it in place of a matched statement gives the client a real ErrorResponse in the right
/// position, followed by the right ReadyForQuery status, and aborts an open transaction exactly
/// as a real error would. The message is an escape string (`E'...'`, quotes and backslashes
/// doubled), so it is read the same whatever `standard_conforming_strings` says; `%` is not
/// special in `USING MESSAGE`. Any well-formed code is raised as given, including ones the server
/// normally reports with another severity (57P01 admin_shutdown, 08006): the client sees severity
/// `ERROR` and the session stays open. Requires PL/pgSQL (installed by default).
pub fn raise_sql(sqlstate: &str, message: &str) -> Result<String, RaiseError> {
    let well_formed = sqlstate.len() == 5
        && sqlstate
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
    if !well_formed {
        return Err(RaiseError::InvalidSqlstate {
            sqlstate: sqlstate.to_owned(),
        });
    }
    if sqlstate == "00000" {
        return Err(RaiseError::SuccessSqlstate);
    }
    if message.contains(RAISE_DELIMITER) {
        return Err(RaiseError::MessageContainsDelimiter);
    }
    if message.contains('\0') {
        return Err(RaiseError::MessageContainsNul);
    }
    let quoted = message.replace('\\', "\\\\").replace('\'', "''");
    Ok(format!(
        "DO {RAISE_DELIMITER} BEGIN RAISE EXCEPTION USING ERRCODE = '{sqlstate}', \
         MESSAGE = E'{quoted}'; END {RAISE_DELIMITER}"
    ))
}

/// What a SQL statement does, from its first keyword (see [`statement_kind`]). Also the
/// `kind` of a `pg_*` fault's `match`, in lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatementKind {
    /// `SELECT`, `VALUES`, `TABLE name`.
    Select,
    /// `INSERT`.
    Insert,
    /// `UPDATE`.
    Update,
    /// `DELETE`.
    Delete,
    /// `BEGIN`, `START TRANSACTION`.
    Begin,
    /// `COMMIT`, `END`.
    Commit,
    /// `ROLLBACK` (including `ROLLBACK TO SAVEPOINT` and `ROLLBACK PREPARED`), `ABORT`.
    Rollback,
    /// Anything else: DDL, `SET`, `COPY`, `EXPLAIN`, `MERGE`, an empty string, ...
    Other,
}

/// The kind of `sql` from its first keyword, case-insensitive, after leading whitespace,
/// comments (`-- ...` and nested `/* ... */`) and opening parentheses.
///
/// A leading `WITH` is looked past: the first of `SELECT`, `INSERT`, `UPDATE`, `DELETE`,
/// `VALUES`, `TABLE` outside the CTEs' parentheses decides (`WITH x AS (SELECT ...) UPDATE ...`
/// is an `Update`). For a multi-statement Query string only the first statement counts.
/// `SELECT ... FOR UPDATE` is a `Select`; `EXPLAIN`, `DECLARE ... CURSOR` and `CREATE TABLE AS`
/// are `Other`. Heuristic: a lexer, not a parser.
pub fn statement_kind(sql: &str) -> StatementKind {
    let mut tokens = Lexer::new(sql).skip_while(|t| *t == Token::Punct(b'('));
    let Some(Token::Word(first)) = tokens.next() else {
        return StatementKind::Other;
    };
    if first.eq_ignore_ascii_case("with") {
        let mut depth = 0usize;
        for token in tokens {
            match token {
                Token::Punct(b'(') => depth = depth.saturating_add(1),
                Token::Punct(b')') => depth = depth.saturating_sub(1),
                Token::Punct(b';') if depth == 0 => break,
                Token::Word(word) if depth == 0 => {
                    let kind = keyword_kind(word);
                    if kind != StatementKind::Other {
                        return kind;
                    }
                }
                _ => {}
            }
        }
        return StatementKind::Other;
    }
    if first.eq_ignore_ascii_case("start") {
        return match tokens.next() {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("transaction") => StatementKind::Begin,
            _ => StatementKind::Other,
        };
    }
    match keyword_kind(first) {
        StatementKind::Other => transaction_kind(first),
        kind => kind,
    }
}

/// Data statements by keyword (the ones a `WITH` can lead to).
fn keyword_kind(word: &str) -> StatementKind {
    const KINDS: [(&str, StatementKind); 6] = [
        ("select", StatementKind::Select),
        ("values", StatementKind::Select),
        ("table", StatementKind::Select),
        ("insert", StatementKind::Insert),
        ("update", StatementKind::Update),
        ("delete", StatementKind::Delete),
    ];
    KINDS
        .iter()
        .find(|(k, _)| word.eq_ignore_ascii_case(k))
        .map_or(StatementKind::Other, |&(_, kind)| kind)
}

/// Transaction control statements by keyword.
fn transaction_kind(word: &str) -> StatementKind {
    const KINDS: [(&str, StatementKind); 5] = [
        ("begin", StatementKind::Begin),
        ("commit", StatementKind::Commit),
        ("end", StatementKind::Commit),
        ("rollback", StatementKind::Rollback),
        ("abort", StatementKind::Rollback),
    ];
    KINDS
        .iter()
        .find(|(k, _)| word.eq_ignore_ascii_case(k))
        .map_or(StatementKind::Other, |&(_, kind)| kind)
}

/// Words after which a table name may follow, for [`tables`].
const TABLE_KEYWORDS: [&str; 8] = [
    "from", "join", "update", "into", "table", "copy", "truncate", "lock",
];

/// Words that cannot be an unquoted table name where [`tables`] looks for one; finding one
/// there means the keyword was used otherwise (`FOR UPDATE OF`, `DO UPDATE SET`, `FROM STDIN`).
const NOT_TABLE_NAMES: [&str; 40] = [
    "all",
    "and",
    "as",
    "both",
    "cross",
    "default",
    "distinct",
    "do",
    "for",
    "from",
    "full",
    "group",
    "in",
    "inner",
    "into",
    "join",
    "lateral",
    "leading",
    "left",
    "limit",
    "natural",
    "nowait",
    "of",
    "on",
    "or",
    "order",
    "returning",
    "right",
    "select",
    "set",
    "skip",
    "stdin",
    "stdout",
    "strict",
    "table",
    "to",
    "trailing",
    "union",
    "values",
    "where",
];

/// Functions whose parenthesized arguments use `FROM` (`EXTRACT(YEAR FROM t)`).
const FROM_FUNCTIONS: [&str; 4] = ["extract", "overlay", "substring", "trim"];

fn is_one_of(word: &str, list: &[&str]) -> bool {
    list.iter().any(|k| word.eq_ignore_ascii_case(k))
}

/// Table names `sql` mentions, in order of first appearance, without duplicates.
///
/// Heuristic (a lexer, not a parser): the name after `FROM` (and each item of a `FROM a, b`
/// list), `JOIN`, `UPDATE`, `INTO`, `TABLE` (`LOCK TABLE x`, `ALTER TABLE x`, `CREATE TABLE IF
/// NOT EXISTS x`), `COPY`, `TRUNCATE` and `LOCK`, skipping `ONLY` and `IF [NOT] EXISTS`. A
/// schema-qualified name gives its last component; a double-quoted name is returned without its
/// quotes (a doubled `""` inside stays doubled). Names are returned as written: comparing
/// case-insensitively is the caller's job. Strings, comments and dollar-quoted bodies are
/// skipped, as are subqueries and functions in `FROM` (`FROM generate_series(...)`), `FROM`
/// inside `EXTRACT`/`SUBSTRING`/`TRIM`/`OVERLAY`, and `IS DISTINCT FROM`. Known misses and false
/// hits: `SELECT ... INTO var` in PL/pgSQL gives `var`, `REVOKE ... FROM role` gives the role,
/// CTE names used in `FROM` are reported as tables.
pub fn tables(sql: &str) -> Vec<&str> {
    let tokens: Vec<Token<'_>> = Lexer::new(sql).collect();
    let mut scan = TableScan {
        after_parens: matching_parens(&tokens),
        tokens: &tokens,
        found: Vec::new(),
        seen: HashSet::new(),
    };
    // For each open parenthesis: whether it holds the arguments of a FROM_FUNCTIONS call.
    let mut parens: Vec<bool> = Vec::new();
    let mut previous: Option<&Token<'_>> = None;
    for (i, token) in tokens.iter().enumerate() {
        match *token {
            Token::Punct(b'(') => {
                let from_function =
                    matches!(previous, Some(Token::Word(w)) if is_one_of(w, &FROM_FUNCTIONS));
                parens.push(from_function);
            }
            Token::Punct(b')') => {
                parens.pop();
            }
            Token::Word(word) if is_one_of(word, &TABLE_KEYWORDS) => {
                let is_from = word.eq_ignore_ascii_case("from");
                let distinct_from =
                    matches!(previous, Some(Token::Word(w)) if w.eq_ignore_ascii_case("distinct"));
                if !(is_from && (parens.last() == Some(&true) || distinct_from)) {
                    let from_list = is_from || word.eq_ignore_ascii_case("join");
                    scan.table_list(i + 1, from_list);
                }
            }
            _ => {}
        }
        previous = Some(token);
    }
    scan.found
}

/// For each `(` token, the index after its matching `)` (the token count if unmatched); other
/// entries are unused. One pass, so skipping a parenthesized list costs nothing however often
/// it happens.
fn matching_parens(tokens: &[Token<'_>]) -> Vec<usize> {
    let mut after = vec![tokens.len(); tokens.len()];
    let mut open: Vec<usize> = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Punct(b'(') => open.push(i),
            Token::Punct(b')') => {
                if let Some(slot) = open.pop().and_then(|o| after.get_mut(o)) {
                    *slot = i + 1;
                }
            }
            _ => {}
        }
    }
    after
}

/// The state of one [`tables`] call.
struct TableScan<'t, 'a> {
    tokens: &'t [Token<'a>],
    after_parens: Vec<usize>,
    found: Vec<&'a str>,
    seen: HashSet<&'a str>,
}

impl<'a> TableScan<'_, 'a> {
    fn push(&mut self, name: &'a str) {
        if self.seen.insert(name) {
            self.found.push(name);
        }
    }

    fn get(&self, at: usize) -> Option<&Token<'a>> {
        self.tokens.get(at)
    }

    /// Index after the parenthesized list opening at `at`.
    fn skip_parens(&self, at: usize) -> usize {
        self.after_parens
            .get(at)
            .copied()
            .unwrap_or(self.tokens.len())
    }

    /// Reads the table name(s) starting at token `at`; with `from_list`, as a `FROM`/`JOIN`
    /// item list (`a AS x, b y`; a name followed by `(` is a function, not a table).
    ///
    /// Linear overall: a list starts only after `FROM`/`JOIN`, which can be neither an item nor
    /// an alias, so two lists never scan the same tokens.
    fn table_list(&mut self, mut at: usize, from_list: bool) {
        loop {
            at = skip_words(self.tokens, at, &["only"]);
            if let (Some(Token::Word(w)), Some(Token::Word(_))) = (self.get(at), self.get(at + 1)) {
                if w.eq_ignore_ascii_case("if") {
                    at = skip_words(self.tokens, at, &["if", "not", "exists"]);
                }
            }
            let Some((name, mut next)) = qualified_name(self.tokens, at) else {
                return;
            };
            if !from_list {
                self.push(name);
                return;
            }
            if self.get(next) == Some(&Token::Punct(b'(')) {
                // A function in FROM (`generate_series(1, 3) AS g`): not a table.
                next = self.skip_parens(next);
            } else {
                self.push(name);
            }
            // Skip an alias (`AS x`, `x`) and a column alias list, then continue after a comma.
            at = skip_words(self.tokens, next, &["as"]);
            let alias = match self.get(at) {
                Some(Token::Word(w)) => !is_clause_word(w),
                Some(Token::Quoted(_)) => true,
                _ => false,
            };
            if alias {
                at += 1;
            }
            if self.get(at) == Some(&Token::Punct(b'(')) {
                at = self.skip_parens(at);
            }
            if self.get(at) != Some(&Token::Punct(b',')) {
                return;
            }
            at += 1;
        }
    }
}

/// A word that ends a `FROM` item rather than aliasing it.
fn is_clause_word(word: &str) -> bool {
    const CLAUSES: [&str; 14] = [
        "where", "join", "inner", "left", "right", "full", "cross", "natural", "on", "using",
        "group", "order", "limit", "window",
    ];
    is_one_of(word, &CLAUSES) || is_one_of(word, &NOT_TABLE_NAMES)
}

/// Index after any run of `words` starting at `at`.
fn skip_words(tokens: &[Token<'_>], mut at: usize, words: &[&str]) -> usize {
    while let Some(Token::Word(w)) = tokens.get(at) {
        if !is_one_of(w, words) {
            break;
        }
        at += 1;
    }
    at
}

/// `name` or `schema.name` (any depth) at `at`: the last component and the index after it.
fn qualified_name<'a>(tokens: &[Token<'a>], mut at: usize) -> Option<(&'a str, usize)> {
    let mut last = None;
    loop {
        let part = match tokens.get(at)? {
            Token::Word(w) if last.is_some() || !is_one_of(w, &NOT_TABLE_NAMES) => *w,
            Token::Quoted(q) => *q,
            _ => break,
        };
        last = Some(part);
        at += 1;
        if tokens.get(at) != Some(&Token::Punct(b'.')) {
            break;
        }
        at += 1;
    }
    last.map(|name| (name, at))
}

/// A lexical token of SQL, as far as [`statement_kind`] and [`tables`] care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    /// An unquoted identifier or keyword.
    Word(&'a str),
    /// A double-quoted identifier, without its quotes.
    Quoted(&'a str),
    /// One ASCII punctuation or operator byte.
    Punct(u8),
    /// A string, number, parameter or dollar-quoted body: content ignored.
    Other,
}

/// An iterator over SQL tokens, skipping whitespace and comments. Never panics: every slice is
/// taken with `get` at ASCII positions, which are always `char` boundaries.
struct Lexer<'a> {
    sql: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn new(sql: &'a str) -> Self {
        Self {
            sql,
            bytes: sql.as_bytes(),
            pos: 0,
        }
    }

    fn peek(&self, offset: usize) -> Option<u8> {
        self.bytes.get(self.pos.checked_add(offset)?).copied()
    }

    /// Identifier bytes after the first: letters, digits, `_`, `$`, and all non-ASCII bytes.
    fn is_ident_byte(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
    }

    fn is_ident_start(b: u8) -> bool {
        b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
    }

    /// Skips whitespace and comments; false at end of input.
    fn skip_trivia(&mut self) -> bool {
        loop {
            match (self.peek(0), self.peek(1)) {
                (None, _) => return false,
                (Some(b), _) if b.is_ascii_whitespace() => self.pos += 1,
                (Some(b'-'), Some(b'-')) => {
                    while let Some(b) = self.peek(0) {
                        self.pos += 1;
                        if b == b'\n' {
                            break;
                        }
                    }
                }
                (Some(b'/'), Some(b'*')) => {
                    // Block comments nest in PostgreSQL; an unterminated one runs to the end.
                    self.pos += 2;
                    let mut depth = 1usize;
                    while depth > 0 {
                        match (self.peek(0), self.peek(1)) {
                            (None, _) => return false,
                            (Some(b'/'), Some(b'*')) => {
                                depth += 1;
                                self.pos += 2;
                            }
                            (Some(b'*'), Some(b'/')) => {
                                depth -= 1;
                                self.pos += 2;
                            }
                            _ => self.pos += 1,
                        }
                    }
                }
                _ => return true,
            }
        }
    }

    /// Skips to after the next unescaped `quote`; `backslash` = backslash escapes (E'...').
    /// Returns whether the closing quote was found (else the input ended).
    fn skip_quoted(&mut self, quote: u8, backslash: bool) -> bool {
        self.pos += 1;
        while let Some(b) = self.peek(0) {
            self.pos += 1;
            if backslash && b == b'\\' {
                self.pos += 1;
            } else if b == quote {
                if self.peek(0) == Some(quote) {
                    self.pos += 1;
                } else {
                    return true;
                }
            }
        }
        self.pos = self.pos.min(self.bytes.len());
        false
    }

    /// At a `$`: a dollar-quoted string (`$$...$$`, `$tag$...$tag$`) or a parameter (`$1`).
    fn skip_dollar(&mut self) {
        let start = self.pos;
        let mut end = start + 1;
        if self
            .bytes
            .get(end)
            .is_some_and(|&b| Self::is_ident_start(b))
        {
            while self
                .bytes
                .get(end)
                .is_some_and(|&b| Self::is_ident_byte(b) && b != b'$')
            {
                end += 1;
            }
        }
        if self.bytes.get(end) != Some(&b'$') {
            // A parameter such as `$1`, or a lone `$`.
            self.pos = start + 1;
            while self.peek(0).is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
            }
            return;
        }
        let Some(delimiter) = self.sql.get(start..=end) else {
            self.pos = self.bytes.len();
            return;
        };
        let body = self.sql.get(end + 1..).unwrap_or_default();
        self.pos = match body.find(delimiter) {
            Some(at) => end + 1 + at + delimiter.len(),
            None => self.bytes.len(),
        };
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        if !self.skip_trivia() {
            return None;
        }
        let start = self.pos;
        let b = self.peek(0)?;
        let token = match b {
            b'\'' => {
                self.skip_quoted(b'\'', false);
                Token::Other
            }
            b'"' => {
                let closed = self.skip_quoted(b'"', false);
                let end = if closed { self.pos - 1 } else { self.pos };
                Token::Quoted(self.sql.get(start + 1..end).unwrap_or_default())
            }
            b'$' => {
                self.skip_dollar();
                Token::Other
            }
            b if b.is_ascii_digit() => {
                while self
                    .peek(0)
                    .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
                {
                    self.pos += 1;
                }
                Token::Other
            }
            b if Self::is_ident_start(b) => {
                while self.peek(0).is_some_and(Self::is_ident_byte) {
                    self.pos += 1;
                }
                let word = self.sql.get(start..self.pos).unwrap_or_default();
                // E'...' escape strings, and B'', X'', N'', U&'' prefixes glued to a string.
                match self.peek(0) {
                    Some(b'\'') if word.eq_ignore_ascii_case("e") => {
                        self.skip_quoted(b'\'', true);
                        Token::Other
                    }
                    Some(b'\'') if is_one_of(word, &["b", "x", "n"]) => {
                        self.skip_quoted(b'\'', false);
                        Token::Other
                    }
                    _ => Token::Word(word),
                }
            }
            b => {
                self.pos += 1;
                Token::Punct(b)
            }
        };
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An untyped packet: length, code, body.
    fn untyped(code: u32, body: &[u8]) -> Vec<u8> {
        let mut out = ((8 + body.len()) as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// A typed message: tag, length, body.
    fn typed(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&((4 + body.len()) as i32).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn startup(params: &[(&str, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        untyped(startup_code::PROTOCOL_3_0, &body)
    }

    /// Every message of a frontend stream, as `(debug text, end offset)`, and the first error.
    fn frame_frontend(stream: &[u8]) -> (Vec<(String, usize)>, Option<CodecError>) {
        let mut framer = FrontendFramer::new();
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            match framer.next(&stream[at..]) {
                Ok(Some((message, len))) => {
                    assert!(len > 0 && at + len <= stream.len());
                    at += len;
                    out.push((format!("{message:?}"), at));
                }
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    fn frame_backend(stream: &[u8]) -> (Vec<(String, usize)>, Option<CodecError>) {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            match parse_backend(&stream[at..]) {
                Ok(Some((message, len))) => {
                    assert!(len > 0 && at + len <= stream.len());
                    at += len;
                    out.push((format!("{message:?}"), at));
                }
                Ok(None) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    type Framing = fn(&[u8]) -> (Vec<(String, usize)>, Option<CodecError>);

    /// Frames the whole of `stream`, then every prefix: a prefix yields exactly the messages that
    /// end inside it, then `Ok(None)`; finishing the stream after a prefix gives the same
    /// sequence as framing it unsplit.
    fn check_every_split(stream: &[u8], frame: Framing) -> Vec<(String, usize)> {
        let (whole, error) = frame(stream);
        assert_eq!(error, None, "whole stream");
        assert_eq!(
            whole.last().map_or(0, |m| m.1),
            stream.len(),
            "whole stream framed"
        );
        for k in 0..=stream.len() {
            let (prefix, error) = frame(&stream[..k]);
            assert_eq!(error, None, "prefix {k}");
            let expected: Vec<_> = whole.iter().filter(|m| m.1 <= k).cloned().collect();
            assert_eq!(prefix, expected, "prefix of {k} bytes");
        }
        whole
    }

    /// Frames `stream` by feeding it in `chunks` (sizes), as a socket would deliver it.
    fn frame_frontend_chunked(stream: &[u8], chunks: &[usize]) -> Vec<(String, usize)> {
        let mut framer = FrontendFramer::new();
        let (mut buf, mut consumed, mut fed, mut out) = (Vec::new(), 0, 0, Vec::new());
        let mut sizes = chunks.iter().copied().chain(std::iter::repeat(usize::MAX));
        while fed < stream.len() {
            let n = sizes.next().unwrap().clamp(1, stream.len() - fed);
            buf.extend_from_slice(&stream[fed..fed + n]);
            fed += n;
            while let Some((message, len)) = framer.next(&buf).unwrap() {
                consumed += len;
                out.push((format!("{message:?}"), consumed));
                buf.drain(..len);
            }
        }
        assert!(buf.is_empty(), "leftover bytes");
        out
    }

    #[test]
    fn startup_packets_parse() {
        let mut framer = FrontendFramer::new();
        let ssl = untyped(startup_code::SSL_REQUEST, &[]);
        assert_eq!(framer.next(&ssl), Ok(Some((Frontend::SslRequest, 8))));
        assert!(framer.in_startup());
        let gss = untyped(startup_code::GSSENC_REQUEST, &[]);
        assert_eq!(framer.next(&gss), Ok(Some((Frontend::GssEncRequest, 8))));
        let s = startup(&[("user", "app"), ("database", "shop"), ("options", "-c x=1")]);
        assert_eq!(
            framer.next(&s),
            Ok(Some((
                Frontend::Startup {
                    user: Some("app"),
                    database: Some("shop")
                },
                s.len()
            )))
        );
        assert!(!framer.in_startup());
        // Now typed: the same bytes are a typed message with tag 0x00.
        assert_eq!(
            framer.next(&query("SELECT 1")),
            Ok(Some((Frontend::Query { sql: "SELECT 1" }, 14)))
        );
    }

    #[test]
    fn startup_edge_cases() {
        // No database parameter; a value that is not UTF-8 is None.
        let mut body = b"user\0\xff\xfe\0application_name\0psql\0\0".to_vec();
        let p = untyped(startup_code::PROTOCOL_3_0, &body);
        assert_eq!(
            FrontendFramer::new().next(&p),
            Ok(Some((
                Frontend::Startup {
                    user: None,
                    database: None
                },
                p.len()
            )))
        );
        // Protocol 3.2 keeps the layout; protocol 2.0 and unknown codes pass through undecoded.
        body = b"user\0u\0\0".to_vec();
        let v32 = untyped(startup_code::PROTOCOL_3_0 + 2, &body);
        assert!(matches!(
            FrontendFramer::new().next(&v32),
            Ok(Some((
                Frontend::Startup {
                    user: Some("u"),
                    ..
                },
                _
            )))
        ));
        for code in [2 << 16, (1234 << 16) | 9999] {
            let mut framer = FrontendFramer::new();
            let p = untyped(code, &body);
            assert_eq!(
                framer.next(&p),
                Ok(Some((
                    Frontend::Startup {
                        user: None,
                        database: None
                    },
                    p.len()
                )))
            );
            assert!(!framer.in_startup());
        }
        // Truncated key/value list: framed, values best effort.
        let p = untyped(startup_code::PROTOCOL_3_0, b"user\0ann");
        assert!(matches!(
            FrontendFramer::new().next(&p),
            Ok(Some((Frontend::Startup { user: None, .. }, 16)))
        ));
    }

    #[test]
    fn startup_length_errors() {
        for len in [-1i32, 0, 7, 10_001, i32::MAX, i32::MIN] {
            let mut p = len.to_be_bytes().to_vec();
            assert_eq!(
                FrontendFramer::new().next(&p),
                Err(CodecError::StartupLength { len })
            );
            p.extend_from_slice(&startup_code::PROTOCOL_3_0.to_be_bytes());
            assert_eq!(
                FrontendFramer::new().next(&p),
                Err(CodecError::StartupLength { len })
            );
        }
        // The largest accepted startup packet only needs its bytes.
        let p = (MAX_STARTUP_LEN as i32).to_be_bytes();
        assert_eq!(FrontendFramer::new().next(&p), Ok(None));
    }

    #[test]
    fn cancel_request() {
        let mut framer = FrontendFramer::new();
        let cancel = untyped(
            startup_code::CANCEL_REQUEST,
            &[0, 0, 0x30, 0x39, 1, 2, 3, 4],
        );
        assert_eq!(framer.next(&cancel), Ok(Some((Frontend::Cancel, 16))));
        assert_eq!(framer.next(&[]), Ok(None));
        assert_eq!(framer.next(b"Q"), Err(CodecError::AfterCancel));
        let short = untyped(startup_code::CANCEL_REQUEST, &[0, 0, 0, 1]);
        assert_eq!(
            FrontendFramer::new().next(&short),
            Err(CodecError::CancelLength { len: 12 })
        );
    }

    fn typed_framer() -> FrontendFramer {
        FrontendFramer {
            phase: Phase::Typed,
        }
    }

    #[test]
    fn typed_frontend_messages_parse() {
        let cases: Vec<(Vec<u8>, Frontend<'static>)> = vec![
            (
                typed(b'Q', b"select 1;\0"),
                Frontend::Query { sql: "select 1;" },
            ),
            (
                typed(b'P', b"s1\0SELECT $1\0\0\x01\0\0\0\x17"),
                Frontend::Parse {
                    statement: "s1",
                    sql: "SELECT $1",
                },
            ),
            (
                typed(b'B', b"\0s1\0\0\x01\0\x01\0\x01\0\0\0\x013\0\0"),
                Frontend::Bind {
                    portal: "",
                    statement: "s1",
                },
            ),
            (
                typed(b'E', b"p\0\0\0\0\x0a"),
                Frontend::Execute { portal: "p" },
            ),
            (typed(b'D', b"Ss1\0"), Frontend::Describe),
            (typed(b'C', b"Pp\0"), Frontend::Close),
            (typed(b'H', b""), Frontend::Flush),
            (typed(b'S', b""), Frontend::Sync),
            (typed(b'X', b""), Frontend::Terminate),
            (typed(b'd', b"1\tada\n"), Frontend::Other { tag: b'd' }),
            (typed(b'c', b""), Frontend::Other { tag: b'c' }),
            (typed(b'p', b"secret\0"), Frontend::Other { tag: b'p' }),
            // Malformed or non-UTF-8 bodies pass through as Other.
            (typed(b'Q', b"select 1"), Frontend::Other { tag: b'Q' }),
            (typed(b'Q', b"select 1\0x"), Frontend::Other { tag: b'Q' }),
            (
                typed(b'Q', b"select '\xe9'\0"),
                Frontend::Other { tag: b'Q' },
            ),
            (typed(b'P', b"s1\0"), Frontend::Other { tag: b'P' }),
            (typed(b'B', b""), Frontend::Other { tag: b'B' }),
            (typed(b'E', b"\xff\0"), Frontend::Other { tag: b'E' }),
            (typed(0, b""), Frontend::Other { tag: 0 }),
        ];
        for (bytes, expected) in &cases {
            assert_eq!(
                typed_framer().next(bytes),
                Ok(Some((*expected, bytes.len()))),
                "{bytes:?}"
            );
            // Every strict prefix needs more bytes.
            for k in 0..bytes.len() {
                assert_eq!(typed_framer().next(&bytes[..k]), Ok(None));
            }
        }
    }

    #[test]
    fn typed_length_errors() {
        for len in [-5i32, 0, 3, i32::MAX, MAX_MESSAGE_LEN as i32 + 1] {
            let mut m = vec![b'Q'];
            m.extend_from_slice(&len.to_be_bytes());
            let expected = CodecError::MessageLength { tag: b'Q', len };
            assert_eq!(typed_framer().next(&m), Err(expected.clone()));
            assert_eq!(parse_backend(&m), Err(expected));
        }
        assert_eq!(
            typed_header(&[b'd', 0x3f, 0xff, 0xff, 0xff]),
            Ok(Some((b'd', MAX_MESSAGE_LEN + 1)))
        );
        assert_eq!(typed_header(&[b'd', 0, 0, 0]), Ok(None));
    }

    #[test]
    fn backend_messages_parse() {
        let cases = [
            (typed(b'Z', b"I"), Backend::ReadyForQuery { status: b'I' }),
            (typed(b'Z', b"E"), Backend::ReadyForQuery { status: b'E' }),
            (
                typed(b'E', b"SERROR\0VERROR\0C40001\0Mx\0\0"),
                Backend::ErrorResponse,
            ),
            (typed(b'1', b""), Backend::ParseComplete),
            (typed(b'2', b""), Backend::BindComplete),
            (typed(b'C', b"SELECT 1\0"), Backend::CommandComplete),
            (
                typed(b'D', b"\0\x01\0\0\0\x011"),
                Backend::Other { tag: b'D' },
            ),
            (typed(b'N', b"SNOTICE\0\0"), Backend::Other { tag: b'N' }),
        ];
        for (bytes, expected) in &cases {
            assert_eq!(parse_backend(bytes), Ok(Some((*expected, bytes.len()))));
        }
        assert_eq!(
            parse_backend(&typed(b'Z', b"")),
            Err(CodecError::ReadyForQueryLength { len: 0 })
        );
        assert_eq!(
            parse_backend(&typed(b'Z', b"II")),
            Err(CodecError::ReadyForQueryLength { len: 2 })
        );
    }

    #[test]
    fn encoders_read_back() {
        let mut framer = typed_framer();
        let q = query("SELECT 'ü'");
        assert_eq!(
            framer.next(&q),
            Ok(Some((Frontend::Query { sql: "SELECT 'ü'" }, q.len())))
        );
        let p = parse("s9", "UPDATE t SET a = 1");
        assert_eq!(
            framer.next(&p),
            Ok(Some((
                Frontend::Parse {
                    statement: "s9",
                    sql: "UPDATE t SET a = 1"
                },
                p.len()
            )))
        );
        assert_eq!(&p[p.len() - 2..], &[0, 0]);
        let b = bind("", "s9");
        assert_eq!(
            framer.next(&b),
            Ok(Some((
                Frontend::Bind {
                    portal: "",
                    statement: "s9"
                },
                b.len()
            )))
        );
        assert_eq!(&b[..], b"B\0\0\0\x0e\0s9\0\0\0\0\0\0\0");
        let e = execute("");
        assert_eq!(
            framer.next(&e),
            Ok(Some((Frontend::Execute { portal: "" }, 10)))
        );
        assert_eq!(&e[..], b"E\0\0\0\x09\0\0\0\0\0");
        // NUL bytes cannot be sent inside a C-string: dropped.
        let q = query("SELECT\0 1");
        assert_eq!(
            framer.next(&q),
            Ok(Some((Frontend::Query { sql: "SELECT 1" }, q.len())))
        );

        let z = ready_for_query(transaction_status::IN_TRANSACTION);
        assert_eq!(&z[..], b"Z\0\0\0\x05T");
        assert_eq!(
            parse_backend(&z),
            Ok(Some((Backend::ReadyForQuery { status: b'T' }, 6)))
        );
        let err = error_response("FATAL", "53300", "sorry, too many clients already");
        assert_eq!(
            parse_backend(&err),
            Ok(Some((Backend::ErrorResponse, err.len())))
        );
        assert_eq!(
            &err[5..],
            b"SFATAL\0VFATAL\0C53300\0Msorry, too many clients already\0\0"
        );
        let err = error_response("ERROR", "40001", "a\0b");
        assert_eq!(&err[5..], b"SERROR\0VERROR\0C40001\0Mab\0\0");
        assert_eq!(typed_header(&err), Ok(Some((b'E', err.len()))));
    }

    #[test]
    fn raise_sql_quotes_and_validates() {
        assert_eq!(
            raise_sql("40001", "could not serialize access").unwrap(),
            "DO $chaos$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001', \
             MESSAGE = E'could not serialize access'; END $chaos$"
        );
        assert_eq!(
            raise_sql("57P01", r"it's \n 100% ü").unwrap(),
            r"DO $chaos$ BEGIN RAISE EXCEPTION USING ERRCODE = '57P01', MESSAGE = E'it''s \\n 100% ü'; END $chaos$"
        );
        for bad in ["4000", "400011", "40p01", "4000 ", "", "40001\0", "ÄÄ001"] {
            assert_eq!(
                raise_sql(bad, "m"),
                Err(RaiseError::InvalidSqlstate {
                    sqlstate: bad.into()
                })
            );
        }
        assert_eq!(raise_sql("00000", "m"), Err(RaiseError::SuccessSqlstate));
        assert_eq!(
            raise_sql("40001", "x $chaos$; DROP TABLE t; --"),
            Err(RaiseError::MessageContainsDelimiter)
        );
        assert_eq!(
            raise_sql("40001", "a\0b"),
            Err(RaiseError::MessageContainsNul)
        );
        // Near-misses of the delimiter are fine: the quoted text cannot form `$chaos$`.
        assert!(raise_sql("40001", "$chaos").is_ok());
        assert!(raise_sql("40001", "chaos$").is_ok());
        // The whole statement is a Query the framer reads back, and an Other statement.
        let sql = raise_sql("40P01", "deadlock detected").unwrap();
        let q = query(&sql);
        assert_eq!(
            typed_framer().next(&q),
            Ok(Some((Frontend::Query { sql: &sql }, q.len())))
        );
        assert_eq!(statement_kind(&sql), StatementKind::Other);
        assert!(tables(&sql).is_empty());
    }

    #[test]
    fn statement_kinds() {
        use StatementKind::*;
        let cases = [
            ("SELECT 1", Select),
            ("  \n\tselect * from t", Select),
            ("-- hi\nSELECT 1", Select),
            (
                "/* a /* nested */ still */ Insert into t values (1)",
                Insert,
            ),
            ("(SELECT 1) UNION (SELECT 2)", Select),
            ("VALUES (1)", Select),
            ("TABLE t", Select),
            ("update t set a = 1", Update),
            ("DELETE FROM t", Delete),
            ("BEGIN", Begin),
            ("begin isolation level serializable", Begin),
            ("START TRANSACTION", Begin),
            ("start   /* x */ transaction read only", Begin),
            ("START", Other),
            ("COMMIT", Commit),
            ("end", Commit),
            ("ROLLBACK", Rollback),
            ("ROLLBACK TO SAVEPOINT s1", Rollback),
            ("abort", Rollback),
            ("WITH x AS (SELECT 1) SELECT * FROM x", Select),
            (
                "WITH RECURSIVE x(n) AS (SELECT 1 UNION SELECT n FROM x), y AS MATERIALIZED \
                 (DELETE FROM t RETURNING *) UPDATE u SET a = 1",
                Update,
            ),
            (
                "with \"select\" as (values (1)) insert into t select 1",
                Insert,
            ),
            ("WITH x AS (SELECT 1)", Other),
            ("WITH x AS (SELECT 1); SELECT 2", Other),
            ("SELECT 1 FOR UPDATE", Select),
            ("EXPLAIN SELECT 1", Other),
            ("CREATE TABLE t AS SELECT 1", Other),
            ("SET x = 1", Other),
            ("", Other),
            ("   -- only a comment", Other),
            ("/* unterminated SELECT", Other),
            ("'SELECT'", Other),
            ("\"select\" 1", Other),
            ("$$SELECT$$", Other),
            ("COMMIT; SELECT 1", Commit),
            ("sélect 1", Other),
        ];
        for (sql, kind) in cases {
            assert_eq!(statement_kind(sql), kind, "{sql:?}");
        }
    }

    #[test]
    fn table_names() {
        let cases: &[(&str, &[&str])] = &[
            ("SELECT * FROM users WHERE id = 1", &["users"]),
            (
                "select * from public.Users u join \"Order Items\" oi on true",
                &["Users", "Order Items"],
            ),
            (
                "SELECT * FROM a, b AS x, c y, d, db.s.e WHERE a.id = b.id",
                &["a", "b", "c", "d", "e"],
            ),
            ("SELECT * FROM a x (c1, c2), b", &["a", "b"]),
            ("UPDATE ONLY accounts SET balance = 0", &["accounts"]),
            (
                "INSERT INTO s.t (a, b) VALUES (1, 2) ON CONFLICT (a) DO UPDATE SET b = 3",
                &["t"],
            ),
            (
                "DELETE FROM \"sessions\" WHERE expiry < now()",
                &["sessions"],
            ),
            (
                "LOCK TABLE inventory IN ACCESS EXCLUSIVE MODE",
                &["inventory"],
            ),
            ("LOCK ONLY inventory", &["inventory"]),
            ("TRUNCATE TABLE a, b", &["a"]),
            ("CREATE TABLE IF NOT EXISTS x (id int)", &["x"]),
            ("DROP TABLE IF EXISTS x", &["x"]),
            ("ALTER TABLE ONLY s.x ADD COLUMN y int", &["x"]),
            ("COPY accounts FROM STDIN", &["accounts"]),
            ("COPY (SELECT 1 FROM t) TO STDOUT", &["t"]),
            ("SELECT * FROM t FOR UPDATE OF t NOWAIT", &["t"]),
            ("SELECT * FROM t FOR NO KEY UPDATE SKIP LOCKED", &["t"]),
            (
                "SELECT * FROM (SELECT * FROM inner_t) sub JOIN LATERAL f(x) ON true",
                &["inner_t"],
            ),
            ("SELECT * FROM generate_series(1, 3) g, t", &["t"]),
            (
                "SELECT extract(year FROM created), substring(s FROM 2 FOR 3), trim(both 'x' FROM s) FROM t",
                &["t"],
            ),
            ("SELECT a IS DISTINCT FROM b FROM t", &["t"]),
            ("SELECT 'FROM fake' FROM real -- FROM comment\n", &["real"]),
            (
                "SELECT $$ FROM fake $$, $tag$ FROM x $tag$ FROM real",
                &["real"],
            ),
            ("SELECT E'\\' FROM fake' FROM real", &["real"]),
            ("SELECT * FROM t JOIN t ON true", &["t"]),
            ("SELECT 1", &[]),
            ("FROM", &[]),
            ("SELECT * FROM \"a\"\"b\"", &["a\"\"b"]),
            ("SELECT * FROM \"unterminated", &["unterminated"]),
            ("SELECT * FROM ünïcode.tàble", &["tàble"]),
        ];
        for (sql, expected) in cases {
            assert_eq!(tables(sql), *expected, "{sql:?}");
        }
    }

    #[test]
    fn sql_helpers_stay_linear_on_hostile_input() {
        // Each FROM here would rescan the rest of the text without the precomputed parentheses.
        let sql = "SELECT * FROM f(".repeat(20_000) + &"x, ".repeat(20_000);
        assert!(tables(&sql).is_empty());
        let many: String = (0..20_000).map(|i| format!("JOIN t{i} ON true ")).collect();
        assert_eq!(tables(&many).len(), 20_000);
        let with = format!("WITH {} SELECT 1", "x AS (SELECT 1), ".repeat(20_000));
        assert_eq!(statement_kind(&with), StatementKind::Select);
    }

    /// The corpus: streams captured from PostgreSQL 15 over loopback, and hand-made ones.
    fn corpus_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/postgres")
    }

    fn corpus(name: &str) -> Vec<u8> {
        std::fs::read(corpus_dir().join(name)).unwrap()
    }

    #[test]
    fn captured_psql_session_splits_at_every_offset() {
        let messages = check_every_split(&corpus("psql_simple.frontend.bin"), frame_frontend);
        let names: Vec<&str> = messages.iter().map(|m| m.0.as_str()).collect();
        assert_eq!(names[0], "SslRequest");
        assert_eq!(
            names[1],
            "Startup { user: Some(\"postgres\"), database: Some(\"postgres\") }"
        );
        assert!(names.contains(&"Query { sql: \"BEGIN;\" }"));
        assert_eq!(names.last(), Some(&"Terminate"));
        assert!(names.iter().any(|n| n.contains("$chaos$")));

        let replies = check_every_split(&corpus("psql_simple.backend.bin"), frame_backend);
        let statuses: String = replies
            .iter()
            .filter_map(|m| m.0.strip_prefix("ReadyForQuery { status: "))
            .map(|s| char::from(s[..s.len() - 2].parse::<u8>().unwrap()))
            .collect();
        // Idle, then inside BEGIN..ROLLBACK (T, then E after 1/0), idle again.
        assert!(statuses.contains("ITTEI"), "{statuses}");
    }

    #[test]
    fn captured_pipeline_error_splits_at_every_offset() {
        let requests = check_every_split(
            &corpus("pgbench_pipeline_error.frontend.bin"),
            frame_frontend,
        );
        let kinds: Vec<&str> = requests
            .iter()
            .map(|m| m.0.split([' ', '{']).next().unwrap())
            .collect();
        assert_eq!(
            kinds,
            [
                "Startup",
                "Parse",
                "Bind",
                "Describe",
                "Execute",
                "Parse",
                "Bind",
                "Describe",
                "Execute",
                "Parse",
                "Bind",
                "Describe",
                "Execute",
                "Sync",
                "Terminate"
            ]
        );
        let replies =
            check_every_split(&corpus("pgbench_pipeline_error.backend.bin"), frame_backend);
        let tail: Vec<&str> = replies.iter().rev().take(2).map(|m| m.0.as_str()).collect();
        assert_eq!(tail, ["ReadyForQuery { status: 73 }", "ErrorResponse"]);
    }

    #[test]
    fn every_corpus_file_frames_at_every_offset() {
        let mut files = 0;
        for entry in std::fs::read_dir(corpus_dir()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(&path).unwrap();
            assert!(bytes.len() < 20_000, "{name} is too big for the corpus");
            let frame: Framing = if name.ends_with(".frontend.bin") {
                frame_frontend
            } else if name.ends_with(".backend.bin") {
                frame_backend
            } else {
                panic!("{name}: corpus files end in .frontend.bin or .backend.bin");
            };
            if !bytes.is_empty() {
                check_every_split(&bytes, frame);
            }
            files += 1;
        }
        assert!(files >= 8, "only {files} corpus files");
    }

    /// One generated frontend message in the typed phase.
    fn arb_typed_frontend() -> impl Strategy<Value = Vec<u8>> {
        let name = "[a-z0-9_]{0,8}";
        let sql = "[ -~ü\n]{0,40}";
        prop_oneof![
            sql.prop_map(|s| query(&s).to_vec()),
            (name, sql).prop_map(|(n, s)| parse(&n, &s).to_vec()),
            (name, name).prop_map(|(p, s)| bind(&p, &s).to_vec()),
            name.prop_map(|p| execute(&p).to_vec()),
            prop::sample::select(b"DCHSXdcfFp?\x00\xff".to_vec()).prop_flat_map(|tag| {
                prop::collection::vec(any::<u8>(), 0..30).prop_map(move |body| typed(tag, &body))
            }),
        ]
    }

    /// A generated client stream: optional encryption requests, a StartupMessage, then typed
    /// messages; with the end offset of each message.
    fn arb_frontend_stream() -> impl Strategy<Value = (Vec<u8>, Vec<usize>)> {
        (
            prop::collection::vec(
                prop::sample::select(vec![
                    startup_code::SSL_REQUEST,
                    startup_code::GSSENC_REQUEST,
                ]),
                0..3,
            ),
            prop::collection::vec(("[a-z]{1,6}", "[ -~]{0,10}"), 0..4),
            prop::collection::vec(arb_typed_frontend(), 0..12),
        )
            .prop_map(|(requests, params, messages)| {
                let params: Vec<(&str, &str)> = params
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let mut all: Vec<Vec<u8>> = requests.iter().map(|&c| untyped(c, &[])).collect();
                all.push(startup(&params));
                all.extend(messages);
                let mut stream = Vec::new();
                let mut ends = Vec::new();
                for m in all {
                    stream.extend_from_slice(&m);
                    ends.push(stream.len());
                }
                (stream, ends)
            })
    }

    fn arb_backend_message() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            ("[A-Z]{1,8}", "[0-9A-Z]{5}", "[ -~]{0,30}")
                .prop_map(|(s, c, m)| error_response(&s, &c, &m).to_vec()),
            prop::sample::select(b"ITE".to_vec()).prop_map(|s| ready_for_query(s).to_vec()),
            prop::sample::select(b"12CDTnsSKRNAIt3".to_vec()).prop_flat_map(|tag| {
                prop::collection::vec(any::<u8>(), 0..30).prop_map(move |body| typed(tag, &body))
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = frame_frontend(&bytes);
            let _ = parse_backend(&bytes);
            let _ = typed_header(&bytes);
            let mut framer = typed_framer();
            let mut rest = &bytes[..];
            while let Ok(Some((_, len))) = framer.next(rest) {
                rest = &rest[len..];
            }
            let _ = frame_backend(&bytes);
        }

        #[test]
        fn arbitrary_startup_bodies_never_panic(
            code in prop_oneof![
                Just(startup_code::PROTOCOL_3_0),
                Just(startup_code::CANCEL_REQUEST),
                any::<u32>()
            ],
            body in prop::collection::vec(prop_oneof![Just(0u8), any::<u8>()], 0..64),
        ) {
            let _ = frame_frontend(&untyped(code, &body));
        }

        #[test]
        fn sql_helpers_never_panic(sql in "\\PC{0,80}", noise in "[-/*$'\"().,; a-zA-Z0-9\n]{0,80}") {
            for text in [&sql, &noise] {
                let _ = statement_kind(text);
                for name in tables(text) {
                    // Names are borrowed from the input.
                    let start = name.as_ptr() as usize - text.as_ptr() as usize;
                    prop_assert!(start + name.len() <= text.len());
                }
            }
        }

        #[test]
        fn generated_frontend_streams_round_trip(
            (stream, ends) in arb_frontend_stream(),
            chunks in prop::collection::vec(1usize..40, 0..20),
        ) {
            let (whole, error) = frame_frontend(&stream);
            prop_assert_eq!(error, None);
            let found: Vec<usize> = whole.iter().map(|m| m.1).collect();
            prop_assert_eq!(&found, &ends);
            prop_assert_eq!(frame_frontend_chunked(&stream, &chunks), whole);
        }

        #[test]
        fn generated_backend_streams_round_trip(
            messages in prop::collection::vec(arb_backend_message(), 0..16),
            cut in any::<prop::sample::Index>(),
        ) {
            let stream = messages.concat();
            let ends: Vec<usize> = messages
                .iter()
                .scan(0, |at, m| { *at += m.len(); Some(*at) })
                .collect();
            let (whole, error) = frame_backend(&stream);
            prop_assert_eq!(error, None);
            prop_assert_eq!(whole.iter().map(|m| m.1).collect::<Vec<_>>(), ends);
            // Any prefix frames exactly the messages that end inside it.
            let k = cut.index(stream.len() + 1);
            let (prefix, error) = frame_backend(&stream[..k]);
            prop_assert_eq!(error, None);
            let expected: Vec<_> = whole.iter().filter(|m| m.1 <= k).cloned().collect();
            prop_assert_eq!(prefix, expected);
        }

        #[test]
        fn generated_queries_read_back(sql in "\\PC{0,60}", name in "\\PC{0,10}") {
            let q = query(&sql);
            let expected = sql.replace('\0', "");
            prop_assert_eq!(
                typed_framer().next(&q),
                Ok(Some((Frontend::Query { sql: &expected }, q.len())))
            );
            let p = parse(&name, &sql);
            let name = name.replace('\0', "");
            prop_assert_eq!(
                typed_framer().next(&p),
                Ok(Some((Frontend::Parse { statement: &name, sql: &expected }, p.len())))
            );
        }
    }
}
