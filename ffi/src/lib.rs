//! libstarling: the one shared library that carries both the C ABI ([`c_api`], header
//! `include/starling.h`) and the uniffi exports ([`uniffi_api`]) from which the Swift,
//! Kotlin and Python bindings are generated. Both are thin adapters over
//! [`starling_core::node::Node`]; neither holds protocol logic, and they do not call each
//! other.
#![warn(missing_docs)]

pub mod c_api;
pub mod logging;
pub mod uniffi_api;

uniffi::setup_scaffolding!();
