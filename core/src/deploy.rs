//! How a build is installed, started and checked on a host, and which hosts run it.
//!
//! The worker reads the `[deploy]` section of a commit's `cascade.toml` as a [`DeploySection`] and turns it
//! into a [`DeploySpec`] with [`DeploySection::into_spec`] at build time; the spec is recorded, immutable,
//! with the build's [`crate::Artifact`], so the console, every manager and every host see exactly what the
//! build asked for. An invalid section fails the *build*, naming the field, never a deploy later.
//!
//! Targeting: a host declares what it runs ([`HostDeclaration`]: `services` and free-form `labels`); a
//! service's spec may select hosts by label ([`DeploySpec::placement`]). A host is targeted by a deploy
//! exactly when [`HostDeclaration::runs`] says so; the manager and the simulation both ask it.

use crate::ids::{InvalidValue, ServiceName};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// File mode of an installed artifact when the spec names none: runnable by everyone, writable by no one
/// but its owner.
pub const DEFAULT_MODE: u32 = 0o755;
/// `activate` and `stop` timeout when the spec names none, seconds.
pub const DEFAULT_COMMAND_TIMEOUT_SECS: u64 = 60;
/// Longest `activate`, `stop` or health command, bytes.
pub const MAX_COMMAND_BYTES: usize = 4096;
/// Most labels a host or a placement may name (bounds every comparison and every log line).
pub const MAX_LABELS: usize = 32;
/// Longest label key or value, bytes.
pub const MAX_LABEL_BYTES: usize = 63;
/// Health probe defaults: every second, 1 success, 60 s deadline.
pub const DEFAULT_HEALTH_INTERVAL_MS: u64 = 1000;
/// Consecutive successes a probe needs by default.
pub const DEFAULT_HEALTH_SUCCESSES: u32 = 1;
/// Time a probe has to pass by default, seconds.
pub const DEFAULT_HEALTH_DEADLINE_SECS: u64 = 60;
/// Largest number of consecutive successes a probe may ask for.
pub const MAX_HEALTH_SUCCESSES: u32 = 100;
/// Failed hosts a manager reports per cluster and generation; the rest are only counted.
pub const MAX_REPORTED_FAILURES: usize = 20;
/// Longest failure reason a host reports, bytes (the tail of a command's stderr fits in it).
pub const MAX_HOST_REASON_BYTES: usize = 1024;

/// The `[deploy]` section of `cascade.toml` as written (every field optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploySection {
    /// File name of the artifact inside the release directory; the artifact's own file name by default.
    pub install_as: Option<String>,
    /// Octal file mode, e.g. `"0755"`.
    pub mode: Option<String>,
    /// Starts or restarts the service on the new release (`sh -c`).
    pub activate: Option<String>,
    /// Timeout of `activate`, seconds.
    pub activate_timeout_secs: Option<u64>,
    /// Run before switching away from a release (`sh -c`).
    pub stop: Option<String>,
    /// Timeout of `stop`, seconds.
    pub stop_timeout_secs: Option<u64>,
    /// Checked after `activate`.
    pub health: Option<HealthSection>,
    /// Label selector: a host must carry every one of these labels with exactly this value.
    #[serde(default)]
    pub placement: BTreeMap<String, String>,
    /// Rollout waves, in order (see [`crate::rollout`]).
    pub waves: Option<Vec<crate::rollout::WaveSection>>,
    /// Most hosts of a cluster switching at once (0: no limit).
    pub max_unavailable: Option<u64>,
    /// Seconds a wave must stay healthy before the next opens.
    pub bake_secs: Option<u64>,
    /// Failed hosts a wave may have: `2` or `"5%"`.
    pub failure_budget: Option<crate::rollout::BudgetText>,
    /// `"halt"` or `"rollback"`.
    pub on_failure: Option<String>,
    /// Seconds a wave may go without progress before the rollout fails.
    pub progress_deadline_secs: Option<u64>,
}

