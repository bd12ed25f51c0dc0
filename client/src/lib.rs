//! Typed HTTP client for Cascade's `/api/v1`.
//!
//! Shared by the worker, the region agents and the CLI, so that nothing but the node links RocksDB. A client
//! knows several node addresses: when one is unreachable or has no leader (503), it moves on to the next,
//! with a bounded backoff, so callers ride through a leader failover without code of their own.

pub mod blobs;
pub mod metrics_http;

use cascade_core::api::{
    AddMemberRequest, AuditPage, BuildDetail, BuildList, BuildLog, ClaimRequest, ClaimResponse, ClusterStatus,
    DeployRequest, DeploymentStatus, DesiredVersions, ErrorBody, FailRequest, HeartbeatRequest, SubmitBuildRequest,
    SucceedRequest, IDEMPOTENCY_KEY_HEADER,
};
use cascade_core::{Artifact, HeartbeatAck, Job, JobId, Lease, ServiceName, WorkerId};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{status}: {detail} ({error})")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// Machine-readable kind.
        error: String,
        /// Explanation.
        detail: String,
    },
    /// No server could be reached (or none had a leader) within the retry budget.
    #[error("no Cascade node answered within {waited:?}; last error: {last}")]
    Unavailable {
        /// How long the client kept trying.
        waited: Duration,
        /// The last error seen.
        last: String,
    },
    /// The answer could not be decoded.
    #[error("unexpected answer from {url}: {detail}")]
    Decode {
        /// What was called.
        url: String,
        /// Why it could not be read.
        detail: String,
    },
    /// The request reached a node but its answer was lost: the command may or may not have been applied.
    #[error("the outcome of {what} is unknown ({detail}); check its effect before retrying")]
    OutcomeUnknown {
        /// What was sent.
        what: String,
        /// What went wrong.
        detail: String,
    },
    /// The client was given no usable server address.
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// The HTTP status, for errors the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client for one cluster.
pub struct Client {
    servers: Vec<String>,
    token: String,
    http: reqwest::Client,
    /// Index of the server that answered last; tried first next time.
    preferred: AtomicUsize,
    /// How long one call keeps retrying across servers.
    retry_budget: Duration,
    idempotency_seq: AtomicU64,
}

enum Attempt {
    Done(reqwest::Response),
    Retry(String),
    Failed(ClientError),
}

/// How long one HTTP request may take (long polls add their wait).
const CALL_TIMEOUT: Duration = Duration::from_secs(40);

/// One API call, as sent to whichever server answers.
struct Call<'a> {
    method: Method,
    path: &'a str,
    body: Option<serde_json::Value>,
    headers: &'a [(&'a str, String)],
    timeout: Duration,
    retry: Retry,
}

/// When a failed call may be sent again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads and idempotent writes: after any transport error, 503 or 504.
    Always,
    /// Other writes: only when the request provably never reached a node (connection refused) or a node
    /// answered 503 (nothing was proposed); a request lost after sending may have been applied.
    IfNotSent,
}

