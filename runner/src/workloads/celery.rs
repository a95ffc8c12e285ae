//! The `celery` workload: publishes the resilience analysis task through the API and follows
//! every task it was given an id for until it is done, reading Celery's result backend in
//! Redis directly (not through the proxy).
//!
//! - `enqueue`: `POST /api/v1/resilience/tasks/analysis` `{}`. `202` with a `task_id` is
//!   [`Outcome::Ok`] and the task is tracked; another status is classified by
//!   [`classify_status`]; no answer is [`Outcome::Unknown`] (the task may have been published,
//!   and it cannot be tracked without its id).
//! - In the background, every 250 ms, `GET celery-task-meta-<id>` (one `MGET` per 500 ids)
//!   for the tracked tasks not ready yet: the first time a task is seen `SUCCESS`, `FAILURE` or
//!   `REVOKED` gives its queue latency (from the `202` to that poll) and its end. `RETRY`
//!   metas are counted (a retried task runs more than once, legitimately).
//! - [`Workload::settle`] waits for every tracked task to be ready, at most `drain_timeout`
//!   seconds (option, default 60), then checks `celery-every-task-ran` (a task that is still not
//!   ready and, on the testbed, has no `chaos-testbed:executions:<id>` counter was published
//!   and never executed: the `lost-task` flaw), `celery-no-task-ran-twice` (testbed: the
//!   counter above 1 plus the retries seen) and `celery-tasks-succeeded` (advisory).
//!
//! Memory is bounded: at most [`MAX_TRACKED`] tasks are tracked (a two-hour soak at 2/s is
//! 14,400); later ones are counted only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio_util::sync::{CancellationToken, DropGuard};

use super::{Options, Workload};
use chaos_testbed::celery::{ResultMeta, TaskState};

use crate::context::Context;
use crate::outcome::{Attempt, Outcome, classify_status, classify_transport, shorten};
use crate::report::CheckResult;

/// The route that publishes the analysis task.
pub const ENQUEUE_PATH: &str = "/api/v1/resilience/tasks/analysis";

/// How often the tracked tasks are polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Tasks tracked at most; later ones are only counted.
pub const MAX_TRACKED: usize = 200_000;

/// Ids per `MGET`.
const CHUNK: usize = 500;

/// Bound on one Redis command.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// Celery's result key prefix.
const META_PREFIX: &str = "celery-task-meta-";

/// The testbed worker's duplicate detector's key prefix.
const EXECUTIONS_PREFIX: &str = "chaos-testbed:executions:";

/// The longest queue latency the histogram keeps exactly (a day, in µs; longer saturates).
const LATENCY_HIGH_US: u64 = 86_400_000_000;

/// How a tracked task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Success,
    Failure,
    Revoked,
}

/// One tracked task.
#[derive(Debug)]
struct Task {
    id: String,
    /// When the `202` came back.
    enqueued: Instant,
    end: Option<End>,
    /// Distinct `RETRY` metas seen (each is one more legitimate run).
    retries: u32,
    /// The `date_done` of the last `RETRY` meta seen, to count each retry once.
    last_retry: Option<String>,
    /// The executions counter read when the task was first seen ready (testbed).
    executions: Option<i64>,
}

/// What the poller and the operations share.
struct State {
    tasks: Vec<Task>,
    by_id: HashMap<String, usize>,
    /// Indexes of tracked tasks not ready yet.
    pending: Vec<usize>,
    /// Queue latency of the ready tasks, µs.
    latency: Histogram<u64>,
    /// Tasks published (202) past [`MAX_TRACKED`].
    untracked: u64,
    /// Publishes that got no answer.
    unknown: u64,
    /// One error of a task that ended `FAILURE` or `REVOKED`.
    failure_example: Option<String>,
}

impl State {
    fn new() -> State {
        State {
            tasks: Vec::new(),
            by_id: HashMap::new(),
            pending: Vec::new(),
            latency: Histogram::new_with_bounds(1, LATENCY_HIGH_US, 3)
                .expect("constant histogram bounds are valid"),
            untracked: 0,
            unknown: 0,
            failure_example: None,
        }
    }

