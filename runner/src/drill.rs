//! One run, from scenario text to verdict: prepare the target, start the scenario's timeline on
//! the proxy, drive the workloads while following the proxy's phase events, check invariants
//! after each phase and at the end, settle the workloads, judge, and write the reports.
//!
//! Whatever happens (an error, Ctrl-C), the proxy's run is aborted (every fault removed, every
//! injected lock released) before the reports are written and the embedded stack is stopped.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use chaos_scenarios::{Scenario, Timeline, When};
use serde_json::Value;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use chaos_testbed::config::redact_url;

use crate::context::Context;
use crate::control::{RouteCounts, RunHandle};
use crate::embedded::{EmbeddedOptions, EmbeddedStack};
use crate::library::Source;
use crate::load::{self, Driven, Plan};
use crate::measure::Recorder;
use crate::report::{
    CheckResult, PhaseInfo, Report, ScenarioInfo, TargetInfo, Timing, Verdict, write_all,
};
use crate::target::{Target, TargetFile};
use crate::{invariants, live, verdict, workloads};

/// The dead-man TTL of the proxy's run: renewed every third of it, so a runner that dies
/// leaves no fault behind for longer than this.
pub const RUN_TTL: Duration = Duration::from_secs(30);

/// How long after the scenario's end the `ended` event may take before the run asks the proxy
/// directly (a silently dead event stream must not hang the run).
pub const STREAM_GRACE: Duration = Duration::from_secs(60);

/// Where a run goes.
pub enum Where {
    /// The embedded default: throwaway PostgreSQL and Redis, the testbed and the proxy in
    /// process.
    Embedded {
        /// Testbed flaws to switch on (to prove the judge fails).
        flaws: Vec<chaos_testbed::flaws::Flaw>,
    },
    /// An existing stack described by a target file.
    File(PathBuf),
}

/// What to run and where the reports go.
pub struct Request {
    /// The scenario.
    pub source: Source,
    /// The target.
    pub target: Where,
    /// The report directory.
    pub out: PathBuf,
    /// Show the live view.
    pub live: bool,
}

/// A scenario that parsed and compiled, with the workloads checked.
pub struct Prepared {
    /// The typed scenario.
    pub scenario: Scenario,
    /// Its timeline.
    pub timeline: Timeline,
}

/// Parses, checks and compiles a scenario; the error lists every problem, each with its place.
pub fn prepare(source: &Source) -> Result<Prepared, String> {
    let scenario = chaos_scenarios::parse(
        &source.text,
        &source.origin,
        &chaos_proxy::catalogue::Catalogue,
    )
    .map_err(|errors| errors.to_string())?;
    let problems = workloads::check(&scenario.workloads);
    if !problems.is_empty() {
        return Err(problems
            .iter()
            .map(|p| format!("{}: {p}", source.origin))
            .collect::<Vec<_>>()
            .join("\n"));
    }
    let timeline = chaos_scenarios::compile(&scenario);
    Ok(Prepared { scenario, timeline })
}

/// Runs a request to its report (written to `request.out`). Errors that stop the run become an
/// exit code 2 verdict in the report; only a report that cannot be written is an `Err`.
pub async fn run(
    request: Request,
    interrupt: CancellationToken,
) -> anyhow::Result<(Report, Vec<PathBuf>)> {
    let prepared = prepare(&request.source).map_err(|e| anyhow::anyhow!("{e}"))?;
    let started_at = chrono::Utc::now();
    let mut session = Session::new(&request, &prepared);
    let mut embedded = None;
    let outcome = session
        .execute(&request, &prepared, &mut embedded, interrupt)
        .await;
    let error = outcome.err().map(|err| format!("{err:#}"));
    let report = session.report(&request, &prepared, started_at, error);
    // The workloads hold the context (its connections) and background tasks: gone before the
    // servers they talk to.
    drop(session);
    if let Some(stack) = embedded {
        stack.stop().await;
    }
    let written = write_all(&report, &request.out)?;
    Ok((report, written))
}

