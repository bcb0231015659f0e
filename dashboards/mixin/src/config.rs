//! The SLO configuration (`dashboards/slos.toml`): typed, and checked at
//! load so that every rule generated from it is well formed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Deserialize;

use crate::MixinError;

/// The whole monitoring configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Base URL of the runbook; each alert links `<runbook>#<alert lowercased>`.
    pub runbook: String,
    /// Windows every SLI is recorded over.
    pub windows: Vec<Window>,
    /// The error-budget period.
    pub period: Window,
    /// Burn-rate alert tiers.
    #[serde(rename = "tier")]
    pub tiers: Vec<Tier>,
    #[serde(rename = "slo")]
    pub slos: Vec<Slo>,
    /// Symptom alerts.
    #[serde(rename = "alert")]
    pub alerts: Vec<SymptomAlert>,
}

/// A Prometheus duration such as `5m`, `1h` or `3d`, kept as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Window(String);

impl Window {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Length in minutes (the promtool tests' unit of time).
    pub fn minutes(&self) -> u64 {
        let (number, unit) = self.0.split_at(self.0.len() - 1);
        let number: u64 = number.parse().unwrap_or(0);
        number
            * match unit {
                "m" => 1,
                "h" => 60,
                "d" => 24 * 60,
                "w" => 7 * 24 * 60,
                _ => 0,
            }
    }
}

impl TryFrom<String> for Window {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        let valid = text.len() >= 2
            && text[..text.len() - 1].bytes().all(|b| b.is_ascii_digit())
            && matches!(text.as_bytes()[text.len() - 1], b'm' | b'h' | b'd' | b'w');
        if valid {
            Ok(Window(text))
        } else {
            Err(format!(
                "`{text}` is not a duration in whole minutes, hours, days or weeks (e.g. 5m, 1h, 3d)"
            ))
        }
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One severity of burn-rate alert.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub severity: String,
    #[serde(rename = "for")]
    pub for_: Window,
    pub conditions: Vec<Condition>,
}

/// Error ratio over both windows above `factor` × the error budget.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub factor: f64,
    pub long: Window,
    pub short: Window,
}

/// A service-level objective over a ratio of counted events.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// kebab-case; the `slo` label of its series.
    pub name: String,
    pub title: String,
    pub description: String,
    /// Share of good events aimed at, in (0, 1).
    pub objective: f64,
    /// Bad events (or give `good`).
    pub errors: Option<String>,
    /// Good events (or give `errors`).
    pub good: Option<String>,
    /// All events.
    pub total: String,
    /// Series whose growth alone gives a 100 % error ratio (tests).
    pub fire: Vec<String>,
    /// Series whose growth alone gives a 0 % error ratio (tests).
    pub quiet: Vec<String>,
}

/// What an SLO counts.
pub enum Events<'a> {
    Errors(&'a str),
    Good(&'a str),
}

impl Slo {
    pub fn events(&self) -> Events<'_> {
        match (&self.errors, &self.good) {
            (Some(errors), _) => Events::Errors(errors),
            (None, Some(good)) => Events::Good(good),
            // Ruled out by `Config::validate`.
            (None, None) => Events::Errors(""),
        }
    }

    /// The error budget: the share of events allowed to be bad.
    pub fn budget(&self) -> f64 {
        1.0 - self.objective
    }

    /// The burn-rate alert's name: `Meridian<CamelName>BudgetBurn`.
    pub fn alert_name(&self) -> String {
        let camel: String = self
            .name
            .split('-')
            .map(|word| {
                let mut chars = word.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect();
        format!("Meridian{camel}BudgetBurn")
    }
}

/// An alert on a symptom, with its promtool test series.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymptomAlert {
    pub name: String,
    pub severity: String,
    #[serde(rename = "for")]
    pub for_: Window,
    /// PromQL; `{{region}}` is the region join.
    pub expr: String,
    /// Names the region; may use `{{ $labels.<label> }}`.
    pub summary: String,
    /// Labels the expression yields besides `region` (tests).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub fire: Vec<TestSeries>,
    pub quiet: Vec<TestSeries>,
}

/// An input series of a promtool test.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSeries {
    pub series: String,
    pub values: String,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, MixinError> {
        let text = std::fs::read_to_string(path).map_err(|source| MixinError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| MixinError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        config.validate().map_err(|problems| MixinError::Invalid {
            path: path.to_path_buf(),
            problems,
        })?;
        Ok(config)
    }

    /// Every problem found, not only the first.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let windows: BTreeSet<&Window> = self.windows.iter().collect();
        if !windows.iter().any(|w| w.as_str() == "5m") {
            problems.push("windows: 5m is needed (the error-budget period averages it)".into());
        }
        for tier in &self.tiers {
            for condition in &tier.conditions {
                for window in [&condition.long, &condition.short] {
                    if !windows.contains(window) {
                        problems.push(format!(
                            "tier {}: window {window} is not among `windows`",
                            tier.severity
                        ));
                    }
                }
                if condition.factor <= 0.0 || condition.short.minutes() >= condition.long.minutes()
                {
                    problems.push(format!(
                        "tier {}: a condition needs a positive factor and a short window shorter than its long one",
                        tier.severity
                    ));
                }
            }
        }
        let mut names = BTreeSet::new();
        for slo in &self.slos {
            if !names.insert(slo.name.clone()) {
                problems.push(format!("slo {}: defined twice", slo.name));
            }
            if slo.name.is_empty()
                || !slo
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                problems.push(format!("slo {}: the name must be kebab-case", slo.name));
            }
            if !(slo.objective > 0.0 && slo.objective < 1.0) {
                problems.push(format!("slo {}: objective must be in (0, 1)", slo.name));
            }
            if slo.errors.is_some() == slo.good.is_some() {
                problems.push(format!(
                    "slo {}: give exactly one of errors, good",
                    slo.name
                ));
            }
            if slo.fire.is_empty() || slo.quiet.is_empty() {
                problems.push(format!(
                    "slo {}: fire and quiet test series needed",
                    slo.name
                ));
            }
        }
        let mut alerts = BTreeSet::new();
        for alert in &self.alerts {
            if !alerts.insert(alert.name.clone()) || names.contains(&alert.name) {
                problems.push(format!("alert {}: defined twice", alert.name));
            }
            if !alert.name.starts_with("Meridian") {
                problems.push(format!("alert {}: names start with Meridian", alert.name));
            }
            if !alert.summary.contains("{{ $labels.region }}") {
                problems.push(format!(
                    "alert {}: the summary names the region",
                    alert.name
                ));
            }
            if alert.fire.is_empty() || alert.quiet.is_empty() {
                problems.push(format!(
                    "alert {}: fire and quiet test series needed",
                    alert.name
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_and_measure() {
        assert_eq!(Window::try_from("5m".to_string()).unwrap().minutes(), 5);
        assert_eq!(Window::try_from("3d".to_string()).unwrap().minutes(), 4320);
        assert!(Window::try_from("5".to_string()).is_err());
        assert!(Window::try_from("1.5h".to_string()).is_err());
        assert!(Window::try_from("m".to_string()).is_err());
    }
}
