//! Networking: the real-world side of Starling (feature `net`, on by default).
//!
//! - [`transport`]: QUIC endpoints and connections whose TLS identity is the node's
//!   Ed25519 key, with length-prefixed frames on two stream classes.
//! - [`addr`]: the transport address carried in [`PeerInfo`](crate::wire::PeerInfo).
//! - `driver` (internal): the actor that owns the protocol state and drives it over the
//!   transport; `queue` (internal): the bounded queues to the application. The public
//!   face of both is [`crate::node`].
//! - [`fault`]: fault injection (loss, latency, partitions) for tests and benchmarks, off
//!   by default.
//! - [`verify`]: the node's signature checker (the wire's verdicts at about half the cost).
//!
//! The simulator builds without this module (`--no-default-features`), so nothing in
//! `proto`, `wire` or `identity` depends on it.

pub mod addr;
pub(crate) mod driver;
pub mod fault;
pub(crate) mod queue;
pub mod transport;
pub mod verify;

pub use transport::{
    Connection, Endpoint, StreamClass, TransportError, TransportOptions, CODE_BANNED,
    CODE_FRAME_TOO_LARGE, CODE_NORMAL, CODE_NOT_ADMITTED, CODE_PROTOCOL_VIOLATION, CODE_REFUSED,
    CODE_WRONG_PEER,
};
