//! The `swap` workload: one-to-one swaps of inpatient weeks, executed on disjoint pairs or
//! raced for one week, validated, matched and rolled back, and the swap history read, every
//! answer then checked against the database.
//!
//! | operation | request | ok when |
//! |---|---|---|
//! | `execute` (`pairs = "disjoint"`) | `POST /api/v1/swaps/execute` on two free weeks of different owners, with a unique reason `chaos <run id> #<n>` and `Idempotency-Key: chaos-<run id>-<n>` | 200, `success` true or false (a validation refusal is a real answer) |
//! | `execute` (`pairs = "same_shift"`) | rounds of the virtual users (at least 2) all swapping the same week, each with its own partner week, sent together | 200, or the 409 a lost race expects |
//! | `validate` | `POST /api/v1/swaps/validate` on a pair (`complex = true`: a receiver who owns the week next to the one they receive) | 200 with `valid` |
//! | `candidates` | `POST /api/v1/schedule/swaps/candidates` for a week owner | 200, every candidate in `people` (else a *fallback*) |
//! | `rollback` | `POST /api/v1/swaps/{id}/rollback` of one of this workload's swaps, once `rollback_after` executes succeeded (an `execute` until then) | 200, or the 409 of a swap a later one moved on |
//! | `history` | `GET /api/v1/swaps/history?page_size=20` | 200 with `items` |
//!
//! Other statuses are classified by [`classify_status`] (a 5xx whose only "reason" is its
//! status phrase, `500 {"detail": "Internal Server Error"}`, counts as without a reason), and
//! transport failures by [`classify_transport`] (an execute or rollback that was sent and got no
//! answer is *unknown*).
//!
//! Every write holds its weeks in the [`WeekBook`] while in flight (a rollback holds the two
//! weeks of the swap it undoes), so operations of all swap workloads never meet on a week
//! except in a race round. After a write that errs or is refused, the owners of its weeks are
//! re-read from the database before the weeks are freed (in the background: not latency). Only
//! held weeks are re-read: re-reading the whole book would undo, in the book, swaps that commit
//! while it is read.
//!
//! Waiting for free weeks and for a race round's other users is runner-side: the attempt is
//! then timed from when its request could go.
//!
//! Checks returned by [`Workload::settle`] (source: the workload's name), when they apply:
//!
//! - `swap-answers-match-the-database` (required): every execute settled against
//!   `swap_records` by its reason: answered success and missing (or another id) is a lost or
//!   made-up swap; answered a refusal, a 4xx or a 5xx other than a 503 with a reason, and
//!   committed, is a swap the client was told failed. Unknown outcomes are settled here.
//! - `swap-ambiguous-503s` (advisory): executes answered 503 with a reason that were committed
//!   anyway (the API may lose the answer after `COMMIT`).
//! - `swap-race-one-winner` (required, `same_shift`): no round had more than one answered
//!   winner, nor more than one committed swap.
//! - `swap-rollbacks-restored` (required): every rollback answered 200 is `rolled_back`.
//! - `swap-candidates-exist` (required): no candidate id outside `people`.
//!
//! Memory stays bounded for long soaks: at most 10,000 attempts of each kind are kept
//! for settlement (a uniform sample of the run); the rest are counted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::NaiveDate;
use futures_util::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use super::weeks::{Held, Lease, WeekBook};
use super::{Options, Workload};
use crate::context::Context;
use crate::outcome::{Attempt, Outcome, classify_status, classify_transport, shorten};
use crate::report::CheckResult;

/// Attempts of each kind kept for settlement (executes answered 200, other executes,
/// rollbacks, race rounds); beyond it a uniform sample is kept and the rest counted.
const SAMPLE_CAP: usize = 10_000;
/// Successful swaps remembered as rollback candidates (the oldest are forgotten first).
const ELIGIBLE_CAP: usize = 10_000;
/// Evidence lines per check.
const EVIDENCE_CAP: usize = 10;
/// How long an operation waits for free weeks before giving up (runner-side).
const WEEKS_WAIT: Duration = Duration::from_secs(10);
/// How long a race round waits for its users before starting with those there.
const ROUND_WAIT: Duration = Duration::from_secs(10);
/// The pause between two looks for free weeks.
const POLL: Duration = Duration::from_millis(10);
/// Random pairs looked at for a complex validation before taking any pair.
const COMPLEX_TRIES: usize = 64;
/// Newest remembered swaps looked at when picking one to roll back.
const ROLLBACK_SCAN: usize = 512;
/// Reasons per settlement query.
const QUERY_CHUNK: usize = 2_000;

/// The next execute tag, unique in the process: several swap workloads of one run share the run
/// id, and their reasons and idempotency keys must not collide.
static NEXT_TAG: AtomicU64 = AtomicU64::new(1);

/// How execute picks its weeks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pairs {
    /// Two free weeks of different owners per request.
    Disjoint,
    /// Rounds of users contesting one week.
    SameShift,
}

/// The `swap` workload (see the module docs).
pub struct SwapWorkload {
    ctx: Arc<Context>,
    name: String,
    pairs: Pairs,
    rollback_after: u64,
    complex: bool,
    /// Faculty who own inpatient weeks (the candidate searches' requesters).
    owners: Vec<Uuid>,
    race: Race,
    state: Mutex<State>,
}

/// What the workload remembers for its checks.
struct State {
    rng: StdRng,
    /// Executes answered 200 (`success` true or false).
    answered: Sample<ExecuteRecord>,
    /// Every other execute (an error status, no answer).
    troubled: Sample<ExecuteRecord>,
    /// Executes answered `success: true`.
    succeeded: u64,
    /// This workload's swaps that may be rolled back, oldest first.
    eligible: VecDeque<DoneSwap>,
    rollbacks: Sample<RollbackRecord>,
    rounds: RoundStats,
    candidates: CandidateStats,
}

/// A uniform sample of at most `cap` items of a stream (reservoir sampling), and the stream's
/// length.
#[derive(Debug, Clone)]
struct Sample<T> {
    items: Vec<T>,
    seen: u64,
    cap: usize,
}

impl<T> Sample<T> {
    fn new(cap: usize) -> Sample<T> {
        Sample {
            items: Vec::new(),
            seen: 0,
            cap,
        }
    }

    fn push(&mut self, item: T, rng: &mut StdRng) {
        self.seen += 1;
        if self.items.len() < self.cap {
            self.items.push(item);
            return;
        }
        let slot = rng.random_range(0..self.seen);
        if let Ok(slot) = usize::try_from(slot)
            && slot < self.items.len()
        {
            self.items[slot] = item;
        }
    }

    /// `" (a uniform sample of N of M)"` when some were left out, else nothing.
    fn sampled(&self) -> String {
        if self.seen > self.items.len() as u64 {
            format!(
                " (a uniform sample of {} of {})",
                self.items.len(),
                self.seen
            )
        } else {
            String::new()
        }
    }
}

/// Two weeks of a one-to-one swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pair {
    source: Uuid,
    source_week: NaiveDate,
    target: Uuid,
    target_week: NaiveDate,
}

impl Pair {
    fn of(lease: &Lease) -> Pair {
        Pair {
            source: lease.source,
            source_week: lease.source_week,
            target: lease.target,
            target_week: lease.target_week,
        }
    }

    /// The validate / execute body.
    fn body(&self, reason: Option<&str>) -> Value {
        let mut body = json!({
            "source_faculty_id": self.source,
            "source_week": self.source_week,
            "target_faculty_id": self.target,
            "target_week": self.target_week,
            "swap_type": "one_to_one",
        });
        if let Some(reason) = reason {
            body["reason"] = json!(reason);
        }
        body
    }
}

/// What an execute was answered, as far as settlement cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ExecAnswer {
    /// 2xx with `success: true` (and the `swap_id`, when it was one).
    Success(Option<Uuid>),
    /// 2xx with `success: false`: the validation refused.
    Refused,
    /// Another status, with its reason (shortened) when it gave a real one.
    Status(u16, Option<String>),
    /// No answer: a transport failure, a gateway's 502 or 504, an unreadable 2xx.
    NoAnswer,
}

impl ExecAnswer {
    fn describe(&self) -> String {
        match self {
            ExecAnswer::Success(Some(id)) => format!("answered success (swap {id})"),
            ExecAnswer::Success(None) => "answered success without a swap_id".to_owned(),
            ExecAnswer::Refused => "answered success: false (refused)".to_owned(),
            ExecAnswer::Status(status, Some(reason)) => {
                format!("answered {status} ({})", shorten(reason, 80))
            }
            ExecAnswer::Status(status, None) => format!("answered {status} without a reason"),
            ExecAnswer::NoAnswer => "got no answer".to_owned(),
        }
    }
}

