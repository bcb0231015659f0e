//! Origins named by `host:port`, resolved again and again. In Kubernetes an
//! edge names its region's origins by a headless Service (one address per
//! ready pod) and other regions' by their multi-cluster names; pods come and
//! go, so a region's pool follows DNS instead of a list fixed at start.
//!
//! [`OriginAddress`] is the config value (`"host:port"`, an IP literal or a
//! name); [`DnsDiscovery`] is pingora's `ServiceDiscovery` over a region's
//! addresses, run by the pool's background service every
//! `health.dns_refresh`. Each address found becomes a backend that the
//! health check probes on its own. A name that fails to resolve keeps its
//! last known addresses: a DNS blip never empties a pool (the health check
//! still takes dead ones out). An IP literal is never looked up.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use async_trait::async_trait;
use parking_lot::Mutex;
use pingora::lb::Backend;
use pingora::lb::discovery::ServiceDiscovery;

/// An origin's `host:port`: an IP address (`10.0.0.7:8080`,
/// `[fd00::7]:8080`) or a DNS name (`meridian-origin-api-headless.ns.svc:8080`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OriginAddress {
    host: String,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an origin address: write host:port (a DNS name or an IP address, port 1-65535)"
)]
pub struct OriginAddressError(String);

impl OriginAddress {
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address itself when the host is an IP literal.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

/// A DNS name: dot-separated labels of letters, digits and dashes, not
/// starting or ending with a dash (RFC 1123), at most 253 characters.
fn is_dns_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

impl FromStr for OriginAddress {
    type Err = OriginAddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = || OriginAddressError(text.to_string());
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(addr.into());
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(refuse)?;
        let port: u16 = port.parse().map_err(|_| refuse())?;
        if port == 0 || !is_dns_name(host) || host.parse::<IpAddr>().is_ok() {
            return Err(refuse());
        }
        Ok(OriginAddress {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl From<SocketAddr> for OriginAddress {
    fn from(addr: SocketAddr) -> Self {
        OriginAddress {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl std::fmt::Display for OriginAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.socket_addr() {
            Some(addr) => write!(f, "{addr}"),
            None => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

impl serde::Serialize for OriginAddress {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for OriginAddress {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A region's origins as pingora discovers them: every address each name
/// resolves to, re-resolved on every update.
pub struct DnsDiscovery {
    region: String,
    addresses: Vec<OriginAddress>,
    /// Last addresses each name resolved to (index into `addresses`).
    known: Mutex<HashMap<usize, Vec<SocketAddr>>>,
    /// Until the first `discover`: what `new` resolved is fresh, so the
    /// first update needs no lookup and completes without a runtime.
    fresh: std::sync::atomic::AtomicBool,
}

impl DnsDiscovery {
    /// Resolves every address once, blocking (at start, before the
    /// listeners open): a pool starts with what DNS knows now. A name that
    /// does not resolve yet starts empty and is tried again on each update.
    pub fn new(region: &str, addresses: Vec<OriginAddress>) -> Self {
        let mut known = HashMap::new();
        for (i, address) in addresses.iter().enumerate() {
            let found: Vec<SocketAddr> = match address.socket_addr() {
                Some(addr) => vec![addr],
                None => (address.host(), address.port())
                    .to_socket_addrs()
                    .map(Iterator::collect)
                    .unwrap_or_else(|error| {
                        tracing::warn!(region, origin = %address, %error, "origin name does not resolve yet");
                        Vec::new()
                    }),
            };
            known.insert(i, found);
        }
        DnsDiscovery {
            region: region.to_string(),
            addresses,
            known: Mutex::new(known),
            fresh: std::sync::atomic::AtomicBool::new(true),
        }
    }

    fn backends(&self) -> BTreeSet<Backend> {
        self.known
            .lock()
            .values()
            .flatten()
            .map(|addr| Backend {
                addr: pingora::protocols::l4::socket::SocketAddr::Inet(*addr),
                weight: 1,
                ext: http::Extensions::new(),
            })
            .collect()
    }
}

#[async_trait]
impl ServiceDiscovery for DnsDiscovery {
    async fn discover(&self) -> pingora::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        if self.fresh.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return Ok((self.backends(), HashMap::new()));
        }
        for (i, address) in self.addresses.iter().enumerate() {
            if address.socket_addr().is_some() {
                continue;
            }
            match tokio::net::lookup_host((address.host(), address.port())).await {
                Ok(found) => {
                    let mut found: Vec<SocketAddr> = found.collect();
                    found.sort();
                    found.dedup();
                    if found.is_empty() {
                        tracing::warn!(region = %self.region, origin = %address, "origin name resolved to nothing; keeping the last addresses");
                    } else {
                        self.known.lock().insert(i, found);
                    }
                }
                Err(error) => {
                    tracing::warn!(region = %self.region, origin = %address, %error, "origin name does not resolve; keeping the last addresses")
                }
            }
        }
        Ok((self.backends(), HashMap::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn addresses_parse_as_ip_literals_or_dns_names() {
        let ip: OriginAddress = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(ip.socket_addr(), Some("127.0.0.1:8080".parse().unwrap()));
        let v6: OriginAddress = "[fd00::7]:8080".parse().unwrap();
        assert_eq!(v6.to_string(), "[fd00::7]:8080");
        let name: OriginAddress = "Meridian-Origin-API-headless.meridian-eu-west.svc:8080"
            .parse()
            .unwrap();
        assert_eq!(
            name.to_string(),
            "meridian-origin-api-headless.meridian-eu-west.svc:8080"
        );
        assert_eq!(name.socket_addr(), None);
        for bad in [
            "",
            "origin",
            "origin:",
            "origin:0",
            "origin:65536",
            ":8080",
            "-origin:8080",
            "origin-:8080",
            "a..b:8080",
            "http://origin:8080",
            "origin:80:80",
            "fd00::7:8080x",
        ] {
            assert!(
                bad.parse::<OriginAddress>().is_err(),
                "{bad:?} must be refused"
            );
        }
    }

    proptest! {
        #[test]
        fn an_address_round_trips_through_its_text(
            labels in proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", 1..4),
            port in 1u16..,
        ) {
            let text = format!("{}:{port}", labels.join("."));
            let parsed: Result<OriginAddress, _> = text.parse();
            // An all-digit name like `1.2.3` is not an IP literal either way:
            // parsed or refused, never panicking; when parsed, it round-trips.
            if let Ok(address) = parsed {
                prop_assert_eq!(address.to_string().parse::<OriginAddress>().unwrap(), address);
            }
        }
    }

    #[tokio::test]
    async fn a_name_is_resolved_and_a_failing_name_keeps_its_last_addresses() {
        let discovery = DnsDiscovery::new(
            "test",
            vec![
                "localhost:8080".parse().unwrap(),
                "10.1.2.3:8080".parse().unwrap(),
                "no-such-origin.invalid:8080".parse().unwrap(),
            ],
        );
        // The first update is what `new` resolved; the second looks again.
        let (first, _) = discovery.discover().await.unwrap();
        let (backends, _) = discovery.discover().await.unwrap();
        assert_eq!(first, backends);
        let addrs: Vec<String> = backends.iter().map(|b| b.addr.to_string()).collect();
        assert!(addrs.contains(&"10.1.2.3:8080".to_string()), "{addrs:?}");
        assert!(
            addrs
                .iter()
                .any(|a| a.ends_with(":8080") && a != "10.1.2.3:8080"),
            "localhost resolved: {addrs:?}"
        );
        // A name that stops resolving keeps what it had.
        discovery
            .known
            .lock()
            .insert(2, vec!["10.9.9.9:8080".parse().unwrap()]);
        let (backends, _) = discovery.discover().await.unwrap();
        assert!(
            backends
                .iter()
                .any(|b| b.addr.to_string() == "10.9.9.9:8080")
        );
    }
}
