//! An origin's stop, as Kubernetes does it (SIGTERM): `/readyz` turns 503
//! (`draining`) while both listeners keep serving for `drain_delay`, so
//! edges and load balancers stop sending first; then the process exits.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::helpers::{HOME, TestStack, eventually, meridian_bin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_drains_on_sigterm_before_its_listeners_close() {
    let stack = TestStack::start(&[HOME], 1, 5).await;
    let mut config = stack.origin_config(HOME);
    let (port, internal) = (
        meridian_launcher::free_port().unwrap(),
        meridian_launcher::free_port().unwrap(),
    );
    config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    config.internal_listen = std::net::SocketAddr::from(([127, 0, 0, 1], internal));
    config.drain_delay = Duration::from_secs(2);
    let path = stack.stack.root().join("origin-drain.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let mut command = std::process::Command::new(meridian_bin());
    command.arg("origin").arg("--config").arg(&path);
    let process = meridian_launcher::process::ManagedProcess::spawn(
        "origin-drain",
        command,
        &stack.stack.root().join("origin-drain.log"),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let pid = nix::unistd::Pid::from_raw(process.pid().expect("pid") as i32);
    let process = Mutex::new(process);
    let (public, admin) = (
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{internal}"),
    );
    let client = reqwest::Client::new();
    let readyz = || async {
        let response = client.get(format!("{admin}/readyz")).send().await.ok()?;
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.ok()?;
        Some((status, body))
    };
    eventually("the origin is ready", Duration::from_secs(20), || async {
        readyz().await.is_some_and(|(status, _)| status == 200)
    })
    .await;

    let stopped_at = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    eventually(
        "readyz turns 503 (draining)",
        Duration::from_secs(2),
        || async {
            readyz()
                .await
                .is_some_and(|(status, body)| status == 503 && body["draining"] == true)
        },
    )
    .await;
    // Still serving shoppers while draining.
    let product = client
        .get(format!("{public}/v1/products/1"))
        .send()
        .await
        .expect("the public listener serves while draining");
    assert_eq!(product.status(), 200);
    eventually(
        "the origin exits after the drain",
        Duration::from_secs(15),
        || async { process.lock().expect("process").exited().is_some() },
    )
    .await;
    let took = stopped_at.elapsed();
    println!("SIGTERM to exit: {took:?} (drain_delay 2 s)");
    assert!(
        took >= Duration::from_secs(2),
        "left before the drain delay: {took:?}"
    );
}
