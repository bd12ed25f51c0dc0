//! The manager's state transitions: one event at a time, then a scheduling round.

use super::*;
use cascade_core::deploy::{bounded_host_reason, HostFailure, HostFailures, MAX_REPORTED_FAILURES};
use cascade_core::rollout::{admitted, wave_rank};

/// Whether a deploy of `service` with `spec` targets host `id`: it declared the service and carries every
/// label of the placement (see [`HostDeclaration::runs`]).
fn targeted(hosts: &BTreeMap<u32, HostEntry>, id: u32, service: &ServiceName, spec: &DeploySpec) -> bool {
    fault_injection::ignores_targeting() || hosts.get(&id).is_some_and(|h| h.declaration.runs(service, spec))
}

/// The hosts of this cluster the rollout's open waves admit: every targeted host the manager knows (online
/// or not) in [`wave_rank`] order, the first [`admitted`] of them. The order depends only on host names and
/// the generation, so a standby that takes over admits the same hosts.
fn admitted_hosts(
    hosts: &BTreeMap<u32, HostEntry>,
    service: &ServiceName,
    rollout: &Rollout,
    region: &cascade_core::Region,
    cluster: &cascade_core::ClusterName,
) -> BTreeSet<u32> {
    let mut ranked: Vec<(u64, &str, u32)> = hosts
        .iter()
        .filter(|(id, _)| targeted(hosts, **id, service, &rollout.spec))
        .map(|(id, h)| (wave_rank(&h.name, rollout.generation), h.name.as_str(), *id))
        .collect();
    ranked.sort_unstable();
    let count = admitted(&rollout.policy, &rollout.progress, region, cluster, ranked.len() as u64);
    let count = if fault_injection::ignores_waves() { ranked.len() } else { count as usize };
    ranked.into_iter().take(count).map(|(_, _, id)| id).collect()
}

impl<C: ControlPlane> Manager<C> {
    pub(super) fn handle(&mut self, event: Event) {
        match event {
            Event::Desired(desired) => self.desired(desired),
            Event::Ready { service, generation, manifest } => self.ready(service, generation, manifest),
            Event::HostJoined { name, addr, id, .. } if !self.is_active() => {
                tracing::info!(host = %name, %addr, "host refused: standing by");
                let _ = id.send(Err(self.refusal()));
            }
            Event::HostJoined { name, addr, declaration, tx, id } => {
                let host_id = match self.ids.get(&name) {
                    Some(id) => *id,
                    None => {
                        let id = u32::try_from(self.ids.len() + 1).expect("fewer than 2^32 hosts");
                        self.ids.insert(name.clone(), id);
                        id
                    }
                };
                self.host_left(host_id);
                self.next_session += 1;
                let session = self.next_session;
                let _ = tx.send(ManagerMessage::Welcome { host_id });
                let _ = id.send(Ok((host_id, session)));
                tracing::info!(host = %name, host_id, %addr, services = ?declaration.services, labels = ?declaration.labels, "host registered");
                self.hosts.insert(host_id, HostEntry { name, addr, declaration, tx: Some(tx), session });
                self.metrics.hosts_connected(self.live_hosts().count());
                let hosts = &self.hosts;
                let prepares: Vec<ManagerMessage> = self
                    .rollouts
                    .iter()
                    .filter(|(service, rollout)| targeted(hosts, host_id, service, &rollout.spec))
                    .filter_map(|(service, rollout)| match &rollout.phase {
                        Phase::Running { manifest, download, .. }
                            if rollout.control != RolloutControl::Aborted && rollout.progress.switching() =>
                        {
                            Some(ManagerMessage::Prepare {
                                service: service.clone(),
                                generation: rollout.generation,
                                download: *download,
                                manifest: manifest.clone(),
                            })
                        }
                        _ => None,
                    })
                    .collect();
                for prepare in prepares {
                    self.send(host_id, prepare);
                }
            }
            Event::HostGone { id, session } => {
                if self.hosts.get(&id).is_some_and(|h| h.session == session) {
                    self.host_left(id);
                    if let Some(host) = self.hosts.get_mut(&id) {
                        host.tx = None;
                    }
                    self.metrics.hosts_connected(self.live_hosts().count());
                }
            }
            Event::Host { id, message } => self.host_message(id, message),
            Event::Tick => self.report(),
            Event::Lease(answer) => self.lease_answer(answer),
        }
    }

