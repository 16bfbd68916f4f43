//! The protocol as sans-IO state machines: no sockets, no tokio, no clock. Every call takes
//! the current [`Time`]; randomness comes from seeded generators.

pub mod hyparview;
pub mod plumtree;
pub mod presence;
pub mod swim;
pub mod time;

pub use time::Time;
