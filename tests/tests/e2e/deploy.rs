//! The deployment half, checked without a cluster (none runs here): the
//! Helm chart (`helm/meridian`) and the data tier (`k8s/`) are rendered
//! with the real tools (helm v4, kubectl's kustomize), every object is
//! validated against the Kubernetes schemas of two versions
//! (`kubernetes-validate --strict`) or, for custom resources, against their
//! CRD schemas (`check-jsonschema`, schemas read from `../shared/k8s-schemas`),
//! and the properties that matter are asserted on the rendered objects:
//! autoscaling with seed 002's numbers, a disruption budget per
//! Deployment, no root and no writable root filesystem, drain timings that
//! add up, no secret value anywhere, probes and configs that the real
//! binary answers and accepts. The tools come from `.ci/install-deps`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::helpers::{HOME, TestStack, meridian_bin};

/// Kubernetes versions every core object is validated against.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.31.0", "1.34.0"];
/// Seed 002's autoscaling numbers for every Deployment that serves requests.
const MIN_REPLICAS: u64 = 10;
const MAX_REPLICAS: u64 = 100;
const CPU_PERCENT: u64 = 70;
const MEMORY_PERCENT: u64 = 80;
/// Where the chart mounts the region's Secret.
const SECRETS_DIR: &str = "/etc/meridian/secrets";
const REGIONS: [&str; 3] = ["us-east", "eu-west", "ap-southeast"];

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .canonicalize()
        .expect("repository root")
}

fn tool(relative: &str) -> PathBuf {
    let path = root().join(".meridian").join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run .ci/install-deps (it installs helm, kubectl, kubernetes-validate and check-jsonschema)",
        path.display()
    );
    path
}

fn helm() -> PathBuf {
    tool("tools/helm")
}

fn kubectl() -> PathBuf {
    tool("tools/kubectl")
}

/// The CRD schemas (data beside the project, never copied into it).
fn crd_schemas() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("MERIDIAN_K8S_SCHEMAS").map(PathBuf::from),
        Some(root().join("../shared/k8s-schemas")),
        Some(PathBuf::from("/work/shared/k8s-schemas")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|dir| dir.join("postgresql.cnpg.io/cluster_v1.json").is_file())
}

