//! The `mcp` workload: the MCP server's tools through rmcp's own client (Streamable HTTP), as an
//! agent calls them.
//!
//! | operation | what it calls | [`Outcome::Ok`] when |
//! |---|---|---|
//! | `list_tools` | `tools/list` (every page) | the 11 tools of [`TOOL_NAMES`] are all listed |
//! | `call_read` | a tool the MCP server computes itself ([`READ_TOOLS`], in turn, seeded arguments) | it answers without `isError` |
//! | `call_write` | `execute_swap_tool` on a free pair of weeks, with an idempotency key | `success: true` with a swap id that exists, or `success: false` (a refusal is an answer) |
//! | `callback` | a tool that calls the API back ([`CALLBACK_TOOLS`], in turn) | a real answer (see below) |
//! | `chain` | candidates -> contingency -> validate, each fed by the one before | all three are |
//! | `error_path` | a local tool with arguments that break its schema | it refuses them (`isError`) |
//!
//! Classification: `isError: true` is the tool's graceful refusal ([`Outcome::CleanError`]); no
//! answer within [`CALL_TIMEOUT`], a broken transport or a JSON-RPC error is
//! [`Outcome::UncleanError`], except for `execute_swap_tool`, where a request that was sent and
//! got no answer, or an `isError` saying the API call timed out, is [`Outcome::Unknown`].
//!
//! Made-up answers (the testbed's `fake-fallback` flaw) are [`Outcome::Fallback`]: candidates
//! whose `person_id`s are not in `people`, a `swap_id` that is in no swap record, and, on the
//! testbed, a contingency, MTF-compliance or validation answer without the `schedule_version`
//! every real answer of the API carries. [`Workload::settle`] reports them
//! (`mcp-answers-are-real`) and checks every write against `swap_records`
//! (`mcp-writes-answered-truthfully`).
//!
//! Clients: option `clients` (default 1) rmcp sessions; virtual user `u` uses client
//! `u % clients`. A client whose transport closed, or that failed three calls in a row, is
//! replaced by a new session (at most one attempt a second, each bounded by
//! [`CONNECT_TIMEOUT`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rmcp::model::{CallToolRequestParams, CallToolResult, ClientConfig, ErrorCode};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ServiceError, ServiceExt};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{Options, Workload};
use crate::context::Context;
use crate::outcome::{Attempt, Outcome, error_chain, shorten};
use crate::report::CheckResult;

/// Bound on one MCP request (getting a session included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound on opening one MCP session (`initialize`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The shortest time between two attempts to reconnect one client.
const RECONNECT_GAP: Duration = Duration::from_secs(1);

/// Consecutive transport failures after which a client is replaced.
const BROKEN_AFTER: u32 = 3;

/// Writes remembered for the settle check; past this, writes are only counted.
const MAX_WRITES_TRACKED: usize = 200_000;

/// How much of a tool's text an attempt's detail quotes.
const DETAIL_CHARS: usize = 300;

/// Every tool the real stack's MCP server lists (`tools/list`), as the testbed mirrors them.
pub use chaos_testbed::mcp::TOOL_NAMES;

/// The tools `call_read` calls in turn: computed by the MCP server itself, no API call.
pub const READ_TOOLS: [&str; 4] = [
    "get_defense_level_tool",
    "check_utilization_threshold_tool",
    "calculate_burnout_rt_tool",
    "get_circuit_breaker_status_tool",
];

/// The tools `callback` calls in turn: each calls the API back once (plus its retries).
pub const CALLBACK_TOOLS: [&str; 4] = [
    CANDIDATES.tool,
    CONTINGENCY.tool,
    MTF_COMPLIANCE.tool,
    VALIDATE.tool,
];

const EXECUTE_TOOL: &str = "execute_swap_tool";
const EXECUTE_PATH: &str = "/api/v1/swaps/execute";

/// A tool that calls the API back: the call it makes and how its answer is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Callback {
    tool: &'static str,
    method: &'static str,
    /// The path as the proxy counts it (no query).
    path: &'static str,
    check: RealCheck,
}

/// How a callback answer is told from a made-up one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RealCheck {
    /// Every candidate's `person_id` must be in `people`.
    Candidates,
    /// On the testbed, the answer must carry the API's `schedule_version`.
    Versioned,
}

const CANDIDATES: Callback = Callback {
    tool: "analyze_swap_candidates_tool",
    method: "POST",
    path: "/api/v1/schedule/swaps/candidates",
    check: RealCheck::Candidates,
};
const CONTINGENCY: Callback = Callback {
    tool: "run_contingency_analysis_resilience_tool",
    method: "GET",
    path: "/api/v1/resilience/vulnerability",
    check: RealCheck::Versioned,
};
const MTF_COMPLIANCE: Callback = Callback {
    tool: "check_mtf_compliance_tool",
    method: "GET",
    path: "/api/v1/resilience/mtf-compliance",
    check: RealCheck::Versioned,
};
const VALIDATE: Callback = Callback {
    tool: "validate_schedule_tool",
    method: "POST",
    path: "/api/v1/schedule/validate",
    check: RealCheck::Versioned,
};
const CALLBACKS: [Callback; 4] = [CANDIDATES, CONTINGENCY, MTF_COMPLIANCE, VALIDATE];

/// Numbers the `execute_swap_tool` calls of every `mcp` workload of the process, so two
/// workloads of one run never share an idempotency key or a reason tag.
static WRITE_SEQ: AtomicU64 = AtomicU64::new(0);

type Client = RunningService<RoleClient, ClientConfig>;

// ---------------------------------------------------------------------------------------------
// Clients

/// One client session and what is needed to replace it.
struct Slot {
    current: Mutex<Option<Arc<Client>>>,
    /// Held while reconnecting; the last failed attempt, if any.
    reconnect: tokio::sync::Mutex<Option<(Instant, String)>>,
    failures: AtomicU32,
}

impl Slot {
    fn alive(&self) -> Option<Arc<Client>> {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .filter(|client| !client.is_closed() && !client.is_transport_closed())
            .cloned()
    }

    fn drop_client(&self, client: &Arc<Client>) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, client)) {
            *current = None;
        }
    }
}

/// The workload's client sessions.
struct Pool {
    url: String,
    max_concurrent: usize,
    slots: Vec<Slot>,
}

/// Why a tool call got no tool answer.
#[derive(Debug, Clone, PartialEq)]
enum Failure {
    /// No session: the request was never sent.
    NotConnected(String),
    /// Sent, no answer within [`CALL_TIMEOUT`].
    NoAnswer,
    /// The transport failed; `sent` when the request may have reached the server.
    Transport { detail: String, sent: bool },
    /// A JSON-RPC error or an answer of the wrong kind.
    Protocol { code: Option<i32>, detail: String },
}

