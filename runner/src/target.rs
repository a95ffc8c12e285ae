//! Where a run goes: the stack's API and MCP URLs, its credentials, the proxy's control API and
//! the direct database and Redis URLs the judge reads the truth from.
//!
//! `chaos run --target FILE` reads a [`TargetFile`] (TOML); secrets are given by environment
//! variable *name* and never printed. `chaos drill` builds a [`Target`] for the embedded stack.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

/// Which API the workloads talk to: the testbed answers a few things the real stack does not
/// (`schedule_version` on every schedule-based answer, a per-task execution counter in Redis),
/// and the judge uses them when they are there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// The stand-in (`chaos-testbed`): every check, including the testbed-only ones.
    Testbed,
    /// The real residency scheduler: the checks its API allows.
    ResidencyScheduler,
}

/// A target file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetFile {
    /// `testbed` or `residency-scheduler`.
    pub profile: Profile,
    /// The HTTP API.
    pub api: ApiSection,
    /// The MCP server.
    pub mcp: McpSection,
    /// The chaos proxy's control API.
    pub proxy: ProxySection,
    /// The database, direct (not through the proxy): invariants and data discovery.
    pub database: SecretSection,
    /// Redis, direct: invariants and Celery results.
    pub redis: SecretSection,
}

/// `[api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Base URL, e.g. `http://127.0.0.1:8000`.
    pub base_url: String,
    /// Environment variable holding the login user name.
    pub username_env: String,
    /// Environment variable holding the password.
    pub password_env: String,
}

/// `[mcp]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpSection {
    /// The Streamable HTTP endpoint, e.g. `http://127.0.0.1:8080/mcp`.
    pub url: String,
}

/// `[proxy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySection {
    /// The control API, e.g. `http://127.0.0.1:8474`.
    pub control_url: String,
    /// Environment variable holding the bearer token (absent: no token).
    #[serde(default)]
    pub token_env: Option<String>,
}

/// A section whose only content is a URL with a password, given by variable name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSection {
    /// Environment variable holding the URL.
    pub url_env: String,
}

/// A string that is never printed (`***` in `Debug` and `Display`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that needs it (a connection).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A resolved target: everything a run needs, secrets included.
#[derive(Debug, Clone)]
pub struct Target {
    /// What the API is.
    pub profile: Profile,
    /// API base URL, without a trailing `/`.
    pub api_url: String,
    /// Login user name.
    pub username: String,
    /// Login password.
    pub password: Secret,
    /// MCP endpoint.
    pub mcp_url: String,
    /// Proxy control API, without a trailing `/`.
    pub control_url: String,
    /// Bearer token of the control API.
    pub control_token: Option<Secret>,
    /// Direct database URL.
    pub database_url: Secret,
    /// Direct Redis URL.
    pub redis_url: Secret,
    /// Environment variables the scenario's injectors name (`url_env`) and their values, for a
    /// proxy that does not have them in its own environment (the embedded one): the runner
    /// replaces `url_env` with `url` in the timeline it sends. Empty for a remote proxy.
    pub injector_env: Vec<(String, Secret)>,
}

/// A target file that cannot be used: what and where.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The file cannot be read.
    #[error("cannot read target file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or a field is wrong.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A variable the file names is not set.
    #[error("{path}: `{field}` names the environment variable {var}, which is not set")]
    MissingVar {
        /// The file.
        path: String,
        /// The field naming it.
        field: &'static str,
        /// The variable.
        var: String,
    },
}

impl TargetFile {
    /// Parses a target file's text; `path` is for messages.
    pub fn parse(text: &str, path: &str) -> Result<TargetFile, TargetError> {
        toml::from_str(text).map_err(|err| {
            let (line, column) = err
                .span()
                .map(|span| chaos_proxy::config::line_column(text, span.start))
                .unwrap_or((1, 1));
            TargetError::Syntax {
                path: path.to_owned(),
                line,
                column,
                message: err.message().to_owned(),
            }
        })
    }

