//! The `resilience` workload: the resilience framework's calls, each answer checked for being
//! the same as before for the same inputs and, on the testbed, for describing the schedule that
//! was committed when it was asked.
//!
//! | operation | request | ok when |
//! |---|---|---|
//! | `health` | `GET /api/v1/resilience/health?persist=false` | 200, same answer, fresh |
//! | `vulnerability` | `GET /api/v1/resilience/vulnerability?include_n2=<include_n2>` | 200, same answer, fresh |
//! | `defense_level` | `POST /api/v1/resilience/defense-level` `{coverage_rate}` (0.50 to 1.00, two decimals) | 200, same answer |
//! | `utilization` | `POST /api/v1/resilience/utilization-threshold` `{available_faculty, required_blocks}` (a small set) | 200, same answer |
//! | `burnout_rt` | `POST /api/v1/resilience/burnout/rt` `{burned_out_provider_ids, time_window_days: 28}` (a few lists of 2 or 3 residents found at setup) | 200, same answer, fresh |
//! | `circuit_breakers` | `GET /api/v1/resilience/circuit-breakers` | 200 with a JSON object |
//! | `analysis` | `POST /api/v1/resilience/tasks/analysis` `{}` | 202 with a `task_id` |
//!
//! Inputs are drawn from small seeded sets so they repeat. **Same inputs, same answers**: the
//! schedule-based answers (health, vulnerability, burnout) are keyed by (operation, parameters,
//! the answer's period and `schedule_version`), the pure ones (defense level, utilization) by
//! (operation, input); a digest of the fields that decide (`n1_pass`, `n2_pass`,
//! `defense_level`, ...) must not change within a key. An answer that differs from the first one
//! for its key is a *fallback* (not real data) and fails `resilience-same-answers`.
//!
//! **Freshness** (testbed only): before a schedule-based request the workload reads
//! `schedule_state.version` from the database (direct); an answer whose `schedule_version` is
//! older was computed for a schedule that had already changed (a stale cache entry, the
//! testbed's `cache-stale` flaw): a *fallback*, and `resilience-answers-fresh` fails. On the
//! testbed an answer without `schedule_version` is a fallback too. Off the testbed the
//! schedule-based answers without a version are not compared (the schedule may change under
//! them).
//!
//! Other statuses are classified by [`crate::outcome::classify_status`] (a 5xx whose only
//! reason is its status phrase counts as without a reason); transport failures by
//! [`classify_transport`] (only `analysis`, which publishes a task, is a write).
//!
//! Memory stays bounded: at most 20,000 input groups are remembered; answers of newer
//! groups are counted, not compared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context as _;
use futures_util::future::BoxFuture;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use super::swap::name_hash;
use super::{Options, Workload};
use crate::context::Context;
use crate::outcome::{Attempt, Outcome, classify_status, classify_transport, shorten};
use crate::report::CheckResult;

/// Input groups remembered for comparison.
const GROUP_CAP: usize = 20_000;
/// Evidence lines per check.
const EVIDENCE_CAP: usize = 10;
/// Burnout id lists (so inputs repeat).
const BURNOUT_SETS: usize = 4;
/// `available_faculty` values of the utilization calls.
const UTIL_FACULTY: [u32; 5] = [5, 10, 15, 20, 30];
/// `required_blocks` values of the utilization calls.
const UTIL_BLOCKS: [u32; 8] = [6, 12, 16, 20, 24, 30, 40, 48];

/// The `resilience` workload (see the module docs).
pub struct ResilienceWorkload {
    ctx: Arc<Context>,
    name: String,
    include_n2: bool,
    /// The burnout calls' id lists.
    burnout_sets: Vec<Vec<Uuid>>,
    state: Mutex<State>,
}

/// What the workload remembers for its checks.
struct State {
    rng: StdRng,
    answers: Answers,
    fresh: Freshness,
}

/// The first answer per input group, and what disagreed with it.
#[derive(Debug, Default)]
struct Answers {
    groups: HashMap<String, Group>,
    /// Answers compared (or that opened a group).
    answers: u64,
    /// Answers without a `schedule_version` (off the testbed): not compared.
    uncomparable: u64,
    /// Answers of groups beyond [`GROUP_CAP`]: not compared.
    dropped: u64,
    mismatches: u64,
    evidence: Vec<String>,
}