/// What a run collects while it goes.
struct Session {
    recorder: Option<Arc<Recorder>>,
    phases: Arc<Mutex<Vec<PhaseInfo>>>,
    checks: Arc<Mutex<Vec<CheckResult>>>,
    fault_slips_us: Arc<Mutex<Vec<u64>>>,
    driven: BTreeMap<String, Driven>,
    workloads: Vec<Arc<dyn workloads::Workload>>,
    target_info: TargetInfo,
}

impl Session {
    fn new(request: &Request, _prepared: &Prepared) -> Session {
        let kind = match &request.target {
            Where::Embedded { .. } => "embedded".to_owned(),
            Where::File(path) => path.display().to_string(),
        };
        Session {
            recorder: None,
            phases: Arc::default(),
            checks: Arc::default(),
            fault_slips_us: Arc::default(),
            driven: BTreeMap::new(),
            workloads: Vec::new(),
            target_info: TargetInfo {
                kind,
                profile: String::new(),
                api_url: String::new(),
                mcp_url: String::new(),
            },
        }
    }

    async fn execute(
        &mut self,
        request: &Request,
        prepared: &Prepared,
        embedded: &mut Option<EmbeddedStack>,
        interrupt: CancellationToken,
    ) -> anyhow::Result<()> {
        let scenario = &prepared.scenario;
        let seed = scenario.scenario.seed.unwrap_or(0);
        let target = match &request.target {
            Where::Embedded { flaws } => {
                let starting =
                    EmbeddedStack::start(embedded_options(scenario, flaws.clone(), seed));
                let stack = tokio::select! {
                    stack = starting => stack.context("starting the embedded stack")?,
                    _ = interrupt.cancelled() => anyhow::bail!("interrupted while the stack started"),
                };
                let target = stack.target();
                *embedded = Some(stack);
                target
            }
            Where::File(path) => {
                let shown = path.display().to_string();
                TargetFile::load(path)?.resolve(&shown, |name| std::env::var(name).ok())?
            }
        };
        self.target_info.profile = match target.profile {
            crate::target::Profile::Testbed => "testbed".into(),
            crate::target::Profile::ResidencyScheduler => "residency-scheduler".into(),
        };
        // Reports never carry a password, even one written into a URL.
        self.target_info.api_url = redact_url(&target.api_url);
        self.target_info.mcp_url = redact_url(&target.mcp_url);
        let timeline = timeline_json(&prepared.timeline, &target)?;
        let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let ctx = Arc::new(
            interruptible(
                &interrupt,
                "connecting",
                Context::connect(target, run_id, seed),
            )
            .await??,
        );
        check_proxies(&ctx, scenario).await?;

        let mut plans = Vec::new();
        for (index, spec) in scenario.workloads.iter().enumerate() {
            let workload = interruptible(&interrupt, "setting up", workloads::setup(spec, &ctx))
                .await?
                .with_context(|| format!("setting up workload {:?}", spec.name))?;
            plans.push(Plan {
                name: spec.name.clone(),
                workload,
                mix: spec.mix.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                load: spec.load,
                duration: spec.duration.unwrap_or(prepared.timeline.duration),
                warmup: spec.warmup,
                seed: seed.wrapping_add(index as u64 * 7919),
            });
        }
        let routes_before = ctx.control.route_counts("api").await.unwrap_or_default();

        let run = ctx.control.start(&timeline, RUN_TTL).await?;
        let result = self
            .follow(&ctx, prepared, &run, plans, request.live, interrupt.clone())
            .await;
        // Whatever happened: the proxy's run ends here, every fault removed, every lock released.
        let aborted = ctx.control.abort(&run).await;
        result?;
        aborted.context("aborting the proxy's run")?;

        // Settle: the workloads' own checks (Celery drains here), then the end invariants.
        let settle = async {
            let settling = self.workloads.iter().map(|workload| workload.settle(&ctx));
            let settled = futures_util::future::join_all(settling).await;
            self.push_checks(settled.into_iter().flatten().collect());
            let end: Vec<_> = scenario
                .invariants
                .iter()
                .filter(|i| i.when == When::End)
                .collect();
            let results = invariants::run_all(&ctx, &end, "end").await;
            self.push_checks(results);
            if let Some(check) = amplification(&ctx, &routes_before).await {
                self.push_checks(vec![check]);
            }
        };
        interruptible(&interrupt, "settling", settle).await
    }

