//! `DbRouter`: PostgreSQL reads and writes routed by operation type.
//!
//! - [`DbRouter::read`] gives a [`ReadDb`], which can only reach this
//!   region's replicas, or the primary through a pool whose sessions are
//!   `default_transaction_read_only` when no replica is usable.
//! - [`DbRouter::write`] gives a [`WriteDb`], the only handle on the
//!   primary's writable pool. Query functions say which one they take, so a
//!   handler cannot write through a read handle by mistake.
//! - [`lag`] measures every replica against the primary in the background;
//!   a replica that is down or further behind than the tolerance is skipped
//!   until it recovers.
//! - Read-your-writes: a write returns its commit [`Lsn`]; a read given that
//!   token is served only by a replica known to have replayed it, else by
//!   the primary.
//! - Timing: `meridian_db_query_duration_seconds{pool, purpose}` gets one
//!   observation per attempt of a read on one server ([`ReadDb::run`]: the
//!   connection acquired and everything the read runs on it, a failed
//!   attempt that fails over included) and one per write transaction
//!   ([`WriteTx`]: from acquiring the connection and `BEGIN` to `COMMIT`
//!   acknowledged, or to its rollback). Its count therefore follows
//!   `meridian_db_queries_total` summed over servers (less the work still
//!   in flight). The router's own bookkeeping (the lag probe, token
//!   checks, `/readyz`'s ping, the LSN read after a commit) is not
//!   observed.

pub mod lag;
pub mod lsn;

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::config::DatabaseConfig;
use crate::metrics::Metrics;
pub use lsn::Lsn;

/// Session settings of every origin connection. Every query is a key or
/// index look-up (written so that a generic plan probes indexes) prepared
/// once per connection: planning it again for each execution (1.2 ms for
/// the price look-up, planner functions prominent in a `perf` profile of
/// the checkout benchmark) buys nothing.
pub const GENERIC_PLANS: [(&str, &str); 1] = [("plan_cache_mode", "force_generic_plan")];

/// The embedded migrations of the catalog schema.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL for {which}: {source}")]
    Url {
        which: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
}

/// Runs the catalog migrations on the primary.
pub async fn migrate(primary_url: &str) -> Result<(), DbError> {
    run_migrations(&MIGRATOR, primary_url, "primary").await
}

/// Runs `migrator` on the database at `url` (`which` names it in errors).
pub async fn run_migrations(
    migrator: &sqlx::migrate::Migrator,
    url: &str,
    which: &str,
) -> Result<(), DbError> {
    let options = PgConnectOptions::from_str(url).map_err(|source| DbError::Url {
        which: which.into(),
        source,
    })?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    migrator.run(&pool).await?;
    pool.close().await;
    Ok(())
}

/// Health and lag of one replica as last measured (lock-free).
#[derive(Debug, Default)]
pub struct ReplicaState {
    up: AtomicBool,
    within_tolerance: AtomicBool,
    lag_micros: AtomicU64,
    replayed: AtomicU64,
}

impl ReplicaState {
    pub fn usable(&self) -> bool {
        self.up.load(Ordering::Acquire) && self.within_tolerance.load(Ordering::Acquire)
    }

    pub fn replayed(&self) -> Lsn {
        Lsn(self.replayed.load(Ordering::Acquire))
    }

    pub fn lag(&self) -> Duration {
        Duration::from_micros(self.lag_micros.load(Ordering::Acquire))
    }

    fn mark_down(&self) {
        self.up.store(false, Ordering::Release);
    }
}

#[derive(Debug)]
pub struct Replica {
    pub name: String,
    pool: PgPool,
    pub state: ReplicaState,
}

struct Inner {
    primary: PgPool,
    primary_read_only: PgPool,
    replicas: Vec<Replica>,
    tolerance: Duration,
    next: AtomicUsize,
    metrics: Metrics,
    /// The highest primary WAL position this process has seen (lag
    /// probes, its own commits, token checks): read-your-writes tokens up
    /// to here are real.
    primary_lsn: AtomicU64,
    /// One look-up of the primary's position at a time, however many
    /// requests carry a token from beyond what is known.
    lsn_refresh: tokio::sync::Mutex<()>,
}