impl Failure {
    /// The attempt of a read that failed this way.
    fn read_attempt(&self) -> Attempt {
        match self {
            Failure::NotConnected(why) => Attempt::new(
                Outcome::UncleanError,
                format!("no MCP session: {}", shorten(why, DETAIL_CHARS)),
            ),
            Failure::NoAnswer => Attempt::new(Outcome::UncleanError, "no answer within 30 s"),
            Failure::Transport { detail, .. } => Attempt::new(
                Outcome::UncleanError,
                format!("MCP transport: {}", shorten(detail, DETAIL_CHARS)),
            ),
            Failure::Protocol { detail, .. } => Attempt::new(
                Outcome::UncleanError,
                format!("MCP protocol error: {}", shorten(detail, DETAIL_CHARS)),
            ),
        }
    }

    /// The attempt of a write that failed this way, and what the settle check should expect.
    fn write_attempt(&self) -> (Attempt, WriteEnd) {
        match self {
            Failure::NoAnswer => (
                Attempt::new(
                    Outcome::Unknown,
                    "no answer within 30 s (the swap may or may not have run)",
                ),
                WriteEnd::Uncertain("no answer within 30 s".to_owned()),
            ),
            Failure::Transport { detail, sent: true } => (
                Attempt::new(
                    Outcome::Unknown,
                    format!(
                        "MCP transport failed after sending (the swap may or may not have run): {}",
                        shorten(detail, DETAIL_CHARS)
                    ),
                ),
                WriteEnd::Uncertain(format!("transport: {}", shorten(detail, 100))),
            ),
            Failure::NotConnected(_) | Failure::Transport { sent: false, .. } => {
                let attempt = self.read_attempt();
                let why = attempt.detail.clone().unwrap_or_default();
                (attempt, WriteEnd::Refused(format!("not sent: {why}")))
            }
            Failure::Protocol { .. } => {
                let attempt = self.read_attempt();
                let why = attempt.detail.clone().unwrap_or_default();
                (attempt, WriteEnd::Uncertain(why))
            }
        }
    }
}

impl Pool {
    fn new(url: String, clients: usize, max_concurrent: usize) -> Pool {
        let slots = (0..clients)
            .map(|_| Slot {
                current: Mutex::new(None),
                reconnect: tokio::sync::Mutex::new(None),
                failures: AtomicU32::new(0),
            })
            .collect();
        Pool {
            url,
            max_concurrent,
            slots,
        }
    }

    fn slot_of(&self, user: u64) -> usize {
        (user % self.slots.len() as u64) as usize
    }

