//! Address ranges (`10.20.0.0/16`, `fd00::/8`, or one address) that a policy opens on purpose,
//! for example a company registry on a private network. Canonical form: the network address with
//! host bits zero and an explicit prefix length.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::validate::Invalid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddressRange {
    pub network: IpAddr,
    pub prefix: u8,
}

impl AddressRange {
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => mask_eq(
                u128::from(u32::from(net)),
                u128::from(u32::from(a)),
                self.prefix,
                32,
            ),
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                mask_eq(u128::from(net), u128::from(a), self.prefix, 128)
            }
            _ => false,
        }
    }
}

fn mask_eq(a: u128, b: u128, prefix: u8, bits: u8) -> bool {
    let shift = u32::from(bits - prefix);
    if shift >= 128 {
        return true;
    }
    (a >> shift) == (b >> shift)
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for AddressRange {
    type Err = Invalid;

    fn from_str(text: &str) -> Result<Self, Invalid> {
        let hint = "write an address range such as `10.20.0.0/16` or `fd00:1::/64`, or one address";
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| Invalid::new(format!("`{addr}` is not an IP address")).help(hint))?;
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= bits && (p == "0" || !p.starts_with('0')) => n,
                _ => {
                    return Err(
                        Invalid::new(format!("`/{p}` is not a prefix length up to {bits}"))
                            .help(hint),
                    )
                }
            },
        };
        if prefix == 0 {
            return Err(Invalid::new(format!("`{text}` opens every address")).help(
                "name the ranges the guest needs; the whole internet is what a bottle keeps out",
            ));
        }
        let range = AddressRange { network, prefix };
        let zeroed = AddressRange {
            network: zero_host_bits(network, prefix),
            prefix,
        };
        if zeroed != range {
            return Err(Invalid::new(format!("`{text}` has host bits set"))
                .help(format!("did you mean `{zeroed}`?")));
        }
        Ok(range)
    }
}

fn zero_host_bits(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

impl Serialize for AddressRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AddressRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let range: AddressRange = text.parse().map_err(serde::de::Error::custom)?;
        if range.to_string() != text {
            return Err(serde::de::Error::custom(format!(
                "address range `{text}` is not in canonical form `{range}`"
            )));
        }
        Ok(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let r: AddressRange = "10.20.0.0/16".parse().unwrap();
        assert!(r.contains("10.20.3.4".parse().unwrap()));
        assert!(!r.contains("10.21.0.1".parse().unwrap()));
        assert!(!r.contains("::1".parse().unwrap()));
        let one: AddressRange = "198.18.0.7".parse().unwrap();
        assert_eq!(one.to_string(), "198.18.0.7/32");
        assert!(one.contains("198.18.0.7".parse().unwrap()));
        let v6: AddressRange = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
    }

    #[test]
    fn rejects_sloppy_ranges() {
        for bad in [
            "10.20.0.1/16",
            "0.0.0.0/0",
            "10.0.0.0/33",
            "10.0.0.0/08",
            "nope",
            "::/0",
        ] {
            assert!(bad.parse::<AddressRange>().is_err(), "{bad}");
        }
    }
}
