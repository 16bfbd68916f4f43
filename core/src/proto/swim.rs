//! Failure detection of neighbours, SWIM-style [Das, Gupta, Motivala 2002] with Lifeguard's
//! local health awareness [Dadgar et al. 2017]: probe, indirect probe through other
//! neighbours, suspicion, refutation.
//!
//! Departure: SWIM monitors the whole group and gossips suspicions; Starling monitors only
//! a node's neighbours (the union of its active views), so suspicion stays local and is
//! refuted directly by the suspect.
//!
//! # How it runs
//!
//! One round clock per node (a random phase drawn from the seed, then every
//! `probe_interval`), not one timer per peer. At each round start every watched peer that
//! is idle and was not heard from during the last `probe_interval` gets a `Ping`.
//! Departure: SWIM probes one random member per period; a node's neighbours are few, so
//! probing each silent one every round costs O(view) messages per period and gives a fixed
//! detection bound instead of an expected one (≈ 1.58 periods in SWIM).
//!
//! Departure: any traffic from a peer (the caller's [`State::heard_from`], or any SWIM
//! message from it) is evidence of life and skips that round's probe. An [`SwimMsg::Ack`]
//! to our own probe is dated to the round that sent the probe, so it never suppresses the
//! next round's probe. With two neighbours watching each other this usually means one
//! probes and the other, hearing its pings, stays quiet: one ping/ack pair per link per
//! period (when their rounds start within one latency of each other, both probe in one
//! round and neither in the next).
//!
//! A probe unanswered after `probe_timeout` is re-sent directly and handed to up to
//! `indirect_probes` other non-suspected neighbours (`PingReq`); the indirect phase lasts
//! the rest of the protocol period, so it ends at the next round start. If nobody
//! answered, the peer is suspected and told so (`Suspect`, which a live peer refutes with
//! `Alive`); after `suspicion_timeout` it is declared dead ([`OutEvent::PeerDead`]) and
//! forgotten. Lifeguard's local health `h` (raised when helpers' nacks go missing or when
//! a neighbour suspects us, lowered by each answered probe) stretches the probe timeout,
//! the indirect phase and the suspicion timeout by `(1 + h)`.
//!
//! # Detection bound (defaults: interval 1 s, timeout 500 ms, suspicion 500 ms, h = 0)
//!
//! Let `I`, `T`, `S` be the probe interval, probe timeout and suspicion timeout.
//! - A peer that answers our probes and then falls silent: its last answered probe was
//!   sent at a round start `R`; the next round `R + I` probes it, the probe times out at
//!   `R + I + T`, the indirect phase ends at `R + 2I`, and it is declared dead at exactly
//!   `R + 2I + S` = **2.5 s after the probe it last answered** (so at most 2.5 s after its
//!   last message). With no other neighbour to ask, the indirect phase is skipped: dead at
//!   `R + I + T + S` = 2.0 s.
//! - A peer we only heard from through traffic (including its own probes of us): its last
//!   message at `t` suppresses our probes in rounds before `t + I`, so the probe goes out
//!   at the first round `P ≥ t + I` and it is dead at `P + I + S`, that is in
//!   **[t + 2.5 s, t + 3.5 s)**. This is the price of skipping probes of busy peers.
//! - A local health of `h` multiplies `T`, the indirect phase and `S` by `1 + h`.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::time::Time;
use crate::identity::PeerId;
use crate::wire::{PeerInfo, SwimMsg};

/// Most indirect probes this node runs for others at once (a bound on memory and on how
/// many pings others can make us send); beyond it a `PingReq` is refused with a `Nack`.
const MAX_HELPER_PROBES: usize = 64;

/// Most of those that one requester may hold. Departure (not in SWIM): keeps one
/// neighbour from taking every slot and from using us to ping many targets at once; a
/// legitimate requester asks about at most a few of its neighbours per round.
const MAX_HELPER_PROBES_PER_REQUESTER: usize = MAX_HELPER_PROBES / 4;

/// Shortest probe interval accepted, so that the round clock always moves forward.
const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(1);

/// RTT-adaptive timeouts: a peer's probe timeout is this many smoothed round trips…
const RTT_FACTOR: u32 = 4;
/// …but never less than this (100 ms: absorbs scheduling delays of a busy node)…
const MIN_PROBE_TIMEOUT: Duration = Duration::from_millis(100);
/// …and the indirect phase never less than this (200 ms: two more hops through a helper).
/// Both are capped by the configured values, which apply while a peer's RTT is unknown.
const MIN_INDIRECT_PHASE: Duration = Duration::from_millis(200);

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
    /// RTT-adaptive probe timeout and indirect phase (true): a few smoothed round trips,
    /// with floors, capped by the two values above (see `adaptive`). False: the fixed
    /// configured values, as in SWIM and memberlist.
    pub rtt_adaptive: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            // memberlist DefaultLANConfig: ProbeInterval 1 s, ProbeTimeout 500 ms,
            // IndirectChecks 3, AwarenessMaxMultiplier 8.
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_probes: 3,
            // Departure: memberlist waits 4 · max(1, log10 N) probe intervals, because a
            // suspicion must be gossiped to the whole group before the suspect can refute
            // it; here the suspect is told directly, so one round trip with margin will do.
            suspicion_timeout: Duration::from_millis(500),
            max_local_health: 8,
            rtt_adaptive: true,
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

/// A helper asked to probe a peer for us, and whether it told us it failed.
#[derive(Debug)]
struct Asked {
    helper: PeerId,
    nacked: bool,
}

/// Where the probing of one watched peer stands.
#[derive(Debug)]
enum Phase {
    /// Nothing outstanding.
    Idle,
    /// A `Ping` sent at `sent` for round start `round`, awaiting its ack until `deadline`.
    Probing {
        nonce: u64,
        round: Time,
        sent: Time,
        deadline: Time,
    },
    /// Direct probe timed out; `PingReq`s sent to `asked`, waiting until `deadline`.
    Indirect {
        nonce: u64,
        round: Time,
        deadline: Time,
        asked: Vec<Asked>,
    },
    /// No answer at all: declared dead at `deadline` unless it shows life. The helpers
    /// asked (with the request's nonce) are kept so their nacks still count.
    Suspected {
        deadline: Time,
        nonce: u64,
        asked: Vec<Asked>,
    },
}

impl Phase {
    fn deadline(&self) -> Option<Time> {
        match self {
            Phase::Idle => None,
            Phase::Probing { deadline, .. }
            | Phase::Indirect { deadline, .. }
            | Phase::Suspected { deadline, .. } => Some(*deadline),
        }
    }
}

/// One watched neighbour.
#[derive(Debug)]
struct Watched {
    info: PeerInfo,
    /// Latest evidence of life (None: none since it was watched).
    last_heard: Option<Time>,
    phase: Phase,
    /// Smoothed round-trip time of our direct probes (None: none answered yet).
    srtt: Option<Duration>,
}

/// A probe this node runs on behalf of a requester (the helper side of `PingReq`).
#[derive(Debug)]
struct HelperProbe {
    requester: PeerId,
    request_nonce: u64,
    target: PeerInfo,
    deadline: Time,
}

/// Which timed event is due next.
enum Due {
    Peer(PeerId),
    Helper(u64),
    Round,
}

/// The failure detector's state.
#[derive(Debug)]
pub struct State {
    config: Config,
    rng: ChaCha8Rng,
    /// Counter for our nonces (own probes and helper probes): unique until it wraps
    /// after 2^64 probes. Starts at a random value so nonces are not guessable from zero.
    next_nonce: u64,
    local_health: u32,
    /// Watched peers, ordered so that iteration (and thus output) is deterministic.
    peers: BTreeMap<PeerId, Watched>,
    /// The next round start; None while watching nobody.
    next_round: Option<Time>,
    /// Probes run for others, by the nonce we used towards the target.
    helping: BTreeMap<u64, HelperProbe>,
}

