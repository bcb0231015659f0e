//! The waiting room against a real Redis shared by two edges of one region:
//! admission up to `active_users`, FIFO tickets across both edges, forged
//! and replayed tickets refused, the per-minute rate, and the queue told at
//! once when the sale sells out.

use std::time::Duration;

use meridian_edge::config::WaitingRoomConfig;
use meridian_launcher::{Binaries, RedisServer, free_port};
use serde_json::Value;

use super::upstream::TestUpstream;
use super::{TestEdge, edge_config, region};

fn room_config(active_users: u32, per_minute: u32, session: Duration) -> WaitingRoomConfig {
    WaitingRoomConfig {
        secret: "a-waiting-room-secret-for-the-tests-0123".parse().unwrap(),
        active_users,
        new_users_per_minute: per_minute,
        session_duration: session,
        ticket_grace: Duration::from_secs(30),
        always_on: true,
        sold_out_for: Duration::from_secs(60),
        redis_timeout: Duration::from_millis(500),
    }
}

async fn edges(
    upstream: &TestUpstream,
    redis: &RedisServer,
    room: WaitingRoomConfig,
) -> (TestEdge, TestEdge) {
    let mut a = edge_config("us-east", vec![region("us-east", upstream.addr, 0)]);
    a.redis_url = Some(redis.url().parse().unwrap());
    a.waiting_room = Some(room);
    let mut b = a.clone();
    b.listen.set_port(free_port().unwrap());
    b.admin_listen.set_port(free_port().unwrap());
    (TestEdge::start(a).await, TestEdge::start(b).await)
}

fn redis(dir: &std::path::Path) -> RedisServer {
    let bins = Binaries::discover().expect("redis-server");
    RedisServer::start(&bins, "room-redis", dir, free_port().unwrap()).expect("redis starts")
}

/// `POST path` with an optional queue cookie: (status, body, cookie set).
async fn post(edge: &TestEdge, path: &str, cookie: Option<&str>) -> (u16, Value, Option<String>) {
    post_as(edge, None, path, cookie).await
}

/// The same, as the shopper whose bearer token is `token`.
async fn post_as(
    edge: &TestEdge,
    token: Option<&str>,
    path: &str,
    cookie: Option<&str>,
) -> (u16, Value, Option<String>) {
    let mut request = edge.client.post(format!("{}{path}", edge.url)).body("{}");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.expect("post");
    let status = response.status().as_u16();
    let set = response
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string);
    if status == 429 {
        assert!(response.headers().contains_key("retry-after"));
    }
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, set)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_room_admits_in_order_across_edges_and_refuses_bad_tickets() {
    let dir = tempfile::tempdir().unwrap();
    let redis = redis(dir.path());
    let upstream = TestUpstream::start("us-east").await;
    let (a, b) = edges(
        &upstream,
        &redis,
        room_config(2, 1000, Duration::from_secs(2)),
    )
    .await;
    let path = "/v1/checkout";

    // Two get in at once, with an admission cookie.
    let (status, _, first) = post(&a, path, None).await;
    assert_eq!(status, 200);
    let first = first.expect("admission cookie");
    assert_eq!(post(&b, path, None).await.0, 200);
    // An admission keeps working, on either edge.
    assert_eq!(post(&b, path, Some(&first)).await.0, 200);

    // Then tickets, numbered across both edges in the order they came.
    let mut tickets = Vec::new();
    for (i, edge) in [&a, &b, &a].into_iter().enumerate() {
        let (status, body, cookie) = post(edge, path, None).await;
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["position"], (i + 1) as u64, "{body}");
        tickets.push(cookie.expect("ticket cookie"));
    }
    assert_eq!(
        upstream.count(path),
        3,
        "queued requests never reach the origin"
    );

    // A ticket altered (or made up) is refused.
    let forged = tickets[2].replacen(".3.", ".1.", 1);
    assert_eq!(post(&a, path, Some(&forged)).await.0, 403);
    assert_eq!(
        post(&a, path, Some("meridian_queue=t.checkout.1.0.00"))
            .await
            .0,
        403
    );

    // Sessions lapse: the next two tickets are let in — in ticket order,
    // whoever asks first — and the third still waits at the front.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (status, body, _) = post(&a, path, Some(&tickets[2])).await;
    assert_eq!(status, 429, "ticket 3 waits for tickets 1 and 2: {body}");
    assert_eq!(body["position"], 1);
    assert_eq!(post(&b, path, Some(&tickets[1])).await.0, 200);
    assert_eq!(post(&a, path, Some(&tickets[0])).await.0, 200);
    // A ticket lets in once: a copy finds its place taken.
    assert_eq!(post(&b, path, Some(&tickets[1])).await.0, 403);
    assert_eq!(upstream.count(path), 5);
    assert!(
        a.metric("meridian_edge_waiting_room_total", &[("result", "queued")])
            .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_waiting_room_keeps_to_its_rate_and_stops_queueing_at_sell_out() {
    let dir = tempfile::tempdir().unwrap();
    let redis = redis(dir.path());
    let upstream = TestUpstream::start("us-east").await;
    // Plenty of room, but only three new shoppers a minute.
    let (a, b) = edges(
        &upstream,
        &redis,
        room_config(100, 3, Duration::from_secs(300)),
    )
    .await;
    let claim = "/v1/flash-sales/9/claim";
    let mut admissions = Vec::new();
    for edge in [&a, &b, &a] {
        let (status, _, cookie) = post(edge, claim, None).await;
        assert_eq!(status, 200);
        admissions.push(cookie.expect("admission"));
    }
    let (status, body, ticket) = post(&b, claim, None).await;
    assert_eq!(status, 429, "the fourth of the minute waits: {body}");
    let ticket = ticket.expect("ticket");
    assert_eq!(post(&a, claim, Some(&ticket)).await.0, 429, "still waiting");
    // Another room (checkout) has its own rate.
    assert_eq!(post(&a, "/v1/checkout", None).await.0, 200);

    // The sale sells out (the origin says so on a claim): the shopper who
    // waits is told at the next poll, a newcomer at once — nobody waits
    // for nothing.
    let sold_out_claim = format!("{claim}?status=409&sold_out=true");
    assert_eq!(post(&a, &sold_out_claim, Some(&admissions[0])).await.0, 409);
    let (status, body, _) = post(&b, claim, Some(&ticket)).await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["sold_out"], true);
    assert_eq!(post(&a, claim, None).await.0, 410);
    // The checkout room is not sold out.
    assert_eq!(post(&b, "/v1/checkout", None).await.0, 200);
}

