//! The `meridian` binary end to end: `up` starts a real two-region stack,
//! writes the stack file, serves through origins and edges, and stops every
//! process on SIGINT; `token` mints shopper tokens the stack accepts; bad
//! topology files are refused with the file and field named.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_launcher::stack_file::StackFile;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_meridian");

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// `meridian up` under test: stopped (SIGINT, then SIGKILL) when dropped,
/// so a failing assertion does not leave the stack running.
struct Up(std::process::Child);

impl Drop for Up {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn up_serves_two_regions_and_stops_everything_on_ctrl_c() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up(Command::new(BIN)
        .args(["up", "--regions", "us-east,eu-west", "--products", "200"])
        .args(["--admin-token", "cli-test-admin-token-0001"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("meridian up starts"));
    let child = &mut up.0;
    let stack_path = dir.path().join(".meridian/stack.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stack_path.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "meridian up exited early"
        );
        assert!(Instant::now() < deadline, "no stack file within 120 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let stack = StackFile::read(&stack_path).expect("stack file parses");
    assert_eq!(stack.admin_token, "cli-test-admin-token-0001");
    // Secrets are the owner's alone.
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&stack_path), 0o600);
    assert_eq!(
        mode(&dir.path().join(".meridian/origin-us-east.toml")),
        0o600
    );
    assert_eq!(mode(&dir.path().join(".meridian/edge-eu-west.toml")), 0o600);
    assert_eq!(
        mode(&stack.data_dir),
        meridian_launcher::private_files::data_dir_mode()
    );
    assert_eq!(mode(&stack.data_dir.join("tls/edge-key.pem")), 0o600);
    assert_eq!(stack.home_region, "us-east");
    assert_eq!(
        stack.regions.keys().collect::<Vec<_>>(),
        ["eu-west", "us-east"]
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for region in stack.regions.values() {
        for name in ["origin", "edge", "redis"] {
            assert!(region.pids.contains_key(name), "{name} pid listed");
        }
        assert!(!region.postgres.replicas.is_empty());
        let url = format!("{}/v1/products/1", region.origin);
        let status = runtime.block_on(async { reqwest::get(&url).await.map(|r| r.status()) });
        assert_eq!(status.expect("origin answers").as_u16(), 200, "{url}");

        // The region's edge answers the same URL, from its cache the second time.
        let edge = region.edge.as_ref().expect("edge listed");
        assert!(
            region
                .edge_tls
                .as_ref()
                .expect("edge_tls listed")
                .starts_with("https://")
        );
        let url = format!("{edge}/v1/products/1");
        let statuses: Vec<String> = runtime.block_on(async {
            let mut out = Vec::new();
            for _ in 0..2 {
                let response = reqwest::get(&url).await.expect("edge answers");
                assert_eq!(response.status().as_u16(), 200, "{url}");
                out.push(response.headers()["x-cache"].to_str().unwrap().to_string());
            }
            out
        });
        assert_eq!(statuses, ["MISS", "HIT"], "{url}");
        let ready = format!(
            "{}/readyz",
            region.edge_admin.as_ref().expect("edge_admin listed")
        );
        let status = runtime.block_on(async { reqwest::get(&ready).await.map(|r| r.status()) });
        assert_eq!(status.expect("edge admin answers").as_u16(), 200, "{ready}");
    }
    assert!(
        stack.regions["us-east"]
            .pids
            .contains_key("postgres-primary")
    );
    // Each region's order shards are databases that accept connections.
    let psql = meridian_launcher::Binaries::discover().unwrap().pg("psql");
    for (name, region) in &stack.regions {
        assert_eq!(region.orders.len(), 2, "{name}: two order shards");
        for (shard, url) in &region.orders {
            let output = Command::new(&psql)
                .args(["-X", "-t", "-A", "-c", "select current_database()", url])
                .output()
                .unwrap();
            assert!(output.status.success(), "{shard}: {output:?}");
            assert!(String::from_utf8_lossy(&output.stdout).starts_with("orders_"));
        }
    }
    // Two payment-provider simulators, each answering its API.
    assert_eq!(
        stack.psp.keys().collect::<Vec<_>>(),
        ["fallback", "primary"]
    );
    for (name, psp) in &stack.psp {
        let url = format!("{}/v1/ledger", psp.url);
        let ledger: serde_json::Value = runtime
            .block_on(async { reqwest::get(&url).await?.json().await })
            .expect("psp answers");
        assert_eq!(ledger["psp"], name.as_str());
    }
    let pids: Vec<u32> = stack
        .regions
        .values()
        .flat_map(|r| r.pids.values().copied())
        .chain(stack.psp.values().map(|p| p.pid))
        .collect();
    assert!(pids.iter().all(|pid| alive(*pid)));

    // Seeding a running, seeded stack is refused with a clear message.
    let seed = Command::new(BIN)
        .args(["seed", "--products", "10"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!seed.status.success());
    assert!(String::from_utf8_lossy(&seed.stderr).contains("already has 200 products"));

    // `meridian token` signs with the running stack's secret: the edge
    // accepts the token on a personal route (pinned to the home region) and
    // refuses a token it did not sign.
    let token = Command::new(BIN)
        .args(["token", "--user", "u7", "--region", "eu-west"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8(token.stdout).unwrap().trim().to_string();
    let edge = stack.regions["us-east"].edge.clone().expect("edge listed");
    let (good, forged) = runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut statuses = Vec::new();
        for bearer in [token.as_str(), "e30.e30.forged"] {
            let response = client
                .get(format!("{edge}/v1/cart"))
                .bearer_auth(bearer)
                .send()
                .await
                .expect("edge answers");
            statuses.push(response.status().as_u16());
        }
        (statuses[0], statuses[1])
    });
    assert_ne!(good, 401, "a minted token is accepted");
    assert_eq!(forged, 401);

    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "meridian up did not stop");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}");
    for pid in pids {
        assert!(!alive(pid), "process {pid} outlived the stack");
    }
    assert!(!stack_path.exists(), "stack file removed on exit");
}

#[test]
fn a_bad_region_file_is_refused_with_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let topology = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topology");
    for entry in std::fs::read_dir(&topology).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text.replace(
            "replica_lag_tolerance = \"200ms\"",
            "replica_lag_tolerance = \"0s\"",
        );
        std::fs::write(dir.path().join(path.file_name().unwrap()), text).unwrap();
    }
    let output = Command::new(BIN)
        .args(["up", "--topology"])
        .arg(dir.path())
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("eu-west.toml"), "{stderr}");
    assert!(stderr.contains("`replica_lag_tolerance`"), "{stderr}");
}