impl State {
    /// A detector watching nobody yet.
    ///
    /// A `probe_interval` below 1 ms is raised to 1 ms.
    pub fn new(mut config: Config, seed: u64) -> Self {
        config.probe_interval = config.probe_interval.max(MIN_PROBE_INTERVAL);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let next_nonce = rng.gen();
        State {
            config,
            rng,
            next_nonce,
            local_health: 0,
            peers: BTreeMap::new(),
            next_round: None,
            helping: BTreeMap::new(),
        }
    }

    /// Starts watching `peer` (it became a neighbour). Watching a watched peer is a no-op.
    ///
    /// A newly watched peer has no evidence of life yet, so the next round probes it.
    pub fn watch(&mut self, peer: PeerInfo, now: Time) {
        if self.peers.contains_key(&peer.id) {
            return;
        }
        if self.next_round.is_none() {
            // Random phase so that neighbours' rounds do not line up.
            let interval_us = micros(self.config.probe_interval);
            let phase = self.rng.gen_range(0..interval_us);
            self.next_round = Some(now + Duration::from_micros(phase));
        }
        self.peers.insert(
            peer.id,
            Watched {
                info: peer,
                last_heard: None,
                phase: Phase::Idle,
                srtt: None,
            },
        );
    }

    /// Stops watching `peer` and forgets any probe or suspicion of it.
    ///
    /// Probes this node runs for `peer` as a helper are kept until their deadline: they
    /// answer someone else's question.
    pub fn unwatch(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
        if self.peers.is_empty() {
            self.next_round = None;
        }
    }

    /// Any message from `peer` is evidence that it is alive (clears suspicion).
    ///
    /// Call it for the peer's other traffic; [`State::handle_message`] already counts SWIM
    /// messages (and an ack to our own probe more precisely than this would).
    pub fn heard_from(&mut self, peer: &PeerId, now: Time) {
        if let Some(w) = self.peers.get_mut(peer) {
            w.last_heard = w.last_heard.max(Some(now));
            w.phase = Phase::Idle;
        }
    }

    /// Handles a failure-detector message from `from`.
    pub fn handle_message(
        &mut self,
        from: PeerId,
        msg: SwimMsg,
        now: Time,
        out: &mut Vec<OutEvent>,
    ) {
        match msg {
            SwimMsg::Ping { nonce } => out.push(OutEvent::Send(from, SwimMsg::Ack { nonce })),
            SwimMsg::Ack { nonce } => {
                if self.direct_ack(&from, nonce, now) {
                    // Already recorded, dated to the probe's round.
                    return;
                }
                self.helper_ack(&from, nonce, out);
            }
            SwimMsg::PingReq { nonce, target } => self.ping_req(from, nonce, target, now, out),
            SwimMsg::IndirectAck { nonce } => self.indirect_ack(&from, nonce),
            SwimMsg::Nack { nonce } => self.nack(&from, nonce),
            SwimMsg::Suspect => {
                out.push(OutEvent::Send(from, SwimMsg::Alive));
                // Lifeguard: being suspected means we may be the slow one.
                // Departure: only a neighbour's suspicion counts, or any stranger could
                // pin our health at its cap and slow our detection.
                if self.peers.contains_key(&from) {
                    self.raise_health();
                }
            }
            SwimMsg::Alive => {}
        }
        // Whatever it says, a message from a peer shows that the peer is alive.
        self.heard_from(&from, now);
    }

    /// Another node reported `peer` failed (a signed failure notice: its author's direct
    /// and indirect probes and suspicion all went unanswered). If `peer` is watched and has
    /// not been heard from just now, it is pinged at once and declared dead unless it
    /// answers within a few round trips (`MIN_INDIRECT_PHASE` at least, stretched by local
    /// health), instead of waiting for our own round, indirect phase and suspicion.
    ///
    /// Departure (SWIM gossips suspicions and each member then waits the full suspicion
    /// timeout): here a neighbour's own detection took 1.4–2.6 s after a crash while the
    /// first detector's notice reached everyone in about 1 s, so replacing a crashed
    /// neighbour took longer than noticing it was gone. A live peer answers the ping and is
    /// kept, so a false or forged notice costs one ping.
    pub fn hint_failed(&mut self, peer: &PeerId, now: Time, out: &mut Vec<OutEvent>) {
        let fallback = self.worst_srtt();
        let health = self.local_health;
        let configured = self.config.suspicion_timeout;
        let nonce = self.next_nonce;
        let Some(w) = self.peers.get_mut(peer) else {
            return;
        };
        let window = adaptive(w.srtt.or(fallback), configured, MIN_INDIRECT_PHASE)
            .saturating_mul(health.saturating_add(1));
        if w.last_heard
            .is_some_and(|t| now.saturating_since(t) < window)
        {
            return; // it spoke just now: the notice is stale or false
        }
        let deadline = now + window;
        if matches!(w.phase, Phase::Suspected { deadline: d, .. } if d <= deadline) {
            return; // our own verdict comes sooner
        }
        // A probe in progress (probing or indirect phase) would reach its verdict only
        // after the rest of its phases: the notice's verdict replaces it.
        w.phase = Phase::Suspected {
            deadline,
            nonce,
            asked: Vec::new(),
        };
        self.next_nonce = nonce.wrapping_add(1);
        out.push(OutEvent::Send(*peer, SwimMsg::Ping { nonce }));
    }

    /// Whether `peer` is currently suspected.
    pub fn is_suspected(&self, peer: &PeerId) -> bool {
        matches!(
            self.peers.get(peer),
            Some(Watched {
                phase: Phase::Suspected { .. },
                ..
            })
        )
    }

    /// Lifeguard's local health score (0 = healthy).
    pub fn local_health(&self) -> u32 {
        self.local_health
    }

    /// Whether `peer` is watched.
    pub fn is_watched(&self, peer: &PeerId) -> bool {
        self.peers.contains_key(peer)
    }

    /// The address of a peer this detector may send to: a watched peer, or the target of
    /// a probe it runs for someone else (known only from that `PingReq`).
    pub fn peer_info(&self, peer: &PeerId) -> Option<&PeerInfo> {
        self.peers.get(peer).map(|w| &w.info).or_else(|| {
            self.helping
                .values()
                .find(|h| h.target.id == *peer)
                .map(|h| &h.target)
        })
    }

    /// The next probe round (None when watching nobody). The node runs its other periodic,
    /// delay-tolerant work on these rounds, so that an idle node wakes about once per round.
    pub fn next_round(&self) -> Option<Time> {
        if self.peers.is_empty() {
            None
        } else {
            self.next_round
        }
    }

    /// When [`State::handle_timeout`] next has work to do (None when watching nobody).
    pub fn poll_timeout(&self) -> Option<Time> {
        self.next_due().map(|(t, _)| t)
    }

    /// Does all timed work due at `now`: probe rounds, probe timeouts, indirect-probe
    /// timeouts, suspicion timeouts.
    ///
    /// Work that is overdue is done in deadline order; new deadlines count from `now`, so
    /// a late call gives peers their full time to answer.
    pub fn handle_timeout(&mut self, now: Time, out: &mut Vec<OutEvent>) {
        // Terminates: each step removes an event, advances the round clock past `now`, or
        // moves a peer one phase along Probing → Indirect → Suspected → forgotten.
        while let Some((at, due)) = self.next_due() {
            if at > now {
                break;
            }
            match due {
                Due::Peer(peer) => self.peer_deadline(peer, now, out),
                Due::Helper(nonce) => {
                    if let Some(h) = self.helping.remove(&nonce) {
                        out.push(OutEvent::Send(
                            h.requester,
                            SwimMsg::Nack {
                                nonce: h.request_nonce,
                            },
                        ));
                    }
                }
                Due::Round => self.round(now, out),
            }
        }
    }

    // -----------------------------------------------------------------------------------

