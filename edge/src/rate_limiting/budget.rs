//! The cluster-wide checkout budget: one GCRA bucket in the region's Redis,
//! shared by every edge of the region, checked atomically by a Lua script
//! (Redis's own clock, so edges need no clock agreement). When Redis is
//! unreachable or slow, each edge falls back to a local bucket at
//! `fallback_per_second`, so checkout keeps a ceiling instead of failing
//! open or closed.

use std::num::NonZeroU32;
use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{ClientLike, LuaInterface};
use fred::prelude::{Config, ReconnectPolicy};
use fred::types::Builder;
use governor::clock::{Clock, DefaultClock};
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use super::Refusal;
use crate::config::BudgetConfig;

/// GCRA over Redis TIME. KEYS[1]: the bucket; ARGV[1]: emission interval
/// (µs); ARGV[2]: burst tolerance (µs). Returns {allowed, retry_after_µs}.
const GCRA: &str = r#"
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now_us)
if tat < now_us then tat = now_us end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at > now_us then
  return {0, allow_at - now_us}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now_us) / 1000) + 1000)
return {1, 0}
"#;

/// Where a budget decision came from (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetSource {
    Redis,
    Local,
}

impl BudgetSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Local => "local",
        }
    }
}

pub struct CheckoutBudget {
    redis: Option<Client>,
    key: String,
    interval_us: u64,
    tolerance_us: u64,
    burst: u32,
    window: Duration,
    local: RateLimiter<NotKeyed, InMemoryState, DefaultClock>,
    clock: DefaultClock,
}

impl CheckoutBudget {
    /// Connects (in the background) to `redis_url`; without one, the local
    /// bucket is the budget.
    pub fn new(config: &BudgetConfig, redis_url: Option<&str>) -> Result<Self, fred::error::Error> {
        let per_second = config.per_second.max(1);
        let burst = config.burst.max(1);
        let interval_us = 1_000_000 / u64::from(per_second);
        let redis = match redis_url {
            Some(url) => {
                let mut redis_config = Config::from_url(url)?;
                redis_config.fail_fast = true;
                let client = Builder::from_config(redis_config)
                    .with_performance_config(|p| p.default_command_timeout = config.timeout)
                    .with_connection_config(|c| c.connection_timeout = Duration::from_secs(1))
                    .set_policy(ReconnectPolicy::new_constant(0, 500))
                    .build()?;
                Some(client)
            }
            None => None,
        };
        let fallback =
            NonZeroU32::new(config.fallback_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let fallback_burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        Ok(Self {
            redis,
            key: config.key.clone(),
            interval_us,
            tolerance_us: interval_us * u64::from(burst),
            burst,
            window: Duration::from_micros(interval_us * u64::from(burst)),
            local: RateLimiter::direct(Quota::per_second(fallback).allow_burst(fallback_burst)),
            clock: DefaultClock::default(),
        })
    }

    /// Starts the Redis connection (call from a runtime).
    pub fn connect(&self) {
        if let Some(client) = &self.redis {
            client.connect();
        }
    }

    fn refusal(&self, retry_after: Duration) -> Refusal {
        Refusal {
            policy: "checkout-budget".into(),
            limit: self.burst,
            window: self.window,
            retry_after,
        }
    }

    /// Takes one checkout from the budget.
    pub async fn take(&self) -> (Option<Refusal>, BudgetSource) {
        if let Some(client) = &self.redis
            && client.is_connected()
        {
            let result: Result<Vec<i64>, _> = client
                .eval(
                    GCRA,
                    vec![self.key.as_str()],
                    vec![self.interval_us.to_string(), self.tolerance_us.to_string()],
                )
                .await;
            match result.as_deref() {
                Ok([1, _]) => return (None, BudgetSource::Redis),
                Ok([0, wait_us]) => {
                    let wait = Duration::from_micros(u64::try_from(*wait_us).unwrap_or(0));
                    return (Some(self.refusal(wait)), BudgetSource::Redis);
                }
                Ok(other) => tracing::warn!(?other, "unexpected checkout budget reply"),
                Err(error) => tracing::debug!(%error, "checkout budget: Redis unavailable"),
            }
        }
        match self.local.check() {
            Ok(()) => (None, BudgetSource::Local),
            Err(not_until) => (
                Some(self.refusal(not_until.wait_time_from(self.clock.now()))),
                BudgetSource::Local,
            ),
        }
    }
}
