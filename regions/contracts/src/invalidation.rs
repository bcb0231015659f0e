//! The contract of the regional invalidation channel: origins publish the
//! surrogate keys they invalidated (after their region's replica holds the
//! change); other origins drop them from L1, edges purge them.

use serde::{Deserialize, Serialize};

use crate::modes::Announcement;

/// The regional Redis channel invalidations are published on.
pub const CHANNEL: &str = "meridian:invalidations";

/// One message on [`CHANNEL`], as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidationMessage {
    /// The publishing origin instance (it ignores its own messages).
    pub instance: String,
    /// Surrogate keys (`product:42`, `category:shoes`, `products`).
    pub keys: Vec<String>,
    /// Set when the origin has just applied a new operating setting of its
    /// region (`keys` is then `["modes"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modes: Option<Announcement>,
}