fn run(mut command: Command) -> Result<String, String> {
    let output = command.output().map_err(|e| format!("{command:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{command:?} failed:\n{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A rendering of the chart: its name, the values files, the namespace.
struct Scenario {
    name: String,
    values: Vec<PathBuf>,
    namespace: String,
}

/// Every release the tests render: the defaults, each region, each `ci/`
/// scenario.
fn scenarios() -> Vec<Scenario> {
    let chart = root().join("helm/meridian");
    let mut all = vec![Scenario {
        name: "defaults".into(),
        values: vec![],
        namespace: "meridian-us-east".into(),
    }];
    for region in REGIONS {
        all.push(Scenario {
            name: format!("region {region}"),
            values: vec![root().join(format!("helm/regions/{region}.yaml"))],
            namespace: format!("meridian-{region}"),
        });
    }
    let mut ci: Vec<PathBuf> = std::fs::read_dir(chart.join("ci"))
        .expect("helm/meridian/ci")
        .map(|entry| entry.expect("ci entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    ci.sort();
    assert!(ci.len() >= 3, "the chart has its ci/ scenarios: {ci:?}");
    for file in ci {
        // A scenario builds on a region (eu-west: a replica region).
        all.push(Scenario {
            name: format!("ci {}", file.file_name().unwrap().to_string_lossy()),
            values: vec![root().join("helm/regions/eu-west.yaml"), file],
            namespace: "meridian-eu-west".into(),
        });
    }
    all
}

fn helm_args(command: &mut Command, values: &[PathBuf], namespace: &str) {
    command.args(["-n", namespace]);
    for file in values {
        command.arg("-f").arg(file);
    }
}

fn render(values: &[PathBuf], namespace: &str) -> Result<String, String> {
    let mut command = Command::new(helm());
    command
        .args(["template", "meridian"])
        .arg(root().join("helm/meridian"));
    helm_args(&mut command, values, namespace);
    run(command)
}

/// The YAML stream's objects, as JSON values.
fn documents(stream: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(stream)
        .filter_map(|document| {
            let value: Value = serde::Deserialize::deserialize(document).expect("valid YAML");
            (!value.is_null()).then_some(value)
        })
        .collect()
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// A container's ports, by name.
fn container_ports(container: &Value) -> BTreeMap<&str, u64> {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// How many objects of each kind.
fn kind_counts(objects: &[Value]) -> BTreeMap<&str, usize> {
    let mut kinds = BTreeMap::new();
    for object in objects {
        *kinds.entry(kind(object)).or_default() += 1;
    }
    kinds
}

fn by_kind<'a>(objects: &'a [Value], wanted: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| kind(o) == wanted).collect()
}

/// The custom resources' schema files, by `apiVersion` and `kind`.
fn crd_schema(api_version: &str, kind: &str) -> Option<&'static str> {
    Some(match (api_version, kind) {
        ("postgresql.cnpg.io/v1", "Cluster") => "postgresql.cnpg.io/cluster_v1.json",
        ("postgresql.cnpg.io/v1", "Pooler") => "postgresql.cnpg.io/pooler_v1.json",
        ("monitoring.coreos.com/v1", "ServiceMonitor") => {
            "monitoring.coreos.com/servicemonitor_v1.json"
        }
        ("monitoring.coreos.com/v1", "PodMonitor") => "monitoring.coreos.com/podmonitor_v1.json",
        ("monitoring.coreos.com/v1", "PrometheusRule") => {
            "monitoring.coreos.com/prometheusrule_v1.json"
        }
        ("keda.sh/v1alpha1", "ScaledObject") => "keda.sh/scaledobject_v1alpha1.json",
        _ => return None,
    })
}

/// Validates objects: core kinds with `kubernetes-validate --strict` for
/// each version, custom resources with `check-jsonschema` against their
/// CRD schema. An object of any other kind fails the test.
fn validate(label: &str, objects: &[Value], work: &Path) {
    let dir = work.join(label.replace([' ', '/'], "_"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut core = Vec::new();
    let mut custom: BTreeMap<&'static str, Vec<PathBuf>> = BTreeMap::new();
    for (i, object) in objects.iter().enumerate() {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let file = dir.join(format!("{i:03}-{}-{}.yaml", kind(object), name(object)));
        std::fs::write(&file, serde_yaml_ng::to_string(object).unwrap()).unwrap();
        let group = api_version.rsplit_once('/').map(|(group, _)| group);
        match group {
            None | Some("apps" | "policy" | "autoscaling" | "networking.k8s.io" | "batch") => {
                core.push(file)
            }
            Some(_) => {
                let schema = crd_schema(api_version, kind(object)).unwrap_or_else(|| {
                    panic!(
                        "{label}: {api_version} {} has no schema to validate it against",
                        kind(object)
                    )
                });
                custom.entry(schema).or_default().push(file);
            }
        }
    }
    let validator = tool("venv/bin/kubernetes-validate");
    for version in KUBERNETES_VERSIONS {
        let mut command = Command::new(&validator);
        // Not `--quiet`: it hides the errors too.
        command.args(["--strict", "-k", version]).args(&core);
        if let Err(error) = run(command) {
            let errors: Vec<&str> = error.lines().filter(|l| !l.starts_with("INFO")).collect();
            panic!("{label}: kubernetes {version}:\n{}", errors.join("\n"));
        }
    }
    let Some(schemas) = crd_schemas() else {
        eprintln!(
            "{label}: ../shared/k8s-schemas not found (set MERIDIAN_K8S_SCHEMAS): {} custom resources NOT validated",
            custom.values().map(Vec::len).sum::<usize>()
        );
        return;
    };
    for (schema, files) in custom {
        let schema = usable_schema(&schemas.join(schema), work);
        let mut command = Command::new(tool("venv/bin/check-jsonschema"));
        command.arg("--schemafile").arg(&schema).args(&files);
        let outcome = run(command);
        assert!(outcome.is_ok(), "{label}: {}", outcome.unwrap_err());
    }
}

/// The schema file as check-jsonschema can load it. The PrometheusRule
/// schema carries one Go-only pattern (`(?i)` in the middle of an
/// expression, which no regex dialect of check-jsonschema accepts as a
/// valid `pattern`): a temporary copy spells it out case by case.
fn usable_schema(schema: &Path, work: &Path) -> PathBuf {
    let text = std::fs::read_to_string(schema).unwrap();
    let go_only = r#""^(?i)(abort|warn)?$""#;
    if !text.contains(go_only) {
        return schema.to_path_buf();
    }
    let copy = work.join(schema.file_name().unwrap());
    std::fs::write(
        &copy,
        text.replace(go_only, r#""^([aA][bB][oO][rR][tT]|[wW][aA][rR][nN])?$""#),
    )
    .unwrap();
    copy
}

#[test]
fn the_chart_lints_and_every_rendering_validates_for_two_kubernetes_versions() {
    let work = tempfile::tempdir().unwrap();
    let mut counts = Vec::new();
    for scenario in scenarios() {
        let mut lint = Command::new(helm());
        lint.args(["lint", "--strict"])
            .arg(root().join("helm/meridian"));
        helm_args(&mut lint, &scenario.values, &scenario.namespace);
        if let Err(error) = run(lint) {
            panic!("{}: helm lint --strict: {error}", scenario.name);
        }
        let objects = documents(&render(&scenario.values, &scenario.namespace).unwrap());
        validate(&scenario.name, &objects, work.path());
        let kinds = kind_counts(&objects);
        counts.push(format!(
            "{}: {} objects {kinds:?}",
            scenario.name,
            objects.len()
        ));
    }
    println!("{}", counts.join("\n"));
}

#[test]
fn the_data_tier_overlays_build_and_validate() {
    let work = tempfile::tempdir().unwrap();
    let mut counts = Vec::new();
    let mut targets: Vec<String> = REGIONS
        .iter()
        .map(|region| format!("k8s/overlays/{region}"))
        .collect();
    targets.push("k8s/monitoring".into());
    for target in targets {
        let mut command = Command::new(kubectl());
        command.arg("kustomize").arg(root().join(&target));
        let objects = documents(&run(command).unwrap());
        assert!(!objects.is_empty(), "{target} renders objects");
        validate(&target, &objects, work.path());
        for object in &objects {
            assert!(
                kind(object) != "Secret"
                    || object.get("data").is_none() && object.get("stringData").is_none(),
                "{target}: {} carries secret values",
                name(object)
            );
        }
        // Resources everywhere: every container, every database.
        for object in &objects {
            let what = format!("{target}: {} {}", kind(object), name(object));
            let spec = &object["spec"];
            let containers = match kind(object) {
                "StatefulSet" | "Deployment" => spec["template"]["spec"]["containers"].clone(),
                "Pooler" => spec["template"]["spec"]["containers"].clone(),
                _ => Value::Null,
            };
            for container in containers.as_array().into_iter().flatten() {
                let resources = &container["resources"];
                assert!(
                    resources["requests"].is_object() && resources["limits"].is_object(),
                    "{what}: container {} has requests and limits",
                    container["name"]
                );
            }
            if kind(object) == "Cluster" {
                assert!(
                    spec["resources"]["requests"].is_object()
                        && spec["resources"]["limits"].is_object(),
                    "{what}: requests and limits"
                );
            }
        }
        let kinds = kind_counts(&objects);
        counts.push(format!("{target}: {} objects {kinds:?}", objects.len()));
    }
    println!("{}", counts.join("\n"));

    // Every manifest says what it is and why, first thing.
    let mut unexplained = Vec::new();
    let mut pending = vec![root().join("k8s")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "conf") {
                let text = std::fs::read_to_string(&path).unwrap();
                if !text.starts_with('#') {
                    unexplained.push(path.display().to_string());
                }
            }
        }
    }
    assert!(
        unexplained.is_empty(),
        "files without an opening comment: {unexplained:?}"
    );
}

/// A Deployment's pod template labels.
fn pod_labels(deployment: &Value) -> &serde_json::Map<String, Value> {
    deployment["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .expect("pod labels")
}

fn selects(selector: &Value, labels: &serde_json::Map<String, Value>) -> bool {
    selector["matchLabels"]
        .as_object()
        .is_some_and(|wanted| wanted.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The config file a Deployment's container is started with, from its
/// ConfigMap (JSON).
fn deployment_config(objects: &[Value], deployment: &Value) -> Value {
    let pod = &deployment["spec"]["template"]["spec"];
    let config_map = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .and_then(|v| v["configMap"]["name"].as_str())
        .expect("a config volume");
    let data = by_kind(objects, "ConfigMap")
        .into_iter()
        .find(|c| name(c) == config_map)
        .map(|c| &c["data"])
        .expect("the ConfigMap exists");
    let (_, text) = data.as_object().unwrap().iter().next().expect("one file");
    serde_json::from_str(text.as_str().unwrap()).expect("the config is JSON")
}

fn seconds(text: &str) -> u64 {
    text.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a whole-seconds duration: {text}"))
}

/// Every `(key path, value)` of a config whose key names a secret or an
/// address with credentials.
fn secret_fields(value: &Value, path: &str, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let here = format!("{path}.{key}");
                let secret = ["secret", "token", "password", "primary_url", "redis_url"]
                    .iter()
                    .any(|word| key.contains(word))
                    || (key == "url" && (path.contains("shards") || path.contains("replicas")));
                if secret && inner.is_string() {
                    out.push((here.clone(), inner.clone()));
                }
                secret_fields(inner, &here, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                secret_fields(item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn rendered_deployments_keep_the_invariants_that_matter() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let exposed: BTreeSet<u64> = dockerfile
        .lines()
        .filter_map(|line| line.strip_prefix("EXPOSE "))
        .flat_map(|ports| ports.split_whitespace().map(|p| p.parse::<u64>().unwrap()))
        .collect();
    let image_uid: u64 = dockerfile
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("USER "))
        .and_then(|user| user.split(':').next())
        .and_then(|uid| uid.parse().ok())
        .expect("the image's USER");
    let volume = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("VOLUME "))
        .expect("the image's VOLUME");
    assert!(volume.contains("\"/var/lib/meridian\""), "{volume}");

    for scenario in scenarios() {
        let label = scenario.name.as_str();
        let objects = documents(&render(&scenario.values, &scenario.namespace).unwrap());
        assert!(
            by_kind(&objects, "Secret").is_empty(),
            "{label}: the chart never renders a Secret"
        );
        let deployments = by_kind(&objects, "Deployment");
        assert!(deployments.len() >= 2, "{label}: edge and origins");
        for deployment in &deployments {
            let d = name(deployment);
            let labels = pod_labels(deployment);
            let component = labels["app.kubernetes.io/component"].as_str().unwrap();
            let role = labels
                .get("meridian.dev/role")
                .and_then(Value::as_str)
                .unwrap_or("");

            // A disruption budget, exactly one.
            let budgets: Vec<_> = by_kind(&objects, "PodDisruptionBudget")
                .into_iter()
                .filter(|p| selects(&p["spec"]["selector"], labels))
                .collect();
            assert_eq!(budgets.len(), 1, "{label}: {d} has one PodDisruptionBudget");

            // Autoscaling: seed 002's numbers on whatever serves requests.
            let hpa = by_kind(&objects, "HorizontalPodAutoscaler")
                .into_iter()
                .find(|h| h["spec"]["scaleTargetRef"]["name"] == d);
            let scaled_object = by_kind(&objects, "ScaledObject")
                .into_iter()
                .find(|s| s["spec"]["scaleTargetRef"]["name"] == d);
            let serves = component == "edge" || role == "api";
            let replicas = deployment["spec"]["replicas"].as_u64();
            match (hpa, scaled_object) {
                (Some(hpa), None) => {
                    let spec = &hpa["spec"];
                    assert!(replicas.is_none(), "{label}: {d}: the HPA owns replicas");
                    if serves {
                        assert_eq!(spec["minReplicas"], MIN_REPLICAS, "{label}: {d}");
                        assert_eq!(spec["maxReplicas"], MAX_REPLICAS, "{label}: {d}");
                    }
                    assert_seed_behavior(label, d, &spec["behavior"]);
                    let metrics = spec["metrics"].as_array().unwrap();
                    let resource = |name: &str| {
                        metrics
                            .iter()
                            .find(|m| m["resource"]["name"] == name)
                            .map(|m| m["resource"]["target"]["averageUtilization"].clone())
                    };
                    assert_eq!(resource("cpu"), Some(CPU_PERCENT.into()), "{label}: {d}");
                    assert_eq!(
                        resource("memory"),
                        Some(MEMORY_PERCENT.into()),
                        "{label}: {d}"
                    );
                    let custom: BTreeMap<&str, &str> = metrics
                        .iter()
                        .filter(|m| m["type"] == "Pods")
                        .map(|m| {
                            (
                                m["pods"]["metric"]["name"].as_str().unwrap(),
                                m["pods"]["target"]["averageValue"].as_str().unwrap(),
                            )
                        })
                        .collect();
                    if serves {
                        let (p95, errors) = if component == "edge" {
                            ("meridian_edge_p95_seconds", "meridian_edge_error_ratio")
                        } else {
                            ("meridian_origin_p95_seconds", "meridian_origin_error_ratio")
                        };
                        assert_eq!(custom.get(p95), Some(&"500m"), "{label}: {d}: p95 > 500 ms");
                        assert_eq!(
                            custom.get(errors),
                            Some(&"10m"),
                            "{label}: {d}: errors > 1 %"
                        );
                    }
                    if role == "api" || role == "workers" {
                        assert_eq!(
                            custom.get("meridian_queue_depth"),
                            Some(&"1000"),
                            "{label}: {d}: queue depth > 1,000"
                        );
                    }
                }
                (None, Some(scaled)) => {
                    let spec = &scaled["spec"];
                    if serves {
                        assert_eq!(spec["minReplicaCount"], MIN_REPLICAS, "{label}: {d}");
                        assert_eq!(spec["maxReplicaCount"], MAX_REPLICAS, "{label}: {d}");
                    }
                    assert_seed_behavior(
                        label,
                        d,
                        &spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"],
                    );
                    let triggers: Vec<&str> = spec["triggers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t["type"].as_str().unwrap())
                        .collect();
                    assert!(triggers.contains(&"cpu") && triggers.contains(&"memory"));
                    if serves {
                        assert!(
                            triggers.iter().filter(|t| **t == "prometheus").count() >= 2,
                            "{label}: {d}: latency and error triggers"
                        );
                    }
                }
                (None, None) => {
                    // Not autoscaled: never a singleton by accident.
                    let replicas = replicas.unwrap_or(1);
                    assert!(
                        replicas >= 2,
                        "{label}: {d} runs {replicas} replica(s): no Meridian role is a singleton (every background worker is SKIP LOCKED- or consumer-group-safe)"
                    );
                }
                (Some(_), Some(_)) => panic!("{label}: {d} has both an HPA and a ScaledObject"),
            }

            // Security: not root, read-only root filesystem, nothing extra.
            let pod = &deployment["spec"]["template"]["spec"];
            assert_eq!(pod["automountServiceAccountToken"], false, "{label}: {d}");
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{label}: {d}");
            assert_eq!(
                pod["securityContext"]["runAsUser"], image_uid,
                "{label}: {d}: the image's uid"
            );
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"],
                "RuntimeDefault"
            );
            assert!(
                pod["topologySpreadConstraints"]
                    .as_array()
                    .is_some_and(|c| c
                        .iter()
                        .any(|c| c["topologyKey"] == "topology.kubernetes.io/zone")),
                "{label}: {d} spreads across zones"
            );
            let containers = pod["containers"].as_array().unwrap();
            assert!(pod.get("initContainers").is_none(), "{label}: {d}");
            for container in containers {
                let security = &container["securityContext"];
                assert_eq!(security["readOnlyRootFilesystem"], true, "{label}: {d}");
                assert_eq!(security["allowPrivilegeEscalation"], false, "{label}: {d}");
                assert_eq!(security["runAsNonRoot"], true, "{label}: {d}");
                assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
                assert!(security["capabilities"].get("add").is_none());
                assert!(
                    container["env"]
                        .as_array()
                        .is_none_or(|env| env.iter().all(|e| e.get("value").is_none())),
                    "{label}: {d}: no literal env values"
                );

                // The image's contract: its entrypoint, its ports, its volume.
                assert!(
                    container.get("command").is_none(),
                    "{label}: {d}: the image's entrypoint runs"
                );
                let args = container["args"].as_array().unwrap();
                assert_eq!(args[0], component, "{label}: {d}: `meridian {component}`");
                let ports = container_ports(container);
                for port in ports.values() {
                    assert!(
                        exposed.contains(port),
                        "{label}: {d}: port {port} is one the image exposes ({exposed:?})"
                    );
                }
                let mounts: Vec<&str> = container["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["mountPath"].as_str().unwrap())
                    .collect();
                assert!(
                    mounts.contains(&"/var/lib/meridian"),
                    "{label}: {d}: the image's volume is mounted"
                );

                // Probes on the internal (origin) or admin (edge) port.
                let probe_port = if component == "edge" { 9000 } else { 8081 };
                for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
                    let get = &container[probe]["httpGet"];
                    let port = get["port"]
                        .as_str()
                        .map(|n| ports[n])
                        .or(get["port"].as_u64());
                    assert_eq!(
                        port,
                        Some(probe_port),
                        "{label}: {d}: {probe} on the internal port"
                    );
                    let path = get["path"].as_str().unwrap();
                    let want = if probe == "readinessProbe" {
                        "/readyz"
                    } else {
                        "/healthz"
                    };
                    assert_eq!(path, want, "{label}: {d}: {probe}");
                }

                // The drain adds up: preStop, the binary's drain delay, the
                // in-flight grace, margin — all before the kubelet kills.
                let config = deployment_config(&objects, deployment);
                let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
                    .as_u64()
                    .unwrap();
                let drain = seconds(config["drain_delay"].as_str().unwrap());
                let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
                if component == "edge" {
                    let inflight = config["grace_period_seconds"].as_u64().unwrap();
                    assert_eq!(
                        grace,
                        pre_stop + drain + inflight + 5,
                        "{label}: {d}: drain timings"
                    );
                } else {
                    let deadline = config["checkout"]["deadline"].as_str().map_or(4, seconds);
                    assert!(
                        grace > pre_stop + drain + deadline,
                        "{label}: {d}: a checkout finishes before the kill"
                    );
                }
                // The config listens where the container's ports say.
                let listen = |key: &str| {
                    config[key]
                        .as_str()
                        .and_then(|a| a.rsplit_once(':'))
                        .map(|(_, p)| p.parse::<u64>().unwrap())
                };
                if component == "edge" {
                    assert_eq!(listen("listen"), Some(ports["http"]));
                    assert_eq!(listen("admin_listen"), Some(ports["admin"]));
                } else {
                    assert_eq!(listen("listen"), Some(ports["http"]));
                    assert_eq!(listen("internal_listen"), Some(ports["internal"]));
                }

                // No secret value: every secret comes from a mounted file.
                let mut fields = Vec::new();
                secret_fields(&config, "", &mut fields);
                assert!(
                    !fields.is_empty(),
                    "{label}: {d}: the config names its secrets"
                );
                for (path, value) in fields {
                    let file = path.ends_with("_file");
                    assert!(
                        file && value.as_str().is_some_and(|p| p.starts_with(SECRETS_DIR)),
                        "{label}: {d}: `{path}` = {value} must be a `_file` under {SECRETS_DIR}"
                    );
                }
            }
            let secret_volume = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == "secrets")
                .expect("the secrets volume");
            assert!(secret_volume["secret"]["secretName"].is_string());

            // A NetworkPolicy selects it; only the edge's public ports are
            // open to everyone.
            let policies: Vec<_> = by_kind(&objects, "NetworkPolicy")
                .into_iter()
                .filter(|p| selects(&p["spec"]["podSelector"], labels))
                .collect();
            if !policies.is_empty() {
                for policy in policies {
                    for rule in policy["spec"]["ingress"].as_array().unwrap() {
                        if rule.get("from").is_none() {
                            assert_eq!(component, "edge", "{label}: {d}: open to the world");
                            for port in rule["ports"].as_array().unwrap() {
                                assert!(
                                    ["http", "https"].contains(&port["port"].as_str().unwrap())
                                );
                            }
                        }
                    }
                }
            } else {
                assert!(
                    label.contains("minimal"),
                    "{label}: {d} has a NetworkPolicy"
                );
            }
        }
        // The public Service exposes only the edge's public ports.
        for service in by_kind(&objects, "Service") {
            if service["spec"]["type"] == "LoadBalancer" {
                assert_eq!(name(service), "meridian-edge", "{label}");
                for port in service["spec"]["ports"].as_array().unwrap() {
                    assert!(["http", "https"].contains(&port["targetPort"].as_str().unwrap()));
                }
            }
        }
    }
}

fn assert_seed_behavior(label: &str, deployment: &str, behavior: &Value) {
    let policy = |direction: &str| {
        let b = &behavior[direction];
        let p = &b["policies"][0];
        (
            b["stabilizationWindowSeconds"].as_u64(),
            p["type"].as_str(),
            p["value"].as_u64(),
            p["periodSeconds"].as_u64(),
        )
    };
    assert_eq!(
        policy("scaleUp"),
        (Some(60), Some("Percent"), Some(100), Some(15)),
        "{label}: {deployment}: scale up 100 % per 15 s, 60 s window"
    );
    assert_eq!(
        policy("scaleDown"),
        (Some(300), Some("Percent"), Some(10), Some(60)),
        "{label}: {deployment}: scale down 10 % per 60 s, 300 s window"
    );
}

#[test]
fn custom_autoscaling_metrics_are_served_by_the_adapter_rules() {
    let objects = documents(
        &render(
            &[root().join("helm/regions/us-east.yaml")],
            "meridian-us-east",
        )
        .unwrap(),
    );
    let wanted: BTreeSet<String> = by_kind(&objects, "HorizontalPodAutoscaler")
        .iter()
        .flat_map(|h| h["spec"]["metrics"].as_array().unwrap().iter())
        .filter_map(|m| m["pods"]["metric"]["name"].as_str().map(String::from))
        .collect();
    assert!(wanted.len() >= 5, "{wanted:?}");
    let served: BTreeSet<String> = adapter_rules()
        .iter()
        .filter_map(|r| r["name"]["as"].as_str().map(String::from))
        .collect();
    let missing: Vec<_> = wanted.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "HPA metrics without an adapter rule: {missing:?}"
    );
}

/// Labels the scraper adds (the ServiceMonitors' target labels): never
/// on a process's own series.
const SCRAPE_LABELS: [&str; 4] = ["namespace", "pod", "job", "instance"];

/// The series selectors of a PromQL query: each `name{matchers}`'s metric
/// name and the label names it matches on.
fn selectors(query: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut found = Vec::new();
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut rest = query;
    while let Some(open) = rest.find('{') {
        let name: String = rest[..open]
            .chars()
            .rev()
            .take_while(|c| is_name(*c))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let body = &rest[open + 1..];
        // Matchers end at the first `}` outside a quoted value.
        let mut quoted = false;
        let mut end = body.len();
        for (i, c) in body.char_indices() {
            match c {
                '"' => quoted = !quoted,
                '}' if !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let mut labels = BTreeSet::new();
        let mut quoted = false;
        let mut start = 0;
        for (i, c) in body[..end].char_indices().chain([(end, ',')]) {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => {
                    let matcher = body[start..i].trim();
                    let label: String = matcher.chars().take_while(|c| is_name(*c)).collect();
                    if !label.is_empty() {
                        labels.insert(label);
                    }
                    start = i + 1;
                }
                _ => {}
            }
        }
        if !name.is_empty() {
            found.push((name, labels));
        }
        rest = &body[end.min(body.len())..];
    }
    found
}

#[test]
fn selectors_are_read_from_promql() {
    let query = r#"sum(rate(meridian_edge_requests_total{namespace="a",pod=~"b|c,d",status_class="5xx"}[2m])) / count(count by (pod) (x_count{}))"#;
    assert_eq!(
        selectors(query),
        vec![
            (
                "meridian_edge_requests_total".to_string(),
                ["namespace", "pod", "status_class"]
                    .map(String::from)
                    .into()
            ),
            ("x_count".to_string(), BTreeSet::new()),
        ]
    );
}

/// Every series selector the autoscalers' queries use: the
/// prometheus-adapter rules (their templates filled as the adapter does)
/// and the KEDA Prometheus triggers of the chart's KEDA scenario.
fn autoscaling_selectors() -> Vec<(String, BTreeSet<String>)> {
    let mut queries = Vec::new();
    for rule in adapter_rules() {
        let series = rule["seriesQuery"].as_str().unwrap();
        let series = series.split('{').next().unwrap().trim();
        queries.push(
            rule["metricsQuery"]
                .as_str()
                .unwrap()
                .replace("<<.Series>>", series)
                .replace("<<.LabelMatchers>>", "namespace=\"n\",pod=~\"p\"")
                .replace("<<.GroupBy>>", "pod"),
        );
    }
    let keda = documents(
        &render(
            &[
                root().join("helm/regions/eu-west.yaml"),
                root().join("helm/meridian/ci/keda-values.yaml"),
            ],
            "meridian-eu-west",
        )
        .unwrap(),
    );
    let triggers: Vec<String> = by_kind(&keda, "ScaledObject")
        .iter()
        .flat_map(|s| s["spec"]["triggers"].as_array().unwrap().iter())
        .filter(|t| t["type"] == "prometheus")
        .map(|t| t["metadata"]["query"].as_str().unwrap().to_string())
        .collect();
    assert!(
        triggers.len() >= 4,
        "the KEDA scenario's triggers: {triggers:?}"
    );
    queries.extend(triggers);
    let found: Vec<_> = queries.iter().flat_map(|q| selectors(q)).collect();
    assert!(found.len() >= 8, "{found:?}");
    found
}

/// The prometheus-adapter rules of `k8s/monitoring`.
fn adapter_rules() -> Vec<Value> {
    let mut command = Command::new(kubectl());
    command.arg("kustomize").arg(root().join("k8s/monitoring"));
    let monitoring = documents(&run(command).unwrap());
    let adapter = by_kind(&monitoring, "ConfigMap")
        .into_iter()
        .find_map(|c| c["data"]["config.yaml"].as_str())
        .expect("the prometheus-adapter config");
    let config: Value = serde_yaml_ng::from_str(adapter).unwrap();
    config["rules"].as_array().expect("rules").clone()
}

/// The series the prometheus-adapter rules select (`seriesQuery`'s metric
/// name).
fn adapter_series() -> BTreeSet<String> {
    let series: BTreeSet<String> = adapter_rules()
        .iter()
        .map(|r| {
            let query = r["seriesQuery"].as_str().unwrap();
            query.split('{').next().unwrap().trim().to_string()
        })
        .collect();
    assert!(series.len() >= 4, "{series:?}");
    series
}

#[test]
fn bad_values_are_refused_by_the_schema_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("edge:\n  replicas: 3\n", "replicas"),
        ("edge:\n  autoscaling:\n    minReplicas: 0\n", "minReplicas"),
        ("origin:\n  config:\n    listen: \"0.0.0.0:1\"\n", "listen"),
        (
            "origin:\n  config:\n    database:\n      primary_url: \"postgres://u:p@h/db\"\n",
            "primary_url",
        ),
        ("autoscaling:\n  engine: kedah\n", "engine"),
        (
            "secrets:\n  existingSecret: \"Not A Name\"\n",
            "existingSecret",
        ),
        (
            "region:\n  replicaLagTolerance: fast\n",
            "replicaLagTolerance",
        ),
        (
            "payments:\n  providers: [{name: p, url: \"ftp://x\"}]\n",
            "url",
        ),
        (
            "edge:\n  pdb:\n    maxUnavailable: \"lots\"\n",
            "maxUnavailable",
        ),
        (
            "telemetry:\n  otlpEndpoint: \"https://collector:4318\"\n",
            "otlpEndpoint",
        ),
        ("telemetry:\n  sampleRatio: 2\n", "sampleRatio"),
        (
            "edge:\n  config:\n    telemetry: {log_format: text}\n",
            "log_format",
        ),
    ];
    for (i, (values, key)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad-{i}.yaml"));
        std::fs::write(&file, values).unwrap();
        let error = render(&[file], "meridian-us-east").expect_err(values);
        assert!(
            error.contains("schema") && error.contains(key),
            "{values}: the error names the schema and `{key}`:\n{error}"
        );
    }
}

#[test]
fn region_values_agree_with_the_topology() {
    for region in REGIONS {
        let topology = meridian_topology::Topology::load_dir(&root().join("regions/topology"))
            .expect("the shipped topology");
        let ours = &topology.region(region).expect("the region").spec;
        let values: Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(root().join(format!("helm/regions/{region}.yaml"))).unwrap(),
        )
        .unwrap();
        let v = &values["region"];
        assert_eq!(v["name"], region);
        assert_eq!(
            humantime::parse_duration(v["replicaLagTolerance"].as_str().unwrap()).unwrap(),
            ours.replica_lag_tolerance,
            "{region}: lag tolerance"
        );
        assert_eq!(
            v["countries"],
            serde_json::json!(ours.countries),
            "{region}: countries"
        );
        assert_eq!(
            v["latencyMs"],
            serde_json::json!(ours.latency_ms),
            "{region}: latency row"
        );
        assert_eq!(
            v["home"].as_bool().unwrap_or(false),
            ours.home,
            "{region}: home"
        );
        // Peers: every other region, with its countries and latency row.
        let peers = v["peers"].as_array().unwrap();
        let peer_names: BTreeSet<&str> =
            peers.iter().map(|p| p["name"].as_str().unwrap()).collect();
        let others: BTreeSet<&str> = topology
            .regions()
            .map(|r| r.spec.name.as_str())
            .filter(|n| *n != region)
            .collect();
        assert_eq!(peer_names, others, "{region}: peers");
        for peer in peers {
            let other = &topology
                .region(peer["name"].as_str().unwrap())
                .unwrap()
                .spec;
            assert_eq!(peer["countries"], serde_json::json!(other.countries));
            assert_eq!(peer["latencyMsTo"], serde_json::json!(other.latency_ms));
        }
        // The shard map: same buckets, same shards, same ranges.
        let orders = &ours.orders;
        assert_eq!(
            values["orders"]["buckets"], orders.buckets,
            "{region}: buckets"
        );
        let shards: Vec<(String, Value)> = values["orders"]["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_string(),
                    s["buckets"].clone(),
                )
            })
            .collect();
        let expected: Vec<(String, Value)> = orders
            .shards
            .iter()
            .map(|s| (s.name.clone(), serde_json::json!(s.buckets)))
            .collect();
        assert_eq!(shards, expected, "{region}: shard map");
    }
}

#[test]
fn values_yaml_has_a_comment_above_every_key() {
    let text = std::fs::read_to_string(root().join("helm/meridian/values.yaml")).unwrap();
    assert!(
        text.starts_with("# yaml-language-server: $schema=values.schema.json"),
        "values.yaml is headed by the schema comment"
    );
    let mut previous = "";
    // Keys nested under these hold data (passthrough config, resources,
    // list items), not the chart's own settings.
    let mut data_indent: Option<usize> = None;
    let mut missing = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() {
            continue;
        }
        if data_indent.is_some_and(|d| indent > d) {
            previous = line;
            continue;
        }
        data_indent = None;
        if trimmed.starts_with("- ") {
            // A list item and its keys are data.
            data_indent = Some(indent);
            previous = line;
            continue;
        }
        if let Some((key, _)) = trimmed.split_once(':')
            && !trimmed.starts_with('#')
            && !trimmed.starts_with('-')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            if !previous.trim_start().starts_with('#') {
                missing.push(line.to_string());
            }
            let data = [
                "config",
                "resources",
                "behavior",
                "topologySpread",
                "replicas",
                "labels",
            ];
            if data.contains(&key) {
                data_indent = Some(indent);
            }
        }
        previous = line;
    }
    assert!(
        missing.is_empty(),
        "keys without a comment above them:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_charts_alert_rules_pass_promtool_and_their_unit_tests() {
    let rules = root().join("helm/meridian/rules");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&rules)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut check = Command::new("promtool");
    check.args(["check", "rules"]).args(&files);
    if let Err(error) = run(check) {
        panic!("promtool check rules (installed by .ci/install-deps): {error}");
    }
    // Every alert has a unit test that fires it.
    let tests = rules.join("tests");
    let mut test_files: Vec<PathBuf> = std::fs::read_dir(&tests)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    test_files.sort();
    let mut command = Command::new("promtool");
    command.args(["test", "rules"]).args(&test_files);
    if let Err(error) = run(command) {
        panic!("promtool test rules: {error}");
    }
    let tested: String = test_files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    let book = std::fs::read_to_string(root().join("dashboards/runbook.md")).unwrap();
    for file in &files {
        let groups: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        for rule in groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
        {
            if let Some(alert) = rule["alert"].as_str() {
                assert!(
                    tested.contains(&format!("alertname: {alert}")),
                    "alert {alert} has no promtool unit test"
                );
                let runbook = rule["annotations"]["runbook_url"]
                    .as_str()
                    .unwrap_or_default();
                let anchor = runbook.rsplit_once('#').map(|(_, a)| a).unwrap_or_default();
                assert!(
                    !anchor.is_empty()
                        && book.contains(&format!("## {alert}"))
                        && anchor == alert.to_lowercase(),
                    "alert {alert}: its runbook_url points at its section of dashboards/runbook.md"
                );
            }
        }
    }
}

