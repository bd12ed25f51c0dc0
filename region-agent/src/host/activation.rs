//! One service's switch to a release on this host, in the order users of Nomad or CodeDeploy expect:
//! install (verified file, name and mode from the build's spec) → the old release's `stop` → switch
//! `current` atomically → `activate` → the health probe until it passes or its deadline. If any step fails
//! the host stops the new release, switches `current` back, **runs the previous release's `activate`**
//! (so the old version is running again, not just linked) and reports the failure with a bounded reason.
//!
//! Every step is bounded by the spec's timeouts, which the worker capped at build time: an activation
//! always ends, in success or in a reported failure.

use super::Host;
use crate::protocol::HostMessage;
use crate::transport::Transport;
use cascade_core::deploy::{bounded_host_reason, expand, parse_http_url, HealthCheck, HealthProbe};
use cascade_core::{DeploySpec, Digest, ServiceName};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

/// Lines of a failed command's output quoted in its reason.
const TAIL_LINES: usize = 8;
/// Longest one health probe may take, whatever the interval.
const MAX_PROBE: Duration = Duration::from_secs(5);

/// Where a service is on this host, as `status.json` shows it (the manager holds the same per host).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Switched to the release; `activate` or the health probe is running.
    Activating,
    /// `activate` succeeded and the probe passed.
    Healthy,
    /// The switch failed; the previous release runs again.
    Failed,
}

/// One service's latest activation on this host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceStatus {
    /// The generation it was for.
    pub generation: u64,
    /// The release's digest.
    pub digest: String,
    /// Where it got to.
    pub state: ServiceState,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The switch of `service` to `digest` (generation `generation`), reported on `tx`.
pub(super) async fn activate<T: Transport>(
    host: Arc<Host<T>>,
    tx: mpsc::UnboundedSender<HostMessage>,
    service: ServiceName,
    generation: u64,
    digest: Digest,
    spec: DeploySpec,
) {
    let set_state = |state: ServiceState, reason: Option<String>| {
        let status = ServiceStatus { generation, digest: digest.to_string(), state, reason };
        host.status.lock().expect("status lock").services.insert(service.to_string(), status);
        host.save_status();
    };
    set_state(ServiceState::Activating, None);
    let result = switch_to(&host, &service, generation, &digest, &spec).await;
    let message = match result {
        Ok(()) => {
            tracing::info!(%service, generation, %digest, "activated and healthy");
            let mut status = host.status.lock().expect("status lock");
            status.active.insert(service.to_string(), digest.to_string());
            host.metrics.activation(true, &status.active);
            drop(status);
            host.releases.lock().expect("releases lock").prune();
            if let Some(hook) = &host.on_activated {
                hook(&service, &digest);
            }
            set_state(ServiceState::Healthy, None);
            HostMessage::Activated { service, generation }
        }
        Err(reason) => {
            let reason = bounded_host_reason(&reason);
            tracing::warn!(%service, generation, "activation failed: {reason}");
            host.metrics.activation(false, &host.status.lock().expect("status lock").active);
            set_state(ServiceState::Failed, Some(reason.clone()));
            HostMessage::ActivationFailed { service, generation, reason }
        }
    };
    let _ = tx.send(message);
}