#[test]
fn token_mints_a_verifiable_shopper_token_and_refuses_bad_input() {
    use meridian_contracts::shopper_token::TokenVerifier;
    let dir = tempfile::tempdir().unwrap();
    let secret = "cli-test-jwt-secret-of-32-bytes-or-more";
    let output = Command::new(BIN)
        .args([
            "token", "--user", "u42", "--region", "eu-west", "--ttl", "2h",
        ])
        .args(["--secret", secret])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let token = String::from_utf8(output.stdout).unwrap();
    let claims = TokenVerifier::hs256(secret)
        .unwrap()
        .verify(token.trim())
        .unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.region.as_str()),
        ("u42", "eu-west")
    );

    for (args, message) in [
        (
            vec!["--region", "mars", "--secret", secret],
            "unknown region `mars`",
        ),
        (
            vec!["--region", "eu-west", "--secret", "short"],
            "at least 32 bytes",
        ),
        (vec!["--region", "eu-west"], "stack.json"),
    ] {
        let output = Command::new(BIN)
            .args(["token", "--user", "u42"])
            .args(&args)
            .current_dir(dir.path())
            .env_remove("MERIDIAN_JWT_SECRET")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        assert!(output.stdout.is_empty(), "no token printed for {args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

/// `meridian origin|edge --check-config FILE`: validates through the same
/// loader as the processes (the file, the binary's `MERIDIAN_…__` variables,
/// `*_file` secrets), starts nothing (its listen ports are taken and its
/// database does not exist), and names the file or variable and the field
/// of a bad config — never a secret's value.
#[test]
fn check_config_validates_without_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let taken = [
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
    ];
    let port = taken[0].local_addr().unwrap().port();
    let other = taken[1].local_addr().unwrap().port();
    const GUEST_SECRET: &str = "a-guest-cookie-secret-of-some-length-0123456789";
    const FILE_SECRET: &str = "a-guest-cookie-secret-from-a-mounted-file-0123";
    let origin = format!(
        r#"region = "us-east"
listen = "127.0.0.1:{port}"
internal_listen = "127.0.0.1:{other}"
admin_tokens = [{{ name = "ops", token = "an-admin-token-of-some-length-0123" }}]

[database]
primary_url = "postgres://meridian@no-such-host.invalid:5432/meridian"
lag_tolerance = "2s"

[shoppers]
hs256_secret = "a-shopper-token-secret-of-some-length-0123456789"
guest_cookie_secret = "{GUEST_SECRET}"
"#
    );
    let edge = format!(
        r#"region = "us-east"
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{other}"
admin_tokens = [{{ name = "ops", token = "an-edge-admin-token-0123456789" }}]
upstreams = [{{ name = "us-east", origins = ["127.0.0.1:9"], latency_ms = 0 }}]
"#
    );
    let secret_file = dir.path().join("guest-cookie-secret");
    std::fs::write(&secret_file, format!("{FILE_SECRET}\n")).unwrap();
    // Everything printed by the checks that failed: no secret may be in it.
    let mut refusals = String::new();
    let mut check = |kind: &str, text: &str, env: &[(&str, &str)]| {
        let path = dir.path().join(format!("{kind}.toml"));
        std::fs::write(&path, text).unwrap();
        let output = Command::new(BIN)
            .args([kind, "--check-config"])
            .arg(&path)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        );
        if !output.status.success() {
            refusals.push_str(&stdout);
            refusals.push_str(&stderr);
        }
        (output.status.code(), stdout, stderr)
    };

    let (code, stdout, _) = check("origin", &origin, &[]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("a valid origin config (region us-east"),
        "{stdout}"
    );
    let (code, stdout, _) = check("edge", &edge, &[]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.contains("a valid edge config (region us-east"),
        "{stdout}"
    );

    // Bad configs: a value of the wrong type, a rule across fields, an
    // unknown key. Each names what is wrong.
    let (code, _, stderr) = check("origin", &origin.replace("\"2s\"", "\"soon\""), &[]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("lag_tolerance"), "{stderr}");
    let (code, _, stderr) = check(
        "origin",
        &origin.replace(
            "hs256_secret = \"a-shopper-token-secret-of-some-length-0123456789\"\n",
            "",
        ),
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains("shoppers"), "{stderr}");
    let (code, _, stderr) = check("edge", &format!("{edge}colour = \"blue\"\n"), &[]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("colour"), "{stderr}");

    // The environment overrides the file, each binary under its own prefix.
    let (code, stdout, _) = check("origin", &origin, &[("MERIDIAN_ORIGIN__REGION", "eu-west")]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("(region eu-west"), "{stdout}");
    let (code, stdout, _) = check(
        "edge",
        &edge,
        &[
            ("MERIDIAN_ORIGIN__REGION", "eu-west"),
            ("MERIDIAN_EDGE__MAX_REQUEST_HEADERS", "64"),
        ],
    );
    assert_eq!(code, Some(0));
    assert!(stdout.contains("(region us-east"), "{stdout}");
    // A valid file made invalid by a variable: the variable and the field
    // are named, for a rule of validate() and for a wrong type alike.
    let (code, _, stderr) = check(
        "origin",
        &origin,
        &[("MERIDIAN_ORIGIN__DATABASE__POOL_SIZE", "0")],
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("environment variable MERIDIAN_ORIGIN__DATABASE__POOL_SIZE"),
        "{stderr}"
    );
    assert!(stderr.contains("`database.pool_size`"), "{stderr}");
    let (code, _, stderr) = check(
        "edge",
        &edge,
        &[("MERIDIAN_EDGE__REDIS_URL", "http://cache.example:6379")],
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("environment variable MERIDIAN_EDGE__REDIS_URL: field `redis_url`"),
        "{stderr}"
    );

    // A secret from a file (a mounted Kubernetes Secret), named in the file
    // or by a variable.
    let from_file = origin.replace(
        &format!("guest_cookie_secret = \"{GUEST_SECRET}\""),
        &format!("guest_cookie_secret_file = \"{}\"", secret_file.display()),
    );
    let (code, stdout, stderr) = check("origin", &from_file, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("a valid origin config"), "{stdout}");
    let without = origin.replace(&format!("guest_cookie_secret = \"{GUEST_SECRET}\"\n"), "");
    let variable = secret_file.display().to_string();
    let (code, _, stderr) = check(
        "origin",
        &without,
        &[(
            "MERIDIAN_ORIGIN__SHOPPERS__GUEST_COOKIE_SECRET_FILE",
            &variable,
        )],
    );
    assert_eq!(code, Some(0), "{stderr}");
    // The value and its file both set: refused, both named.
    let (code, _, stderr) = check(
        "origin",
        &origin,
        &[(
            "MERIDIAN_ORIGIN__SHOPPERS__GUEST_COOKIE_SECRET_FILE",
            &variable,
        )],
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("`shoppers.guest_cookie_secret`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`shoppers.guest_cookie_secret_file`"),
        "{stderr}"
    );
    // A secret file that is not there: refused, its path named.
    let missing = dir.path().join("no-such-secret");
    let (code, _, stderr) = check(
        "origin",
        &origin.replace(
            &format!("guest_cookie_secret = \"{GUEST_SECRET}\""),
            &format!("guest_cookie_secret_file = \"{}\"", missing.display()),
        ),
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("shoppers.guest_cookie_secret_file"),
        "{stderr}"
    );
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    // A secret too short: the rule names the field and where it came from.
    std::fs::write(&secret_file, "too-short\n").unwrap();
    let (code, _, stderr) = check("origin", &from_file, &[]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("`shoppers.guest_cookie_secret`"),
        "{stderr}"
    );
    assert!(stderr.contains("origin.toml"), "{stderr}");
    // A secret file pointed at a field that is no secret: the type error
    // does not quote the file.
    std::fs::write(&secret_file, format!("{FILE_SECRET}\n")).unwrap();
    let (code, _, stderr) = check(
        "origin",
        &origin.replace(
            "lag_tolerance = \"2s\"",
            &format!(
                "lag_tolerance = \"2s\"\npool_size_file = \"{}\"",
                secret_file.display()
            ),
        ),
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains("`database.pool_size`"), "{stderr}");

    // No refusal printed a secret.
    for secret in [
        GUEST_SECRET,
        FILE_SECRET,
        "too-short",
        "an-admin-token-of-some-length",
    ] {
        assert!(!refusals.contains(secret), "{secret} in: {refusals}");
    }

    // --config and --check-config together are a usage error.
    let status = Command::new(BIN)
        .args(["edge", "--config", "a.toml", "--check-config", "b.toml"])
        .output()
        .unwrap()
        .status;
    assert_eq!(status.code(), Some(2));
    drop(taken);
}