/// Routes catalog queries: reads to replicas, writes to the primary.
#[derive(Clone)]
pub struct DbRouter {
    inner: Arc<Inner>,
}

/// Which server answered a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServedBy {
    Replica(String),
    Primary,
}

impl DbRouter {
    /// Creates the pools. Connections are opened lazily, so an origin starts
    /// (and serves from what is up) even while a replica is down.
    pub fn new(config: &DatabaseConfig, region: &str, metrics: Metrics) -> Result<Self, DbError> {
        let options = |which: &str, url: &str| {
            PgConnectOptions::from_str(url)
                .map(|o| {
                    o.application_name(&format!("meridian-origin-{region}-{which}"))
                        .options(GENERIC_PLANS)
                        .options(
                            config
                                .session_timeouts()
                                .iter()
                                .map(|(k, v)| (*k, v.as_str())),
                        )
                })
                .map_err(|source| DbError::Url {
                    which: which.to_string(),
                    source,
                })
        };
        let pool_options = || {
            PgPoolOptions::new()
                .max_connections(config.pool_size)
                .acquire_timeout(config.acquire_timeout)
                // A dead connection is detected by the query that uses it,
                // and reads fail over; a ping before every query would cost a
                // round trip on the hot path.
                .test_before_acquire(false)
        };
        let primary_options = options("primary", config.primary_url.expose())?;
        let primary = pool_options().connect_lazy_with(primary_options.clone());
        let primary_read_only = pool_options()
            .connect_lazy_with(primary_options.options([("default_transaction_read_only", "on")]));
        let mut replicas = Vec::new();
        for replica in &config.replicas {
            let pool =
                pool_options().connect_lazy_with(options(&replica.name, replica.url.expose())?);
            replicas.push(Replica {
                name: replica.name.clone(),
                pool,
                state: ReplicaState::default(),
            });
        }
        metrics
            .replica_lag_tolerance
            .set(config.lag_tolerance.as_secs_f64());
        metrics.watch_pool("primary", "primary", &primary);
        metrics.watch_pool("primary", "primary-ro", &primary_read_only);
        for replica in &replicas {
            metrics.watch_pool("replica", &replica.name, &replica.pool);
        }
        Ok(DbRouter {
            inner: Arc::new(Inner {
                primary,
                primary_read_only,
                replicas,
                tolerance: config.lag_tolerance,
                next: AtomicUsize::new(0),
                metrics,
                primary_lsn: AtomicU64::new(0),
                lsn_refresh: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// Records a primary WAL position seen (monotonic).
    pub(crate) fn saw_primary_lsn(&self, lsn: Lsn) {
        self.inner.primary_lsn.fetch_max(lsn.0, Ordering::AcqRel);
    }

    /// Checks a read-your-writes token: a position the primary has not
    /// reached is no write's token (a forged one would send every read
    /// past every cache to the primary), so it is refused. A token beyond
    /// what this process knows costs one look-up on the primary, shared
    /// by every request waiting on one. When the primary cannot be asked,
    /// the token is given the benefit of the doubt.
    pub async fn check_token(&self, lsn: Lsn) -> Result<(), TokenError> {
        let known = || Lsn(self.inner.primary_lsn.load(Ordering::Acquire));
        if lsn <= known() {
            return Ok(());
        }
        let _single = self.inner.lsn_refresh.lock().await;
        if lsn <= known() {
            return Ok(());
        }
        let current = tokio::time::timeout(
            TOKEN_CHECK_TIMEOUT,
            sqlx::query_scalar!(r#"select pg_current_wal_insert_lsn()::text as "lsn!""#)
                .fetch_one(&self.inner.primary_read_only),
        )
        .await;
        match current {
            Ok(Ok(text)) => {
                if let Ok(current) = text.parse::<Lsn>() {
                    self.saw_primary_lsn(current);
                }
                if lsn <= known() {
                    Ok(())
                } else {
                    Err(TokenError::Beyond { primary: known() })
                }
            }
            _ => Ok(()),
        }
    }

    /// A read handle: replicas within tolerance, the primary as fallback.
    pub fn read(&self) -> ReadDb<'_> {
        self.read_after(None)
    }

    /// A read handle that only uses servers that have replayed `lsn`.
    pub fn read_after(&self, lsn: Option<Lsn>) -> ReadDb<'_> {
        ReadDb {
            router: self,
            min_lsn: lsn,
            purpose: Purpose::Request,
            primary_only: false,
        }
    }

    /// A read handle for background work (counted apart from requests).
    pub fn read_background(&self) -> ReadDb<'_> {
        ReadDb {
            router: self,
            min_lsn: None,
            purpose: Purpose::Background,
            primary_only: false,
        }
    }

    /// A read handle on the primary only (read-only sessions), for reads
    /// that must see the latest commit — checkout's prices.
    pub fn read_primary(&self) -> ReadDb<'_> {
        ReadDb {
            router: self,
            min_lsn: None,
            purpose: Purpose::Request,
            primary_only: true,
        }
    }

    /// The write handle: the primary's writable pool.
    pub fn write(&self) -> WriteDb<'_> {
        WriteDb {
            router: self,
            purpose: Purpose::Request,
        }
    }

    /// The write handle for background work (counted apart from requests).
    pub fn write_background(&self) -> WriteDb<'_> {
        WriteDb {
            router: self,
            purpose: Purpose::Background,
        }
    }