    pub(super) fn send(&self, host: u32, message: ManagerMessage) {
        if let Some(tx) = self.hosts.get(&host).and_then(|h| h.tx.as_ref()) {
            let _ = tx.send(message);
        }
    }

    pub(super) fn live_hosts(&self) -> impl Iterator<Item = u32> + '_ {
        self.hosts.iter().filter(|(_, h)| h.tx.is_some()).map(|(id, _)| *id)
    }

    pub(super) fn host_left(&mut self, id: u32) {
        for rollout in self.rollouts.values_mut() {
            if rollout.joined.remove(&id) {
                if let Phase::Running { scheduler, .. } = &mut rollout.phase {
                    let _ = scheduler.host_left(HostId(id));
                }
            }
            rollout.activating.remove(&id);
        }
    }

    fn desired(&mut self, desired: DesiredVersions) {
        for (service, version) in desired.services {
            let current = self.rollouts.get(&service).map(|r| r.generation);
            if current == Some(version.generation) {
                if let Some(rollout) = self.rollouts.get_mut(&service) {
                    if rollout.control != version.control {
                        tracing::info!(%service, generation = version.generation, control = ?version.control, "rollout control");
                    }
                    if rollout.progress.opened.len() != version.progress.opened.len() {
                        tracing::info!(%service, generation = version.generation, waves_open = version.progress.opened.len(), "wave opened");
                    }
                    if let Some(end) = version.progress.end.as_ref().filter(|_| rollout.progress.end.is_none()) {
                        tracing::info!(%service, generation = version.generation, state = end.state.name(), "rollout ended: {}", end.reason);
                    }
                    rollout.control = version.control;
                    rollout.progress = version.progress;
                }
                continue;
            }
            if current.is_some_and(|g| g > version.generation) {
                continue;
            }
            tracing::info!(%service, generation = version.generation, digest = %version.artifact.digest, "new desired version: waiting for replication");
            self.rollouts.insert(
                service.clone(),
                Rollout {
                    generation: version.generation,
                    digest: version.artifact.digest.clone(),
                    spec: (*version.artifact.deploy).clone(),
                    control: version.control,
                    policy: version.policy,
                    progress: version.progress,
                    phase: Phase::WaitingForReplication,
                    joined: BTreeSet::new(),
                    activated: BTreeSet::new(),
                    activating: BTreeSet::new(),
                    failed: BTreeMap::new(),
                },
            );
            tokio::spawn(wait_for_replication(
                self.client.clone(),
                self.store.clone(),
                self.config.region.clone(),
                version.artifact.digest.clone(),
                service,
                version.generation,
                self.events.clone(),
            ));
        }
    }

    fn ready(&mut self, service: ServiceName, generation: u64, manifest: Manifest) {
        let Some(rollout) = self.rollouts.get_mut(&service) else { return };
        if rollout.generation != generation || manifest.digest != rollout.digest {
            return;
        }
        let chunks = manifest.chunk_count();
        let scheduler = match fresh_scheduler(&manifest, generation) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%service, "cannot schedule this artifact: {e}");
                return;
            }
        };
        self.manifests.write().expect("manifests lock").insert(manifest.digest.clone(), manifest.clone());
        let next = DownloadId::try_from(self.downloads.len()).expect("fewer than 2^32 artifacts");
        let download = *self.downloads.entry((service.clone(), manifest.digest.clone())).or_insert(next);
        tracing::info!(%service, generation, chunks, download, "replicated here: rollout starts");
        rollout.phase = Phase::Running { manifest: manifest.clone(), scheduler, download };
        let spec = rollout.spec.clone();
        // Only the hosts that run the service: the others never hear of it, so its swarm is made of them.
        let hosts: Vec<u32> = self.live_hosts().filter(|id| targeted(&self.hosts, *id, &service, &spec)).collect();
        if hosts.is_empty() {
            tracing::warn!(%service, generation, placement = ?spec.placement, "no live host of this cluster runs the service");
        }
        for host in hosts {
            self.send(
                host,
                ManagerMessage::Prepare { service: service.clone(), generation, download, manifest: manifest.clone() },
            );
        }
    }

    /// The running rollout of `download` (the first, should two services deploy the same artifact).
    fn rollout_of(&mut self, download: DownloadId) -> Option<&mut Rollout> {
        self.rollouts.values_mut().find(|r| matches!(r.phase, Phase::Running { download: d, .. } if d == download))
    }

    fn host_message(&mut self, id: u32, message: HostMessage) {
        match message {
            HostMessage::Have { download, chunks } => {
                let Some(rollout) = self.rollout_of(download) else { return };
                let Phase::Running { scheduler, .. } = &mut rollout.phase else { return };
                let held: Vec<ChunkId> = chunks.into_iter().map(ChunkId).collect();
                if scheduler.host_joined(HostId(id), &held).is_ok() {
                    rollout.joined.insert(id);
                }
            }
            HostMessage::Verified { download, chunk } => {
                tracing::trace!(host = id, chunk, "verified");
                let Some(rollout) = self.rollout_of(download) else { return };
                if let Phase::Running { scheduler, .. } = &mut rollout.phase {
                    let _ = scheduler.chunk_verified(HostId(id), ChunkId(chunk));
                }
            }
            HostMessage::Failed { download, chunk, from, reason } => {
                // A receiver that cannot reach `from` does not prove it died: while `from` keeps its control
                // session with this manager (say it restarted, and the receiver's cached connection is to
                // the old process), it is a stall. Reporting it dead would drop a live host from the
                // scheduler for good.
                let sender_connected = self.hosts.get(&from).is_some_and(|h| h.tx.is_some());
                let Some(rollout) = self.rollout_of(download) else { return };
                if let Phase::Running { scheduler, .. } = &mut rollout.phase {
                    let reason = match reason {
                        FetchFailure::Dead if sender_connected => FailReason::Stalled,
                        FetchFailure::Dead => FailReason::Dead,
                        FetchFailure::Stalled => FailReason::Stalled,
                        FetchFailure::BadChunk => FailReason::BadChunk,
                    };
                    let _ = scheduler.transfer_failed(HostId(from), HostId(id), ChunkId(chunk), reason);
                }
            }
            HostMessage::Activated { service, generation } => {
                if let Some(rollout) = self.rollouts.get_mut(&service).filter(|r| r.generation == generation) {
                    rollout.activating.remove(&id);
                    rollout.failed.remove(&id);
                    rollout.activated.insert(id);
                }
            }
            HostMessage::ActivationFailed { service, generation, reason } => {
                let name = self.hosts.get(&id).map(|h| h.name.clone()).unwrap_or_default();
                tracing::warn!(host = %name, %service, generation, "activation failed: {reason}");
                if let Some(rollout) = self.rollouts.get_mut(&service).filter(|r| r.generation == generation) {
                    rollout.activating.remove(&id);
                    rollout.failed.insert(id, bounded_host_reason(&reason));
                }
            }
            HostMessage::DownloadFailed { download, reason } => {
                let name = self.hosts.get(&id).map(|h| h.name.clone()).unwrap_or_default();
                tracing::warn!(host = %name, download, "host cannot receive the download: {reason}");
                let Some(rollout) = self.rollout_of(download) else { return };
                if let Phase::Running { scheduler, .. } = &mut rollout.phase {
                    if rollout.joined.remove(&id) {
                        let _ = scheduler.host_left(HostId(id));
                    }
                }
                rollout.failed.insert(id, bounded_host_reason(&reason));
            }
        }
    }

    /// Hands out transfers and activations for every running rollout.
    pub(super) fn schedule(&mut self) {
        if !self.is_active() {
            return;
        }
        let mut messages: Vec<(u32, ManagerMessage)> = Vec::new();
        let mut reports = Vec::new();
        let (region, cluster) = (&self.config.region, &self.config.cluster);
        let admitted: BTreeMap<ServiceName, BTreeSet<u32>> = self
            .rollouts
            .iter()
            .map(|(service, rollout)| (service.clone(), admitted_hosts(&self.hosts, service, rollout, region, cluster)))
            .collect();
        for (service, rollout) in &mut self.rollouts {
            if rollout.control != RolloutControl::Running || !rollout.progress.switching() {
                continue;
            }
            let admitted = &admitted[service];
            // Most hosts switching at once (`max_unavailable`), counting those already switching.
            let limit = match rollout.policy.max_unavailable {
                0 => usize::MAX,
                n => usize::try_from(n).unwrap_or(usize::MAX),
            };
            let mut switching = rollout.activating.len();
            let Phase::Running { scheduler, manifest, download } = &mut rollout.phase else { continue };
            let spec = &rollout.spec;
            let mut transfers: Vec<Transfer> = Vec::new();
            scheduler.next_assignments(&mut transfers);
            for transfer in transfers {
                let addr = if transfer.from.is_seed() {
                    Some(self.seed_addr)
                } else {
                    self.hosts.get(&transfer.from.0).map(|h| h.addr)
                };
                let Some(addr) = addr else {
                    let _ = scheduler.transfer_failed(transfer.from, transfer.to, transfer.chunk, FailReason::Dead);
                    continue;
                };
                // Per transfer, so off unless asked for: with the `verified` lines it times every hop.
                tracing::trace!(from = transfer.from.0, to = transfer.to.0, chunk = transfer.chunk.0, "assigned");
                messages.push((
                    transfer.to.0,
                    ManagerMessage::Fetch { download: *download, chunk: transfer.chunk.0, from: transfer.from.0, addr },
                ));
            }
            reports.extend(scheduler.drain_reports());
            // The bytes go to every targeted host at once; only the hosts the open waves admit switch.
            for host in rollout.joined.iter().copied() {
                let done = rollout.activated.contains(&host)
                    || rollout.activating.contains(&host)
                    || rollout.failed.contains_key(&host);
                if !done && admitted.contains(&host) && switching < limit && scheduler.is_complete(HostId(host)) {
                    switching += 1;
                    rollout.activating.insert(host);
                    messages.push((
                        host,
                        ManagerMessage::Activate {
                            service: service.clone(),
                            generation: rollout.generation,
                            digest: manifest.digest.clone(),
                            spec: Box::new(spec.clone()),
                        },
                    ));
                }
            }
        }
        for report in reports {
            let name = |id: HostId| self.hosts.get(&id.0).map_or_else(|| format!("host {}", id.0), |h| h.name.clone());
            match report {
                Report::BadChunk { from, to, chunk } => {
                    let sender = name(from);
                    tracing::warn!(sender = %sender, receiver = %name(to), chunk = chunk.0, "bad chunk reported");
                    if !self.status.bad_senders.contains(&sender) {
                        self.status.bad_senders.push(sender);
                    }
                    self.metrics.bad_chunk(self.status.bad_senders.len());
                }
                Report::Excluded { host, reason } => {
                    tracing::warn!(host = %name(host), ?reason, "host no longer used as a sender");
                }
            }
        }
        for (host, message) in messages {
            self.send(host, message);
        }
    }

    /// Counts per rollout, reported through the state machine when they changed (one write per service per
    /// interval, whatever the number of hosts), and written to the status file.
    fn report(&mut self) {
        let acting = self.is_active();
        let live: BTreeSet<u32> = self.live_hosts().collect();
        let (region, cluster) = (&self.config.region, &self.config.cluster);
        for (service, rollout) in &self.rollouts {
            let admitted = admitted_hosts(&self.hosts, service, rollout, region, cluster);
            // Counts are of the hosts the deploy targets; the cluster's other hosts are only counted as such.
            let targeted: BTreeSet<u32> =
                live.iter().copied().filter(|id| targeted(&self.hosts, *id, service, &rollout.spec)).collect();
            let total = targeted.len() as u64;
            let offline = self
                .hosts
                .keys()
                .filter(|id| !live.contains(id) && self::targeted(&self.hosts, **id, service, &rollout.spec))
                .count() as u64;
            let name = |id: &u32| self.hosts.get(id).map_or_else(|| format!("host {id}"), |h| h.name.clone());
            // Admitted hosts without a verdict yet, by name: what a rollout past its deadline waits for.
            let mut pending: Vec<String> = admitted
                .iter()
                .filter(|id| !rollout.activated.contains(id) && !rollout.failed.contains_key(id))
                .map(|id| if live.contains(id) { name(id) } else { format!("{} (offline)", name(id)) })
                .collect();
            pending.sort();
            pending.truncate(MAX_REPORTED_FAILURES);
            let admitted_offline = admitted
                .iter()
                .filter(|id| !live.contains(id) && !rollout.activated.contains(id) && !rollout.failed.contains_key(id))
                .count() as u64;
            let active = rollout.activated.intersection(&targeted).count() as u64;
            let failed_hosts: Vec<HostFailure> = rollout
                .failed
                .iter()
                .filter(|(id, _)| targeted.contains(id))
                .map(|(id, reason)| HostFailure {
                    host: self.hosts.get(id).map_or_else(|| format!("host {id}"), |h| h.name.clone()),
                    reason: reason.clone(),
                })
                .collect();
            let failed = failed_hosts.len() as u64;
            let activating = rollout
                .activating
                .iter()
                .filter(|h| targeted.contains(h) && !rollout.activated.contains(h) && !rollout.failed.contains_key(h))
                .count() as u64;
            let (verified, fetching) = match &rollout.phase {
                Phase::Running { scheduler, .. } => {
                    let complete = rollout
                        .joined
                        .iter()
                        .filter(|h| {
                            targeted.contains(h)
                                && !rollout.activated.contains(h)
                                && !rollout.failed.contains_key(h)
                                && !rollout.activating.contains(h)
                        })
                        .filter(|h| scheduler.is_complete(HostId(**h)))
                        .count() as u64;
                    (complete, total.saturating_sub(active + failed + complete + activating))
                }
                Phase::WaitingForReplication => (0, 0),
            };
            let counts = RolloutCounts {
                total,
                fetching,
                verified,
                activating,
                active,
                failed,
                offline,
                admitted_offline,
                cluster_hosts: live.len() as u64,
            };
            let failures = HostFailures::bounded(failed_hosts);
            self.status.rollouts.insert(service.to_string(), (rollout.generation, counts));
            self.metrics.rollout(service.as_str(), rollout.generation, &counts);
            self.status.failures.insert(service.to_string(), failures.clone());
            let reported = (rollout.generation, counts, failures, pending);
            if !acting || self.last_reported.get(service) == Some(&reported) {
                continue;
            }
            self.status.reports_sent += 1;
            let failures = reported.2.clone();
            let pending = reported.3.clone();
            self.last_reported.insert(service.clone(), reported);
            let report = RolloutReport {
                service: service.clone(),
                generation: rollout.generation,
                region: self.config.region.clone(),
                cluster: self.config.cluster.clone(),
                counts,
                failures,
                holder: Some(self.holder.clone()),
                pending,
            };
            let client = self.client.clone();
            tokio::spawn(async move {
                if let Err(e) = client.report_rollout(&report).await {
                    tracing::warn!(service = %report.service, "rollout report failed: {e}");
                }
            });
        }
        self.status.seed_chunks_served = self.metrics.seed_chunks.get();
        if let Some(path) = &self.config.status_file {
            if let Ok(json) = serde_json::to_vec_pretty(&self.status) {
                let staged = path.with_extension("tmp");
                if std::fs::write(&staged, json).is_ok() {
                    let _ = std::fs::rename(staged, path);
                }
            }
        }
    }
}