    /// Follows the proxy's run while the load runs; returns when both are over.
    async fn follow(
        &mut self,
        ctx: &Arc<Context>,
        prepared: &Prepared,
        run: &RunHandle,
        plans: Vec<Plan>,
        live: bool,
        interrupt: CancellationToken,
    ) -> anyhow::Result<()> {
        let scenario = &prepared.scenario;
        let mut events = ctx.control.events(run).await?;
        let origin = loop {
            let event = tokio::select! {
                _ = interrupt.cancelled() => anyhow::bail!("interrupted before the run started"),
                event = events.recv() => event.context("the proxy's event stream ended before the run started")?,
            };
            match event["kind"].as_str() {
                Some("started") => break origin_of(&event),
                Some("ended") => {
                    anyhow::bail!("the proxy's run ended at once: {}", event["reason"])
                }
                _ => {}
            }
        };
        let recorder = Arc::new(Recorder::new(origin));
        self.recorder = Some(Arc::clone(&recorder));
        self.workloads = plans.iter().map(|p| Arc::clone(&p.workload)).collect();

        let stop = CancellationToken::new();
        let mut loads = JoinSet::new();
        for plan in plans {
            let (recorder, stop) = (Arc::clone(&recorder), stop.clone());
            loads.spawn(async move {
                let name = plan.name.clone();
                (name, load::drive(plan, recorder, origin, stop).await)
            });
        }
        let status = Arc::new(Mutex::new(live::Status::default()));
        let view_stop = CancellationToken::new();
        let view = live.then(|| {
            tokio::spawn(live::show(
                Arc::clone(&recorder),
                Arc::clone(&status),
                scenario.scenario.name.clone(),
                prepared.timeline.duration,
                view_stop.clone(),
            ))
        });
        let renewer = tokio::spawn(renew(ctx.control.clone(), run.clone()));

        let each_phase: Vec<chaos_scenarios::Invariant> = scenario
            .invariants
            .iter()
            .filter(|i| i.when == When::EachPhase)
            .cloned()
            .collect();
        let mut phase_checks = JoinSet::new();
        let mut current: Option<PhaseInfo> = None;
        // A stream that dies silently must not hang the run: past the end plus a grace, ask.
        let deadline = origin + prepared.timeline.duration + STREAM_GRACE;
        let ended: anyhow::Result<()> = loop {
            let event = tokio::select! {
                _ = interrupt.cancelled() => break Err(anyhow::anyhow!("interrupted by the user")),
                _ = tokio::time::sleep_until(deadline.into()) => {
                    break match ctx.control.status(run).await {
                        Ok(status) if status["state"] == "finished" => Ok(()),
                        Ok(status) => Err(anyhow::anyhow!(
                            "the proxy's event stream went silent; the run is {}: {}",
                            status["state"], status["reason"]
                        )),
                        Err(err) => Err(err.context("the proxy's event stream went silent")),
                    };
                }
                event = events.recv() => event,
            };
            let Some(event) = event else {
                break Err(anyhow::anyhow!("the proxy's event stream broke off"));
            };
            match event["kind"].as_str() {
                Some("phase") => {
                    let phase = PhaseInfo {
                        name: event["name"].as_str().unwrap_or_default().to_owned(),
                        from_ms: event["from_ms"].as_u64().unwrap_or(0),
                        to_ms: event["to_ms"].as_u64().unwrap_or(0),
                    };
                    recorder.begin_phase(
                        &phase.name,
                        Duration::from_millis(phase.from_ms),
                        Duration::from_millis(phase.to_ms),
                    );
                    if let Ok(mut status) = status.lock() {
                        status.phase = phase.name.clone();
                    }
                    if let Some(done) = current.replace(phase.clone()) {
                        spawn_phase_checks(&mut phase_checks, ctx, &each_phase, &done);
                    }
                    self.phases
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(phase);
                }
                Some("step") => {
                    if let Some(slip) = event["slip_us"].as_u64() {
                        self.fault_slips_us
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(slip);
                    }
                }
                Some("injector") if event["note"] == "failed" || event["note"] == "warning" => {
                    tracing::warn!(fault = %event["fault"], detail = %event["detail"], "injector");
                }
                Some("ended") => {
                    renewer.abort();
                    break match event["state"].as_str() {
                        Some("finished") => Ok(()),
                        state => Err(anyhow::anyhow!(
                            "the proxy's run ended {}: {}",
                            state.unwrap_or("?"),
                            event["reason"].as_str().unwrap_or("")
                        )),
                    };
                }
                _ => {}
            }
        };
        if ended.is_err() {
            stop.cancel();
        }
        while let Some(joined) = loads.join_next().await {
            if let Ok((name, driven)) = joined {
                self.driven.insert(name, driven);
            }
        }
        renewer.abort();
        view_stop.cancel();
        if let Some(view) = view {
            let _ = view.await;
        }
        if ended.is_ok()
            && let Some(last) = current
        {
            spawn_phase_checks(&mut phase_checks, ctx, &each_phase, &last);
        }
        while let Some(joined) = phase_checks.join_next().await {
            if let Ok(results) = joined {
                self.push_checks(results);
            }
        }
        ended
    }
}