impl Client {
    /// `servers` are base URLs (`http://host:port`) or `host:port`; `token` is a bearer token.
    pub fn new(servers: &[String], token: &str) -> Result<Self, ClientError> {
        let servers: Vec<String> = servers
            .iter()
            .flat_map(|s| s.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| if s.contains("://") { s.trim_end_matches('/').to_string() } else { format!("http://{s}") })
            .collect();
        if servers.is_empty() {
            return Err(ClientError::Config("no server address given (use --server or CASCADE_SERVER)".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Self {
            servers,
            token: token.to_string(),
            http,
            preferred: AtomicUsize::new(0),
            retry_budget: Duration::from_secs(30),
            idempotency_seq: AtomicU64::new(0),
        })
    }

    /// Sets how long one call keeps retrying across servers before giving up.
    pub fn with_retry_budget(mut self, budget: Duration) -> Self {
        self.retry_budget = budget;
        self
    }

    async fn send_once(&self, server: &str, call: &Call<'_>) -> Attempt {
        let Call { method, path, body, headers, timeout, retry } = call;
        let mut request =
            self.http.request(method.clone(), format!("{server}{path}")).bearer_auth(&self.token).timeout(*timeout);
        for (name, value) in *headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        match request.send().await {
            Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE => {
                Attempt::Retry(format!("{server}: {}", error_text(response).await))
            }
            // 504: the node forwarded the command but lost track of it; only an idempotent call may resend.
            Ok(response) if response.status() == StatusCode::GATEWAY_TIMEOUT && *retry == Retry::Always => {
                Attempt::Retry(format!("{server}: {}", error_text(response).await))
            }
            Ok(response) => Attempt::Done(response),
            Err(e) if *retry == Retry::Always || e.is_connect() => Attempt::Retry(format!("{server}: {e}")),
            Err(e) => Attempt::Failed(ClientError::OutcomeUnknown {
                what: format!("{method} {path} to {server}"),
                detail: e.to_string(),
            }),
        }
    }

    /// Sends a request, moving across servers on connection errors and 503s until the retry budget is spent.
    async fn send(&self, call: &Call<'_>) -> Result<reqwest::Response, ClientError> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        let mut last = String::new();
        let first = self.preferred.load(Ordering::Relaxed);
        // Bounded by the retry budget; the attempt cap is a second guard.
        for attempt in 0..1000usize {
            let index = (first + attempt) % self.servers.len();
            let server = &self.servers[index];
            match self.send_once(server, call).await {
                Attempt::Done(response) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(response);
                }
                Attempt::Retry(why) => last = why,
                Attempt::Failed(e) => return Err(e),
            }
            if started.elapsed() >= self.retry_budget {
                break;
            }
            // After a full round over every server, back off before the next.
            if (attempt + 1) % self.servers.len() == 0 {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
        Err(ClientError::Unavailable { waited: started.elapsed(), last })
    }

    async fn call<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<Option<T>, ClientError> {
        let response = self.send(&call).await?;
        let status = response.status();
        let url = response.url().to_string();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(match serde_json::from_str::<ErrorBody>(&text) {
                Ok(body) => ClientError::Api { status, error: body.error, detail: body.detail },
                Err(_) => ClientError::Api { status, error: "http".into(), detail: text },
            });
        }
        let bytes =
            response.bytes().await.map_err(|e| ClientError::Decode { url: url.clone(), detail: e.to_string() })?;
        serde_json::from_slice(&bytes).map(Some).map_err(|e| ClientError::Decode { url, detail: e.to_string() })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let call =
            Call { method: Method::GET, path, body: None, headers: &[], timeout: CALL_TIMEOUT, retry: Retry::Always };
        self.call(call).await?.ok_or_else(|| no_body(path))
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        retry: Retry,
    ) -> Result<T, ClientError> {
        let body = Some(to_json(body)?);
        let call = Call { method: Method::POST, path, body, headers: &[], timeout: CALL_TIMEOUT, retry };
        self.call(call).await?.ok_or_else(|| no_body(path))
    }

    /// Queues a build. Retries after a failover return the same build (the call carries an idempotency key).
    pub async fn submit_build(&self, request: &SubmitBuildRequest) -> Result<Job, ClientError> {
        let key = format!(
            "{}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
            self.idempotency_seq.fetch_add(1, Ordering::Relaxed)
        );
        self.submit_build_with_key(request, &key).await
    }

    /// Queues a build under a caller-chosen idempotency key.
    pub async fn submit_build_with_key(&self, request: &SubmitBuildRequest, key: &str) -> Result<Job, ClientError> {
        let body = Some(to_json(request)?);
        let headers = [(IDEMPOTENCY_KEY_HEADER, key.to_string())];
        // The idempotency key makes a resend safe even when the first answer was lost.
        let path = "/api/v1/builds";
        self.call(Call {
            method: Method::POST,
            path,
            body,
            headers: &headers,
            timeout: CALL_TIMEOUT,
            retry: Retry::Always,
        })
        .await?
        .ok_or_else(|| no_body("/api/v1/builds"))
    }

    /// One page of builds, newest first.
    pub async fn list_builds(
        &self,
        before: Option<JobId>,
        limit: usize,
        service: Option<&ServiceName>,
        status: Option<&str>,
    ) -> Result<BuildList, ClientError> {
        let mut path = format!("/api/v1/builds?limit={limit}");
        if let Some(before) = before {
            path.push_str(&format!("&before={before}"));
        }
        if let Some(service) = service {
            path.push_str(&format!("&service={service}"));
        }
        if let Some(status) = status {
            path.push_str(&format!("&status={status}"));
        }
        self.get(&path).await
    }

    /// One build, from the answering node's replica.
    pub async fn get_build(&self, id: JobId) -> Result<Job, ClientError> {
        self.get(&format!("/api/v1/builds/{id}")).await
    }

    /// One build with its artifact's replication per region.
    pub async fn get_build_detail(&self, id: JobId) -> Result<BuildDetail, ClientError> {
        self.get(&format!("/api/v1/builds/{id}")).await
    }

    /// The latest attempt's log: complete once it ended, the live tail while it runs.
    pub async fn build_log(&self, id: JobId, tail: Option<u64>) -> Result<BuildLog, ClientError> {
        match tail {
            Some(bytes) => self.get(&format!("/api/v1/builds/{id}/log?tail={bytes}")).await,
            None => self.get(&format!("/api/v1/builds/{id}/log")).await,
        }
    }

    /// Cancels a queued build, or asks a running one to stop.
    pub async fn cancel_build(&self, id: JobId) -> Result<Job, ClientError> {
        self.post(&format!("/api/v1/builds/{id}/cancel"), &serde_json::json!({}), Retry::IfNotSent).await
    }

    /// Claims the oldest queued job, waiting up to `wait` for one; `None` when nothing came.
    pub async fn claim(&self, worker: &WorkerId, wait: Duration) -> Result<Option<ClaimResponse>, ClientError> {
        let path = format!("/api/v1/jobs/claim?wait={}", wait.as_secs());
        let body = Some(to_json(&ClaimRequest { worker: worker.clone() })?);
        let timeout = wait + Duration::from_secs(10);
        self.call(Call { method: Method::POST, path: &path, body, headers: &[], timeout, retry: Retry::IfNotSent })
            .await
    }

    /// Tells the cluster the worker still holds `lease`.
    pub async fn heartbeat(&self, lease: Lease) -> Result<HeartbeatAck, ClientError> {
        self.post(
            &format!("/api/v1/jobs/{}/heartbeat", lease.job),
            &HeartbeatRequest { attempt: lease.attempt },
            Retry::Always,
        )
        .await
    }

    /// Reports success; call only after the artifact is uploaded.
    pub async fn succeed(&self, lease: Lease, artifact: Artifact) -> Result<Job, ClientError> {
        self.post(
            &format!("/api/v1/jobs/{}/succeed", lease.job),
            &SucceedRequest { attempt: lease.attempt, artifact },
            Retry::IfNotSent,
        )
        .await
    }

    /// Reports failure; `retryable` for infrastructure trouble, false for a failing build.
    pub async fn fail(&self, lease: Lease, reason: &str, retryable: bool) -> Result<Job, ClientError> {
        let body = FailRequest { attempt: lease.attempt, reason: reason.to_string(), retryable };
        self.post(&format!("/api/v1/jobs/{}/fail", lease.job), &body, Retry::IfNotSent).await
    }

    /// Makes `build` the desired version of `service`, rolled out by the build's policy.
    pub async fn deploy(
        &self,
        service: &ServiceName,
        build: JobId,
    ) -> Result<cascade_core::state::DesiredVersion, ClientError> {
        self.deploy_with(service, build, None).await
    }

    /// Makes `build` the desired version of `service`, with `rollout` overriding fields of the build's
    /// rollout policy.
    pub async fn deploy_with(
        &self,
        service: &ServiceName,
        build: JobId,
        rollout: Option<cascade_core::rollout::RolloutSection>,
    ) -> Result<cascade_core::state::DesiredVersion, ClientError> {
        let body = DeployRequest { service: service.clone(), build, rollout };
        self.post("/api/v1/deployments", &body, Retry::IfNotSent).await
    }

    /// Deploys the service's previous good build as a new generation.
    pub async fn rollback(&self, service: &ServiceName) -> Result<cascade_core::state::DesiredVersion, ClientError> {
        self.post(&format!("/api/v1/deployments/{service}/rollback"), &serde_json::json!({}), Retry::IfNotSent).await
    }

    /// Pauses (`pause`), resumes (`resume`), aborts (`abort`) or promotes (`promote`: opens the manual wave
    /// it waits at) the rollout of `generation`.
    pub async fn control_rollout(
        &self,
        service: &ServiceName,
        generation: u64,
        action: &str,
    ) -> Result<cascade_core::state::DesiredVersion, ClientError> {
        let body = cascade_core::api::RolloutControlRequest { generation };
        // Pause, resume and abort are idempotent; a second promote would open the wave after the next.
        let retry = if action == "promote" { Retry::IfNotSent } else { Retry::Always };
        self.post(&format!("/api/v1/deployments/{service}/{action}"), &body, retry).await
    }

    /// Records a region manager's counts for one cluster (idempotent: the latest report wins).
    pub async fn report_rollout(&self, report: &cascade_core::api::RolloutReport) -> Result<(), ClientError> {
        let _: serde_json::Value = self.post("/api/v1/rollouts/report", report, Retry::Always).await?;
        Ok(())
    }

    /// Asks for (or renews) a region manager's lease of its cluster. A 409 `ClientError::Api` means another
    /// manager holds it; its detail names the holder and the expiry.
    pub async fn acquire_manager_lease(
        &self,
        request: &cascade_core::api::ManagerLeaseRequest,
    ) -> Result<cascade_core::manager_lease::ManagerLease, ClientError> {
        // Idempotent for one holder: a resent request renews the same lease.
        self.post("/api/v1/managers/lease", request, Retry::Always).await
    }

    /// An artifact's record: digest, size, replication per region.
    pub async fn artifact(
        &self,
        digest: &cascade_core::Digest,
    ) -> Result<cascade_core::state::ArtifactRecord, ClientError> {
        self.get(&format!("/api/v1/artifacts/{digest}")).await
    }

    /// A service's desired version, history and rollout.
    pub async fn deployment(&self, service: &ServiceName) -> Result<DeploymentStatus, ClientError> {
        self.get(&format!("/api/v1/deployments/{service}")).await
    }

    /// Every desired version; with `after`, waits up to `wait` for a change later than that log index
    /// (pass the previous answer's `changed_at_index`).
    pub async fn desired(&self, after: Option<u64>, wait: Duration) -> Result<DesiredVersions, ClientError> {
        let path = match after {
            Some(i) => format!("/api/v1/desired?after={i}&wait={}", wait.as_secs()),
            None => "/api/v1/desired".to_string(),
        };
        self.get(&path).await
    }

    /// The cluster as the answering node (and its leader) sees it.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        self.get("/api/v1/cluster").await
    }

    /// Initializes the cluster on the first server.
    pub async fn cluster_init(&self) -> Result<serde_json::Value, ClientError> {
        self.post("/api/v1/cluster/init", &serde_json::json!({}), Retry::IfNotSent).await
    }

    /// Adds a learner or voter.
    pub async fn add_member(&self, request: &AddMemberRequest) -> Result<serde_json::Value, ClientError> {
        // Adding a member that exists with the same address is a no-op on the server, so resending is safe.
        self.post("/api/v1/cluster/members", request, Retry::Always).await
    }

    /// Removes a voter or learner.
    pub async fn remove_member(&self, id: u64) -> Result<serde_json::Value, ClientError> {
        let path = format!("/api/v1/cluster/members/{id}");
        // Resending after a lost answer finds the node gone and says so: the caller sees a clear error.
        let call = Call {
            method: Method::DELETE,
            path: &path,
            body: None,
            headers: &[],
            timeout: CALL_TIMEOUT,
            retry: Retry::IfNotSent,
        };
        self.call(call).await?.ok_or_else(|| no_body(&path))
    }

    /// One page of the audit log, newest first.
    pub async fn audit(&self, before: Option<u64>, limit: usize) -> Result<AuditPage, ClientError> {
        let mut path = format!("/api/v1/audit?limit={limit}");
        if let Some(b) = before {
            path.push_str(&format!("&before={b}"));
        }
        self.get(&path).await
    }

    /// Writes a consistent backup of the cluster's applied state (admin only) to `out`, as it arrives;
    /// returns the bytes written. The caller verifies the file (`cascade_raft_node::backup::decode`).
    pub async fn backup<W: tokio::io::AsyncWrite + Unpin>(&self, out: &mut W) -> Result<u64, ClientError> {
        use tokio::io::AsyncWriteExt;
        let path = "/api/v1/admin/backup";
        // A large state takes a while to copy; the read barrier alone may wait 30 s for a leader.
        let timeout = Duration::from_secs(600);
        let call = Call { method: Method::GET, path, body: None, headers: &[], timeout, retry: Retry::Always };
        let mut response = self.send(&call).await?;
        let status = response.status();
        let url = response.url().to_string();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(match serde_json::from_str::<ErrorBody>(&text) {
                Ok(body) => ClientError::Api { status, error: body.error, detail: body.detail },
                Err(_) => ClientError::Api { status, error: "http".into(), detail: text },
            });
        }
        let decode = |detail: String| ClientError::Decode { url: url.clone(), detail };
        let mut written = 0u64;
        // Bounded by the response's length and the call's timeout.
        while let Some(chunk) = response.chunk().await.map_err(|e| decode(e.to_string()))? {
            out.write_all(&chunk).await.map_err(|e| decode(format!("cannot write the backup: {e}")))?;
            written += chunk.len() as u64;
        }
        out.flush().await.map_err(|e| decode(format!("cannot write the backup: {e}")))?;
        Ok(written)
    }
}

fn to_json<B: Serialize>(body: &B) -> Result<serde_json::Value, ClientError> {
    serde_json::to_value(body).map_err(|e| ClientError::Config(format!("cannot encode request: {e}")))
}

fn no_body(path: &str) -> ClientError {
    ClientError::Decode { url: path.to_string(), detail: "empty answer where a body was expected".into() }
}

async fn error_text(response: reqwest::Response) -> String {
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => format!("{status}: {}", body.detail),
        Err(_) => format!("{status}: {text}"),
    }
}
