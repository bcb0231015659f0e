//! The monitoring package as committed: generated from its configuration,
//! rules that promtool accepts and whose unit tests pass (a firing and a
//! quiet case per alert), alerts that link their runbook section, and
//! dashboards that Grafana can import (unique ids, a query on every panel,
//! every variable defined).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use meridian_mixin::config::Config;
use meridian_mixin::grafana;
use serde_json::Value;

fn root() -> PathBuf {
    meridian_mixin::repository_root()
}

fn config() -> Config {
    Config::load(&meridian_mixin::config_path(&root())).expect("dashboards/slos.toml loads")
}

#[test]
fn committed_files_are_what_the_configuration_generates() {
    let files = meridian_mixin::render(&config()).unwrap();
    let stale = meridian_mixin::stale(&root(), &files);
    assert!(
        stale.is_empty(),
        "out of date, run `cargo run -p meridian-mixin`: {stale:?}"
    );
}

fn files_in(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    files.sort();
    files
}

fn promtool(args: &[&str], files: &[PathBuf]) {
    let output = Command::new("promtool")
        .args(args)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("promtool (installed by .ci/install-deps): {e}"));
    assert!(
        output.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn rules_pass_promtool_and_every_alert_has_a_firing_and_a_quiet_test() {
    let rules = root().join("dashboards/rules");
    let files = files_in(&rules, "yaml");
    assert_eq!(files.len(), 3, "recording, SLO alerts, symptom alerts");
    promtool(&["check", "rules"], &files);
    let tests = files_in(&rules.join("tests"), "yaml");
    promtool(&["test", "rules"], &tests);

    let tested: Vec<Value> = tests
        .iter()
        .map(|f| serde_yaml_ng::from_str(&std::fs::read_to_string(f).unwrap()).unwrap())
        .collect();
    let book = std::fs::read_to_string(root().join("dashboards/runbook.md")).unwrap();
    let mut alerts = BTreeSet::new();
    for file in &files {
        let parsed: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        for rule in parsed["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
        {
            let Some(alert) = rule["alert"].as_str() else {
                continue;
            };
            alerts.insert(alert.to_string());
            let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
            assert!(
                ["page", "ticket"].contains(&severity),
                "{alert}: severity page or ticket, not {severity:?}"
            );
            let summary = rule["annotations"]["summary"].as_str().unwrap_or_default();
            assert!(
                summary.starts_with("{{ $labels.region }}: "),
                "{alert}: the summary names the region first"
            );
            let runbook = rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_default();
            assert_eq!(
                runbook.rsplit_once('#').map(|(_, a)| a),
                Some(alert.to_lowercase().as_str()),
                "{alert}: runbook_url points at its section"
            );
            assert!(
                book.lines().any(|l| l == format!("## {alert}")),
                "{alert}: dashboards/runbook.md has a `## {alert}` section"
            );
        }
    }
    // For every alert, a test case expecting it and one expecting silence.
    for alert in &alerts {
        let cases: Vec<&Value> = tested
            .iter()
            .flat_map(|t| t["tests"].as_array().unwrap())
            .flat_map(|case| case["alert_rule_test"].as_array().unwrap())
            .filter(|check| check["alertname"] == alert.as_str())
            .collect();
        assert!(
            cases
                .iter()
                .any(|c| !c["exp_alerts"].as_array().unwrap().is_empty()),
            "{alert}: no test fires it"
        );
        assert!(
            cases
                .iter()
                .any(|c| c["exp_alerts"].as_array().unwrap().is_empty()),
            "{alert}: no test where it stays quiet"
        );
    }
    assert!(alerts.len() >= 20, "{} alerts", alerts.len());
}

#[test]
fn every_sli_is_recorded_over_every_window() {
    let config = config();
    let text = std::fs::read_to_string(root().join("dashboards/rules/meridian-slos.yaml")).unwrap();
    let parsed: Value = serde_yaml_ng::from_str(&text).unwrap();
    let recorded: BTreeSet<(String, String)> = parsed["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| {
            Some((
                r["record"].as_str()?.to_string(),
                r["labels"]["slo"].as_str().unwrap_or_default().to_string(),
            ))
        })
        .collect();
    for slo in &config.slos {
        for window in ["5m", "30m", "1h", "2h", "6h", "1d", "3d"] {
            let record = format!("meridian_slo:sli_error:ratio_rate{window}");
            assert!(
                recorded.contains(&(record.clone(), slo.name.clone())),
                "{} has no {record}",
                slo.name
            );
        }
    }
}

/// `$name` and `${name}` references in `text`.
fn variables_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let name: String = rest
            .trim_start_matches('{')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

#[test]
fn dashboards_are_importable_and_every_query_and_variable_resolves() {
    let files = files_in(&root().join("dashboards"), "json");
    assert_eq!(files.len(), 4, "SLO overview, edge, origin, checkout");
    let mut uids = BTreeSet::new();
    for file in &files {
        let name = file.display();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap())
            .unwrap_or_else(|e| panic!("{name}: not JSON: {e}"));
        assert!(
            uids.insert(dashboard["uid"].as_str().unwrap().to_string()),
            "{name}: uid reused"
        );
        assert!(
            dashboard["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Meridian / "))
        );
        let ids = grafana::panel_ids(&dashboard);
        let unique: BTreeSet<_> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{name}: panel ids repeat");

        let variables: Vec<&Value> = dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .collect();
        let defined: BTreeSet<&str> = variables
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .chain(["__rate_interval", "__interval", "__range"])
            .collect();
        assert!(
            variables.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{name}: a Prometheus datasource variable"
        );
        assert!(defined.contains("region"), "{name}: templated by region");
        for variable in &variables {
            for used in variables_in(&variable.to_string()) {
                assert!(
                    defined.contains(used.as_str()),
                    "{name}: variable {} uses undefined ${used}",
                    variable["name"]
                );
            }
        }

        for panel in dashboard["panels"].as_array().unwrap() {
            let title = panel["title"].as_str().unwrap_or_default();
            let grid = &panel["gridPos"];
            assert!(
                grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24,
                "{name}: panel {title} overflows the grid"
            );
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{name}: {title}"
            );
            let targets = panel["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: panel {title} has no query");
            for target in targets {
                let expr = target["expr"].as_str().unwrap_or_default();
                assert!(
                    !expr.trim().is_empty(),
                    "{name}: panel {title} has an empty query"
                );
                assert_eq!(target["datasource"]["uid"], "${datasource}");
                for used in variables_in(expr) {
                    assert!(
                        defined.contains(used.as_str()),
                        "{name}: panel {title} uses undefined ${used}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_bad_configuration_is_refused_with_every_problem_named() {
    let text = std::fs::read_to_string(meridian_mixin::config_path(&root())).unwrap();
    let bad = text
        .replacen("objective = 0.9999", "objective = 1.5", 1)
        .replacen("windows = [\"5m\",", "windows = [", 1);
    let config: Config = toml::from_str(&bad).unwrap();
    let problems = config.validate().unwrap_err();
    assert!(
        problems
            .iter()
            .any(|p| p.contains("edge-availability: objective")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("window 5m")),
        "{problems:?}"
    );
}
