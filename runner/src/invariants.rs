//! The scenario's invariants, checked against the system of record: SQL queries that must
//! return no rows (on the direct database connection), Redis commands with an expected reply,
//! HTTP requests with an expected answer. An invariant that cannot be run at all fails: a
//! check that cannot look has not seen that all is well.

use std::time::Duration;

use chaos_scenarios::{Check, Invariant};
use tokio_postgres::SimpleQueryMessage;

use crate::context::Context;
use crate::outcome::{error_chain, shorten};
use crate::report::CheckResult;

/// Every query or command is bounded by this.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `invariants` now; `when` says when (`after <phase>` or `end`).
pub async fn run_all(ctx: &Context, invariants: &[&Invariant], when: &str) -> Vec<CheckResult> {
    let mut results = Vec::new();
    for invariant in invariants {
        let outcome = tokio::time::timeout(CHECK_TIMEOUT, check(ctx, &invariant.check)).await;
        let mut result = match outcome {
            Ok(Ok(offending)) if offending.is_empty() => {
                CheckResult::pass(&invariant.name, "invariant", "held")
            }
            Ok(Ok(offending)) => CheckResult::fail(
                &invariant.name,
                "invariant",
                describe(&invariant.check, offending.len()),
                offending,
            ),
            Ok(Err(why)) => CheckResult::fail(
                &invariant.name,
                "invariant",
                format!("could not be checked: {why}"),
                Vec::new(),
            ),
            Err(_) => CheckResult::fail(
                &invariant.name,
                "invariant",
                format!("could not be checked: no answer within {CHECK_TIMEOUT:?}"),
                Vec::new(),
            ),
        };
        result.when = when.to_owned();
        results.push(result);
    }
    results
}

fn describe(check: &Check, offending: usize) -> String {
    match check {
        Check::Sql(_) => format!("{offending} offending row(s)"),
        Check::Redis(redis) => format!(
            "`{}` did not answer {:?}",
            redis.command.join(" "),
            redis.expect
        ),
        Check::Http(http) => format!("{} {} did not answer as expected", http.method, http.path),
    }
}

/// Runs one check: the offending items (empty when it held), or why it could not run.
async fn check(ctx: &Context, check: &Check) -> Result<Vec<String>, String> {
    match check {
        Check::Sql(sql) => {
            let messages = ctx
                .checks_db
                .simple_query(sql)
                .await
                .map_err(|err| error_chain(&err))?;
            Ok(messages
                .iter()
                .filter_map(|message| match message {
                    SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| {
                                let name = row.columns()[i].name();
                                format!("{name}={}", row.get(i).unwrap_or("NULL"))
                            })
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    _ => None,
                })
                .collect())
        }
        Check::Redis(redis) => {
            let Some((name, args)) = redis.command.split_first() else {
                return Err("empty Redis command".into());
            };
            let mut command = redis::cmd(name);
            for arg in args {
                command.arg(arg);
            }
            let mut connection = ctx.redis.clone();
            let reply: redis::Value = command
                .query_async(&mut connection)
                .await
                .map_err(|err| err.to_string())?;
            let text = reply_text(&reply);
            Ok(if text == redis.expect {
                Vec::new()
            } else {
                vec![format!("replied {text:?}")]
            })
        }
        Check::Http(http) => {
            let method = reqwest::Method::from_bytes(http.method.as_bytes())
                .map_err(|_| format!("invalid method {:?}", http.method))?;
            let answer = ctx
                .api
                .send(method, &http.path, None, &[])
                .await
                .map_err(|err| error_chain(&err))?;
            let body = String::from_utf8_lossy(&answer.body);
            let mut wrong = Vec::new();
            if answer.status != http.status {
                wrong.push(format!(
                    "status {} (expected {}): {}",
                    answer.status,
                    http.status,
                    shorten(&body, 200)
                ));
            }
            if let Some(text) = &http.body_contains
                && !body.contains(text.as_str())
            {
                wrong.push(format!("body lacks {text:?}: {}", shorten(&body, 200)));
            }
            Ok(wrong)
        }
    }
}

/// A Redis reply as text: integers and strings as themselves, nil as `nil`, arrays joined.
pub fn reply_text(value: &redis::Value) -> String {
    match value {
        redis::Value::Nil => "nil".into(),
        redis::Value::Int(n) => n.to_string(),
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(text) => text.clone(),
        redis::Value::Okay => "OK".into(),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().map(reply_text).collect::<Vec<_>>().join(" ")
        }
        redis::Value::Double(x) => x.to_string(),
        redis::Value::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_replies_read_as_text() {
        assert_eq!(reply_text(&redis::Value::Int(0)), "0");
        assert_eq!(reply_text(&redis::Value::Nil), "nil");
        assert_eq!(
            reply_text(&redis::Value::BulkString(b"PONG".to_vec())),
            "PONG"
        );
        assert_eq!(
            reply_text(&redis::Value::Array(vec![
                redis::Value::Int(1),
                redis::Value::Okay
            ])),
            "1 OK"
        );
    }
}
