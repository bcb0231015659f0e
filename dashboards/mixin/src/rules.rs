//! Prometheus rule files from the configuration: the SLI recording rules,
//! the multi-window multi-burn-rate alerts, the symptom alerts, and their
//! promtool unit tests (one that fires and one that stays quiet per alert).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{Config, Events, Slo, SymptomAlert, TestSeries, Tier, Window};

/// Joins the region onto per-process series: the binaries carry no region
/// label, `meridian_build_info` does, keyed by the scrape target.
pub const REGION_JOIN: &str = "* on (job, instance) group_left (region) meridian_build_info";

/// The recorded error ratio of every SLO over `window`.
pub fn sli_record(window: &Window) -> String {
    format!("meridian_slo:sli_error:ratio_rate{window}")
}

/// The recorded objective of every SLO (a constant per `slo`).
pub const OBJECTIVE_RECORD: &str = "meridian_slo:objective:ratio";

/// `{{region}}` in a configured expression, expanded.
pub fn expand(expr: &str) -> String {
    expr.replace("{{region}}", REGION_JOIN)
}

#[derive(Serialize)]
pub struct RuleFile {
    pub groups: Vec<Group>,
}

#[derive(Serialize)]
pub struct Group {
    pub name: String,
    pub rules: Vec<Rule>,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum Rule {
    Record {
        record: String,
        expr: String,
        labels: BTreeMap<String, String>,
    },
    Alert {
        alert: String,
        expr: String,
        #[serde(rename = "for")]
        for_: String,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
    },
}

/// A number as PromQL and people write it (`14.4`, `6`, `0.9999`).
pub fn number(value: f64) -> String {
    let text = format!("{value:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// A share as a percentage (`99.99 %`).
pub fn percent(value: f64) -> String {
    format!("{} %", number(value * 100.0))
}

fn rate_by_region(selector: &str, window: &Window) -> String {
    format!("sum by (region) (rate({selector}[{window}]) {REGION_JOIN})")
}

/// The SLO's error ratio over `window`, by region. Counted events with no
/// series yet (no 5xx so far) count as 0 wherever there are events at all,
/// so a clean region reads 0 rather than nothing.
pub fn sli_expr(slo: &Slo, window: &Window) -> String {
    let total = rate_by_region(&slo.total, window);
    let or_zero = |selector: &str| {
        format!(
            "(\n  {}\n  or\n  0 * {total}\n)",
            rate_by_region(selector, window)
        )
    };
    match slo.events() {
        Events::Errors(errors) => format!("{}\n/\n{total}", or_zero(errors)),
        Events::Good(good) => format!(
            "clamp_min(\n  1 - {}\n  /\n  {total},\n  0\n)",
            or_zero(good).replace('\n', "\n  ")
        ),
    }
}

fn slo_label(slo: &Slo) -> BTreeMap<String, String> {
    BTreeMap::from([("slo".to_string(), slo.name.clone())])
}

/// Recording rules: each SLI over every window, the budget period, and the
/// objectives.
pub fn recording_rules(config: &Config) -> RuleFile {
    let mut groups: Vec<Group> = config
        .slos
        .iter()
        .map(|slo| Group {
            name: format!("meridian-slo-{}", slo.name),
            rules: config
                .windows
                .iter()
                .map(|window| Rule::Record {
                    record: sli_record(window),
                    expr: sli_expr(slo, window),
                    labels: slo_label(slo),
                })
                .chain(std::iter::once(Rule::Record {
                    record: OBJECTIVE_RECORD.to_string(),
                    expr: format!("vector({})", number(slo.objective)),
                    labels: slo_label(slo),
                }))
                .collect(),
        })
        .collect();
    let five = Window::try_from("5m".to_string()).unwrap_or_else(|_| config.period.clone());
    groups.push(Group {
        name: "meridian-slo-budget".to_string(),
        rules: vec![Rule::Record {
            record: sli_record(&config.period),
            expr: format!("avg_over_time({}[{}])", sli_record(&five), config.period),
            labels: BTreeMap::new(),
        }],
    });
    RuleFile { groups }
}

/// The conditions of `tier` that can fire for `slo` (threshold under 100 %).
pub fn attainable<'a>(
    tier: &'a Tier,
    slo: &Slo,
) -> impl Iterator<Item = &'a crate::config::Condition> {
    let budget = slo.budget();
    tier.conditions
        .iter()
        .filter(move |c| c.factor * budget < 1.0)
}

fn runbook(config: &Config, alert: &str) -> String {
    format!("{}#{}", config.runbook, alert.to_lowercase())
}

/// The burn-rate alert of `slo` at `tier`, if any condition can fire.
fn burn_rate_alert(config: &Config, slo: &Slo, tier: &Tier) -> Option<Rule> {
    let conditions: Vec<_> = attainable(tier, slo).collect();
    if conditions.is_empty() {
        return None;
    }
    let objective = number(slo.objective);
    let expr = conditions
        .iter()
        .map(|c| {
            let threshold = format!("({} * (1 - {objective}))", number(c.factor));
            format!(
                "(\n  {long}{{slo=\"{name}\"}} > {threshold}\nand\n  {short}{{slo=\"{name}\"}} > {threshold}\n)",
                long = sli_record(&c.long),
                short = sli_record(&c.short),
                name = slo.name,
            )
        })
        .collect::<Vec<_>>()
        .join("\nor\n");
    let windows = conditions
        .iter()
        .map(|c| format!("{}× over {} and {}", number(c.factor), c.long, c.short))
        .collect::<Vec<_>>()
        .join(", or ");
    let name = slo.alert_name();
    Some(Rule::Alert {
        alert: name.clone(),
        expr,
        for_: tier.for_.to_string(),
        labels: BTreeMap::from([
            ("severity".to_string(), tier.severity.clone()),
            ("slo".to_string(), slo.name.clone()),
        ]),
        annotations: BTreeMap::from([
            ("summary".to_string(), burn_summary(slo)),
            (
                "description".to_string(),
                format!(
                    "{} Objective {} over {}; the error ratio exceeds the budget's rate {windows}.",
                    slo.description,
                    percent(slo.objective),
                    config.period
                ),
            ),
            ("runbook_url".to_string(), runbook(config, &name)),
        ]),
    })
}

fn burn_summary(slo: &Slo) -> String {
    format!(
        "{{{{ $labels.region }}}}: {} is spending its error budget too fast",
        slo.title
    )
}

/// Burn-rate alerts, one group per SLO.
pub fn burn_rate_alerts(config: &Config) -> RuleFile {
    RuleFile {
        groups: config
            .slos
            .iter()
            .filter_map(|slo| {
                let rules: Vec<Rule> = config
                    .tiers
                    .iter()
                    .filter_map(|tier| burn_rate_alert(config, slo, tier))
                    .collect();
                (!rules.is_empty()).then(|| Group {
                    name: format!("meridian-slo-{}-alerts", slo.name),
                    rules,
                })
            })
            .collect(),
    }
}

/// Symptom alerts, in one group.
pub fn symptom_alerts(config: &Config) -> RuleFile {
    RuleFile {
        groups: vec![Group {
            name: "meridian-symptoms".to_string(),
            rules: config
                .alerts
                .iter()
                .map(|alert| Rule::Alert {
                    alert: alert.name.clone(),
                    expr: expand(&alert.expr),
                    for_: alert.for_.to_string(),
                    labels: BTreeMap::from([("severity".to_string(), alert.severity.clone())]),
                    annotations: BTreeMap::from([
                        ("summary".to_string(), alert.summary.clone()),
                        ("runbook_url".to_string(), runbook(config, &alert.name)),
                    ]),
                })
                .collect(),
        }],
    }
}

// ---- promtool unit tests ----

/// The scrape target every test series comes from, and its region.
const TEST_JOB: &str = "meridian";
const TEST_INSTANCE: &str = "origin-1:8081";
pub const TEST_REGION: &str = "eu-west";

#[derive(Serialize)]
pub struct TestFile {
    pub rule_files: Vec<String>,
    pub evaluation_interval: String,
    pub tests: Vec<TestCase>,
}

#[derive(Serialize)]
pub struct TestCase {
    pub name: String,
    pub interval: String,
    pub input_series: Vec<InputSeries>,
    pub alert_rule_test: Vec<AlertTest>,
}

#[derive(Serialize)]
pub struct InputSeries {
    pub series: String,
    pub values: String,
}

#[derive(Serialize)]
pub struct AlertTest {
    pub eval_time: String,
    pub alertname: String,
    pub exp_alerts: Vec<ExpectedAlert>,
}

#[derive(Serialize)]
pub struct ExpectedAlert {
    pub exp_labels: BTreeMap<String, String>,
    pub exp_annotations: BTreeMap<String, String>,
}

/// `series` as scraped from the test target.
fn from_target(series: &str) -> String {
    let target = format!("job=\"{TEST_JOB}\", instance=\"{TEST_INSTANCE}\"");
    match series.strip_suffix('}') {
        Some(head) if head.ends_with('{') => format!("{head}{target}}}"),
        Some(head) => format!("{head}, {target}}}"),
        None => format!("{series}{{{target}}}"),
    }
}

fn build_info(minutes: u64) -> InputSeries {
    InputSeries {
        series: from_target(&format!(
            "meridian_build_info{{component=\"origin\", region=\"{TEST_REGION}\", version=\"0.1.0\"}}"
        )),
        values: format!("1x{minutes}"),
    }
}

/// `summary` as Prometheus renders it for `labels`.
fn render_summary(summary: &str, labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .fold(summary.to_string(), |text, (name, value)| {
            text.replace(&format!("{{{{ $labels.{name} }}}}"), value)
        })
}

/// Burn-rate tests: per SLO, 100 % errors fires every tier it has, 0 %
/// fires none.
pub fn burn_rate_tests(config: &Config, rule_files: Vec<String>) -> TestFile {
    // Long enough for the slowest tier's `for` after its windows fill.
    let eval = config
        .tiers
        .iter()
        .map(|t| t.for_.minutes())
        .max()
        .unwrap_or(0)
        + 15;
    let length = eval + 10;
    let mut tests = Vec::new();
    for slo in &config.slos {
        let tiers: Vec<&Tier> = config
            .tiers
            .iter()
            .filter(|t| attainable(t, slo).next().is_some())
            .collect();
        if tiers.is_empty() {
            continue;
        }
        let series = |growing: &[String]| -> Vec<InputSeries> {
            let mut all: Vec<&String> = slo.fire.iter().chain(&slo.quiet).collect();
            all.sort();
            all.dedup();
            all.into_iter()
                .map(|s| InputSeries {
                    series: from_target(s),
                    values: if growing.contains(s) {
                        format!("0+60x{length}")
                    } else {
                        format!("0x{length}")
                    },
                })
                .chain(std::iter::once(build_info(length)))
                .collect()
        };
        let name = slo.alert_name();
        let expected: Vec<ExpectedAlert> = tiers
            .iter()
            .map(|tier| {
                let labels = BTreeMap::from([
                    ("severity".to_string(), tier.severity.clone()),
                    ("slo".to_string(), slo.name.clone()),
                    ("region".to_string(), TEST_REGION.to_string()),
                ]);
                let Some(Rule::Alert { annotations, .. }) = burn_rate_alert(config, slo, tier)
                else {
                    unreachable!("the tier has an attainable condition")
                };
                ExpectedAlert {
                    exp_annotations: annotations
                        .into_iter()
                        .map(|(k, v)| {
                            let v = render_summary(&v, &labels);
                            (k, v)
                        })
                        .collect(),
                    exp_labels: labels,
                }
            })
            .collect();
        tests.push(TestCase {
            name: format!("{}: every event bad fires {}", slo.name, tier_list(&tiers)),
            interval: "1m".into(),
            input_series: series(&slo.fire),
            alert_rule_test: vec![AlertTest {
                eval_time: format!("{eval}m"),
                alertname: name.clone(),
                exp_alerts: expected,
            }],
        });
        tests.push(TestCase {
            name: format!("{}: every event good fires nothing", slo.name),
            interval: "1m".into(),
            input_series: series(&slo.quiet),
            alert_rule_test: vec![AlertTest {
                eval_time: format!("{eval}m"),
                alertname: name,
                exp_alerts: Vec::new(),
            }],
        });
    }
    TestFile {
        rule_files,
        evaluation_interval: "1m".into(),
        tests,
    }
}

fn tier_list(tiers: &[&Tier]) -> String {
    tiers
        .iter()
        .map(|t| t.severity.as_str())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Symptom tests: per alert, its `fire` series fire it and its `quiet`
/// series do not.
pub fn symptom_tests(config: &Config, rule_files: Vec<String>) -> TestFile {
    let mut tests = Vec::new();
    for alert in &config.alerts {
        let eval = alert.for_.minutes() + 10;
        let inputs = |series: &[TestSeries]| -> Vec<InputSeries> {
            series
                .iter()
                .map(|s| InputSeries {
                    series: from_target(&s.series),
                    values: s.values.clone(),
                })
                .chain(std::iter::once(build_info(eval + 10)))
                .collect()
        };
        let mut labels = alert.labels.clone();
        labels.insert("severity".into(), alert.severity.clone());
        labels.insert("region".into(), TEST_REGION.into());
        let expected = ExpectedAlert {
            exp_annotations: BTreeMap::from([
                (
                    "summary".to_string(),
                    render_summary(&alert.summary, &labels),
                ),
                ("runbook_url".to_string(), runbook(config, &alert.name)),
            ]),
            exp_labels: labels,
        };
        tests.push(alert_case(
            alert,
            "fires",
            inputs(&alert.fire),
            eval,
            vec![expected],
        ));
        tests.push(alert_case(
            alert,
            "stays quiet",
            inputs(&alert.quiet),
            eval,
            Vec::new(),
        ));
    }
    TestFile {
        rule_files,
        evaluation_interval: "1m".into(),
        tests,
    }
}

fn alert_case(
    alert: &SymptomAlert,
    what: &str,
    input_series: Vec<InputSeries>,
    eval: u64,
    exp_alerts: Vec<ExpectedAlert>,
) -> TestCase {
    TestCase {
        name: format!("{} {what}", alert.name),
        interval: "1m".into(),
        input_series,
        alert_rule_test: vec![AlertTest {
            eval_time: format!("{eval}m"),
            alertname: alert.name.clone(),
            exp_alerts,
        }],
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_written() {
        assert_eq!(number(14.4), "14.4");
        assert_eq!(number(6.0), "6");
        assert_eq!(number(0.9999), "0.9999");
        assert_eq!(percent(0.9999), "99.99 %");
        assert_eq!(percent(0.7), "70 %");
    }

    #[test]
    fn test_series_come_from_the_test_target() {
        assert_eq!(
            from_target("up"),
            "up{job=\"meridian\", instance=\"origin-1:8081\"}"
        );
        assert_eq!(
            from_target("x{a=\"1\"}"),
            "x{a=\"1\", job=\"meridian\", instance=\"origin-1:8081\"}"
        );
    }
}