    pub fn replicas(&self) -> &[Replica] {
        &self.inner.replicas
    }

    pub fn tolerance(&self) -> Duration {
        self.inner.tolerance
    }

    /// Whether the primary answers a trivial query (for `/readyz`).
    pub async fn primary_reachable(&self) -> bool {
        sqlx::query!("select 1 as one")
            .fetch_one(&self.inner.primary_read_only)
            .await
            .is_ok()
    }
}

/// A connection source for reads: a replica pool, or the primary's
/// read-only pool. Query functions that only read take `&ReadConn`.
#[derive(Clone)]
pub struct ReadConn(PgPool);

impl ReadConn {
    pub fn pool(&self) -> &PgPool {
        &self.0
    }
}

/// Why a query runs: the `purpose` label of `meridian_db_queries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Request,
    Background,
}

impl Purpose {
    fn label(self) -> &'static str {
        match self {
            Purpose::Request => "request",
            Purpose::Background => "background",
        }
    }
}

/// Counts one unit of work in `meridian_db_queries_total`, observes the
/// time from its creation to its drop in
/// `meridian_db_query_duration_seconds`, and, for requests, spans it as
/// `db.query` in the request's trace (while traces are exported).
struct QueryTimer {
    histogram: prometheus::Histogram,
    started: Instant,
    _span: tracing::Span,
}

impl QueryTimer {
    fn start(metrics: &Metrics, pool: &'static str, server: &str, purpose: Purpose) -> Self {
        metrics
            .db_queries
            .with_label_values(&[pool, server, purpose.label()])
            .inc();
        let span = match purpose {
            Purpose::Request => tracing::info_span!(
                target: meridian_telemetry::SPAN_TARGET,
                "db.query",
                otel.kind = "client",
                db.system.name = "postgresql",
                meridian.db.pool = pool,
            ),
            Purpose::Background => tracing::Span::none(),
        };
        QueryTimer {
            histogram: metrics
                .db_query_duration
                .with_label_values(&[pool, purpose.label()]),
            started: Instant::now(),
            _span: span,
        }
    }
}

impl Drop for QueryTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

/// The read side of [`DbRouter`].
pub struct ReadDb<'a> {
    router: &'a DbRouter,
    min_lsn: Option<Lsn>,
    purpose: Purpose,
    primary_only: bool,
}