    /// The earliest pending event. O(view + helper probes): both are small.
    fn next_due(&self) -> Option<(Time, Due)> {
        let mut best: Option<(Time, Due)> = None;
        let mut consider = |t: Time, due: Due| {
            let earlier = match &best {
                Some((b, _)) => t < *b,
                None => true,
            };
            if earlier {
                best = Some((t, due));
            }
        };
        for (id, w) in &self.peers {
            if let Some(d) = w.phase.deadline() {
                consider(d, Due::Peer(*id));
            }
        }
        for (nonce, h) in &self.helping {
            consider(h.deadline, Due::Helper(*nonce));
        }
        if !self.peers.is_empty() {
            if let Some(r) = self.next_round {
                consider(r, Due::Round);
            }
        }
        best
    }

    fn fresh_nonce(&mut self) -> u64 {
        let n = self.next_nonce;
        self.next_nonce = self.next_nonce.wrapping_add(1);
        n
    }

    /// `d` stretched by Lifeguard's local health: `d · (1 + h)`.
    fn scaled(&self, d: Duration) -> Duration {
        d.saturating_mul(self.local_health.saturating_add(1))
    }

    /// The indirect phase before scaling: the rest of the protocol period, as in SWIM
    /// (the probe timeout itself if the configuration leaves no rest).
    fn indirect_phase(&self) -> Duration {
        let rest = self
            .config
            .probe_interval
            .saturating_sub(self.config.probe_timeout);
        if rest.is_zero() {
            self.config.probe_timeout
        } else {
            rest
        }
    }

    /// The largest smoothed RTT among the watched peers (None: none measured yet). It
    /// stands in for a peer whose RTT is unknown: when the other side probes first, our
    /// side never measures that link.
    fn worst_srtt(&self) -> Option<Duration> {
        if !self.config.rtt_adaptive {
            return None;
        }
        self.peers.values().filter_map(|w| w.srtt).max()
    }

    /// The indirect phase, RTT-adaptive: `RTT_FACTOR` times the largest smoothed RTT among
    /// the watched peers (a helper's path is two of our links' worth), between
    /// `MIN_INDIRECT_PHASE` and the configured phase.
    fn adaptive_indirect_phase(&self) -> Duration {
        adaptive(self.worst_srtt(), self.indirect_phase(), MIN_INDIRECT_PHASE)
    }

    /// How long a helper waits for the target before sending a `Nack`.
    ///
    /// Departure: memberlist's helper waits `probe_timeout`, but the requester's indirect
    /// phase is only `probe_interval - probe_timeout` (the same 500 ms with defaults), so
    /// that nack would arrive after the requester stopped counting and Lifeguard would
    /// blame the requester for every dead peer. Waiting 4/5 of the shorter of the two
    /// leaves a fifth (100 ms with defaults) for the two one-way trips.
    fn helper_wait(&self) -> Duration {
        let d = self.config.probe_timeout.min(self.indirect_phase());
        d - d / 5
    }

    fn raise_health(&mut self) {
        self.local_health = self
            .local_health
            .saturating_add(1)
            .min(self.config.max_local_health);
    }

    /// A round start: probe every idle peer not heard from during the last interval.
    fn round(&mut self, now: Time, out: &mut Vec<OutEvent>) {
        let Some(scheduled) = self.next_round else {
            return;
        };
        let interval = self.config.probe_interval;
        let interval_us = micros(interval);
        // If called late, this round stands for the latest missed start; keep the phase.
        let missed = now.as_micros().saturating_sub(scheduled.as_micros()) / interval_us;
        let round = Time::from_micros(
            scheduled
                .as_micros()
                .saturating_add(missed.saturating_mul(interval_us)),
        );
        let next = round + interval;
        // Only at the end of time does the clock stop moving; stop rounds rather than spin.
        self.next_round = (next > now).then_some(next);

        let configured = self.config.probe_timeout;
        let health = self.local_health;
        let fallback = self.worst_srtt();
        let mut nonce = self.next_nonce;
        for (id, w) in self.peers.iter_mut() {
            if !matches!(w.phase, Phase::Idle) {
                continue;
            }
            if let Some(heard) = w.last_heard {
                if now.saturating_since(heard) < interval {
                    continue; // traffic is evidence of life
                }
            }
            // `fallback` is None when adaptivity is off (or nothing was measured yet).
            let rtt = if fallback.is_some() {
                w.srtt.or(fallback)
            } else {
                None
            };
            let timeout = adaptive(rtt, configured, MIN_PROBE_TIMEOUT)
                .saturating_mul(health.saturating_add(1));
            w.phase = Phase::Probing {
                nonce,
                round,
                sent: now,
                deadline: now + timeout,
            };
            out.push(OutEvent::Send(*id, SwimMsg::Ping { nonce }));
            nonce = nonce.wrapping_add(1);
        }
        self.next_nonce = nonce;
    }

    /// A watched peer's phase deadline passed.
    fn peer_deadline(&mut self, peer: PeerId, now: Time, out: &mut Vec<OutEvent>) {
        let Some(w) = self.peers.get_mut(&peer) else {
            return;
        };
        match std::mem::replace(&mut w.phase, Phase::Idle) {
            Phase::Idle => {}
            Phase::Probing { nonce, round, .. } => {
                let target = w.info.clone();
                let candidates: Vec<PeerId> = self
                    .peers
                    .iter()
                    .filter(|(id, w)| **id != peer && !matches!(w.phase, Phase::Suspected { .. }))
                    .map(|(id, _)| *id)
                    .collect();
                let helpers: Vec<PeerId> = candidates
                    .choose_multiple(&mut self.rng, self.config.indirect_probes)
                    .copied()
                    .collect();
                if helpers.is_empty() {
                    // Nobody to ask: the indirect phase ends at once.
                    self.suspect(peer, nonce, Vec::new(), now, out);
                    return;
                }
                out.push(OutEvent::Send(peer, SwimMsg::Ping { nonce }));
                for h in &helpers {
                    out.push(OutEvent::Send(
                        *h,
                        SwimMsg::PingReq {
                            nonce,
                            target: target.clone(),
                        },
                    ));
                }
                let deadline = now + self.scaled(self.adaptive_indirect_phase());
                if let Some(w) = self.peers.get_mut(&peer) {
                    w.phase = Phase::Indirect {
                        nonce,
                        round,
                        deadline,
                        asked: helpers
                            .into_iter()
                            .map(|helper| Asked {
                                helper,
                                nacked: false,
                            })
                            .collect(),
                    };
                }
            }
            Phase::Indirect { nonce, asked, .. } => self.suspect(peer, nonce, asked, now, out),
            Phase::Suspected { asked, .. } => {
                // Lifeguard: helpers are believed alive, so a missing nack means the
                // fault may be ours (we lost their answers). Departure: memberlist adds
                // one per missing nack; we add one per failed probe, as several probes
                // can fail in the same round here. And nacks are counted until the
                // verdict, not only during the indirect phase: a helper's nack comes a
                // round trip after its wait, and on links of 100 ms or more it would
                // always miss the shorter window and make a healthy node doubt itself.
                if asked.iter().any(|a| !a.nacked) {
                    self.raise_health();
                }
                self.unwatch(&peer);
                out.push(OutEvent::PeerDead(peer));
            }
        }
    }

    /// Suspects `peer` and tells it, so that a live but slow peer can refute.
    fn suspect(
        &mut self,
        peer: PeerId,
        nonce: u64,
        asked: Vec<Asked>,
        now: Time,
        out: &mut Vec<OutEvent>,
    ) {
        let deadline = now + self.scaled(self.config.suspicion_timeout);
        if let Some(w) = self.peers.get_mut(&peer) {
            w.phase = Phase::Suspected {
                deadline,
                nonce,
                asked,
            };
            out.push(OutEvent::Send(peer, SwimMsg::Suspect));
        }
    }

