//! The waiting room's state in the region's Redis, shared by every edge of
//! the region, changed only by one Lua script (atomic, on Redis's clock):
//! per room, the last ticket issued, the last ticket admitted, the active
//! set (admissions and admitted tickets not yet redeemed, scored by when
//! they lapse), the admissions of the last minute, and a sold-out flag.
//!
//! Each call first admits waiting tickets in order while there is room
//! (`active_users`) and rate (`new_users_per_minute`); then a newcomer goes
//! straight in only if nobody waits, else takes the next ticket; a ticket
//! holder is told their place, or let in once their number is admitted —
//! once: the admitted ticket's slot is taken when redeemed, so a copy of
//! the cookie finds it gone.

use std::time::Duration;

use fred::clients::Client;
use fred::interfaces::{ClientLike, KeysInterface, LuaInterface};
use fred::prelude::{Config, ReconnectPolicy};
use fred::types::Builder;

/// KEYS: next, admitted, active, rate, soldout. ARGV: active_users,
/// per_minute, session_ms, grace_ms, ticket (0: none), session id, idle
/// expiry ms (every key of a room nobody enters lapses after it).
/// Returns {outcome, ticket, position, now_ms}: 1 admitted, 2 queued,
/// 3 sold out, 4 ticket unknown or already used.
const ENTER: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[5]) == 1 then return {3, 0, 0, now} end
local function done(r)
  for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], ARGV[7]) end
  return r
end
local active_users = tonumber(ARGV[1])
local per_minute = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - 60000)
local next = tonumber(redis.call('GET', KEYS[1]) or '0')
local admitted = tonumber(redis.call('GET', KEYS[2]) or '0')
local function room()
  return redis.call('ZCARD', KEYS[3]) < active_users and redis.call('ZCARD', KEYS[4]) < per_minute
end
while admitted < next and room() do
  admitted = admitted + 1
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), 't:' .. admitted)
  redis.call('ZADD', KEYS[4], now, 't:' .. admitted)
end
redis.call('SET', KEYS[2], admitted)
local ticket = tonumber(ARGV[5])
local session = 's:' .. ARGV[6]
if ticket == 0 then
  if admitted >= next and room() then
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), session)
    redis.call('ZADD', KEYS[4], now, session)
    return done({1, 0, 0, now})
  end
  next = redis.call('INCR', KEYS[1])
  return done({2, next, next - admitted, now})
end
if ticket > next then return done({4, 0, 0, now}) end
if ticket > admitted then return done({2, ticket, ticket - admitted, now}) end
if redis.call('ZREM', KEYS[3], 't:' .. ticket) == 1 then
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), session)
  return done({1, 0, 0, now})
end
return done({4, 0, 0, now})
"#;

/// A room's keys lapse after this long without anyone entering it.
pub const IDLE_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// What the room decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Admitted {
        now_ms: u64,
    },
    Queued {
        ticket: u64,
        position: u64,
        now_ms: u64,
    },
    SoldOut,
    /// The ticket was never issued, already redeemed, or its slot lapsed.
    Spent,
}

/// The limits one call applies.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub active_users: u32,
    pub new_users_per_minute: u32,
    pub session: Duration,
    pub grace: Duration,
}

pub struct RoomStore {
    client: Client,
}

fn keys(room: &str) -> Vec<String> {
    ["next", "admitted", "active", "rate", "soldout"]
        .iter()
        .map(|k| format!("meridian:wr:v1:{room}:{k}"))
        .collect()
}

impl RoomStore {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, fred::error::Error> {
        let mut config = Config::from_url(url)?;
        config.fail_fast = true;
        let client = Builder::from_config(config)
            .with_performance_config(|p| p.default_command_timeout = timeout)
            .with_connection_config(|c| c.connection_timeout = Duration::from_secs(1))
            .set_policy(ReconnectPolicy::new_constant(0, 500))
            .build()?;
        Ok(RoomStore { client })
    }

    /// Starts the connection (call from a runtime; the edge's maintenance
    /// service does).
    pub fn connect(&self) {
        self.client.connect();
    }

    pub async fn enter(
        &self,
        room: &str,
        limits: Limits,
        ticket: u64,
        session: &str,
    ) -> Result<Entry, fred::error::Error> {
        let args: Vec<String> = vec![
            limits.active_users.to_string(),
            limits.new_users_per_minute.to_string(),
            limits.session.as_millis().to_string(),
            limits.grace.as_millis().to_string(),
            ticket.to_string(),
            session.to_string(),
            IDLE_EXPIRY.as_millis().to_string(),
        ];
        if !self.client.is_connected() {
            return Err(fred::error::Error::new(
                fred::error::ErrorKind::IO,
                "not connected to Redis",
            ));
        }
        let answer: Vec<i64> = self.client.eval(ENTER, keys(room), args).await?;
        let at = |i: usize| answer.get(i).copied().unwrap_or(0).max(0) as u64;
        Ok(match at(0) {
            1 => Entry::Admitted { now_ms: at(3) },
            2 => Entry::Queued {
                ticket: at(1),
                position: at(2),
                now_ms: at(3),
            },
            3 => Entry::SoldOut,
            _ => Entry::Spent,
        })
    }

    /// Marks the room sold out (for `ttl`): waiting shoppers are told at
    /// their next poll, newcomers at once.
    pub async fn sold_out(&self, room: &str, ttl: Duration) -> Result<(), fred::error::Error> {
        let key = keys(room).swap_remove(4);
        let ttl = fred::types::Expiration::EX(ttl.as_secs().max(1) as i64);
        self.client
            .set::<(), _, _>(key, 1, Some(ttl), None, false)
            .await
    }
}