impl ReadDb<'_> {
    /// The same handle, counted as background work.
    pub fn background(mut self) -> Self {
        self.purpose = Purpose::Background;
        self
    }

    /// Runs `op` on the first usable server: replicas in round-robin order,
    /// then the primary. A connection-level failure on a replica marks it
    /// down and the read moves on to the next server, so a replica dying
    /// mid-flight costs a retry, not a failed request.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<(T, ServedBy), sqlx::Error>
    where
        F: Fn(ReadConn) -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let inner = &self.router.inner;
        let count = if self.primary_only {
            0
        } else {
            inner.replicas.len()
        };
        let start = if count > 0 {
            inner.next.fetch_add(1, Ordering::Relaxed) % count
        } else {
            0
        };
        for offset in 0..count {
            let replica = &inner.replicas[(start + offset) % count];
            if !replica.state.usable() {
                continue;
            }
            if let Some(min) = self.min_lsn
                && replica.state.replayed() < min
            {
                continue;
            }
            let timer = QueryTimer::start(
                &inner.metrics,
                "replica",
                replica.name.as_str(),
                self.purpose,
            );
            let result = op(ReadConn(replica.pool.clone())).await;
            drop(timer);
            match result {
                Ok(value) => return Ok((value, ServedBy::Replica(replica.name.clone()))),
                Err(error) if is_failover_error(&error) => {
                    tracing::warn!(replica = %replica.name, %error, "replica failed; failing over");
                    replica.state.mark_down();
                    inner
                        .metrics
                        .replica_usable
                        .with_label_values(&[replica.name.as_str()])
                        .set(0);
                }
                Err(error) => return Err(error),
            }
        }
        let timer = QueryTimer::start(&inner.metrics, "primary", "primary", self.purpose);
        let value = op(ReadConn(inner.primary_read_only.clone())).await;
        drop(timer);
        Ok((value?, ServedBy::Primary))
    }
}

/// The write side of [`DbRouter`]: the primary only.
pub struct WriteDb<'a> {
    router: &'a DbRouter,
    purpose: Purpose,
}

impl WriteDb<'_> {
    /// A transaction on the primary; its time until it ends is observed
    /// (see [`WriteTx`]), a failed `BEGIN` included.
    pub async fn begin(&self) -> Result<WriteTx, sqlx::Error> {
        let timer = QueryTimer::start(
            &self.router.inner.metrics,
            "primary",
            "primary",
            self.purpose,
        );
        let tx = self.router.inner.primary.begin().await?;
        Ok(WriteTx { tx, _timer: timer })
    }

    /// Commits `tx` and returns a WAL position at or after its commit
    /// record: the read-your-writes token.
    pub async fn commit(&self, tx: WriteTx) -> Result<Lsn, sqlx::Error> {
        tx.commit().await?;
        let text = sqlx::query_scalar!(r#"select pg_current_wal_insert_lsn()::text as "lsn!""#)
            .fetch_one(&self.router.inner.primary)
            .await?;
        let lsn = text
            .parse::<Lsn>()
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        self.router.saw_primary_lsn(lsn);
        Ok(lsn)
    }
}

/// A write transaction on the primary, from [`WriteDb::begin`]. It derefs
/// to its connection (queries take `&mut *tx`) and ends with
/// [`WriteTx::commit`], [`WriteTx::rollback`] or its drop (rolled back);
/// its time from begin to that end is one observation of
/// `meridian_db_query_duration_seconds{pool="primary"}`.
pub struct WriteTx {
    // Dropped first: a dropped transaction is rolled back, then timed.
    tx: Transaction<'static, Postgres>,
    _timer: QueryTimer,
}

impl WriteTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let WriteTx { tx, _timer } = self;
        tx.commit().await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        let WriteTx { tx, _timer } = self;
        tx.rollback().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// How long a token check waits for the primary's position.
const TOKEN_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// A read-your-writes token that no write produced.
#[derive(Debug, Clone, Copy, thiserror::Error)]
pub enum TokenError {
    #[error("the position is beyond the primary's current WAL position ({primary})")]
    Beyond { primary: Lsn },
}

/// Errors that say "this server is unreachable or cannot serve now", as
/// opposed to an error in the query itself.
pub fn is_failover_error(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03
            // cannot_connect_now, 40001 conflict with recovery on a standby.
            matches!(
                db.code().as_deref(),
                Some("57P01" | "57P02" | "57P03" | "40001")
            )
        }
        _ => false,
    }
}
