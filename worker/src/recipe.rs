//! The build recipe: `cascade.toml` at the root of the commit being built.
//!
//! ```toml
//! [build]
//! command = "cargo build --release"   # run with /bin/sh -c in the checkout
//! artifact = "target/release/app"     # the file to upload, relative to the checkout
//! timeout_secs = 600                  # optional; at most the worker's maximum
//! network = "none"                    # the default; "host" to fetch dependencies, if the worker allows
//!
//! [deploy]                            # optional: how hosts install, start and check the build
//! install_as = "app"                  # file name in the release dir; the artifact's own by default
//! mode = "0755"                       # the default
//! activate = "systemctl restart app"  # sh -c on each host, after the switch
//! stop = "systemctl stop app"         # sh -c before switching away from this release
//! placement = { pool = "frontend" }   # only hosts with these labels (besides running the service)
//!
//! [deploy.health]
//! http = "http://127.0.0.1:${PORT}/healthz"   # or: command = "..."
//! interval_ms = 500
//! successes = 3
//! deadline_secs = 30
//! ```
//!
//! The `[deploy]` section is validated here, at build time ([`cascade_core::deploy`] holds the rules): an
//! invalid one fails the build, naming the field, instead of a deploy that fails on every host.

use cascade_core::deploy::{DeploySection, DeploySpec};
use serde::Deserialize;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// File name of the recipe.
pub const RECIPE_FILE: &str = "cascade.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    build: BuildSection,
    #[serde(default)]
    deploy: Option<DeploySection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BuildSection {
    command: String,
    artifact: PathBuf,
    #[serde(default)]
    timeout_secs: Option<u64>,
    #[serde(default)]
    network: crate::sandbox::Network,
}

/// How to build a commit, and how hosts deploy what it builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// Shell command.
    pub command: String,
    /// Path of the artifact file, relative to the checkout.
    pub artifact: PathBuf,
    /// Build timeout.
    pub timeout_secs: Option<u64>,
    /// The network the build runs with.
    pub network: crate::sandbox::Network,
    /// The validated `[deploy]` section (defaults when there is none), recorded with the build.
    pub deploy: DeploySpec,
}

/// Why a recipe cannot be used. Always the build's fault, so never retried.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// No recipe in the commit.
    #[error(
        "no {RECIPE_FILE} at the root of the commit: add one with a [build] section naming `command` and `artifact`"
    )]
    Missing,
    /// Not valid TOML or wrong fields.
    #[error("{RECIPE_FILE} is invalid: {0}")]
    Invalid(String),
}

impl Recipe {
    /// Reads the recipe from a checkout; `max_deploy_secs` bounds the `[deploy]` section's timeouts.
    pub fn load(checkout: &Path, max_deploy_secs: u64) -> Result<Self, RecipeError> {
        let text = match std::fs::read_to_string(checkout.join(RECIPE_FILE)) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(RecipeError::Missing),
            Err(e) => return Err(RecipeError::Invalid(e.to_string())),
        };
        Self::parse(&text, max_deploy_secs)
    }

    /// Parses recipe text.
    pub fn parse(text: &str, max_deploy_secs: u64) -> Result<Self, RecipeError> {
        let file: RecipeFile = toml::from_str(text).map_err(|e| RecipeError::Invalid(e.message().to_string()))?;
        let recipe = file.build;
        if recipe.command.trim().is_empty() {
            return Err(RecipeError::Invalid("build.command is empty".into()));
        }
        let relative_inside =
            recipe.artifact.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if recipe.artifact.as_os_str().is_empty() || !relative_inside {
            return Err(RecipeError::Invalid(format!(
                "build.artifact {:?} must be a path inside the checkout (relative, no `..`)",
                recipe.artifact
            )));
        }
        if recipe.timeout_secs == Some(0) {
            return Err(RecipeError::Invalid("build.timeout_secs must be at least 1".into()));
        }
        let file_name = recipe.artifact.file_name().and_then(|n| n.to_str()).unwrap_or("artifact");
        let deploy = file
            .deploy
            .unwrap_or_default()
            .into_spec(file_name, max_deploy_secs)
            .map_err(|e| RecipeError::Invalid(format!("[deploy] {e}")))?;
        Ok(Recipe {
            command: recipe.command,
            artifact: recipe.artifact,
            timeout_secs: recipe.timeout_secs,
            network: recipe.network,
            deploy,
        })
    }

    /// The timeout to enforce: the recipe's, capped at the worker's maximum.
    pub fn timeout(&self, max_secs: u64) -> Duration {
        Duration::from_secs(self.timeout_secs.unwrap_or(max_secs).min(max_secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let r =
            Recipe::parse("[build]\ncommand = \"make\"\nartifact = \"out/app\"\ntimeout_secs = 5000\n", 600).unwrap();
        assert_eq!(r.timeout(900), Duration::from_secs(900));
        assert!(matches!(
            Recipe::parse("[build]\ncommand = \"make\"\nartifact = \"../x\"\n", 600),
            Err(RecipeError::Invalid(_))
        ));
        assert!(matches!(
            Recipe::parse("[build]\ncommand = \"make\"\nartifact = \"/etc/passwd\"\n", 600),
            Err(RecipeError::Invalid(_))
        ));
        assert!(matches!(
            Recipe::parse("[build]\ncommand = \" \"\nartifact = \"a\"\n", 600),
            Err(RecipeError::Invalid(_))
        ));
        assert!(matches!(Recipe::parse("[build]\ncommand = \"make\"\n", 600), Err(RecipeError::Invalid(_))));
    }

    #[test]
    fn the_deploy_section_is_checked_at_build_time() {
        let base = "[build]\ncommand = \"make\"\nartifact = \"out/hello\"\n";
        let r = Recipe::parse(base, 600).unwrap();
        assert_eq!(r.deploy.install_as, "hello", "the artifact's own file name");
        assert_eq!(r.deploy.mode, 0o755);
        let ok = format!(
            "{base}[deploy]\nmode = \"0750\"\nactivate = \"./run\"\n[deploy.health]\nhttp = \"http://127.0.0.1:${{PORT}}/healthz\"\nsuccesses = 2\n"
        );
        let r = Recipe::parse(&ok, 600).unwrap();
        assert_eq!(r.deploy.mode, 0o750);
        assert_eq!(r.deploy.health.as_ref().map(|h| h.successes), Some(2));
        for (bad, field) in [
            ("[deploy]\nmode = \"rwx\"\n", "deploy.mode"),
            ("[deploy]\nactivte = \"x\"\n", "activte"),
            ("[deploy]\nactivate_timeout_secs = 601\n", "deploy.activate_timeout_secs"),
            ("[deploy.health]\nhttp = \"localhost:80\"\n", "deploy.health.http"),
        ] {
            let err = Recipe::parse(&format!("{base}{bad}"), 600).unwrap_err().to_string();
            assert!(err.contains(field), "{bad}: {err}");
        }
    }
}