/// One execute kept for settlement.
#[derive(Debug, Clone)]
struct ExecuteRecord {
    tag: u64,
    answer: ExecAnswer,
}

/// A swap this workload executed.
#[derive(Debug, Clone, Copy)]
struct DoneSwap {
    swap_id: Uuid,
    pair: Pair,
}

/// What a rollback was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RollbackAnswer {
    /// 2xx.
    Done,
    /// Another status.
    Status(u16),
    /// No answer (transport, 502, 504).
    NoAnswer,
}

/// One rollback kept for settlement.
#[derive(Debug, Clone, Copy)]
struct RollbackRecord {
    swap_id: Uuid,
    answer: RollbackAnswer,
}

/// Race rounds so far.
#[derive(Debug)]
struct RoundStats {
    /// Rounds in which at least one request was sent.
    total: u64,
    one: u64,
    none: u64,
    many: u64,
    /// Rounds in which nothing was sent (cancelled, or no partner week was free).
    empty: u64,
    evidence: Vec<String>,
    sample: Sample<RoundRecord>,
}

/// One finished race round kept for settlement.
#[derive(Debug, Clone)]
struct RoundRecord {
    id: u64,
    week: NaiveDate,
    tags: Vec<u64>,
}

/// Candidate searches so far.
#[derive(Debug, Default)]
struct CandidateStats {
    answers: u64,
    ids: u64,
    missing: u64,
    unchecked: u64,
    evidence: Vec<String>,
}

/// A swap record as the database has it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DbSwap {
    id: Uuid,
    status: String,
}

impl DbSwap {
    fn committed(&self) -> bool {
        self.status == "executed" || self.status == "rolled_back"
    }
}

/// What the database says about one execute.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Settled {
    /// As answered.
    Agrees,
    /// Answered success, but the swap is not there (or has another id).
    Lost(String),
    /// Answered a refusal or an error, but the swap was committed.
    CommittedDespite(String),
    /// Answered 503 with a reason, and committed.
    Ambiguous(String),
    /// No answer: committed or not.
    Unknown { committed: bool },
}

/// Settles one execute against its records in the database (found by its reason).
fn settle_execute(answer: &ExecAnswer, found: &[DbSwap]) -> Settled {
    let committed = found.iter().find(|swap| swap.committed());
    let as_found = |swap: &DbSwap| format!("swap {} is {} in the database", swap.id, swap.status);
    match answer {
        ExecAnswer::Success(id) => match (id, found.first()) {
            (_, None) => Settled::Lost(format!(
                "{}, not in the database: a lost or made-up swap",
                answer.describe()
            )),
            (Some(id), Some(first)) if !found.iter().any(|swap| swap.id == *id) => {
                Settled::Lost(format!(
                    "answered swap {id}, but the database has swap {} for this request",
                    first.id
                ))
            }
            _ => Settled::Agrees,
        },
        ExecAnswer::NoAnswer | ExecAnswer::Status(502 | 504, _) => Settled::Unknown {
            committed: committed.is_some(),
        },
        ExecAnswer::Status(503, Some(_)) => match committed {
            Some(swap) => {
                Settled::Ambiguous(format!("{}, but {}", answer.describe(), as_found(swap)))
            }
            None => Settled::Agrees,
        },
        ExecAnswer::Refused | ExecAnswer::Status(..) => match committed {
            Some(swap) => Settled::CommittedDespite(format!(
                "{}, but {}: the client was told the swap did not happen",
                answer.describe(),
                as_found(swap)
            )),
            None => Settled::Agrees,
        },
    }
}

/// Reads an execute's HTTP answer. `race`: a 409 (lost race) is the expected answer.
fn interpret_execute(status: u16, body: &[u8], race: bool) -> (Attempt, ExecAnswer) {
    if (200..300).contains(&status) {
        let value: Option<Value> = serde_json::from_slice(body).ok();
        return match value
            .as_ref()
            .and_then(|v| v.get("success"))
            .and_then(Value::as_bool)
        {
            Some(true) => {
                let id = value
                    .as_ref()
                    .and_then(|v| v.get("swap_id"))
                    .and_then(Value::as_str)
                    .and_then(|id| Uuid::parse_str(id).ok());
                (Attempt::ok(), ExecAnswer::Success(id))
            }
            Some(false) => (Attempt::ok(), ExecAnswer::Refused),
            None => (
                Attempt::new(
                    Outcome::Unknown,
                    format!(
                        "{status} without a readable success: {}",
                        shorten(&String::from_utf8_lossy(body), 120)
                    ),
                ),
                ExecAnswer::NoAnswer,
            ),
        };
    }
    let answer = match status {
        502 | 504 => ExecAnswer::NoAnswer,
        _ => ExecAnswer::Status(
            status,
            crate::outcome::real_reason(status, body).map(|reason| shorten(&reason, 120)),
        ),
    };
    if race && status == 409 {
        return (Attempt::ok(), answer);
    }
    (classify_status(status, body), answer)
}

/// Reads a rollback's HTTP answer: 2xx done, 409 the expected refusal of a swap a later one
/// moved on, anything else classified.
fn interpret_rollback(status: u16, body: &[u8]) -> (Attempt, RollbackAnswer) {
    match status {
        200..=299 => (Attempt::ok(), RollbackAnswer::Done),
        409 => (Attempt::ok(), RollbackAnswer::Status(409)),
        502 | 504 => (classify_status(status, body), RollbackAnswer::NoAnswer),
        _ => (
            classify_status(status, body),
            RollbackAnswer::Status(status),
        ),
    }
}

/// The candidates' `person_id`s of a candidate search answer (as text; a non-string id is its
/// JSON), or why the answer is not one.
fn candidate_ids(body: &[u8]) -> Result<Vec<String>, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| format!("not JSON: {}", shorten(&String::from_utf8_lossy(body), 120)))?;
    let list = value
        .get("candidates")
        .and_then(Value::as_array)
        .ok_or_else(|| "200 without a candidates array".to_owned())?;
    Ok(list
        .iter()
        .map(|candidate| match candidate.get("person_id") {
            Some(Value::String(id)) => id.clone(),
            Some(other) => other.to_string(),
            None => "(none)".to_owned(),
        })
        .collect())
}

/// Whether a receiver of `pair` already owns the week before or after the week they receive
/// (not counting the week they give away): the validation's back-to-back and 80-hour window
/// logic then has real work.
fn receives_next_to_own(pair: &Pair, owner_of: impl Fn(NaiveDate) -> Option<Uuid>) -> bool {
    let week = chrono::Days::new(7);
    let next_to = |receiver: Uuid, received: NaiveDate, given: NaiveDate| {
        [
            received.checked_sub_days(week),
            received.checked_add_days(week),
        ]
        .into_iter()
        .flatten()
        .any(|neighbour| neighbour != given && owner_of(neighbour) == Some(receiver))
    };
    next_to(pair.target, pair.source_week, pair.target_week)
        || next_to(pair.source, pair.target_week, pair.source_week)
}

