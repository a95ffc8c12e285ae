//! The compose files (`compose/`), checked without a Docker engine:
//!
//! - both combinations resolve with `docker-compose config`: the testbed's
//!   `compose/docker-compose.yml`, and the real stack's overlay `compose/docker-compose.chaos.yml`
//!   over `compose/tests/residency-scheduler.base.yml`, a stand-in for the stack's own file;
//! - every dependency URL of every service (`DATABASE_URL`, `REDIS_URL`, `CELERY_BROKER_URL`,
//!   `CELERY_RESULT_BACKEND`, `API_BASE_URL`) points at `chaos-proxy`, on the port of a proxy of
//!   the right protocol, and, over the stack, is the stack's own URL with only the host changed
//!   (the passwords stay where the stack expects them); every proxy of `compose/proxy.toml` is
//!   used by some service; the services wait for a healthy proxy; published ports are on
//!   127.0.0.1; the runner's environment holds every variable its target file names;
//! - beyond those five variables, no environment value and no command word of any service but
//!   `chaos-proxy`, `chaos-runner` and `seed` names an upstream host of `compose/proxy.toml`
//!   (`db`, `redis`, `backend`) as a URL's host or as `host:port`: nothing bypasses the proxy;
//! - `up` never starts a drill (`chaos-runner` is in the profile `run`), the overlay's runner has
//!   an init as PID 1, the testbed's database is healthy only once it answers over TCP and its
//!   seed is retried;
//! - `compose/proxy.toml` loads as `chaos-proxy --check-config` loads it, and declares the
//!   proxies the shipped scenarios expect (`existing = true`);
//! - the target files parse with `TargetFile::load`;
//! - the Dockerfile copies files that exist, into the paths the compose files use.
//!
//! `docker-compose` is Debian's (1.29; `config` only reads files). `.ci/run` installs it; where it
//! is missing the docker-compose checks are skipped with a loud message, unless `CI` is set, in
//! which case they fail.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use chaos_proxy::proxy::ProxySpec;
use chaos_runner::target::TargetFile;
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

/// The variables through which the stack's services find their dependencies.
const DEPENDENCY_VARS: &[&str] = &[
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "API_BASE_URL",
];

/// The proxy's service name.
const PROXY: &str = "chaos-proxy";

/// The services that may reach the upstreams directly: the proxy itself, the runner (the judge
/// reads the database and Redis, the workloads call the backend) and the testbed's seed.
const DIRECT: &[&str] = &[PROXY, "chaos-runner", "seed"];

/// Where the Dockerfile puts the target files in the image.
const IMAGE_TARGETS: &str = "/usr/share/chaos/targets/";

/// Secrets given to `docker-compose config`, distinct so that a mix-up shows.
const DB_PASSWORD: &str = "db-secret-for-the-test";
const REDIS_PASSWORD: &str = "redis-secret-for-the-test";
const TOKEN: &str = "token-for-the-test";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the runner crate is in the workspace")
        .to_owned()
}

/// `docker-compose` on PATH; `None` (after a loud message) when missing outside CI.
fn docker_compose() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("docker-compose"))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "docker-compose is not installed and CI is set: .ci/run must install it \
             (apt-get install docker-compose)"
        );
        eprintln!(
            "\n**************************************************************************\n\
             SKIPPED: docker-compose is not installed (apt-get install docker-compose):\n\
             the compose files were NOT resolved or checked by this test.\n\
             **************************************************************************\n"
        );
    }
    found
}

