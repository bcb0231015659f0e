//! The container image's recipe (`Dockerfile`): no image can be built on
//! this machine (no container engine), so what can be checked here is:
//! hadolint finds nothing, and the runtime contract the chart relies on
//! holds — a non-root user, the `meridian` binary as the entrypoint, built
//! from the package that defines it, and a declared writable volume.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The instructions of the Dockerfile's last stage, continuation lines
/// joined, comments dropped.
fn final_stage(text: &str) -> Vec<String> {
    let joined = text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let instructions: Vec<String> = joined
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect();
    let last_from = instructions
        .iter()
        .rposition(|line| line.starts_with("FROM "))
        .expect("a FROM");
    instructions[last_from..].to_vec()
}

#[test]
fn the_dockerfile_is_lint_clean_and_keeps_the_runtime_contract() {
    let dockerfile = root().join("Dockerfile");
    let hadolint = root().join(".meridian/venv/bin/hadolint");
    assert!(
        hadolint.is_file(),
        "{} is missing: run .ci/install-deps (it installs hadolint into a venv)",
        hadolint.display()
    );
    let output = Command::new(&hadolint)
        .arg(&dockerfile)
        .output()
        .expect("hadolint runs");
    assert!(
        output.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    let text = std::fs::read_to_string(&dockerfile).expect("Dockerfile");
    let stage = final_stage(&text);
    let user = stage
        .iter()
        .rev()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("the runtime stage names its user");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        uid.parse::<u32>().is_ok_and(|uid| uid != 0),
        "the image runs as a numeric non-root uid, not {user:?}"
    );
    assert!(
        stage
            .iter()
            .any(|line| line == "ENTRYPOINT [\"/usr/local/bin/meridian\"]"),
        "the entrypoint is the meridian binary: {stage:?}"
    );
    assert!(
        stage.iter().any(|line| line.starts_with("VOLUME ")),
        "the writable path is a declared volume: {stage:?}"
    );
    // The build stage builds the binary from the package that defines it.
    assert!(text.contains("-p meridian-cli --bin meridian"));
    let manifest =
        std::fs::read_to_string(root().join("regions/cli/Cargo.toml")).expect("cli manifest");
    assert!(manifest.contains("name = \"meridian-cli\""));
    assert!(manifest.contains("name = \"meridian\""));
    // Everything the build needs is in the context.
    let ignored = std::fs::read_to_string(root().join(".dockerignore")).expect(".dockerignore");
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "regions",
        "origin",
        "edge",
        "tests",
    ] {
        assert!(
            !ignored
                .lines()
                .any(|line| line.trim_end_matches('/') == needed),
            "{needed} must reach the build"
        );
    }
}
