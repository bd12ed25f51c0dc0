//! The software of a simulated Raft host: the production node (`Node::start_with`) on the host's simulated
//! disk, clock and network, its stale-job monitor, and its server. A crash drops all of it; the restart runs
//! this again on what the disk kept.

use super::disk::SimLogStore;
use super::net::{self, SimTransport};
use super::world::{addr, Shared};
use cascade_raft_node::config::{MemberRole, MonitorConfig, PeerConfig, RaftTuning};
use cascade_raft_node::node::NodeError;
use cascade_raft_node::store::StateMachineStore;
use cascade_raft_node::transport::{Endpoint, Transport};
use cascade_raft_node::types::NodeInfo;
use cascade_raft_node::{monitor, Node, NodeConfig};
use std::sync::Arc;
use std::time::Duration;

/// Raft timing in the simulation: production's shape, scaled down so a run covers many elections.
pub fn raft_tuning() -> RaftTuning {
    RaftTuning {
        heartbeat_ms: 100,
        election_timeout_min_ms: 500,
        election_timeout_max_ms: 1000,
        // Small, so runs exercise snapshots, log purging and snapshot installation on lagging learners.
        snapshot_every: 24,
        keep_after_snapshot: 4,
    }
}

/// The monitor requeues a job after 3 s of silence; workers heartbeat every 500 ms.
pub fn monitor_config() -> MonitorConfig {
    MonitorConfig { interval_secs: 1, stale_after_secs: 3 }
}

const SECRET: &str = "simulation-cluster-secret";

fn config(shared: &Shared, index: usize) -> NodeConfig {
    let world = shared.borrow();
    let slot = &world.nodes[index];
    let peers = world
        .nodes
        .iter()
        .filter(|n| n.voter && n.id != slot.id)
        .map(|n| PeerConfig { id: n.id, addr: addr(&n.name), region: "home".into() })
        .collect();
    NodeConfig {
        id: slot.id,
        listen: std::net::SocketAddr::from(([0, 0, 0, 0], net::PORT)),
        advertise: Some(addr(&slot.name)),
        data_dir: std::path::PathBuf::from("/nonexistent"),
        region: if slot.voter { "home".into() } else { format!("region-{}", slot.name) },
        role: if slot.voter { MemberRole::Voter } else { MemberRole::Learner },
        peers,
        cluster_secret: SECRET.into(),
        tokens: Vec::new(),
        raft: raft_tuning(),
        monitor: monitor_config(),
        stores: None,
        replication: Default::default(),
    }
}

/// Runs Raft member `index` until its host crashes.
pub async fn run_node(shared: Shared, index: usize) -> turmoil::Result {
    let config = config(&shared, index);
    let (name, disk, snapshots, clock, first_boot, voter) = {
        let mut world = shared.borrow_mut();
        let slot = &mut world.nodes[index];
        slot.incarnation += 1;
        let first = slot.incarnation == 1;
        (slot.name.clone(), slot.disk.clone(), slot.snapshots.clone(), slot.clock.clone(), first, slot.voter)
    };
    let sm = StateMachineStore::open_with(snapshots).await?;
    let node = Node::start_with(config, SimLogStore::new(disk), sm, Arc::new(SimTransport), Arc::new(clock)).await?;
    {
        let mut world = shared.borrow_mut();
        let incarnation = world.nodes[index].incarnation;
        world.nodes[index].node = Some(node.clone());
        let applied = node.applied_index();
        world.event(&name, format!("node started (incarnation {incarnation}, applied {applied})"));
    }
    // The first voter creates the cluster once, as `cascade cluster init` would.
    if index == 0 && first_boot {
        if let Err(e) = node.initialize().await {
            shared.borrow_mut().event(&name, format!("initialize refused: {e}"));
        }
    }
    if !voter {
        let voters: Vec<String> = shared.borrow().nodes.iter().filter(|n| n.voter).map(|n| addr(&n.name)).collect();
        tokio::task::spawn_local(join_as_learner(shared.clone(), node.clone(), name.clone(), voters));
    }
    tokio::task::spawn_local(monitor::run(node.clone()));
    tokio::task::spawn_local(cascade_raft_node::rollout_controller::run(node.clone()));
    // Only runs with region agents have blob stores to replicate (and no task is spawned without them, so
    // runs without agents schedule exactly as they did).
    if voter && shared.borrow().blobs.is_some() {
        tokio::task::spawn_local(super::agents::replicate(shared.clone(), node.clone(), name.clone()));
    }
    net::serve(node).await?;
    Ok(())
}

/// Asks the voters, in turn, to add this node as a learner, until one (the leader) has done it.
async fn join_as_learner(shared: Shared, node: Arc<Node>, name: String, voters: Vec<String>) {
    let info = NodeInfo { addr: addr(&name), region: node.config.region.clone() };
    let Ok(body) = bincode::serialize(&(node.id, info, false)) else {
        return;
    };
    for _round in 0..1_000 {
        for voter in &voters {
            let answer = SimTransport.call(voter, Endpoint::AddMember, body.clone(), Duration::from_secs(3)).await;
            let Ok(bytes) = answer else {
                continue;
            };
            if let Ok(Ok(())) = bincode::deserialize::<Result<(), NodeError>>(&bytes) {
                shared.borrow_mut().event(&name, format!("joined as learner through {voter}"));
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