#[derive(Debug)]
struct Group {
    digest: String,
    seen: u64,
}

impl Answers {
    /// Records `digest` as an answer for `key`: the group's first digest when this one differs.
    fn observe(&mut self, key: &str, digest: &str) -> Option<String> {
        if let Some(group) = self.groups.get_mut(key) {
            self.answers += 1;
            group.seen += 1;
            if group.digest == digest {
                return None;
            }
            self.mismatches += 1;
            let first = group.digest.clone();
            if self.evidence.len() < EVIDENCE_CAP {
                self.evidence
                    .push(format!("{key}: first {first}; later {digest}"));
            }
            return Some(first);
        }
        if self.groups.len() >= GROUP_CAP {
            self.dropped += 1;
            return None;
        }
        self.answers += 1;
        self.groups.insert(
            key.to_owned(),
            Group {
                digest: digest.to_owned(),
                seen: 1,
            },
        );
        None
    }

    /// Groups with at least two answers.
    fn compared(&self) -> usize {
        self.groups.values().filter(|group| group.seen > 1).count()
    }
}

/// Schedule-based answers checked against the version committed before their request.
#[derive(Debug, Default)]
struct Freshness {
    /// Schedule-based answers received (2xx JSON).
    received: u64,
    /// Of which compared with the version read before the request.
    checked: u64,
    stale: u64,
    /// Answers without `schedule_version`.
    missing: u64,
    /// The version could not be read before the request.
    unverified: u64,
    evidence: Vec<String>,
}

