//! The edge's readiness is its own: with every origin down it stays in
//! the load balancer's rotation (it still serves what it has cached), and
//! a graceful stop (SIGTERM) drains: `/readyz` turns 503 while the
//! listeners keep accepting for `drain_delay`, then the process exits.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::upstream::TestUpstream;
use super::{edge_config, region};
use crate::helpers::{eventually, meridian_bin};

/// The edge process, killed if the test ends before it exits.
struct Reaped(std::sync::Mutex<std::process::Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(child) = self.0.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn readyz(client: &reqwest::Client, admin: &str) -> Option<(u16, Value)> {
    let response = client.get(format!("{admin}/readyz")).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_stays_ready_without_origins_and_drains_on_sigterm() {
    let mut upstream = TestUpstream::start("local").await;
    let mut config = edge_config("local", vec![region("local", upstream.addr, 0)]);
    config.drain_delay = Duration::from_secs(2);
    let public = config.listen;
    let admin = format!("http://{}", config.admin_listen);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, toml::to_string(&config).expect("edge config")).expect("write config");
    let log = std::fs::File::create(dir.path().join("edge.log")).expect("log file");
    let child = std::process::Command::new(meridian_bin())
        .args(["edge", "--config"])
        .arg(&path)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("meridian edge starts");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let child = Reaped(std::sync::Mutex::new(child));
    let client = reqwest::Client::new();
    eventually(
        "the edge is ready, its origin healthy",
        Duration::from_secs(20),
        || async {
            readyz(&client, &admin)
                .await
                .is_some_and(|(status, body)| status == 200 && body["origins_healthy"] == true)
        },
    )
    .await;

    // Every origin down: the edge says so, and stays ready.
    upstream.stop().await;
    eventually(
        "the health check finds the origin down",
        Duration::from_secs(10),
        || async {
            readyz(&client, &admin)
                .await
                .is_some_and(|(_, body)| body["origins_healthy"] == false)
        },
    )
    .await;
    let (status, body) = readyz(&client, &admin).await.expect("readyz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);

    // SIGTERM: not ready at once, still accepting during the drain delay,
    // then gone.
    let stopped_at = Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    eventually(
        "readyz turns 503 (draining)",
        Duration::from_secs(2),
        || async {
            readyz(&client, &admin)
                .await
                .is_some_and(|(status, body)| status == 503 && body["draining"] == true)
        },
    )
    .await;
    assert!(
        tokio::net::TcpStream::connect(public).await.is_ok(),
        "the public listener still accepts while draining"
    );
    eventually(
        "the edge exits after the drain",
        Duration::from_secs(15),
        || async { matches!(child.0.lock().expect("child").try_wait(), Ok(Some(_))) },
    )
    .await;
    let took = stopped_at.elapsed();
    println!("SIGTERM to exit: {took:?} (drain_delay 2 s)");
    assert!(
        took >= Duration::from_secs(2),
        "left before the drain delay: {took:?}"
    );
}
