//! The edge's response cache against a real upstream: hits, key
//! normalisation, coalescing, stale-while-revalidate, stale-if-error, Vary,
//! what must never be stored, and cache-poisoning attempts.

use std::time::{Duration, Instant};

use super::upstream::{PROBED, TestUpstream};
use super::{TestEdge, body, edge_config, region, x_cache};

async fn edge_in_front_of(upstream: &TestUpstream) -> TestEdge {
    TestEdge::start(edge_config(
        "local",
        vec![region("local", upstream.addr, 0)],
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_after_miss_with_a_normalised_key() {
    let upstream = TestUpstream::start("local").await;
    let edge = edge_in_front_of(&upstream).await;
    let cc = "cc=public,max-age=60";

    let first = edge
        .get(&format!("/items?b=2&{cc}&a=1&utm_source=mail&gclid=9"))
        .await;
    assert_eq!(first.status(), 200);
    assert_eq!(x_cache(&first), "MISS");
    assert_eq!(first.headers()["age"], "0");
    let key = first.headers()["x-cache-key"].to_str().unwrap().to_string();
    assert!(
        key.contains("path=/items?a=1&b=2&cc=public,max-age=60"),
        "{key}"
    );

    // Same parameters in another order, without tracking parameters: a hit.
    let second = edge.get(&format!("/items?a=1&{cc}&b=2&fbclid=x")).await;
    assert_eq!(x_cache(&second), "HIT");
    assert!(second.headers().contains_key("age"));
    assert_eq!(body(second).await["count"], 1);
    // The origin saw the normalised request, once.
    assert_eq!(upstream.count(&format!("/items?a=1&b=2&{cc}")), 1);
    assert_eq!(upstream.total(), 1);
    assert!(edge.metric("meridian_edge_cache_objects", &[]).await >= 1.0);
}

/// Plain `GET`s of fresh objects take the proxy's fast hit path; `HEAD`
/// and range requests take pingora's full cache path. Both answer from the
/// same stored copy, with the same headers, a growing `Age`, and count as
/// hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_and_full_hit_paths_serve_the_same_stored_copy() {
    let upstream = TestUpstream::start("local").await;
    let edge = edge_in_front_of(&upstream).await;
    let path = "/fast?cc=public,max-age=60&tag=product:7";
    let miss = edge.get(path).await;
    assert_eq!(x_cache(&miss), "MISS");
    let stored = miss.bytes().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let fast = edge.get(path).await;
    assert_eq!(fast.status(), 200);
    assert_eq!(x_cache(&fast), "HIT");
    let age: u64 = fast.headers()["age"].to_str().unwrap().parse().unwrap();
    assert!((1..60).contains(&age), "age {age}");
    assert_eq!(fast.headers()["content-length"], stored.len().to_string());
    assert_eq!(
        fast.headers()["surrogate-key"],
        "product:7",
        "debug headers on"
    );
    assert!(fast.headers().contains_key("x-cache-key"));
    let fast_names: std::collections::BTreeSet<String> =
        fast.headers().keys().map(|n| n.to_string()).collect();
    assert_eq!(fast.bytes().await.unwrap(), stored);

    let head = edge
        .client
        .head(format!("{}{path}", edge.url))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(x_cache(&head), "HIT");
    let head_names: std::collections::BTreeSet<String> =
        head.headers().keys().map(|n| n.to_string()).collect();
    assert_eq!(fast_names, head_names, "same headers on both paths");

    let range = edge.get_with(path, &[("range", "bytes=0-3")]).await;
    assert_eq!(range.status(), 206);
    assert_eq!(x_cache(&range), "HIT");
    assert_eq!(range.bytes().await.unwrap(), stored.slice(0..4));

    assert_eq!(upstream.count(path), 1);
    // Counted in the logging phase, just after the response is sent.
    super::super::helpers::eventually("three hits counted", Duration::from_secs(2), || async {
        edge.metric("meridian_edge_requests_total", &[("cache", "HIT")])
            .await
            == 3.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_are_coalesced_into_one_fetch() {
    let upstream = TestUpstream::start("local").await;
    let edge = edge_in_front_of(&upstream).await;
    let path = "/slow?cc=public,max-age=60&delay=300";
    let requests = (0..100).map(|_| {
        let client = edge.client.clone();
        let url = format!("{}{path}", edge.url);
        tokio::spawn(async move {
            let response = client.get(url).send().await.expect("sent");
            assert_eq!(response.status(), 200);
            body(response).await["count"].as_u64().unwrap()
        })
    });
    let counts = futures::future::join_all(requests).await;
    assert!(counts.into_iter().all(|c| c.unwrap() == 1));
    assert_eq!(upstream.count("/slow?cc=public,max-age=60&delay=300"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_stale_and_refreshes_in_the_background() {
    let upstream = TestUpstream::start("local").await;
    let edge = edge_in_front_of(&upstream).await;
    let path = "/swr?cc=public,max-age=1,stale-while-revalidate=30";
    assert_eq!(body(edge.get(path).await).await["count"], 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let started = Instant::now();
    let stale = edge.get(path).await;
    assert_eq!(x_cache(&stale), "STALE");
    assert_eq!(body(stale).await["count"], 1, "the stale copy, at once");
    assert!(started.elapsed() < Duration::from_millis(500));
    super::super::helpers::eventually("background refresh", Duration::from_secs(3), || async {
        upstream.count(path) == 2
    })
    .await;
    // Until the refresh is stored, more answers may be stale ones.
    let stale_answers = std::sync::atomic::AtomicUsize::new(1);
    super::super::helpers::eventually("the refreshed copy", Duration::from_secs(3), || async {
        let response = edge.get(path).await;
        if x_cache(&response) == "STALE" {
            stale_answers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        x_cache(&response) == "HIT" && body(response).await["count"] == 2
    })
    .await;
    // Every stale answer counted, as revalidating; the background refresh
    // is not an answer.
    let stale_answers = stale_answers.into_inner() as f64;
    assert_eq!(stale_served(&edge).await, (0.0, stale_answers));
}

/// `meridian_edge_stale_served_total` by reason: (origin_error,
/// revalidating).
async fn stale_served(edge: &TestEdge) -> (f64, f64) {
    let name = "meridian_edge_stale_served_total";
    (
        edge.metric(name, &[("reason", "origin_error")]).await,
        edge.metric(name, &[("reason", "revalidating")]).await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_covers_origin_errors_and_outages() {
    let mut upstream = TestUpstream::start("local").await;
    let edge = edge_in_front_of(&upstream).await;
    let path = "/sie?cc=public,max-age=1,stale-if-error=60";
    let no_sie = "/nosie?cc=public,max-age=1";
    assert_eq!(stale_served(&edge).await, (0.0, 0.0), "both from 0");
    assert_eq!(body(edge.get(path).await).await["count"], 1);
    assert_eq!(edge.get(no_sie).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // The origin answers 503: the stale copy is served instead.
    upstream.set_failing(true);
    let response = edge.get(path).await;
    assert_eq!(response.status(), 200);
    assert_eq!(x_cache(&response), "STALE");
    assert_eq!(body(response).await["count"], 1);
    // Without stale-if-error the failure shows.
    assert_eq!(edge.get(no_sie).await.status(), 503);
    assert_eq!(stale_served(&edge).await, (1.0, 0.0), "a 5xx answer");

    // The origin is gone altogether: still served stale.
    upstream.set_failing(false);
    upstream.stop().await;
    let response = edge.get(path).await;
    assert_eq!(response.status(), 200);
    assert_eq!(x_cache(&response), "STALE");
    let gone = edge.get(no_sie).await;
    assert_eq!(gone.status(), 502);
    assert_eq!(gone.headers()["content-type"], "application/problem+json");
    assert_eq!(stale_served(&edge).await, (2.0, 0.0), "and an outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_objects_are_revalidated_with_their_etag() {
    let upstream = TestUpstream::start("local").await;
    let edge = edge_in_front_of(&upstream).await;
    let path = "/etag?cc=public,max-age=1&etag=%22v1%22";
    let first = edge.get(path).await;
    assert_eq!(first.headers()["etag"], "\"v1\"");
    // A client's own conditional request is answered by the edge.
    let conditional = edge.get_with(path, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(conditional.status(), 304);
    assert_eq!(x_cache(&conditional), "HIT");

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let revalidated = edge.get(path).await;
    assert_eq!(revalidated.status(), 200);
    assert_eq!(x_cache(&revalidated), "EXPIRED");
    assert_eq!(
        body(revalidated).await["count"],
        1,
        "the stored body, revalidated"
    );
    assert_eq!(upstream.not_modified(), 1, "the origin answered 304");
    assert_eq!(x_cache(&edge.get(path).await), "HIT", "fresh again");

    // no-cache: stored, but revalidated on every request.
    let no_cache = "/no-cache?cc=no-cache&etag=%22n1%22";
    edge.get(no_cache).await;
    for _ in 0..2 {
        assert_eq!(x_cache(&edge.get(no_cache).await), "EXPIRED");
    }
    assert_eq!(upstream.not_modified(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_keeps_variants_apart_and_unlisted_vary_is_not_stored() {
    let upstream = TestUpstream::start("local").await;
    let edge = edge_in_front_of(&upstream).await;
    let path = "/vary?cc=public,max-age=60&vary=Accept-Language";
    let fr = [("accept-language", "fr-FR,fr;q=0.9")];
    let en = [("accept-language", "en-GB")];
    assert_eq!(
        body(edge.get_with(path, &fr).await).await["accept_language"],
        "fr-FR,fr;q=0.9"
    );
    assert_eq!(
        body(edge.get_with(path, &en).await).await["accept_language"],
        "en-GB"
    );
    let again = edge.get_with(path, &[("accept-language", "fr-CA")]).await;
    assert_eq!(x_cache(&again), "HIT", "same language class");
    assert_eq!(body(again).await["accept_language"], "fr-FR,fr;q=0.9");
    let again = edge.get_with(path, &en).await;
    assert_eq!(body(again).await["accept_language"], "en-GB");
    assert_eq!(upstream.count(path), 2);

    let by_agent = "/vary-ua?cc=public,max-age=60&vary=User-Agent";
    for _ in 0..3 {
        assert_ne!(x_cache(&edge.get(by_agent).await), "HIT");
    }
    assert_eq!(
        upstream.count(by_agent),
        3,
        "Vary: User-Agent is never stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_cookies_and_credentials_never_reach_the_shared_cache() {
    let upstream = TestUpstream::start("local").await;
    let edge = edge_in_front_of(&upstream).await;
    let cases: [(&str, &[(&str, &str)]); 5] = [
        ("/private?cc=private,max-age=60", &[]),
        ("/nostore?cc=no-store", &[]),
        ("/cookie?cc=max-age=60&cookie=session%3Dabc", &[]),
        (
            "/auth?cc=max-age=60",
            &[("authorization", "Bearer shopper")],
        ),
        (
            "/session?cc=max-age=60",
            &[("cookie", "meridian_session=abc")],
        ),
    ];
    for (path, headers) in cases {
        for _ in 0..2 {
            let response = edge.get_with(path, headers).await;
            assert_eq!(response.status(), 200);
            assert_ne!(x_cache(&response), "HIT", "{path}");
        }
        assert_eq!(upstream.count(path), 2, "{path} never stored");
    }
    // A credentialed request is never answered from the cache, even when a
    // public copy exists.
    let public = "/public?cc=public,max-age=60";
    edge.get(public).await;
    let response = edge
        .get_with(public, &[("authorization", "Bearer shopper")])
        .await;
    assert_ne!(x_cache(&response), "HIT");

    // Explicitly public with a cookie: stored, but never with the cookie.
    let path = "/public-cookie?cc=public,max-age=60&cookie=session%3Dabc";
    let first = edge.get(path).await;
    assert!(
        first.headers().contains_key("set-cookie"),
        "the fetching client gets it"
    );
    let second = edge.get(path).await;
    assert_eq!(x_cache(&second), "HIT");
    assert!(
        !second.headers().contains_key("set-cookie"),
        "no one else does"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoning_headers_never_change_what_clean_requests_get() {
    let upstream = TestUpstream::start("local").await;
    let edge = edge_in_front_of(&upstream).await;
    for (i, header) in PROBED.iter().enumerate() {
        let path = format!("/poison/{i}?cc=public,max-age=60");
        // The attacker goes first, so their response is the one stored.
        let attack = edge
            .get_with(&path, &[(header, "evil.example"), ("host", "shop.example")])
            .await;
        assert_eq!(attack.status(), 200);
        let attack = body(attack).await;
        assert_eq!(
            attack["leaked"],
            serde_json::json!([]),
            "{header} reached the origin"
        );
        let clean = edge.get_with(&path, &[("host", "shop.example")]).await;
        assert_eq!(x_cache(&clean), "HIT");
        let clean = body(clean).await;
        assert!(!clean.to_string().contains("evil"), "{header}: {clean}");
    }
    // A method override cannot turn a GET into something else upstream.
    let response = edge
        .get_with(
            "/override?cc=public,max-age=60",
            &[("x-http-method-override", "DELETE")],
        )
        .await;
    assert_eq!(body(response).await["leaked"], serde_json::json!([]));
}