/// The `[deploy.health]` section as written: exactly one of `http` and `command`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSection {
    /// `http://HOST:PORT/PATH`, `${VAR}` expanded from the service's environment; passes on 2xx.
    pub http: Option<String>,
    /// A command (`sh -c`) that passes when it exits 0.
    pub command: Option<String>,
    /// Time between probes, milliseconds.
    pub interval_ms: Option<u64>,
    /// Consecutive passes required.
    pub successes: Option<u32>,
    /// Time from the end of `activate` by which the probe must have passed, seconds.
    pub deadline_secs: Option<u64>,
}

/// What a build asked for on the hosts that run it: recorded with the build, carried to every host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploySpec {
    /// File name of the artifact inside the release directory.
    pub install_as: String,
    /// File mode set on the installed artifact.
    pub mode: u32,
    /// Starts the service on the new release; none: installing is all there is to do.
    pub activate: Option<String>,
    /// Timeout of `activate`, seconds.
    pub activate_timeout_secs: u64,
    /// Run before switching away from a release; none: nothing to stop.
    pub stop: Option<String>,
    /// Timeout of `stop`, seconds.
    pub stop_timeout_secs: u64,
    /// The health probe; none: healthy once activated.
    pub health: Option<HealthProbe>,
    /// Label selector applied on top of the hosts' `services` lists.
    pub placement: BTreeMap<String, String>,
    /// How a deploy of the build rolls out, unless the deploy request overrides it.
    #[serde(default)]
    pub rollout: crate::rollout::RolloutPolicy,
}

impl Default for DeploySpec {
    /// The spec of a build without a `[deploy]` section (and of builds recorded before there was one).
    fn default() -> Self {
        Self {
            install_as: "artifact".to_string(),
            mode: DEFAULT_MODE,
            activate: None,
            activate_timeout_secs: DEFAULT_COMMAND_TIMEOUT_SECS,
            stop: None,
            stop_timeout_secs: DEFAULT_COMMAND_TIMEOUT_SECS,
            health: None,
            placement: BTreeMap::new(),
            rollout: crate::rollout::RolloutPolicy::default(),
        }
    }
}

/// A validated health probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthProbe {
    /// What is checked.
    pub check: HealthCheck,
    /// Time between probes, milliseconds.
    pub interval_ms: u64,
    /// Consecutive passes required.
    pub successes: u32,
    /// Deadline from the end of `activate`, seconds.
    pub deadline_secs: u64,
}

/// What a health probe checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthCheck {
    /// `GET` of this URL template (`${VAR}` expanded on the host) answers 2xx.
    Http(String),
    /// This command exits 0.
    Command(String),
}

impl DeploySection {
    /// Validates the section against the worker's limits. `artifact_file_name` is the default `install_as`;
    /// `max_timeout_secs` bounds every timeout and deadline (a deploy must end). The error names the field.
    pub fn into_spec(self, artifact_file_name: &str, max_timeout_secs: u64) -> Result<DeploySpec, InvalidValue> {
        let install_as = self.install_as.unwrap_or_else(|| artifact_file_name.to_string());
        validate_file_name(&install_as)?;
        let mode = match &self.mode {
            None => DEFAULT_MODE,
            Some(text) => parse_mode(text)?,
        };
        let activate = self.activate.map(|c| validate_command("deploy.activate", c)).transpose()?;
        let stop = self.stop.map(|c| validate_command("deploy.stop", c)).transpose()?;
        let timeout = |field: &str, value: Option<u64>| -> Result<u64, InvalidValue> {
            let secs = value.unwrap_or(DEFAULT_COMMAND_TIMEOUT_SECS.min(max_timeout_secs));
            if secs == 0 || secs > max_timeout_secs {
                return Err(InvalidValue::new(field, format!("must be 1 to {max_timeout_secs} seconds; got {secs}")));
            }
            Ok(secs)
        };
        let activate_timeout_secs = timeout("deploy.activate_timeout_secs", self.activate_timeout_secs)?;
        let stop_timeout_secs = timeout("deploy.stop_timeout_secs", self.stop_timeout_secs)?;
        let health = self.health.map(|h| h.into_probe(max_timeout_secs)).transpose()?;
        validate_labels("deploy.placement", &self.placement)?;
        let rollout = crate::rollout::RolloutSection {
            waves: self.waves,
            max_unavailable: self.max_unavailable,
            bake_secs: self.bake_secs,
            failure_budget: self.failure_budget,
            on_failure: self.on_failure,
            progress_deadline_secs: self.progress_deadline_secs,
        }
        .apply_to(&crate::rollout::RolloutPolicy::default())?;
        Ok(DeploySpec {
            install_as,
            mode,
            activate,
            activate_timeout_secs,
            stop,
            stop_timeout_secs,
            health,
            placement: self.placement,
            rollout,
        })
    }
}

