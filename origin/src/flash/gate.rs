//! The flash-sale gate in the sale region's Redis: per sale `{id}` a
//! counter of units left, a hash of units per user, a meta hash (state,
//! quantity, per-user limit) and a stream of won claims. A claim is one Lua
//! script — check the sale, the counter and the user's count, decrement,
//! hand out the next slot (1..quantity), append to the stream — so it is
//! atomic and never touches PostgreSQL: a sold-out answer costs one Redis
//! round trip.

use fred::prelude::{Client, ClientLike, KeysInterface, StreamsInterface};
use fred::types::scripts::Script;

use crate::cache::l2::{L2Error, build_client};

/// The consumer group of the workers that turn claims into reservations.
pub const GROUP: &str = "reservers";

/// ARGV: user. Returns `{1, slot, user_seq}` (won), `{0}` (sold out),
/// `{-1}` (no such sale), `{-2}` (closed, or past its end by Redis's
/// clock), `{-3, mine}` (user limit).
const CLAIM: &str = r#"
local state = redis.call('HGET', KEYS[4], 'state')
if not state then return {-1} end
if state ~= 'open' then return {-2} end
local ends = tonumber(redis.call('HGET', KEYS[4], 'ends_at_ms') or '0')
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) >= ends then return {-2} end
local remaining = tonumber(redis.call('GET', KEYS[1]) or '0')
if remaining <= 0 then return {0} end
local mine = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if mine >= tonumber(redis.call('HGET', KEYS[4], 'limit')) then return {-3, mine} end
local slot = tonumber(redis.call('HGET', KEYS[4], 'quantity')) - remaining + 1
redis.call('DECR', KEYS[1])
local seq = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('XADD', KEYS[3], '*', 'slot', slot, 'user', ARGV[1], 'seq', seq)
return {1, slot, seq}
"#;

/// Opens (or re-opens from the ledger) a sale. ARGV: quantity, limit,
/// remaining, ttl seconds, end (Unix ms), then user/count pairs already
/// won.
const OPEN: &str = r#"
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
redis.call('HSET', KEYS[4], 'state', 'open', 'quantity', ARGV[1], 'limit', ARGV[2], 'ends_at_ms', ARGV[5])
redis.call('SET', KEYS[1], ARGV[3])
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[3], 'reservers', '$', 'MKSTREAM')
end
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ARGV[4]) end
return 1
"#;

/// Hands out work: first claims another consumer took but did not finish
/// (idle past ARGV[3] ms), then new ones. ARGV: group, consumer, min idle
/// ms, count. Returns a flat list `id, slot, user, seq, …`.
const FETCH: &str = r#"
local out = {}
local function take(entries)
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    if fields then
      local m = {}
      for i = 1, #fields, 2 do m[fields[i]] = fields[i + 1] end
      table.insert(out, entry[1])
      table.insert(out, m['slot'])
      table.insert(out, m['user'])
      table.insert(out, m['seq'])
    end
  end
end
local stale = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], '0-0', 'COUNT', ARGV[4])
take(stale[2])
local fresh = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[4], 'STREAMS', KEYS[1], '>')
if fresh then take(fresh[1][2]) end
return out
"#;

/// Counts a sale's won claims not recorded yet (delivered to a worker and
/// not acknowledged, plus not delivered yet) and the consumers sharing
/// them; shared by [`close_script`] and [`waiting_script`].
const COUNT_WAITING: &str = r#"
local waiting, consumers = 0, 0
if redis.call('EXISTS', KEYS[3]) == 1 then
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[3])) do
    local g = {}
    for i = 1, #group, 2 do g[group[i]] = group[i + 1] end
    if g['name'] == 'reservers' then
      waiting = tonumber(g['pending']) + (tonumber(g['lag']) or 0)
      consumers = tonumber(g['consumers'])
    end
  end
end
"#;

/// Closes a sale's gate (no claim is won after this); a gate Redis lost
/// stays absent. Returns the claims delivered to a worker and not yet
/// acknowledged plus those not delivered yet: 0 once every claim won
/// before the close is recorded.
fn close_script() -> String {
    format!(
        "if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('HSET', KEYS[4], 'state', 'closed') end\n{COUNT_WAITING}\nreturn waiting"
    )
}

/// `{waiting, consumers}` of a sale's claim stream, changing nothing.
fn waiting_script() -> String {
    format!("{COUNT_WAITING}\nreturn {{waiting, consumers}}")
}

/// The outcome of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Won { slot: u32, user_seq: u32 },
    SoldOut,
    NoSuchSale,
    Closed,
    LimitReached,
}

/// What a gate opens with.
#[derive(Debug, Clone, Copy)]
pub struct Opening {
    pub quantity: i32,
    pub limit: i32,
    /// Units not yet won.
    pub remaining: i32,
    pub ends_at: chrono::DateTime<chrono::Utc>,
}

/// One won claim waiting to become a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedClaim {
    pub entry: String,
    pub slot: i32,
    pub user: String,
    pub user_seq: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("flash-sale redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("flash-sale redis answered {0}")]
    Unexpected(String),
}

pub struct Gate {
    client: Client,
    claim: Script,
    open: Script,
    close: Script,
    waiting: Script,
    fetch: Script,
}