    /// An ack from `from` to our own outstanding probe of it: returns whether it was one.
    fn direct_ack(&mut self, from: &PeerId, nonce: u64, now: Time) -> bool {
        let Some(w) = self.peers.get_mut(from) else {
            return false;
        };
        if let Phase::Probing { nonce: n, sent, .. } = w.phase {
            if n == nonce {
                // Only first-phase acks: in the indirect phase the ping was sent twice.
                let sample = now.saturating_since(sent);
                w.srtt = Some(match w.srtt {
                    Some(s) => (s * 7 + sample) / 8,
                    None => sample,
                });
            }
        }
        match w.phase {
            Phase::Probing {
                nonce: n, round, ..
            }
            | Phase::Indirect {
                nonce: n, round, ..
            } if n == nonce => {
                w.phase = Phase::Idle;
                // Dated to the probing round, so the next round probes again.
                w.last_heard = w.last_heard.max(Some(round));
                // Lifeguard: an answered probe is a sign that we are healthy.
                self.local_health = self.local_health.saturating_sub(1);
                true
            }
            _ => false,
        }
    }

    /// An ack from a target we probe for someone else: pass it on as an `IndirectAck`.
    fn helper_ack(&mut self, from: &PeerId, nonce: u64, out: &mut Vec<OutEvent>) {
        if self.helping.get(&nonce).map(|h| h.target.id) != Some(*from) {
            return;
        }
        if let Some(h) = self.helping.remove(&nonce) {
            out.push(OutEvent::Send(
                h.requester,
                SwimMsg::IndirectAck {
                    nonce: h.request_nonce,
                },
            ));
        }
    }

    /// A neighbour asks us to probe `target` for it.
    fn ping_req(
        &mut self,
        from: PeerId,
        nonce: u64,
        target: PeerInfo,
        now: Time,
        out: &mut Vec<OutEvent>,
    ) {
        // Only neighbours may ask (a stranger could use us to flood), and asking us to
        // probe the requester itself makes no sense.
        if !self.peers.contains_key(&from) || target.id == from {
            return;
        }
        let mut mine = 0;
        for h in self.helping.values() {
            if h.requester == from {
                if h.request_nonce == nonce {
                    return; // a duplicate: the first copy is being handled
                }
                mine += 1;
            }
        }
        if self.helping.len() >= MAX_HELPER_PROBES || mine >= MAX_HELPER_PROBES_PER_REQUESTER {
            out.push(OutEvent::Send(from, SwimMsg::Nack { nonce }));
            return;
        }
        let ours = self.fresh_nonce();
        out.push(OutEvent::Send(target.id, SwimMsg::Ping { nonce: ours }));
        let deadline = now + self.helper_wait();
        self.helping.insert(
            ours,
            HelperProbe {
                requester: from,
                request_nonce: nonce,
                target,
                deadline,
            },
        );
    }

    /// A helper reports that the target of our indirect probe answered it.
    fn indirect_ack(&mut self, from: &PeerId, nonce: u64) {
        for w in self.peers.values_mut() {
            if let Phase::Indirect {
                nonce: n,
                round,
                asked,
                ..
            } = &w.phase
            {
                if *n == nonce && asked.iter().any(|a| a.helper == *from) {
                    w.last_heard = w.last_heard.max(Some(*round));
                    w.phase = Phase::Idle;
                    return;
                }
            }
        }
    }

    /// A helper reports that the target did not answer it (but the helper is alive).
    fn nack(&mut self, from: &PeerId, nonce: u64) {
        for w in self.peers.values_mut() {
            if let Phase::Indirect {
                nonce: n, asked, ..
            }
            | Phase::Suspected {
                nonce: n, asked, ..
            } = &mut w.phase
            {
                if *n == nonce {
                    if let Some(a) = asked.iter_mut().find(|a| a.helper == *from) {
                        a.nacked = true;
                    }
                    return;
                }
            }
        }
    }
}

/// An RTT-adaptive timeout: `RTT_FACTOR` smoothed round trips, between `floor` and
/// `configured` (`configured` when the RTT is unknown or the configuration is below the
/// floor).
///
/// Departure (SWIM and memberlist use fixed timeouts): on fast links the configured 500 ms
/// dominated detection time; a timeout of a few RTTs detects a dead neighbour several
/// hundred ms sooner, and Lifeguard's local-health scaling still stretches it on a node
/// that is itself slow. The suspicion timeout stays fixed, so helpers' nacks (sent after
/// their own configured wait) still arrive before the verdict.
fn adaptive(srtt: Option<Duration>, configured: Duration, floor: Duration) -> Duration {
    match srtt {
        Some(rtt) if configured > floor => rtt.saturating_mul(RTT_FACTOR).clamp(floor, configured),
        _ => configured,
    }
}