impl HealthSection {
    fn into_probe(self, max_timeout_secs: u64) -> Result<HealthProbe, InvalidValue> {
        let check = match (self.http, self.command) {
            (Some(url), None) => {
                validate_http_template(&url)?;
                HealthCheck::Http(url)
            }
            (None, Some(command)) => HealthCheck::Command(validate_command("deploy.health.command", command)?),
            _ => return Err(InvalidValue::new("deploy.health", "set exactly one of `http` and `command`")),
        };
        let interval_ms = self.interval_ms.unwrap_or(DEFAULT_HEALTH_INTERVAL_MS);
        if !(10..=60_000).contains(&interval_ms) {
            return Err(InvalidValue::new(
                "deploy.health.interval_ms",
                format!("must be 10 to 60000; got {interval_ms}"),
            ));
        }
        let successes = self.successes.unwrap_or(DEFAULT_HEALTH_SUCCESSES);
        if successes == 0 || successes > MAX_HEALTH_SUCCESSES {
            return Err(InvalidValue::new(
                "deploy.health.successes",
                format!("must be 1 to {MAX_HEALTH_SUCCESSES}; got {successes}"),
            ));
        }
        let deadline_secs = self.deadline_secs.unwrap_or(DEFAULT_HEALTH_DEADLINE_SECS.min(max_timeout_secs));
        if deadline_secs == 0 || deadline_secs > max_timeout_secs {
            return Err(InvalidValue::new(
                "deploy.health.deadline_secs",
                format!("must be 1 to {max_timeout_secs} seconds; got {deadline_secs}"),
            ));
        }
        if u128::from(interval_ms) * u128::from(successes) > u128::from(deadline_secs) * 1000 {
            return Err(InvalidValue::new(
                "deploy.health",
                format!("{successes} passes {interval_ms} ms apart cannot fit in deadline_secs = {deadline_secs}"),
            ));
        }
        Ok(HealthProbe { check, interval_ms, successes, deadline_secs })
    }
}

impl DeploySpec {
    /// Checks a spec that arrived from outside (a worker's report, a manager's message) by the same rules
    /// as [`DeploySection::into_spec`], so a spec in the log is always one a section could have produced.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        validate_file_name(&self.install_as)?;
        if self.mode > 0o7777 {
            return Err(InvalidValue::new("deploy.mode", format!("{:o} is not a file mode", self.mode)));
        }
        for (field, command) in [("deploy.activate", &self.activate), ("deploy.stop", &self.stop)] {
            if let Some(command) = command {
                validate_command(field, command.clone())?;
            }
        }
        if self.activate_timeout_secs == 0 || self.stop_timeout_secs == 0 {
            return Err(InvalidValue::new("deploy.activate_timeout_secs", "timeouts must be at least 1 second"));
        }
        if let Some(probe) = &self.health {
            match &probe.check {
                HealthCheck::Http(url) => validate_http_template(url)?,
                HealthCheck::Command(command) => {
                    validate_command("deploy.health.command", command.clone())?;
                }
            }
            if probe.interval_ms == 0 || probe.successes == 0 || probe.deadline_secs == 0 {
                return Err(InvalidValue::new("deploy.health", "interval, successes and deadline must be positive"));
            }
        }
        validate_labels("deploy.placement", &self.placement)?;
        self.rollout.validate()
    }

    /// Longest a host can spend from the switch to a verdict: activate, then the probe's deadline. The
    /// manager waits this long (plus its own slack) before it calls a silent host failed.
    pub fn activation_budget_secs(&self) -> u64 {
        let activate = if self.activate.is_some() { self.activate_timeout_secs } else { 0 };
        activate + self.health.as_ref().map_or(0, |h| h.deadline_secs)
    }
}

