//! The RFC 9457 problem body (`application/problem+json`) every Meridian
//! process answers errors with: the origin's API errors and the answers the
//! edge gives by itself (rate limits, the waiting room, maintenance, a
//! refused request), so a client reads one shape wherever it came from.

use serde::{Deserialize, Serialize};

/// The media type of a problem body.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// Where Meridian's problem types live: a `type` is this plus a slug.
pub const TYPE_BASE: &str = "https://meridian.dev/problems/";

/// An RFC 9457 problem: `type`, `title`, `status`, `detail` and any
/// extension members (flattened beside them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    #[serde(flatten)]
    pub extensions: serde_json::Map<String, serde_json::Value>,
}

impl Problem {
    /// A problem of no particular type (`about:blank`).
    pub fn new(status: u16, title: impl Into<String>, detail: impl Into<String>) -> Self {
        Problem {
            kind: "about:blank".into(),
            title: title.into(),
            status,
            detail: detail.into(),
            extensions: serde_json::Map::new(),
        }
    }

    /// A problem of Meridian's type `slug` ([`TYPE_BASE`] + `slug`).
    pub fn typed(
        slug: &str,
        status: u16,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Problem {
            kind: format!("{TYPE_BASE}{slug}"),
            ..Problem::new(status, title, detail)
        }
    }

    /// With the extension member `name`.
    pub fn with(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extensions.insert(name.to_string(), value.into());
        self
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        // A struct of strings, numbers and JSON values always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_and_extensions_sit_side_by_side() {
        let problem =
            Problem::typed("sold-out", 410, "Sold out", "nothing left").with("sold_out", true);
        let value: serde_json::Value = serde_json::from_str(&problem.to_json()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "type": "https://meridian.dev/problems/sold-out",
                "title": "Sold out",
                "status": 410,
                "detail": "nothing left",
                "sold_out": true,
            })
        );
        let back: Problem = serde_json::from_value(value).unwrap();
        assert_eq!(back, problem);
        assert_eq!(Problem::new(400, "Bad", "x").kind, "about:blank");
    }
}
