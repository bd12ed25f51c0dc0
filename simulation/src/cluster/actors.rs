//! The simulated users of the cluster: build workers (claim, heartbeat, succeed or fail after a seeded
//! duration) and a client that submits builds and deploys them. They reach the cluster the way production
//! clients do, through any node's write path, failing over between nodes, and they record every answer
//! that reached them so the invariants can hold the cluster to it.

use super::net;
use super::world::{AckedDeploy, AckedSubmit, Shared};
use cascade_core::{
    Artifact, Command, CommandError, CommandOutput, CommandResult, CommitSha, Digest, JobId, Lease, Principal, RepoUrl,
    ServiceName, WorkerId,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tokio::time::{sleep, Instant};

/// How long an actor waits for one answer before trying another node.
const CALL_TIMEOUT: Duration = Duration::from_secs(4);

/// Workers heartbeat this often (the monitor gives up on a job after 3 s of silence).
const HEARTBEAT: Duration = Duration::from_millis(500);

/// Upper bound on any actor's loop, whatever time does.
const MAX_ROUNDS: usize = 5_000;

/// Writes through one node at a time, moving to the next on any error.
struct Api {
    nodes: Vec<String>,
    next: usize,
}

impl Api {
    fn new(nodes: Vec<String>, start: usize) -> Self {
        Self { nodes, next: start }
    }

    /// The command's result, or `None` when this node could not give one (the caller retries or not).
    async fn write(&mut self, actor: &Principal, command: Command) -> Option<CommandResult> {
        let node = self.nodes.get(self.next % self.nodes.len().max(1))?.clone();
        let answer = match command {
            Command::Claim { worker } => net::claim(&node, actor.clone(), worker, CALL_TIMEOUT).await,
            command => net::write(&node, actor.clone(), command, CALL_TIMEOUT).await,
        };
        match answer {
            Ok(Ok(result)) => Some(result),
            Ok(Err(_)) | Err(_) => {
                self.next += 1;
                None
            }
        }
    }
}

/// A value fixed by the run's seed for this worker, without drawing from its generator.
fn seed_of(rng: &StdRng) -> u64 {
    let mut copy = rng.clone();
    copy.gen()
}

fn hex(rng: &mut StdRng, len: usize) -> String {
    (0..len).map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap_or('0')).collect()
}

/// Runs worker `index` until its host crashes or its rounds run out.
pub async fn run_worker(shared: Shared, index: usize, seed: u64) -> turmoil::Result {
    let (name, incarnation, nodes) = {
        let mut world = shared.borrow_mut();
        let nodes = world.node_addrs();
        let slot = &mut world.workers[index];
        slot.incarnation += 1;
        (slot.name.clone(), slot.incarnation, nodes)
    };
    let mut rng = StdRng::seed_from_u64(seed ^ ((index as u64 + 1) << 40) ^ (u64::from(incarnation) << 20));
    let worker = WorkerId::parse(name.clone())?;
    let actor = Principal::parse(name.clone())?;
    let start = rng.gen_range(0..nodes.len().max(1));
    let mut api = Api::new(nodes, start);
    shared.borrow_mut().event(&name, format!("worker started (incarnation {incarnation})"));
    for _ in 0..MAX_ROUNDS {
        match api.write(&actor, Command::Claim { worker: worker.clone() }).await {
            Some(Ok(CommandOutput::Claimed(Some(claimed)))) => {
                build(&shared, index, &name, &mut api, &actor, &mut rng, claimed.lease).await;
            }
            _ => sleep(Duration::from_millis(rng.gen_range(200..600))).await,
        }
    }
    Ok(())
}

/// Builds one claimed job: heartbeats while the simulated build runs, then reports its outcome.
async fn build(
    shared: &Shared,
    index: usize,
    name: &str,
    api: &mut Api,
    actor: &Principal,
    rng: &mut StdRng,
    lease: Lease,
) {
    let duration = Duration::from_millis(rng.gen_range(1_000..6_000));
    shared.borrow_mut().event(name, format!("claimed build {} attempt {} ({duration:?})", lease.job, lease.attempt));
    let started = Instant::now();
    for _ in 0..MAX_ROUNDS {
        if started.elapsed() >= duration {
            break;
        }
        sleep(HEARTBEAT).await;
        let stall = shared.borrow_mut().workers[index].stall.take();
        if let Some(stall) = stall {
            shared
                .borrow_mut()
                .event(name, format!("stalls {stall:?} holding build {} attempt {}", lease.job, lease.attempt));
            sleep(stall).await;
            shared
                .borrow_mut()
                .event(name, format!("wakes up, carries on with build {} attempt {}", lease.job, lease.attempt));
        }
        match api.write(actor, Command::Heartbeat { lease }).await {
            Some(Ok(CommandOutput::Heartbeat(ack))) if ack.cancelled => {
                shared.borrow_mut().event(name, format!("build {} cancelled, stops", lease.job));
                return;
            }
            Some(Ok(_)) | None => {}
            Some(Err(e)) => {
                shared.borrow_mut().event(name, format!("heartbeat for build {} refused: {}", lease.job, e.kind()));
                return;
            }
        }
    }
    let digest = Digest::parse(hex(rng, 64)).ok();
    let roll = rng.gen_range(0..100);
    // With region agents a success uploads a real artifact first (from a generator of its own, so the
    // worker's draws stay those of runs without agents).
    let store = shared.borrow().blobs.as_ref().map(|b| b.main.clone());
    let artifact = match (roll, store, digest) {
        (0..=79, Some(store), _) => {
            let content = seed_of(rng) ^ (lease.job.0 << 8) ^ u64::from(lease.attempt);
            match super::agents::upload_artifact(&store, 0, content).await {
                Ok(artifact) => Some(artifact),
                Err(e) => {
                    shared.borrow_mut().event(name, format!("cannot upload the artifact: {e}"));
                    None
                }
            }
        }
        (0..=79, None, Some(digest)) => {
            let size = rng.gen_range(1..10_000_000_000);
            Some(Artifact {
                digest,
                size,
                manifest_key: format!("artifacts/{}/{}/manifest", lease.job, lease.attempt),
                deploy: Default::default(),
            })
        }
        _ => None,
    };
    let command = match (roll, artifact) {
        (0..=79, Some(artifact)) => Command::Succeed { lease, artifact },
        (0..=94, _) => Command::Fail { lease, reason: "simulated infrastructure failure".into(), retryable: true },
        _ => Command::Fail { lease, reason: "simulated compile error".into(), retryable: false },
    };
    let kind = command.kind();
    for _ in 0..20 {
        match api.write(actor, command.clone()).await {
            Some(Ok(_)) => {
                shared
                    .borrow_mut()
                    .event(name, format!("{kind} build {} attempt {} accepted", lease.job, lease.attempt));
                return;
            }
            Some(Err(e)) => {
                shared
                    .borrow_mut()
                    .event(name, format!("{kind} build {} attempt {} refused: {}", lease.job, lease.attempt, e.kind()));
                return;
            }
            None => sleep(Duration::from_millis(300)).await,
        }
    }
}