/// What a host says it runs: sent when it registers, from its config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDeclaration {
    /// Services this host runs; a deploy of any other service never reaches it.
    pub services: BTreeSet<ServiceName>,
    /// Free-form labels a service's placement selects on (e.g. `rack = "r12"`).
    pub labels: BTreeMap<String, String>,
}

impl HostDeclaration {
    /// Checks a declaration from a config file or a peer: bounded, well-formed labels.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        validate_labels("labels", &self.labels)
    }

    /// Whether a deploy of `service` with `spec` targets this host: it runs the service and carries every
    /// label of the placement with the same value.
    pub fn runs(&self, service: &ServiceName, spec: &DeploySpec) -> bool {
        self.services.contains(service) && spec.placement.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// A host whose rollout failed, with its reason, as managers report them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFailure {
    /// The host's name.
    pub host: String,
    /// Why, bounded by [`MAX_HOST_REASON_BYTES`].
    pub reason: String,
}

/// The failed hosts of one cluster for one generation: the first [`MAX_REPORTED_FAILURES`] by name, and how
/// many more there are. Bounded so a report stays one small Raft entry whatever the cluster's size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFailures {
    /// Failed hosts with their reasons.
    pub hosts: Vec<HostFailure>,
    /// Failed hosts not listed.
    pub more: u64,
}

impl HostFailures {
    /// Builds the bounded list from every failure (any order; the first by host name are kept).
    pub fn bounded(mut all: Vec<HostFailure>) -> Self {
        all.sort_by(|a, b| a.host.cmp(&b.host));
        let more = all.len().saturating_sub(MAX_REPORTED_FAILURES) as u64;
        all.truncate(MAX_REPORTED_FAILURES);
        for failure in &mut all {
            failure.reason = bounded_host_reason(&failure.reason);
        }
        Self { hosts: all, more }
    }

    /// Checks a report from a manager: within the bounds.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        if self.hosts.len() > MAX_REPORTED_FAILURES {
            return Err(InvalidValue::new(
                "failures",
                format!("at most {MAX_REPORTED_FAILURES} hosts; count the rest in `more`"),
            ));
        }
        if self.hosts.iter().any(|f| f.host.len() > 255 || f.reason.len() > MAX_HOST_REASON_BYTES + 4) {
            return Err(InvalidValue::new(
                "failures",
                format!("host names are at most 255 bytes, reasons at most {MAX_HOST_REASON_BYTES}"),
            ));
        }
        Ok(())
    }

    /// Failed hosts in all, listed or not.
    pub fn total(&self) -> u64 {
        self.hosts.len() as u64 + self.more
    }
}

/// Cuts a host's failure reason to [`MAX_HOST_REASON_BYTES`], keeping the *end* (where a command's last
/// lines of stderr are) after the first line (which says what failed).
pub fn bounded_host_reason(reason: &str) -> String {
    if reason.len() <= MAX_HOST_REASON_BYTES {
        return reason.to_string();
    }
    let head_end = reason.find('\n').unwrap_or(reason.len()).min(MAX_HOST_REASON_BYTES / 2);
    let head = floor_boundary(reason, head_end);
    let room = MAX_HOST_REASON_BYTES - head.len() - 4;
    let mut start = reason.len() - room;
    while !reason.is_char_boundary(start) {
        start += 1;
    }
    format!("{head}\n…\n{}", &reason[start..])
}

fn floor_boundary(text: &str, mut end: usize) -> &str {
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Expands `${NAME}` in `template` from `env`; an unknown name is an error naming it.
pub fn expand(template: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("unclosed `${{` in {template:?}"))?;
        let name = &after[..end];
        let value = env.get(name).ok_or_else(|| format!("${{{name}}} is not set on this host"))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// An `http://host:port/path` URL split into its parts, as the health probe dials it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// `host:port` to connect to (port 80 when none is given).
    pub authority: String,
    /// The host as sent in the `Host` header.
    pub host: String,
    /// Path and query, `/` at least.
    pub path: String,
}

