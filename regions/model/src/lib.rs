//! The region topology of Meridian: one TOML file per region (under
//! `regions/topology/` in the repository), parsed into a typed model and
//! validated as a whole.
//!
//! Layout:
//! - [`region`]: the per-region file format ([`RegionFile`]) and its parts.
//! - [`Topology`] (this module): all regions together, loading and the
//!   cross-region checks (exactly one home region, countries served once,
//!   complete latency tables, shard maps covering every bucket).
//! - [`TopologyError`]: every error names the file, the field and the problem.
//! - [`shard_map`]: order sharding (user → bucket by jump hash → shard).
//!
//! The model is the lowest layer, shared by the edge, the origin and the
//! `meridian` CLI; it holds no behaviour beyond parsing, validation and
//! simple look-ups. What edge and origin exchange at run time (tokens,
//! messages, ids, modes) is `meridian-contracts` (`regions/contracts/`).

#![forbid(unsafe_code)]

pub mod region;
pub mod shard_map;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use region::{
    CatalogSection, EdgeSection, Endpoint, OrderShard, OrdersSection, OriginSection, RegionFile,
    ReplicaEndpoint, is_slug,
};

/// The directory, relative to the workspace root, that holds the shipped
/// region files.
pub const DEFAULT_TOPOLOGY_DIR: &str = "regions/topology";

/// The shipped region files, embedded so `meridian up` works from any
/// directory (the "embedded defaults").
pub const EMBEDDED_REGIONS: &[(&str, &str)] = &[
    ("us-east.toml", include_str!("../../topology/us-east.toml")),
    ("eu-west.toml", include_str!("../../topology/eu-west.toml")),
    (
        "ap-southeast.toml",
        include_str!("../../topology/ap-southeast.toml"),
    ),
];

/// An error in the topology, always naming where it is.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: PathBuf, message: String },
    #[error("{file}: field `{field}`: {problem}")]
    Invalid {
        file: PathBuf,
        field: String,
        problem: String,
    },
    #[error("{dir}: no region files (*.toml) found")]
    Empty { dir: PathBuf },
    #[error("unknown region `{name}` (known: {known})")]
    UnknownRegion { name: String, known: String },
}

impl TopologyError {
    fn invalid(file: &Path, field: impl Into<String>, problem: impl Into<String>) -> Self {
        TopologyError::Invalid {
            file: file.to_path_buf(),
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// One region as loaded: its file and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    pub source: PathBuf,
    pub spec: RegionFile,
}

impl std::ops::Deref for Region {
    type Target = RegionFile;
    fn deref(&self) -> &RegionFile {
        &self.spec
    }
}

/// All regions, validated together. Regions are kept sorted by name.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    regions: BTreeMap<String, Region>,
}

impl Topology {
    /// Loads every `*.toml` file in `dir` as one region and validates the whole.
    pub fn load_dir(dir: &Path) -> Result<Self, TopologyError> {
        let entries = std::fs::read_dir(dir).map_err(|source| TopologyError::Read {
            file: dir.to_path_buf(),
            source,
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| TopologyError::Read {
                file: dir.to_path_buf(),
                source,
            })?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text =
                    std::fs::read_to_string(&path).map_err(|source| TopologyError::Read {
                        file: path.clone(),
                        source,
                    })?;
                files.push((path, text));
            }
        }
        if files.is_empty() {
            return Err(TopologyError::Empty {
                dir: dir.to_path_buf(),
            });
        }
        Self::from_sources(files)
    }

    /// The topology shipped with Meridian (embedded at build time).
    pub fn embedded() -> Result<Self, TopologyError> {
        Self::from_sources(
            EMBEDDED_REGIONS
                .iter()
                .map(|(name, text)| (Path::new(DEFAULT_TOPOLOGY_DIR).join(name), text.to_string())),
        )
    }

    /// Parses and validates region files given as `(path, contents)`.
    pub fn from_sources(
        sources: impl IntoIterator<Item = (PathBuf, String)>,
    ) -> Result<Self, TopologyError> {
        let mut regions = BTreeMap::new();
        for (file, text) in sources {
            let spec: RegionFile = toml::from_str(&text).map_err(|e| TopologyError::Parse {
                file: file.clone(),
                message: e.to_string().trim_end().replace('\n', " | "),
            })?;
            spec.validate(&file)?;
            if let Some(stem) = file.file_stem().and_then(|s| s.to_str())
                && stem != spec.name
            {
                return Err(TopologyError::invalid(
                    &file,
                    "name",
                    format!(
                        "region `{}` must live in a file named `{}.toml`",
                        spec.name, spec.name
                    ),
                ));
            }
            if regions.contains_key(&spec.name) {
                return Err(TopologyError::invalid(
                    &file,
                    "name",
                    format!("region `{}` is defined twice", spec.name),
                ));
            }
            regions.insert(spec.name.clone(), Region { source: file, spec });
        }
        let topology = Topology { regions };
        topology.validate()?;
        Ok(topology)
    }