/// Runs `docker-compose -f FILE... config` with exactly `env` (and PATH), so that nothing from
/// the caller's environment (SCENARIO, COMPOSE_FILE, DOCKER_HOST, ...) changes the result.
fn compose_config(binary: &Path, files: &[&str], env: &[(&str, &str)]) -> Result<Value, String> {
    let mut command = Command::new(binary);
    command.env_clear().current_dir(repo());
    for name in ["PATH", "HOME", "LANG"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.envs(env.iter().copied());
    for file in files {
        command.arg("-f").arg(repo().join(file));
    }
    let output = command.arg("config").output().expect("docker-compose runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(stderr);
    }
    let text = String::from_utf8(output.stdout).expect("UTF-8 output");
    let docs = YamlLoader::load_from_str(&text).map_err(|e| format!("{e}: {text}"))?;
    assert_eq!(docs.len(), 1, "one YAML document: {text}");
    Ok(to_json(&docs[0]))
}

/// YAML to JSON (mapping keys become strings).
fn to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Real(r) => r
            .parse::<f64>()
            .map_or_else(|_| Value::String(r.clone()), Value::from),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match to_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Null | Yaml::Alias(_) | Yaml::BadValue => Value::Null,
    }
}

fn services(config: &Value) -> &serde_json::Map<String, Value> {
    config["services"]
        .as_object()
        .expect("a `services` mapping")
}