/// Parses an expanded health URL; only plain `http://` (probes run on the host, against its own service).
pub fn parse_http_url(url: &str) -> Result<HttpTarget, String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?} must start with http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || authority.chars().any(|c| c.is_whitespace()) {
        return Err(format!("{url:?} has no valid host"));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?}: the path must not contain spaces or control characters"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            let port: u16 = port.parse().map_err(|_| format!("{url:?}: port {port:?} is not a number 1-65535"))?;
            if port == 0 {
                return Err(format!("{url:?}: port 0 is not a port"));
            }
            (host, port)
        }
        _ => (authority, 80),
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    Ok(HttpTarget { authority: format!("{host}:{port}"), host: host.to_string(), path: path.to_string() })
}

fn validate_http_template(url: &str) -> Result<(), InvalidValue> {
    let field = "deploy.health.http";
    // Placeholders stand for values known only on the host: check the URL with each replaced by a number.
    let mut names = BTreeMap::new();
    let mut rest = url;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| InvalidValue::new(field, format!("unclosed `${{` in {url:?}")))?;
        let name = &after[..end];
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(InvalidValue::new(field, format!("${{{name}}}: a variable name is letters, digits and `_`")));
        }
        names.insert(name.to_string(), "1".to_string());
        rest = &after[end + 1..];
    }
    let expanded = expand(url, &names).map_err(|e| InvalidValue::new(field, e))?;
    parse_http_url(&expanded).map(|_| ()).map_err(|e| InvalidValue::new(field, e))
}

fn validate_command(field: &str, command: String) -> Result<String, InvalidValue> {
    if command.trim().is_empty() || command.len() > MAX_COMMAND_BYTES || command.contains('\0') {
        return Err(InvalidValue::new(
            field,
            format!("must be a non-empty shell command of at most {MAX_COMMAND_BYTES} bytes"),
        ));
    }
    Ok(command)
}

fn validate_file_name(name: &str) -> Result<(), InvalidValue> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.chars().any(char::is_control)
        && name != "manifest.json"
        && !name.starts_with("deploy-");
    if !ok {
        return Err(InvalidValue::new(
            "deploy.install_as",
            format!(
                "{name:?} must be a plain file name (no `/`, not starting with `.` or `deploy-`, not manifest.json)"
            ),
        ));
    }
    Ok(())
}

/// Parses an octal mode such as `"0755"`, `"755"` or `"0o755"`.
fn parse_mode(text: &str) -> Result<u32, InvalidValue> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let bad = || InvalidValue::new("deploy.mode", format!("{text:?} is not an octal file mode such as \"0755\""));
    if digits.is_empty() || digits.len() > 4 || !digits.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err(bad());
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|_| bad())?;
    if mode & 0o400 == 0 {
        return Err(InvalidValue::new("deploy.mode", format!("{text:?} does not let the owner read the file")));
    }
    Ok(mode)
}