    /// Cross-region checks; per-file checks are in [`RegionFile::validate`].
    pub fn validate(&self) -> Result<(), TopologyError> {
        let homes: Vec<&Region> = self.regions.values().filter(|r| r.home).collect();
        match homes.as_slice() {
            [_] => {}
            [] => {
                let any = self.regions.values().next().map(|r| r.source.clone());
                return Err(TopologyError::Invalid {
                    file: any.unwrap_or_default(),
                    field: "home".into(),
                    problem: "no region is the home region (exactly one must say `home = true`)"
                        .into(),
                });
            }
            [_, second, ..] => {
                return Err(TopologyError::invalid(
                    &second.source,
                    "home",
                    "more than one region says `home = true`",
                ));
            }
        }
        let mut served: BTreeMap<&str, &str> = BTreeMap::new();
        for region in self.regions.values() {
            for country in &region.countries {
                if let Some(other) = served.insert(country, &region.name) {
                    return Err(TopologyError::invalid(
                        &region.source,
                        "countries",
                        format!("country {country} is already served by region `{other}`"),
                    ));
                }
            }
            for peer in region.latency_ms.keys() {
                if !self.regions.contains_key(peer) {
                    return Err(TopologyError::invalid(
                        &region.source,
                        format!("latency_ms.{peer}"),
                        "no such region",
                    ));
                }
            }
            for peer in self.regions.keys().filter(|p| **p != region.name) {
                if !region.latency_ms.contains_key(peer) {
                    return Err(TopologyError::invalid(
                        &region.source,
                        "latency_ms",
                        format!("missing the latency to region `{peer}`"),
                    ));
                }
            }
        }
        let mut ports: BTreeMap<(String, u16), String> = BTreeMap::new();
        for region in self.regions.values() {
            for (field, endpoint) in region.fixed_endpoints() {
                if endpoint.port == 0 {
                    continue;
                }
                let key = (endpoint.host.clone(), endpoint.port);
                let label = format!("{}:{field}", region.name);
                if let Some(other) = ports.insert(key, label) {
                    return Err(TopologyError::invalid(
                        &region.source,
                        field,
                        format!(
                            "address {}:{} is also used by {other}",
                            endpoint.host, endpoint.port
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The home region (validated to exist exactly once).
    pub fn home(&self) -> &Region {
        // Validation guarantees exactly one home region; the fallback to the
        // first region is unreachable but keeps this total without a panic.
        self.regions
            .values()
            .find(|r| r.home)
            .or_else(|| self.regions.values().next())
            .unwrap_or_else(|| unreachable!("a topology always has at least one region"))
    }

    pub fn region(&self, name: &str) -> Result<&Region, TopologyError> {
        self.regions
            .get(name)
            .ok_or_else(|| TopologyError::UnknownRegion {
                name: name.to_string(),
                known: self.names().collect::<Vec<_>>().join(", "),
            })
    }

    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.values()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.regions.keys().map(String::as_str)
    }

    /// The region that serves an ISO 3166 alpha-2 country, if any.
    pub fn region_for_country(&self, country: &str) -> Option<&Region> {
        let country = country.to_ascii_uppercase();
        self.regions
            .values()
            .find(|r| r.countries.contains(&country))
    }

    /// Other regions ordered by latency from `from`, nearest first.
    pub fn nearest_to(&self, from: &str) -> Vec<&Region> {
        let Some(origin) = self.regions.get(from) else {
            return Vec::new();
        };
        let mut peers: Vec<(&u32, &Region)> = origin
            .latency_ms
            .iter()
            .filter_map(|(name, ms)| self.regions.get(name).map(|r| (ms, r)))
            .collect();
        peers.sort_by_key(|(ms, r)| (**ms, r.name.clone()));
        peers.into_iter().map(|(_, r)| r).collect()
    }

    /// The same topology with every port set to 0, so the launcher picks
    /// free ports (tests run many stacks side by side).
    pub fn with_ephemeral_ports(mut self) -> Topology {
        for region in self.regions.values_mut() {
            let spec = &mut region.spec;
            spec.origin.listen.port = 0;
            spec.origin.internal.port = 0;
            spec.edge.listen.port = 0;
            spec.edge.admin.port = 0;
            spec.edge.tls.port = 0;
            spec.redis.port = 0;
            if let Some(primary) = &mut spec.catalog.primary {
                primary.port = 0;
            }
            for replica in &mut spec.catalog.replicas {
                replica.port = 0;
            }
            for shard in &mut spec.orders.shards {
                shard.port = 0;
            }
        }
        self
    }

    /// Replaces the region of the same name with `spec`, re-validating.
    pub fn with_region(mut self, spec: RegionFile) -> Result<Topology, TopologyError> {
        let name = spec.name.clone();
        let region = self.region(&name)?.clone();
        spec.validate(&region.source)?;
        self.regions.insert(
            name,
            Region {
                source: region.source,
                spec,
            },
        );
        self.validate()?;
        Ok(self)
    }

    /// Keeps only the named regions; the home region must be among them,
    /// because it holds the catalog primary.
    pub fn restrict(&self, names: &[String]) -> Result<Topology, TopologyError> {
        let mut wanted = BTreeSet::new();
        for name in names {
            self.region(name)?;
            wanted.insert(name.clone());
        }
        let home = self.home();
        if !wanted.contains(&home.name) {
            return Err(TopologyError::invalid(
                &home.source,
                "home",
                format!(
                    "region `{}` holds the catalog primary and must be included",
                    home.name
                ),
            ));
        }
        let regions = self
            .regions
            .iter()
            .filter(|(name, _)| wanted.contains(*name))
            .map(|(name, region)| {
                let mut region = region.clone();
                region
                    .spec
                    .latency_ms
                    .retain(|peer, _| wanted.contains(peer));
                (name.clone(), region)
            })
            .collect();
        Ok(Topology { regions })
    }
}

#[cfg(test)]
mod tests;