/// Runs the client: submits the scenario's builds (retrying each with its idempotency key until it is
/// acknowledged), then deploys acknowledged builds and now and then cancels one. With `waves` each deploy
/// asks for the waved policy of [`super::scenario::rollout`]; without, for the build's own (one wave of
/// every host), as before the region agents, so seeds without them replay as they did.
pub async fn run_client(
    shared: Shared,
    seed: u64,
    builds: usize,
    deploy_until: Option<Duration>,
    waves: bool,
) -> turmoil::Result {
    let nodes = shared.borrow().node_addrs();
    let mut rng = StdRng::seed_from_u64(seed ^ 0xc1_1e47);
    let actor = Principal::parse("client")?;
    let repo = RepoUrl::parse("https://git.example.com/cascade/app.git")?;
    let [first, second] = super::scenario::SERVICES;
    let services = [ServiceName::parse(first)?, ServiceName::parse(second)?];
    let start = rng.gen_range(0..nodes.len().max(1));
    let mut api = Api::new(nodes, start);
    let mut acked: Vec<(JobId, ServiceName)> = Vec::new();
    for i in 0..builds {
        sleep(Duration::from_millis(rng.gen_range(300..2_500))).await;
        let key = format!("sim-{seed}-{i}");
        let commit_text = hex(&mut rng, 40);
        let commit = CommitSha::parse(commit_text.clone())?;
        let service = services[i % services.len()].clone();
        let command = Command::SubmitBuild {
            repo: repo.clone(),
            commit,
            service: service.clone(),
            idempotency_key: Some(key.clone()),
        };
        for _ in 0..60 {
            match api.write(&actor, command.clone()).await {
                Some(Ok(CommandOutput::Job(job))) => {
                    let mut world = shared.borrow_mut();
                    world.event("c1", format!("submit {key} acknowledged as build {}", job.id));
                    world.acked_submits.push(AckedSubmit {
                        job: job.id,
                        key: key.clone(),
                        commit: commit_text.clone(),
                    });
                    acked.push((job.id, service.clone()));
                    break;
                }
                Some(other) => {
                    shared.borrow_mut().event("c1", format!("submit {key} answered {other:?}"));
                    break;
                }
                None => sleep(Duration::from_millis(300)).await,
            }
        }
    }
    shared.borrow_mut().client_done = true;
    shared.borrow_mut().event("c1", "all submissions made");
    for round in 0..MAX_ROUNDS.min(200) {
        sleep(Duration::from_millis(1_500)).await;
        if deploy_until.is_some_and(|until| turmoil::sim_elapsed().unwrap_or_default() >= until) {
            break;
        }
        let Some((job, service)) = acked.get(round % acked.len().max(1)).cloned() else {
            break;
        };
        let command = if rng.gen_bool(0.05) {
            Command::Cancel { job }
        } else {
            let rollout = waves.then(|| Box::new(super::scenario::rollout(round)));
            Command::SetDesiredVersion { service: service.clone(), build: job, rollout }
        };
        match api.write(&actor, command).await {
            Some(Ok(CommandOutput::Desired(d))) => {
                let mut world = shared.borrow_mut();
                world.event(
                    "c1",
                    format!("deploy of build {job} acknowledged: {} generation {}", d.service, d.generation),
                );
                world.acked_deploys.push(AckedDeploy { service: d.service, generation: d.generation });
            }
            Some(Ok(CommandOutput::Job(j))) => {
                shared.borrow_mut().event("c1", format!("cancel of build {job}: {}", j.status.name()));
            }
            Some(Err(CommandError::NotDeployable { .. })) | Some(Ok(_)) | Some(Err(_)) | None => {}
        }
    }
    shared.borrow_mut().deploys_done = true;
    shared.borrow_mut().event("c1", "last deploy made");
    Ok(())
}