    fn track(&mut self, id: String, enqueued: Instant) {
        if self.by_id.contains_key(&id) {
            return;
        }
        if self.tasks.len() >= MAX_TRACKED {
            self.untracked += 1;
            return;
        }
        let index = self.tasks.len();
        self.by_id.insert(id.clone(), index);
        self.pending.push(index);
        self.tasks.push(Task {
            id,
            enqueued,
            end: None,
            retries: 0,
            last_retry: None,
            executions: None,
        });
    }

    fn pending_ids(&self) -> Vec<String> {
        self.pending
            .iter()
            .map(|index| self.tasks[*index].id.clone())
            .collect()
    }

    /// Records what `GET celery-task-meta-<id>` gave for `ids` at `now`; returns the ids that
    /// became ready.
    fn observe(&mut self, ids: &[String], metas: &[Option<String>], now: Instant) -> Vec<String> {
        let mut ready = Vec::new();
        for (id, meta) in ids.iter().zip(metas) {
            let Some(index) = self.by_id.get(id).copied() else {
                continue;
            };
            let Some(meta) = meta.as_deref().and_then(parse_meta) else {
                continue;
            };
            let task = &mut self.tasks[index];
            if task.end.is_some() {
                continue;
            }
            match meta {
                Meta::Retry(marker) => {
                    if task.last_retry.as_deref() != Some(marker.as_str()) {
                        task.retries += 1;
                        task.last_retry = Some(marker);
                    }
                }
                Meta::Ready(end, error) => {
                    task.end = Some(end);
                    task.last_retry = None;
                    let waited = now.saturating_duration_since(task.enqueued);
                    let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
                    self.latency.saturating_record(micros.max(1));
                    if end != End::Success && self.failure_example.is_none() {
                        self.failure_example = Some(format!(
                            "{id}: {}",
                            error.unwrap_or_else(|| format!("{end:?}"))
                        ));
                    }
                    ready.push(id.clone());
                }
                Meta::NotReady => {}
            }
        }
        if !ready.is_empty() {
            let tasks = &self.tasks;
            self.pending.retain(|index| tasks[*index].end.is_none());
        }
        ready
    }

    fn note_executions(&mut self, ids: &[String], counts: &[Option<i64>]) {
        for (id, count) in ids.iter().zip(counts) {
            if let (Some(index), Some(count)) = (self.by_id.get(id), count) {
                let task = &mut self.tasks[*index];
                task.executions = Some(task.executions.map_or(*count, |seen| seen.max(*count)));
            }
        }
    }
}

/// A result meta, as far as the tracking needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Meta {
    /// `PENDING`, `STARTED`, `RECEIVED`: not ready.
    NotReady,
    /// `RETRY`, with what tells one retry from the next (its `date_done`, else the meta).
    Retry(String),
    /// Ready, with the error of a failure (`"RuntimeError: ..."`).
    Ready(End, Option<String>),
}

/// Reads a `celery-task-meta-<id>` value (`None`: not Celery meta), with the testbed's own
/// reading of Celery's result format.
fn parse_meta(text: &str) -> Option<Meta> {
    let meta = ResultMeta::from_json(text.as_bytes()).ok()?;
    let end = match meta.status {
        TaskState::Success => End::Success,
        TaskState::Failure => End::Failure,
        TaskState::Revoked => End::Revoked,
        TaskState::Retry => {
            return Some(Meta::Retry(
                meta.date_done.clone().unwrap_or_else(|| text.to_owned()),
            ));
        }
        TaskState::Pending | TaskState::Received | TaskState::Started => {
            return Some(Meta::NotReady);
        }
    };
    let error = (end != End::Success).then(|| {
        let error = meta.error().unwrap_or_else(|| "error".to_owned());
        shorten(&error, 200)
    });
    Some(Meta::Ready(end, error))
}

