//! The transport address carried in [`PeerInfo::addr`](crate::wire::PeerInfo): a compact
//! list of UDP socket addresses, in order of preference.
//!
//! Encoding: for each address one tag byte, then the IP and a big-endian port:
//! `4, a, b, c, d, port_hi, port_lo` (7 bytes) or `6, <16 bytes>, port_hi, port_lo`
//! (19 bytes). At most [`MAX_ADDRS`] addresses are written (≤ 8 × 19 = 152 bytes, inside
//! the 256-byte wire limit). Decoding is defensive: it stops at the first unknown tag or
//! truncated entry and keeps what it read before.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;

/// Most addresses encoded or decoded.
pub const MAX_ADDRS: usize = 8;

const TAG_V4: u8 = 4;
const TAG_V6: u8 = 6;

/// Encodes up to [`MAX_ADDRS`] addresses.
pub fn encode_addrs(addrs: &[SocketAddr]) -> Bytes {
    let mut out = Vec::with_capacity(addrs.len().min(MAX_ADDRS) * 19);
    for a in addrs.iter().take(MAX_ADDRS) {
        match a.ip() {
            IpAddr::V4(ip) => {
                out.push(TAG_V4);
                out.extend_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                out.push(TAG_V6);
                out.extend_from_slice(&ip.octets());
            }
        }
        out.extend_from_slice(&a.port().to_be_bytes());
    }
    Bytes::from(out)
}

/// Decodes what [`encode_addrs`] wrote; never fails, never panics: garbage yields the
/// valid prefix (possibly nothing). Port 0 and unspecified IPs are skipped (undialable).
pub fn decode_addrs(bytes: &[u8]) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while out.len() < MAX_ADDRS {
        let Some((&tag, body)) = rest.split_first() else {
            break;
        };
        let (ip, after): (IpAddr, &[u8]) = match tag {
            TAG_V4 if body.len() >= 6 => {
                let mut o = [0u8; 4];
                o.copy_from_slice(&body[..4]);
                (Ipv4Addr::from(o).into(), &body[4..])
            }
            TAG_V6 if body.len() >= 18 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&body[..16]);
                (Ipv6Addr::from(o).into(), &body[16..])
            }
            _ => break,
        };
        let port = u16::from_be_bytes([after[0], after[1]]);
        rest = &after[2..];
        if port != 0 && !ip.is_unspecified() {
            out.push(SocketAddr::new(ip, port));
        }
    }
    out
}

/// The addresses to advertise for a socket bound at `bound`: itself when bound to a
/// specific IP; for an unspecified IP (0.0.0.0 / ::), the local address of the default
/// route (found without sending a packet) and then loopback.
pub fn advertised_addrs(bound: SocketAddr) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let port = bound.port();
    let mut out = Vec::new();
    let probes: &[(&str, &str)] = if bound.is_ipv4() {
        &[("0.0.0.0:0", "192.0.2.1:9")]
    } else {
        &[("[::]:0", "[2001:db8::1]:9"), ("0.0.0.0:0", "192.0.2.1:9")]
    };
    for (local, remote) in probes {
        // connect() on UDP only picks a route; nothing is sent.
        let found = std::net::UdpSocket::bind(local)
            .and_then(|s| s.connect(remote).map(|_| s))
            .and_then(|s| s.local_addr());
        if let Ok(a) = found {
            if !a.ip().is_unspecified() && !a.ip().is_loopback() {
                out.push(SocketAddr::new(a.ip(), port));
            }
        }
    }
    out.push(if bound.is_ipv4() {
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)
    } else {
        SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port)
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_defensive_decoding() {
        let addrs: Vec<SocketAddr> = vec![
            "127.0.0.1:4000".parse().unwrap(),
            "[::1]:5000".parse().unwrap(),
            "10.1.2.3:65535".parse().unwrap(),
        ];
        let enc = encode_addrs(&addrs);
        assert_eq!(enc.len(), 7 + 19 + 7);
        assert_eq!(decode_addrs(&enc), addrs);
        // Truncated: the valid prefix survives.
        assert_eq!(decode_addrs(&enc[..enc.len() - 1]), addrs[..2].to_vec());
        // Garbage and unknown tags: nothing, no panic.
        assert!(decode_addrs(&[9, 1, 2, 3]).is_empty());
        assert!(decode_addrs(&[]).is_empty());
        assert!(decode_addrs(&[4, 0, 0, 0, 0, 0, 80]).is_empty());
        let many = vec![addrs[0]; 20];
        assert_eq!(decode_addrs(&encode_addrs(&many)).len(), MAX_ADDRS);
        assert!(encode_addrs(&many).len() <= 256);
        let bound: SocketAddr = "127.0.0.1:7".parse().unwrap();
        assert_eq!(advertised_addrs(bound), vec![bound]);
        let any = advertised_addrs("0.0.0.0:9".parse().unwrap());
        assert!(any
            .iter()
            .all(|a| a.port() == 9 && !a.ip().is_unspecified()));
    }
}
