//! `starling_config`: the settings a node starts with. Every setter validates its value
//! at once, so a bad value is reported where it was set.

use std::ffi::c_char;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use starling_core::identity::{Keypair, PeerId};
use starling_core::node::{Config, Identity};

use super::{boundary, bytes, cstr, need, starling_result, Fail};

/// Settings for `starling_node_start` (opaque). Create with `starling_config_new`, change
/// with the `starling_config_*` setters, free with `starling_config_free`. Starting a
/// node copies it, so one config can start several nodes and be freed right after.
/// A config is not thread-safe: use it from one thread at a time.
pub struct starling_config {
    pub(crate) inner: Config,
}

fn invalid(message: String) -> Fail {
    Fail::new(starling_result::InvalidArgument, message)
}

fn bad_address(message: String) -> Fail {
    Fail::new(starling_result::InvalidAddress, message)
}

/// Checks `"host:port"` or `"<64 hex peer id>@host:port"` the way the node will.
pub(crate) fn check_peer(input: &str) -> Result<(), Fail> {
    let bad = |why: &str| bad_address(format!("invalid peer address {input:?}: {why}"));
    let s = input.trim();
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let hostport = match s.split_once('@') {
        Some((id, rest)) => {
            id.parse::<PeerId>()
                .map_err(|_| bad("the peer id must be 64 hex digits"))?;
            rest
        }
        None => s,
    };
    let usable = hostport
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve: {e}")))?
        .any(|a| a.port() != 0 && !a.ip().is_unspecified());
    if !usable {
        return Err(bad("no usable address (port 0 or unspecified IP)"));
    }
    Ok(())
}

/// Runs `f` on the config behind `config` (checked for NULL).
pub(crate) fn with_config(
    config: *mut starling_config,
    f: impl FnOnce(&mut Config) -> Result<(), Fail>,
) -> starling_result {
    boundary(|| {
        need(config, "config")?;
        // SAFETY: non-NULL; a live config from starling_config_new (documented contract).
        f(&mut unsafe { &mut *config }.inner)
    })
}

/// Creates a config with the defaults: bind `0.0.0.0:0`, no bootstrap peers, a freshly
/// generated identity, network id `"starling"`, 64 KiB payloads, 60 s presence TTL,
/// 2 worker threads, 1,024 items per subscription queue, 512 connections.
///
/// Writes the new config to `*out`; free it with `starling_config_free`.
/// Errors: `NULL_PARAMETER`.
#[no_mangle]
pub extern "C" fn starling_config_new(out: *mut *mut starling_config) -> starling_result {
    boundary(|| {
        need(out, "out")?;
        let config = Box::new(starling_config {
            inner: Config::default(),
        });
        // SAFETY: out is non-NULL and writable (documented contract).
        unsafe { *out = Box::into_raw(config) };
        Ok(())
    })
}

/// Frees a config. NULL is a no-op. Nodes started from it are not affected.
#[no_mangle]
pub extern "C" fn starling_config_free(config: *mut starling_config) {
    boundary_or_unit(|| {
        if !config.is_null() {
            // SAFETY: from starling_config_new, freed once (documented contract).
            drop(unsafe { Box::from_raw(config) });
        }
    })
}

fn boundary_or_unit(f: impl FnOnce()) {
    super::boundary_or((), f)
}

/// Sets the UDP address to bind, NUL-terminated: `"0.0.0.0:0"` (default: all
/// interfaces, a free port), `"127.0.0.1:0"`, `"[::]:4000"`, `"localhost:7000"`.
/// Errors: `NULL_PARAMETER`, `INVALID_ARGUMENT` (not UTF-8), `INVALID_ADDRESS`.
#[no_mangle]
pub extern "C" fn starling_config_set_bind(
    config: *mut starling_config,
    addr: *const c_char,
) -> starling_result {
    with_config(config, |c| {
        // SAFETY: documented contract (NUL-terminated).
        let addr = unsafe { cstr(addr, "addr") }?;
        let resolved = addr
            .trim()
            .to_socket_addrs()
            .map_err(|e| bad_address(format!("invalid bind address {addr:?}: {e}")))?
            .next();
        if resolved.is_none() {
            return Err(bad_address(format!(
                "bind address {addr:?} resolves to no address"
            )));
        }
        c.bind = addr.to_owned();
        Ok(())
    })
}