#[test]
fn chart_dashboards_are_the_repositorys() {
    let listing = |dir: &Path| -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "json"))
                    .map(|p| {
                        (
                            p.file_name().unwrap().to_string_lossy().into_owned(),
                            std::fs::read_to_string(&p).unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        listing(&root().join("helm/meridian/dashboards")),
        listing(&root().join("dashboards")),
        "helm/meridian/dashboards/*.json are copies of dashboards/*.json"
    );
}

/// A process started from a rendered config; killed on drop.
struct Running {
    what: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The contents of the region's Secret, for the test: every key the
/// chart names, with the running test stack's addresses.
fn secret_files(stack: &TestStack, dir: &Path) -> Vec<String> {
    let region = stack.stack.region(HOME).expect("home region");
    let mut files = vec![
        ("catalog-primary-url", stack.stack.primary_url()),
        (
            "catalog-replica-url",
            region.replicas[0].url(meridian_launcher::CATALOG_DATABASE),
        ),
        ("redis-url", region.redis.url()),
        (
            "shopper-token-secret",
            crate::helpers::JWT_SECRET.to_string(),
        ),
        (
            "guest-cookie-secret",
            "deploy-test-guest-cookie-secret-0123456789".to_string(),
        ),
        ("origin-admin-token", crate::helpers::TOKEN.to_string()),
        (
            "edge-admin-token",
            "deploy-test-edge-admin-token-0123".to_string(),
        ),
        (
            "waiting-room-secret",
            "deploy-test-waiting-room-secret-0123456789".to_string(),
        ),
        (
            "bot-challenge-secret",
            "deploy-test-bot-challenge-secret-0123456789".to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect::<Vec<_>>();
    for (shard_region, shard, url) in stack.stack.order_shard_urls() {
        if shard_region == HOME {
            files.push((format!("orders-{shard}-url"), url));
        }
    }
    for (key, value) in &files {
        // As the kubelet writes them: the value, nothing else.
        std::fs::write(dir.join(key), value).unwrap();
    }
    files.into_iter().map(|(_, value)| value).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rendered_configs_pass_check_config_and_the_probes_answer_on_the_running_binary() {
    let mut stack = TestStack::start(&[HOME], 1, 20).await;
    stack.start_order_shards(false).await;
    let work = tempfile::tempdir().unwrap();
    let secrets_dir = work.path().join("secrets");
    let state_dir = work.path().join("state");
    std::fs::create_dir_all(&secrets_dir).unwrap();
    std::fs::create_dir_all(&state_dir).unwrap();
    let secret_values = secret_files(&stack, &secrets_dir);

    let objects = documents(
        &render(
            &[root().join(format!("helm/regions/{HOME}.yaml"))],
            &format!("meridian-{HOME}"),
        )
        .unwrap(),
    );
    let mut running = Vec::new();
    let mut probes = Vec::new();
    // Per process: its public address and its metrics address.
    let mut endpoints = Vec::new();
    for deployment in by_kind(&objects, "Deployment") {
        let d = name(deployment).to_string();
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let component = container["args"][0].as_str().unwrap().to_string();
        // The ConfigMap's file, with the volumes' mount paths pointing at
        // this test's folders (what the kubelet's mounts do).
        let config = serde_json::to_string_pretty(&deployment_config(&objects, deployment))
            .unwrap()
            .replace(SECRETS_DIR, secrets_dir.to_str().unwrap())
            .replace("/var/lib/meridian", state_dir.to_str().unwrap());
        let file = work.path().join(format!("{d}.json"));
        std::fs::write(&file, &config).unwrap();

        let check = Command::new(meridian_bin())
            .args([component.as_str(), "--check-config"])
            .arg(&file)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(
            check.status.success(),
            "{d}: --check-config refused the rendered config:\n{said}"
        );
        for secret in &secret_values {
            assert!(
                !said.contains(secret.as_str()),
                "{d}: --check-config printed a secret"
            );
        }

        // Started as the pod would, on free ports: the listeners are moved
        // by environment overrides (the 12-factor way), the probes' ports
        // mapped along.
        let prefix = if component == "edge" {
            "MERIDIAN_EDGE__"
        } else {
            "MERIDIAN_ORIGIN__"
        };
        let ports: BTreeMap<&str, u16> = container_ports(container)
            .into_keys()
            .map(|name| (name, meridian_launcher::free_port().unwrap()))
            .collect();
        // The listeners, by the variable that moves each and its port's name.
        let (listen, metrics) = if component == "edge" {
            (("LISTEN", "http"), ("ADMIN_LISTEN", "admin"))
        } else {
            (("LISTEN", "http"), ("INTERNAL_LISTEN", "internal"))
        };
        let log = work.path().join(format!("{d}.log"));
        let mut command = Command::new(meridian_bin());
        command
            .args([component.as_str(), "--config"])
            .arg(&file)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(work.path().join(format!("{d}.err"))).unwrap());
        for (key, port) in [listen, metrics] {
            command.env(
                format!("{prefix}{key}"),
                format!("127.0.0.1:{}", ports[port]),
            );
        }
        endpoints.push((
            d.clone(),
            format!("http://127.0.0.1:{}", ports[listen.1]),
            format!("http://127.0.0.1:{}/metrics", ports[metrics.1]),
        ));
        let child = command.spawn().unwrap();
        running.push(Running {
            what: d.clone(),
            child,
            log,
        });
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let get = &container[probe]["httpGet"];
            let port_name = get["port"].as_str().unwrap();
            probes.push((
                d.clone(),
                probe,
                format!(
                    "http://127.0.0.1:{}{}",
                    ports[port_name],
                    get["path"].as_str().unwrap()
                ),
            ));
        }
    }

    let client = reqwest::Client::new();
    for (d, probe, url) in &probes {
        let mut last;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match client.get(url).send().await {
                Ok(response) if response.status() == 200 => break,
                Ok(response) => {
                    last = format!(
                        "{} {}",
                        response.status(),
                        response.text().await.unwrap_or_default()
                    )
                }
                Err(error) => last = error.to_string(),
            }
            if std::time::Instant::now() > deadline {
                let logs: Vec<String> = running
                    .iter()
                    .filter(|r| &r.what == d)
                    .map(|r| {
                        std::fs::read_to_string(r.log.with_extension("err")).unwrap_or_default()
                    })
                    .collect();
                panic!(
                    "{d}: {probe} {url} never answered 200 (last: {last})\n{}",
                    logs.join("\n")
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    // Every series the autoscalers' custom metrics are computed from
    // (k8s/monitoring's adapter rules) is one these processes emit, once a
    // request has passed (the edge's goes nowhere: its origins' names do
    // not resolve here, and it still answers).
    for (_, public, _) in &endpoints {
        let _ = client.get(format!("{public}/healthz")).send().await;
        let _ = client.get(format!("{public}/v1/categories")).send().await;
    }
    let mut exposition = String::new();
    for (_, _, metrics) in &endpoints {
        exposition.push_str(
            &client
                .get(metrics)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    let lines_of = |series: &str| -> Vec<&str> {
        exposition
            .lines()
            .filter(|line| {
                line.starts_with(&format!("{series}{{")) || line.starts_with(&format!("{series} "))
            })
            .collect()
    };
    for series in adapter_series() {
        assert!(
            !lines_of(&series).is_empty(),
            "the adapter rules query `{series}`, which no process emits"
        );
    }
    // And every label they (and the KEDA triggers) match on is one of
    // that series' labels (the scraper's own aside).
    for (series, labels) in autoscaling_selectors() {
        let lines = lines_of(&series);
        assert!(
            !lines.is_empty(),
            "the autoscalers query `{series}`, which no process emits"
        );
        for label in labels
            .iter()
            .filter(|l| !SCRAPE_LABELS.contains(&l.as_str()))
        {
            assert!(
                lines
                    .iter()
                    .any(|line| line.contains(&format!("{{{label}=\""))
                        || line.contains(&format!(",{label}=\""))),
                "the autoscalers match `{series}` on `{label}`, a label it does not have: {lines:?}"
            );
        }
    }

    // The roles are real: the admin API answers on the admin role only.
    let internal = |role: &str| {
        probes
            .iter()
            .find(|(d, probe, _)| {
                d.ends_with(&format!("origin-{role}")) && *probe == "readinessProbe"
            })
            .map(|(_, _, url)| url.trim_end_matches("/readyz").to_string())
            .unwrap()
    };
    let modes = |base: String| {
        let client = client.clone();
        async move {
            client
                .get(format!("{base}/v1/admin/modes"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        modes(internal("admin")).await,
        401,
        "the admin role serves the admin API"
    );
    assert_eq!(modes(internal("api")).await, 404, "the api role does not");
    assert_eq!(
        modes(internal("workers")).await,
        404,
        "the workers role does not"
    );

    // No secret reached a log (the test stack's URLs carry no password:
    // the tokens and keys are what must never show).
    drop(probes);
    let secret_values: Vec<&String> = secret_values
        .iter()
        .filter(|v| !v.contains("://"))
        .collect();
    for run in running.drain(..) {
        let (what, log) = (run.what.clone(), run.log.clone());
        drop(run);
        for file in [log.clone(), log.with_extension("err")] {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for secret in &secret_values {
                assert!(
                    !text.contains(secret.as_str()),
                    "{what}: a secret in {}",
                    file.display()
                );
            }
        }
    }
}
