//! `ShardRouter`: a region's order-shard databases and the map that says
//! which one holds a user's orders (`meridian_topology::shard_map`: jump
//! hash of the user id over fixed buckets, buckets to shards). An order id
//! names its shard, so an order is found without knowing its user.
//!
//! Pools connect lazily: a shard that is down fails only the requests of
//! its own users (503), the other shards serve on.

use std::str::FromStr;
use std::sync::Arc;

use meridian_topology::shard_map::ShardMap;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::model::OrderId;
use crate::config::{DatabaseConfig, OrdersConfig};
use crate::db::DbError;
use crate::identity::UserId;

/// The embedded migrations of an order shard.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations_orders");

/// Runs the shard migrations on the database at `url`.
pub async fn migrate(url: &str) -> Result<(), DbError> {
    crate::db::run_migrations(&MIGRATOR, url, "order shard").await
}

/// One order shard.
#[derive(Debug)]
pub struct Shard {
    pub name: String,
    pub pool: PgPool,
}

#[derive(Clone)]
pub struct ShardRouter(Arc<Inner>);

struct Inner {
    map: ShardMap,
    /// In map order (`ShardMap::names`).
    shards: Vec<Shard>,
}

impl ShardRouter {
    /// Pools per shard, with the catalog database's acquire, statement and
    /// lock timeouts.
    pub fn new(
        config: &OrdersConfig,
        region: &str,
        database: &DatabaseConfig,
    ) -> Result<Self, DbError> {
        let timeouts = database.session_timeouts();
        let timeouts = timeouts.iter().map(|(k, v)| (*k, v.as_str()));
        let map = config.shard_map().map_err(|e| DbError::Url {
            which: "orders".into(),
            source: sqlx::Error::Configuration(Box::new(e)),
        })?;
        let mut shards = Vec::with_capacity(map.names().len());
        for name in map.names() {
            let Some(shard) = config.shards.iter().find(|s| &s.name == name) else {
                continue;
            };
            let options = PgConnectOptions::from_str(shard.url.expose())
                .map_err(|source| DbError::Url {
                    which: format!("order shard {name}"),
                    source,
                })?
                .application_name(&format!("meridian-origin-{region}-{name}"))
                .options(crate::db::GENERIC_PLANS)
                .options(timeouts.clone());
            let pool = PgPoolOptions::new()
                .max_connections(config.pool_size)
                .acquire_timeout(database.acquire_timeout)
                .test_before_acquire(false)
                .connect_lazy_with(options);
            shards.push(Shard {
                name: name.clone(),
                pool,
            });
        }
        Ok(ShardRouter(Arc::new(Inner { map, shards })))
    }

    /// The shard holding `user`'s orders.
    pub fn for_user(&self, user: &UserId) -> &Shard {
        let name = self.0.map.shard_of_user(user.as_str());
        self.named(name)
            // `new` made one shard per name of the map.
            .unwrap_or_else(|| unreachable!("every shard of the map has a pool"))
    }

    /// The shard an order id names, if it is one of this region's.
    pub fn for_order(&self, id: &OrderId) -> Option<&Shard> {
        self.named(id.shard())
    }

    pub fn named(&self, name: &str) -> Option<&Shard> {
        self.0.shards.iter().find(|s| s.name == name)
    }

    pub fn shards(&self) -> &[Shard] {
        &self.0.shards
    }
}
