//! Rate limiting: token buckets (GCRA, `governor`) per client IP and per
//! signed-in user, per route class, from config; a tighter per-IP bucket for
//! clients the bot scorer throttles; and the cluster-wide checkout budget in
//! Redis ([`budget`]).
//!
//! A refused request gets 429 with `Retry-After` and the IETF
//! `RateLimit-Policy` / `RateLimit` headers (draft-ietf-httpapi-ratelimit-
//! headers, structured-field form). Buckets of idle clients are dropped by a
//! background sweep, so memory follows the active client count.

pub mod budget;

use std::collections::BTreeMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use crate::config::{ClassLimits, LimitsConfig, RateConfig};
use crate::proxy::request_filters::RouteClass;

type Limiter<K> =
    RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock, StateInformationMiddleware>;

/// One bucket family (per IP or per user) of one route class.
struct Bucket<K: Hash + Eq + Clone> {
    name: String,
    quota: Quota,
    limiter: Limiter<K>,
}

impl<K: Hash + Eq + Clone> Bucket<K> {
    fn new(name: String, rate: &RateConfig) -> Self {
        let quota = quota(rate);
        Self {
            name,
            quota,
            limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
        }
    }

    fn check(&self, key: &K, clock: &DefaultClock) -> Option<Refusal> {
        match self.limiter.check_key(key) {
            Ok(_) => None,
            Err(not_until) => Some(Refusal {
                policy: self.name.clone(),
                limit: self.quota.burst_size().get(),
                window: self.quota.burst_size_replenished_in(),
                retry_after: not_until.wait_time_from(clock.now()),
            }),
        }
    }
}