/// The `telemetry` section goes through the one loader: off by default,
/// switched on by a variable, its rules checked with the variable named.
#[test]
fn telemetry_is_configured_like_any_other_section() {
    let dir = tempfile::tempdir().unwrap();
    let origin = r#"region = "us-east"
listen = "127.0.0.1:1"
internal_listen = "127.0.0.1:2"
admin_tokens = [{ name = "ops", token = "an-admin-token-of-some-length-0123" }]

[database]
primary_url = "postgres://meridian@no-such-host.invalid:5432/meridian"
lag_tolerance = "2s"

[shoppers]
hs256_secret = "a-shopper-token-secret-of-some-length-0123456789"
guest_cookie_secret = "a-guest-cookie-secret-of-some-length-0123456789"
"#;
    let edge = r#"region = "us-east"
listen = "127.0.0.1:1"
admin_listen = "127.0.0.1:2"
admin_tokens = [{ name = "ops", token = "an-edge-admin-token-0123456789" }]
upstreams = [{ name = "us-east", origins = ["127.0.0.1:9"], latency_ms = 0 }]
"#;
    let check = |kind: &str, text: &str, env: &[(&str, &str)]| {
        let path = dir.path().join(format!("{kind}.toml"));
        std::fs::write(&path, text).unwrap();
        let output = Command::new(BIN)
            .args([kind, "--check-config"])
            .arg(&path)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            output.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    };

    let on = [
        (
            "MERIDIAN_ORIGIN__TELEMETRY__OTLP_ENDPOINT",
            "http://127.0.0.1:4318",
        ),
        ("MERIDIAN_ORIGIN__TELEMETRY__SAMPLE_RATIO", "0.5"),
        ("MERIDIAN_ORIGIN__TELEMETRY__LOG_FORMAT", "json"),
    ];
    let (code, said) = check("origin", origin, &[]);
    assert_eq!(code, Some(0));
    assert!(said.contains("traces off"), "off by default: {said}");
    let (code, said) = check("origin", origin, &on);
    assert_eq!(code, Some(0));
    assert!(
        said.contains("traces to http://127.0.0.1:4318 (sampled 0.5)"),
        "{said}"
    );
    let (code, stderr) = check(
        "origin",
        origin,
        &[(
            "MERIDIAN_ORIGIN__TELEMETRY__OTLP_ENDPOINT",
            "https://collector.example:4318",
        )],
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("environment variable MERIDIAN_ORIGIN__TELEMETRY__OTLP_ENDPOINT")
            && stderr.contains("`telemetry.otlp_endpoint`"),
        "{stderr}"
    );
    let (code, stderr) = check(
        "edge",
        &format!("{edge}[telemetry]\nsample_ratio = 0.1\n"),
        &[("MERIDIAN_EDGE__TELEMETRY__SAMPLE_RATIO", "1.5")],
    );
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("MERIDIAN_EDGE__TELEMETRY__SAMPLE_RATIO") && stderr.contains("from 0 to 1"),
        "{stderr}"
    );
    let (code, stderr) = check(
        "edge",
        &format!("{edge}[telemetry]\nbatch_delay = \"0s\"\n"),
        &[],
    );
    assert_eq!(code, Some(1));
    assert!(stderr.contains("`telemetry.batch_delay`"), "{stderr}");
}