/// `queue latency p50 X ms, p95 Y ms, max Z ms` of a histogram in µs.
fn latency_summary(latency: &Histogram<u64>) -> String {
    if latency.is_empty() {
        return "no queue latency measured".to_owned();
    }
    let ms = |micros: u64| format!("{:.0}", micros as f64 / 1000.0);
    format!(
        "queue latency p50 {} ms, p95 {} ms, max {} ms",
        ms(latency.value_at_quantile(0.5)),
        ms(latency.value_at_quantile(0.95)),
        ms(latency.max())
    )
}

/// Tracks tasks; shared by the operations, the poller and settle.
struct Tracker {
    state: Mutex<State>,
    testbed: bool,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One pass over the pending tasks: their metas, and for those that became ready on the
    /// testbed their executions counters.
    async fn poll_once(&self, redis: &mut redis::aio::MultiplexedConnection) {
        let ids = self.lock().pending_ids();
        for chunk in ids.chunks(CHUNK) {
            let Some(metas) = mget::<String>(redis, META_PREFIX, chunk).await else {
                continue;
            };
            let ready = self.lock().observe(chunk, &metas, Instant::now());
            if self.testbed
                && !ready.is_empty()
                && let Some(counts) = mget::<i64>(redis, EXECUTIONS_PREFIX, &ready).await
            {
                self.lock().note_executions(&ready, &counts);
            }
        }
    }

    async fn poll(
        self: Arc<Self>,
        mut redis: redis::aio::MultiplexedConnection,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.poll_once(&mut redis) => {}
            }
        }
    }
}

/// `MGET <prefix><id>...` within [`REDIS_TIMEOUT`]; `None` (logged) when it failed.
async fn mget<T: redis::FromRedisValue>(
    redis: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    ids: &[String],
) -> Option<Vec<Option<T>>> {
    if ids.is_empty() {
        return Some(Vec::new());
    }
    let mut command = redis::cmd("MGET");
    for id in ids {
        command.arg(format!("{prefix}{id}"));
    }
    match tokio::time::timeout(REDIS_TIMEOUT, command.query_async(redis)).await {
        Ok(Ok(values)) => Some(values),
        Ok(Err(err)) => {
            tracing::warn!(error = %err, prefix, "reading Celery task state from Redis failed");
            None
        }
        Err(_) => {
            tracing::warn!(
                prefix,
                "reading Celery task state from Redis: no answer within 5 s"
            );
            None
        }
    }
}

/// The `celery` workload (see the [module docs](self)).
pub struct CeleryWorkload {
    ctx: Arc<Context>,
    name: String,
    drain_timeout: Duration,
    tracker: Arc<Tracker>,
    stop: CancellationToken,
    /// Stops the poller when the workload is dropped.
    _stop_on_drop: DropGuard,
}

