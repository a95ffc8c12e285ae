//! How one operation ended, honestly classified.
//!
//! A status code is evidence, not a verdict: a 200 may carry made-up data (a *fallback*), and a
//! request that got no answer may still have changed the database (*unknown*, settled later by
//! the invariants, never by a blind retry).

use std::fmt;

use serde::Serialize;

/// The class of an operation's ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A real answer, including a refusal the operation expects (a validation that says no, the
    /// 409 of a lost race).
    Ok,
    /// A refusal with a reason: 4xx, or 503 with a `detail` (the service knew and said so).
    CleanError,
    /// 5xx without a reason, a reset, a refused connection, a timeout of a read.
    UncleanError,
    /// An answer that is not real data (ids that exist nowhere, a stale result).
    Fallback,
    /// Sent, no answer: a write whose effect only the database can tell.
    Unknown,
}

impl Outcome {
    /// Every class, in report order.
    pub const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::CleanError,
        Outcome::UncleanError,
        Outcome::Fallback,
        Outcome::Unknown,
    ];

    /// Whether the operation counts as failed for `rate` and `count` thresholds (anything but
    /// [`Outcome::Ok`]).
    pub fn failed(self) -> bool {
        self != Outcome::Ok
    }

    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::CleanError => "clean_error",
            Outcome::UncleanError => "unclean_error",
            Outcome::Fallback => "fallback",
            Outcome::Unknown => "unknown",
        }
    }

    /// Index into per-outcome count arrays ([`Outcome::ALL`] order).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a workload says about one operation it ran.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The class of the ending.
    pub outcome: Outcome,
    /// Why, when it is not [`Outcome::Ok`] (kept for the report's examples).
    pub detail: Option<String>,
    /// Set when the operation really began later than the driver started it (a race round
    /// waits for its other users first); latency then counts from here.
    pub started: Option<std::time::Instant>,
    /// Set when the workload ran another operation than the one asked for (a rollback with
    /// nothing to roll back yet executes a swap): the attempt counts under this one.
    pub operation: Option<&'static str>,
}

impl Attempt {
    /// A real answer.
    pub fn ok() -> Attempt {
        Attempt {
            outcome: Outcome::Ok,
            detail: None,
            started: None,
            operation: None,
        }
    }

    /// Any class, with a reason.
    pub fn new(outcome: Outcome, detail: impl Into<String>) -> Attempt {
        Attempt {
            outcome,
            detail: Some(detail.into()),
            started: None,
            operation: None,
        }
    }

    /// The same attempt, counted under `operation`.
    pub fn counted_as(mut self, operation: &'static str) -> Attempt {
        self.operation = Some(operation);
        self
    }

    /// The same attempt, timed from `started`.
    pub fn started_at(mut self, started: std::time::Instant) -> Attempt {
        self.started = Some(started);
        self
    }
}

/// Classifies an HTTP answer by status and body: 2xx is [`Outcome::Ok`]; 4xx, and 5xx with a
/// JSON `detail` that says something (a reason, not just the status phrase), are
/// [`Outcome::CleanError`]; any other 5xx is [`Outcome::UncleanError`]. The detail names the
/// status and the reason.
pub fn classify_status(status: u16, body: &[u8]) -> Attempt {
    if (200..300).contains(&status) {
        return Attempt::ok();
    }
    let reason = real_reason(status, body);
    let detail = match &reason {
        Some(reason) => format!("{status}: {reason}"),
        None => format!("{status} without a reason"),
    };
    let outcome = if status < 500 || reason.is_some() {
        Outcome::CleanError
    } else {
        Outcome::UncleanError
    };
    Attempt::new(outcome, detail)
}

/// The reason of an error answer, unless it is only the status phrase (`{"detail": "Internal
/// Server Error"}` says nothing the status did not).
pub fn real_reason(status: u16, body: &[u8]) -> Option<String> {
    let reason = reason_of(body)?;
    let phrase = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason());
    match phrase {
        Some(phrase) if phrase.eq_ignore_ascii_case(reason.trim()) => None,
        _ => Some(reason),
    }
}

/// The `detail` (FastAPI) or `error` text of a JSON error body, shortened to 200 characters.
pub fn reason_of(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let reason = value.get("detail").or_else(|| value.get("error"))?;
    let text = match reason {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Null => return None,
        other => other.to_string(),
    };
    (!text.trim().is_empty()).then(|| shorten(&text, 200))
}

/// `text` cut to at most `max` characters, with `...` when cut.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

/// Classifies a transport failure (no HTTP answer). A write that was sent and got no answer is
/// [`Outcome::Unknown`]; a read, or a request that never left (connect failed), is
/// [`Outcome::UncleanError`].
pub fn classify_transport(err: &reqwest::Error, write: bool) -> Attempt {
    let sent = !err.is_connect() && !err.is_builder();
    let what = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "cannot connect"
    } else {
        "connection lost"
    };
    let detail = format!("{what}: {}", error_chain(err));
    if write && sent {
        Attempt::new(Outcome::Unknown, detail)
    } else {
        Attempt::new(Outcome::UncleanError, detail)
    }
}

/// An error and its sources, joined by `: ` (reqwest hides the useful part in the sources).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_by_code_and_reason() {
        assert_eq!(classify_status(200, b"{}").outcome, Outcome::Ok);
        assert_eq!(classify_status(204, b"").outcome, Outcome::Ok);
        let conflict = classify_status(409, br#"{"detail":"Swap conflict: taken"}"#);
        assert_eq!(conflict.outcome, Outcome::CleanError);
        assert_eq!(
            conflict.detail.as_deref(),
            Some("409: Swap conflict: taken")
        );
        assert_eq!(classify_status(404, b"").outcome, Outcome::CleanError);
        let busy = classify_status(503, br#"{"detail":"database timeout: x"}"#);
        assert_eq!(busy.outcome, Outcome::CleanError);
        let bare = classify_status(500, b"Internal Server Error");
        assert_eq!(bare.outcome, Outcome::UncleanError);
        assert_eq!(bare.detail.as_deref(), Some("500 without a reason"));
        assert_eq!(
            classify_status(502, br#"{"detail":null}"#).outcome,
            Outcome::UncleanError
        );
        let phrase_only = classify_status(500, br#"{"detail":"Internal Server Error"}"#);
        assert_eq!(phrase_only.outcome, Outcome::UncleanError);
        assert_eq!(phrase_only.detail.as_deref(), Some("500 without a reason"));
    }

    #[test]
    fn only_ok_is_not_failed() {
        for outcome in Outcome::ALL {
            assert_eq!(outcome.failed(), outcome != Outcome::Ok);
        }
        assert_eq!(Outcome::ALL.map(Outcome::index), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn long_reasons_are_shortened_on_a_character_boundary() {
        assert_eq!(shorten("abc", 5), "abc");
        assert_eq!(shorten("ééééé", 2), "éé...");
    }
}
