//! The build recipe: `cascade.toml` at the root of the commit being built.
//!
//! ```toml
//! [build]
//! command = "cargo build --release"   # run with /bin/sh -c in the checkout
//! artifact = "target/release/app"     # the file to upload, relative to the checkout
//! timeout_secs = 600                  # optional; at most the worker's maximum
//! ```

use serde::Deserialize;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// File name of the recipe.
pub const RECIPE_FILE: &str = "cascade.toml";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    build: Recipe,
}

/// How to build a commit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Shell command.
    pub command: String,
    /// Path of the artifact file, relative to the checkout.
    pub artifact: PathBuf,
    /// Build timeout.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
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
    /// Reads the recipe from a checkout.
    pub fn load(checkout: &Path) -> Result<Self, RecipeError> {
        let text = match std::fs::read_to_string(checkout.join(RECIPE_FILE)) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(RecipeError::Missing),
            Err(e) => return Err(RecipeError::Invalid(e.to_string())),
        };
        Self::parse(&text)
    }

    /// Parses recipe text.
    pub fn parse(text: &str) -> Result<Self, RecipeError> {
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
        Ok(recipe)
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
        let r = Recipe::parse("[build]\ncommand = \"make\"\nartifact = \"out/app\"\ntimeout_secs = 5000\n").unwrap();
        assert_eq!(r.timeout(900), Duration::from_secs(900));
        assert!(matches!(
            Recipe::parse("[build]\ncommand = \"make\"\nartifact = \"../x\"\n"),
            Err(RecipeError::Invalid(_))
        ));
        assert!(matches!(
            Recipe::parse("[build]\ncommand = \"make\"\nartifact = \"/etc/passwd\"\n"),
            Err(RecipeError::Invalid(_))
        ));
        assert!(matches!(Recipe::parse("[build]\ncommand = \" \"\nartifact = \"a\"\n"), Err(RecipeError::Invalid(_))));
        assert!(matches!(Recipe::parse("[build]\ncommand = \"make\"\n"), Err(RecipeError::Invalid(_))));
    }
}
