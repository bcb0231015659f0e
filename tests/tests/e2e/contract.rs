//! The published API contract held against a live origin: schemathesis
//! (PyPI; `.ci/install-deps` puts it in `.meridian/venv`) generates
//! requests for every operation of the origin's own `/openapi.json` —
//! shopper operations on the public listener with a shopper token, admin
//! operations on the internal listener with an admin token — and checks
//! that none answers a server error, and that every answer matches the
//! documented status codes, content types and schemas.

use std::path::PathBuf;
use std::time::Duration;

use crate::checkout::{set_stock, shop_stack};
use crate::helpers::{HOME, TOKEN, shopper_token};

/// The schemathesis command: `$MERIDIAN_SCHEMATHESIS`, else the one
/// `.ci/install-deps` installs.
fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("MERIDIAN_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../.meridian/venv/bin/schemathesis"
    ));
    assert!(
        path.is_file(),
        "{} is missing: run .ci/install-deps (it installs schemathesis into a venv)",
        path.display()
    );
    path
}

/// One schemathesis run; returns its summary line(s).
async fn run(schema: &std::path::Path, base: &str, token: &str, filter: [&str; 2]) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new(schemathesis())
            // Its cache goes beside the schema (a temporary folder), not
            // into the checkout.
            .current_dir(schema.parent().unwrap_or(std::path::Path::new("/tmp")))
            .arg("run")
            .arg(schema)
            .args(["--url", base])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .args(filter)
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "30",
                "--seed",
                "13",
                "--workers",
                "2",
                "--suppress-health-check",
                "all",
                "--no-color",
            ])
            .output(),
    )
    .await
    .expect("schemathesis finishes within 10 minutes")
    .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        output.status.success(),
        "schemathesis found problems against {base}:\n{stdout}\n{stderr}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let stack = shop_stack(30).await;
    let origin = stack.origin(HOME).await;
    for (sku, _) in stack.sellable_skus(5).await {
        set_stock(&origin, &sku, 1000).await;
    }
    let document = origin.internal("/openapi.json").await;
    assert_eq!(document.status(), 200);
    let dir = tempfile::tempdir().expect("tempdir");
    let schema = dir.path().join("openapi.json");
    std::fs::write(&schema, document.bytes().await.expect("body")).expect("write schema");

    let internal = "^/(v1/admin|readyz|metrics)";
    let shopper = shopper_token("contract-shopper", HOME);
    let public = run(
        &schema,
        &origin.url,
        &shopper,
        ["--exclude-path-regex", internal],
    )
    .await;
    let admin = run(
        &schema,
        &origin.admin,
        TOKEN,
        ["--include-path-regex", internal],
    )
    .await;
    for (listener, out) in [("public", &public), ("internal", &admin)] {
        let summary: Vec<&str> = out
            .lines()
            .filter(|l| {
                l.contains("passed") || l.contains("Test cases") || l.contains("operations")
            })
            .collect();
        println!("schemathesis, {listener} listener:\n{}", summary.join("\n"));
    }
}
