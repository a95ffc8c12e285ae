//! The shipped scenarios (`scenarios/library/`), built into the binary so `chaos drill smoke`
//! works anywhere; and how a scenario argument (a path or a shipped name) is resolved.

use std::path::Path;

/// Every shipped scenario: name and TOML text.
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "api-timeouts",
        include_str!("../../scenarios/library/api-timeouts.toml"),
    ),
    (
        "celery-broker-loss",
        include_str!("../../scenarios/library/celery-broker-loss.toml"),
    ),
    (
        "circuit-breaker-fallback",
        include_str!("../../scenarios/library/circuit-breaker-fallback.toml"),
    ),
    (
        "drill-day",
        include_str!("../../scenarios/library/drill-day.toml"),
    ),
    (
        "locked-assignments",
        include_str!("../../scenarios/library/locked-assignments.toml"),
    ),
    (
        "mcp-performance",
        include_str!("../../scenarios/library/mcp-performance.toml"),
    ),
    (
        "redis-down",
        include_str!("../../scenarios/library/redis-down.toml"),
    ),
    (
        "resilience-load",
        include_str!("../../scenarios/library/resilience-load.toml"),
    ),
    (
        "slow-database",
        include_str!("../../scenarios/library/slow-database.toml"),
    ),
    ("smoke", include_str!("../../scenarios/library/smoke.toml")),
    ("soak", include_str!("../../scenarios/library/soak.toml")),
    (
        "swap-load",
        include_str!("../../scenarios/library/swap-load.toml"),
    ),
    (
        "worker-loss",
        include_str!("../../scenarios/library/worker-loss.toml"),
    ),
];

/// The scenario `chaos drill` runs without an argument.
pub const DEFAULT: &str = "drill-day";

/// A scenario to run: its text and where it came from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The TOML (or JSON) text.
    pub text: String,
    /// A path, or `library:<name>`: what error messages and reports name.
    pub origin: String,
}

/// Resolves `arg`: an existing file is read; otherwise a shipped scenario's name. The error
/// lists the shipped names (with a did-you-mean).
pub fn resolve(arg: &str) -> Result<Source, String> {
    let path = Path::new(arg);
    if path.is_file() {
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read scenario file {arg}: {err}"))?;
        return Ok(Source {
            text,
            origin: arg.to_owned(),
        });
    }
    if let Some((name, text)) = SHIPPED.iter().find(|(name, _)| *name == arg) {
        return Ok(Source {
            text: (*text).to_owned(),
            origin: format!("library:{name}"),
        });
    }
    let names: Vec<&str> = SHIPPED.iter().map(|(name, _)| *name).collect();
    let hint = names
        .iter()
        .map(|name| (strsim::levenshtein(name, arg), name))
        .filter(|(distance, _)| *distance <= 3)
        .min()
        .map(|(_, name)| format!(" (did you mean {name:?}?)"))
        .unwrap_or_default();
    Err(format!(
        "no scenario file or shipped scenario named {arg:?}{hint}; shipped: {}",
        names.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_names_and_files_resolve_and_typos_get_a_hint() {
        assert_eq!(resolve("smoke").unwrap().origin, "library:smoke");
        assert!(SHIPPED.iter().any(|(name, _)| *name == DEFAULT));
        let err = resolve("smok").unwrap_err();
        assert!(
            err.starts_with(
                r#"no scenario file or shipped scenario named "smok" (did you mean "smoke"?)"#
            ),
            "{err}"
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "[scenario]\nname = \"x\"\n").unwrap();
        let arg = file.path().to_str().unwrap();
        let source = resolve(arg).unwrap();
        assert_eq!(source.origin, arg);
        assert!(source.text.contains("name = \"x\""));
    }

    #[test]
    fn every_shipped_file_is_listed() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/library");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|name| name.strip_suffix(".toml").map(str::to_owned))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = SHIPPED.iter().map(|(n, _)| (*n).to_owned()).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
    }
}
