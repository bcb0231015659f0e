//! End-to-end tests of the regional edge: a real pingora edge (built by the
//! same `EdgeServer` as `meridian edge`) on free ports, in front of either
//! the small real upstream in [`upstream`] or real origins of a local stack.

mod cache;
mod failover;
mod limits;
mod modes;
mod protocol;
mod purge;
mod readiness;
mod routing;
pub mod upstream;
mod waiting_room;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meridian_edge::EdgeConfig;
use meridian_edge::config::UpstreamRegion;
use meridian_edge::server::RunningEdge;
use meridian_launcher::free_port;

pub const EDGE_TOKEN: &str = "edge-test-admin-token-0001";

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// An edge config for `region` on free ports with `upstreams` (own region
/// must be among them), short health intervals for tests.
pub fn edge_config(region: &str, upstreams: Vec<UpstreamRegion>) -> EdgeConfig {
    let mut config: EdgeConfig = toml::from_str(&format!(
        "region = \"{region}\"\nlisten = \"127.0.0.1:1\"\nadmin_listen = \"127.0.0.1:1\"\nadmin_tokens = [{{ name = \"ops\", token = \"{EDGE_TOKEN}\" }}]\nupstreams = []"
    ))
    .expect("minimal config");
    config.listen = local(free_port().expect("free port"));
    config.admin_listen = local(free_port().expect("free port"));
    config.upstreams = upstreams;
    config.debug_headers = true;
    config.grace_period_seconds = 0;
    config.drain_delay = Duration::ZERO;
    config.health.interval = Duration::from_millis(200);
    config
}

/// One upstream region with one origin.
pub fn region(name: &str, origin: SocketAddr, latency_ms: u32) -> UpstreamRegion {
    UpstreamRegion {
        name: name.to_string(),
        origins: vec![origin.into()],
        latency_ms,
        countries: Vec::new(),
        latency_ms_to: Default::default(),
    }
}

pub struct TestEdge {
    pub url: String,
    pub admin: String,
    pub client: reqwest::Client,
    _edge: RunningEdge,
}

impl TestEdge {
    pub async fn start(config: EdgeConfig) -> TestEdge {
        config.validate().expect("valid edge config");
        let url = format!("http://{}", config.listen);
        let admin = format!("http://{}", config.admin_listen);
        let edge = meridian_edge::EdgeServer::spawn(config).expect("edge starts");
        let edge = TestEdge {
            url,
            admin,
            // No pooled connections: an edge may close a connection after
            // an error response, and a reused one would race that close.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .expect("http client"),
            _edge: edge,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Ready, and subscribed to the purge channel if it has one.
            let readyz = match edge
                .client
                .get(format!("{}/readyz", edge.admin))
                .send()
                .await
            {
                Ok(response) => Some((
                    response.status(),
                    response
                        .json::<serde_json::Value>()
                        .await
                        .unwrap_or_default(),
                )),
                Err(_) => None,
            };
            // The edge's readiness is its own; tests also wait for the
            // first health check to find an origin.
            let ready = readyz.as_ref().is_some_and(|(status, body)| {
                *status == 200 && body["purge_listener"] != false && body["origins_healthy"] == true
            });
            let listening = tokio::net::TcpStream::connect(edge.url.trim_start_matches("http://"))
                .await
                .is_ok();
            if ready && listening {
                return edge;
            }
            assert!(
                Instant::now() < deadline,
                "edge not ready within 10 s: {readyz:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.get_with(path, &[]).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut request = self.client.get(format!("{}{path}", self.url));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("request sent")
    }

    pub async fn purge(&self, token: Option<&str>, body: serde_json::Value) -> reqwest::Response {
        let mut request = self
            .client
            .post(format!("{}/purge", self.admin))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("purge sent")
    }

    /// Sum of an edge metric over series whose labels include `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        super::helpers::metric_sum(&text, name, labels)
    }
}

/// `X-Cache` of a response.
pub fn x_cache(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The JSON body of an upstream response.
pub async fn body(response: reqwest::Response) -> serde_json::Value {
    response.json().await.expect("json body")
}
