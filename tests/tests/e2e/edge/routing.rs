//! Geo-routing and home-region routing: the client's region from a trusted
//! header (only from trusted peers) or a real GeoIP database; signed-in
//! shoppers' carts, checkouts and orders pinned to their home region.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header, encode};
use meridian_edge::config::{GeoConfig, IdentityConfig, UpstreamRegion};

use super::upstream::TestUpstream;
use super::{TestEdge, edge_config};

const SECRET: &str = "routing-test-jwt-secret-0123456789abcdef";

fn served_by(response: &reqwest::Response) -> String {
    response.headers()["x-served-by-region"]
        .to_str()
        .unwrap()
        .to_string()
}

fn upstream_region(
    name: &str,
    origin: std::net::SocketAddr,
    latency: u32,
    countries: &[&str],
) -> UpstreamRegion {
    UpstreamRegion {
        name: name.to_string(),
        origins: vec![origin.into()],
        latency_ms: latency,
        countries: countries.iter().map(|c| c.to_string()).collect(),
        latency_ms_to: Default::default(),
    }
}

/// The database `.ci/install-deps` fetches.
fn geo_database() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../.meridian/geo/geo-whois-asn-country.mmdb");
    assert!(
        path.is_file(),
        "{} missing: run .ci/install-deps",
        path.display()
    );
    path
}

struct Regions {
    us: TestUpstream,
    eu: TestUpstream,
}

async fn regions() -> Regions {
    Regions {
        us: TestUpstream::start("us-east").await,
        eu: TestUpstream::start("eu-west").await,
    }
}

fn config(r: &Regions, geo: GeoConfig) -> meridian_edge::EdgeConfig {
    let mut config = edge_config(
        "us-east",
        vec![
            upstream_region("us-east", r.us.addr, 0, &["US", "CA"]),
            upstream_region("eu-west", r.eu.addr, 80, &["DE", "FR", "GB"]),
        ],
    );
    config.geo = geo;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_country_header_routes_to_that_countrys_region() {
    let r = regions().await;
    let trusted = GeoConfig {
        trusted_header: Some("cf-ipcountry".into()),
        trusted_ranges: vec!["127.0.0.0/8".parse().unwrap()],
        database: None,
    };
    let edge = TestEdge::start(config(&r, trusted)).await;
    assert_eq!(
        served_by(&edge.get_with("/x", &[("cf-ipcountry", "DE")]).await),
        "eu-west"
    );
    assert_eq!(
        served_by(&edge.get_with("/x", &[("cf-ipcountry", "us")]).await),
        "us-east"
    );
    assert_eq!(
        served_by(&edge.get_with("/x", &[("cf-ipcountry", "ZZ")]).await),
        "us-east"
    );
    assert_eq!(
        served_by(&edge.get("/x").await),
        "us-east",
        "no header: the edge's region"
    );
    assert!(
        edge.metric("meridian_edge_geo_decisions_total", &[("source", "header")])
            .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_and_forwarded_for_from_an_untrusted_peer_are_ignored() {
    let r = regions().await;
    let untrusted = GeoConfig {
        trusted_header: Some("cf-ipcountry".into()),
        trusted_ranges: vec!["10.0.0.0/8".parse().unwrap()],
        database: Some(geo_database()),
    };
    let edge = TestEdge::start(config(&r, untrusted)).await;
    for headers in [
        [("cf-ipcountry", "DE"), ("x-other", "1")],
        [("x-forwarded-for", "85.214.132.117"), ("x-other", "1")],
    ] {
        let response = edge.get_with("/x", &headers).await;
        assert_eq!(served_by(&response), "us-east", "{headers:?}");
    }
    assert_eq!(r.eu.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_geoip_database_locates_the_client_behind_a_trusted_proxy() {
    let r = regions().await;
    let geoip = GeoConfig {
        trusted_header: None,
        trusted_ranges: vec!["127.0.0.0/8".parse().unwrap()],
        database: Some(geo_database()),
    };
    let edge = TestEdge::start(config(&r, geoip)).await;
    // A German address (Strato, AS6724) and a US one (Google DNS).
    let german = edge
        .get_with("/x", &[("x-forwarded-for", "198.51.100.1, 85.214.132.117")])
        .await;
    assert_eq!(served_by(&german), "eu-west");
    let american = edge.get_with("/x", &[("x-forwarded-for", "8.8.8.8")]).await;
    assert_eq!(served_by(&american), "us-east");
    assert!(
        edge.metric(
            "meridian_edge_geo_decisions_total",
            &[("source", "database")]
        )
        .await
            >= 2.0
    );
}

fn token(user: &str, region: &str, secret: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    encode(
        &Header::default(),
        &serde_json::json!({ "sub": user, "region": region, "exp": exp }),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_shoppers_are_pinned_to_their_home_region() {
    let mut r = regions().await;
    let mut config = config(&r, GeoConfig::default());
    config.identity = Some(IdentityConfig {
        hs256_secret: Some(SECRET.parse().unwrap()),
        es256_public_key: None,
        cookie: "meridian_session".into(),
    });
    let edge = TestEdge::start(config).await;
    let european = format!("Bearer {}", token("u-1", "eu-west", SECRET));
    let auth = [("authorization", european.as_str())];

    // Personal routes go home; browsing stays local.
    assert_eq!(
        served_by(&edge.get_with("/v1/cart", &auth).await),
        "eu-west"
    );
    assert_eq!(
        served_by(&edge.get_with("/v1/orders/abc", &auth).await),
        "eu-west"
    );
    let cookie = format!("meridian_session={}", token("u-2", "eu-west", SECRET));
    assert_eq!(
        served_by(
            &edge
                .get_with("/v1/cart", &[("cookie", cookie.as_str())])
                .await
        ),
        "eu-west"
    );
    assert_eq!(
        served_by(&edge.get_with("/v1/products/1", &auth).await),
        "us-east"
    );
    assert_eq!(
        served_by(&edge.get("/v1/cart").await),
        "us-east",
        "guests: nearest region"
    );

    // A forged or expired token is refused at the edge.
    let forged = format!(
        "Bearer {}",
        token("u-1", "eu-west", "some-other-secret-of-enough-length")
    );
    let refused = edge
        .get_with("/v1/cart", &[("authorization", forged.as_str())])
        .await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );

    // The home region down: its shoppers' data is unavailable, not moved.
    r.eu.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let down = edge.get_with("/v1/cart", &auth).await;
    assert_eq!(down.status(), 503);
    assert!(down.headers().contains_key("retry-after"));
    assert_eq!(
        served_by(&edge.get_with("/v1/products/1", &auth).await),
        "us-east"
    );
}
