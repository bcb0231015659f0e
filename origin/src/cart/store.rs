//! Carts in Redis: one hash per cart, `meridian:cart:v1:u:<user>` or
//! `meridian:cart:v1:g:<guest>`, with two fields per line — `q:<sku>` (the
//! quantity) and `p:<sku>` (`<minor>:<currency>`, the unit price the shopper
//! saw when adding it). Every write refreshes the TTL. Changes that check
//! and write (bounds, line count, the guest merge) are Lua scripts, so two
//! tabs of one shopper cannot push a cart past its limits, and a guest cart
//! is merged exactly once.
//!
//! Unlike the L2 cache, a cart is data: a Redis failure is an error (503),
//! never a silent skip.

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::{Client, ClientLike, HashesInterface, KeysInterface};
use fred::types::scripts::Script;

use crate::cache::l2::{L2Error, build_client};

/// Prefix of every cart key.
pub const KEY_PREFIX: &str = "meridian:cart:v1:";

/// Adds to (mode `add`) or sets (mode `set`) a line's quantity, within the
/// bounds. ARGV: sku, quantity, price, max quantity, max lines, ttl seconds,
/// mode. Returns the new quantity, or -1 (over the quantity bound), -2
/// (too many lines), -3 (`set` on a SKU not in the cart).
const ADD_OR_SET: &str = r#"
local qf = 'q:' .. ARGV[1]
local current = tonumber(redis.call('HGET', KEYS[1], qf) or '0')
local new
if ARGV[7] == 'set' then
  if current == 0 then return -3 end
  new = tonumber(ARGV[2])
else
  new = current + tonumber(ARGV[2])
end
if new == 0 then return 0 end
if new > tonumber(ARGV[4]) then return -1 end
if current == 0 and redis.call('HLEN', KEYS[1]) / 2 >= tonumber(ARGV[5]) then return -2 end
if ARGV[7] == 'set' then
  redis.call('HSET', KEYS[1], qf, new)
else
  redis.call('HSET', KEYS[1], qf, new, 'p:' .. ARGV[1], ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[6])
return new
"#;

/// Removes a line. ARGV: sku, ttl seconds. Returns 1 if it was there.
const REMOVE: &str = r#"
local removed = redis.call('HDEL', KEYS[1], 'q:' .. ARGV[1], 'p:' .. ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if removed > 0 then return 1 end
return 0
"#;

/// Merges the guest cart KEYS[1] into the user cart KEYS[2] and deletes
/// the guest cart, atomically: the same SKU keeps the higher quantity (and
/// the price that came with it); lines beyond the user cart's limit are
/// dropped. ARGV: max quantity, max lines, ttl seconds. Returns the number
/// of lines taken from the guest cart, or -1 if there was no guest cart
/// (already merged, or empty).
const MERGE: &str = r#"
local guest = redis.call('HGETALL', KEYS[1])
if #guest == 0 then return -1 end
local prices = {}
for i = 1, #guest, 2 do
  if string.sub(guest[i], 1, 2) == 'p:' then prices[string.sub(guest[i], 3)] = guest[i + 1] end
end
local taken = 0
for i = 1, #guest, 2 do
  local field = guest[i]
  if string.sub(field, 1, 2) == 'q:' then
    local sku = string.sub(field, 3)
    local wanted = math.min(tonumber(guest[i + 1]), tonumber(ARGV[1]))
    local current = tonumber(redis.call('HGET', KEYS[2], field) or '0')
    local room = current > 0 or redis.call('HLEN', KEYS[2]) / 2 < tonumber(ARGV[2])
    if wanted > current and room then
      redis.call('HSET', KEYS[2], field, wanted)
      if prices[sku] then redis.call('HSET', KEYS[2], 'p:' .. sku, prices[sku]) end
      taken = taken + 1
    end
  end
end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
return taken
"#;

#[derive(Debug, thiserror::Error)]
pub enum CartStoreError {
    #[error("cart redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("cart redis returned an unexpected value: {0}")]
    Unexpected(String),
}

/// Which cart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CartKey {
    User(String),
    Guest(String),
}

impl CartKey {
    fn redis_key(&self) -> String {
        match self {
            CartKey::User(id) => format!("{KEY_PREFIX}u:{id}"),
            CartKey::Guest(id) => format!("{KEY_PREFIX}g:{id}"),
        }
    }
}

/// One stored line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLine {
    pub sku: String,
    pub quantity: u32,
    /// The unit price when added: minor units and currency.
    pub added_price: Option<(i64, String)>,
}

/// The outcome of an add or set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Quantity(u32),
    OverQuantity,
    TooManyLines,
    NotInCart,
}

/// Limits and lifetime applied to every cart.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub ttl: Duration,
    pub max_lines: u32,
    pub max_quantity: u32,
}

pub struct CartStore {
    client: Client,
    limits: Limits,
    add_or_set: Script,
    remove: Script,
    merge: Script,
}