/// `swap-answers-match-the-database` and (advisory) `swap-ambiguous-503s`, from the sampled
/// executes and their records in the database (by reason; `reason` gives a tag's).
fn answers_checks(
    source: &str,
    reason: impl Fn(u64) -> String,
    found: &HashMap<String, Vec<DbSwap>>,
    answered: &Sample<ExecuteRecord>,
    troubled: &Sample<ExecuteRecord>,
) -> Vec<CheckResult> {
    let name = "swap-answers-match-the-database";
    let (mut success, mut refused, mut conflicts, mut errors, mut busy) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut lost, mut despite, mut ambiguous) = (0u64, 0u64, 0u64);
    let (mut unknown_committed, mut unknown_not) = (0u64, 0u64);
    let mut evidence = Vec::new();
    let mut ambiguous_evidence = Vec::new();
    let none = Vec::new();
    for record in answered.items.iter().chain(&troubled.items) {
        match &record.answer {
            ExecAnswer::Success(_) => success += 1,
            ExecAnswer::Refused => refused += 1,
            ExecAnswer::Status(409, _) => conflicts += 1,
            ExecAnswer::Status(503, Some(_)) => busy += 1,
            ExecAnswer::Status(502 | 504, _) | ExecAnswer::NoAnswer => {}
            ExecAnswer::Status(..) => errors += 1,
        }
        let reason = reason(record.tag);
        let records = found.get(&reason).unwrap_or(&none);
        let line = |text: String| format!("#{} ({reason}): {text}", record.tag);
        match settle_execute(&record.answer, records) {
            Settled::Agrees => {}
            Settled::Lost(text) => {
                lost += 1;
                if evidence.len() < EVIDENCE_CAP {
                    evidence.push(line(text));
                }
            }
            Settled::CommittedDespite(text) => {
                despite += 1;
                if evidence.len() < EVIDENCE_CAP {
                    evidence.push(line(text));
                }
            }
            Settled::Ambiguous(text) => {
                ambiguous += 1;
                if ambiguous_evidence.len() < EVIDENCE_CAP {
                    ambiguous_evidence.push(line(text));
                }
            }
            Settled::Unknown { committed: true } => unknown_committed += 1,
            Settled::Unknown { committed: false } => unknown_not += 1,
        }
    }
    let settled = answered.items.len() + troubled.items.len();
    let seen = answered.seen + troubled.seen;
    let head = if settled as u64 == seen {
        format!("{settled} executes settled")
    } else {
        format!("{settled} executes settled (a uniform sample of the run's {seen})")
    };
    let unknown = unknown_committed + unknown_not;
    let unknown_text = if unknown > 0 {
        format!(
            "; {unknown} got no answer, settled here: {unknown_committed} turned out committed, {unknown_not} not"
        )
    } else {
        String::new()
    };
    let main = if lost == 0 && despite == 0 {
        let mut detail = format!("{head}: {success} answered success, all in the database");
        let mut refusals = Vec::new();
        if refused > 0 {
            refusals.push(format!("{refused} refused by validation"));
        }
        if conflicts > 0 {
            refusals.push(format!("{conflicts} answered 409"));
        }
        if errors > 0 {
            refusals.push(format!("{errors} answered another error"));
        }
        if !refusals.is_empty() {
            detail.push_str(&format!("; {}, none committed", refusals.join(", ")));
        }
        if busy > 0 {
            detail.push_str(&format!(
                "; {busy} answered 503 with a reason ({ambiguous} committed anyway: see swap-ambiguous-503s)"
            ));
        }
        detail.push_str(&unknown_text);
        CheckResult::pass(name, source, detail)
    } else {
        let mut problems = Vec::new();
        if lost > 0 {
            problems.push(format!(
                "{lost} answered success but are not in the database (lost or made-up swaps)"
            ));
        }
        if despite > 0 {
            problems.push(format!(
                "{despite} answered a refusal or an error but were committed (the client was told the swap did not happen)"
            ));
        }
        CheckResult::fail(
            name,
            source,
            format!("{head}: {}{unknown_text}", problems.join("; ")),
            evidence,
        )
    };
    let advisory = if ambiguous == 0 {
        let detail = if busy == 0 {
            "no execute answered 503 with a reason".to_owned()
        } else {
            format!("none of the {busy} executes answered 503 with a reason was committed")
        };
        CheckResult::pass("swap-ambiguous-503s", source, detail)
    } else {
        CheckResult::fail(
            "swap-ambiguous-503s",
            source,
            format!(
                "{ambiguous} of {busy} executes answered 503 with a reason were committed anyway \
                 (the answer was lost after COMMIT: only the database or the Idempotency-Key tells)"
            ),
            ambiguous_evidence,
        )
    };
    vec![main, advisory.advisory()]
}

/// `attempt`, timed from `waited` when it had to wait for its weeks.
fn timed(attempt: Attempt, waited: Option<Instant>) -> Attempt {
    match waited {
        Some(at) => attempt.started_at(at),
        None => attempt,
    }
}

/// A stable 64-bit hash of a name (FNV-1a), mixed into the seed so workloads differ.
pub(crate) fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ------------------------------------------------------------------------------------------
// Race rounds

/// The race rounds of a `same_shift` workload: the round open for joining.
struct Race {
    size: usize,
    /// How long a round waits for its users ([`ROUND_WAIT`]).
    wait: Duration,
    open: Mutex<Option<Arc<Round>>>,
    next: AtomicU64,
}

/// One round: every user swaps `week` (owned by `owner`) with a partner week of their own.
struct Round {
    id: u64,
    week: NaiveDate,
    owner: Uuid,
    size: usize,
    deadline: tokio::time::Instant,
    start: tokio::sync::watch::Sender<bool>,
    inner: Mutex<RoundInner>,
}

#[derive(Debug, Default)]
struct RoundInner {
    joined: usize,
    arrived: usize,
    done: usize,
    /// No more users may join.
    closed: bool,
    /// The gate is open: requests go.
    started: bool,
    finished: bool,
    /// A user's request ended in an error or a refusal: the contested week's owner is
    /// uncertain.
    troubled: bool,
    tags: Vec<u64>,
    winners: Vec<(u64, Option<Uuid>)>,
}

/// A round's result, handed to the last user to leave.
#[derive(Debug)]
struct Finished {
    tags: Vec<u64>,
    winners: Vec<(u64, Option<Uuid>)>,
    troubled: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Race {
    fn new(users: usize, wait: Duration) -> Race {
        Race {
            size: users.max(2),
            wait,
            open: Mutex::new(None),
            next: AtomicU64::new(1),
        }
    }

    /// Joins the open round, or opens one on a free week of `book`; `None` when no week is
    /// free.
    fn join(&self, book: &WeekBook) -> Option<Arc<Round>> {
        let mut open = lock(&self.open);
        if let Some(round) = open.as_ref() {
            let mut inner = lock(&round.inner);
            if !inner.closed {
                inner.joined += 1;
                if inner.joined >= round.size {
                    inner.closed = true;
                }
                drop(inner);
                return Some(Arc::clone(round));
            }
        }
        let (week, owner) = book.take_week()?;
        let (start, _) = tokio::sync::watch::channel(false);
        let round = Arc::new(Round {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            week,
            owner,
            size: self.size,
            deadline: tokio::time::Instant::now() + self.wait,
            start,
            inner: Mutex::new(RoundInner {
                joined: 1,
                ..RoundInner::default()
            }),
        });
        *open = Some(Arc::clone(&round));
        Some(round)
    }
}

impl Round {
    /// Opens the gate (once).
    fn open_gate(&self, inner: &mut RoundInner) {
        if !inner.started {
            inner.started = true;
            inner.closed = true;
            self.start.send_replace(true);
        }
    }

    /// A user is ready; the last of a full round opens the gate.
    fn arrive(&self) {
        let mut inner = lock(&self.inner);
        inner.arrived += 1;
        if inner.arrived >= self.size {
            self.open_gate(&mut inner);
        }
    }

    /// Waits for the gate, at most until the round's deadline (then opens it for whoever is
    /// there).
    async fn wait(&self) {
        let mut started = self.start.subscribe();
        let _ = tokio::time::timeout_at(self.deadline, started.wait_for(|go| *go)).await;
        self.open_gate(&mut lock(&self.inner));
    }

    /// Whether the gate is open.
    fn started(&self) -> bool {
        lock(&self.inner).started
    }

    fn sent(&self, tag: u64) {
        lock(&self.inner).tags.push(tag);
    }

    fn won(&self, tag: u64, swap_id: Option<Uuid>) {
        lock(&self.inner).winners.push((tag, swap_id));
    }

    fn trouble(&self) {
        lock(&self.inner).troubled = true;
    }

    /// A user is done; the last one gets the round's result.
    fn leave(&self, arrived: bool) -> Option<Finished> {
        let mut inner = lock(&self.inner);
        if !arrived {
            inner.arrived += 1;
            if inner.arrived >= self.size {
                self.open_gate(&mut inner);
            }
        }
        inner.done += 1;
        if inner.done >= inner.joined && !inner.finished {
            inner.finished = true;
            inner.closed = true;
            return Some(Finished {
                tags: std::mem::take(&mut inner.tags),
                winners: std::mem::take(&mut inner.winners),
                troubled: inner.troubled,
            });
        }
        None
    }
}

/// A user's place in a round: releases the partner week, and (the last one) the contested week
/// and the round's record, however the user's future ends.
struct Seat<'a> {
    workload: &'a SwapWorkload,
    round: Arc<Round>,
    partner: Option<(NaiveDate, Uuid)>,
    arrived: bool,
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        let book = &self.workload.ctx.weeks;
        if let Some((week, _)) = self.partner.take() {
            book.release(week);
        }
        if let Some(finished) = self.round.leave(self.arrived) {
            let week = self.round.week;
            // Not exactly one winner, or an error: the book may be wrong about the week.
            if finished.troubled || (!finished.tags.is_empty() && finished.winners.len() != 1) {
                let book = Arc::clone(book);
                self.workload
                    .refresh_later(vec![week], move || book.release(week));
            } else {
                book.release(week);
            }
            self.workload.finish_round(&self.round, finished);
        }
    }
}