    /// Reads and parses a target file.
    pub fn load(path: &Path) -> Result<TargetFile, TargetError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TargetError::Read {
            path: shown.clone(),
            source,
        })?;
        TargetFile::parse(&text, &shown)
    }

    /// Resolves the variables through `lookup` (the process environment in the CLI).
    pub fn resolve(
        &self,
        path: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Target, TargetError> {
        let var = |field: &'static str, name: &str| {
            lookup(name).ok_or_else(|| TargetError::MissingVar {
                path: path.to_owned(),
                field,
                var: name.to_owned(),
            })
        };
        let control_token = match &self.proxy.token_env {
            Some(name) => Some(Secret::new(var("proxy.token_env", name)?)),
            None => None,
        };
        Ok(Target {
            profile: self.profile,
            api_url: self.api.base_url.trim_end_matches('/').to_owned(),
            username: var("api.username_env", &self.api.username_env)?,
            password: Secret::new(var("api.password_env", &self.api.password_env)?),
            mcp_url: self.mcp.url.clone(),
            control_url: self.proxy.control_url.trim_end_matches('/').to_owned(),
            control_token,
            database_url: Secret::new(var("database.url_env", &self.database.url_env)?),
            redis_url: Secret::new(var("redis.url_env", &self.redis.url_env)?),
            injector_env: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
profile = "testbed"
[api]
base_url = "http://127.0.0.1:8000/"
username_env = "U"
password_env = "P"
[mcp]
url = "http://127.0.0.1:8080/mcp"
[proxy]
control_url = "http://127.0.0.1:8474"
token_env = "T"
[database]
url_env = "D"
[redis]
url_env = "R"
"#;

    fn env(name: &str) -> Option<String> {
        ["U", "P", "T", "D", "R"]
            .contains(&name)
            .then(|| format!("value-of-{name}"))
    }

    #[test]
    fn a_target_file_resolves_its_variables_and_hides_them() {
        let file = TargetFile::parse(FILE, "t.toml").unwrap();
        let target = file.resolve("t.toml", env).unwrap();
        assert_eq!(target.api_url, "http://127.0.0.1:8000");
        assert_eq!(target.username, "value-of-U");
        assert_eq!(target.password.expose(), "value-of-P");
        let shown = format!("{target:?}");
        assert!(
            !shown.contains("value-of-P") && !shown.contains("value-of-D"),
            "{shown}"
        );
        assert!(
            !shown.contains("value-of-T") && !shown.contains("value-of-R"),
            "{shown}"
        );
    }

    #[test]
    fn a_missing_variable_is_named_with_its_field() {
        let file = TargetFile::parse(FILE, "t.toml").unwrap();
        let err = file
            .resolve("t.toml", |name| (name != "D").then(|| "x".to_owned()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.toml: `database.url_env` names the environment variable D, which is not set"
        );
    }

    #[test]
    fn a_bad_field_is_reported_with_line_and_column() {
        let text = FILE.replace("profile = \"testbed\"", "profile = \"prod\"");
        let err = TargetFile::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(
            err.starts_with("t.toml:2:11: unknown variant `prod`"),
            "{err}"
        );
        let text = FILE.replace("[mcp]", "[mcp]\nuri = 1");
        let err = TargetFile::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(err.starts_with("t.toml:8:1: unknown field `uri`"), "{err}");
    }

    #[test]
    fn the_shipped_target_files_parse() {
        for (name, profile) in [
            ("residency-scheduler", Profile::ResidencyScheduler),
            ("testbed", Profile::Testbed),
        ] {
            let path = format!(
                "{}/../compose/targets/{name}.toml",
                env!("CARGO_MANIFEST_DIR")
            );
            let file = TargetFile::load(Path::new(&path)).unwrap();
            assert_eq!(file.profile, profile);
        }
    }
}
