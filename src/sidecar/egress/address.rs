//! Address classification: which IP addresses the egress proxy refuses by default (loopback,
//! private, link-local, metadata, ...). Pure: no I/O, no policy; `decision` applies the policy.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// Why an address is refused unless `egress.allow_addresses` opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressClass {
    /// 0.0.0.0/8 and `::`: "this host" on most systems.
    Unspecified,
    /// 127.0.0.0/8 and `::1`.
    Loopback,
    /// RFC 1918: 10/8, 172.16/12, 192.168/16 (and the deprecated IPv6 site-local fec0::/10).
    Private,
    /// fc00::/7.
    UniqueLocal,
    /// 169.254/16 and fe80::/10.
    LinkLocal,
    /// 100.64/10, carrier-grade NAT.
    SharedCgnat,
    /// 224/4 and ff00::/8.
    Multicast,
    /// 198.18/15 and 2001:2::/48.
    Benchmarking,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// 169.254.169.254 and fd00:ec2::254: the cloud instance metadata services.
    CloudMetadata,
    /// 192.0.0/24, 240/4, 255.255.255.255, 100::/64, the deprecated IPv4-compatible ::/96.
    Reserved,
}

impl AddressClass {
    pub fn describe(self) -> &'static str {
        match self {
            AddressClass::Unspecified => "an unspecified address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private (RFC 1918) address",
            AddressClass::UniqueLocal => "a unique local (fc00::/7) address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::SharedCgnat => "a carrier-grade NAT (100.64.0.0/10) address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Benchmarking => "a benchmarking address",
            AddressClass::Documentation => "a documentation address",
            AddressClass::CloudMetadata => "the cloud metadata address",
            AddressClass::Reserved => "a reserved address",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The class that makes `addr` refused by default, or `None` for an ordinary public address.
/// IPv4-mapped (`::ffff:a.b.c.d`) and NAT64 (`64:ff9b::a.b.c.d`) addresses are judged by the IPv4
/// address they carry, so that a mapped loopback is still loopback.
pub fn restricted_class(addr: IpAddr) -> Option<AddressClass> {
    match addr {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

const V4_TABLE: &[([u8; 4], u8, AddressClass)] = &[
    // Most specific first: the metadata address sits inside link-local.
    ([169, 254, 169, 254], 32, AddressClass::CloudMetadata),
    ([0, 0, 0, 0], 8, AddressClass::Unspecified),
    ([10, 0, 0, 0], 8, AddressClass::Private),
    ([100, 64, 0, 0], 10, AddressClass::SharedCgnat),
    ([127, 0, 0, 0], 8, AddressClass::Loopback),
    ([169, 254, 0, 0], 16, AddressClass::LinkLocal),
    ([172, 16, 0, 0], 12, AddressClass::Private),
    ([192, 0, 0, 0], 24, AddressClass::Reserved),
    ([192, 0, 2, 0], 24, AddressClass::Documentation),
    ([192, 168, 0, 0], 16, AddressClass::Private),
    ([198, 18, 0, 0], 15, AddressClass::Benchmarking),
    ([198, 51, 100, 0], 24, AddressClass::Documentation),
    ([203, 0, 113, 0], 24, AddressClass::Documentation),
    ([224, 0, 0, 0], 4, AddressClass::Multicast),
    // 240/4 includes the broadcast address 255.255.255.255.
    ([240, 0, 0, 0], 4, AddressClass::Reserved),
];

fn v4_class(addr: Ipv4Addr) -> Option<AddressClass> {
    let a = u32::from(addr);
    V4_TABLE.iter().find_map(|(net, prefix, class)| {
        let mask = u32::MAX << (32 - u32::from(*prefix));
        (a & mask == u32::from_be_bytes(*net)).then_some(*class)
    })
}

const V6_TABLE: &[(u128, u8, AddressClass)] = &[
    (
        0xfd00_0ec2_0000_0000_0000_0000_0000_0254,
        128,
        AddressClass::CloudMetadata,
    ),
    (0, 128, AddressClass::Unspecified),
    (1, 128, AddressClass::Loopback),
    // IPv4-compatible addresses (deprecated); `::` and `::1` are matched above.
    (0, 96, AddressClass::Reserved),
    (
        0x0100_0000_0000_0000_0000_0000_0000_0000,
        64,
        AddressClass::Reserved,
    ),
    (
        0x2001_0002_0000_0000_0000_0000_0000_0000,
        48,
        AddressClass::Benchmarking,
    ),
    (
        0x2001_0db8_0000_0000_0000_0000_0000_0000,
        32,
        AddressClass::Documentation,
    ),
    (
        0x3fff_0000_0000_0000_0000_0000_0000_0000,
        20,
        AddressClass::Documentation,
    ),
    (
        0xfc00_0000_0000_0000_0000_0000_0000_0000,
        7,
        AddressClass::UniqueLocal,
    ),
    (
        0xfe80_0000_0000_0000_0000_0000_0000_0000,
        10,
        AddressClass::LinkLocal,
    ),
    (
        0xfec0_0000_0000_0000_0000_0000_0000_0000,
        10,
        AddressClass::Private,
    ),
    (
        0xff00_0000_0000_0000_0000_0000_0000_0000,
        8,
        AddressClass::Multicast,
    ),
];

/// NAT64's well-known prefix, 64:ff9b::/96: the last 32 bits are an IPv4 address.
const NAT64_PREFIX: u128 = 0x0064_ff9b_0000_0000_0000_0000_0000_0000;

fn v6_class(addr: Ipv6Addr) -> Option<AddressClass> {
    if let Some(v4) = addr.to_ipv4_mapped() {
        return v4_class(v4);
    }
    let a = u128::from(addr);
    if a >> 32 == NAT64_PREFIX >> 32 {
        return v4_class(Ipv4Addr::from(a as u32));
    }
    V6_TABLE.iter().find_map(|(net, prefix, class)| {
        let shift = 128 - u32::from(*prefix);
        let same = if shift == 0 {
            a == *net
        } else {
            a >> shift == net >> shift
        };
        same.then_some(*class)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(text: &str) -> Option<AddressClass> {
        restricted_class(text.parse().unwrap())
    }

    #[test]
    fn refuses_every_local_and_special_range() {
        use AddressClass::*;
        let cases = [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.1", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", SharedCgnat),
            ("100.127.255.255", SharedCgnat),
            ("169.254.1.1", LinkLocal),
            ("169.254.169.254", CloudMetadata),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.255", Benchmarking),
            ("192.0.2.1", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("192.0.0.8", Reserved),
            ("240.0.0.1", Reserved),
            ("255.255.255.255", Reserved),
            ("::", Unspecified),
            ("::1", Loopback),
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.1.2.3", Private),
            ("::ffff:169.254.169.254", CloudMetadata),
            ("64:ff9b::7f00:1", Loopback),
            ("::127.0.0.1", Reserved),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("fd00:ec2::254", CloudMetadata),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", Private),
            ("ff02::1", Multicast),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("2001:2::1", Benchmarking),
            ("100::1", Reserved),
        ];
        for (addr, want) in cases {
            assert_eq!(class(addr), Some(want), "{addr}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.255.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
            "fbff::1",
            "2001:db9::1",
        ] {
            assert_eq!(class(addr), None, "{addr}");
        }
    }
}
