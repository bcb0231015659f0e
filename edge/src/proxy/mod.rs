//! [`EdgeProxy`]: the edge's one `ProxyHttp` service. Each phase delegates
//! to its module:
//!
//! - [`request_filters`]: framing, method and host checks, unkeyed-header
//!   stripping, URI normalisation, route classes.
//! - [`routing`]: which region and origin serve a request, failover.
//! - cache hooks: [`crate::cache::policy`] and [`crate::cache::key`]; plain
//!   `GET`s of fresh objects are answered by the fast hit path at the end of
//!   the request filter ([`EdgeProxy::serve_fresh_hit`]), everything else
//!   goes through pingora's cache state machine.
//! - [`response_modifiers`]: `X-Cache`, `Age`, problem responses.
//! - [`mode_rules`]: what the operating mode changes (the maintenance page,
//!   degraded mode's longer stale windows).
//!
//! Per-request state lives in [`RequestCtx`]; shared state in `Arc`s
//! built once by [`crate::server`].

pub mod mode_rules;
pub mod request_filters;
pub mod response_modifiers;
pub mod routing;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use pingora::cache::key::HashBinary;
use pingora::cache::{CacheKey, CacheMeta, ForcedFreshness, HitHandler, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::bots::{BotAction, BotScorer};
use crate::cache::EdgeCache;
use crate::cache::key::cache_key;
use crate::cache::{policy, storage};
use crate::geo::{Geo, GeoSource};
use crate::identity::{Identity, Shopper};
use crate::metrics::{self, EdgeMetrics, StaleReason};
use crate::modes::EdgeModes;
use crate::rate_limiting::RateLimits;
use crate::rate_limiting::budget::CheckoutBudget;
use crate::telemetry::{Outcome, Phase, RequestTelemetry};
use crate::waiting_room::{SOLD_OUT_HEADER, Verdict, WaitingRoom, room_of};
use meridian_contracts::modes::Feature;
use meridian_contracts::modes::Mode;
use mode_rules::ModeRules;
use request_filters::{RouteClass, credentialed, sanitise};
use response_modifiers::{CacheStatus, decorate, respond_problem};
use routing::Router;

/// Request headers that send a request through pingora's full cache path
/// (it answers conditional and range requests; the fast path does not).
const FULL_PATH_REQUEST_HEADERS: [http::HeaderName; 6] = [
    http::header::IF_NONE_MATCH,
    http::header::IF_MODIFIED_SINCE,
    http::header::IF_MATCH,
    http::header::IF_UNMODIFIED_SINCE,
    http::header::IF_RANGE,
    http::header::RANGE,
];

/// Shared, immutable-after-start state of the proxy.
pub struct EdgeProxy {
    pub region: String,
    pub cache: EdgeCache,
    pub router: Arc<Router>,
    pub metrics: Arc<EdgeMetrics>,
    pub debug_headers: bool,
    pub geo: Geo,
    pub identity: Option<Identity>,
    pub limits: request_filters::RequestLimits,
    pub rate_limits: Arc<RateLimits>,
    pub bots: Option<BotScorer>,
    pub budget: Option<Arc<CheckoutBudget>>,
    pub modes: Arc<EdgeModes>,
    pub mode_rules: ModeRules,
    pub waiting_room: Option<Arc<WaitingRoom>>,
}

/// What one request carries between phases.
pub struct RequestCtx {
    started: Instant,
    route: RouteClass,
    host: String,
    path_and_query: String,
    credentialed: bool,
    /// The edge answered by itself (rejection); the status it sent.
    local_status: Option<u16>,
    /// Answered from the cache by the fast hit path ([`EdgeProxy::serve_fresh_hit`]).
    fast_hit: bool,
    /// The cache key the fast hit path computed, for pingora's lookup when
    /// the fast path could not answer.
    cache_key: Option<CacheKey>,
    routing: routing::Attempt,
    /// The waiting room this request passed (a protected route).
    room: Option<String>,
    /// An admission to hand the client with the origin's response.
    set_cookie: Option<String>,
    /// The signed-in shopper's user id (personal routes only).
    user: Option<String>,
    /// Trace context, phase spans, request id, access log.
    telemetry: RequestTelemetry,
}

/// A response the edge gives by itself instead of proxying.
struct LocalAnswer {
    status: u16,
    title: &'static str,
    detail: String,
    headers: Vec<(&'static str, String)>,
}

impl LocalAnswer {
    fn new(status: u16, title: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            title,
            detail: detail.into(),
            headers: Vec::new(),
        }
    }

    fn with_headers(mut self, headers: impl IntoIterator<Item = (&'static str, String)>) -> Self {
        self.headers.extend(headers);
        self
    }
}

impl From<request_filters::Rejection> for LocalAnswer {
    fn from(rejection: request_filters::Rejection) -> Self {
        Self::new(rejection.status, rejection.title, rejection.detail)
    }
}

impl EdgeProxy {
    /// The client's region (into the routing state) and address.
    fn locate(&self, session: &Session, ctx: &mut RequestCtx) -> Option<IpAddr> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let (client_region, source) = self
            .geo
            .locate(session.req_header(), peer)
            .unwrap_or((0, GeoSource::Default));
        ctx.routing.located_in(client_region);
        self.metrics
            .geo
            .get(source as usize, &[source.as_str()])
            .inc();
        self.geo.client_ip(session.req_header(), peer)
    }

    /// The checks after a request is known to be well formed: shopper
    /// identity (home-region pinning), bot screening and rate limits.
    async fn admit(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        client_ip: Option<IpAddr>,
    ) -> std::result::Result<(), LocalAnswer> {
        let request = session.req_header();
        let shopper = self.route_shopper(request, ctx)?;
        let throttled = self.screen_bots(request, client_ip, ctx)?;
        let user = match &shopper {
            Shopper::SignedIn(claims) => Some(claims.sub.as_str()),
            _ => None,
        };
        if ctx.route.personal() {
            ctx.user = user.map(str::to_string);
        }
        let refusal = self
            .rate_limits
            .check(ctx.route, client_ip, user, throttled);
        match refusal {
            Some(refusal) => Err(self.too_many(&refusal)),
            None => Ok(()),
        }
    }

    /// The region-wide checkout budget, for checkout `POST`s.
    async fn take_budget(
        &self,
        session: &Session,
        ctx: &RequestCtx,
    ) -> std::result::Result<(), LocalAnswer> {
        let request = session.req_header();
        let mut refusal = None;
        if ctx.route == RouteClass::Checkout
            && request.method == http::Method::POST
            && let Some(budget) = &self.budget
        {
            // Boxed: this future is large and only checkout POSTs need it;
            // inline, it would be allocated and moved with every request's.
            let (verdict, source) = Box::pin(budget.take()).await;
            let result = if verdict.is_some() {
                "limited"
            } else {
                "allowed"
            };
            self.metrics
                .checkout_budget
                .with_label_values(&[source.as_str(), result])
                .inc();
            refusal = verdict;
        }
        match refusal {
            Some(refusal) => Err(self.too_many(&refusal)),
            None => Ok(()),
        }
    }

    fn too_many(&self, refusal: &crate::rate_limiting::Refusal) -> LocalAnswer {
        self.metrics
            .rate_limited
            .with_label_values(&[&refusal.policy])
            .inc();
        let detail = format!(
            "too many requests under policy `{}`; retry in {} s",
            refusal.policy,
            refusal.retry_after_secs().max(1)
        );
        LocalAnswer::new(429, "Too many requests", detail).with_headers(refusal.headers())
    }

    /// The waiting room, for protected (checkout-class) routes while it is
    /// on: `None` lets the request on, `Some(verdict)` is answered instead.
    async fn queue(&self, session: &Session, ctx: &mut RequestCtx) -> Option<Verdict> {
        let room = self.waiting_room.as_ref()?;
        if !(room.always_on() || self.modes.enabled(Feature::CheckoutQueueing)) {
            return None;
        }
        let request = session.req_header();
        let path = ctx.path_and_query.split('?').next().unwrap_or_default();
        let name = room_of(&request.method, path)?;
        let user = ctx.user.as_deref().unwrap_or_default();
        let verdict = room.enter(request, &name, user).await;
        self.metrics
            .waiting_room
            .with_label_values(&[verdict.label()])
            .inc();
        match verdict {
            Verdict::Pass { set_cookie } => {
                ctx.set_cookie = set_cookie;
                ctx.room = Some(name);
                None
            }
            other => Some(other),
        }
    }

    /// Who sent the request; a signed-in shopper's personal routes are
    /// pinned to their home region, a bad token on them is refused.
    fn route_shopper(
        &self,
        request: &RequestHeader,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<Shopper, LocalAnswer> {
        let shopper = match &self.identity {
            Some(identity) => identity.shopper(request),
            None => Shopper::Anonymous,
        };
        if !ctx.route.personal() {
            return Ok(shopper);
        }
        match &shopper {
            Shopper::SignedIn(claims) => match self.router.index_of(&claims.region) {
                Some(home) => ctx.routing.pin(home),
                None => {
                    return Err(LocalAnswer::new(
                        401,
                        "Invalid token",
                        format!("unknown home region `{}` in the token", claims.region),
                    ));
                }
            },
            Shopper::Invalid => {
                return Err(LocalAnswer::new(
                    401,
                    "Invalid token",
                    "the shopper token is expired, malformed or not signed by us",
                )
                .with_headers([(
                    "www-authenticate",
                    "Bearer error=\"invalid_token\"".to_string(),
                )]));
            }
            // Checkout and flash claims need a shopper: an anonymous one is
            // refused here, before taking a waiting-room admission or the
            // region's checkout budget.
            Shopper::Anonymous
                if self.identity.is_some()
                    && ctx.route == RouteClass::Checkout
                    && request.method == http::Method::POST =>
            {
                return Err(LocalAnswer::new(
                    401,
                    "Sign-in required",
                    "checkout and flash-sale claims need a signed-in shopper (a bearer token)",
                )
                .with_headers([("www-authenticate", "Bearer".to_string())]));
            }
            Shopper::Anonymous => {}
        }
        Ok(shopper)
    }

    /// Bot screening: refuses blocked and challenged clients; returns
    /// whether the client is throttled.
    fn screen_bots(
        &self,
        request: &RequestHeader,
        client_ip: Option<IpAddr>,
        ctx: &RequestCtx,
    ) -> std::result::Result<bool, LocalAnswer> {
        let Some(bots) = &self.bots else {
            return Ok(false);
        };
        let action = bots.decide(request, client_ip, &ctx.path_and_query);
        self.metrics
            .bots
            .get(action as usize, &[action.as_str()])
            .inc();
        match action {
            BotAction::Block => Err(LocalAnswer::new(
                403,
                "Automated traffic refused",
                "this client looks automated; contact support if this is wrong",
            )),
            BotAction::Challenge => {
                let cookie = bots.challenge_cookie(client_ip, request);
                Err(LocalAnswer::new(
                    403,
                    "Challenge",
                    "retry this request with the cookie just set (browsers do this on their own)",
                )
                .with_headers([("set-cookie", bots.set_cookie(&cookie))]))
            }
            BotAction::Throttle => Ok(true),
            BotAction::Allow | BotAction::Verified | BotAction::Passed => Ok(false),
        }
    }

    /// Whether the cache takes part in this request at all.
    fn cache_eligible(&self, request: &RequestHeader, ctx: &RequestCtx) -> bool {
        let method = &request.method;
        let bypass = self
            .cache
            .config
            .bypass_request_headers
            .iter()
            .any(|h| request.headers.contains_key(h.as_str()));
        !bypass
            && ctx.route.cacheable()
            && (method == http::Method::GET || method == http::Method::HEAD)
    }

    /// The fast hit path: a plain `GET` for an object that is fresh, has no
    /// variants and needs no revalidation is answered here, straight from
    /// storage, without pingora's cache state machine (lookup, hit handler,
    /// lock and phase bookkeeping cost more than the rest of a hit). Every
    /// other request (`HEAD`, conditional or range requests, credentials,
    /// stale or varying objects, misses) returns `false` and takes the full
    /// path, which also answers what this one would, only slower.
    async fn serve_fresh_hit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let request = session.req_header();
        if ctx.credentialed
            || request.method != http::Method::GET
            || !self.cache_eligible(request, ctx)
            || FULL_PATH_REQUEST_HEADERS
                .iter()
                .any(|h| request.headers.contains_key(h))
        {
            return Ok(false);
        }
        let key = cache_key(&ctx.host, &ctx.path_and_query, self.cache.key_secret);
        let id = storage::entry_id(&key);
        let lookup = ctx.telemetry.span(Phase::CacheLookup);
        let found = self.cache.storage.fresh_plain(&id, SystemTime::now());
        drop(lookup);
        let Some(object) = found else {
            ctx.cache_key = Some(key);
            return Ok(false);
        };
        self.cache.eviction.touch(&id);
        let mut header = Box::new(object.header);
        header.set_version(http::Version::HTTP_11);
        header.insert_header(http::header::AGE, object.age)?;
        // As pingora's cache path says on a `200` hit with a length: ranges
        // of it are served from cache.
        header.insert_header(http::header::ACCEPT_RANGES, "bytes")?;
        decorate(
            &mut header,
            CacheStatus::Hit,
            self.key_debug(ctx).as_deref(),
        )?;
        ctx.telemetry.echo(&mut header)?;
        ctx.fast_hit = true;
        session.write_response_header(header, false).await?;
        session.write_response_body(Some(object.body), true).await?;
        Ok(true)
    }

    fn key_debug(&self, ctx: &RequestCtx) -> Option<String> {
        self.debug_headers
            .then(|| format!("host={} path={}", ctx.host, ctx.path_and_query))
    }
}

#[async_trait]
impl ProxyHttp for EdgeProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            started: Instant::now(),
            route: RouteClass::Browse,
            host: String::new(),
            path_and_query: String::new(),
            credentialed: false,
            local_status: None,
            fast_hit: false,
            cache_key: None,
            routing: routing::Attempt::default(),
            room: None,
            set_cookie: None,
            user: None,
            telemetry: RequestTelemetry::default(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        ctx.telemetry.start(session.req_header_mut(), &self.region);
        // Geolocate before the filters strip forwarding headers.
        let client_ip = self.locate(session, ctx);
        let raw = session
            .as_downstream()
            .as_http1()
            .filter(|_| {
                session
                    .req_header()
                    .headers
                    .contains_key(http::header::TRANSFER_ENCODING)
            })
            .map(|h1| h1.get_headers_raw_bytes());
        let outcome = match sanitise(
            session.req_header_mut(),
            raw.as_deref(),
            &self.limits,
            self.cache.ignored_params,
        ) {
            Ok(accepted) => {
                ctx.route = accepted.route;
                ctx.host = accepted.host;
                ctx.path_and_query = accepted.path_and_query;
                ctx.credentialed =
                    credentialed(session.req_header(), &self.cache.config.session_cookies);
                if self.modes.mode() == Mode::Maintenance {
                    let path = ctx.path_and_query.split('?').next().unwrap_or_default();
                    if !ModeRules::maintenance_exempt(path) {
                        ctx.local_status = Some(503);
                        self.metrics.maintenance_answers.inc();
                        Box::pin(self.mode_rules.respond_maintenance(session)).await?;
                        return Ok(true);
                    }
                }
                match self.admit(session, ctx, client_ip).await {
                    Ok(()) => {
                        // Boxed, and only for checkout routes: rare and large.
                        if ctx.route == RouteClass::Checkout
                            && let Some(room) = &self.waiting_room
                            && let Some(verdict) = Box::pin(self.queue(session, ctx)).await
                        {
                            let status = Box::pin(room.respond(session, &verdict)).await?;
                            ctx.local_status = Some(status);
                            return Ok(true);
                        }
                        self.take_budget(session, ctx).await
                    }
                    refused => refused,
                }
            }
            Err(rejection) => Err(LocalAnswer::from(rejection)),
        };
        match outcome {
            Ok(()) => self.serve_fresh_hit(session, ctx).await,
            Err(answer) => {
                ctx.local_status = Some(answer.status);
                // Boxed for the same reason as the checkout budget: rare.
                Box::pin(respond_problem(
                    session,
                    answer.status,
                    answer.title,
                    &answer.detail,
                    &answer.headers,
                ))
                .await?;
                Ok(true)
            }
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        if !self.cache_eligible(session.req_header(), ctx) {
            return Ok(());
        }
        ctx.telemetry.phase(Phase::CacheLookup);
        session.cache.enable(
            self.cache.storage,
            Some(self.cache.eviction),
            None,
            Some(self.cache.lock),
            None,
        );
        session
            .cache
            .set_max_file_size_bytes(self.cache.config.max_object_bytes);
        Ok(())
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut Self::CTX) -> Result<CacheKey> {
        Ok(ctx
            .cache_key
            .take()
            .unwrap_or_else(|| cache_key(&ctx.host, &ctx.path_and_query, self.cache.key_secret)))
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        _meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        _is_fresh: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<ForcedFreshness>> {
        // A request with credentials is never answered from the shared
        // cache; its response may still be stored if the origin says so.
        ctx.telemetry.end_phase();
        Ok(ctx.credentialed.then_some(ForcedFreshness::ForceMiss))
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        response: &ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<RespCacheable> {
        let config = self.cache.config;
        Ok(
            match policy::decide(
                response,
                ctx.credentialed,
                &config.vary_allow,
                &config.bypass_request_headers,
            ) {
                // Stored with degraded mode's window; outside it,
                // `should_serve_stale` keeps to the origin's own.
                RespCacheable::Cacheable(meta) => {
                    RespCacheable::Cacheable(self.mode_rules.extend(meta))
                }
                other => other,
            },
        )
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut Self::CTX,
        request: &RequestHeader,
    ) -> Option<HashBinary> {
        policy::variance(meta, request, &self.cache.config.bypass_request_headers)
    }

    /// Pingora serves the stale copy whenever this says yes (and asks
    /// once per request that ends up doing so), so the yes is counted
    /// here; a background refresh's own stale-if-error serves no one and
    /// is not counted.
    fn should_serve_stale(
        &self,
        session: &mut Session,
        _ctx: &mut Self::CTX,
        error: Option<&Error>,
    ) -> bool {
        let mode = self.modes.mode();
        let meta = session.cache.maybe_cache_meta();
        let (serve, reason) = match error {
            // stale-while-revalidate: the origin allowed it (or degraded).
            None => (
                ModeRules::may_serve_stale(mode, meta, false),
                StaleReason::Revalidating,
            ),
            // stale-if-error: the origin failed, timed out or answered 5xx.
            Some(error) => (
                error.esource() == &ErrorSource::Upstream
                    && ModeRules::may_serve_stale(mode, meta, true),
                StaleReason::OriginError,
            ),
        };
        if serve && session.subrequest_ctx.is_none() {
            self.metrics.served_stale(reason);
        }
        serve
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        // One span per attempt: the origin's span is its child.
        ctx.telemetry.phase(Phase::Upstream);
        self.router.peer(&mut ctx.routing, &self.metrics)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Self::CTX,
        mut error: Box<Error>,
    ) -> Box<Error> {
        // Nothing reached the origin: always safe to try the next one.
        ctx.routing.failed(peer);
        if ctx.routing.can_retry() {
            error.set_retry(true);
        }
        error
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        error: Box<Error>,
        ctx: &mut Self::CTX,
        client_reused: bool,
    ) -> Box<Error> {
        let mut error = error.more_context(format!("origin {peer}"));
        let idempotent = session.req_header().method.is_idempotent();
        if idempotent && !session.as_ref().retry_buffer_truncated() {
            error.retry.decide_reuse(client_reused);
        } else {
            error.set_retry(false);
        }
        if error.retry() {
            ctx.routing.failed(peer);
        }
        error
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.telemetry.upstream_headers(upstream)?;
        if let Some(addr) = session.client_addr().and_then(|a| a.as_inet()) {
            upstream.insert_header("x-forwarded-for", addr.ip().to_string())?;
        }
        let proto = if session
            .digest()
            .and_then(|d| d.ssl_digest.as_ref())
            .is_some()
        {
            "https"
        } else {
            "http"
        };
        upstream.insert_header("x-forwarded-proto", proto)?;
        upstream.insert_header("x-edge-region", self.region.as_str())?;
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        ctx.telemetry.phase(Phase::Response);
        ctx.telemetry.echo(response)?;
        let status = CacheStatus::of(session);
        if let Some(cookie) = ctx.set_cookie.take() {
            response.append_header(http::header::SET_COOKIE, cookie)?;
        }
        if let (Some(room), Some(waiting_room)) = (&ctx.room, &self.waiting_room)
            && response.headers.contains_key(SOLD_OUT_HEADER)
        {
            waiting_room.sold_out(room).await;
        }
        decorate(response, status, self.key_debug(ctx).as_deref())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        error: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let status = match error.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match error.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match error.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        let status = match error.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout => 504,
            _ => status,
        };
        if status > 0 && ctx.local_status.is_none() {
            let (title, detail) = match status {
                502 | 504 => (
                    "Origin unavailable",
                    "no origin in any region could answer; retry shortly",
                ),
                400..=499 => ("Bad request", "the request could not be read"),
                _ => ("Edge error", "the edge could not complete the request"),
            };
            let retry = [("retry-after", "1".to_string())];
            let extra: &[(&'static str, String)] = if status >= 500 { &retry } else { &[] };
            if let Err(write_error) = respond_problem(session, status, title, detail, extra).await {
                tracing::debug!(%write_error, "could not send the error response");
            }
            ctx.local_status = Some(status);
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _error: Option<&Error>, ctx: &mut Self::CTX) {
        let status = ctx
            .local_status
            .unwrap_or_else(|| session.response_written().map_or(0, |r| r.status.as_u16()));
        let cache = if ctx.local_status.is_some() {
            CacheStatus::Bypass
        } else if ctx.fast_hit {
            CacheStatus::Hit
        } else {
            CacheStatus::of(session)
        };
        let regions = self.metrics.regions;
        let (region_index, region) = match ctx.routing.served_by(&self.router) {
            Some(name) => (ctx.routing.served_index().unwrap_or(regions), name),
            None => (regions, "edge"),
        };
        let (class_index, class) = match status {
            100..=199 => (0, "1xx"),
            200..=299 => (1, "2xx"),
            300..=399 => (2, "3xx"),
            400..=499 => (3, "4xx"),
            500..=599 => (4, "5xx"),
            _ => (5, "none"),
        };
        let route = (ctx.route as usize, metrics::ROUTE_CLASSES);
        let cache_index = (cache as usize, metrics::CACHE_STATUSES);
        self.metrics
            .requests
            .get(
                metrics::slot(&[
                    route,
                    (class_index, metrics::STATUS_CLASSES),
                    cache_index,
                    (region_index, regions + 1),
                ]),
                &[ctx.route.as_str(), class, cache.as_str(), region],
            )
            .inc();
        self.metrics
            .latency
            .get(
                metrics::slot(&[route, cache_index]),
                &[ctx.route.as_str(), cache.as_str()],
            )
            .observe(ctx.started.elapsed().as_secs_f64());
        // A request refused before the request filter gets its ids here.
        ctx.telemetry.start(session.req_header_mut(), &self.region);
        let outcome = Outcome {
            route: ctx.route.as_str(),
            status,
            cache: cache.as_str(),
            served_by: region,
            duration: ctx.started.elapsed(),
        };
        ctx.telemetry
            .finish(&session.req_header().method, &self.region, outcome);
    }
}