/// Adds an address to advertise to peers instead of the bound one (e.g. a public address
/// behind port forwarding): a numeric `"ip:port"`, NUL-terminated. Without any, the node
/// advertises its bound address (or, bound to all interfaces, its default route's address
/// and loopback).
/// Errors: `NULL_PARAMETER`, `INVALID_ARGUMENT` (not UTF-8), `INVALID_ADDRESS`.
#[no_mangle]
pub extern "C" fn starling_config_add_advertise(
    config: *mut starling_config,
    addr: *const c_char,
) -> starling_result {
    with_config(config, |c| {
        // SAFETY: documented contract.
        let addr = unsafe { cstr(addr, "addr") }?;
        let parsed: SocketAddr = addr.trim().parse().map_err(|_| {
            bad_address(format!(
                "advertise address {addr:?} is not a numeric ip:port"
            ))
        })?;
        if parsed.port() == 0 || parsed.ip().is_unspecified() {
            return Err(bad_address(format!(
                "advertise address {addr:?} has port 0 or an unspecified IP"
            )));
        }
        c.advertise.push(parsed);
        Ok(())
    })
}

/// Adds a bootstrap peer, joined when the node starts: `"host:port"`, or
/// `"<64 hex peer id>@host:port"` to also check the peer's identity (what
/// `starling_node_contact` prints). NUL-terminated.
/// Errors: `NULL_PARAMETER`, `INVALID_ARGUMENT` (not UTF-8), `INVALID_ADDRESS`.
#[no_mangle]
pub extern "C" fn starling_config_add_bootstrap(
    config: *mut starling_config,
    peer: *const c_char,
) -> starling_result {
    with_config(config, |c| {
        // SAFETY: documented contract.
        let peer = unsafe { cstr(peer, "peer") }?;
        check_peer(peer)?;
        c.bootstrap.push(peer.to_owned());
        Ok(())
    })
}

/// Uses the identity key in the file at `path` (NUL-terminated), creating it with a new
/// key (mode 0600) when the node starts if it does not exist. A bad or unreadable file
/// makes `starling_node_start` fail with `STARLING_RESULT_IDENTITY`.
/// Errors: `NULL_PARAMETER`, `INVALID_ARGUMENT` (empty or not UTF-8).
#[no_mangle]
pub extern "C" fn starling_config_set_identity_file(
    config: *mut starling_config,
    path: *const c_char,
) -> starling_result {
    with_config(config, |c| {
        // SAFETY: documented contract.
        let path = unsafe { cstr(path, "path") }?;
        if path.is_empty() {
            return Err(invalid("the identity file path is empty".to_owned()));
        }
        c.identity = Identity::File(path.into());
        Ok(())
    })
}

/// Uses the identity derived from a 32-byte secret seed (`seed` points to 32 bytes; keep
/// it secret: it is the node's private key). For tests and hosts that store keys
/// themselves. Errors: `NULL_PARAMETER`.
#[no_mangle]
pub extern "C" fn starling_config_set_identity_seed(
    config: *mut starling_config,
    seed: *const u8,
) -> starling_result {
    with_config(config, |c| {
        // SAFETY: documented contract: 32 readable bytes.
        let raw = unsafe { bytes(seed, 32, "seed") }?;
        let mut key = [0u8; 32];
        key.copy_from_slice(raw);
        c.identity = Identity::Key(Keypair::from_seed(key));
        Ok(())
    })
}

/// Uses a fresh random identity at every start (the default).
/// Errors: `NULL_PARAMETER`.
#[no_mangle]
pub extern "C" fn starling_config_generate_identity(
    config: *mut starling_config,
) -> starling_result {
    with_config(config, |c| {
        c.identity = Identity::Generate;
        Ok(())
    })
}

