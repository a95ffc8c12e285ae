//! The startup config file: proxies AND their toxics (Toxiproxy can only declare proxies).
//!
//! TOML (`.toml`) or JSON (anything else). JSON may be Toxiproxy's own config, a bare array of
//! proxies, or `{"proxies": [...]}`; TOML is `[[proxies]]` tables with `[[proxies.toxics]]`:
//!
//! ```toml
//! [[proxies]]
//! name = "postgres"
//! listen = "127.0.0.1:15432"
//! upstream = "127.0.0.1:5432"
//! protocol = "postgres"        # tcp (default), postgres, redis or http
//!
//! [[proxies.toxics]]
//! name = "slow_db"
//! type = "latency"
//! stream = "downstream"
//! attributes = { latency = 100, jitter = 10 }
//! ```
//!
//! Unknown keys are errors here (unlike the API, a typo in a file should not pass silently).
//! Every error names the file and, for syntax, type and unknown-key errors, the line and
//! column; for a bad toxic, the path to it (`proxies[0].toxics[1]`).

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::message::Protocol;
use crate::proxy::{DEFAULT_LISTEN, ProxySpec};
use crate::toxics::{Toxic, ToxicInput};

/// A config file that could not be used, with where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<input>`).
    pub origin: String,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, column)) => write!(f, "{}:{line}:{column}: {}", self.origin, self.message),
            None => write!(f, "{}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    proxies: Vec<ProxyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxyEntry {
    name: String,
    #[serde(default)]
    listen: Option<String>,
    upstream: String,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    protocol: Protocol,
    #[serde(default)]
    toxics: Vec<ToxicEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToxicEntry {
    #[serde(default)]
    name: Option<String>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    toxicity: Option<f64>,
    #[serde(default)]
    chunk_toxicity: Option<f64>,
    #[serde(default)]
    attributes: Option<serde_json::Value>,
}

/// Reads and validates a config file (nothing is bound or started).
pub fn load(path: &Path) -> Result<Vec<ProxySpec>, ConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        origin: origin.clone(),
        position: None,
        message: format!("cannot read: {e}"),
    })?;
    let is_toml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    parse(&text, is_toml, &origin)
}

/// Parses and validates config text; `origin` names it in errors.
pub fn parse(text: &str, is_toml: bool, origin: &str) -> Result<Vec<ProxySpec>, ConfigError> {
    let error = |position, message| ConfigError {
        origin: origin.to_owned(),
        position,
        message,
    };
    let file = if is_toml {
        toml::from_str::<ConfigFile>(text).map_err(|e| {
            let position = e.span().map(|span| line_column(text, span.start));
            error(position, e.message().to_owned())
        })?
    } else {
        let json_error = |e: serde_json::Error| error(Some((e.line(), e.column())), e.to_string());
        if text.trim_start().starts_with('[') {
            ConfigFile {
                proxies: serde_json::from_str(text).map_err(json_error)?,
            }
        } else {
            serde_json::from_str(text).map_err(json_error)?
        }
    };
    let mut specs: Vec<ProxySpec> = Vec::with_capacity(file.proxies.len());
    for (i, entry) in file.proxies.into_iter().enumerate() {
        let at = format!("proxies[{i}] ({:?})", entry.name);
        if specs.iter().any(|s| s.name == entry.name) {
            return Err(error(
                None,
                format!("{at}: a proxy of that name is declared twice"),
            ));
        }
        let mut toxics: Vec<Toxic> = Vec::with_capacity(entry.toxics.len());
        for (j, t) in entry.toxics.into_iter().enumerate() {
            let toxic = Toxic::from_input(ToxicInput {
                name: t.name,
                kind: Some(t.kind),
                stream: t.stream,
                toxicity: t.toxicity,
                chunk_toxicity: t.chunk_toxicity,
                attributes: t.attributes,
            })
            .map_err(|e| error(None, format!("{at}.toxics[{j}]: {e}")))?;
            if let Some(needed) = toxic.config.protocol().filter(|p| *p != entry.protocol) {
                let message = format!(
                    "{at}.toxics[{j}]: {} needs protocol = \"{needed}\", the proxy is {}",
                    toxic.config.type_name(),
                    entry.protocol
                );
                return Err(error(None, message));
            }
            if toxics.iter().any(|other| other.name == toxic.name) {
                let message = format!("{at}.toxics[{j}]: toxic {:?} is declared twice", toxic.name);
                return Err(error(None, message));
            }
            toxics.push(toxic);
        }
        specs.push(ProxySpec {
            name: entry.name,
            listen: entry.listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned()),
            upstream: entry.upstream,
            enabled: entry.enabled.unwrap_or(true),
            protocol: entry.protocol,
            toxics: Some(toxics),
        });
    }
    Ok(specs)
}

/// 1-based line and column of a byte offset (also what the runner's target files report).
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
[[proxies]]
name = "postgres"
listen = "127.0.0.1:15432"
upstream = "127.0.0.1:5432"

[[proxies.toxics]]
name = "slow_db"
type = "latency"
attributes = { latency = 100, jitter = 10 }

[[proxies]]
name = "redis"
upstream = "127.0.0.1:6379"
enabled = false
"#;

    #[test]
    fn toml_declares_proxies_and_toxics() {
        let specs = parse(TOML, true, "c.toml").unwrap();
        assert_eq!(specs.len(), 2);
        let toxics = specs[0].toxics.as_ref().unwrap();
        assert_eq!(toxics[0].name, "slow_db");
        assert_eq!(toxics[0].to_json()["attributes"]["latency"], 100);
        assert_eq!(specs[1].listen, DEFAULT_LISTEN);
        assert!(!specs[1].enabled);
    }

    #[test]
    fn toxiproxy_json_config_loads() {
        let json = r#"[{"name": "web", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:80"}]"#;
        let specs = parse(json, false, "c.json").unwrap();
        assert_eq!(specs[0].name, "web");
        assert!(specs[0].enabled);
    }

    #[test]
    fn errors_say_where() {
        let typo = TOML.replace("upstream = \"127.0.0.1:6379\"", "upstraem = \"x\"");
        let err = parse(&typo, true, "c.toml").unwrap_err().to_string();
        assert!(err.starts_with("c.toml:14:1: "), "{err}");
        assert!(err.contains("upstraem"), "{err}");

        let bad_type = TOML.replace("type = \"latency\"", "type = \"latncy\"");
        let err = parse(&bad_type, true, "c.toml").unwrap_err().to_string();
        assert!(
            err.contains(r#"proxies[0] ("postgres").toxics[0]: invalid toxic type"#),
            "{err}"
        );
        assert!(err.contains("did you mean \"latency\""), "{err}");

        let err = parse("[{\"name\": 1}]", false, "c.json")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.json:1:"), "{err}");

        let mismatch = TOML.replace("type = \"latency\"", "type = \"redis_error\"");
        let err = parse(&mismatch, true, "c.toml").unwrap_err().to_string();
        assert!(
            err.contains("redis_error needs protocol = \"redis\", the proxy is tcp"),
            "{err}"
        );

        let wrong = TOML.replace("latency = 100", "latency = \"slow\"");
        let err = parse(&wrong, true, "c.toml").unwrap_err().to_string();
        assert!(
            err.contains("toxics[0]: bad request body: attributes: invalid type"),
            "{err}"
        );
    }
}