/// Holds both weeks of one of `candidates` (swaps to roll back, newest first), preferring
/// those whose `current` flag is set (their weeks are still where the swap put them); returns
/// its index and the hold.
fn choose_rollback(
    book: &Arc<WeekBook>,
    candidates: &[DoneSwap],
    current: &[bool],
) -> Option<(usize, Held)> {
    let is_current = |i: &usize| current.get(*i).copied().unwrap_or(false);
    (0..candidates.len())
        .filter(is_current)
        .chain((0..candidates.len()).filter(|i| !is_current(i)))
        .find_map(|i| {
            let pair = candidates[i].pair;
            book.hold([pair.source_week, pair.target_week])
                .map(|held| (i, held))
        })
}

// ------------------------------------------------------------------------------------------
// The workload

impl SwapWorkload {
    /// Reads the options (`pairs`, `rollback_after`, `candidate_pool`, `complex`) and the week
    /// owners (the candidate searches' requesters) and builds the workload. `users` is the
    /// closed model's virtual users (0 for the open model): a `same_shift` race round has that
    /// many users, at least 2.
    pub async fn setup(
        ctx: &Arc<Context>,
        options: &Options<'_>,
        users: usize,
    ) -> anyhow::Result<SwapWorkload> {
        let pairs = match options.choice("pairs", &["disjoint", "same_shift"])? {
            "same_shift" => Pairs::SameShift,
            _ => Pairs::Disjoint,
        };
        let rollback_after = options.u64("rollback_after", 0)?;
        // Informational: the seed's size of the candidate pool.
        options.u64("candidate_pool", 0)?;
        let complex = options.bool("complex", false)?;
        let owners: Vec<Uuid> = ctx
            .db
            .query(
                "SELECT DISTINCT person_id FROM half_day_assignments ORDER BY person_id",
                &[],
            )
            .await
            .with_context(|| format!("workload {:?}: reading the week owners", options.workload))?
            .iter()
            .filter_map(|row| row.try_get::<_, Uuid>(0).ok())
            .collect();
        if ctx.weeks.len() < 2 {
            tracing::warn!(
                workload = options.workload,
                weeks = ctx.weeks.len(),
                "fewer than two inpatient weeks: swaps cannot be paired"
            );
        }
        Ok(SwapWorkload {
            ctx: Arc::clone(ctx),
            name: options.workload.to_owned(),
            pairs,
            rollback_after,
            complex,
            owners,
            race: Race::new(users, ROUND_WAIT),
            state: Mutex::new(State {
                rng: StdRng::seed_from_u64(ctx.seed ^ name_hash(options.workload)),
                answered: Sample::new(SAMPLE_CAP),
                troubled: Sample::new(SAMPLE_CAP),
                succeeded: 0,
                eligible: VecDeque::new(),
                rollbacks: Sample::new(SAMPLE_CAP),
                rounds: RoundStats {
                    total: 0,
                    one: 0,
                    none: 0,
                    many: 0,
                    empty: 0,
                    evidence: Vec::new(),
                    sample: Sample::new(SAMPLE_CAP),
                },
                candidates: CandidateStats::default(),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn reason(&self, tag: u64) -> String {
        format!("chaos {} #{tag}", self.ctx.run_id)
    }

    fn no_weeks(&self, what: &str) -> Attempt {
        Attempt::new(
            Outcome::CleanError,
            format!(
                "runner-side, nothing sent: no free {what} within {} s ({} weeks known, all in flight)",
                WEEKS_WAIT.as_secs(),
                self.ctx.weeks.len()
            ),
        )
    }

    /// Re-reads the owners of `weeks` from the database into the book, in the background (not
    /// latency), then runs `release` (which frees the weeks, when the caller held them). Only
    /// held weeks are re-read, so no concurrent operation's update is overwritten (a re-read of
    /// the whole book would: a swap that commits while the book is read, and records itself
    /// before the read is written back, would be undone in the book).
    fn refresh_later(&self, weeks: Vec<NaiveDate>, release: impl FnOnce() + Send + 'static) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            release();
            return;
        };
        let ctx = Arc::clone(&self.ctx);
        runtime.spawn(async move {
            ctx.weeks.refresh(&ctx.db, &weeks).await;
            release();
        });
    }

    /// A free pair, waiting up to [`WEEKS_WAIT`], and when it was had if that took a wait (the
    /// attempt is then timed from there; otherwise from when the driver meant to start it).
    async fn lease_pair(&self) -> Option<(Lease, Option<Instant>)> {
        let deadline = Instant::now() + WEEKS_WAIT;
        let mut waited = false;
        loop {
            if let Some(lease) = self.ctx.weeks.disjoint_pair() {
                return Some((lease, waited.then(Instant::now)));
            }
            if Instant::now() >= deadline {
                return None;
            }
            waited = true;
            tokio::time::sleep(POLL).await;
        }
    }

    /// A pair whose receiver owns a week next to the one they receive, else any pair.
    async fn complex_pair(&self) -> Option<(Lease, Option<Instant>)> {
        let book = &self.ctx.weeks;
        let mut fallback = None;
        for _ in 0..COMPLEX_TRIES {
            let Some(lease) = book.disjoint_pair() else {
                break;
            };
            if receives_next_to_own(&Pair::of(&lease), |week| book.owner(week)) {
                return Some((lease, None));
            }
            if fallback.is_none() {
                fallback = Some(lease);
            }
        }
        match fallback {
            Some(lease) => Some((lease, None)),
            None => self.lease_pair().await,
        }
    }

    /// Sends one execute: how it ended and what it was answered.
    async fn send_execute(&self, pair: &Pair, tag: u64, race: bool) -> (Attempt, ExecAnswer) {
        let reason = self.reason(tag);
        let key = format!("chaos-{}-{tag}", self.ctx.run_id);
        let result = self
            .ctx
            .api
            .send(
                Method::POST,
                "/api/v1/swaps/execute",
                Some(&pair.body(Some(&reason))),
                &[("Idempotency-Key", key)],
            )
            .await;
        match result {
            Ok(answer) => interpret_execute(answer.status, &answer.body, race),
            Err(err) => (classify_transport(&err, true), ExecAnswer::NoAnswer),
        }
    }

    /// Remembers an execute for settlement (and a success as a rollback candidate).
    fn record_execute(&self, tag: u64, pair: &Pair, answer: ExecAnswer) {
        let mut guard = self.state();
        let state = &mut *guard;
        if let ExecAnswer::Success(id) = answer {
            state.succeeded += 1;
            if let Some(swap_id) = id {
                state.eligible.push_back(DoneSwap {
                    swap_id,
                    pair: *pair,
                });
                if state.eligible.len() > ELIGIBLE_CAP {
                    state.eligible.pop_front();
                }
            }
        }
        let pool = match answer {
            ExecAnswer::Success(_) | ExecAnswer::Refused => &mut state.answered,
            _ => &mut state.troubled,
        };
        pool.push(ExecuteRecord { tag, answer }, &mut state.rng);
    }

    async fn execute(&self) -> Attempt {
        match self.pairs {
            Pairs::Disjoint => self.disjoint_execute().await,
            Pairs::SameShift => self.race_execute().await,
        }
    }

    async fn disjoint_execute(&self) -> Attempt {
        let Some((lease, waited)) = self.lease_pair().await else {
            return self.no_weeks("pair of weeks");
        };
        let pair = Pair::of(&lease);
        let tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
        let (attempt, answer) = self.send_execute(&pair, tag, false).await;
        if matches!(answer, ExecAnswer::Success(_)) {
            lease.swapped();
        }
        // Ownership is uncertain after an error; a refusal may come from a stale book.
        if attempt.outcome != Outcome::Ok || answer == ExecAnswer::Refused {
            let weeks = vec![pair.source_week, pair.target_week];
            self.refresh_later(weeks, move || drop(lease));
        } else {
            drop(lease);
        }
        self.record_execute(tag, &pair, answer);
        timed(attempt, waited)
    }

    /// One user's request in a race round (see the module docs).
    async fn race_execute(&self) -> Attempt {
        let deadline = Instant::now() + WEEKS_WAIT;
        let round = loop {
            if let Some(round) = self.race.join(&self.ctx.weeks) {
                break round;
            }
            if Instant::now() >= deadline {
                return self.no_weeks("week to race for");
            }
            tokio::time::sleep(POLL).await;
        };
        let mut seat = Seat {
            workload: self,
            round: Arc::clone(&round),
            partner: None,
            arrived: false,
        };
        // A partner week of another owner, while the round gathers.
        loop {
            seat.partner = self.take_partner(round.owner);
            if seat.partner.is_some()
                || round.started()
                || tokio::time::Instant::now() >= round.deadline
            {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        round.arrive();
        seat.arrived = true;
        round.wait().await;
        let Some((partner_week, partner)) = seat.partner else {
            return Attempt::new(
                Outcome::CleanError,
                format!(
                    "runner-side, nothing sent: no free partner week for the race on the week of {}",
                    round.week
                ),
            );
        };
        let started = Instant::now();
        let pair = Pair {
            source: round.owner,
            source_week: round.week,
            target: partner,
            target_week: partner_week,
        };
        let tag = NEXT_TAG.fetch_add(1, Ordering::Relaxed);
        round.sent(tag);
        let (attempt, answer) = self.send_execute(&pair, tag, true).await;
        if let ExecAnswer::Success(id) = answer {
            self.ctx
                .weeks
                .exchange(pair.source, pair.source_week, pair.target, pair.target_week);
            round.won(tag, id);
        }
        if attempt.outcome != Outcome::Ok || answer == ExecAnswer::Refused {
            // The partner week is re-read before it is freed; the contested week by the last
            // user of the round.
            round.trouble();
            if let Some((week, _)) = seat.partner.take() {
                let book = Arc::clone(&self.ctx.weeks);
                self.refresh_later(vec![week], move || book.release(week));
            }
        }
        self.record_execute(tag, &pair, answer);
        drop(seat);
        attempt.started_at(started)
    }

    /// A free week whose owner is not `owner`, taken (a few random tries).
    fn take_partner(&self, owner: Uuid) -> Option<(NaiveDate, Uuid)> {
        let book = &self.ctx.weeks;
        let mut rejected = Vec::new();
        let mut found = None;
        for _ in 0..8 {
            match book.take_week() {
                None => break,
                Some((week, who)) if who != owner => {
                    found = Some((week, who));
                    break;
                }
                Some((week, _)) => rejected.push(week),
            }
        }
        for week in rejected {
            book.release(week);
        }
        found
    }

    /// Records a finished round.
    fn finish_round(&self, round: &Round, finished: Finished) {
        let mut guard = self.state();
        let state = &mut *guard;
        let stats = &mut state.rounds;
        if finished.tags.is_empty() {
            stats.empty += 1;
            return;
        }
        stats.total += 1;
        match finished.winners.len() {
            0 => stats.none += 1,
            1 => stats.one += 1,
            count => {
                stats.many += 1;
                if stats.evidence.len() < EVIDENCE_CAP {
                    let winners: Vec<String> = finished
                        .winners
                        .iter()
                        .map(|(tag, id)| match id {
                            Some(id) => format!("#{tag} (swap {id})"),
                            None => format!("#{tag}"),
                        })
                        .collect();
                    stats.evidence.push(format!(
                        "round {}, week of {} (owner {}): {count} answered winners: {}",
                        round.id,
                        round.week,
                        round.owner,
                        winners.join(", ")
                    ));
                }
            }
        }
        stats.sample.push(
            RoundRecord {
                id: round.id,
                week: round.week,
                tags: finished.tags,
            },
            &mut state.rng,
        );
    }

    async fn validate(&self) -> Attempt {
        let lease = if self.complex {
            self.complex_pair().await
        } else {
            self.lease_pair().await
        };
        let Some((lease, waited)) = lease else {
            return self.no_weeks("pair of weeks");
        };
        let pair = Pair::of(&lease);
        let result = self
            .ctx
            .api
            .post("/api/v1/swaps/validate", &pair.body(None))
            .await;
        drop(lease);
        let attempt = match result {
            Err(err) => classify_transport(&err, false),
            Ok(answer) => {
                let attempt = classify_status(answer.status, &answer.body);
                let valid = answer
                    .json()
                    .and_then(|v| v.get("valid").and_then(Value::as_bool));
                if attempt.outcome == Outcome::Ok && valid.is_none() {
                    Attempt::new(
                        Outcome::UncleanError,
                        format!("{} without a valid flag", answer.status),
                    )
                } else {
                    attempt
                }
            }
        };
        timed(attempt, waited)
    }

    async fn candidates(&self) -> Attempt {
        let person = {
            let mut state = self.state();
            if self.owners.is_empty() {
                None
            } else {
                let index = state.rng.random_range(0..self.owners.len());
                Some(self.owners[index])
            }
        };
        let Some(person) = person else {
            return Attempt::new(
                Outcome::CleanError,
                "runner-side, nothing sent: no week owner was found at setup",
            );
        };
        let body = json!({"person_id": person, "max_candidates": 10});
        let answer = match self
            .ctx
            .api
            .post("/api/v1/schedule/swaps/candidates", &body)
            .await
        {
            Ok(answer) => answer,
            Err(err) => return classify_transport(&err, false),
        };
        let attempt = classify_status(answer.status, &answer.body);
        if attempt.outcome != Outcome::Ok {
            return attempt;
        }
        let ids = match candidate_ids(&answer.body) {
            Ok(ids) => ids,
            Err(detail) => return Attempt::new(Outcome::UncleanError, detail),
        };
        let mut parsed = Vec::with_capacity(ids.len());
        let mut invalid = Vec::new();
        for id in &ids {
            match Uuid::parse_str(id) {
                Ok(uuid) => parsed.push(uuid),
                Err(_) => invalid.push(id.clone()),
            }
        }
        let mut missing: Vec<String> = invalid;
        let mut checked = true;
        if !parsed.is_empty() {
            match self
                .ctx
                .db
                .query("SELECT id FROM people WHERE id = ANY($1)", &[&parsed])
                .await
            {
                Ok(rows) => {
                    let found: HashSet<Uuid> = rows
                        .iter()
                        .filter_map(|row| row.try_get::<_, Uuid>(0).ok())
                        .collect();
                    missing.extend(
                        parsed
                            .iter()
                            .filter(|id| !found.contains(id))
                            .map(Uuid::to_string),
                    );
                }
                Err(err) => {
                    tracing::warn!(%err, "checking candidate ids against people failed");
                    checked = false;
                }
            }
        }
        let mut state = self.state();
        let stats = &mut state.candidates;
        stats.answers += 1;
        stats.ids += ids.len() as u64;
        if !checked {
            stats.unchecked += 1;
        }
        if missing.is_empty() {
            return Attempt::ok();
        }
        stats.missing += missing.len() as u64;
        let detail = format!(
            "candidate {} exists nowhere in people ({} of {} candidates for {person})",
            shorten(&missing[0], 60),
            missing.len(),
            ids.len()
        );
        if stats.evidence.len() < EVIDENCE_CAP {
            stats.evidence.push(detail.clone());
        }
        Attempt::new(Outcome::Fallback, detail)
    }

    /// Picks one of this workload's swaps to roll back and holds its two weeks in the book
    /// ([`choose_rollback`]); `None` before `rollback_after` successes, or when none can be held.
    fn pick_rollback(&self) -> Option<(DoneSwap, Held)> {
        let candidates: Vec<DoneSwap> = {
            let state = self.state();
            if state.succeeded < self.rollback_after {
                return None;
            }
            state
                .eligible
                .iter()
                .rev()
                .take(ROLLBACK_SCAN)
                .copied()
                .collect()
        };
        if candidates.is_empty() {
            return None;
        }
        let book = &self.ctx.weeks;
        let current: Vec<bool> = candidates
            .iter()
            .map(|swap| {
                book.owner(swap.pair.source_week) == Some(swap.pair.target)
                    && book.owner(swap.pair.target_week) == Some(swap.pair.source)
            })
            .collect();
        let (index, held) = choose_rollback(book, &candidates, &current)?;
        let chosen = candidates[index];
        let mut state = self.state();
        // Another rollback may have taken it meanwhile (then `held` frees the weeks).
        let position = state
            .eligible
            .iter()
            .position(|swap| swap.swap_id == chosen.swap_id)?;
        state.eligible.remove(position);
        Some((chosen, held))
    }

    async fn rollback(&self) -> Attempt {
        let Some((done, hold)) = self.pick_rollback() else {
            return self.execute().await.counted_as("execute");
        };
        let path = format!("/api/v1/swaps/{}/rollback", done.swap_id);
        let body = json!({"reason": format!("chaos {} rollback", self.ctx.run_id)});
        let result = self
            .ctx
            .api
            .send(Method::POST, &path, Some(&body), &[])
            .await;
        let (attempt, answer) = match result {
            Ok(answer) => interpret_rollback(answer.status, &answer.body),
            Err(err) => (classify_transport(&err, true), RollbackAnswer::NoAnswer),
        };
        let pair = done.pair;
        if answer == RollbackAnswer::Done {
            // Back to how it was: each week to its first owner.
            self.ctx
                .weeks
                .exchange(pair.target, pair.source_week, pair.source, pair.target_week);
        }
        {
            let mut guard = self.state();
            let state = &mut *guard;
            if answer == RollbackAnswer::Status(409) && state.eligible.len() < ELIGIBLE_CAP {
                // A later swap moved its weeks on; it may be rolled back once that one is.
                state.eligible.push_front(done);
            }
            state.rollbacks.push(
                RollbackRecord {
                    swap_id: done.swap_id,
                    answer,
                },
                &mut state.rng,
            );
        }
        if attempt.outcome != Outcome::Ok {
            let weeks = vec![pair.source_week, pair.target_week];
            self.refresh_later(weeks, move || drop(hold));
        } else {
            drop(hold);
        }
        attempt
    }

    async fn history(&self) -> Attempt {
        match self.ctx.api.get("/api/v1/swaps/history?page_size=20").await {
            Err(err) => classify_transport(&err, false),
            Ok(answer) => {
                let attempt = classify_status(answer.status, &answer.body);
                let items = answer
                    .json()
                    .is_some_and(|v| v.get("items").is_some_and(Value::is_array));
                if attempt.outcome == Outcome::Ok && !items {
                    Attempt::new(
                        Outcome::UncleanError,
                        format!("{} without an items array", answer.status),
                    )
                } else {
                    attempt
                }
            }
        }
    }

    // --------------------------------------------------------------------------------------
    // Settlement

    /// The swap records of `reasons`, by reason.
    async fn records_by_reason(
        db: &tokio_postgres::Client,
        reasons: Vec<String>,
    ) -> Result<HashMap<String, Vec<DbSwap>>, tokio_postgres::Error> {
        let mut found: HashMap<String, Vec<DbSwap>> = HashMap::new();
        for chunk in reasons.chunks(QUERY_CHUNK) {
            let rows = db
                .query(
                    "SELECT reason, id, status FROM swap_records WHERE reason = ANY($1)",
                    &[&chunk],
                )
                .await?;
            for row in rows {
                let (Ok(reason), Ok(id), Ok(status)) = (
                    row.try_get::<_, String>(0),
                    row.try_get::<_, Uuid>(1),
                    row.try_get::<_, String>(2),
                ) else {
                    continue;
                };
                found.entry(reason).or_default().push(DbSwap { id, status });
            }
        }
        Ok(found)
    }

    async fn settle_checks(&self, ctx: &Context) -> Vec<CheckResult> {
        let (answered, troubled, rounds, rollbacks, round_stats, candidates) = {
            let state = self.state();
            (
                state.answered.clone(),
                state.troubled.clone(),
                state.rounds.sample.clone(),
                state.rollbacks.clone(),
                (
                    state.rounds.total,
                    state.rounds.one,
                    state.rounds.none,
                    state.rounds.many,
                    state.rounds.empty,
                    state.rounds.evidence.clone(),
                ),
                (
                    state.candidates.answers,
                    state.candidates.ids,
                    state.candidates.missing,
                    state.candidates.unchecked,
                    state.candidates.evidence.clone(),
                ),
            )
        };
        let source = self.name.as_str();
        let mut checks = Vec::new();
        let executed = answered.seen + troubled.seen;
        let race =
            self.pairs == Pairs::SameShift && (round_stats.0 + round_stats.4 > 0 || executed > 0);

        let records = if executed > 0 || race {
            let mut tags: HashSet<u64> = answered
                .items
                .iter()
                .chain(&troubled.items)
                .map(|record| record.tag)
                .collect();
            tags.extend(
                rounds
                    .items
                    .iter()
                    .flat_map(|round| round.tags.iter().copied()),
            );
            let reasons = tags.iter().map(|tag| self.reason(*tag)).collect();
            Some(Self::records_by_reason(&ctx.checks_db, reasons).await)
        } else {
            None
        };

        if executed > 0 {
            match &records {
                Some(Ok(found)) => {
                    checks.extend(answers_checks(
                        source,
                        |tag| self.reason(tag),
                        found,
                        &answered,
                        &troubled,
                    ));
                }
                Some(Err(err)) => {
                    checks.push(CheckResult::fail(
                        "swap-answers-match-the-database",
                        source,
                        format!("could not read swap_records: {err}"),
                        Vec::new(),
                    ));
                }
                None => {}
            }
        }
        if race {
            let (total, one, none, many, empty, mut evidence) = round_stats;
            let mut detail = format!(
                "{total} rounds of up to {} users: {one} with exactly one winner, {none} with none",
                self.race.size
            );
            if empty > 0 {
                detail.push_str(&format!(
                    ", and {empty} that sent nothing (cancelled, or no free partner week)"
                ));
            }
            let mut over_committed = 0;
            match &records {
                Some(Ok(found)) => {
                    for round in &rounds.items {
                        let committed: Vec<String> = round
                            .tags
                            .iter()
                            .filter_map(|tag| {
                                let swap = found
                                    .get(&self.reason(*tag))?
                                    .iter()
                                    .find(|swap| swap.committed())?;
                                Some(format!("#{tag} (swap {} {})", swap.id, swap.status))
                            })
                            .collect();
                        if committed.len() > 1 {
                            over_committed += 1;
                            if evidence.len() < EVIDENCE_CAP {
                                evidence.push(format!(
                                    "round {}, week of {}: {} swaps committed in the database: {}",
                                    round.id,
                                    round.week,
                                    committed.len(),
                                    committed.join(", ")
                                ));
                            }
                        }
                    }
                    detail.push_str(&format!(
                        "; {} rounds checked in the database{}",
                        rounds.items.len(),
                        rounds.sampled()
                    ));
                }
                Some(Err(err)) => {
                    detail.push_str(&format!("; the database could not be read: {err}"));
                }
                None => {}
            }
            checks.push(if many == 0 && over_committed == 0 {
                CheckResult::pass("swap-race-one-winner", source, detail)
            } else {
                CheckResult::fail(
                    "swap-race-one-winner",
                    source,
                    format!(
                        "{many} rounds answered more than one winner, {over_committed} committed more than one swap: {detail}"
                    ),
                    evidence,
                )
            });
        }
        if rollbacks.seen > 0 {
            checks.push(self.rollback_check(ctx, &rollbacks).await);
        }
        let (answers, ids, missing, unchecked, evidence) = candidates;
        if answers > 0 {
            let mut detail = format!("{answers} candidate searches answered, {ids} candidate ids");
            if unchecked > 0 {
                detail.push_str(&format!(
                    " ({unchecked} answers could not be checked: the database query failed)"
                ));
            }
            checks.push(if missing == 0 {
                CheckResult::pass(
                    "swap-candidates-exist",
                    source,
                    format!("{detail}, all in people"),
                )
            } else {
                CheckResult::fail(
                    "swap-candidates-exist",
                    source,
                    format!("{missing} of {detail} exist nowhere in people: made-up answers"),
                    evidence,
                )
            });
        }
        checks
    }

    /// `swap-rollbacks-restored`.
    async fn rollback_check(
        &self,
        ctx: &Context,
        rollbacks: &Sample<RollbackRecord>,
    ) -> CheckResult {
        let name = "swap-rollbacks-restored";
        let source = self.name.as_str();
        let ids: Vec<Uuid> = rollbacks.items.iter().map(|r| r.swap_id).collect();
        let mut statuses: HashMap<Uuid, String> = HashMap::new();
        for chunk in ids.chunks(QUERY_CHUNK) {
            match ctx
                .checks_db
                .query(
                    "SELECT id, status FROM swap_records WHERE id = ANY($1)",
                    &[&chunk],
                )
                .await
            {
                Ok(rows) => {
                    for row in rows {
                        if let (Ok(id), Ok(status)) =
                            (row.try_get::<_, Uuid>(0), row.try_get::<_, String>(1))
                        {
                            statuses.insert(id, status);
                        }
                    }
                }
                Err(err) => {
                    return CheckResult::fail(
                        name,
                        source,
                        format!("could not read swap_records: {err}"),
                        Vec::new(),
                    );
                }
            }
        }
        let (mut done, mut refused, mut errors) = (0u64, 0u64, 0u64);
        let (mut unknown_back, mut unknown_not, mut broken) = (0u64, 0u64, 0u64);
        let mut evidence = Vec::new();
        for record in &rollbacks.items {
            let status = statuses.get(&record.swap_id).map(String::as_str);
            match record.answer {
                RollbackAnswer::Done => {
                    done += 1;
                    if status != Some("rolled_back") {
                        broken += 1;
                        if evidence.len() < EVIDENCE_CAP {
                            evidence.push(format!(
                                "rollback of swap {} answered 200, but the database has it {}",
                                record.swap_id,
                                status.unwrap_or("missing")
                            ));
                        }
                    }
                }
                RollbackAnswer::Status(409) => refused += 1,
                RollbackAnswer::Status(_) => errors += 1,
                RollbackAnswer::NoAnswer => {
                    if status == Some("rolled_back") {
                        unknown_back += 1;
                    } else {
                        unknown_not += 1;
                    }
                }
            }
        }
        let mut detail = format!(
            "{} rollbacks{}: {done} answered 200, {refused} refused with 409 (a later swap moved the weeks), {errors} errors",
            rollbacks.items.len(),
            rollbacks.sampled()
        );
        if unknown_back + unknown_not > 0 {
            detail.push_str(&format!(
                ", {} without an answer: {unknown_back} rolled back, {unknown_not} not",
                unknown_back + unknown_not
            ));
        }
        if broken == 0 {
            CheckResult::pass(name, source, format!("{detail}; every 200 is rolled_back"))
        } else {
            CheckResult::fail(
                name,
                source,
                format!(
                    "{broken} rollbacks answered 200 are not rolled_back in the database: {detail}"
                ),
                evidence,
            )
        }
    }
}

impl Workload for SwapWorkload {
    fn run<'a>(&'a self, op: &'a str, _user: u64) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            match op {
                "execute" => self.execute().await,
                "validate" => self.validate().await,
                "candidates" => self.candidates().await,
                "rollback" => self.rollback().await,
                "history" => self.history().await,
                other => Attempt::new(
                    Outcome::CleanError,
                    format!("runner-side: the swap workload has no operation {other:?}"),
                ),
            }
        })
    }

    fn settle<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Vec<CheckResult>> {
        Box::pin(self.settle_checks(ctx))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn day(n: u64) -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, 1, 6).unwrap() + chrono::Days::new(7 * n)
    }

    fn swap(status: &str) -> DbSwap {
        DbSwap {
            id: Uuid::new_v4(),
            status: status.to_owned(),
        }
    }

    #[test]
    fn successes_must_be_in_the_database_with_their_id() {
        let record = swap("executed");
        let answer = ExecAnswer::Success(Some(record.id));
        assert_eq!(
            settle_execute(&answer, std::slice::from_ref(&record)),
            Settled::Agrees
        );
        assert!(matches!(settle_execute(&answer, &[]), Settled::Lost(_)));
        let other = swap("executed");
        let Settled::Lost(text) = settle_execute(&answer, std::slice::from_ref(&other)) else {
            panic!("another id is a made-up answer");
        };
        assert!(text.contains(&other.id.to_string()), "{text}");
        assert_eq!(
            settle_execute(&ExecAnswer::Success(None), &[record]),
            Settled::Agrees
        );
    }

    #[test]
    fn refusals_and_errors_that_committed_are_caught() {
        let committed = [swap("executed")];
        let rolled = [swap("rolled_back")];
        for answer in [
            ExecAnswer::Refused,
            ExecAnswer::Status(409, Some("Swap conflict".into())),
            ExecAnswer::Status(500, None),
            ExecAnswer::Status(503, None),
        ] {
            assert!(
                matches!(
                    settle_execute(&answer, &committed),
                    Settled::CommittedDespite(_)
                ),
                "{answer:?}"
            );
            assert!(matches!(
                settle_execute(&answer, &rolled),
                Settled::CommittedDespite(_)
            ));
            assert_eq!(settle_execute(&answer, &[]), Settled::Agrees);
            assert_eq!(settle_execute(&answer, &[swap("pending")]), Settled::Agrees);
        }
        let busy = ExecAnswer::Status(503, Some("database timeout: x".into()));
        assert!(matches!(
            settle_execute(&busy, &committed),
            Settled::Ambiguous(_)
        ));
        assert_eq!(settle_execute(&busy, &[]), Settled::Agrees);
    }

    #[test]
    fn no_answer_is_settled_not_judged() {
        for answer in [ExecAnswer::NoAnswer, ExecAnswer::Status(504, None)] {
            assert_eq!(
                settle_execute(&answer, &[swap("executed")]),
                Settled::Unknown { committed: true }
            );
            assert_eq!(
                settle_execute(&answer, &[]),
                Settled::Unknown { committed: false }
            );
        }
    }

    #[test]
    fn the_answers_check_names_commits_behind_errors() {
        let mut rng = StdRng::seed_from_u64(1);
        let (mut answered, mut troubled) = (Sample::new(10), Sample::new(10));
        let ok_id = Uuid::new_v4();
        let records = [
            (1, ExecAnswer::Success(Some(ok_id))),
            (2, ExecAnswer::Refused),
            (3, ExecAnswer::Status(409, Some("Swap conflict".into()))),
            (4, ExecAnswer::NoAnswer),
            (5, ExecAnswer::Status(503, Some("database timeout".into()))),
        ];
        for (tag, answer) in records {
            let pool = if tag <= 2 {
                &mut answered
            } else {
                &mut troubled
            };
            pool.push(ExecuteRecord { tag, answer }, &mut rng);
        }
        let reason = |tag: u64| format!("chaos r #{tag}");
        let mut found = HashMap::new();
        found.insert(
            reason(1),
            vec![DbSwap {
                id: ok_id,
                status: "executed".into(),
            }],
        );
        found.insert(reason(4), vec![swap("executed")]);
        found.insert(reason(5), vec![swap("rolled_back")]);
        let checks = answers_checks("swaps", reason, &found, &answered, &troubled);
        assert_eq!(checks.len(), 2);
        let (main, advisory) = (&checks[0], &checks[1]);
        assert!(main.passed && main.required, "{main:?}");
        assert_eq!(
            main.detail,
            "5 executes settled: 1 answered success, all in the database; 1 refused by \
             validation, 1 answered 409, none committed; 1 answered 503 with a reason (1 committed \
             anyway: see swap-ambiguous-503s); 1 got no answer, settled here: 1 turned out \
             committed, 0 not"
        );
        assert!(!advisory.passed && !advisory.required);
        assert_eq!(advisory.name, "swap-ambiguous-503s");
        assert_eq!(advisory.evidence.len(), 1);

        troubled.push(
            ExecuteRecord {
                tag: 6,
                answer: ExecAnswer::Status(500, None),
            },
            &mut rng,
        );
        found.insert(reason(6), vec![swap("executed")]);
        found.remove(&reason(1));
        let checks = answers_checks("swaps", reason, &found, &answered, &troubled);
        let main = &checks[0];
        assert!(!main.passed && main.required);
        assert!(
            main.detail
                .starts_with("6 executes settled: 1 answered success but are not in the database"),
            "{}",
            main.detail
        );
        assert_eq!(main.evidence.len(), 2);
        assert!(main.evidence.iter().any(|line| {
            line.starts_with("#6 (chaos r #6): answered 500 without a reason, but swap")
        }));
    }

    #[test]
    fn execute_answers_are_read_honestly() {
        let id = Uuid::new_v4();
        let body = format!(r#"{{"success":true,"swap_id":"{id}","message":"ok"}}"#);
        let (attempt, answer) = interpret_execute(200, body.as_bytes(), false);
        assert_eq!(attempt.outcome, Outcome::Ok);
        assert_eq!(answer, ExecAnswer::Success(Some(id)));
        let (attempt, answer) =
            interpret_execute(200, br#"{"success":false,"swap_id":null}"#, false);
        assert_eq!(
            (attempt.outcome, answer),
            (Outcome::Ok, ExecAnswer::Refused)
        );
        let conflict = br#"{"detail":"Swap conflict: the week of x was already swapped"}"#;
        assert_eq!(
            interpret_execute(409, conflict, false).0.outcome,
            Outcome::CleanError
        );
        let (attempt, answer) = interpret_execute(409, conflict, true);
        assert_eq!(
            attempt.outcome,
            Outcome::Ok,
            "a lost race is the expected answer"
        );
        assert!(matches!(answer, ExecAnswer::Status(409, Some(_))));
        // The status phrase is not a reason.
        let (attempt, answer) =
            interpret_execute(500, br#"{"detail":"Internal Server Error"}"#, false);
        assert_eq!(attempt.outcome, Outcome::UncleanError);
        assert_eq!(answer, ExecAnswer::Status(500, None));
        let (attempt, answer) =
            interpret_execute(503, br#"{"detail":"database timeout: canceled"}"#, false);
        assert_eq!(attempt.outcome, Outcome::CleanError);
        assert!(matches!(answer, ExecAnswer::Status(503, Some(_))));
        let (attempt, answer) = interpret_execute(200, b"<html>", false);
        assert_eq!(
            (attempt.outcome, answer),
            (Outcome::Unknown, ExecAnswer::NoAnswer)
        );
        assert_eq!(interpret_execute(504, b"", false).1, ExecAnswer::NoAnswer);
    }

    #[test]
    fn rollback_answers() {
        assert_eq!(interpret_rollback(200, b"{}").1, RollbackAnswer::Done);
        let (attempt, answer) = interpret_rollback(409, br#"{"detail":"Cannot roll back"}"#);
        assert_eq!(
            (attempt.outcome, answer),
            (Outcome::Ok, RollbackAnswer::Status(409))
        );
        let (attempt, answer) = interpret_rollback(400, br#"{"detail":"Swap is rolled_back"}"#);
        assert_eq!(attempt.outcome, Outcome::CleanError);
        assert_eq!(answer, RollbackAnswer::Status(400));
        assert_eq!(interpret_rollback(404, b"").0.outcome, Outcome::CleanError);
    }

    #[test]
    fn candidate_ids_are_read_from_the_answer() {
        let body = br#"{"person_id":"p","candidates":[{"person_id":"a"},{"person_id":7},{}]}"#;
        assert_eq!(candidate_ids(body).unwrap(), ["a", "7", "(none)"]);
        assert!(candidate_ids(br#"{"person_id":"p"}"#).is_err());
        assert!(candidate_ids(b"nope").is_err());
    }

    #[test]
    fn complex_pairs_give_a_receiver_a_neighbouring_week() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        // Weeks 0..6: a b c a b c
        let owners: BTreeMap<NaiveDate, Uuid> = (0..6)
            .map(|i| (day(i), [a, b, c][i as usize % 3]))
            .collect();
        let owner_of = |week: NaiveDate| owners.get(&week).copied();
        // b receives week 0 and owns week 1: but gives week 1 away.
        let pair = Pair {
            source: a,
            source_week: day(0),
            target: b,
            target_week: day(1),
        };
        assert!(!receives_next_to_own(&pair, owner_of));
        // b receives week 0, gives week 4, keeps week 1.
        let pair = Pair {
            target_week: day(4),
            ..pair
        };
        assert!(receives_next_to_own(&pair, owner_of));
        // a receives week 2 (c's), a owns week 3, gives week 0.
        let pair = Pair {
            source: a,
            source_week: day(0),
            target: c,
            target_week: day(2),
        };
        assert!(receives_next_to_own(&pair, owner_of));
        // c receives week 3 (a's): owns 2 and... gives 2; a receives 5: owns 4? no (b).
        let pair = Pair {
            source: a,
            source_week: day(3),
            target: c,
            target_week: day(2),
        };
        assert!(!receives_next_to_own(&pair, owner_of));
    }

    #[test]
    fn a_rollback_holds_exactly_its_two_weeks() {
        let people: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
        let owners: BTreeMap<NaiveDate, Uuid> =
            (0..8).map(|i| (day(i), people[i as usize % 4])).collect();
        let book = Arc::new(WeekBook::new(owners, 9));
        let swap = |a: u64, b: u64| DoneSwap {
            swap_id: Uuid::new_v4(),
            pair: Pair {
                source: people[a as usize % 4],
                source_week: day(a),
                target: people[b as usize % 4],
                target_week: day(b),
            },
        };
        let candidates = [swap(0, 1), swap(2, 3), swap(4, 5)];
        // The second is current; the others not: it is the one held.
        let (index, held) = choose_rollback(&book, &candidates, &[false, true, false]).unwrap();
        assert_eq!(index, 1);
        assert_eq!(held.weeks, [day(2), day(3)]);
        let mut free = Vec::new();
        while let Some((week, _)) = book.take_week() {
            free.push(week);
        }
        assert_eq!(free.len(), 6, "every other week was freed");
        assert!(!free.contains(&day(2)) && !free.contains(&day(3)));
        for week in free {
            book.release(week);
        }
        // Nothing current: the newest whose weeks are free.
        let (index, other) = choose_rollback(&book, &candidates, &[false, false, false]).unwrap();
        assert_eq!(index, 0);
        drop((held, other));
        // Weeks in flight elsewhere cannot be held.
        let lease_weeks: Vec<NaiveDate> = (0..8)
            .filter_map(|_| book.take_week().map(|w| w.0))
            .collect();
        assert_eq!(lease_weeks.len(), 8);
        assert!(choose_rollback(&book, &candidates, &[true, true, true]).is_none());
        book.release(day(4));
        book.release(day(5));
        let (index, _held) = choose_rollback(&book, &candidates, &[true, true, true]).unwrap();
        assert_eq!(index, 2);
    }

    #[test]
    fn samples_stay_bounded_and_count_everything() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut sample = Sample::new(10);
        for i in 0..1000u64 {
            sample.push(i, &mut rng);
        }
        assert_eq!(sample.items.len(), 10);
        assert_eq!(sample.seen, 1000);
        assert!(sample.items.iter().any(|i| *i >= 10), "later items get in");
        assert!(sample.sampled().contains("10 of 1000"));
        let mut small = Sample::new(10);
        small.push(1, &mut rng);
        assert_eq!(small.sampled(), "");
    }

    #[tokio::test]
    async fn race_rounds_gather_start_and_finish_once() {
        let owners: BTreeMap<NaiveDate, Uuid> = (0..8).map(|i| (day(i), Uuid::new_v4())).collect();
        let book = WeekBook::new(owners, 3);
        let race = Race::new(3, ROUND_WAIT);
        let first = race.join(&book).unwrap();
        let second = race.join(&book).unwrap();
        let third = race.join(&book).unwrap();
        assert!(Arc::ptr_eq(&first, &second) && Arc::ptr_eq(&first, &third));
        let next = race.join(&book).unwrap();
        assert!(
            !Arc::ptr_eq(&first, &next),
            "a full round takes nobody else"
        );
        assert_ne!(first.week, next.week);
        first.arrive();
        first.arrive();
        assert!(!first.started());
        first.arrive();
        assert!(first.started());
        first.wait().await;
        first.sent(1);
        first.won(1, None);
        assert!(first.leave(true).is_none());
        assert!(first.leave(true).is_none());
        let done = first.leave(true).expect("the last user gets the result");
        assert_eq!(done.tags, [1]);
        assert_eq!(done.winners.len(), 1);
        assert!(first.leave(true).is_none(), "only once");
    }

    #[tokio::test]
    async fn a_round_that_never_fills_starts_at_its_deadline() {
        let owners: BTreeMap<NaiveDate, Uuid> = (0..4).map(|i| (day(i), Uuid::new_v4())).collect();
        let book = WeekBook::new(owners, 3);
        let race = Race::new(5, Duration::from_millis(20));
        let round = race.join(&book).unwrap();
        round.arrive();
        round.wait().await;
        assert!(round.started());
        let later = race.join(&book).unwrap();
        assert!(!Arc::ptr_eq(&round, &later), "a started round is closed");
        // A user who leaves without arriving still counts.
        let lonely = Race::new(2, ROUND_WAIT);
        let round = lonely.join(&book).unwrap();
        assert!(round.leave(false).is_some());
    }

    #[test]
    fn name_hashes_differ_and_are_stable() {
        assert_eq!(name_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(name_hash("swaps"), name_hash("race"));
    }
}