/// A service's environment as a map (`KEY: value` or `- KEY=value`); a variable without a value
/// (passed through from the shell, unset there) maps to `None`.
fn environment(service: &Value) -> BTreeMap<String, Option<String>> {
    let scalar = |v: &Value| match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    };
    match &service["environment"] {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(|item| match item.split_once('=') {
                Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                None => (item.to_owned(), None),
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The words of a service's command (a list, or a string split on whitespace, `sh -c` scripts
/// included).
fn command_words(service: &Value) -> Vec<String> {
    match &service["command"] {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .flat_map(str::split_whitespace)
            .map(|w| w.trim_matches('"').to_owned())
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// The word after `flag` in a service's command.
fn flag_value(service: &Value, flag: &str) -> Option<String> {
    let words = command_words(service);
    let at = words.iter().position(|w| w == flag)?;
    words.get(at + 1).cloned()
}

/// A URL's parts: `scheme://user:password@host:port/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    scheme: String,
    userinfo: Option<String>,
    host: String,
    port: Option<u16>,
    path: String,
}

impl Url {
    fn parse(text: &str) -> Url {
        let (scheme, rest) = text
            .split_once("://")
            .unwrap_or_else(|| panic!("not a URL: {text}"));
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((user, hostport)) => (Some(user.to_owned()), hostport),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => (
                host,
                Some(port.parse().unwrap_or_else(|_| panic!("bad port: {text}"))),
            ),
            None => (hostport, None),
        };
        Url {
            scheme: scheme.to_owned(),
            userinfo,
            host: host.to_owned(),
            port,
            path: path.to_owned(),
        }
    }

    fn password(&self) -> Option<&str> {
        self.userinfo.as_deref()?.split_once(':').map(|(_, p)| p)
    }

    /// The proxy protocol this scheme needs.
    fn protocol(&self) -> &'static str {
        match self.scheme.as_str() {
            "postgres" | "postgresql" => "postgres",
            s if s.starts_with("postgresql+") => "postgres",
            "redis" => "redis",
            "http" => "http",
            other => panic!("no proxy protocol for the scheme {other:?}"),
        }
    }
}

fn port_of(address: &str) -> u16 {
    address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {address:?}"))
}

fn proxy_config() -> Vec<ProxySpec> {
    chaos_proxy::config::load(&repo().join("compose/proxy.toml"))
        .unwrap_or_else(|e| panic!("compose/proxy.toml: {e}"))
}

/// Checks that every dependency URL of every service but `direct` points at the proxy on the
/// port of a proxy of the right protocol whose upstream is a service of `config`; returns the
/// proxies used, and by whom.
fn check_dependency_urls(
    config: &Value,
    proxies: &[ProxySpec],
    direct: &[&str],
) -> BTreeMap<String, BTreeSet<String>> {
    let services = services(config);
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut checked = 0;
    for (name, service) in services {
        let env = environment(service);
        for var in DEPENDENCY_VARS {
            let Some(Some(value)) = env.get(*var) else {
                continue;
            };
            checked += 1;
            let url = Url::parse(value);
            let at = format!("service {name}: {var}={value}");
            if direct.contains(&name.as_str()) {
                assert_ne!(url.host, PROXY, "{at}: meant to be direct");
                continue;
            }
            assert_eq!(url.host, PROXY, "{at}: does not point at the proxy");
            let port = url.port.unwrap_or_else(|| panic!("{at}: no port"));
            let proxy = proxies
                .iter()
                .find(|p| port_of(&p.listen) == port)
                .unwrap_or_else(|| panic!("{at}: no proxy listens on port {port}"));
            assert_eq!(
                proxy.protocol.as_str(),
                url.protocol(),
                "{at}: the proxy on port {port} ({}) is of another protocol",
                proxy.name
            );
            let upstream = proxy.upstream.rsplit_once(':').map_or("", |(h, _)| h);
            assert!(
                services.contains_key(upstream),
                "{at}: proxy {} forwards to {}, which is not a service here",
                proxy.name,
                proxy.upstream
            );
            assert_eq!(
                service["depends_on"][PROXY]["condition"], "service_healthy",
                "{at}: service {name} does not wait for a healthy {PROXY}: {}",
                service["depends_on"]
            );
            used.entry(proxy.name.clone())
                .or_default()
                .insert(name.clone());
        }
    }
    assert!(checked > 0, "no dependency URL found at all");
    for proxy in proxies {
        assert!(
            used.contains_key(&proxy.name),
            "proxy {:?} of compose/proxy.toml is used by no service",
            proxy.name
        );
    }
    used
}

/// The hosts of the proxies' upstreams (`db`, `redis`, `backend`).
fn upstream_hosts(proxies: &[ProxySpec]) -> BTreeSet<String> {
    proxies
        .iter()
        .map(|p| {
            p.upstream
                .rsplit_once(':')
                .map_or(p.upstream.as_str(), |(host, _)| host)
                .to_owned()
        })
        .collect()
}

/// The upstream host `text` names, if any: as the host of a URL anywhere in it
/// (`redis://:pw@redis:6379/0`, `--broker=redis://redis`), or as `host:port` (`db:5432`,
/// `user@db:5432`).
fn names_upstream(text: &str, upstreams: &BTreeSet<String>) -> Option<String> {
    let separators = |c: char| c.is_whitespace() || ",;=\"'()[]<>".contains(c);
    for token in text.split(separators).filter(|t| !t.is_empty()) {
        let (is_url, rest) = match token.split_once("://") {
            Some((_, rest)) => (true, rest),
            None => (false, token),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
        let host = match hostport.rsplit_once(':') {
            Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                host
            }
            _ if is_url => hostport,
            _ => continue,
        };
        if upstreams.contains(host) {
            return Some(host.to_owned());
        }
    }
    None
}

/// Every environment value and every command (and entrypoint) word of every service but
/// `DIRECT` that names an upstream host of the proxy config: each is a path around the proxy.
fn direct_upstream_uses(config: &Value, proxies: &[ProxySpec]) -> Vec<String> {
    let upstreams = upstream_hosts(proxies);
    let mut found = Vec::new();
    for (name, service) in services(config) {
        if DIRECT.contains(&name.as_str()) {
            continue;
        }
        for (var, value) in environment(service) {
            let Some(value) = value else { continue };
            if let Some(host) = names_upstream(&value, &upstreams) {
                found.push(format!(
                    "service {name}: {var}={value} reaches {host} directly"
                ));
            }
        }
        for key in ["command", "entrypoint"] {
            let words: Vec<String> = match &service[key] {
                Value::Array(items) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                Value::String(s) => vec![s.clone()],
                _ => Vec::new(),
            };
            for word in words {
                if let Some(host) = names_upstream(&word, &upstreams) {
                    found.push(format!(
                        "service {name}: {key} {word:?} reaches {host} directly"
                    ));
                }
            }
        }
    }
    found
}

/// No service but `DIRECT` reaches an upstream of the proxy config around the proxy.
fn check_nothing_bypasses_the_proxy(config: &Value, proxies: &[ProxySpec]) {
    let found = direct_upstream_uses(config, proxies);
    assert!(
        found.is_empty(),
        "only {DIRECT:?} may reach {:?} directly:\n{}",
        upstream_hosts(proxies),
        found.join("\n")
    );
}

/// The proxy service: built from the shipped config, healthchecked, token set, injector
/// credentials direct.
fn check_proxy_service(config: &Value) {
    let proxy = &services(config)[PROXY];
    assert!(proxy.is_object(), "no {PROXY} service");
    assert_eq!(
        flag_value(proxy, "--config").as_deref(),
        Some("/etc/chaos/proxy.toml")
    );
    assert_eq!(flag_value(proxy, "--host").as_deref(), Some("0.0.0.0"));
    assert_eq!(flag_value(proxy, "--port").as_deref(), Some("8474"));
    let test = &proxy["healthcheck"]["test"];
    assert!(
        test.as_array()
            .is_some_and(|t| t.iter().any(|w| w == "chaos-healthcheck")),
        "{PROXY} healthcheck: {test}"
    );
    let env = environment(proxy);
    assert_eq!(
        env.get("CHAOS_API_TOKEN"),
        Some(&Some(TOKEN.to_owned())),
        "the control API's token"
    );
    // Every injector credential the shipped scenarios name must be in the PROXY's environment,
    // pointing at the server itself (not through the proxy).
    for var in injector_vars() {
        let value = env
            .get(&var)
            .cloned()
            .flatten()
            .unwrap_or_else(|| panic!("{PROXY} lacks {var}, which scenarios use (url_env)"));
        let url = Url::parse(&value);
        assert_ne!(url.host, PROXY, "{var} must be direct: {value}");
        assert!(
            services(config).contains_key(&url.host),
            "{var}: {} is not a service",
            url.host
        );
    }
}

/// The `url_env` variables the shipped scenarios name.
fn injector_vars() -> BTreeSet<String> {
    let mut vars = BTreeSet::new();
    for entry in std::fs::read_dir(repo().join("scenarios/library")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for part in text.split("url_env").skip(1) {
            let quoted = part.trim_start().trim_start_matches('=').trim_start();
            if let Some(name) = quoted.strip_prefix('"').and_then(|q| q.split('"').next()) {
                vars.insert(name.to_owned());
            }
        }
    }
    assert!(vars.contains("CHAOS_DATABASE_URL"), "{vars:?}");
    vars
}

/// Every port published by `names` is bound to 127.0.0.1.
fn check_loopback_ports(config: &Value, names: &[&str]) {
    for name in names {
        let Some(ports) = services(config)[*name]["ports"].as_array() else {
            continue;
        };
        for port in ports {
            let host_ip = match port {
                Value::String(s) => s.split(':').next().unwrap_or("").to_owned(),
                Value::Object(map) => map
                    .get("host_ip")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                other => other.to_string(),
            };
            assert_eq!(
                host_ip, "127.0.0.1",
                "service {name} publishes {port} beyond the loopback"
            );
        }
    }
}

/// The runner service: `chaos run ... --target T --out /reports` with /reports mounted, and every
/// variable T names set in its environment (resolved as the runner would).
fn check_runner(config: &Value, expected_target: &str) -> TargetFile {
    let runner = &services(config)["chaos-runner"];
    assert!(runner.is_object(), "no chaos-runner service");
    let words = command_words(runner);
    assert!(
        words.windows(2).any(|w| w[0] == "chaos" && w[1] == "run"),
        "chaos-runner does not run `chaos run`: {words:?}"
    );
    assert_eq!(flag_value(runner, "--out").as_deref(), Some("/reports"));
    let mounted = runner["volumes"].as_array().is_some_and(|volumes| {
        volumes.iter().any(|v| match v {
            Value::String(s) => s.split(':').nth(1) == Some("/reports"),
            Value::Object(m) => m.get("target").and_then(Value::as_str) == Some("/reports"),
            _ => false,
        })
    });
    assert!(mounted, "/reports is not mounted: {}", runner["volumes"]);
    let target = flag_value(runner, "--target").expect("--target");
    let file = target
        .strip_prefix(IMAGE_TARGETS)
        .unwrap_or_else(|| panic!("--target {target} is not a shipped target"));
    assert_eq!(file, expected_target);
    let path = repo().join("compose/targets").join(file);
    let parsed = TargetFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let env = environment(runner);
    let resolved = parsed
        .resolve(&path.display().to_string(), |var| {
            env.get(var).cloned().flatten()
        })
        .unwrap_or_else(|e| panic!("chaos-runner's environment: {e}"));
    // The hosts the target names are services of this file; the judge's database and Redis
    // are read directly, never through the proxy.
    for url in [&resolved.api_url, &resolved.mcp_url, &resolved.control_url] {
        let host = Url::parse(url).host;
        assert!(
            services(config).contains_key(&host),
            "{url}: no service {host}"
        );
    }
    assert_eq!(Url::parse(&resolved.control_url).host, PROXY);
    for secret in [&resolved.database_url, &resolved.redis_url] {
        let url = Url::parse(secret.expose());
        assert_ne!(url.host, PROXY, "the judge must read the truth directly");
        assert!(services(config).contains_key(&url.host));
    }
    assert_eq!(
        resolved.control_token.as_ref().map(|t| t.expose()),
        Some(TOKEN)
    );
    let waits = &runner["depends_on"][PROXY]["condition"];
    assert_eq!(waits, "service_healthy", "chaos-runner waits for the proxy");
    parsed
}

/// `up` never starts a drill: `chaos-runner` is in the profile `run` (started by `run --rm`),
/// and nothing else is in a profile.
fn check_run_only(config: &Value) {
    for (name, service) in services(config) {
        let profiles = &service["profiles"];
        if name == "chaos-runner" {
            assert_eq!(profiles, &serde_json::json!(["run"]), "{name}: profiles");
        } else {
            assert!(profiles.is_null(), "{name} is in profiles {profiles}");
        }
    }
}

#[test]
fn the_bypass_scan_finds_urls_and_host_ports() {
    let proxies = proxy_config();
    let config = serde_json::json!({"services": {
        "clean": {
            "environment": {"DATABASE_URL": "postgresql://u:p@chaos-proxy:5432/d", "HOST": "db"},
            "command": ["celery", "--broker", "redis://:pw@chaos-proxy:6379/0"]
        },
        "url": {"environment": ["EXTRA=redis://:pw@redis:6379/1"]},
        "flag": {"command": "worker --broker=redis://redis/0"},
        "hostport": {"environment": {"PGHOST_PORT": "db:5432"}},
        "list": {"entrypoint": ["wait-for", "chaos-proxy:5432,backend:8000"]},
        "seed": {"environment": {"DATABASE_URL": "postgresql://u:p@db:5432/d"}}
    }});
    let found = direct_upstream_uses(&config, &proxies);
    let services: BTreeSet<&str> = found
        .iter()
        .map(|f| f.split(':').next().unwrap().trim_start_matches("service "))
        .collect();
    assert_eq!(
        services,
        BTreeSet::from(["flag", "hostport", "list", "url"]),
        "{found:#?}"
    );
}

#[test]
fn the_testbed_compose_file_resolves_and_goes_through_the_proxy() {
    let Some(binary) = docker_compose() else {
        return;
    };
    let env = [
        ("DB_PASSWORD", DB_PASSWORD),
        ("REDIS_PASSWORD", REDIS_PASSWORD),
        ("CHAOS_API_TOKEN", TOKEN),
        ("SCENARIO", "drill-day"),
    ];
    let config = compose_config(&binary, &["compose/docker-compose.yml"], &env)
        .unwrap_or_else(|e| panic!("docker-compose config: {e}"));
    let names: BTreeSet<&str> = services(&config).keys().map(String::as_str).collect();
    for expected in [
        "db",
        "redis",
        PROXY,
        "backend",
        "celery-worker",
        "seed",
        "chaos-runner",
    ] {
        assert!(names.contains(expected), "no service {expected}: {names:?}");
    }
    assert_eq!(services(&config)["db"]["image"], "postgres:15");
    assert_eq!(services(&config)["redis"]["image"], "redis:7");

    // The seed sets the stage directly; everything else goes through the proxy.
    let used = check_dependency_urls(&config, &proxy_config(), &["seed"]);
    check_nothing_bypasses_the_proxy(&config, &proxy_config());
    assert!(used["postgres"].contains("celery-worker"), "{used:?}");
    assert!(used["redis"].contains("celery-worker"), "{used:?}");
    assert!(used["api"].contains("backend"), "{used:?}");
    check_proxy_service(&config);
    check_loopback_ports(&config, &names.iter().copied().collect::<Vec<_>>());

    let runner = &services(&config)["chaos-runner"];
    assert_eq!(
        command_words(runner)[2],
        "drill-day",
        "SCENARIO picks the scenario"
    );
    assert_eq!(
        runner["depends_on"]["seed"]["condition"],
        "service_completed_successfully"
    );
    check_run_only(&config);
    // Healthy only once PostgreSQL answers over TCP (the image's init server is socket-only),
    // and a seed that still fails is tried again.
    let db_test = services(&config)["db"]["healthcheck"]["test"].to_string();
    assert!(db_test.contains("pg_isready -h 127.0.0.1"), "{db_test}");
    let restart = services(&config)["seed"]["restart"].as_str().unwrap_or("");
    assert!(
        restart.starts_with("on-failure"),
        "seed restart: {restart:?}"
    );
    assert_eq!(
        runner["depends_on"]["backend"]["condition"],
        "service_healthy"
    );
    let target = check_runner(&config, "compose-testbed.toml");
    assert_eq!(
        format!("{:?}", target.profile),
        "Testbed",
        "the testbed profile"
    );
    // The testbed's MCP server must accept the Host the runner sends.
    let mcp_host = Url::parse(&target.mcp.url).host;
    let allowed = environment(&services(&config)["backend"])["MCP_ALLOWED_HOSTS"]
        .clone()
        .unwrap();
    assert!(allowed.split(',').any(|h| h == mcp_host), "{allowed}");

    // Without any variable set, the local-only defaults make it resolve too.
    compose_config(&binary, &["compose/docker-compose.yml"], &[])
        .unwrap_or_else(|e| panic!("docker-compose config with the defaults: {e}"));
}

#[test]
fn the_overlay_re_points_the_real_stack_at_the_proxy() {
    let Some(binary) = docker_compose() else {
        return;
    };
    let base = "compose/tests/residency-scheduler.base.yml";
    let overlay = "compose/docker-compose.chaos.yml";
    let env = [
        ("DB_PASSWORD", DB_PASSWORD),
        ("REDIS_PASSWORD", REDIS_PASSWORD),
        ("CHAOS_API_TOKEN", TOKEN),
        ("SECRET_KEY", "secret-key-for-the-test"),
        ("API_PASSWORD", "api-password-for-the-test"),
    ];
    let before = compose_config(&binary, &[base], &env)
        .unwrap_or_else(|e| panic!("docker-compose config (the stand-in alone): {e}"));
    let after = compose_config(&binary, &[base, overlay], &env)
        .unwrap_or_else(|e| panic!("docker-compose config (with the overlay): {e}"));

    let used = check_dependency_urls(&after, &proxy_config(), &[]);
    check_nothing_bypasses_the_proxy(&after, &proxy_config());
    // The stand-in does reach them directly: the scan is not blind to it.
    assert!(
        direct_upstream_uses(&before, &proxy_config()).len() >= 15,
        "{:?}",
        direct_upstream_uses(&before, &proxy_config())
    );
    for service in ["backend", "celery-worker", "celery-beat"] {
        assert!(used["postgres"].contains(service), "{used:?}");
        assert!(used["redis"].contains(service), "{used:?}");
    }
    assert!(used["redis"].contains("mcp-server"), "{used:?}");
    assert_eq!(
        used["api"],
        BTreeSet::from(["mcp-server".to_owned()]),
        "only the MCP server calls the API through the proxy"
    );

    // Each re-pointed URL is the stack's own with the host changed and nothing else: the same
    // scheme, user, password (the Redis password where the stack expects it), port and path.
    let mut compared = 0;
    for (name, service) in services(&before) {
        let old = environment(service);
        let new = environment(&services(&after)[name]);
        for var in DEPENDENCY_VARS {
            let Some(Some(old_value)) = old.get(*var) else {
                continue;
            };
            let new_value = new[*var].clone().unwrap();
            let (mut was, now) = (Url::parse(old_value), Url::parse(&new_value));
            assert_ne!(was.host, PROXY, "the stand-in already points at the proxy");
            was.host = PROXY.to_owned();
            assert_eq!(now, was, "service {name}: {var} changed beyond its host");
            compared += 1;
        }
        // Everything else in the environment is left as the stack has it.
        for (var, value) in &old {
            if !DEPENDENCY_VARS.contains(&var.as_str()) {
                assert_eq!(new.get(var), Some(value), "service {name}: {var} changed");
            }
        }
        if let Some(Some(password)) = new.get("REDIS_PASSWORD") {
            assert_eq!(password, REDIS_PASSWORD);
        }
    }
    assert_eq!(
        compared,
        3 * 4 + 3,
        "backend/worker/beat 4 URLs, mcp-server 3"
    );
    for (name, service) in services(&after) {
        for (var, value) in environment(service) {
            let Some(value) = value.filter(|v| v.starts_with("redis://")) else {
                continue;
            };
            assert_eq!(
                Url::parse(&value).password(),
                Some(REDIS_PASSWORD),
                "service {name}: {var} lost the Redis password"
            );
        }
    }

    check_proxy_service(&after);
    check_loopback_ports(&after, &[PROXY, "chaos-runner"]);
    // The new services join the stack's network, and the overlay leaves its definition alone.
    for name in [PROXY, "chaos-runner"] {
        let networks = &services(&after)[name]["networks"];
        assert!(
            networks.get("app-network").is_some(),
            "{name} is not on app-network: {networks}"
        );
    }
    assert_eq!(after["networks"], before["networks"]);
    let proxy_waits = &services(&after)[PROXY]["depends_on"];
    assert_eq!(proxy_waits["db"]["condition"], "service_healthy");
    assert_eq!(proxy_waits["redis"]["condition"], "service_healthy");
    let target = check_runner(&after, "compose-residency-scheduler.toml");
    assert_eq!(format!("{:?}", target.profile), "ResidencyScheduler");
    check_run_only(&after);
    // Its wait loop is `sh`: as PID 1 it would ignore SIGINT and SIGTERM.
    assert_eq!(services(&after)["chaos-runner"]["init"], true);

    // The control API's token has no default over the real stack.
    let without_token: Vec<_> = env
        .iter()
        .copied()
        .filter(|(k, _)| *k != "CHAOS_API_TOKEN")
        .collect();
    let err = compose_config(&binary, &[base, overlay], &without_token)
        .expect_err("the overlay must refuse to run without CHAOS_API_TOKEN");
    assert!(err.contains("set CHAOS_API_TOKEN"), "{err}");
}

#[test]
fn the_proxy_config_loads_and_declares_what_the_scenarios_use() {
    let specs = proxy_config();
    let declared: BTreeMap<&str, &str> = specs
        .iter()
        .map(|s| (s.name.as_str(), s.protocol.as_str()))
        .collect();
    assert_eq!(
        declared,
        BTreeMap::from([
            ("api", "http"),
            ("postgres", "postgres"),
            ("redis", "redis")
        ])
    );
    for spec in &specs {
        assert!(
            spec.listen.starts_with("0.0.0.0:"),
            "{}: {} (the stack's services must reach it)",
            spec.name,
            spec.listen
        );
        assert!(spec.enabled, "{}", spec.name);
        assert!(
            spec.toxics.as_ref().is_none_or(Vec::is_empty),
            "faults come from scenarios"
        );
    }
    // Every proxy a shipped scenario expects to find (`existing = true`) is there, with its
    // protocol.
    let mut expected = 0;
    for entry in std::fs::read_dir(repo().join("scenarios/library")).unwrap() {
        let path = entry.unwrap().path();
        let scenario: toml::Value = toml::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for proxy in scenario["proxies"].as_array().into_iter().flatten() {
            if proxy.get("existing").and_then(toml::Value::as_bool) != Some(true) {
                continue;
            }
            let name = proxy["name"].as_str().unwrap();
            let protocol = proxy
                .get("protocol")
                .and_then(toml::Value::as_str)
                .unwrap_or("tcp");
            assert_eq!(
                declared.get(name),
                Some(&protocol),
                "{}: proxy {name} ({protocol})",
                path.display()
            );
            expected += 1;
        }
    }
    assert!(
        expected >= 13,
        "the shipped scenarios declare their proxies"
    );

    // The command line's own check (`chaos proxy` is `chaos-proxy`).
    let output = Command::new(env!("CARGO_BIN_EXE_chaos"))
        .args(["proxy", "--config"])
        .arg(repo().join("compose/proxy.toml"))
        .arg("--check-config")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), "config OK: 3 proxies, 0 toxics");
}

