//! Failure detection of neighbours, SWIM-style [Das, Gupta, Motivala 2002] with Lifeguard's
//! local health awareness [Dadgar et al. 2017]: probe, indirect probe through other
//! neighbours, suspicion, refutation.
//!
//! Departure: SWIM monitors the whole group and gossips suspicions; Starling monitors only
//! a node's neighbours (the union of its active views), so suspicion stays local and is
//! refuted directly by the suspect.

use std::time::Duration;

use super::time::Time;
use crate::identity::PeerId;
use crate::wire::{PeerInfo, SwimMsg};

/// Failure-detector parameters (memberlist's LAN profile, design.md §3).
#[derive(Clone, Debug)]
pub struct Config {
    /// How often each watched peer is probed if nothing was heard from it (1 s).
    pub probe_interval: Duration,
    /// How long to wait for an ack before asking others to probe (500 ms).
    pub probe_timeout: Duration,
    /// How many other neighbours probe indirectly (3).
    pub indirect_probes: usize,
    /// How long a suspect has to refute before it is declared dead (500 ms, scaled by
    /// local health).
    pub suspicion_timeout: Duration,
    /// Lifeguard's local health multiplier cap (8).
    pub max_local_health: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_probes: 3,
            suspicion_timeout: Duration::from_millis(500),
            max_local_health: 8,
        }
    }
}

/// What the failure detector asks of its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutEvent {
    /// Send a message to a peer.
    Send(PeerId, SwimMsg),
    /// A watched peer is confirmed dead.
    PeerDead(PeerId),
}

/// The failure detector's state.
#[derive(Debug)]
pub struct State {
    _todo: (),
}

impl State {
    /// A detector watching nobody yet.
    pub fn new(config: Config, seed: u64) -> Self {
        let _ = (config, seed);
        todo!()
    }

    /// Starts watching `peer` (it became a neighbour). Watching a watched peer is a no-op.
    pub fn watch(&mut self, peer: PeerInfo, now: Time) {
        let _ = (peer, now);
        todo!()
    }

    /// Stops watching `peer` and forgets any probe or suspicion of it.
    pub fn unwatch(&mut self, peer: &PeerId) {
        let _ = peer;
        todo!()
    }

    /// Any message from `peer` is evidence that it is alive (clears suspicion).
    pub fn heard_from(&mut self, peer: &PeerId, now: Time) {
        let _ = (peer, now);
        todo!()
    }

    /// Handles a failure-detector message from `from`.
    pub fn handle_message(
        &mut self,
        from: PeerId,
        msg: SwimMsg,
        now: Time,
        out: &mut Vec<OutEvent>,
    ) {
        let _ = (from, msg, now, out);
        todo!()
    }

    /// Whether `peer` is currently suspected.
    pub fn is_suspected(&self, peer: &PeerId) -> bool {
        let _ = peer;
        todo!()
    }

    /// Lifeguard's local health score (0 = healthy).
    pub fn local_health(&self) -> u32 {
        todo!()
    }

    /// When [`State::handle_timeout`] next has work to do (None when watching nobody).
    pub fn poll_timeout(&self) -> Option<Time> {
        todo!()
    }

    /// Does all timed work due at `now`: probe rounds, probe timeouts, indirect-probe
    /// timeouts, suspicion timeouts.
    pub fn handle_timeout(&mut self, now: Time, out: &mut Vec<OutEvent>) {
        let _ = (now, out);
        todo!()
    }
}