impl Session {
    fn push_checks(&self, results: Vec<CheckResult>) {
        self.checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(results);
    }

    /// The report of what was collected; `error` (the run could not be done) makes exit code 2.
    fn report(
        &self,
        request: &Request,
        prepared: &Prepared,
        started_at: chrono::DateTime<chrono::Utc>,
        error: Option<String>,
    ) -> Report {
        let scenario = &prepared.scenario;
        let phases = self
            .phases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut checks = self
            .checks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        checks.sort_by_key(|check| when_order(&check.when));
        let (operations, series, slas, degradation) = match &self.recorder {
            Some(recorder) => {
                let (operations, series) = recorder.finish();
                let slas = verdict::slas(scenario, recorder);
                let degradation = verdict::degradation(
                    scenario,
                    &prepared.timeline,
                    recorder,
                    &series,
                    &phases,
                    &slas,
                    &checks,
                );
                (operations, series, slas, degradation)
            }
            None => Default::default(),
        };
        let verdict: Verdict = verdict::verdict(&slas, &checks, error);
        let mut slips = self
            .fault_slips_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        slips.sort_unstable();
        let at = |q: f64| {
            slips
                .get(((slips.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        let timing = Timing {
            fault_slip_us: [at(0.5), at(0.99), slips.last().copied().unwrap_or(0)],
            load_slip_us: self
                .driven
                .iter()
                .map(|(name, d)| (name.clone(), d.slip_us))
                .collect(),
            intended: self
                .driven
                .iter()
                .map(|(name, d)| (name.clone(), [d.intended, d.started]))
                .collect(),
        };
        Report {
            schema_version: crate::report::SCHEMA_VERSION,
            tool: format!("chaos {}", env!("CARGO_PKG_VERSION")),
            scenario: ScenarioInfo {
                name: scenario.scenario.name.clone(),
                description: scenario.scenario.description.clone(),
                source: request.source.origin.clone(),
                duration_ms: prepared.timeline.duration.as_millis() as u64,
                seed: scenario.scenario.seed,
            },
            target: self.target_info.clone(),
            started_at: started_at.to_rfc3339(),
            finished_at: chrono::Utc::now().to_rfc3339(),
            verdict,
            phases,
            operations,
            series,
            slas,
            checks,
            degradation,
            timing,
        }
    }
}

/// `future`, unless Ctrl-C comes first (then an error saying what was interrupted).
async fn interruptible<T>(
    interrupt: &CancellationToken,
    what: &str,
    future: impl std::future::Future<Output = T>,
) -> anyhow::Result<T> {
    tokio::select! {
        value = future => Ok(value),
        _ = interrupt.cancelled() => Err(anyhow::anyhow!("interrupted by the user while {what}")),
    }
}

/// Sort key of a check's `when`: `after <phase> at <N>s` by N, then `end`.
fn when_order(when: &str) -> u64 {
    when.rsplit_once(" at ")
        .and_then(|(_, at)| at.trim_end_matches('s').parse().ok())
        .unwrap_or(u64::MAX)
}

/// The embedded stack's size, from the scenario's workloads: the most residents a resilience
/// workload asks for (100 by default), the largest swap candidate pool, and enough inpatient
/// weeks that every swap a closed-model workload keeps in flight has its own pair (plus a
/// margin for the open-model ones).
fn embedded_options(
    scenario: &Scenario,
    flaws: Vec<chaos_testbed::flaws::Flaw>,
    seed: u64,
) -> EmbeddedOptions {
    let most = |kind: &str, option: &str| {
        scenario
            .workloads
            .iter()
            .filter(|w| w.kind == kind)
            .filter_map(|w| w.options.get(option).and_then(Value::as_u64))
            .max()
    };
    let swap_users: u32 = scenario
        .workloads
        .iter()
        .filter(|w| w.kind == "swap" || w.kind == "mcp")
        .map(|w| match w.load {
            chaos_scenarios::Load::VirtualUsers(users) => users,
            chaos_scenarios::Load::Rate(_) => 10,
        })
        .sum();
    EmbeddedOptions {
        flaws,
        residents: most("resilience", "residents").unwrap_or(100) as usize,
        candidates: most("swap", "candidate_pool").unwrap_or(0) as usize,
        fmit_weeks: 52.max(2 * swap_users as usize + 20),
        seed,
    }
}

/// The timeline as the proxy takes it; for a proxy that does not share our environment (the
/// embedded one), an injector's `url_env` naming a variable the target provides becomes `url`.
fn timeline_json(timeline: &Timeline, target: &Target) -> anyhow::Result<Value> {
    let mut json = serde_json::to_value(timeline)?;
    if let Some(events) = json["events"].as_array_mut() {
        for event in events {
            let Some(attributes) = event
                .pointer_mut("/toxic/attributes")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            let Some(var) = attributes.get("url_env").and_then(Value::as_str) else {
                continue;
            };
            if let Some((_, value)) = target.injector_env.iter().find(|(name, _)| name == var) {
                attributes.remove("url_env");
                attributes.insert("url".into(), Value::String(value.expose().to_owned()));
            }
        }
    }
    Ok(json)
}

/// Every `existing` proxy of the scenario must exist on the target's proxy.
async fn check_proxies(ctx: &Context, scenario: &Scenario) -> anyhow::Result<()> {
    let present = ctx.control.proxies().await?;
    let missing: Vec<&str> = scenario
        .proxies
        .iter()
        .filter(|p| p.existing && !present.contains_key(&p.name))
        .map(|p| p.name.as_str())
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "the scenario needs proxies {} on the target's proxy ({}), which has: {}",
        missing.join(", "),
        redact_url(&ctx.target.control_url),
        present.keys().cloned().collect::<Vec<_>>().join(", ")
    );
    Ok(())
}

/// The local instant at which the proxy's run started (from the `started` event's wall clock).
fn origin_of(started: &Value) -> Instant {
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let ago = now_us.saturating_sub(started["ts_us"].as_u64().unwrap_or(now_us));
    Instant::now()
        .checked_sub(Duration::from_micros(ago.min(60_000_000)))
        .unwrap_or_else(Instant::now)
}

/// Renews the run every third of its TTL until aborted.
async fn renew(control: crate::control::Control, run: RunHandle) {
    let mut tick = tokio::time::interval(RUN_TTL / 3);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(err) = control.renew(&run).await {
            tracing::warn!(error = %format!("{err:#}"), "renewing the proxy's run");
        }
    }
}

/// Runs the each-phase invariants for a phase that just ended.
fn spawn_phase_checks(
    set: &mut JoinSet<Vec<CheckResult>>,
    ctx: &Arc<Context>,
    invariants: &[chaos_scenarios::Invariant],
    phase: &PhaseInfo,
) {
    if invariants.is_empty() {
        return;
    }
    let (ctx, invariants) = (Arc::clone(ctx), invariants.to_vec());
    let when = format!("after {} at {}s", phase.name, phase.to_ms / 1000);
    set.spawn(async move {
        let list: Vec<_> = invariants.iter().collect();
        invariants::run_all(&ctx, &list, &when).await
    });
}

/// The MCP server's calls to the API, as the `api` proxy counted them, against what the tool
/// calls should have caused: a write sent more than once per tool call is a retry storm
/// (required); an idempotent call sent more than four times per tool call (the real client's
/// 1 + 3 retries) is reported (advisory).
async fn amplification(ctx: &Context, before: &RouteCounts) -> Option<CheckResult> {
    let expected = ctx
        .expected_api_calls
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if expected.is_empty() {
        return None;
    }
    let after = match ctx.control.route_counts("api").await {
        Ok(after) => after,
        Err(err) => {
            return Some(CheckResult::fail(
                "mcp-calls-not-amplified",
                "run",
                format!("could not be checked: {err:#}"),
                Vec::new(),
            ));
        }
    };
    let delta = |method: &str, route: &str| {
        let key = (method.to_owned(), route.to_owned());
        let count = |counts: &RouteCounts| counts.get(&key).copied().unwrap_or(0);
        count(&after).saturating_sub(count(before))
    };
    // The MCP server re-sends a call once after a 401 (its token expired: the call did not
    // run), right after logging in again: each login allows one such resend.
    let logins = delta("POST", "/api/v1/auth/login/json");
    let mut evidence = Vec::new();
    let mut write_storm = false;
    let mut lines = Vec::new();
    for ((method, route), calls) in &expected {
        let seen = delta(method, route);
        let ratio = seen as f64 / *calls as f64;
        lines.push(format!(
            "{method} {route}: {seen} requests for {calls} tool calls (x{ratio:.2})"
        ));
        let write = method == "POST" && route.ends_with("/swaps/execute");
        if write && seen > *calls + logins {
            write_storm = true;
            evidence.push(format!(
                "{method} {route}: sent {seen} times for {calls} tool calls: a non-idempotent call was retried"
            ));
        } else if !write && ratio > 4.0 {
            evidence.push(format!(
                "{method} {route}: x{ratio:.2} requests per tool call (at most 4 expected)"
            ));
        }
    }
    let detail = lines.join("; ");
    Some(match (write_storm, evidence.is_empty()) {
        (false, true) => CheckResult::pass("mcp-calls-not-amplified", "run", detail),
        (true, _) => CheckResult::fail(
            "mcp-calls-not-amplified",
            "run",
            format!("retry storm: {detail}"),
            evidence,
        ),
        (false, false) => CheckResult::fail(
            "mcp-calls-not-amplified",
            "run",
            format!("amplified reads: {detail}"),
            evidence,
        )
        .advisory(),
    })
}
