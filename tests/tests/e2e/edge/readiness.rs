//! The edge's readiness is its own: with every origin down it stays in
//! the load balancer's rotation (it still serves what it has cached), and
//! a graceful stop (SIGTERM) drains: `/readyz` turns 503 while the
//! listeners keep accepting for `drain_delay`, then the process exits.

use std::time::Duration;

use super::upstream::TestUpstream;
use super::{edge_config, region};
use crate::helpers::{eventually, exits_after_drain, meridian_bin, readyz, sigterm_until_draining};

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
    let mut command = std::process::Command::new(meridian_bin());
    command.args(["edge", "--config"]).arg(&path);
    let process = meridian_launcher::process::ManagedProcess::spawn(
        "edge-drain",
        command,
        &dir.path().join("edge.log"),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("meridian edge starts");
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
    let stopped_at = sigterm_until_draining(&process, &client, &admin).await;
    assert!(
        tokio::net::TcpStream::connect(public).await.is_ok(),
        "the public listener still accepts while draining"
    );
    exits_after_drain(process, stopped_at, config.drain_delay).await;
}