    async fn open(&self) -> Result<Client, String> {
        let config = StreamableHttpClientTransportConfig::with_uri(self.url.clone())
            .max_concurrent_requests(self.max_concurrent);
        let transport = StreamableHttpClientTransport::from_config(config);
        match tokio::time::timeout(CONNECT_TIMEOUT, ClientConfig::default().serve(transport)).await
        {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(err)) => Err(format!(
                "MCP initialize at {} failed: {}",
                self.url,
                error_chain(&err)
            )),
            Err(_) => Err(format!(
                "MCP initialize at {}: no answer within {} s",
                self.url,
                CONNECT_TIMEOUT.as_secs()
            )),
        }
    }

    /// The client of `slot`, reconnecting it if it is gone (one attempt at a time, at most one
    /// a second).
    async fn client(&self, slot: usize) -> Result<Arc<Client>, String> {
        let state = &self.slots[slot];
        if let Some(client) = state.alive() {
            return Ok(client);
        }
        let mut last_failure = state.reconnect.lock().await;
        if let Some(client) = state.alive() {
            return Ok(client);
        }
        if let Some((at, why)) = last_failure.as_ref()
            && at.elapsed() < RECONNECT_GAP
        {
            return Err(why.clone());
        }
        match self.open().await {
            Ok(client) => {
                let client = Arc::new(client);
                *state.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(client.clone());
                state.failures.store(0, Ordering::Relaxed);
                *last_failure = None;
                tracing::debug!(slot, "MCP client connected");
                Ok(client)
            }
            Err(why) => {
                tracing::warn!(slot, %why, "MCP client could not connect");
                *last_failure = Some((Instant::now(), why.clone()));
                Err(why)
            }
        }
    }

    /// Opens every session (setup); the first failure is the error.
    async fn connect_all(&self) -> Result<(), String> {
        let opened = futures_util::future::join_all((0..self.slots.len()).map(|slot| async move {
            self.client(slot)
                .await
                .map_err(|why| format!("client {slot}: {why}"))
        }))
        .await;
        opened.into_iter().try_for_each(|result| result.map(drop))
    }

    fn succeeded(&self, slot: usize) {
        self.slots[slot].failures.store(0, Ordering::Relaxed);
    }

    /// Counts a transport failure of `client`; replaces it when it is closed or failed
    /// [`BROKEN_AFTER`] times in a row.
    fn transport_failed(&self, slot: usize, client: &Arc<Client>) {
        let state = &self.slots[slot];
        let failures = state.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= BROKEN_AFTER || client.is_closed() || client.is_transport_closed() {
            tracing::debug!(
                slot,
                failures,
                "MCP client replaced after transport failures"
            );
            state.drop_client(client);
            state.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Classifies an rmcp error (and counts it against the client when it is the transport).
    fn failure(&self, slot: usize, client: &Arc<Client>, err: ServiceError) -> Failure {
        match err {
            ServiceError::McpError(error) => {
                self.succeeded(slot);
                Failure::Protocol {
                    code: Some(error.code.0),
                    detail: format!("{} ({})", error.message, error.code.0),
                }
            }
            ServiceError::TransportClosed => {
                self.slots[slot].drop_client(client);
                Failure::Transport {
                    detail: "the client's transport is closed".to_owned(),
                    sent: false,
                }
            }
            ServiceError::TransportSend(_)
            | ServiceError::Timeout { .. }
            | ServiceError::Cancelled { .. } => {
                self.transport_failed(slot, client);
                Failure::Transport {
                    detail: error_chain(&err),
                    sent: true,
                }
            }
            other => Failure::Protocol {
                code: None,
                detail: error_chain(&other),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Answers

/// What a tool answered: its `isError`, its text, and its JSON (the structured content, else
/// the text when it is a JSON object or array).
#[derive(Debug, Clone, PartialEq)]
struct ToolAnswer {
    is_error: bool,
    text: String,
    json: Option<Value>,
}

impl ToolAnswer {
    fn from_result(result: &CallToolResult) -> ToolAnswer {
        let text = result
            .content
            .iter()
            .filter_map(|block| block.as_text().map(|t| t.text.as_str()))
            .collect::<Vec<_>>()
            .join("\n");
        let json = result
            .structured_content
            .clone()
            .filter(|value| !value.is_null())
            .or_else(|| {
                serde_json::from_str::<Value>(text.trim())
                    .ok()
                    .filter(|value| value.is_object() || value.is_array())
            });
        ToolAnswer {
            is_error: result.is_error == Some(true),
            text,
            json,
        }
    }

    /// The text for a detail: the text, else the JSON, shortened.
    fn quote(&self) -> String {
        let text = if self.text.trim().is_empty() {
            self.json.as_ref().map(Value::to_string).unwrap_or_default()
        } else {
            self.text.trim().to_owned()
        };
        if text.is_empty() {
            "(empty answer)".to_owned()
        } else {
            shorten(&text, DETAIL_CHARS)
        }
    }
}

/// The candidates' `person_id`s of a candidates answer, distinct, in order; ids that are not
/// UUIDs are returned apart (they cannot be in `people`). `None` when the answer has no
/// `candidates` list.
fn candidate_ids(answer: &Value) -> Option<(Vec<Uuid>, Vec<String>)> {
    let list = answer.get("candidates")?.as_array()?;
    let mut ids = Vec::new();
    let mut malformed = Vec::new();
    for candidate in list {
        match candidate.get("person_id") {
            Some(Value::String(text)) => match text.parse::<Uuid>() {
                Ok(id) if !ids.contains(&id) => ids.push(id),
                Ok(_) => {}
                Err(_) => malformed.push(text.clone()),
            },
            Some(Value::Null) | None => {}
            Some(other) => malformed.push(other.to_string()),
        }
    }
    Some((ids, malformed))
}

/// Why an answer of a versioned tool is made up: it carries no `schedule_version` (at the top
/// level, or in `statistics` for a validation). `None` when it has one.
fn missing_schedule_version(answer: &Value) -> Option<String> {
    let present = |value: Option<&Value>| value.is_some_and(|v| !v.is_null());
    if present(answer.get("schedule_version"))
        || present(
            answer
                .get("statistics")
                .and_then(|s| s.get("schedule_version")),
        )
    {
        None
    } else {
        Some("the answer carries no schedule_version (every real API answer does)".to_owned())
    }
}

/// The HTTP status an error text says the API answered (`the API answered 503 ...`, `HTTP
/// 409`, `status 422`, `Server error '503 ...'`).
fn answered_status(text: &str) -> Option<u16> {
    let lower = text.to_lowercase();
    ["answered ", "status code ", "status ", "http ", "error '"]
        .iter()
        .find_map(|marker| {
            lower.match_indices(marker).find_map(|(at, _)| {
                let rest = &lower[at + marker.len()..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let status: u16 = digits.parse().ok()?;
                (digits.len() == 3 && (100..600).contains(&status)).then_some(status)
            })
        })
}

/// Whether an error text says nobody knows if the call ran (a timeout or a connection lost
/// after sending).
fn says_outcome_unknown(text: &str) -> bool {
    let lower = text.to_lowercase();
    [
        "may or may not have",
        "no answer within",
        "timed out",
        "timeout",
        "the connection failed",
        "connection reset",
        "connection closed",
        "outcome is unknown",
        "unknown outcome",
    ]
    .iter()
    .any(|marker| lower.contains(marker))
}

/// How an `isError` answer of `execute_swap_tool` is classified: an answer of the API (a
/// status) is a clean error, a 5xx one possibly committed (the API's documented 503 after
/// `COMMIT`); a timeout or a lost connection is unknown; anything else a refusal.
fn execute_error(text: &str) -> (Outcome, WriteEnd) {
    let why = shorten(text.trim(), 100);
    match answered_status(text) {
        Some(status) if status >= 500 => (Outcome::CleanError, WriteEnd::Uncertain(why)),
        Some(_) => (Outcome::CleanError, WriteEnd::Refused(why)),
        None if says_outcome_unknown(text) => (Outcome::Unknown, WriteEnd::Uncertain(why)),
        None => (Outcome::CleanError, WriteEnd::Refused(why)),
    }
}

// ---------------------------------------------------------------------------------------------
// Arguments

/// The `index`-th read call: one of [`READ_TOOLS`] in turn, with arguments drawn from `rng`.
fn read_call(index: u64, rng: &mut StdRng) -> (&'static str, Value) {
    let tool = READ_TOOLS[(index % READ_TOOLS.len() as u64) as usize];
    let arguments = match tool {
        "get_defense_level_tool" => {
            let rate = f64::from(rng.random_range(500..=1000u32)) / 1000.0;
            json!({ "coverage_rate": rate })
        }
        "check_utilization_threshold_tool" => json!({
            "available_faculty": rng.random_range(5..=40u32),
            "required_blocks": rng.random_range(0..=120u32),
            "blocks_per_faculty_per_day": 2.0,
            "days_in_period": rng.random_range(1..=7u32),
        }),
        "calculate_burnout_rt_tool" => {
            let people = rng.random_range(5..=20usize);
            let roster: Vec<String> = (0..people).map(|i| format!("resident-{i}")).collect();
            let shifts: Vec<Vec<String>> = (0..people * 2)
                .map(|_| {
                    let size = rng.random_range(2..=3usize);
                    (0..size)
                        .map(|_| roster[rng.random_range(0..people)].clone())
                        .collect()
                })
                .collect();
            let burned: Vec<String> = (0..rng.random_range(1..=3usize))
                .map(|_| roster[rng.random_range(0..people)].clone())
                .collect();
            json!({
                "burned_out_provider_ids": burned,
                "time_window_days": 28,
                "shifts": shifts,
                "roster": roster,
            })
        }
        _ => json!({}),
    };
    (tool, arguments)
}

/// The `index`-th invalid call: local tools only (the error path crosses no proxy), each
/// breaking the tool's input schema (a wrong type or a missing required argument).
fn invalid_call(index: u64) -> (&'static str, Value) {
    const CALLS: [(&str, &str); 4] = [
        ("get_defense_level_tool", r#"{"coverage_rate": "abc"}"#),
        ("get_defense_level_tool", "{}"),
        (
            "check_utilization_threshold_tool",
            r#"{"available_faculty": "many", "required_blocks": -3}"#,
        ),
        (
            "calculate_burnout_rt_tool",
            r#"{"burned_out_provider_ids": "resident-1", "time_window_days": "a month"}"#,
        ),
    ];
    let (tool, arguments) = CALLS[(index % CALLS.len() as u64) as usize];
    (tool, serde_json::from_str(arguments).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// What settle checks

/// How one `execute_swap_tool` call ended, as the settle check needs it.
#[derive(Debug, Clone, PartialEq)]
enum WriteEnd {
    /// Answered `success: true` with this swap id.
    Executed(String),
    /// Answered that nothing was done (a refusal, `success: false`, a 4xx), or never sent.
    Refused(String),
    /// Nobody can tell from the answer (a timeout, a 5xx, a lost connection).
    Uncertain(String),
}

/// The made-up answers seen.
#[derive(Debug, Default)]
struct Fallbacks {
    /// Callback and write answers checked against the database or the API's evidence.
    checked: u64,
    count: u64,
    by_tool: BTreeMap<&'static str, u64>,
    evidence: Vec<String>,
}

/// The writes seen.
#[derive(Debug, Default)]
struct Writes {
    records: Vec<(u64, WriteEnd)>,
    untracked: u64,
}

/// The `mcp-writes-answered-truthfully` verdict. `committed` maps a call number to the swap
/// records whose reason carries its tag; `elsewhere` maps a claimed swap id that is not among
/// them to the reason of its record (`None`: no record at all).
fn judge_writes(
    source: &str,
    writes: &Writes,
    committed: &HashMap<u64, Vec<String>>,
    elsewhere: &HashMap<String, Option<String>>,
) -> CheckResult {
    const NAME: &str = "mcp-writes-answered-truthfully";
    let mut failures = Vec::new();
    let mut advisories = Vec::new();
    let (mut executed, mut refused, mut uncertain, mut uncertain_committed) = (0, 0, 0, 0);
    for (n, end) in &writes.records {
        let records = committed.get(n).map(Vec::as_slice).unwrap_or_default();
        if records.len() > 1 {
            failures.push(format!(
                "#{n}: one tool call committed {} swaps: {}",
                records.len(),
                records.join(", ")
            ));
        }
        match end {
            WriteEnd::Executed(swap_id) => {
                executed += 1;
                if records.iter().any(|id| id.eq_ignore_ascii_case(swap_id)) {
                    continue;
                }
                let line = match elsewhere.get(swap_id) {
                    Some(Some(reason)) => format!(
                        "#{n}: answered success with swap_id {swap_id}, the record of another \
                         request (reason {reason:?})"
                    ),
                    Some(None) | None => format!(
                        "#{n}: answered success with swap_id {swap_id}, which is in no swap \
                         record (made up)"
                    ),
                };
                failures.push(line);
            }
            WriteEnd::Refused(why) => {
                refused += 1;
                if let Some(id) = records.first() {
                    failures.push(format!(
                        "#{n}: answered that nothing was done ({why}) but swap {id} was committed"
                    ));
                }
            }
            WriteEnd::Uncertain(why) => {
                uncertain += 1;
                if let Some(id) = records.first() {
                    uncertain_committed += 1;
                    advisories.push(format!(
                        "(advisory) #{n}: outcome unknown to the caller ({why}); swap {id} was \
                         committed"
                    ));
                }
            }
        }
    }
    let untracked = if writes.untracked > 0 {
        format!(
            "; {} more calls not tracked (memory bound)",
            writes.untracked
        )
    } else {
        String::new()
    };
    let summary = format!(
        "{} execute_swap_tool calls: {executed} answered success, {refused} refused, {uncertain} \
         unknown ({uncertain_committed} of them committed){untracked}",
        writes.records.len()
    );
    if failures.is_empty() {
        let mut check = CheckResult::pass(
            NAME,
            source,
            format!("{summary}; every answer matches swap_records"),
        );
        advisories.truncate(10);
        check.evidence = advisories;
        check
    } else {
        let detail = format!(
            "{} answers contradict swap_records; {summary}",
            failures.len()
        );
        failures.extend(advisories);
        CheckResult::fail(NAME, source, detail, failures)
    }
}

/// The call number in a reason `<prefix><n>`.
fn tag_number(reason: &str, prefix: &str) -> Option<u64> {
    reason.strip_prefix(prefix)?.trim().parse().ok()
}

/// `text` with the `LIKE` wildcards and the escape character escaped.
fn like_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

// ---------------------------------------------------------------------------------------------
// The workload

/// The `mcp` workload (see the [module docs](self)).
pub struct McpWorkload {
    ctx: Arc<Context>,
    name: String,
    pool: Pool,
    rng: Mutex<StdRng>,
    /// Rotation counters: reads, callbacks, error paths.
    reads: AtomicU64,
    callbacks: AtomicU64,
    errors: AtomicU64,
    /// Faculty who own inpatient weeks: the candidates' requesters.
    requesters: Vec<Uuid>,
    /// Whether any callback, chain or write ran.
    checked_answers: AtomicU64,
    fallbacks: Mutex<Fallbacks>,
    writes: Mutex<Writes>,
}

impl McpWorkload {
    /// Opens the `clients` sessions (option, default 1) to `ctx.target.mcp_url` and reads the
    /// week owners (the candidates' requesters) from the database. `users` is the closed
    /// model's virtual users (0 for the open model): it sizes each session's concurrency.
    pub async fn setup(
        ctx: &Arc<Context>,
        options: &Options<'_>,
        users: usize,
    ) -> anyhow::Result<McpWorkload> {
        use anyhow::Context as _;
        let clients = options.u64("clients", 1)?;
        anyhow::ensure!(
            (1..=1000).contains(&clients),
            "workload {:?}: options.clients must be from 1 to 1000, not {clients}",
            options.workload
        );
        let clients = clients as usize;
        let per_client = users.div_ceil(clients).max(1);
        let pool = Pool::new(
            ctx.target.mcp_url.clone(),
            clients,
            (per_client * 2).max(32),
        );
        pool.connect_all()
            .await
            .map_err(|why| anyhow::anyhow!(why))
            .with_context(|| {
                format!(
                    "workload {:?}: connecting to the MCP server",
                    options.workload
                )
            })?;
        let requesters = ctx
            .db
            .query(
                "SELECT DISTINCT person_id FROM half_day_assignments
                 WHERE time_of_day = 'AM' AND EXTRACT(ISODOW FROM date) = 1
                 ORDER BY person_id",
                &[],
            )
            .await
            .with_context(|| {
                format!(
                    "workload {:?}: reading the inpatient week owners",
                    options.workload
                )
            })?
            .iter()
            .map(|row| row.get::<_, Uuid>(0))
            .collect();
        let seed = options
            .workload
            .bytes()
            .fold(ctx.seed ^ 0x6d63_705f_6d63_7000, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
        Ok(McpWorkload {
            ctx: Arc::clone(ctx),
            name: options.workload.to_owned(),
            pool,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            reads: AtomicU64::new(0),
            callbacks: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            requesters,
            checked_answers: AtomicU64::new(0),
            fallbacks: Mutex::new(Fallbacks::default()),
            writes: Mutex::new(Writes::default()),
        })
    }

    fn rng(&self) -> std::sync::MutexGuard<'_, StdRng> {
        self.rng.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls `tool` for `user` within [`CALL_TIMEOUT`]; `expect` is the API call the tool
    /// makes, counted once the request is on its way.
    async fn invoke(
        &self,
        user: u64,
        tool: &str,
        arguments: Value,
        expect: Option<(&str, &str)>,
    ) -> Result<ToolAnswer, Failure> {
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        let slot = self.pool.slot_of(user);
        let client = match tokio::time::timeout_at(deadline, self.pool.client(slot)).await {
            Ok(Ok(client)) => client,
            Ok(Err(why)) => return Err(Failure::NotConnected(why)),
            Err(_) => {
                return Err(Failure::NotConnected(
                    "no MCP session within 30 s".to_owned(),
                ));
            }
        };
        let arguments = match arguments {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        if let Some((method, path)) = expect {
            self.ctx.expect_api_call(method, path);
        }
        let request = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        match tokio::time::timeout_at(deadline, client.call_tool(request)).await {
            Ok(Ok(result)) => {
                self.pool.succeeded(slot);
                Ok(ToolAnswer::from_result(&result))
            }
            Ok(Err(err)) => Err(self.pool.failure(slot, &client, err)),
            Err(_) => {
                self.pool.transport_failed(slot, &client);
                Err(Failure::NoAnswer)
            }
        }
    }

    fn note_fallback(&self, tool: &'static str, evidence: String) {
        let mut fallbacks = self.fallbacks.lock().unwrap_or_else(|e| e.into_inner());
        fallbacks.count += 1;
        *fallbacks.by_tool.entry(tool).or_default() += 1;
        if fallbacks.evidence.len() < 10 {
            fallbacks.evidence.push(format!("{tool}: {evidence}"));
        }
    }

    fn note_checked(&self) {
        self.fallbacks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .checked += 1;
    }

    async fn list_tools(&self, user: u64) -> Attempt {
        let deadline = tokio::time::Instant::now() + CALL_TIMEOUT;
        let slot = self.pool.slot_of(user);
        let client = match tokio::time::timeout_at(deadline, self.pool.client(slot)).await {
            Ok(Ok(client)) => client,
            Ok(Err(why)) => return Failure::NotConnected(why).read_attempt(),
            Err(_) => {
                return Failure::NotConnected("no MCP session within 30 s".to_owned())
                    .read_attempt();
            }
        };
        let tools = match tokio::time::timeout_at(deadline, client.list_all_tools()).await {
            Ok(Ok(tools)) => tools,
            Ok(Err(err)) => return self.pool.failure(slot, &client, err).read_attempt(),
            Err(_) => {
                self.pool.transport_failed(slot, &client);
                return Failure::NoAnswer.read_attempt();
            }
        };
        self.pool.succeeded(slot);
        let listed: HashSet<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
        let missing: Vec<&str> = TOOL_NAMES
            .iter()
            .copied()
            .filter(|name| !listed.contains(name))
            .collect();
        if missing.is_empty() {
            Attempt::ok()
        } else {
            Attempt::new(
                Outcome::UncleanError,
                format!(
                    "tools/list lacks {} of the {} tools: {}",
                    missing.len(),
                    TOOL_NAMES.len(),
                    missing.join(", ")
                ),
            )
        }
    }

    async fn call_read(&self, user: u64) -> Attempt {
        let index = self.reads.fetch_add(1, Ordering::Relaxed);
        let (tool, arguments) = read_call(index, &mut self.rng());
        match self.invoke(user, tool, arguments, None).await {
            Ok(answer) if answer.is_error => {
                prefixed(Attempt::new(Outcome::CleanError, answer.quote()), tool)
            }
            Ok(_) => Attempt::ok(),
            Err(failure) => prefixed(failure.read_attempt(), tool),
        }
    }

    async fn error_path(&self, user: u64) -> Attempt {
        let index = self.errors.fetch_add(1, Ordering::Relaxed);
        let (tool, arguments) = invalid_call(index);
        match self.invoke(user, tool, arguments.clone(), None).await {
            Ok(answer) if answer.is_error => Attempt::ok(),
            Ok(answer) => Attempt::new(
                Outcome::UncleanError,
                format!(
                    "{tool} accepted invalid arguments {arguments}: {}",
                    answer.quote()
                ),
            ),
            // A JSON-RPC "invalid params" is a refusal of the arguments too.
            Err(Failure::Protocol {
                code: Some(code), ..
            }) if code == ErrorCode::INVALID_PARAMS.0 => Attempt::ok(),
            Err(failure) => prefixed(failure.read_attempt(), tool),
        }
    }

    /// A requester for the candidates tool, drawn from the week owners.
    fn requester(&self) -> Option<Uuid> {
        if self.requesters.is_empty() {
            return None;
        }
        let pick = self.rng().random_range(0..self.requesters.len());
        Some(self.requesters[pick])
    }

    /// Calls one callback tool and judges its answer; returns the JSON for a chain's next
    /// level when the answer is real.
    async fn call_back(
        &self,
        user: u64,
        callback: Callback,
        arguments: Value,
    ) -> (Attempt, Option<Value>) {
        self.checked_answers.fetch_add(1, Ordering::Relaxed);
        let answer = match self
            .invoke(
                user,
                callback.tool,
                arguments,
                Some((callback.method, callback.path)),
            )
            .await
        {
            Ok(answer) => answer,
            Err(failure) => return (prefixed(failure.read_attempt(), callback.tool), None),
        };
        if answer.is_error {
            let attempt = Attempt::new(Outcome::CleanError, answer.quote());
            return (prefixed(attempt, callback.tool), None);
        }
        let Some(json) = answer.json else {
            let detail = format!(
                "{} answered success without JSON: {}",
                callback.tool,
                answer.quote()
            );
            return (Attempt::new(Outcome::UncleanError, detail), None);
        };
        let made_up = match callback.check {
            RealCheck::Candidates => {
                self.note_checked();
                self.unknown_candidates(&json).await
            }
            RealCheck::Versioned if self.ctx.is_testbed() => {
                self.note_checked();
                missing_schedule_version(&json)
            }
            RealCheck::Versioned => None,
        };
        match made_up {
            Some(why) => {
                self.note_fallback(callback.tool, why.clone());
                let detail = format!("{}: made-up answer: {why}", callback.tool);
                (Attempt::new(Outcome::Fallback, detail), None)
            }
            None => (Attempt::ok(), Some(json)),
        }
    }

    /// Why a candidates answer is made up: candidates that are not in `people`.
    async fn unknown_candidates(&self, answer: &Value) -> Option<String> {
        let (ids, malformed) = candidate_ids(answer)?;
        if let Some(bad) = malformed.first() {
            return Some(format!(
                "{} candidate person_ids are not uuids (e.g. {bad})",
                malformed.len()
            ));
        }
        if ids.is_empty() {
            return None;
        }
        let found: i64 = match self
            .ctx
            .db
            .query_one(
                "SELECT count(*) FROM people WHERE id = ANY($1)",
                &[&ids.as_slice()],
            )
            .await
        {
            Ok(row) => row.get(0),
            Err(err) => {
                tracing::warn!(error = %err, "could not check the candidates against people");
                return None;
            }
        };
        let missing = ids.len() as i64 - found;
        (missing > 0).then(|| {
            format!(
                "{missing} of {} candidate person_ids are in no row of people (e.g. {})",
                ids.len(),
                ids[0]
            )
        })
    }

    fn candidates_arguments(requester: Uuid) -> Value {
        json!({ "requester_person_id": requester, "max_candidates": 5 })
    }

    async fn callback(&self, user: u64) -> Attempt {
        let index = self.callbacks.fetch_add(1, Ordering::Relaxed);
        let callback = CALLBACKS[(index % CALLBACKS.len() as u64) as usize];
        let arguments = match callback.check {
            RealCheck::Candidates => match self.requester() {
                Some(requester) => McpWorkload::candidates_arguments(requester),
                None => return no_requester(),
            },
            RealCheck::Versioned if callback == CONTINGENCY => json!({ "analyze_n2": true }),
            RealCheck::Versioned => json!({}),
        };
        self.call_back(user, callback, arguments).await.0
    }

    async fn chain(&self, user: u64) -> Attempt {
        let Some(requester) = self.requester() else {
            return no_requester();
        };
        let arguments = McpWorkload::candidates_arguments(requester);
        let (attempt, _) = self.call_back(user, CANDIDATES, arguments).await;
        if attempt.outcome != Outcome::Ok {
            return level(1, attempt);
        }
        let (attempt, contingency) = self
            .call_back(user, CONTINGENCY, json!({ "analyze_n2": true }))
            .await;
        if attempt.outcome != Outcome::Ok {
            return level(2, attempt);
        }
        // The contingency's period is the one to validate.
        let mut arguments = Map::new();
        let contingency = contingency.unwrap_or_default();
        for (from, to) in [("period_start", "start_date"), ("period_end", "end_date")] {
            if let Some(date) = contingency.get(from).and_then(Value::as_str) {
                arguments.insert(to.to_owned(), json!(date));
            }
        }
        let (attempt, _) = self
            .call_back(user, VALIDATE, Value::Object(arguments))
            .await;
        if attempt.outcome != Outcome::Ok {
            return level(3, attempt);
        }
        Attempt::ok()
    }

    async fn call_write(&self, user: u64) -> Attempt {
        let Some(lease) = self.ctx.weeks.disjoint_pair() else {
            // Every week is in flight: a read instead, counted as one.
            return self.call_read(user).await.counted_as("call_read");
        };
        self.checked_answers.fetch_add(1, Ordering::Relaxed);
        let n = WRITE_SEQ.fetch_add(1, Ordering::Relaxed) + 1;
        let run_id = &self.ctx.run_id;
        let arguments = json!({
            "source_faculty_id": lease.source,
            "source_week": lease.source_week,
            "target_faculty_id": lease.target,
            "target_week": lease.target_week,
            "swap_type": "one_to_one",
            "reason": format!("chaos {run_id} mcp #{n}"),
            "idempotency_key": format!("chaos-{run_id}-mcp-{n}"),
        });
        let (attempt, end) = match self
            .invoke(user, EXECUTE_TOOL, arguments, Some(("POST", EXECUTE_PATH)))
            .await
        {
            Ok(answer) => self.judge_write(&answer, &lease).await,
            Err(failure) => failure.write_attempt(),
        };
        {
            let mut writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
            if writes.records.len() < MAX_WRITES_TRACKED {
                writes.records.push((n, end));
            } else {
                writes.untracked += 1;
            }
        }
        if attempt.outcome != Outcome::Ok {
            // The outcome is uncertain: re-read this pair's weeks while still holding them.
            self.ctx
                .weeks
                .refresh(&self.ctx.db, &[lease.source_week, lease.target_week])
                .await;
        }
        drop(lease);
        prefixed(attempt, EXECUTE_TOOL)
    }

    /// Classifies a tool answer of `execute_swap_tool`; a success whose swap is real exchanges
    /// the lease's owners in the book.
    async fn judge_write(
        &self,
        answer: &ToolAnswer,
        lease: &super::weeks::Lease,
    ) -> (Attempt, WriteEnd) {
        if answer.is_error {
            let (outcome, end) = execute_error(&answer.text);
            return (Attempt::new(outcome, answer.quote()), end);
        }
        let json = answer.json.as_ref();
        let success = json.and_then(|j| j.get("success")).and_then(Value::as_bool);
        match success {
            Some(false) => {
                let message = json
                    .and_then(|j| j.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("no message");
                (
                    Attempt::ok(),
                    WriteEnd::Refused(format!("success: false: {}", shorten(message, 100))),
                )
            }
            Some(true) => {
                let Some(swap_id) = json
                    .and_then(|j| j.get("swap_id"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                else {
                    let detail = format!("success without a swap_id: {}", answer.quote());
                    return (
                        Attempt::new(Outcome::Unknown, detail),
                        WriteEnd::Uncertain("success without a swap_id".to_owned()),
                    );
                };
                self.note_checked();
                match self.swap_exists(&swap_id).await {
                    Some(false) => {
                        let why = format!("swap_id {swap_id} is in no swap record");
                        self.note_fallback(EXECUTE_TOOL, why.clone());
                        (
                            Attempt::new(Outcome::Fallback, format!("made-up answer: {why}")),
                            WriteEnd::Executed(swap_id),
                        )
                    }
                    Some(true) | None => {
                        lease.swapped();
                        (Attempt::ok(), WriteEnd::Executed(swap_id))
                    }
                }
            }
            None => {
                let detail = format!("an answer without success: {}", answer.quote());
                (
                    Attempt::new(Outcome::Unknown, detail),
                    WriteEnd::Uncertain("an answer without success".to_owned()),
                )
            }
        }
    }

    /// Whether a swap record `swap_id` exists (`None`: the database could not say).
    async fn swap_exists(&self, swap_id: &str) -> Option<bool> {
        let Ok(id) = swap_id.parse::<Uuid>() else {
            return Some(false);
        };
        match self
            .ctx
            .db
            .query_one("SELECT count(*) FROM swap_records WHERE id = $1", &[&id])
            .await
        {
            Ok(row) => Some(row.get::<_, i64>(0) > 0),
            Err(err) => {
                tracing::warn!(error = %err, "could not look the swap up in swap_records");
                None
            }
        }
    }

    fn answers_check(&self) -> Option<CheckResult> {
        const NAME: &str = "mcp-answers-are-real";
        if self.checked_answers.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let fallbacks = self.fallbacks.lock().unwrap_or_else(|e| e.into_inner());
        Some(if fallbacks.count == 0 && fallbacks.checked == 0 {
            CheckResult::pass(
                NAME,
                &self.name,
                "no callback or write tool answered success: nothing to check",
            )
        } else if fallbacks.count == 0 {
            CheckResult::pass(
                NAME,
                &self.name,
                format!(
                    "{} answers of callback and write tools checked against the database and \
                     the API's evidence: none made up",
                    fallbacks.checked
                ),
            )
        } else {
            let tools: Vec<String> = fallbacks
                .by_tool
                .iter()
                .map(|(tool, count)| format!("{tool} {count}"))
                .collect();
            CheckResult::fail(
                NAME,
                &self.name,
                format!(
                    "{} of {} checked answers were made up ({})",
                    fallbacks.count,
                    fallbacks.checked,
                    tools.join(", ")
                ),
                fallbacks.evidence.clone(),
            )
        })
    }

    async fn writes_check(&self, ctx: &Context) -> Option<CheckResult> {
        const NAME: &str = "mcp-writes-answered-truthfully";
        let writes = std::mem::take(&mut *self.writes.lock().unwrap_or_else(|e| e.into_inner()));
        if writes.records.is_empty() && writes.untracked == 0 {
            return None;
        }
        let mine: HashSet<u64> = writes.records.iter().map(|(n, _)| *n).collect();
        let prefix = format!("chaos {} mcp #", ctx.run_id);
        let rows = match ctx
            .checks_db
            .query(
                "SELECT id::text, reason FROM swap_records WHERE reason LIKE $1",
                &[&format!("{}%", like_escape(&prefix))],
            )
            .await
        {
            Ok(rows) => rows,
            Err(err) => {
                return Some(CheckResult::fail(
                    NAME,
                    &self.name,
                    format!("could not read swap_records: {}", error_chain(&err)),
                    Vec::new(),
                ));
            }
        };
        let mut committed: HashMap<u64, Vec<String>> = HashMap::new();
        for row in &rows {
            let id: String = row.get(0);
            let reason: Option<String> = row.get(1);
            if let Some(n) = reason.as_deref().and_then(|r| tag_number(r, &prefix))
                && mine.contains(&n)
            {
                committed.entry(n).or_default().push(id);
            }
        }
        // Claimed swap ids that are not the record of their own call: whose are they?
        let strays: Vec<&str> = writes
            .records
            .iter()
            .filter_map(|(n, end)| match end {
                WriteEnd::Executed(id)
                    if !committed
                        .get(n)
                        .is_some_and(|ids| ids.iter().any(|c| c.eq_ignore_ascii_case(id))) =>
                {
                    Some(id.as_str())
                }
                _ => None,
            })
            .collect();
        let ids: Vec<Uuid> = strays.iter().filter_map(|id| id.parse().ok()).collect();
        let mut reasons: HashMap<String, String> = HashMap::new();
        if !ids.is_empty() {
            match ctx
                .checks_db
                .query(
                    "SELECT id::text, coalesce(reason, '') FROM swap_records WHERE id = ANY($1)",
                    &[&ids.as_slice()],
                )
                .await
            {
                Ok(rows) => {
                    for row in rows {
                        reasons.insert(row.get::<_, String>(0).to_lowercase(), row.get(1));
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "could not look the claimed swap ids up");
                }
            }
        }
        let elsewhere: HashMap<String, Option<String>> = strays
            .iter()
            .map(|id| ((*id).to_owned(), reasons.get(&id.to_lowercase()).cloned()))
            .collect();
        Some(judge_writes(&self.name, &writes, &committed, &elsewhere))
    }
}

/// `attempt` with its detail prefixed by the tool, unless it names it already.
fn prefixed(mut attempt: Attempt, tool: &str) -> Attempt {
    if let Some(detail) = &attempt.detail
        && !detail.starts_with(tool)
    {
        attempt.detail = Some(format!("{tool}: {detail}"));
    }
    attempt
}

/// A chain's failing level: its attempt with `level k` in the detail.
fn level(k: u32, mut attempt: Attempt) -> Attempt {
    let detail = attempt.detail.take().unwrap_or_default();
    attempt.detail = Some(format!("level {k}: {detail}"));
    attempt
}

fn no_requester() -> Attempt {
    Attempt::new(
        Outcome::UncleanError,
        "no inpatient week owner in the database to ask candidates for (is it seeded?)",
    )
}

impl Workload for McpWorkload {
    fn run<'a>(&'a self, op: &'a str, user: u64) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            match op {
                "list_tools" => self.list_tools(user).await,
                "call_read" => self.call_read(user).await,
                "call_write" => self.call_write(user).await,
                "callback" => self.callback(user).await,
                "chain" => self.chain(user).await,
                "error_path" => self.error_path(user).await,
                other => Attempt::new(
                    Outcome::UncleanError,
                    format!("the mcp workload has no operation {other:?}"),
                ),
            }
        })
    }

    fn settle<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Vec<CheckResult>> {
        Box::pin(async move {
            let mut checks = Vec::new();
            checks.extend(self.answers_check());
            checks.extend(self.writes_check(ctx).await);
            checks
        })
    }
}

#[cfg(test)]
mod tests {
    use chaos_testbed::mcp::fake;
    use rmcp::model::ContentBlock;

    use super::*;

    #[test]
    fn the_tools_called_are_listed_tools() {
        for tool in READ_TOOLS.iter().chain(&CALLBACK_TOOLS) {
            assert!(TOOL_NAMES.contains(tool), "{tool}");
        }
    }

    #[test]
    fn tool_results_are_read_from_structured_content_or_text() {
        let structured = CallToolResult::structured(json!({"level": "CONTROL"}));
        let answer = ToolAnswer::from_result(&structured);
        assert!(!answer.is_error);
        assert_eq!(answer.json, Some(json!({"level": "CONTROL"})));

        let failed = CallToolResult::error(vec![ContentBlock::text(
            "get_defense_level_tool: failed to deserialize parameters: invalid type",
        )]);
        let answer = ToolAnswer::from_result(&failed);
        assert!(answer.is_error);
        assert_eq!(answer.json, None);
        assert!(answer.quote().contains("failed to deserialize"));

        let text_only = CallToolResult::success(vec![ContentBlock::text(r#" {"valid": true} "#)]);
        assert_eq!(
            ToolAnswer::from_result(&text_only).json,
            Some(json!({"valid": true}))
        );
        let plain = CallToolResult::success(vec![ContentBlock::text("42")]);
        assert_eq!(ToolAnswer::from_result(&plain).json, None);
    }

    #[test]
    fn made_up_versioned_answers_lack_the_schedule_version() {
        assert!(missing_schedule_version(&fake::vulnerability(true)).is_some());
        assert!(missing_schedule_version(&fake::validation(None, None)).is_some());
        assert!(missing_schedule_version(&fake::mtf_compliance()).is_some());
        // The API's real answers: top level (vulnerability, mtf-compliance) or in statistics
        // (validate).
        assert!(
            missing_schedule_version(&json!({"n1_pass": true, "schedule_version": 7})).is_none()
        );
        assert!(
            missing_schedule_version(
                &json!({"valid": true, "statistics": {"schedule_version": 3}})
            )
            .is_none()
        );
        assert!(missing_schedule_version(&json!({"schedule_version": null})).is_some());
    }

    #[test]
    fn candidate_ids_are_collected_distinct_and_malformed_ones_apart() {
        let made_up = fake::candidates("p", None, 10);
        let (ids, malformed) = candidate_ids(&made_up).unwrap();
        assert_eq!(ids.len(), 3);
        assert!(malformed.is_empty());
        let id = Uuid::new_v4();
        let answer = json!({"candidates": [
            {"person_id": id}, {"person_id": id}, {"person_id": "dr-who"}, {"person_name": "x"}
        ]});
        assert_eq!(
            candidate_ids(&answer),
            Some((vec![id], vec!["dr-who".to_owned()]))
        );
        assert_eq!(candidate_ids(&json!({"total": 0})), None);
    }

    #[test]
    fn execute_errors_are_refusals_possible_commits_or_unknown() {
        let conflict = "execute_swap_tool: POST /api/v1/swaps/execute failed after 1 attempt: \
                        the API answered 409 Conflict: Swap conflict: taken";
        assert!(matches!(
            execute_error(conflict),
            (Outcome::CleanError, WriteEnd::Refused(_))
        ));
        let busy = "execute_swap_tool: POST /api/v1/swaps/execute failed after 1 attempt: the \
                    API answered 503 Service Unavailable: database timeout: canceling statement";
        assert!(matches!(
            execute_error(busy),
            (Outcome::CleanError, WriteEnd::Uncertain(_))
        ));
        let hung = "execute_swap_tool: POST /api/v1/swaps/execute failed after 1 attempt: no \
                    answer within 10s (not retried: it is not idempotent, and it may or may not \
                    have been done)";
        assert!(matches!(
            execute_error(hung),
            (Outcome::Unknown, WriteEnd::Uncertain(_))
        ));
        let down = "execute_swap_tool: POST /api/v1/swaps/execute failed after 1 attempt: cannot \
                    connect to the API: connection refused";
        assert!(matches!(
            execute_error(down),
            (Outcome::CleanError, WriteEnd::Refused(_))
        ));
        assert_eq!(
            answered_status("Server error '502 Bad Gateway' for url"),
            Some(502)
        );
        assert_eq!(answered_status("HTTP 4096 bytes"), None);
    }

    #[test]
    fn read_calls_rotate_over_the_local_tools_with_seeded_arguments() {
        let mut a = StdRng::seed_from_u64(3);
        let mut b = StdRng::seed_from_u64(3);
        let first: Vec<_> = (0..8).map(|i| read_call(i, &mut a)).collect();
        let second: Vec<_> = (0..8).map(|i| read_call(i, &mut b)).collect();
        assert_eq!(first, second);
        let tools: HashSet<&str> = first.iter().map(|(tool, _)| *tool).collect();
        assert_eq!(tools.len(), READ_TOOLS.len());
        let rate = first[0].1["coverage_rate"].as_f64().unwrap();
        assert!((0.5..=1.0).contains(&rate));
        for i in 0..4 {
            let (tool, arguments) = invalid_call(i);
            assert!(READ_TOOLS.contains(&tool));
            assert!(arguments.is_object());
        }
    }

    #[test]
    fn writes_are_judged_against_the_swap_records() {
        let real = Uuid::new_v4().to_string();
        let invented = Uuid::new_v4().to_string();
        let writes = Writes {
            records: vec![
                (1, WriteEnd::Executed(real.clone())),
                (2, WriteEnd::Refused("success: false".into())),
                (3, WriteEnd::Uncertain("no answer".into())),
                (4, WriteEnd::Uncertain("503".into())),
            ],
            untracked: 0,
        };
        let mut committed = HashMap::from([(1, vec![real.clone()]), (3, vec!["s3".to_owned()])]);
        let check = judge_writes("w", &writes, &committed, &HashMap::new());
        assert!(check.passed, "{check:?}");
        assert_eq!(check.name, "mcp-writes-answered-truthfully");
        assert_eq!(check.source, "w");
        assert_eq!(check.evidence.len(), 1);
        assert!(check.evidence[0].starts_with("(advisory) #3"));

        // A refusal that was committed, and an invented swap id.
        committed.insert(2, vec!["s2".to_owned()]);
        let writes = Writes {
            records: vec![
                (2, WriteEnd::Refused("success: false".into())),
                (5, WriteEnd::Executed(invented.clone())),
            ],
            untracked: 0,
        };
        let elsewhere = HashMap::from([(invented.clone(), None)]);
        let check = judge_writes("w", &writes, &committed, &elsewhere);
        assert!(!check.passed);
        assert!(
            check.detail.starts_with("2 answers contradict"),
            "{}",
            check.detail
        );
        assert!(check.evidence[0].contains("but swap s2 was committed"));
        assert!(check.evidence[1].contains("made up"));
    }

    #[test]
    fn reason_tags_and_like_patterns() {
        assert_eq!(tag_number("chaos r1 mcp #12", "chaos r1 mcp #"), Some(12));
        assert_eq!(tag_number("chaos r1 swap #12", "chaos r1 mcp #"), None);
        assert_eq!(like_escape("a_b%c\\"), "a\\_b\\%c\\\\");
    }

    #[test]
    fn chain_levels_and_prefixes_are_named() {
        let attempt = level(2, Attempt::new(Outcome::CleanError, "x: 503"));
        assert_eq!(attempt.detail.as_deref(), Some("level 2: x: 503"));
        let attempt = prefixed(Attempt::new(Outcome::UncleanError, "boom"), "t");
        assert_eq!(attempt.detail.as_deref(), Some("t: boom"));
        assert_eq!(prefixed(Attempt::ok(), "t").detail, None);
    }
}