/// A duration in whole microseconds, at least 1 (callers divide by it).
fn micros(d: Duration) -> u64 {
    (d.as_micros().min(u64::MAX as u128) as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn id(i: usize) -> PeerId {
        PeerId::from_bytes([i as u8 + 1; 32])
    }

    fn info(i: usize) -> PeerInfo {
        PeerInfo::bare(id(i))
    }

    fn ms(x: u64) -> Time {
        Time::from_millis(x)
    }

    fn d(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    /// Runs a detector's timers as a driver would, up to `until`; output with its time.
    fn run_timers(s: &mut State, until: Time) -> Vec<(Time, OutEvent)> {
        let mut log = Vec::new();
        while let Some(t) = s.poll_timeout() {
            if t > until {
                break;
            }
            let mut out = Vec::new();
            s.handle_timeout(t, &mut out);
            log.extend(out.into_iter().map(|e| (t, e)));
        }
        log
    }

    fn msg(s: &mut State, from: usize, m: SwimMsg, now: Time) -> Vec<OutEvent> {
        let mut out = Vec::new();
        s.handle_message(id(from), m, now, &mut out);
        out
    }

    /// The nonce of the ping `s` sent to `to` in `log` (the last one).
    fn ping_to(log: &[(Time, OutEvent)], to: usize) -> Option<u64> {
        log.iter().rev().find_map(|(_, e)| match e {
            OutEvent::Send(p, SwimMsg::Ping { nonce }) if *p == id(to) => Some(*nonce),
            _ => None,
        })
    }

    /// Like `run_timers`, but the peers in `alive` answer at once: pings with acks,
    /// indirect-probe requests with nacks.
    fn run_answering(s: &mut State, until: Time, alive: &[usize]) -> Vec<(Time, OutEvent)> {
        let mut log = Vec::new();
        while let Some(t) = s.poll_timeout().filter(|t| *t <= until) {
            let mut out = Vec::new();
            s.handle_timeout(t, &mut out);
            for e in &out {
                let OutEvent::Send(to, m) = e else { continue };
                let Some(i) = alive.iter().copied().find(|i| id(*i) == *to) else {
                    continue;
                };
                let reply = match m {
                    SwimMsg::Ping { nonce } => SwimMsg::Ack { nonce: *nonce },
                    SwimMsg::PingReq { nonce, .. } => SwimMsg::Nack { nonce: *nonce },
                    _ => continue,
                };
                msg(s, i, reply, t);
            }
            log.extend(out.into_iter().map(|e| (t, e)));
        }
        log
    }

    /// A mini network of detectors with a fixed one-way latency.
    struct Net {
        now: Time,
        nodes: Vec<State>,
        /// A down node neither receives nor runs timers (its in-flight messages land).
        up: Vec<bool>,
        latency: Duration,
        queue: BTreeMap<(Time, u64), (usize, usize, SwimMsg)>,
        seq: u64,
        /// Directed links (from, to) that lose every packet.
        cut: BTreeSet<(usize, usize)>,
        /// (time, observer, subject) of each `PeerDead`.
        dead: Vec<(Time, usize, usize)>,
        /// Every delivery: (time, from, to, message).
        delivered: Vec<(Time, usize, usize, SwimMsg)>,
        /// Every send: (time, from, to, message).
        sent: Vec<(Time, usize, usize, SwimMsg)>,
        /// Per node, the distinct times its timers fired.
        wakeups: Vec<BTreeSet<Time>>,
    }

    impl Net {
        fn new(n: usize, seed: u64, latency: Duration) -> Net {
            Net {
                now: ms(0),
                nodes: (0..n)
                    .map(|i| State::new(Config::default(), seed * 1000 + i as u64))
                    .collect(),
                up: vec![true; n],
                latency,
                queue: BTreeMap::new(),
                seq: 0,
                cut: BTreeSet::new(),
                dead: Vec::new(),
                delivered: Vec::new(),
                sent: Vec::new(),
                wakeups: vec![BTreeSet::new(); n],
            }
        }

        /// Everyone watches everyone.
        fn mesh(&mut self) {
            let n = self.nodes.len();
            for i in 0..n {
                for j in (0..n).filter(|j| *j != i) {
                    self.nodes[i].watch(info(j), self.now);
                }
            }
        }

        fn index(&self, p: &PeerId) -> Option<usize> {
            (0..self.nodes.len()).find(|i| id(*i) == *p)
        }

        fn dispatch(&mut self, from: usize, out: Vec<OutEvent>) {
            for e in out {
                match e {
                    OutEvent::Send(to, m) => {
                        let Some(to) = self.index(&to) else { continue };
                        self.sent.push((self.now, from, to, m.clone()));
                        if !self.cut.contains(&(from, to)) {
                            self.seq += 1;
                            self.queue
                                .insert((self.now + self.latency, self.seq), (from, to, m));
                        }
                    }
                    OutEvent::PeerDead(p) => {
                        let subject = self.index(&p).unwrap_or(usize::MAX);
                        self.dead.push((self.now, from, subject));
                    }
                }
            }
        }

        fn run_until(&mut self, end: Time) {
            loop {
                let next_msg = self.queue.keys().next().map(|k| k.0);
                let next_timer = (0..self.nodes.len())
                    .filter(|i| self.up[*i])
                    .filter_map(|i| self.nodes[i].poll_timeout())
                    .min();
                let next = match (next_msg, next_timer) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => match a.or(b) {
                        Some(t) => t,
                        None => break,
                    },
                };
                if next > end {
                    break;
                }
                self.now = self.now.max(next);
                while let Some(entry) = self.queue.first_entry() {
                    if entry.key().0 > self.now {
                        break;
                    }
                    let (from, to, m) = entry.remove();
                    if !self.up[to] {
                        continue;
                    }
                    self.delivered.push((self.now, from, to, m.clone()));
                    let mut out = Vec::new();
                    self.nodes[to].handle_message(id(from), m, self.now, &mut out);
                    self.dispatch(to, out);
                }
                for i in 0..self.nodes.len() {
                    let due = self.nodes[i].poll_timeout().is_some_and(|t| t <= self.now);
                    if self.up[i] && due {
                        self.wakeups[i].insert(self.now);
                        let mut out = Vec::new();
                        self.nodes[i].handle_timeout(self.now, &mut out);
                        self.dispatch(i, out);
                    }
                }
            }
            self.now = self.now.max(end);
        }

        fn count_sent(&self, f: impl Fn(usize, usize, &SwimMsg) -> bool) -> usize {
            self.sent.iter().filter(|(_, a, b, m)| f(*a, *b, m)).count()
        }
    }

    #[test]
    fn a_failure_notice_about_a_neighbour_is_checked_at_once() {
        let mut s = State::new(Config::default(), 21);
        s.watch(info(1), ms(0));
        s.watch(info(2), ms(0));
        s.heard_from(&id(1), ms(1000));
        s.heard_from(&id(2), ms(1000));
        // No RTT measured yet: the window is the configured suspicion timeout (500 ms).
        // Heard from within it: the notice is stale or false, nothing is done.
        let mut out = Vec::new();
        s.hint_failed(&id(1), ms(1300), &mut out);
        assert!(out.is_empty(), "{out:?}");
        // Silent for longer: pinged at once, dead one window later unless it answers.
        s.hint_failed(&id(1), ms(1600), &mut out);
        s.hint_failed(&id(2), ms(1600), &mut out);
        let log: Vec<(Time, OutEvent)> = out.into_iter().map(|e| (ms(1600), e)).collect();
        assert!(ping_to(&log, 1).is_some());
        let nonce = ping_to(&log, 2).expect("ping to 2");
        // Peer 2 answers; peer 1 stays silent.
        msg(&mut s, 2, SwimMsg::Ack { nonce }, ms(1610));
        let log = run_timers(&mut s, ms(2100));
        let dead: Vec<(Time, PeerId)> = log
            .iter()
            .filter_map(|(t, e)| match e {
                OutEvent::PeerDead(p) => Some((*t, *p)),
                _ => None,
            })
            .collect();
        assert_eq!(dead, vec![(ms(2100), id(1))]);
        assert!(s.is_watched(&id(2)) && !s.is_watched(&id(1)));
        // A probe already in progress is cut short too: it would reach its verdict only
        // after its indirect phase and suspicion.
        s.watch(info(3), ms(2100));
        let round = s.next_round().expect("watching");
        let log = run_timers(&mut s, round); // the round probes 3 (never heard from)
        let probe_at = log
            .iter()
            .find(|(_, e)| matches!(e, OutEvent::Send(p, SwimMsg::Ping { .. }) if *p == id(3)))
            .map(|(t, _)| *t)
            .expect("a round probed 3");
        let mut out = Vec::new();
        s.hint_failed(&id(3), probe_at + d(10), &mut out);
        assert!(ping_to(
            &out.iter()
                .map(|e| (probe_at, e.clone()))
                .collect::<Vec<_>>(),
            3
        )
        .is_some());
        let log = run_timers(&mut s, probe_at + d(510));
        assert!(
            log.iter()
                .any(|(t, e)| *e == OutEvent::PeerDead(id(3)) && *t == probe_at + d(510)),
            "{log:?}"
        );
        // An unwatched peer: nothing to do.
        let mut out = Vec::new();
        s.hint_failed(&id(7), ms(2200), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn responsive_peers_are_never_declared_dead() {
        let mut net = Net::new(5, 1, d(10));
        net.mesh();
        net.run_until(ms(100_000));
        assert!(net.dead.is_empty(), "{:?}", net.dead);
        assert_eq!(net.count_sent(|_, _, m| *m == SwimMsg::Suspect), 0);
        for (i, s) in net.nodes.iter().enumerate() {
            assert_eq!(s.local_health(), 0);
            for j in (0..5).filter(|j| *j != i) {
                assert!(s.is_watched(&id(j)) && !s.is_suspected(&id(j)));
            }
        }
        // Each link is probed about once per second, by one side (the other hears pings).
        let pings = net.count_sent(|_, _, m| matches!(m, SwimMsg::Ping { .. }));
        assert!(
            (900..=1100).contains(&pings),
            "{pings} pings for 10 links over 100 s"
        );
    }

    #[test]
    fn silent_peer_is_dead_within_the_documented_window() {
        // Several seeds, so that both the prober's and the probed side's views occur.
        let answered_probe_cases: usize = (1..=5).map(silent_peer_case).sum();
        assert!(answered_probe_cases >= 1, "the prober's view is exercised");
    }

    /// Kills node 1 of a 5-node mesh; checks every observer's verdict time and returns how
    /// many observers knew it alive from an answered probe.
    fn silent_peer_case(seed: u64) -> usize {
        let lat = d(10);
        let mut net = Net::new(5, seed, lat);
        net.mesh();
        net.run_until(ms(10_300));
        net.up[1] = false;
        net.run_until(ms(20_000));
        let mut answered_probe_cases = 0;
        for j in [0, 2, 3, 4] {
            let dead: Vec<Time> = net
                .dead
                .iter()
                .filter(|(_, o, s)| *o == j && *s == 1)
                .map(|(t, ..)| *t)
                .collect();
            assert_eq!(dead.len(), 1, "observer {j}");
            assert!(!net.nodes[j].is_watched(&id(1)));
            let from1: Vec<&(Time, usize, usize, SwimMsg)> = net
                .delivered
                .iter()
                .filter(|x| x.1 == 1 && x.2 == j)
                .collect();
            let last = from1.last().map(|x| x.0).unwrap_or_default();
            assert!(
                dead[0].saturating_since(last) < d(3_500),
                "observer {j}: {:?}",
                dead[0].saturating_since(last)
            );
            // Latest evidence of life: an ack to our probe is dated to the probe's round
            // (one round trip earlier), any other message to its arrival.
            let (evidence, was_ack) = from1
                .iter()
                .map(|x| match x.3 {
                    SwimMsg::Ack { .. } => (x.0 - 2 * lat, true),
                    _ => (x.0, false),
                })
                .max()
                .unwrap_or_default();
            let after = dead[0].saturating_since(evidence);
            // RTT 20 ms: once measured, the adaptive probe timeout and indirect phase are at
            // their floors (100 ms, 200 ms); the suspicion timeout is fixed (500 ms). An
            // observer that never measured an RTT (its peers always probed first) uses the
            // configured 500 ms + 500 ms.
            if was_ack {
                // Probed every round: dead exactly I + 0.1 + 0.2 + S = 1.8 s after the
                // answered probe.
                assert_eq!(after, d(1_800), "observer {j}");
                answered_probe_cases += 1;
            } else {
                // Known alive by its traffic: in [t + 1.8 s, t + 3.5 s).
                assert!(after >= d(1_800) && after < d(3_500), "{j}: {after:?}");
            }
            assert_eq!(net.nodes[j].local_health(), 0, "nacks arrived in time");
        }
        assert_eq!(net.dead.len(), 4, "no one else is declared dead");
        answered_probe_cases
    }

    #[test]
    fn silent_peer_timeline_with_helpers_is_exact() {
        // One node probing P and three helpers, answered by hand.
        let mut s = State::new(Config::default(), 3);
        for i in 0..4 {
            s.watch(info(i), ms(0));
        }
        let r = s.poll_timeout().expect("round scheduled");
        assert!(r < ms(1_000));
        // Everyone answers the first round; then P falls silent, the helpers do not.
        let log = run_answering(&mut s, r, &[0, 1, 2, 3]);
        assert!((0..4).all(|i| ping_to(&log, i).is_some()));
        let log = run_answering(&mut s, r + d(3_000), &[1, 2, 3]);
        let at = |pred: &dyn Fn(&OutEvent) -> bool| -> Vec<Time> {
            log.iter()
                .filter(|(_, e)| pred(e))
                .map(|(t, _)| *t)
                .collect()
        };
        // Next round probes P again (the ack did not count as fresh traffic). Answers came
        // at once, so the RTT-adaptive timeouts are at their floors: probe 100 ms, indirect
        // phase 200 ms; then the fixed suspicion timeout, 500 ms.
        let pings = at(&|e| matches!(e, OutEvent::Send(p, SwimMsg::Ping { .. }) if *p == id(0)));
        assert_eq!(
            pings,
            vec![r + d(1_000), r + d(1_100)],
            "probe, then re-sent"
        );
        let reqs = at(
            &|e| matches!(e, OutEvent::Send(_, SwimMsg::PingReq { target, .. }) if target.id == id(0)),
        );
        assert_eq!(reqs, vec![r + d(1_100); 3]);
        let sus = at(&|e| *e == OutEvent::Send(id(0), SwimMsg::Suspect));
        assert_eq!(sus, vec![r + d(1_300)]);
        let dead = at(&|e| *e == OutEvent::PeerDead(id(0)));
        assert_eq!(dead, vec![r + d(1_800)]);
        assert_eq!(s.local_health(), 0);
    }

    #[test]
    fn indirect_probes_keep_a_peer_alive_across_a_broken_direct_path() {
        let mut net = Net::new(5, 3, d(10));
        net.mesh();
        net.cut.insert((0, 1));
        net.cut.insert((1, 0));
        net.run_until(ms(100_000));
        assert!(net.dead.is_empty(), "{:?}", net.dead);
        assert_eq!(net.count_sent(|_, _, m| *m == SwimMsg::Suspect), 0);
        let reqs = net.count_sent(|a, _, m| {
            a == 0 && matches!(m, SwimMsg::PingReq { target, .. } if target.id == id(1))
        });
        assert!(
            reqs >= 90,
            "node 0 went through helpers every round: {reqs}"
        );
        let iacks = net.count_sent(|_, b, m| b == 0 && matches!(m, SwimMsg::IndirectAck { .. }));
        assert!(iacks >= 90, "{iacks}");
        assert_eq!(net.nodes[0].local_health(), 0);
        assert_eq!(net.nodes[1].local_health(), 0);
    }

    #[test]
    fn suspicion_is_refuted_by_alive() {
        let mut s = State::new(Config::default(), 4);
        s.watch(info(0), ms(0));
        let r = s.poll_timeout().unwrap_or_default();
        let log = run_timers(&mut s, r);
        assert!(ping_to(&log, 0).is_some());
        // No other neighbour to ask: suspected at the probe timeout.
        let log = run_timers(&mut s, r + d(500));
        assert_eq!(
            log,
            vec![(r + d(500), OutEvent::Send(id(0), SwimMsg::Suspect))]
        );
        assert!(s.is_suspected(&id(0)));
        assert_eq!(s.poll_timeout(), Some(r + d(1_000)));
        assert!(msg(&mut s, 0, SwimMsg::Alive, r + d(600)).is_empty());
        assert!(!s.is_suspected(&id(0)));
        // The refutation counts as traffic: the round at r+1 s skips it, r+2 s probes.
        let log = run_timers(&mut s, r + d(1_999));
        assert!(log.is_empty(), "{log:?}");
        let log = run_timers(&mut s, r + d(2_000));
        assert!(ping_to(&log, 0).is_some());
        // Heard-from also clears a suspicion.
        let log = run_timers(&mut s, r + d(2_500));
        assert_eq!(
            log,
            vec![(r + d(2_500), OutEvent::Send(id(0), SwimMsg::Suspect))]
        );
        s.heard_from(&id(0), r + d(2_700));
        assert!(!s.is_suspected(&id(0)));
        let log = run_timers(&mut s, r + d(3_500));
        assert!(!log.iter().any(|(_, e)| matches!(e, OutEvent::PeerDead(_))));
        assert!(s.is_watched(&id(0)));
    }

    #[test]
    fn unanswered_suspicion_without_helpers_is_dead_after_two_seconds_from_the_probe() {
        let mut s = State::new(Config::default(), 5);
        s.watch(info(0), ms(0));
        let r = s.poll_timeout().unwrap_or_default();
        let log = run_timers(&mut s, r + d(10_000));
        assert_eq!(
            log,
            vec![
                (
                    r,
                    OutEvent::Send(
                        id(0),
                        SwimMsg::Ping {
                            nonce: s.next_nonce.wrapping_sub(1)
                        }
                    )
                ),
                (r + d(500), OutEvent::Send(id(0), SwimMsg::Suspect)),
                (r + d(1_000), OutEvent::PeerDead(id(0))),
            ]
        );
        assert!(!s.is_watched(&id(0)));
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn traffic_skips_pings() {
        let mut s = State::new(Config::default(), 6);
        s.watch(info(0), ms(0));
        let mut log = Vec::new();
        let mut t = 0;
        while t <= 20_000 {
            s.heard_from(&id(0), ms(t));
            log.extend(run_timers(&mut s, ms(t + 299)));
            t += 300;
        }
        assert!(log.is_empty(), "no ping to a chatty peer: {log:?}");
        let last = ms(t - 300);
        let log = run_timers(&mut s, last + d(5_000));
        let first_ping = log
            .iter()
            .find(|(_, e)| matches!(e, OutEvent::Send(_, SwimMsg::Ping { .. })))
            .map(|(t, _)| *t)
            .unwrap_or_default();
        assert!(first_ping >= last + d(1_000) && first_ping < last + d(2_000));
        let dead = log.iter().find(|(_, e)| *e == OutEvent::PeerDead(id(0)));
        assert_eq!(dead.map(|(t, _)| *t), Some(first_ping + d(1_000)));
    }

    #[test]
    fn helper_sends_indirect_ack_and_nack() {
        let mut s = State::new(Config::default(), 7);
        s.watch(info(0), ms(0)); // the requester A, which answers our probes
        let t = ms(100);
        run_answering(&mut s, t, &[0]);
        let out = msg(
            &mut s,
            0,
            SwimMsg::PingReq {
                nonce: 7,
                target: info(5),
            },
            t,
        );
        let [OutEvent::Send(p, SwimMsg::Ping { nonce: n2 })] = out.as_slice() else {
            panic!("{out:?}")
        };
        let n2 = *n2;
        assert_eq!(*p, id(5));
        assert_eq!(s.peer_info(&id(5)), Some(&info(5)));
        // A wrong sender with the right nonce, then the right sender with a wrong nonce.
        assert!(msg(&mut s, 6, SwimMsg::Ack { nonce: n2 }, t + d(10)).is_empty());
        assert!(msg(&mut s, 5, SwimMsg::Ack { nonce: n2 ^ 1 }, t + d(10)).is_empty());
        let out = msg(&mut s, 5, SwimMsg::Ack { nonce: n2 }, t + d(20));
        assert_eq!(
            out,
            vec![OutEvent::Send(id(0), SwimMsg::IndirectAck { nonce: 7 })]
        );
        assert!(msg(&mut s, 5, SwimMsg::Ack { nonce: n2 }, t + d(30)).is_empty());
        assert!(s.helping.is_empty());

        // Silent target: a Nack after 4/5 of the probe timeout; a late ack is ignored.
        let t = ms(2_000);
        run_answering(&mut s, t, &[0]);
        let out = msg(
            &mut s,
            0,
            SwimMsg::PingReq {
                nonce: 8,
                target: info(5),
            },
            t,
        );
        let [OutEvent::Send(_, SwimMsg::Ping { nonce: n3 })] = out.as_slice() else {
            panic!("{out:?}")
        };
        let n3 = *n3;
        // A duplicate request is not probed twice.
        assert!(msg(
            &mut s,
            0,
            SwimMsg::PingReq {
                nonce: 8,
                target: info(5)
            },
            t
        )
        .is_empty());
        assert_eq!(s.helping.len(), 1);
        let nacks: Vec<_> = run_answering(&mut s, t + d(500), &[0])
            .into_iter()
            .filter(|(_, e)| matches!(e, OutEvent::Send(_, SwimMsg::Nack { .. })))
            .collect();
        assert_eq!(
            nacks,
            vec![(
                t + d(400),
                OutEvent::Send(id(0), SwimMsg::Nack { nonce: 8 })
            )]
        );
        assert!(msg(&mut s, 5, SwimMsg::Ack { nonce: n3 }, t + d(500)).is_empty());

        // The requester is unwatched: its pending question is still answered.
        let t = ms(3_000);
        run_answering(&mut s, t, &[0]);
        msg(
            &mut s,
            0,
            SwimMsg::PingReq {
                nonce: 9,
                target: info(5),
            },
            t,
        );
        s.unwatch(&id(0));
        assert_eq!(s.poll_timeout(), Some(t + d(400)));
        let log = run_timers(&mut s, t + d(400));
        assert_eq!(
            log,
            vec![(
                t + d(400),
                OutEvent::Send(id(0), SwimMsg::Nack { nonce: 9 })
            )]
        );
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn suspect_is_answered_and_only_neighbours_lower_our_health() {
        let mut s = State::new(Config::default(), 8);
        s.watch(info(0), ms(0));
        let out = msg(&mut s, 9, SwimMsg::Suspect, ms(10));
        assert_eq!(out, vec![OutEvent::Send(id(9), SwimMsg::Alive)]);
        assert_eq!(s.local_health(), 0, "a stranger's suspicion does not count");
        for k in 1..=20 {
            let out = msg(&mut s, 0, SwimMsg::Suspect, ms(10 + k));
            assert_eq!(out, vec![OutEvent::Send(id(0), SwimMsg::Alive)]);
        }
        assert_eq!(s.local_health(), 8, "capped at max_local_health");
    }

    #[test]
    fn missed_nacks_raise_health_and_stretch_timeouts_and_acks_lower_it() {
        // Fixed timeouts, so the Lifeguard timeline is SWIM's.
        let config = Config {
            rtt_adaptive: false,
            ..Config::default()
        };
        let mut s = State::new(config, 9);
        for i in 0..4 {
            s.watch(info(i), ms(0)); // P = 0, helpers 1..3
        }
        let r = s.poll_timeout().unwrap_or_default();
        let log = run_timers(&mut s, r);
        for i in 1..4 {
            let n = ping_to(&log, i).unwrap_or_default();
            msg(&mut s, i, SwimMsg::Ack { nonce: n }, r + d(10));
        }
        let np = ping_to(&log, 0).unwrap_or_default();
        let log = run_timers(&mut s, r + d(500));
        let asked: Vec<PeerId> = log
            .iter()
            .filter_map(|(_, e)| match e {
                OutEvent::Send(h, SwimMsg::PingReq { nonce, target }) => {
                    assert_eq!((*nonce, target.id), (np, id(0)));
                    Some(*h)
                }
                _ => None,
            })
            .collect();
        let mut asked = asked;
        asked.sort();
        assert_eq!(asked, vec![id(1), id(2), id(3)]);
        assert_eq!(
            s.poll_timeout(),
            Some(r + d(1_000)),
            "indirect phase ends at the next round"
        );
        // One helper nacks (twice); strangers' and unknown-nonce nacks are ignored.
        msg(&mut s, 1, SwimMsg::Nack { nonce: np }, r + d(900));
        msg(&mut s, 1, SwimMsg::Nack { nonce: np }, r + d(900));
        msg(&mut s, 9, SwimMsg::Nack { nonce: np }, r + d(900));
        msg(&mut s, 1, SwimMsg::Nack { nonce: np ^ 1 }, r + d(900));
        let log = run_timers(&mut s, r + d(1_000));
        assert!(log.contains(&(r + d(1_000), OutEvent::Send(id(0), SwimMsg::Suspect))));
        assert_eq!(s.local_health(), 0, "nacks are counted until the verdict");
        // Keep the helpers answered, so only P's probe is at stake.
        for i in 1..4 {
            if let Some(n) = ping_to(&log, i) {
                msg(&mut s, i, SwimMsg::Ack { nonce: n }, r + d(1_010));
            }
        }
        // A nack that arrives during the suspicion (a long round trip) still counts.
        msg(&mut s, 2, SwimMsg::Nack { nonce: np }, r + d(1_200));
        let log = run_timers(&mut s, r + d(1_500));
        assert!(log.contains(&(r + d(1_500), OutEvent::PeerDead(id(0)))));
        assert_eq!(
            s.local_health(),
            1,
            "helper 3's nack never came: we may be the slow one"
        );
        // The next probe waits twice as long, and its answer lowers the health again.
        s.watch(info(5), r + d(1_600));
        let round = s.poll_timeout().unwrap_or_default();
        let log = run_timers(&mut s, round);
        let n5 = ping_to(&log, 5).unwrap_or_default();
        assert_eq!(s.peers[&id(5)].phase.deadline(), Some(round + d(1_000)));
        msg(&mut s, 5, SwimMsg::Ack { nonce: n5 }, round + d(100));
        assert_eq!(s.local_health(), 0, "an answered probe lowers it");
    }

    #[test]
    fn all_nacks_back_leave_health_alone() {
        let mut s = State::new(Config::default(), 10);
        s.watch(info(0), ms(0));
        s.watch(info(1), ms(0));
        let r = s.poll_timeout().unwrap_or_default();
        let log = run_timers(&mut s, r);
        let n1 = ping_to(&log, 1).unwrap_or_default();
        msg(&mut s, 1, SwimMsg::Ack { nonce: n1 }, r + d(10));
        let np = ping_to(&log, 0).unwrap_or_default();
        run_timers(&mut s, r + d(500));
        msg(&mut s, 1, SwimMsg::Nack { nonce: np }, r + d(950));
        run_timers(&mut s, r + d(1_000));
        assert!(s.is_suspected(&id(0)));
        assert_eq!(s.local_health(), 0);
    }

    #[test]
    fn indirect_ack_clears_the_probe_only_from_an_asked_helper() {
        let mut s = State::new(Config::default(), 11);
        s.watch(info(0), ms(0));
        s.watch(info(1), ms(0));
        let r = s.poll_timeout().unwrap_or_default();
        let log = run_timers(&mut s, r);
        let np = ping_to(&log, 0).unwrap_or_default();
        let nh = ping_to(&log, 1).unwrap_or_default();
        msg(&mut s, 1, SwimMsg::Ack { nonce: nh }, r + d(10));
        // Wrong sender with P's nonce, and unknown nonces: P stays under probe.
        msg(&mut s, 1, SwimMsg::Ack { nonce: np }, r + d(20));
        msg(&mut s, 9, SwimMsg::Ack { nonce: np }, r + d(20));
        msg(
            &mut s,
            1,
            SwimMsg::Ack {
                nonce: np.wrapping_add(1000),
            },
            r + d(20),
        );
        assert!(matches!(s.peers[&id(0)].phase, Phase::Probing { .. }));
        run_timers(&mut s, r + d(500));
        assert!(matches!(s.peers[&id(0)].phase, Phase::Indirect { .. }));
        msg(&mut s, 9, SwimMsg::IndirectAck { nonce: np }, r + d(600));
        msg(
            &mut s,
            1,
            SwimMsg::IndirectAck { nonce: np ^ 1 },
            r + d(600),
        );
        assert!(matches!(s.peers[&id(0)].phase, Phase::Indirect { .. }));
        msg(&mut s, 1, SwimMsg::IndirectAck { nonce: np }, r + d(600));
        assert!(matches!(s.peers[&id(0)].phase, Phase::Idle));
        assert_eq!(s.local_health(), 0);
        // It is probed again next round.
        assert!(ping_to(&run_timers(&mut s, r + d(1_000)), 0).is_some());
    }

    #[test]
    fn ping_req_from_strangers_and_floods_stay_bounded() {
        let mut s = State::new(Config::default(), 12);
        for i in 0..10 {
            s.watch(info(i), ms(0));
        }
        let t = ms(50);
        // Strangers and requests to probe the requester itself are ignored.
        assert!(msg(
            &mut s,
            99,
            SwimMsg::PingReq {
                nonce: 1,
                target: info(3)
            },
            t
        )
        .is_empty());
        assert!(msg(
            &mut s,
            2,
            SwimMsg::PingReq {
                nonce: 1,
                target: info(2)
            },
            t
        )
        .is_empty());
        assert!(s.helping.is_empty());
        // Ping from anyone is answered.
        assert_eq!(
            msg(&mut s, 99, SwimMsg::Ping { nonce: 5 }, t),
            vec![OutEvent::Send(id(99), SwimMsg::Ack { nonce: 5 })]
        );
        // 1,000 requests from one neighbour: a quarter of the slots, the rest refused.
        let (mut pings, mut nacks) = (0, 0);
        for k in 0..1_000u64 {
            let target = info(100 + (k % 100) as usize);
            for e in msg(&mut s, 0, SwimMsg::PingReq { nonce: k, target }, t) {
                match e {
                    OutEvent::Send(_, SwimMsg::Ping { .. }) => pings += 1,
                    OutEvent::Send(p, SwimMsg::Nack { .. }) if p == id(0) => nacks += 1,
                    e => panic!("{e:?}"),
                }
            }
        }
        assert_eq!((pings, nacks), (16, 984));
        // Every neighbour floods: the table stops at 64 entries.
        for r in 1..10 {
            for k in 0..100u64 {
                msg(
                    &mut s,
                    r,
                    SwimMsg::PingReq {
                        nonce: k,
                        target: info(200),
                    },
                    t,
                );
            }
        }
        assert_eq!(s.helping.len(), MAX_HELPER_PROBES);
        // They all expire with a Nack to their requester and the table empties.
        let log = run_timers(&mut s, t + d(400));
        let late_nacks = log
            .iter()
            .filter(|(_, e)| matches!(e, OutEvent::Send(_, SwimMsg::Nack { .. })))
            .count();
        assert_eq!(late_nacks, MAX_HELPER_PROBES);
        assert!(s.helping.is_empty());
    }

    #[test]
    fn idle_node_wakes_about_once_per_probe_interval() {
        let mut net = Net::new(11, 13, d(10));
        net.mesh();
        net.run_until(ms(100_000));
        assert!(net.dead.is_empty());
        let wakeups = net.wakeups[0].len();
        assert!(wakeups <= 200, "{wakeups} wake-ups in 100 s");
        assert!(wakeups >= 90, "the round clock runs: {wakeups}");
    }

    #[test]
    fn unwatch_stops_probes_and_verdicts() {
        let mut s = State::new(Config::default(), 14);
        s.watch(info(0), ms(0));
        s.watch(info(1), ms(0));
        s.watch(info(1), ms(0)); // no-op
        let r = s.poll_timeout().unwrap_or_default();
        let log = run_timers(&mut s, r);
        assert!(ping_to(&log, 0).is_some());
        s.unwatch(&id(0));
        assert!(!s.is_watched(&id(0)) && !s.is_suspected(&id(0)));
        let log = run_timers(&mut s, r + d(10_000));
        assert!(
            !log.iter().any(
                |(_, e)| matches!(e, OutEvent::Send(p, _) | OutEvent::PeerDead(p) if *p == id(0))
            ),
            "{log:?}"
        );
        // Peer 1 never answered: it is the one declared dead, then nothing is left.
        assert!(log.contains(&(r + d(1_000), OutEvent::PeerDead(id(1)))));
        assert_eq!(s.poll_timeout(), None);
        // Watching again starts afresh.
        s.watch(info(0), r + d(20_000));
        assert!(s.poll_timeout().is_some_and(|t| t >= r + d(20_000)));
    }

    #[test]
    fn late_timeout_calls_do_everything_due_in_order() {
        let mut s = State::new(Config::default(), 15);
        s.watch(info(0), ms(0));
        s.watch(info(1), ms(0));
        let r = s.poll_timeout().unwrap_or_default();
        // One call 5.3 s late: one round (the latest missed start), no instant verdicts.
        let mut out = Vec::new();
        s.handle_timeout(r + d(5_300), &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(
            s.poll_timeout(),
            Some(r + d(5_800)),
            "probe deadline counts from now"
        );
        let mut out = Vec::new();
        s.handle_timeout(r + d(60_000), &mut out);
        assert!(s.is_watched(&id(0)) && s.is_watched(&id(1)));
    }

    #[test]
    fn same_seed_same_run() {
        let run = || {
            let mut net = Net::new(6, 16, d(7));
            net.mesh();
            net.cut.insert((2, 3));
            net.run_until(ms(5_000));
            net.up[4] = false;
            net.run_until(ms(10_000));
            (net.sent, net.dead)
        };
        assert_eq!(run(), run());
    }
}