fn keys(sale: i64) -> Vec<String> {
    ["remaining", "users", "claims", "meta"]
        .iter()
        .map(|part| format!("meridian:flash:v1:{{{sale}}}:{part}"))
        .collect()
}

impl Gate {
    pub fn connect(url: &str, timeout: std::time::Duration) -> Result<Self, L2Error> {
        let client = build_client(url, timeout)?;
        client.connect();
        Ok(Gate {
            client,
            claim: Script::from_lua(CLAIM),
            open: Script::from_lua(OPEN),
            close: Script::from_lua(close_script()),
            waiting: Script::from_lua(waiting_script()),
            fetch: Script::from_lua(FETCH),
        })
    }

    pub async fn claim(&self, sale: i64, user: &str) -> Result<Claim, GateError> {
        let answer: Vec<i64> = self
            .claim
            .evalsha_with_reload(&self.client, keys(sale), vec![user.to_string()])
            .await?;
        let number = |i: usize| {
            answer
                .get(i)
                .and_then(|n| u32::try_from(*n).ok())
                .ok_or_else(|| GateError::Unexpected(format!("{answer:?}")))
        };
        Ok(match answer.first() {
            Some(1) => Claim::Won {
                slot: number(1)?,
                user_seq: number(2)?,
            },
            Some(0) => Claim::SoldOut,
            Some(-1) => Claim::NoSuchSale,
            Some(-2) => Claim::Closed,
            Some(-3) => Claim::LimitReached,
            _ => return Err(GateError::Unexpected(format!("{answer:?}"))),
        })
    }

    /// Opens sale `sale` with `remaining` of `quantity` units left, until
    /// `ends_at` (checked against Redis's clock at every claim), and the
    /// units users already won (`user → count`, from the ledger).
    pub async fn open(
        &self,
        sale: i64,
        opening: Opening,
        won: &[(String, i64)],
    ) -> Result<(), GateError> {
        let ttl_seconds = (opening.ends_at - chrono::Utc::now()).num_seconds() + 86_400;
        let mut args = vec![
            opening.quantity.to_string(),
            opening.limit.to_string(),
            opening.remaining.to_string(),
            ttl_seconds.max(60).to_string(),
            opening.ends_at.timestamp_millis().to_string(),
        ];
        for (user, count) in won {
            args.push(user.clone());
            args.push(count.to_string());
        }
        let _: i64 = self
            .open
            .evalsha_with_reload(&self.client, keys(sale), args)
            .await?;
        Ok(())
    }

    /// Closes the gate of sale `sale`; answers how many won claims still
    /// wait to be recorded (0: the sale's books can be closed).
    pub async fn close(&self, sale: i64) -> Result<u64, GateError> {
        let waiting: i64 = self
            .close
            .evalsha_with_reload(&self.client, keys(sale), Vec::<String>::new())
            .await?;
        Ok(u64::try_from(waiting).unwrap_or(0))
    }

    /// Won claims of sale `sale` not recorded yet, and how many consumers
    /// (claim workers) share them.
    pub async fn waiting(&self, sale: i64) -> Result<(u64, u64), GateError> {
        let (waiting, consumers): (i64, i64) = self
            .waiting
            .evalsha_with_reload(&self.client, keys(sale), Vec::<String>::new())
            .await?;
        Ok((
            u64::try_from(waiting).unwrap_or(0),
            u64::try_from(consumers).unwrap_or(0),
        ))
    }

    /// Whether Redis still knows sale `sale` (it may have lost it).
    pub async fn knows(&self, sale: i64) -> Result<bool, GateError> {
        let exists: i64 = self.client.exists(keys(sale)[3].clone()).await?;
        Ok(exists == 1)
    }

    /// Units left, as Redis counts them.
    pub async fn remaining(&self, sale: i64) -> Result<Option<i64>, GateError> {
        Ok(self.client.get(keys(sale)[0].clone()).await?)
    }

    /// Up to `count` claims for `consumer` to process.
    pub async fn fetch(
        &self,
        sale: i64,
        consumer: &str,
        min_idle_ms: u64,
        count: usize,
    ) -> Result<Vec<QueuedClaim>, GateError> {
        let flat: Vec<String> = self
            .fetch
            .evalsha_with_reload(
                &self.client,
                vec![keys(sale)[2].clone()],
                vec![
                    GROUP.to_string(),
                    consumer.to_string(),
                    min_idle_ms.to_string(),
                    count.to_string(),
                ],
            )
            .await?;
        let mut out = Vec::with_capacity(flat.len() / 4);
        for chunk in flat.chunks_exact(4) {
            let (Ok(slot), Ok(user_seq)) = (chunk[1].parse(), chunk[3].parse()) else {
                tracing::error!(entry = %chunk[0], "unreadable flash claim skipped");
                continue;
            };
            out.push(QueuedClaim {
                entry: chunk[0].clone(),
                slot,
                user: chunk[2].clone(),
                user_seq,
            });
        }
        Ok(out)
    }

    /// Marks claims done.
    pub async fn ack(&self, sale: i64, entries: Vec<String>) -> Result<(), GateError> {
        if entries.is_empty() {
            return Ok(());
        }
        let _: i64 = self
            .client
            .xack(keys(sale)[2].clone(), GROUP, entries)
            .await?;
        Ok(())
    }
}
