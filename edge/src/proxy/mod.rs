//! [`EdgeProxy`]: the edge's one `ProxyHttp` service. Each phase delegates
//! to its module:
//!
//! - [`request_filters`]: framing, method and host checks, unkeyed-header
//!   stripping, URI normalisation, route classes.
//! - [`routing`]: which region and origin serve a request, failover.
//! - cache hooks: [`crate::cache::policy`] and [`crate::cache::key`].
//! - [`response_modifiers`]: `X-Cache`, `Age`, problem responses.
//!
//! Per-request state lives in [`RequestCtx`]; shared state in `Arc`s
//! built once by [`crate::server`].

pub mod request_filters;
pub mod response_modifiers;
pub mod routing;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

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
use crate::cache::policy;
use crate::geo::{Geo, GeoSource};
use crate::identity::{Identity, Shopper};
use crate::metrics::EdgeMetrics;
use crate::rate_limiting::RateLimits;
use crate::rate_limiting::budget::CheckoutBudget;
use request_filters::{RouteClass, credentialed, sanitise};
use response_modifiers::{CacheStatus, decorate, respond_problem};
use routing::Router;

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
    routing: routing::Attempt,
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
        self.metrics.geo.with_label_values(&[source.as_str()]).inc();
        self.geo.client_ip(session.req_header(), peer)
    }

    /// The checks after a request is known to be well formed: shopper
    /// identity (home-region pinning), bot screening, rate limits and the
    /// checkout budget.
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
        let mut refusal = self
            .rate_limits
            .check(ctx.route, client_ip, user, throttled);
        if refusal.is_none()
            && ctx.route == RouteClass::Checkout
            && request.method == http::Method::POST
            && let Some(budget) = &self.budget
        {
            let (verdict, source) = budget.take().await;
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
        let Some(refusal) = refusal else {
            return Ok(());
        };
        self.metrics
            .rate_limited
            .with_label_values(&[&refusal.policy])
            .inc();
        let detail = format!(
            "too many requests under policy `{}`; retry in {} s",
            refusal.policy,
            refusal.retry_after_secs().max(1)
        );
        Err(LocalAnswer::new(429, "Too many requests", detail).with_headers(refusal.headers()))
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
            .with_label_values(&[action.as_str()])
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
            routing: routing::Attempt::default(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
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
                self.admit(session, ctx, client_ip).await
            }
            Err(rejection) => Err(LocalAnswer::from(rejection)),
        };
        match outcome {
            Ok(()) => Ok(false),
            Err(answer) => {
                ctx.local_status = Some(answer.status);
                respond_problem(
                    session,
                    answer.status,
                    answer.title,
                    &answer.detail,
                    &answer.headers,
                )
                .await?;
                Ok(true)
            }
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<()> {
        let request = session.req_header();
        let method = &request.method;
        let bypass = self
            .cache
            .config
            .bypass_request_headers
            .iter()
            .any(|h| request.headers.contains_key(h.as_str()));
        if bypass
            || !ctx.route.cacheable()
            || !(method == http::Method::GET || method == http::Method::HEAD)
        {
            return Ok(());
        }
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
        Ok(cache_key(
            &ctx.host,
            &ctx.path_and_query,
            self.cache.key_secret,
        ))
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
        Ok(ctx.credentialed.then_some(ForcedFreshness::ForceMiss))
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        response: &ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<RespCacheable> {
        let config = self.cache.config;
        Ok(policy::decide(
            response,
            ctx.credentialed,
            &config.vary_allow,
            &config.bypass_request_headers,
        ))
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut Self::CTX,
        request: &RequestHeader,
    ) -> Option<HashBinary> {
        policy::variance(meta, request, &self.cache.config.bypass_request_headers)
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
        error: Option<&Error>,
    ) -> bool {
        match error {
            // stale-while-revalidate: the origin allowed it in the response.
            None => true,
            // stale-if-error: the origin failed, timed out or answered 5xx.
            Some(error) => error.esource() == &ErrorSource::Upstream,
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
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
        _ctx: &mut Self::CTX,
    ) -> Result<()> {
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
        let status = CacheStatus::of(session);
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
        } else {
            CacheStatus::of(session)
        };
        let region = ctx.routing.served_by(&self.router).unwrap_or("edge");
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "none",
        };
        self.metrics
            .requests
            .with_label_values(&[ctx.route.as_str(), class, cache.as_str(), region])
            .inc();
        self.metrics
            .latency
            .with_label_values(&[ctx.route.as_str(), cache.as_str()])
            .observe(ctx.started.elapsed().as_secs_f64());
    }
}