fn validate_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<(), InvalidValue> {
    if labels.len() > MAX_LABELS {
        return Err(InvalidValue::new(field, format!("at most {MAX_LABELS} labels")));
    }
    let key_ok = |k: &str| {
        !k.is_empty()
            && k.len() <= MAX_LABEL_BYTES
            && k.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c))
    };
    let value_ok =
        |v: &str| v.len() <= MAX_LABEL_BYTES && v.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    for (key, value) in labels {
        if !key_ok(key) {
            return Err(InvalidValue::new(
                field,
                format!("label {key:?}: a key is 1 to {MAX_LABEL_BYTES} of a-z 0-9 _ - ."),
            ));
        }
        if !value_ok(value) {
            return Err(InvalidValue::new(
                field,
                format!("label {key} = {value:?}: a value is at most {MAX_LABEL_BYTES} of A-Z a-z 0-9 _ - ."),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_like: DeploySection) -> Result<DeploySpec, InvalidValue> {
        toml_like.into_spec("hello", 600)
    }

    #[test]
    fn defaults_install_runnable_under_the_artifacts_own_name() {
        let spec = section(DeploySection::default()).unwrap();
        assert_eq!(spec.install_as, "hello");
        assert_eq!(spec.mode, 0o755);
        assert!(spec.activate.is_none() && spec.health.is_none());
    }

    #[test]
    fn invalid_fields_are_named() {
        let err = |s: DeploySection| section(s).unwrap_err().field;
        assert_eq!(err(DeploySection { mode: Some("0999".into()), ..Default::default() }), "deploy.mode");
        assert_eq!(err(DeploySection { mode: Some("0055".into()), ..Default::default() }), "deploy.mode");
        assert_eq!(err(DeploySection { install_as: Some("../x".into()), ..Default::default() }), "deploy.install_as");
        assert_eq!(
            err(DeploySection { activate_timeout_secs: Some(601), ..Default::default() }),
            "deploy.activate_timeout_secs"
        );
        let health = |h: HealthSection| DeploySection { health: Some(h), ..Default::default() };
        assert_eq!(
            err(health(HealthSection { http: Some("ftp://x/".into()), ..Default::default() })),
            "deploy.health.http"
        );
        assert_eq!(
            err(health(HealthSection { http: Some("http://127.0.0.1:${PORT/".into()), ..Default::default() })),
            "deploy.health.http"
        );
        assert_eq!(err(health(HealthSection::default())), "deploy.health");
        assert_eq!(
            err(health(HealthSection { command: Some("true".into()), deadline_secs: Some(900), ..Default::default() })),
            "deploy.health.deadline_secs"
        );
        let placement = BTreeMap::from([("Pool".to_string(), "x".to_string())]);
        assert_eq!(err(DeploySection { placement, ..Default::default() }), "deploy.placement");
    }

    #[test]
    fn a_health_url_with_placeholders_is_checked_and_expanded() {
        let spec = section(DeploySection {
            health: Some(HealthSection { http: Some("http://127.0.0.1:${PORT}/healthz".into()), ..Default::default() }),
            ..Default::default()
        })
        .unwrap();
        let Some(HealthProbe { check: HealthCheck::Http(url), .. }) = spec.health.clone() else { panic!("http probe") };
        let env = BTreeMap::from([("PORT".to_string(), "9101".to_string())]);
        let target = parse_http_url(&expand(&url, &env).unwrap()).unwrap();
        assert_eq!(target.authority, "127.0.0.1:9101");
        assert_eq!(target.path, "/healthz");
        assert!(expand(&url, &BTreeMap::new()).unwrap_err().contains("PORT"));
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn targeting_needs_the_service_and_every_placement_label() {
        let svc = ServiceName::parse("web").unwrap();
        let host = HostDeclaration {
            services: BTreeSet::from([svc.clone()]),
            labels: BTreeMap::from([("pool".to_string(), "front".to_string())]),
        };
        let mut spec = DeploySpec::default();
        assert!(host.runs(&svc, &spec));
        assert!(!host.runs(&ServiceName::parse("db").unwrap(), &spec));
        spec.placement.insert("pool".into(), "back".into());
        assert!(!host.runs(&svc, &spec));
        spec.placement.insert("pool".into(), "front".into());
        assert!(host.runs(&svc, &spec));
    }

    #[test]
    fn failures_are_bounded_and_keep_the_end_of_a_reason() {
        let all = (0..30).map(|i| HostFailure { host: format!("h{i:02}"), reason: "x".repeat(5000) }).collect();
        let failures = HostFailures::bounded(all);
        assert_eq!(failures.hosts.len(), MAX_REPORTED_FAILURES);
        assert_eq!(failures.more, 10);
        assert_eq!(failures.total(), 30);
        assert!(failures.validate().is_ok());
        let reason = bounded_host_reason(&format!("activate exited 2\n{}last line", "y".repeat(3000)));
        assert!(reason.len() <= MAX_HOST_REASON_BYTES + 4, "{}", reason.len());
        assert!(reason.starts_with("activate exited 2") && reason.ends_with("last line"));
    }
}
