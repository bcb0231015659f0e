//! Client geolocation: which region a request comes from.
//!
//! In order: a trusted CDN country header (e.g. `CF-IPCountry`), only when
//! the connection comes from a trusted range; a MaxMind-format country
//! database (GeoIP2 `country.iso_code` or the ip-location-db
//! `country_code` layout) looked up on the client address; else the edge's
//! own region. The client address is the peer, or — when the peer is a
//! trusted proxy — the last hop it appended to `X-Forwarded-For`. Country →
//! region comes from the upstream regions' country lists (the topology).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;
use maxminddb::{Reader, path};
use pingora::http::RequestHeader;

use crate::config::GeoConfig;

#[derive(Debug, thiserror::Error)]
#[error("geo database {path}: {source}")]
pub struct GeoError {
    path: String,
    source: maxminddb::MaxMindDbError,
}

/// How the client's region was decided (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeoSource {
    Header,
    Database,
    Default,
}

impl GeoSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Header => "header",
            Self::Database => "database",
            Self::Default => "default",
        }
    }
}

pub struct Geo {
    trusted_header: Option<http::HeaderName>,
    trusted_ranges: Vec<IpNet>,
    database: Option<Reader<Vec<u8>>>,
    /// Upper-case ISO 3166-1 alpha-2 → index of the region serving it.
    countries: HashMap<String, usize>,
}

impl Geo {
    /// `regions` lists each region's countries, in router order.
    pub fn new(config: &GeoConfig, regions: &[Vec<String>]) -> Result<Self, GeoError> {
        let database = config
            .database
            .as_deref()
            .map(|path: &Path| {
                Reader::open_readfile(path).map_err(|source| GeoError {
                    path: path.display().to_string(),
                    source,
                })
            })
            .transpose()?;
        let countries = regions
            .iter()
            .enumerate()
            .flat_map(|(index, countries)| {
                countries
                    .iter()
                    .map(move |country| (country.to_ascii_uppercase(), index))
            })
            .collect();
        Ok(Self {
            trusted_header: config
                .trusted_header
                .as_deref()
                .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok()),
            trusted_ranges: config.trusted_ranges.clone(),
            database,
            countries,
        })
    }

    fn trusted(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|ip| self.trusted_ranges.iter().any(|net| net.contains(&ip)))
    }

    /// The client's address: the peer, or the last `X-Forwarded-For` hop
    /// when the peer is a trusted proxy.
    pub fn client_ip(&self, request: &RequestHeader, peer: Option<IpAddr>) -> Option<IpAddr> {
        if self.trusted(peer) {
            // Only the rightmost hop was written by the trusted proxy; the
            // ones before it are whatever the client sent.
            let forwarded = request
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .next_back()
                .and_then(|hop| hop.trim().parse::<IpAddr>().ok());
            if forwarded.is_some() {
                return forwarded;
            }
        }
        peer
    }

    fn country_from_database(&self, ip: IpAddr) -> Option<String> {
        let result = self.database.as_ref()?.lookup(ip).ok()?;
        let code: Option<String> = result
            .decode_path(&path!["country_code"])
            .ok()
            .flatten()
            .or_else(|| {
                result
                    .decode_path(&path!["country", "iso_code"])
                    .ok()
                    .flatten()
            });
        code
    }

    /// The client's region index (into the router's regions), if the
    /// header or the database names a country some region serves.
    pub fn locate(
        &self,
        request: &RequestHeader,
        peer: Option<IpAddr>,
    ) -> Option<(usize, GeoSource)> {
        if let Some(name) = &self.trusted_header
            && self.trusted(peer)
            && let Some(country) = request.headers.get(name).and_then(|v| v.to_str().ok())
            && let Some(index) = self.countries.get(&country.trim().to_ascii_uppercase())
        {
            return Some((*index, GeoSource::Header));
        }
        let ip = self.client_ip(request, peer)?;
        let country = self.country_from_database(ip)?;
        self.countries
            .get(&country.to_ascii_uppercase())
            .map(|index| (*index, GeoSource::Database))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(trusted: &[&str]) -> Geo {
        let config = GeoConfig {
            trusted_header: Some("cf-ipcountry".into()),
            trusted_ranges: trusted.iter().map(|r| r.parse().unwrap()).collect(),
            database: None,
        };
        Geo::new(
            &config,
            &[vec!["US".into()], vec!["DE".into(), "fr".into()]],
        )
        .unwrap()
    }

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn trusted_header_only_from_trusted_peers() {
        let geo = geo(&["10.0.0.0/8"]);
        let r = request(&[("cf-ipcountry", "FR")]);
        assert_eq!(
            geo.locate(&r, Some("10.1.2.3".parse().unwrap())),
            Some((1, GeoSource::Header))
        );
        assert_eq!(geo.locate(&r, Some("192.0.2.1".parse().unwrap())), None);
    }

    #[test]
    fn forwarded_for_is_used_only_behind_a_trusted_proxy() {
        let geo = geo(&["10.0.0.0/8"]);
        let r = request(&[("x-forwarded-for", "203.0.113.9, 198.51.100.7")]);
        assert_eq!(
            geo.client_ip(&r, Some("10.0.0.1".parse().unwrap())),
            Some("198.51.100.7".parse().unwrap())
        );
        assert_eq!(
            geo.client_ip(&r, Some("192.0.2.1".parse().unwrap())),
            Some("192.0.2.1".parse().unwrap())
        );
        // A garbage last hop does not let an earlier, client-written one in.
        let r = request(&[("x-forwarded-for", "203.0.113.9, nonsense")]);
        assert_eq!(
            geo.client_ip(&r, Some("10.0.0.1".parse().unwrap())),
            Some("10.0.0.1".parse().unwrap())
        );
    }
}
