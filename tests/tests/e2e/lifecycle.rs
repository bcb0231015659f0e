//! An origin's stop, as Kubernetes does it (SIGTERM): `/readyz` turns 503
//! (`draining`) while both listeners keep serving for `drain_delay`, so
//! edges and load balancers stop sending first; then the process exits.

use std::time::Duration;

use crate::helpers::{
    HOME, TestStack, eventually, exits_after_drain, meridian_bin, readyz, sigterm_until_draining,
};

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
    let (public, admin) = (
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{internal}"),
    );
    let client = reqwest::Client::new();
    eventually("the origin is ready", Duration::from_secs(20), || async {
        readyz(&client, &admin)
            .await
            .is_some_and(|(status, _)| status == 200)
    })
    .await;

    let stopped_at = sigterm_until_draining(&process, &client, &admin).await;
    // Still serving shoppers while draining.
    let product = client
        .get(format!("{public}/v1/products/1"))
        .send()
        .await
        .expect("the public listener serves while draining");
    assert_eq!(product.status(), 200);
    exits_after_drain(process, stopped_at, config.drain_delay).await;
}
