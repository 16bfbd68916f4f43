//! starling-core: the Starling gossip overlay.
//!
//! - [`node`] (feature `net`, default): the runtime-owned [`node::Node`], the API that
//!   applications, the C ABI and the bindings use: subscribe, publish, presence, events,
//!   statistics.
//! - [`admission`]: private-network credentials, the admission hook, per-peer limits.
//! - [`identity`]: Ed25519 keys and [`identity::PeerId`].
//! - [`wire`]: every protocol message, signed envelopes, the frame codec and its limits.
//! - [`proto`]: the protocol as deterministic, sans-IO state machines (HyParView
//!   membership, SWIM failure detection, Plumtree broadcast, presence, topic discovery),
//!   driven by injected time and a seeded RNG. The simulator and the network driver run
//!   the very same code.
//! - `net` (feature `net`, default): the QUIC transport bound to the node identity and the
//!   actor that drives the protocol over it.
#![warn(missing_docs)]

pub mod admission;
mod ed25519;
pub mod identity;
#[cfg(feature = "net")]
pub mod net;
#[cfg(feature = "net")]
pub mod node;
pub mod proto;
pub mod wire;
