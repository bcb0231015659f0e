//! Operating modes: how a region behaves, switched by ops without a
//! deploy. The stored form is a global default plus per-region overrides
//! ([`ModeTable`]); every process works from the [`Effective`] setting of
//! its own region.
//!
//! - [`Mode`]: `normal`, `degraded` (stale cache longer, non-essential
//!   features off, checkout through the waiting room), `read-only` (browse
//!   only), `maintenance` (a static answer at the edge).
//! - [`Feature`]: switches that a mode turns on or off by default and ops
//!   can set explicitly (an explicit switch wins: region, then global).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A region's operating mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Normal,
    Degraded,
    ReadOnly,
    Maintenance,
}

impl Mode {
    pub const ALL: [Mode; 4] = [
        Mode::Normal,
        Mode::Degraded,
        Mode::ReadOnly,
        Mode::Maintenance,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Degraded => "degraded",
            Mode::ReadOnly => "read-only",
            Mode::Maintenance => "maintenance",
        }
    }

    pub fn parse(text: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A feature switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    Recommendations,
    SearchSuggestions,
    Reviews,
    /// Checkout (and flash-sale claims) through the edge's waiting room.
    CheckoutQueueing,
}

impl Feature {
    pub const ALL: [Feature; 4] = [
        Feature::Recommendations,
        Feature::SearchSuggestions,
        Feature::Reviews,
        Feature::CheckoutQueueing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Feature::Recommendations => "recommendations",
            Feature::SearchSuggestions => "search-suggestions",
            Feature::Reviews => "reviews",
            Feature::CheckoutQueueing => "checkout-queueing",
        }
    }

    pub fn parse(text: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.as_str() == text)
    }

    /// Whether the feature is on in `mode` unless switched explicitly:
    /// non-essentials are off outside `normal`, checkout queueing is on in
    /// `degraded`.
    pub fn default_in(self, mode: Mode) -> bool {
        match self {
            Feature::CheckoutQueueing => mode == Mode::Degraded,
            Feature::Recommendations | Feature::SearchSuggestions | Feature::Reviews => {
                mode == Mode::Normal
            }
        }
    }
}

impl std::fmt::Display for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One scope's stored setting: what it sets explicitly. The global default
/// always has a mode; a region's override only what differs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Setting {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(default)]
    pub features: BTreeMap<Feature, bool>,
}

/// What one region runs with: its mode and every feature's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Effective {
    pub mode: Mode,
    pub features: BTreeMap<Feature, bool>,
}

impl Effective {
    pub fn enabled(&self, feature: Feature) -> bool {
        self.features
            .get(&feature)
            .copied()
            .unwrap_or_else(|| feature.default_in(self.mode))
    }
}

impl Default for Effective {
    fn default() -> Self {
        ModeTable::default().effective("")
    }
}

/// A region's setting as an origin applies it: what `GET /v1/modes`
/// answers and what an origin announces on the regional invalidation
/// channel when it applied a change, so edges follow without asking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Announcement {
    pub region: String,
    pub mode: Mode,
    pub features: BTreeMap<Feature, bool>,
    /// When the newest stored row it derives from was written (Unix ms):
    /// a receiver keeps the newest and ignores older announcements (an
    /// origin whose replica lags).
    pub changed_at_ms: i64,
    /// The announcing origin could not read the table on its last try.
    #[serde(default)]
    pub stale: bool,
}

impl Announcement {
    pub fn effective(&self) -> Effective {
        Effective {
            mode: self.mode,
            features: self.features.clone(),
        }
    }
}

/// The global default and the regions' overrides, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModeTable {
    pub global: Setting,
    #[serde(default)]
    pub regions: BTreeMap<String, Setting>,
}

impl ModeTable {
    /// Region `region`'s setting: its own mode, else the global one, else
    /// `normal`; each feature as switched for the region, else globally,
    /// else the mode's default.
    pub fn effective(&self, region: &str) -> Effective {
        let own = self.regions.get(region);
        let mode = own
            .and_then(|s| s.mode)
            .or(self.global.mode)
            .unwrap_or(Mode::Normal);
        let features = Feature::ALL
            .into_iter()
            .map(|feature| {
                let on = own
                    .and_then(|s| s.features.get(&feature))
                    .or_else(|| self.global.features.get(&feature))
                    .copied()
                    .unwrap_or_else(|| feature.default_in(mode));
                (feature, on)
            })
            .collect();
        Effective { mode, features }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_inherits_what_it_does_not_set() {
        let mut table = ModeTable::default();
        assert_eq!(table.effective("eu-west").mode, Mode::Normal);
        assert!(table.effective("eu-west").enabled(Feature::Recommendations));
        assert!(
            !table
                .effective("eu-west")
                .enabled(Feature::CheckoutQueueing)
        );

        table.global.features.insert(Feature::Reviews, false);
        table.regions.insert(
            "us-east".into(),
            Setting {
                mode: Some(Mode::Degraded),
                features: BTreeMap::from([(Feature::Recommendations, true)]),
            },
        );
        let east = table.effective("us-east");
        assert_eq!(east.mode, Mode::Degraded);
        // Explicit region switch beats the mode's default.
        assert!(east.enabled(Feature::Recommendations));
        // Mode defaults: suggestions off, queueing on.
        assert!(!east.enabled(Feature::SearchSuggestions));
        assert!(east.enabled(Feature::CheckoutQueueing));
        // The global switch reaches every region.
        assert!(!east.enabled(Feature::Reviews));
        assert!(!table.effective("eu-west").enabled(Feature::Reviews));
        assert_eq!(table.effective("eu-west").mode, Mode::Normal);
    }

    #[test]
    fn names_round_trip() {
        for mode in Mode::ALL {
            assert_eq!(Mode::parse(mode.as_str()), Some(mode));
        }
        for feature in Feature::ALL {
            assert_eq!(Feature::parse(feature.as_str()), Some(feature));
        }
        assert_eq!(Mode::parse("readonly"), None);
    }
}