#[test]
fn the_target_files_parse() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(repo().join("compose/targets")).unwrap() {
        let path = entry.unwrap().path();
        let target = TargetFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // From the host (published loopback ports) or inside compose (service names).
        let inside = name.starts_with("compose-");
        for url in [
            &target.api.base_url,
            &target.mcp.url,
            &target.proxy.control_url,
        ] {
            let host = Url::parse(url).host;
            assert_eq!(host == "127.0.0.1", !inside, "{name}: {url}");
        }
        assert_eq!(target.proxy.token_env.as_deref(), Some("CHAOS_API_TOKEN"));
        names.push(name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "compose-residency-scheduler.toml",
            "compose-testbed.toml",
            "residency-scheduler.toml",
            "testbed.toml"
        ]
    );
}

#[test]
fn the_dockerfile_copies_what_the_compose_files_use() {
    let dockerfile = std::fs::read_to_string(repo().join("compose/Dockerfile")).unwrap();
    let ignored = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let ignored: Vec<&str> = ignored
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut copied: BTreeMap<String, String> = BTreeMap::new();
    for line in dockerfile.lines().map(str::trim) {
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        if args.starts_with("--from=") || args == ". ." {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        let (destination, sources) = words.split_last().unwrap();
        for source in sources {
            assert!(
                repo().join(source).exists(),
                "Dockerfile: COPY {source}: no such file"
            );
            assert!(
                !ignored
                    .iter()
                    .any(|i| source.starts_with(i.trim_end_matches('/'))),
                "{source} is excluded by .dockerignore"
            );
            copied.insert(destination.to_string(), source.to_string());
        }
    }
    assert_eq!(
        copied.get("/etc/chaos/proxy.toml").map(String::as_str),
        Some("compose/proxy.toml")
    );
    assert_eq!(
        copied.get(IMAGE_TARGETS).map(String::as_str),
        Some("compose/targets/")
    );
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(dockerfile.contains("HEALTHCHECK"));
    assert!(dockerfile.contains("\nUSER 10001"), "a non-root user");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(repo().join("compose/chaos-healthcheck"))
            .unwrap()
            .permissions()
            .mode();
        assert!(
            mode & 0o111 != 0,
            "compose/chaos-healthcheck is not executable"
        );
    }
}
