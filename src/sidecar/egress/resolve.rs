//! Name resolution for the egress proxy: one lookup per request, every address returned to the
//! decision, never a second lookup at connect time (that would let DNS rebinding swap a checked
//! public address for an internal one). `--resolve HOST:ADDR` overrides, like curl's, serve tests.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use super::decision::Host;

/// One `--resolve HOST:ADDR` entry. Several entries for one host give it several addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub host: String,
    pub addr: IpAddr,
}

impl FromStr for Override {
    type Err = String;

    fn from_str(text: &str) -> Result<Override, String> {
        let usage = "write HOST:ADDR, as in `api.example.com:127.0.0.1` or `api.example.com:[::1]`";
        let (host, addr) = text
            .split_once(':')
            .ok_or_else(|| format!("`{text}` has no `:`; {usage}"))?;
        let host = match Host::parse(host) {
            Some(Host::Name(name)) => name,
            _ => return Err(format!("`{host}` is not a host name; {usage}")),
        };
        let bare = addr
            .strip_prefix('[')
            .and_then(|a| a.strip_suffix(']'))
            .unwrap_or(addr);
        let addr = bare
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address; {usage}"))?;
        Ok(Override { host, addr })
    }
}

impl fmt::Display for Override {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(v4) => write!(f, "{}:{v4}", self.host),
            IpAddr::V6(v6) => write!(f, "{}:[{v6}]", self.host),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Resolver {
    overrides: BTreeMap<String, Vec<IpAddr>>,
    timeout: Option<Duration>,
}

/// The lookup ran out of time or the system resolver failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {why}")]
pub struct ResolveError {
    pub host: String,
    pub why: String,
}

impl Resolver {
    pub fn new(overrides: &[Override], timeout: Duration) -> Resolver {
        let mut map: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        for o in overrides {
            let addrs = map.entry(o.host.clone()).or_default();
            if !addrs.contains(&o.addr) {
                addrs.push(o.addr);
            }
        }
        Resolver {
            overrides: map,
            timeout: Some(timeout),
        }
    }

    /// Every address of `host`, in the resolver's order, without duplicates. An override, when
    /// present, is the whole answer: the system resolver is not asked.
    pub async fn resolve(&self, host: &Host) -> Result<Vec<IpAddr>, ResolveError> {
        let name = match host {
            Host::Ip(ip) => return Ok(vec![*ip]),
            Host::Name(name) => name,
        };
        if let Some(addrs) = self.overrides.get(name) {
            return Ok(addrs.clone());
        }
        let lookup = tokio::net::lookup_host((name.as_str(), 0));
        let result = match self.timeout {
            Some(limit) => tokio::time::timeout(limit, lookup)
                .await
                .unwrap_or_else(|_| {
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the lookup timed out",
                    ))
                }),
            None => lookup.await,
        };
        let found = result.map_err(|e| ResolveError {
            host: name.clone(),
            why: e.to_string(),
        })?;
        let mut addrs: Vec<IpAddr> = Vec::new();
        for sa in found {
            if !addrs.contains(&sa.ip()) {
                addrs.push(sa.ip());
            }
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_overrides() {
        let o: Override = "API.example.com:127.0.0.1".parse().unwrap();
        assert_eq!(o.host, "api.example.com");
        assert_eq!(o.addr, "127.0.0.1".parse::<IpAddr>().unwrap());
        let v6: Override = "a.test:[::1]".parse().unwrap();
        assert_eq!(v6.to_string(), "a.test:[::1]");
        let bare: Override = "a.test:fd00::1".parse().unwrap();
        assert_eq!(bare.addr, "fd00::1".parse::<IpAddr>().unwrap());
        for bad in [
            "a.test",
            "a.test:",
            "a.test:nope",
            ":1.2.3.4",
            "1.2.3.4:1.2.3.4",
            "a b:1.2.3.4",
        ] {
            assert!(bad.parse::<Override>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn overrides_are_the_whole_answer() {
        let r = Resolver::new(
            &[
                "a.test:1.1.1.1".parse().unwrap(),
                "a.test:10.0.0.1".parse().unwrap(),
                "a.test:1.1.1.1".parse().unwrap(),
            ],
            Duration::from_secs(1),
        );
        let addrs = r.resolve(&Host::Name("a.test".into())).await.unwrap();
        assert_eq!(
            addrs,
            vec![
                "1.1.1.1".parse::<IpAddr>().unwrap(),
                "10.0.0.1".parse().unwrap()
            ]
        );
        let literal = r
            .resolve(&Host::Ip("9.9.9.9".parse().unwrap()))
            .await
            .unwrap();
        assert_eq!(literal, vec!["9.9.9.9".parse::<IpAddr>().unwrap()]);
    }
}