/// Sets the network id (1 to 200 bytes of UTF-8, NUL-terminated): nodes of different
/// networks never connect. Default `"starling"`.
/// Errors: `NULL_PARAMETER`, `INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn starling_config_set_network_id(
    config: *mut starling_config,
    network_id: *const c_char,
) -> starling_result {
    with_config(config, |c| {
        // SAFETY: documented contract.
        let id = unsafe { cstr(network_id, "network_id") }?;
        if id.is_empty() || id.len() > 200 {
            return Err(invalid(format!(
                "the network id must be 1 to 200 bytes, not {}",
                id.len()
            )));
        }
        c.network_id = id.to_owned();
        Ok(())
    })
}

/// Sets the largest payload this node publishes or accepts, 1 byte to 16 MiB (default
/// 64 KiB). Errors: `NULL_PARAMETER`, `INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn starling_config_set_max_payload(
    config: *mut starling_config,
    bytes: usize,
) -> starling_result {
    with_config(config, |c| {
        if bytes == 0 || bytes > 16 << 20 {
            return Err(invalid(format!(
                "max_payload must be 1 to 16777216 bytes, not {bytes}"
            )));
        }
        c.max_payload = bytes;
        Ok(())
    })
}

/// Sets how long a presence record lives without refresh, 1 s to 1 day in milliseconds
/// (default 60,000; refreshed every third of it).
/// Errors: `NULL_PARAMETER`, `INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn starling_config_set_presence_ttl_ms(
    config: *mut starling_config,
    ttl_ms: u64,
) -> starling_result {
    with_config(config, |c| {
        if !(1_000..=86_400_000).contains(&ttl_ms) {
            return Err(invalid(format!(
                "presence_ttl_ms must be 1000 to 86400000, not {ttl_ms}"
            )));
        }
        c.presence_ttl = Duration::from_millis(ttl_ms);
        Ok(())
    })
}

/// Sets the number of threads that run the node's networking, 1 to 256 (default 2).
/// Errors: `NULL_PARAMETER`, `INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn starling_config_set_worker_threads(
    config: *mut starling_config,
    threads: usize,
) -> starling_result {
    with_config(config, |c| {
        if !(1..=256).contains(&threads) {
            return Err(invalid(format!(
                "worker_threads must be 1 to 256, not {threads}"
            )));
        }
        c.worker_threads = threads;
        Ok(())
    })
}

/// Sets how many items a subscription buffers for a slow callback before the oldest are
/// dropped and `on_lagged` reports how many, 1 to 1,048,576 (default 1,024).
/// Errors: `NULL_PARAMETER`, `INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn starling_config_set_subscription_queue(
    config: *mut starling_config,
    items: usize,
) -> starling_result {
    with_config(config, |c| {
        if !(1..=1 << 20).contains(&items) {
            return Err(invalid(format!(
                "subscription_queue must be 1 to 1048576, not {items}"
            )));
        }
        c.subscription_queue = items;
        Ok(())
    })
}

/// Sets the most connections open at once, 1 to 65,536 (default 512).
/// Errors: `NULL_PARAMETER`, `INVALID_ARGUMENT`.
#[no_mangle]
pub extern "C" fn starling_config_set_max_connections(
    config: *mut starling_config,
    connections: usize,
) -> starling_result {
    with_config(config, |c| {
        if !(1..=65_536).contains(&connections) {
            return Err(invalid(format!(
                "max_connections must be 1 to 65536, not {connections}"
            )));
        }
        c.max_connections = connections;
        Ok(())
    })
}

/// Seeds the protocol's random choices (peer sampling, timers' jitter) so that runs are
/// reproducible; by default they are seeded randomly. Errors: `NULL_PARAMETER`.
#[no_mangle]
pub extern "C" fn starling_config_set_seed(
    config: *mut starling_config,
    seed: u64,
) -> starling_result {
    with_config(config, |c| {
        c.seed = Some(seed);
        Ok(())
    })
}