impl CartStore {
    /// Creates the client and connects in the background.
    pub fn connect(url: &str, timeout: Duration, limits: Limits) -> Result<Self, L2Error> {
        let client = build_client(url, timeout)?;
        client.connect();
        Ok(CartStore {
            client,
            limits,
            add_or_set: Script::from_lua(ADD_OR_SET),
            remove: Script::from_lua(REMOVE),
            merge: Script::from_lua(MERGE),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn ttl_seconds(&self) -> String {
        self.limits.ttl.as_secs().max(1).to_string()
    }

    /// The cart's lines, sorted by SKU.
    pub async fn lines(&self, cart: &CartKey) -> Result<Vec<StoredLine>, CartStoreError> {
        let fields: HashMap<String, String> = self.client.hgetall(cart.redis_key()).await?;
        let mut lines: Vec<StoredLine> = fields
            .iter()
            .filter_map(|(field, value)| {
                let sku = field.strip_prefix("q:")?;
                let quantity = value.parse::<u32>().ok().filter(|q| *q > 0)?;
                let added_price = fields
                    .get(&format!("p:{sku}"))
                    .and_then(|p| p.split_once(':'))
                    .and_then(|(minor, currency)| {
                        Some((minor.parse().ok()?, currency.to_string()))
                    });
                Some(StoredLine {
                    sku: sku.to_string(),
                    quantity,
                    added_price,
                })
            })
            .collect();
        lines.sort_by(|a, b| a.sku.cmp(&b.sku));
        Ok(lines)
    }

    /// Adds `quantity` units of `sku` at `price` (`(minor, currency)`).
    pub async fn add(
        &self,
        cart: &CartKey,
        sku: &str,
        quantity: u32,
        price: (i64, &str),
    ) -> Result<Change, CartStoreError> {
        let price = format!("{}:{}", price.0, price.1);
        self.add_or_set(cart, sku, quantity, &price, "add").await
    }

    /// Records the price the shopper has now been shown for a line already
    /// in the cart (after checkout found it changed).
    pub async fn reprice(
        &self,
        cart: &CartKey,
        sku: &str,
        price: (i64, &str),
    ) -> Result<(), CartStoreError> {
        let price = format!("{}:{}", price.0, price.1);
        self.add_or_set(cart, sku, 0, &price, "add")
            .await
            .map(|_| ())
    }

    /// Sets the quantity of a line already in the cart.
    pub async fn set(
        &self,
        cart: &CartKey,
        sku: &str,
        quantity: u32,
    ) -> Result<Change, CartStoreError> {
        self.add_or_set(cart, sku, quantity, "", "set").await
    }

    async fn add_or_set(
        &self,
        cart: &CartKey,
        sku: &str,
        quantity: u32,
        price: &str,
        mode: &str,
    ) -> Result<Change, CartStoreError> {
        let args = vec![
            sku.to_string(),
            quantity.to_string(),
            price.to_string(),
            self.limits.max_quantity.to_string(),
            self.limits.max_lines.to_string(),
            self.ttl_seconds(),
            mode.to_string(),
        ];
        let result: i64 = self
            .add_or_set
            .evalsha_with_reload(&self.client, vec![cart.redis_key()], args)
            .await?;
        Ok(match result {
            -1 => Change::OverQuantity,
            -2 => Change::TooManyLines,
            -3 => Change::NotInCart,
            n => Change::Quantity(
                u32::try_from(n).map_err(|_| CartStoreError::Unexpected(n.to_string()))?,
            ),
        })
    }

    /// Removes a line; false if it was not in the cart.
    pub async fn remove(&self, cart: &CartKey, sku: &str) -> Result<bool, CartStoreError> {
        let removed: i64 = self
            .remove
            .evalsha_with_reload(
                &self.client,
                vec![cart.redis_key()],
                vec![sku.to_string(), self.ttl_seconds()],
            )
            .await?;
        Ok(removed == 1)
    }

    /// Merges guest cart `guest` into `user`'s cart, once: `None` if there
    /// was nothing to merge (already merged), else the lines taken.
    pub async fn merge(
        &self,
        guest: &CartKey,
        user: &CartKey,
    ) -> Result<Option<u32>, CartStoreError> {
        let taken: i64 = self
            .merge
            .evalsha_with_reload(
                &self.client,
                vec![guest.redis_key(), user.redis_key()],
                vec![
                    self.limits.max_quantity.to_string(),
                    self.limits.max_lines.to_string(),
                    self.ttl_seconds(),
                ],
            )
            .await?;
        Ok(u32::try_from(taken).ok())
    }

    /// Empties a cart (after a successful checkout).
    pub async fn clear(&self, cart: &CartKey) -> Result<(), CartStoreError> {
        let _: i64 = self.client.del(cart.redis_key()).await?;
        Ok(())
    }

    /// Seconds the cart has left to live (`None`: no such cart).
    pub async fn ttl(&self, cart: &CartKey) -> Result<Option<i64>, CartStoreError> {
        let ttl: i64 = self.client.ttl(cart.redis_key()).await?;
        Ok((ttl >= 0).then_some(ttl))
    }
}