/// Issue 13: an anonymous checkout takes neither an admission nor the
/// region's checkout budget (401 at the edge), an admission works only for
/// the shopper it was issued to, and the room's keys in Redis expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_belong_to_their_shopper_and_anonymous_checkouts_take_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let redis = redis(dir.path());
    let upstream = TestUpstream::start("us-east").await;
    let mut config = edge_config("us-east", vec![region("us-east", upstream.addr, 0)]);
    config.redis_url = Some(redis.url().parse().unwrap());
    config.waiting_room = Some(room_config(1, 1000, Duration::from_secs(30)));
    config.identity = Some(meridian_edge::config::IdentityConfig {
        hs256_secret: Some(crate::helpers::JWT_SECRET.parse().unwrap()),
        es256_public_key: None,
        cookie: "meridian_session".into(),
    });
    config.limits.checkout_budget = Some(meridian_edge::config::BudgetConfig {
        per_second: 100,
        burst: 100,
        fallback_per_second: 100,
        key: "meridian:budget:anonymous-test".into(),
        timeout: Duration::from_millis(200),
    });
    let edge = TestEdge::start(config).await;
    let budget_taken = || edge.metric("meridian_edge_checkout_budget_total", &[]);
    let room_entries = || edge.metric("meridian_edge_waiting_room_total", &[]);

    // Anonymous: 401 for checkout and claims, nothing taken.
    for path in ["/v1/checkout", "/v1/flash-sales/3/claim"] {
        assert_eq!(post_as(&edge, None, path, None).await.0, 401, "{path}");
    }
    assert_eq!(budget_taken().await, 0.0);
    assert_eq!(room_entries().await, 0.0);

    // u1 is admitted (the room holds one) and keeps its admission.
    let u1 = crate::helpers::shopper_token("u1", "us-east");
    let u2 = crate::helpers::shopper_token("u2", "us-east");
    let (status, _, admission) = post_as(&edge, Some(&u1), "/v1/checkout", None).await;
    assert_eq!(status, 200);
    let admission = admission.expect("an admission cookie");
    assert_eq!(
        post_as(&edge, Some(&u1), "/v1/checkout", Some(&admission))
            .await
            .0,
        200
    );
    // u2 presenting u1's admission is refused, not let in.
    assert_eq!(
        post_as(&edge, Some(&u2), "/v1/checkout", Some(&admission))
            .await
            .0,
        403
    );
    // u2 alone queues behind u1 (the room is full).
    assert_eq!(post_as(&edge, Some(&u2), "/v1/checkout", None).await.0, 429);

    // Every key of the room expires.
    for key in ["next", "admitted", "active", "rate"] {
        let ttl = std::process::Command::new("redis-cli")
            .args(["-p", &redis.port().to_string(), "-a", redis.password()])
            .args([
                "--no-auth-warning",
                "pttl",
                &format!("meridian:wr:v1:checkout:{key}"),
            ])
            .output()
            .expect("redis-cli");
        let ttl: i64 = String::from_utf8_lossy(&ttl.stdout)
            .trim()
            .parse()
            .unwrap_or(-3);
        assert!(
            ttl > 0 && ttl <= meridian_edge::waiting_room::store::IDLE_EXPIRY.as_millis() as i64,
            "{key}: pttl {ttl}"
        );
    }
}