impl CeleryWorkload {
    /// Reads option `drain_timeout` (seconds, default 60) and starts the background poller of
    /// the tracked tasks (it stops at the end of [`Workload::settle`] or when the workload is
    /// dropped).
    pub async fn setup(
        ctx: &Arc<Context>,
        options: &Options<'_>,
    ) -> anyhow::Result<CeleryWorkload> {
        let drain = options.u64("drain_timeout", 60)?;
        anyhow::ensure!(
            drain <= 86_400,
            "workload {:?}: options.drain_timeout must be at most 86400 seconds, not {drain}",
            options.workload
        );
        let tracker = Arc::new(Tracker {
            state: Mutex::new(State::new()),
            testbed: ctx.is_testbed(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(Arc::clone(&tracker).poll(ctx.redis.clone(), stop.clone()));
        Ok(CeleryWorkload {
            ctx: Arc::clone(ctx),
            name: options.workload.to_owned(),
            drain_timeout: Duration::from_secs(drain),
            tracker,
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
        })
    }

    async fn enqueue(&self) -> Attempt {
        let answer = match self.ctx.api.post(ENQUEUE_PATH, &json!({})).await {
            Ok(answer) => answer,
            Err(err) => {
                let mut attempt = classify_transport(&err, true);
                if attempt.outcome == Outcome::Unknown {
                    self.tracker.lock().unknown += 1;
                    let detail = attempt.detail.take().unwrap_or_default();
                    attempt.detail = Some(format!(
                        "{detail} (the task may have been published; without its id it cannot \
                         be tracked)"
                    ));
                }
                return attempt;
            }
        };
        let attempt = classify_status(answer.status, &answer.body);
        if attempt.outcome != Outcome::Ok {
            return attempt;
        }
        let task_id = answer
            .json()
            .and_then(|body| {
                body.get("task_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .filter(|id| !id.is_empty());
        match task_id {
            Some(id) => {
                self.tracker.lock().track(id, Instant::now());
                Attempt::ok()
            }
            None => Attempt::new(
                Outcome::UncleanError,
                format!(
                    "{} without a task_id: {}",
                    answer.status,
                    shorten(&String::from_utf8_lossy(&answer.body), 200)
                ),
            ),
        }
    }

    /// Waits until every tracked task is ready or the drain timeout passed, then reads the
    /// executions counters (testbed) and judges.
    async fn drain_and_check(&self, ctx: &Context) -> Vec<CheckResult> {
        let mut redis = ctx.redis.clone();
        let deadline = Instant::now() + self.drain_timeout;
        loop {
            if self.tracker.lock().pending.is_empty() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(POLL_INTERVAL)).await;
        }
        self.stop.cancel();
        // A last look, so a task that finished since the poller's last pass counts as ready.
        self.tracker.poll_once(&mut redis).await;

        let testbed = ctx.is_testbed();
        let mut unreadable = 0usize;
        if testbed {
            let ids: Vec<String> = self
                .tracker
                .lock()
                .tasks
                .iter()
                .map(|t| t.id.clone())
                .collect();
            for chunk in ids.chunks(CHUNK) {
                match mget::<i64>(&mut redis, EXECUTIONS_PREFIX, chunk).await {
                    Some(counts) => self.tracker.lock().note_executions(chunk, &counts),
                    None => unreadable += chunk.len(),
                }
            }
        }
        let state = self.tracker.lock();
        judge(&self.name, &state, testbed, self.drain_timeout, unreadable)
    }
}

/// The three checks over the final state.
fn judge(
    source: &str,
    state: &State,
    testbed: bool,
    drain_timeout: Duration,
    unreadable: usize,
) -> Vec<CheckResult> {
    let published = state.tasks.len() as u64 + state.untracked;
    let mut checks = Vec::new();

    // celery-every-task-ran
    let not_ready: Vec<&Task> = state.tasks.iter().filter(|t| t.end.is_none()).collect();
    let (never, running): (Vec<&Task>, Vec<&Task>) = not_ready
        .iter()
        .partition(|task| !testbed || task.executions.unwrap_or(0) == 0);
    let mut extras = String::new();
    if !running.is_empty() {
        extras.push_str(&format!(
            "; {} started but not finished at the deadline",
            running.len()
        ));
    }
    if state.untracked > 0 {
        extras.push_str(&format!(
            "; {} past the first {MAX_TRACKED} not tracked",
            state.untracked
        ));
    }
    if state.unknown > 0 {
        extras.push_str(&format!(
            "; {} publishes got no answer (not trackable)",
            state.unknown
        ));
    }
    if unreadable > 0 {
        extras.push_str(&format!(
            "; executions counters unreadable for {unreadable} tasks"
        ));
    }
    let latency = latency_summary(&state.latency);
    let name = "celery-every-task-ran";
    checks.push(if never.is_empty() {
        CheckResult::pass(
            name,
            source,
            format!("{published} tasks published, all ran; {latency}{extras}"),
        )
    } else {
        let how = if testbed {
            "not ready and no execution recorded"
        } else {
            "not ready"
        };
        let ids: Vec<String> = never.iter().take(10).map(|t| t.id.clone()).collect();
        CheckResult::fail(
            name,
            source,
            format!(
                "{} of {published} tasks published and never executed ({how} {} s after the \
                 load stopped): {}{}; {latency}{extras}",
                never.len(),
                drain_timeout.as_secs(),
                ids.join(", "),
                if never.len() > ids.len() { ", ..." } else { "" },
            ),
            ids,
        )
    });

    // celery-no-task-ran-twice (testbed)
    if testbed {
        let name = "celery-no-task-ran-twice";
        let twice: Vec<String> = state
            .tasks
            .iter()
            .filter(|t| t.executions.unwrap_or(0) > 1 + i64::from(t.retries))
            .map(|t| {
                format!(
                    "{}: ran {} times ({} retries seen)",
                    t.id,
                    t.executions.unwrap_or(0),
                    t.retries
                )
            })
            .collect();
        let retries: u64 = state.tasks.iter().map(|t| u64::from(t.retries)).sum();
        checks.push(if twice.is_empty() {
            CheckResult::pass(
                name,
                source,
                format!(
                    "{} tasks tracked, none ran twice ({retries} retries by the worker \
                     accounted for)",
                    state.tasks.len()
                ),
            )
        } else {
            CheckResult::fail(
                name,
                source,
                format!(
                    "{} of {} tasks ran more often than published and retried",
                    twice.len(),
                    state.tasks.len()
                ),
                twice,
            )
        });
    }

    // celery-tasks-succeeded (advisory)
    let name = "celery-tasks-succeeded";
    let ended = |end: End| state.tasks.iter().filter(|t| t.end == Some(end)).count();
    let (succeeded, failed, revoked) = (
        ended(End::Success),
        ended(End::Failure),
        ended(End::Revoked),
    );
    checks.push(
        if failed + revoked == 0 {
            CheckResult::pass(
                name,
                source,
                format!("{succeeded} tasks finished, all SUCCESS"),
            )
        } else {
            CheckResult::fail(
                name,
                source,
                format!(
                    "{failed} FAILURE and {revoked} REVOKED of {} finished tasks; e.g. {}",
                    succeeded + failed + revoked,
                    state
                        .failure_example
                        .as_deref()
                        .unwrap_or("(no error text)")
                ),
                state.failure_example.iter().cloned().collect(),
            )
        }
        .advisory(),
    );
    checks
}

impl Workload for CeleryWorkload {
    fn run<'a>(&'a self, op: &'a str, _user: u64) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            match op {
                "enqueue" => self.enqueue().await,
                other => Attempt::new(
                    Outcome::UncleanError,
                    format!("the celery workload has no operation {other:?}"),
                ),
            }
        })
    }

    fn settle<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Vec<CheckResult>> {
        Box::pin(self.drain_and_check(ctx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(status: &str, date_done: &str) -> Option<String> {
        Some(
            json!({"status": status, "result": null, "traceback": null, "children": [],
                   "date_done": date_done, "task_id": "x"})
            .to_string(),
        )
    }

    #[test]
    fn metas_are_parsed_as_celery_writes_them() {
        assert_eq!(
            parse_meta(&meta("SUCCESS", "d").unwrap()),
            Some(Meta::Ready(End::Success, None))
        );
        let failure = json!({"status": "FAILURE", "task_id": "x", "result":
            {"exc_type": "RuntimeError", "exc_message": ["database down"], "exc_module": "builtins"}});
        assert_eq!(
            parse_meta(&failure.to_string()),
            Some(Meta::Ready(
                End::Failure,
                Some("RuntimeError: database down".into())
            ))
        );
        assert_eq!(
            parse_meta(&meta("RETRY", "d1").unwrap()),
            Some(Meta::Retry("d1".into()))
        );
        assert_eq!(
            parse_meta(&meta("PENDING", "").unwrap()),
            Some(Meta::NotReady)
        );
        assert_eq!(parse_meta("not json"), None);
    }

    #[test]
    fn tasks_become_ready_once_with_their_latency_and_retries_count_once_each() {
        let mut state = State::new();
        let start = Instant::now();
        state.track("a".into(), start);
        state.track("b".into(), start);
        state.track("a".into(), start);
        assert_eq!(state.pending_ids(), vec!["a", "b"]);
        let ids = vec!["a".to_owned(), "b".to_owned()];
        let later = start + Duration::from_millis(1500);
        let ready = state.observe(&ids, &[meta("RETRY", "1"), meta("SUCCESS", "2")], later);
        assert_eq!(ready, vec!["b"]);
        state.observe(&ids[..1], &[meta("RETRY", "1")], later);
        state.observe(&ids[..1], &[meta("RETRY", "3")], later);
        assert_eq!(state.tasks[0].retries, 2);
        assert_eq!(state.pending_ids(), vec!["a"]);
        assert_eq!(
            latency_summary(&state.latency),
            "queue latency p50 1500 ms, p95 1500 ms, max 1500 ms"
        );
        assert_eq!(
            latency_summary(&State::new().latency),
            "no queue latency measured"
        );
    }

    #[test]
    fn a_lost_task_fails_every_task_ran_and_a_duplicate_fails_ran_twice() {
        let mut state = State::new();
        let start = Instant::now();
        for id in ["done", "lost", "running", "twice", "retried"] {
            state.track(id.into(), start);
        }
        let ids: Vec<String> = ["done", "twice", "retried"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        state.observe(&ids[2..], &[meta("RETRY", "r1")], start);
        state.observe(
            &ids,
            &[
                meta("SUCCESS", "1"),
                meta("SUCCESS", "2"),
                meta("SUCCESS", "3"),
            ],
            start + Duration::from_millis(20),
        );
        let all: Vec<String> = ["done", "lost", "running", "twice", "retried"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        state.note_executions(&all, &[Some(1), None, Some(1), Some(2), Some(2)]);
        let checks = judge("c", &state, true, Duration::from_secs(60), 0);
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "celery-every-task-ran",
                "celery-no-task-ran-twice",
                "celery-tasks-succeeded"
            ]
        );
        let ran = &checks[0];
        assert!(!ran.passed && ran.required);
        assert!(
            ran.detail
                .starts_with("1 of 5 tasks published and never executed"),
            "{}",
            ran.detail
        );
        assert_eq!(ran.evidence, vec!["lost"]);
        assert!(
            ran.detail.contains("1 started but not finished"),
            "{}",
            ran.detail
        );
        let twice = &checks[1];
        assert!(!twice.passed);
        assert_eq!(twice.evidence, vec!["twice: ran 2 times (0 retries seen)"]);
        assert!(checks[2].passed && !checks[2].required);

        // Off the testbed: no counters, a task not ready counts as never executed.
        let checks = judge("c", &state, false, Duration::from_secs(60), 0);
        assert_eq!(checks.len(), 2);
        assert!(
            checks[0].detail.starts_with("2 of 5"),
            "{}",
            checks[0].detail
        );
    }

    #[test]
    fn a_clean_run_passes_with_the_latency_summary() {
        let mut state = State::new();
        let start = Instant::now();
        state.track("a".into(), start);
        let failure = json!({"status": "FAILURE", "result":
            {"exc_type": "RuntimeError", "exc_message": ["boom"]}})
        .to_string();
        state.observe(
            &["a".to_owned()],
            &[Some(failure)],
            start + Duration::from_millis(40),
        );
        let checks = judge("c", &state, false, Duration::from_secs(60), 0);
        assert!(checks[0].passed);
        assert_eq!(
            checks[0].detail,
            "1 tasks published, all ran; queue latency p50 40 ms, p95 40 ms, max 40 ms"
        );
        assert!(!checks[1].passed && !checks[1].required);
        assert!(
            checks[1].detail.contains("a: RuntimeError: boom"),
            "{}",
            checks[1].detail
        );
    }
}