fn quota(rate: &RateConfig) -> Quota {
    // Validated at load: both are at least 1.
    let per_second = NonZeroU32::new(rate.per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(rate.burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::per_second(per_second).allow_burst(burst)
}

/// Why a request was refused: what the 429's headers say.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The policy's name (`browse-ip`, `checkout-user`, …).
    pub policy: String,
    /// Requests allowed in a burst.
    pub limit: u32,
    /// Time for an empty bucket to refill.
    pub window: Duration,
    pub retry_after: Duration,
}

impl Refusal {
    /// Seconds to wait, rounded up (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)
    }

    /// `Retry-After`, `RateLimit-Policy` and `RateLimit` header values.
    pub fn headers(&self) -> [(&'static str, String); 3] {
        let retry = self.retry_after_secs().max(1);
        let window = self.window.as_secs().max(1);
        [
            ("retry-after", retry.to_string()),
            (
                "ratelimit-policy",
                format!("\"{}\";q={};w={window}", self.policy, self.limit),
            ),
            ("ratelimit", format!("\"{}\";r=0;t={retry}", self.policy)),
        ]
    }
}

struct ClassBuckets {
    per_ip: Option<Bucket<IpAddr>>,
    per_user: Option<Bucket<String>>,
    throttled_ip: Option<Bucket<IpAddr>>,
}

impl ClassBuckets {
    fn new(class: &str, limits: &ClassLimits, throttle_divisor: u32) -> Self {
        let tighter = |rate: &RateConfig| RateConfig {
            per_second: (rate.per_second / throttle_divisor).max(1),
            burst: (rate.burst / throttle_divisor).max(1),
        };
        Self {
            per_ip: limits
                .per_ip
                .as_ref()
                .map(|r| Bucket::new(format!("{class}-ip"), r)),
            per_user: limits
                .per_user
                .as_ref()
                .map(|r| Bucket::new(format!("{class}-user"), r)),
            throttled_ip: limits
                .per_ip
                .as_ref()
                .map(|r| Bucket::new(format!("{class}-ip-throttled"), &tighter(r))),
        }
    }
}

/// Every route class's buckets.
pub struct RateLimits {
    classes: BTreeMap<&'static str, ClassBuckets>,
    clock: DefaultClock,
}

impl RateLimits {
    pub fn new(config: &LimitsConfig) -> Self {
        let classes = [
            ("browse", &config.browse),
            ("search", &config.search),
            ("cart", &config.cart),
            ("checkout", &config.checkout),
            ("orders", &config.orders),
            ("admin", &config.admin),
        ]
        .into_iter()
        .filter_map(|(name, limits)| {
            limits.as_ref().map(|l| {
                (
                    name,
                    ClassBuckets::new(name, l, config.throttle_divisor.max(1)),
                )
            })
        })
        .collect();
        Self {
            classes,
            clock: DefaultClock::default(),
        }
    }

    /// Every policy name a refusal can carry (the label values of
    /// `meridian_edge_rate_limited_total`), the checkout budget's excepted.
    pub fn policies(&self) -> Vec<String> {
        self.classes
            .values()
            .flat_map(|b| {
                [
                    b.per_ip.as_ref().map(|x| x.name.clone()),
                    b.per_user.as_ref().map(|x| x.name.clone()),
                    b.throttled_ip.as_ref().map(|x| x.name.clone()),
                ]
            })
            .flatten()
            .collect()
    }

    /// Takes a token from every bucket that applies; the first empty one
    /// refuses the request. `throttled` clients use the tighter IP bucket.
    pub fn check(
        &self,
        route: RouteClass,
        ip: Option<IpAddr>,
        user: Option<&str>,
        throttled: bool,
    ) -> Option<Refusal> {
        let buckets = self.classes.get(route.as_str())?;
        if let Some(ip) = ip {
            let bucket = if throttled {
                buckets.throttled_ip.as_ref()
            } else {
                buckets.per_ip.as_ref()
            };
            if let Some(refusal) = bucket.and_then(|b| b.check(&ip, &self.clock)) {
                return Some(refusal);
            }
        }
        if let (Some(user), Some(bucket)) = (user, buckets.per_user.as_ref()) {
            return bucket.check(&user.to_string(), &self.clock);
        }
        None
    }

    /// Drops the state of clients whose buckets are full again.
    pub fn sweep(&self) {
        for buckets in self.classes.values() {
            if let Some(b) = &buckets.per_ip {
                b.limiter.retain_recent();
                b.limiter.shrink_to_fit();
            }
            if let Some(b) = &buckets.throttled_ip {
                b.limiter.retain_recent();
                b.limiter.shrink_to_fit();
            }
            if let Some(b) = &buckets.per_user {
                b.limiter.retain_recent();
                b.limiter.shrink_to_fit();
            }
        }
    }
}

/// Background service: sweeps idle buckets every 30 s and connects the
/// Redis clients of the checkout budget and the waiting room (the edge is
/// built outside any runtime).
pub struct LimitsMaintenance {
    pub limits: std::sync::Arc<RateLimits>,
    pub budget: Option<std::sync::Arc<budget::CheckoutBudget>>,
    pub waiting_room: Option<std::sync::Arc<crate::waiting_room::WaitingRoom>>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for LimitsMaintenance {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        if let Some(budget) = &self.budget {
            budget.connect();
        }
        if let Some(room) = &self.waiting_room {
            room.connect();
        }
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tick.tick() => self.limits.sweep(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> RateLimits {
        let rate = |per_second, burst| Some(RateConfig { per_second, burst });
        RateLimits::new(&LimitsConfig {
            browse: Some(ClassLimits {
                per_ip: rate(1, 3),
                per_user: rate(1, 5),
            }),
            throttle_divisor: 3,
            ..LimitsConfig::default()
        })
    }

    #[test]
    fn per_ip_bucket_refuses_after_the_burst_with_headers() {
        let limits = limits();
        let ip = Some("192.0.2.1".parse().unwrap());
        for _ in 0..3 {
            assert!(limits.check(RouteClass::Browse, ip, None, false).is_none());
        }
        let refusal = limits.check(RouteClass::Browse, ip, None, false).unwrap();
        assert_eq!(refusal.policy, "browse-ip");
        let headers = refusal.headers();
        assert_eq!(headers[0], ("retry-after", "1".to_string()));
        assert_eq!(headers[1].1, "\"browse-ip\";q=3;w=3");
        assert_eq!(headers[2].1, "\"browse-ip\";r=0;t=1");
        // Another client is unaffected; unlimited classes are unlimited.
        let other = Some("192.0.2.2".parse().unwrap());
        assert!(
            limits
                .check(RouteClass::Browse, other, None, false)
                .is_none()
        );
        assert!(limits.check(RouteClass::Search, ip, None, false).is_none());
    }

    #[test]
    fn throttled_clients_get_a_tighter_bucket_and_users_their_own() {
        let limits = limits();
        let ip = Some("192.0.2.3".parse().unwrap());
        assert!(limits.check(RouteClass::Browse, ip, None, true).is_none());
        let refusal = limits.check(RouteClass::Browse, ip, None, true).unwrap();
        assert_eq!(refusal.policy, "browse-ip-throttled");
        for n in 0..5 {
            let ip = Some(format!("198.51.100.{n}").parse().unwrap());
            assert!(
                limits
                    .check(RouteClass::Browse, ip, Some("u1"), false)
                    .is_none()
            );
        }
        let ip = Some("198.51.100.9".parse().unwrap());
        let refusal = limits
            .check(RouteClass::Browse, ip, Some("u1"), false)
            .unwrap();
        assert_eq!(refusal.policy, "browse-user");
    }
}
