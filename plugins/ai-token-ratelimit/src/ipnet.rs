//! IP addresses and CIDR blocks for `limit_by_per_ip` keys.

use std::net::IpAddr;

/// An address block such as `10.0.0.0/8` or `2001:db8::/32`; a bare address is a `/32` or `/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let addr = addr.to_canonical();
        let bits = max_bits(&addr);
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0 to {bits}"))?,
        };
        Ok(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                same_prefix(u128::from(net), u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn max_bits(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn same_prefix(a: u128, b: u128, bits: u8, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let shift = u32::from(bits - prefix);
    (a >> shift) == (b >> shift)
}

/// The client address from a socket address (`1.2.3.4:5678`, `[::1]:5678`) or from the first
/// entry of a forwarding header (`1.2.3.4, 10.0.0.1`).
pub fn client_ip(text: &str) -> Option<IpAddr> {
    let first = text.split(',').next()?.trim();
    if let Ok(ip) = first.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(socket) = first.parse::<std::net::SocketAddr>() {
        return Some(socket.ip().to_canonical());
    }
    // `1.2.3.4:5678` without brackets is a socket address; `[::1]` without a port is not.
    first
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .ok()
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_contain_their_addresses() {
        let net = IpNet::parse("10.1.0.0/16").unwrap();
        assert!(net.contains(ip("10.1.255.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(
            net.contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped IPv6 is IPv4"
        );
        assert!(IpNet::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        let one = IpNet::parse("127.0.0.1").unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let v6 = IpNet::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
    }

    #[test]
    fn bad_blocks_are_refused() {
        assert!(IpNet::parse("10.0.0.0/33").is_err());
        assert!(IpNet::parse("10.0.0/8").is_err());
        assert!(IpNet::parse("::1/129").is_err());
        assert!(IpNet::parse("alice").is_err());
    }

    #[test]
    fn client_addresses_from_sockets_and_headers() {
        assert_eq!(client_ip("127.0.0.1:5678"), Some(ip("127.0.0.1")));
        assert_eq!(client_ip("[::1]:5678"), Some(ip("::1")));
        assert_eq!(client_ip("[::1]"), Some(ip("::1")));
        assert_eq!(
            client_ip(" 203.0.113.7, 10.0.0.1, 10.0.0.2"),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(client_ip("unknown"), None);
        assert_eq!(client_ip(""), None);
    }
}