/// Every step of the switch; on failure after the switch, puts the previous release back and running.
async fn switch_to<T: Transport>(
    host: &Arc<Host<T>>,
    service: &ServiceName,
    generation: u64,
    digest: &Digest,
    spec: &DeploySpec,
) -> Result<(), String> {
    let previous = host.releases.lock().expect("releases lock").current(service);
    let installed = {
        let host = host.clone();
        let (service, digest, spec) = (service.clone(), digest.clone(), spec.clone());
        let blocking = host.blocking;
        blocking
            .run(move || host.releases.lock().expect("releases lock").install(&service, &digest, &spec))
            .await
            .unwrap_or_else(|| Err("the install task failed".to_string()))
    };
    // A failed install changed nothing that runs: the previous release stays linked and running.
    let release = installed.map_err(|e| format!("install: {e}"))?;
    // Already current (the manager asks again after the host reconnected, or a rollback reaches a host that
    // never switched): when it is the release this host last activated and its probe passes, it runs and
    // is left alone, so a rollback restarts nothing on the hosts it did not touch. Otherwise start it
    // again, and on failure leave the link alone; there is no other release to go back to.
    let already_current = previous.as_ref() == Some(&release);
    let was_active =
        host.status.lock().expect("status lock").active.get(service.as_str()).is_some_and(|d| *d == digest.to_string());
    if already_current && was_active {
        let env = host.service_env(service, generation, &release, None);
        let healthy = match &spec.health {
            None => Ok(()),
            Some(probe) => check_health(probe, &env, &release).await,
        };
        match healthy {
            Ok(()) => return Ok(()),
            Err(e) => tracing::warn!(%service, "the running release's probe fails ({e}); starting it again"),
        }
    }
    let previous = previous.filter(|p| *p != release);
    let previous_spec = previous.as_deref().and_then(|p| crate::releases::Releases::recorded_spec(p, service));
    let env = |release: &Path, previous: Option<&Path>| host.service_env(service, generation, release, previous);
    if let (Some(old), Some(old_spec)) = (&previous, &previous_spec) {
        if let Some(stop) = &old_spec.stop {
            let timeout = Duration::from_secs(old_spec.stop_timeout_secs);
            if let Err(e) = run_step(host, service, "stop", stop, &env(old, None), old, timeout).await {
                // The old release may already be down; starting the new one is still the way forward.
                tracing::warn!(%service, "the previous release's {e}; switching anyway");
            }
        }
    }
    host.releases.lock().expect("releases lock").switch(service, Some(&release))?;
    let started = start_and_check(host, service, spec, &env(&release, previous.as_deref()), &release).await;
    let Err(failure) = started else { return Ok(()) };
    // Back to the previous release, and running: stop what the new one started, switch, start the old one.
    if let Some(stop) = &spec.stop {
        let timeout = Duration::from_secs(spec.stop_timeout_secs);
        if let Err(e) = run_step(host, service, "stop", stop, &env(&release, None), &release, timeout).await {
            tracing::warn!(%service, "the failed release's {e}");
        }
    }
    if already_current {
        return Err(format!("{failure}\n(it was already the current release; left in place)"));
    }
    host.releases.lock().expect("releases lock").switch(service, previous.as_deref())?;
    let restored = match (&previous, &previous_spec) {
        (None, _) => "no previous release to go back to".to_string(),
        (Some(old), None) => format!("back on {}", short(old)),
        (Some(old), Some(old_spec)) => match &old_spec.activate {
            None => format!("back on {}", short(old)),
            Some(activate) => {
                let timeout = Duration::from_secs(old_spec.activate_timeout_secs);
                match run_step(host, service, "activate", activate, &env(old, None), old, timeout).await {
                    Ok(()) => format!("back on {}, started again", short(old)),
                    Err(e) => format!("back on {}, but its {e}", short(old)),
                }
            }
        },
    };
    Err(format!("{failure}\n({restored})"))
}

/// `activate`, then the health probe.
async fn start_and_check<T: Transport>(
    host: &Arc<Host<T>>,
    service: &ServiceName,
    spec: &DeploySpec,
    env: &BTreeMap<String, String>,
    release: &Path,
) -> Result<(), String> {
    if let Some(activate) = &spec.activate {
        let timeout = Duration::from_secs(spec.activate_timeout_secs);
        run_step(host, service, "activate", activate, env, release, timeout).await?;
    }
    match &spec.health {
        None => Ok(()),
        Some(probe) => check_health(probe, env, release).await,
    }
}

fn short(release: &Path) -> String {
    let name = release.file_name().and_then(|n| n.to_str()).unwrap_or("?");
    name.get(..19).unwrap_or(name).to_string()
}

/// Runs one step (`sh -c`) in the release directory, in its own process group, output to
/// `services/<service>/<step>.log`. A file, not a pipe: a service the step starts in the background keeps
/// its output open, and a pipe would never reach its end.
async fn run_step<T: Transport>(
    host: &Arc<Host<T>>,
    service: &ServiceName,
    step: &str,
    command: &str,
    env: &BTreeMap<String, String>,
    release: &Path,
    timeout: Duration,
) -> Result<(), String> {
    let log_path = host.config.data_dir.join("services").join(service.as_str()).join(format!("{step}.log"));
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{step}: cannot open {}: {e}", log_path.display()))?;
    let log_err = log.try_clone().map_err(|e| format!("{step}: {e}"))?;
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .current_dir(release)
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{step}: cannot run /bin/sh: {e}"))?;
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    let failure = match waited {
        Ok(Ok(status)) if status.success() => return Ok(()),
        Ok(Ok(status)) => match status.code() {
            Some(code) => format!("{step} exited {code}"),
            None => format!("{step} was killed ({status})"),
        },
        Ok(Err(e)) => format!("{step}: {e}"),
        Err(_) => {
            // The whole group: a step that timed out must not leave half a service behind.
            if let Some(pid) = child.id() {
                kill_group(pid);
            }
            let _ = child.wait().await;
            format!("{step} timed out after {} s", timeout.as_secs())
        }
    };
    Err(format!("{failure}: {}", tail(&log_path)))
}

fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // `kill(1)` with a negative pid signals the whole group the step leads (no `unsafe` libc call).
        let _ = std::process::Command::new("kill").arg("-KILL").arg(format!("-{pid}")).status();
    }
}

/// The last lines of a step's output, for its failure reason.
fn tail(path: &Path) -> String {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return "(no output)".to_string();
    }
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// Probes until `successes` consecutive passes, or fails at the deadline with the last failure.
async fn check_health(probe: &HealthProbe, env: &BTreeMap<String, String>, release: &Path) -> Result<(), String> {
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(probe.deadline_secs);
    let interval = Duration::from_millis(probe.interval_ms);
    let per_probe = interval.clamp(Duration::from_millis(500), MAX_PROBE);
    let mut passes = 0u32;
    let mut last_failure = String::from("not probed");
    loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match probe_once(&probe.check, env, release, per_probe.min(remaining.max(Duration::from_millis(100)))).await {
            Ok(()) => {
                passes += 1;
                if passes >= probe.successes {
                    return Ok(());
                }
            }
            Err(e) => {
                passes = 0;
                last_failure = e;
            }
        }
        if tokio::time::Instant::now() + interval > deadline {
            let after = started.elapsed().as_secs_f64().round();
            return Err(format!(
                "health: {last_failure} after {after} s ({passes} of {} passes in a row)",
                probe.successes
            ));
        }
        tokio::time::sleep(interval).await;
    }
}

async fn probe_once(
    check: &HealthCheck,
    env: &BTreeMap<String, String>,
    release: &Path,
    timeout: Duration,
) -> Result<(), String> {
    match check {
        HealthCheck::Http(template) => {
            let url = expand(template, env)?;
            match tokio::time::timeout(timeout, http_get(&url)).await {
                Ok(result) => result,
                Err(_) => Err(format!("GET {url} did not answer in {} ms", timeout.as_millis())),
            }
        }
        HealthCheck::Command(command) => {
            let mut child = tokio::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(command)
                .current_dir(release)
                .envs(env)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot run the health command: {e}"))?;
            match tokio::time::timeout(timeout, child.wait()).await {
                Ok(Ok(status)) if status.success() => Ok(()),
                Ok(Ok(status)) => Err(format!("command exited {}", status.code().unwrap_or(-1))),
                Ok(Err(e)) => Err(format!("command: {e}")),
                Err(_) => Err(format!("command did not finish in {} ms", timeout.as_millis())),
            }
        }
    }
}

/// One `GET` over plain HTTP/1.0; passes on a 2xx status line.
async fn http_get(url: &str) -> Result<(), String> {
    let target = parse_http_url(url)?;
    let mut stream = tokio::net::TcpStream::connect(&target.authority).await.map_err(|e| format!("GET {url}: {e}"))?;
    let request =
        format!("GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: cascade-health\r\n\r\n", target.path, target.host);
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("GET {url}: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    // The status line is all a probe needs; bounded so a service that streams cannot hold the agent.
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf).await.map_err(|e| format!("GET {url}: {e}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let line = line.lines().next().unwrap_or("");
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("GET {url}: not an HTTP answer ({line:?})"))?;
    if (200..300).contains(&code) {
        Ok(())
    } else {
        Err(format!("GET {url} answered {code}"))
    }
}

impl<T: Transport> Host<T> {
    /// The environment of a service's steps and the variables of its health URL: the host config's `env`,
    /// each label as `CASCADE_LABEL_<KEY>`, and what the steps need to know.
    fn service_env(
        &self,
        service: &ServiceName,
        generation: u64,
        release: &Path,
        previous: Option<&Path>,
    ) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = self.config.env.clone();
        for (key, value) in &self.config.labels {
            let name: String =
                key.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
            env.insert(format!("CASCADE_LABEL_{name}"), value.clone());
        }
        let run_dir: PathBuf = self.config.data_dir.join("services").join(service.as_str()).join("run");
        let _ = std::fs::create_dir_all(&run_dir);
        env.insert("CASCADE_SERVICE".into(), service.to_string());
        env.insert("CASCADE_HOST".into(), self.config.name.clone());
        env.insert("CASCADE_GENERATION".into(), generation.to_string());
        env.insert("CASCADE_RELEASE".into(), release.display().to_string());
        env.insert("CASCADE_RUN_DIR".into(), run_dir.display().to_string());
        if let Some(previous) = previous {
            env.insert("CASCADE_PREVIOUS_RELEASE".into(), previous.display().to_string());
        }
        env
    }
}