/// The decision fields of an answer, as text (`field=value ...`): what must not change for the
/// same inputs. Numbers are rounded (`rt` to 4 decimals, rates to 6); a missing field is
/// `missing`.
fn digest(op: &str, value: &Value) -> String {
    let fields: &[(&str, Option<usize>)] = match op {
        "vulnerability" => &[
            ("n1_pass", None),
            ("n2_pass", None),
            ("defense_level", None),
            ("coverage_rate", Some(6)),
            ("n1_vulnerability_count", None),
        ],
        "health" => &[
            ("overall_status", None),
            ("defense_level", None),
            ("n1_pass", None),
            ("n2_pass", None),
        ],
        "burnout_rt" => &[("rt", Some(4))],
        "defense_level" => &[("level", None)],
        "utilization" => &[("level", None), ("utilization_rate", Some(6))],
        _ => &[],
    };
    fields
        .iter()
        .map(|(name, decimals)| format!("{name}={}", show(value.get(*name), *decimals)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn show(value: Option<&Value>, decimals: Option<usize>) -> String {
    match value {
        None => "missing".to_owned(),
        Some(Value::Number(number)) => match (decimals, number.as_f64()) {
            (Some(decimals), Some(float)) => format!("{float:.decimals$}"),
            _ => number.to_string(),
        },
        Some(Value::String(text)) => shorten(text, 60),
        Some(other) => shorten(&other.to_string(), 60),
    }
}

/// The period an answer covers (`period_start..period_end`, or the burnout `window_start`).
fn period_of(value: &Value) -> String {
    let text = |name: &str| value.get(name).and_then(Value::as_str);
    match (
        text("period_start"),
        text("period_end"),
        text("window_start"),
    ) {
        (Some(start), Some(end), _) => format!("{start}..{end}"),
        (Some(start), None, _) | (None, _, Some(start)) => format!("from {start}"),
        _ => "default".to_owned(),
    }
}

impl State {
    /// Judges a schedule-based answer: fresh (testbed), and the same as before for its key.
    /// `before`: the schedule version read before the request (`None`: not read).
    fn judge_schedule(
        &mut self,
        op: &str,
        params: &str,
        value: &Value,
        testbed: bool,
        before: Option<i64>,
    ) -> Attempt {
        let version = value.get("schedule_version").and_then(Value::as_i64);
        let cache = value
            .get("cache")
            .and_then(Value::as_str)
            .map(|cache| format!(", cache {cache}"))
            .unwrap_or_default();
        let mut problems = Vec::new();
        if testbed {
            self.fresh.received += 1;
            match (version, before) {
                (None, _) => {
                    self.fresh.missing += 1;
                    let detail = format!(
                        "{op} {params}: answer without schedule_version: which schedule it describes cannot be told"
                    );
                    if self.fresh.evidence.len() < EVIDENCE_CAP {
                        self.fresh.evidence.push(detail.clone());
                    }
                    return Attempt::new(Outcome::Fallback, detail);
                }
                (Some(version), Some(before)) => {
                    self.fresh.checked += 1;
                    if version < before {
                        self.fresh.stale += 1;
                        let detail = format!(
                            "stale: computed for schedule version {version}, version {before} was committed before the request{cache}"
                        );
                        if self.fresh.evidence.len() < EVIDENCE_CAP {
                            self.fresh.evidence.push(format!(
                                "{op} {params} period {}: {detail}",
                                period_of(value)
                            ));
                        }
                        problems.push(detail);
                    }
                }
                (Some(_), None) => self.fresh.unverified += 1,
            }
        }
        match version {
            Some(version) => {
                let key = format!(
                    "{op} {params} period {} version {version}",
                    period_of(value)
                );
                let now = digest(op, value);
                if let Some(first) = self.answers.observe(&key, &now) {
                    problems.push(format!(
                        "same inputs, another answer ({key}): first {first}; now {now}{cache}"
                    ));
                }
            }
            None => self.answers.uncomparable += 1,
        }
        if problems.is_empty() {
            Attempt::ok()
        } else {
            Attempt::new(Outcome::Fallback, problems.join("; "))
        }
    }

    /// Judges an answer to a pure computation: the same as before for the same input.
    fn judge_input(&mut self, op: &str, input: &str, value: &Value) -> Attempt {
        let key = format!("{op} {input}");
        let now = digest(op, value);
        match self.answers.observe(&key, &now) {
            None => Attempt::ok(),
            Some(first) => Attempt::new(
                Outcome::Fallback,
                format!("same inputs, another answer ({key}): first {first}; now {now}"),
            ),
        }
    }
}

impl ResilienceWorkload {
    /// Reads the options (`residents`, informational; `include_n2`, default true) and the
    /// residents the burnout calls name, and builds the workload.
    pub async fn setup(
        ctx: &Arc<Context>,
        options: &Options<'_>,
    ) -> anyhow::Result<ResilienceWorkload> {
        // Informational: the seed's number of residents.
        options.u64("residents", 0)?;
        let include_n2 = options.bool("include_n2", true)?;
        let residents: Vec<Uuid> = ctx
            .db
            .query(
                "SELECT id FROM people WHERE type = 'resident' ORDER BY id",
                &[],
            )
            .await
            .with_context(|| format!("workload {:?}: reading the residents", options.workload))?
            .iter()
            .filter_map(|row| row.try_get::<_, Uuid>(0).ok())
            .collect();
        let mut rng = StdRng::seed_from_u64(ctx.seed ^ name_hash(options.workload));
        let burnout_sets = burnout_sets(&residents, &mut rng);
        if residents.is_empty() {
            tracing::warn!(
                workload = options.workload,
                "no residents found: burnout calls name nobody"
            );
        }
        Ok(ResilienceWorkload {
            ctx: Arc::clone(ctx),
            name: options.workload.to_owned(),
            include_n2,
            burnout_sets,
            state: Mutex::new(State {
                rng,
                answers: Answers::default(),
                fresh: Freshness::default(),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The schedule version now (testbed), `None` when it cannot be read.
    async fn version_now(&self) -> Option<i64> {
        match self
            .ctx
            .db
            .query_one("SELECT version FROM schedule_state", &[])
            .await
        {
            Ok(row) => row.try_get::<_, i64>(0).ok(),
            Err(err) => {
                tracing::warn!(%err, "reading the schedule version failed");
                None
            }
        }
    }

    /// Sends a request; the JSON answer of a 2xx, or the attempt saying why not.
    async fn ask(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        write: bool,
    ) -> Result<(u16, Value), Attempt> {
        let answer = self
            .ctx
            .api
            .send(method, path, body, &[])
            .await
            .map_err(|err| classify_transport(&err, write))?;
        let attempt = classify_status(answer.status, &answer.body);
        if attempt.outcome != Outcome::Ok {
            return Err(attempt);
        }
        match answer.json() {
            Some(value @ Value::Object(_)) => Ok((answer.status, value)),
            _ => Err(Attempt::new(
                Outcome::UncleanError,
                format!(
                    "{} without a JSON object: {}",
                    answer.status,
                    shorten(&String::from_utf8_lossy(&answer.body), 120)
                ),
            )),
        }
    }

    /// A schedule-based call (health, vulnerability, burnout).
    async fn schedule_based(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        body: Option<Value>,
        params: String,
    ) -> Attempt {
        let testbed = self.ctx.is_testbed();
        let before = if testbed {
            self.version_now().await
        } else {
            None
        };
        match self.ask(method, path, body.as_ref(), false).await {
            Ok((_, value)) => self
                .state()
                .judge_schedule(op, &params, &value, testbed, before),
            Err(attempt) => attempt,
        }
    }

    /// A pure computation (defense level, utilization).
    async fn pure(&self, op: &'static str, path: &str, body: Value, input: String) -> Attempt {
        match self.ask(Method::POST, path, Some(&body), false).await {
            Ok((_, value)) => self.state().judge_input(op, &input, &value),
            Err(attempt) => attempt,
        }
    }

    async fn health(&self) -> Attempt {
        self.schedule_based(
            "health",
            Method::GET,
            "/api/v1/resilience/health?persist=false",
            None,
            "persist=false".to_owned(),
        )
        .await
    }

    async fn vulnerability(&self) -> Attempt {
        let params = format!("include_n2={}", self.include_n2);
        let path = format!("/api/v1/resilience/vulnerability?{params}");
        self.schedule_based("vulnerability", Method::GET, &path, None, params)
            .await
    }

    async fn burnout(&self) -> Attempt {
        let index = self
            .state()
            .rng
            .random_range(0..self.burnout_sets.len().max(1));
        let ids = self.burnout_sets.get(index).cloned().unwrap_or_default();
        let body = json!({"burned_out_provider_ids": ids, "time_window_days": 28});
        let params = format!("ids=set{index}({} residents) window=28", ids.len());
        self.schedule_based(
            "burnout_rt",
            Method::POST,
            "/api/v1/resilience/burnout/rt",
            Some(body),
            params,
        )
        .await
    }

    async fn defense_level(&self) -> Attempt {
        let hundredths: u32 = self.state().rng.random_range(50..=100);
        let rate = f64::from(hundredths) / 100.0;
        self.pure(
            "defense_level",
            "/api/v1/resilience/defense-level",
            json!({"coverage_rate": rate}),
            format!("coverage_rate={rate:.2}"),
        )
        .await
    }

    async fn utilization(&self) -> Attempt {
        let (faculty, blocks) = {
            let mut state = self.state();
            (
                UTIL_FACULTY[state.rng.random_range(0..UTIL_FACULTY.len())],
                UTIL_BLOCKS[state.rng.random_range(0..UTIL_BLOCKS.len())],
            )
        };
        self.pure(
            "utilization",
            "/api/v1/resilience/utilization-threshold",
            json!({"available_faculty": faculty, "required_blocks": blocks}),
            format!("available_faculty={faculty} required_blocks={blocks}"),
        )
        .await
    }

    async fn circuit_breakers(&self) -> Attempt {
        match self
            .ask(
                Method::GET,
                "/api/v1/resilience/circuit-breakers",
                None,
                false,
            )
            .await
        {
            Ok(_) => Attempt::ok(),
            Err(attempt) => attempt,
        }
    }

    async fn analysis(&self) -> Attempt {
        match self
            .ask(
                Method::POST,
                "/api/v1/resilience/tasks/analysis",
                Some(&json!({})),
                true,
            )
            .await
        {
            Ok((_, value)) if value.get("task_id").is_some_and(|id| !id.is_null()) => Attempt::ok(),
            Ok((status, _)) => {
                Attempt::new(Outcome::UncleanError, format!("{status} without a task_id"))
            }
            Err(attempt) => attempt,
        }
    }

    /// The checks of `state`, with `source` as their source.
    fn checks_of(state: &State, source: &str, testbed: bool) -> Vec<CheckResult> {
        let mut checks = Vec::new();
        let answers = &state.answers;
        if answers.answers + answers.uncomparable + answers.dropped > 0 {
            let mut detail = format!(
                "{} answers, {} input groups compared",
                answers.answers,
                answers.compared()
            );
            if answers.uncomparable > 0 {
                detail.push_str(&format!(
                    "; {} answers without schedule_version not compared (the schedule may have changed under them)",
                    answers.uncomparable
                ));
            }
            if answers.dropped > 0 {
                detail.push_str(&format!(
                    "; {} answers of input groups beyond the first {GROUP_CAP} not compared",
                    answers.dropped
                ));
            }
            checks.push(if answers.mismatches == 0 {
                CheckResult::pass("resilience-same-answers", source, detail)
            } else {
                CheckResult::fail(
                    "resilience-same-answers",
                    source,
                    format!(
                        "{} answers differed from an earlier answer to the same inputs ({detail})",
                        answers.mismatches
                    ),
                    answers.evidence.clone(),
                )
            });
        }
        let fresh = &state.fresh;
        if testbed && fresh.received > 0 {
            let mut detail = format!(
                "{} schedule-based answers checked against the schedule version committed before each request",
                fresh.checked
            );
            if fresh.unverified > 0 {
                detail.push_str(&format!(
                    "; {} not checked (the version could not be read)",
                    fresh.unverified
                ));
            }
            checks.push(if fresh.stale == 0 && fresh.missing == 0 {
                CheckResult::pass(
                    "resilience-answers-fresh",
                    source,
                    format!("{detail}, none stale"),
                )
            } else {
                let mut problems = Vec::new();
                if fresh.stale > 0 {
                    problems.push(format!(
                        "{} answers were stale (computed for a schedule older than the one committed before the request)",
                        fresh.stale
                    ));
                }
                if fresh.missing > 0 {
                    problems.push(format!(
                        "{} answers carried no schedule_version",
                        fresh.missing
                    ));
                }
                CheckResult::fail(
                    "resilience-answers-fresh",
                    source,
                    format!("{}: {detail}", problems.join("; ")),
                    fresh.evidence.clone(),
                )
            });
        }
        checks
    }
}

/// [`BURNOUT_SETS`] lists of 2 or 3 distinct residents (fewer when there are fewer residents).
fn burnout_sets(residents: &[Uuid], rng: &mut StdRng) -> Vec<Vec<Uuid>> {
    (0..BURNOUT_SETS)
        .map(|_| {
            let want = rng.random_range(2..=3usize).min(residents.len());
            let mut set: Vec<Uuid> = Vec::with_capacity(want);
            while set.len() < want {
                let pick = residents[rng.random_range(0..residents.len())];
                if !set.contains(&pick) {
                    set.push(pick);
                }
            }
            set
        })
        .collect()
}

impl Workload for ResilienceWorkload {
    fn run<'a>(&'a self, op: &'a str, _user: u64) -> BoxFuture<'a, Attempt> {
        Box::pin(async move {
            match op {
                "health" => self.health().await,
                "vulnerability" => self.vulnerability().await,
                "defense_level" => self.defense_level().await,
                "utilization" => self.utilization().await,
                "burnout_rt" => self.burnout().await,
                "circuit_breakers" => self.circuit_breakers().await,
                "analysis" => self.analysis().await,
                other => Attempt::new(
                    Outcome::CleanError,
                    format!("runner-side: the resilience workload has no operation {other:?}"),
                ),
            }
        })
    }

    fn settle<'a>(&'a self, ctx: &'a Context) -> BoxFuture<'a, Vec<CheckResult>> {
        Box::pin(async move { Self::checks_of(&self.state(), &self.name, ctx.is_testbed()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State {
            rng: StdRng::seed_from_u64(1),
            answers: Answers::default(),
            fresh: Freshness::default(),
        }
    }

    fn vulnerability(version: i64, n1_pass: bool) -> Value {
        json!({
            "period_start": "2025-01-06", "period_end": "2025-02-05",
            "schedule_version": version, "n1_pass": n1_pass, "n2_pass": false,
            "defense_level": "PREVENTION", "coverage_rate": 0.98765432,
            "n1_vulnerability_count": 30, "analyzed_at": "now", "cache": "hit",
        })
    }

    #[test]
    fn digests_keep_only_the_deciding_fields() {
        let value = vulnerability(3, false);
        assert_eq!(
            digest("vulnerability", &value),
            "n1_pass=false n2_pass=false defense_level=PREVENTION coverage_rate=0.987654 n1_vulnerability_count=30"
        );
        let mut later = value.clone();
        later["analyzed_at"] = json!("later");
        later["cache"] = json!("miss");
        assert_eq!(
            digest("vulnerability", &value),
            digest("vulnerability", &later)
        );
        assert_eq!(digest("burnout_rt", &json!({"rt": 1.234_567})), "rt=1.2346");
        assert_eq!(
            digest(
                "utilization",
                &json!({"level": "GREEN", "utilization_rate": null})
            ),
            "level=GREEN utilization_rate=null"
        );
        assert_eq!(
            digest("health", &json!({})),
            "overall_status=missing defense_level=missing n1_pass=missing n2_pass=missing"
        );
    }

    #[test]
    fn same_key_other_answer_is_a_fallback() {
        let mut state = state();
        let ok = state.judge_schedule(
            "vulnerability",
            "include_n2=true",
            &vulnerability(3, false),
            true,
            Some(3),
        );
        assert_eq!(ok.outcome, Outcome::Ok);
        let again = state.judge_schedule(
            "vulnerability",
            "include_n2=true",
            &vulnerability(3, false),
            true,
            Some(3),
        );
        assert_eq!(again.outcome, Outcome::Ok);
        // Another version is another key: a swap may change the answer.
        let moved = state.judge_schedule(
            "vulnerability",
            "include_n2=true",
            &vulnerability(4, true),
            true,
            Some(4),
        );
        assert_eq!(moved.outcome, Outcome::Ok);
        let changed = state.judge_schedule(
            "vulnerability",
            "include_n2=true",
            &vulnerability(3, true),
            true,
            None,
        );
        assert_eq!(changed.outcome, Outcome::Fallback);
        assert!(changed.detail.unwrap().contains("first n1_pass=false"));
        assert_eq!(state.answers.answers, 4);
        assert_eq!(state.answers.compared(), 1);
        assert_eq!(state.answers.mismatches, 1);
        let checks = ResilienceWorkload::checks_of(&state, "n1", true);
        assert!(!checks[0].passed && checks[0].required);
        assert_eq!(checks[0].name, "resilience-same-answers");
        assert_eq!(checks[0].evidence.len(), 1);
    }

    #[test]
    fn an_answer_older_than_the_committed_schedule_is_stale() {
        let mut state = state();
        let stale = state.judge_schedule(
            "vulnerability",
            "include_n2=true",
            &vulnerability(3, false),
            true,
            Some(5),
        );
        assert_eq!(stale.outcome, Outcome::Fallback);
        let detail = stale.detail.unwrap();
        assert!(
            detail.starts_with("stale: computed for schedule version 3, version 5 was committed before the request, cache hit"),
            "{detail}"
        );
        let newer = state.judge_schedule(
            "health",
            "persist=false",
            &json!({"schedule_version": 6}),
            true,
            Some(5),
        );
        assert_eq!(newer.outcome, Outcome::Ok);
        let missing = state.judge_schedule(
            "health",
            "persist=false",
            &json!({"n1_pass": true}),
            true,
            Some(5),
        );
        assert_eq!(missing.outcome, Outcome::Fallback);
        // Off the testbed: no freshness, and no version means not compared.
        let real = state.judge_schedule(
            "health",
            "persist=false",
            &json!({"n1_pass": true}),
            false,
            None,
        );
        assert_eq!(real.outcome, Outcome::Ok);
        assert_eq!(state.answers.uncomparable, 1);
        assert_eq!(
            (state.fresh.stale, state.fresh.missing, state.fresh.checked),
            (1, 1, 2)
        );
        let checks = ResilienceWorkload::checks_of(&state, "n1", true);
        let fresh = checks
            .iter()
            .find(|c| c.name == "resilience-answers-fresh")
            .unwrap();
        assert!(!fresh.passed);
        assert_eq!(fresh.evidence.len(), 2);
        assert!(
            ResilienceWorkload::checks_of(&state, "n1", false)
                .iter()
                .all(|c| c.name != "resilience-answers-fresh")
        );
    }

    #[test]
    fn pure_inputs_are_compared_by_input() {
        let mut state = state();
        let gold = json!({"level": "CONTROL"});
        assert_eq!(
            state
                .judge_input("defense_level", "coverage_rate=0.90", &gold)
                .outcome,
            Outcome::Ok
        );
        assert_eq!(
            state
                .judge_input("defense_level", "coverage_rate=0.90", &gold)
                .outcome,
            Outcome::Ok
        );
        assert_eq!(
            state
                .judge_input(
                    "defense_level",
                    "coverage_rate=0.80",
                    &json!({"level": "SAFETY_SYSTEMS"})
                )
                .outcome,
            Outcome::Ok
        );
        assert_eq!(
            state
                .judge_input(
                    "defense_level",
                    "coverage_rate=0.90",
                    &json!({"level": "PREVENTION"})
                )
                .outcome,
            Outcome::Fallback
        );
        let checks = ResilienceWorkload::checks_of(&state, "defense", true);
        assert_eq!(
            checks.len(),
            1,
            "no schedule-based answers: no freshness check"
        );
        assert!(
            checks[0]
                .detail
                .contains("4 answers, 1 input groups compared"),
            "{}",
            checks[0].detail
        );
    }

    #[test]
    fn passing_checks_say_what_was_compared() {
        let mut state = state();
        for _ in 0..3 {
            state.judge_schedule(
                "health",
                "persist=false",
                &json!({"schedule_version": 2, "n1_pass": false}),
                true,
                Some(2),
            );
        }
        let checks = ResilienceWorkload::checks_of(&state, "evaluations", true);
        assert_eq!(checks.len(), 2);
        assert!(
            checks
                .iter()
                .all(|c| c.passed && c.required && c.source == "evaluations")
        );
        assert_eq!(checks[0].detail, "3 answers, 1 input groups compared");
        assert!(
            checks[1].detail.ends_with("none stale"),
            "{}",
            checks[1].detail
        );
    }

    #[test]
    fn groups_are_bounded() {
        let mut answers = Answers::default();
        for i in 0..GROUP_CAP + 5 {
            answers.observe(&format!("k{i}"), "d");
        }
        assert_eq!(answers.groups.len(), GROUP_CAP);
        assert_eq!(answers.dropped, 5);
        assert_eq!(answers.observe("k0", "e"), Some("d".to_owned()));
    }

    #[test]
    fn burnout_sets_repeat_small_lists() {
        let residents: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
        let mut rng = StdRng::seed_from_u64(2);
        let sets = burnout_sets(&residents, &mut rng);
        assert_eq!(sets.len(), BURNOUT_SETS);
        for set in &sets {
            assert!((2..=3).contains(&set.len()));
            let mut unique = set.clone();
            unique.sort_unstable();
            unique.dedup();
            assert_eq!(unique.len(), set.len());
        }
        let again = burnout_sets(&residents, &mut StdRng::seed_from_u64(2));
        assert_eq!(sets, again, "seeded");
        assert!(burnout_sets(&[], &mut rng).iter().all(Vec::is_empty));
        assert!(
            burnout_sets(&residents[..1], &mut rng)
                .iter()
                .all(|s| s.len() == 1)
        );
    }

    #[test]
    fn periods_are_part_of_the_key() {
        assert_eq!(period_of(&vulnerability(1, true)), "2025-01-06..2025-02-05");
        assert_eq!(
            period_of(&json!({"window_start": "2025-01-06"})),
            "from 2025-01-06"
        );
        assert_eq!(period_of(&json!({})), "default");
    }
}
