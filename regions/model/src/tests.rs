//! Unit tests of the topology model: the shipped files load, and every kind
//! of mistake names the file, the field and the problem.

use super::*;

fn shipped() -> Vec<(PathBuf, String)> {
    EMBEDDED_REGIONS
        .iter()
        .map(|(n, t)| {
            (
                PathBuf::from(format!("regions/topology/{n}")),
                t.to_string(),
            )
        })
        .collect()
}

fn with_edit(file: &str, from: &str, to: &str) -> Result<Topology, TopologyError> {
    let mut sources = shipped();
    let entry = sources
        .iter_mut()
        .find(|(p, _)| p.ends_with(file))
        .unwrap_or_else(|| panic!("no shipped file {file}"));
    assert!(entry.1.contains(from), "{file} does not contain {from:?}");
    entry.1 = entry.1.replacen(from, to, 1);
    Topology::from_sources(sources)
}

fn error_text(result: Result<Topology, TopologyError>) -> String {
    match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn shipped_topology_loads_with_seed_tolerances() {
    let topology = Topology::embedded().expect("shipped topology is valid");
    assert_eq!(topology.home().name, "us-east");
    let ms = |r: &str| {
        topology
            .region(r)
            .map(|r| r.replica_lag_tolerance.as_millis())
            .ok()
    };
    assert_eq!(ms("us-east"), Some(100));
    assert_eq!(ms("eu-west"), Some(200));
    assert_eq!(ms("ap-southeast"), Some(300));
    assert_eq!(
        topology.region_for_country("de").map(|r| r.name.as_str()),
        Some("eu-west")
    );
    let near: Vec<&str> = topology
        .nearest_to("ap-southeast")
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(near, ["eu-west", "us-east"]);
}

#[test]
fn shipped_directory_matches_embedded_copy() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology");
    let loaded = Topology::load_dir(&dir).expect("directory loads");
    let embedded = Topology::embedded().expect("embedded loads");
    let a: Vec<_> = loaded.regions().map(|r| r.spec.clone()).collect();
    let b: Vec<_> = embedded.regions().map(|r| r.spec.clone()).collect();
    assert_eq!(a, b);
}

#[test]
fn unknown_field_names_file_and_field() {
    let text = error_text(with_edit(
        "eu-west.toml",
        "countries =",
        "colour = \"red\"\ncountries =",
    ));
    assert!(text.contains("eu-west.toml"), "{text}");
    assert!(text.contains("colour"), "{text}");
}

#[test]
fn bad_duration_is_a_parse_error_naming_the_file() {
    let text = error_text(with_edit("us-east.toml", "\"100ms\"", "\"soon\""));
    assert!(
        text.contains("us-east.toml") && text.contains("replica_lag_tolerance"),
        "{text}"
    );
}

#[test]
fn semantic_errors_name_the_field() {
    let cases = [
        ("eu-west.toml", "\"GB\"", "\"gb\"", "countries[0]"),
        ("eu-west.toml", "\"GB\"", "\"US\"", "countries"),
        (
            "eu-west.toml",
            "[catalog]\n",
            "[catalog]\nprimary = { host = \"127.0.0.1\", port = 0 }\n",
            "catalog.primary",
        ),
        (
            "us-east.toml",
            "home = true",
            "home = false",
            "catalog.primary",
        ),
        ("eu-west.toml", "ap-southeast = 160\n", "", "latency_ms"),
        (
            "eu-west.toml",
            "[[512, 1023]]",
            "[[600, 1023]]",
            "orders.shards",
        ),
        (
            "eu-west.toml",
            "[[512, 1023]]",
            "[[500, 1023]]",
            "orders.shards[1].buckets[0]",
        ),
        (
            "eu-west.toml",
            "\"200ms\"",
            "\"0s\"",
            "replica_lag_tolerance",
        ),
        (
            "eu-west.toml",
            "port = 8210",
            "port = 8110",
            "origin.listen",
        ),
        (
            "ap-southeast.toml",
            "replicas = [{ name = \"ap-southeast-replica-1\", host = \"127.0.0.1\", port = 0 }]",
            "replicas = []",
            "catalog.replicas",
        ),
    ];
    for (file, from, to, field) in cases {
        let text = error_text(with_edit(file, from, to));
        assert!(
            text.contains(&format!("`{field}`")),
            "{file}: {from} -> {to}: {text}"
        );
        assert!(text.contains(".toml"), "{text}");
    }
}

#[test]
fn restrict_keeps_home_and_trims_latency() {
    let topology = Topology::embedded().expect("valid");
    let two = topology
        .restrict(&["us-east".into(), "eu-west".into()])
        .expect("home included");
    assert_eq!(two.names().collect::<Vec<_>>(), ["eu-west", "us-east"]);
    assert!(two.validate().is_ok());
    assert!(topology.restrict(&["eu-west".into()]).is_err());
    assert!(
        topology
            .restrict(&["mars".into(), "us-east".into()])
            .is_err()
    );
}

#[test]
fn shard_map_covers_every_bucket() {
    let topology = Topology::embedded().expect("valid");
    let region = topology.home();
    for bucket in 0..region.orders.buckets {
        assert!(region.shard_for_bucket(bucket).is_some(), "bucket {bucket}");
    }
}

#[test]
fn users_map_to_a_shard_of_their_region_and_shards_are_found_by_name() {
    let topology = Topology::embedded().expect("valid");
    for region in topology.regions() {
        let mut used = std::collections::BTreeSet::new();
        for i in 0..1000 {
            let shard = region
                .shard_for_user(&format!("user-{i}"))
                .expect("every user has a shard");
            assert_eq!(region.shard_named(&shard.name), Some(shard));
            used.insert(shard.name.clone());
        }
        assert_eq!(used.len(), region.orders.shards.len(), "{}", region.name);
    }
    assert!(topology.home().shard_named("nope").is_none());
}

#[test]
fn ephemeral_ports_and_region_edits_stay_valid() {
    let topology = Topology::embedded().expect("valid").with_ephemeral_ports();
    assert!(topology.validate().is_ok());
    assert!(
        topology
            .regions()
            .all(|r| r.fixed_endpoints().iter().all(|(_, e)| e.port == 0))
    );
    let mut home = topology.home().spec.clone();
    let mut extra = home.catalog.replicas[0].clone();
    extra.name = "us-east-replica-2".into();
    home.catalog.replicas.push(extra.clone());
    let edited = topology
        .clone()
        .with_region(home.clone())
        .expect("two replicas are fine");
    assert_eq!(edited.home().catalog.replicas.len(), 2);
    home.catalog.replicas.push(extra);
    let error = topology
        .with_region(home)
        .expect_err("duplicate replica name");
    assert!(
        error.to_string().contains("catalog.replicas[2].name"),
        "{error}"
    );
}
