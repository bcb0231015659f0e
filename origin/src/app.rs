//! Building and running one origin: [`Application::build`] binds the
//! listener and wires state and background tasks; [`Application::run_until_stopped`]
//! serves until a shutdown future resolves. `main` and the tests go through
//! the same code (tests bind port 0).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::AdminTokens;
use crate::cache::{L2, TieredCache};
use crate::cart::{self, CartContext, CartState, CartStore};
use crate::catalog::{self, CacheHeaders, CatalogContext, CatalogState};
use crate::checkout::{self, CheckoutContext, CheckoutState, Saga};
use crate::config::OriginConfig;
use crate::db::DbRouter;
use crate::discovery::{self, DiscoveryContext, DiscoveryState};
use crate::flash::{self, FlashContext, FlashState, Gate};
use crate::identity::{IdentityError, ShopperAuth};
use crate::invalidation::{self, Tailer};
use crate::inventory::{self, Inventory, InventoryContext, InventoryState};
use crate::metrics::{self, Metrics};
use crate::modes::watcher::Modes;
use crate::modes::{self, ModesContext, ModesState};
use crate::notify_me::{self, NotifyContext, NotifyState, NotifyStore};
use crate::orders::{self, OrdersContext, OrdersState, ShardRouter};
use crate::payments::Payments;
use crate::problem;
use crate::serve;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Db(#[from] crate::db::DbError),
    #[error(transparent)]
    Redis(#[from] crate::cache::l2::L2Error),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Payments(#[from] crate::payments::PaymentsError),
}

/// How long open requests may finish after shutdown begins.
const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The router's state; handlers take the narrow sub-state they need. One
/// `Arc`, because axum clones the state for every request.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

pub struct AppParts {
    pub catalog: CatalogState,
    pub inventory: InventoryState,
    pub cart: CartState,
    pub orders: OrdersState,
    pub checkout: CheckoutState,
    pub flash: FlashState,
    pub modes: ModesState,
    pub notify: NotifyState,
    pub discovery: DiscoveryState,
    pub shoppers: ShopperAuth,
    pub admin: AdminTokens,
    pub metrics: Metrics,
    pub health: HealthState,
}

#[derive(Clone)]
pub struct HealthState(Arc<HealthContext>);

pub struct HealthContext {
    pub db: DbRouter,
    pub l2: Option<L2>,
    pub region: Arc<str>,
    pub modes: Modes,
    /// Set when a stop begins: not ready from then on.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
}

impl FromRef<AppState> for CatalogState {
    fn from_ref(state: &AppState) -> Self {
        state.0.catalog.clone()
    }
}

impl FromRef<AppState> for InventoryState {
    fn from_ref(state: &AppState) -> Self {
        state.0.inventory.clone()
    }
}

impl FromRef<AppState> for CartState {
    fn from_ref(state: &AppState) -> Self {
        state.0.cart.clone()
    }
}

impl FromRef<AppState> for OrdersState {
    fn from_ref(state: &AppState) -> Self {
        state.0.orders.clone()
    }
}

impl FromRef<AppState> for CheckoutState {
    fn from_ref(state: &AppState) -> Self {
        state.0.checkout.clone()
    }
}

impl FromRef<AppState> for FlashState {
    fn from_ref(state: &AppState) -> Self {
        state.0.flash.clone()
    }
}

impl FromRef<AppState> for ModesState {
    fn from_ref(state: &AppState) -> Self {
        state.0.modes.clone()
    }
}

impl FromRef<AppState> for NotifyState {
    fn from_ref(state: &AppState) -> Self {
        state.0.notify.clone()
    }
}

impl FromRef<AppState> for DiscoveryState {
    fn from_ref(state: &AppState) -> Self {
        state.0.discovery.clone()
    }
}

impl FromRef<AppState> for ShopperAuth {
    fn from_ref(state: &AppState) -> Self {
        state.0.shoppers.clone()
    }
}

impl FromRef<AppState> for AdminTokens {
    fn from_ref(state: &AppState) -> Self {
        state.0.admin.clone()
    }
}

impl FromRef<AppState> for Metrics {
    fn from_ref(state: &AppState) -> Self {
        state.0.metrics.clone()
    }
}

impl FromRef<AppState> for HealthState {
    fn from_ref(state: &AppState) -> Self {
        state.0.health.clone()
    }
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    /// Admin API, `/metrics`, `/readyz` (and `/healthz`): operators and
    /// Prometheus only, never the public edge.
    internal_listener: TcpListener,
    internal_router: Router,
    /// Longest a client may take to send a request head.
    head_timeout: std::time::Duration,
    /// Between a stop and the listeners closing: `/readyz` is 503.
    drain_delay: std::time::Duration,
    draining: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl Application {
    /// Validates the config, binds the listener, creates pools and clients
    /// (lazily: no dependency has to be up yet) and starts background tasks.
    pub async fn build(config: OriginConfig) -> Result<Self, StartError> {
        config.validate()?;
        let metrics = Metrics::new(&config.region)?;
        let db = DbRouter::new(&config.database, &config.region, metrics.clone())?;
        let l2 = match &config.redis_url {
            Some(url) => Some(L2::connect(
                url.expose(),
                config.cache.l2_timeout,
                metrics.clone(),
            )?),
            None => None,
        };
        let cache = TieredCache::new(&config.cache, l2.clone(), metrics.clone());
        let shards = config
            .orders
            .as_ref()
            .map(|orders| ShardRouter::new(orders, &config.region, &config.database))
            .transpose()?;
        for shard in shards.iter().flat_map(ShardRouter::shards) {
            metrics.watch_pool("shard", &shard.name, &shard.pool);
        }
        let shoppers = ShopperAuth::new(&config.shoppers, &config.region, config.carts.ttl)?;
        let carts = match &config.redis_url {
            Some(url) => Some(CartStore::connect(
                url.expose(),
                config.carts.redis_timeout,
                cart::store::Limits {
                    ttl: config.carts.ttl,
                    max_lines: config.carts.max_lines,
                    max_quantity: config.carts.max_quantity,
                },
            )?),
            None => None,
        };
        let notify_store = match &config.redis_url {
            Some(url) => Some(NotifyStore::connect(
                url.expose(),
                config.carts.redis_timeout,
            )?),
            None => None,
        };
        let instance = format!("{}-{:016x}", config.region, rand::random::<u64>());
        let shutdown = CancellationToken::new();
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = JoinSet::new();

        tasks.spawn(
            db.clone()
                .run_lag_monitor(config.database.lag_probe_interval, shutdown.clone()),
        );
        let modes = modes::watcher::start(
            modes::watcher::Watch {
                db: db.clone(),
                region: config.region.clone(),
                metrics: metrics.clone(),
                poll_interval: config.modes.poll_interval,
                announcer: l2.clone().map(|l2| modes::watcher::Announcer {
                    l2,
                    instance: instance.clone(),
                }),
            },
            shutdown.clone(),
            &mut tasks,
        );
        let tailer = Tailer {
            db: db.clone(),
            cache: cache.clone(),
            metrics: metrics.clone(),
            instance: instance.clone(),
            poll: config.cache.invalidation_poll,
            modes: modes.clone(),
        };
        tasks.spawn(tailer.run(shutdown.clone()));
        let inventory = Inventory::start(
            db.clone(),
            metrics.clone(),
            config.inventory.max_batch,
            shutdown.clone(),
            &mut tasks,
        );
        let payments = config
            .payments
            .as_ref()
            .map(|payments| Payments::new(payments, metrics.clone()))
            .transpose()?;
        let saga = match (payments, &shards) {
            (Some(payments), Some(shards)) => {
                let saga = Saga {
                    inventory: inventory.clone(),
                    payments,
                    reservation_ttl: config.inventory.reservation_ttl,
                    metrics: metrics.clone(),
                };
                if config.background_workers {
                    tasks.spawn(checkout::recovery::run(
                        saga.clone(),
                        shards.clone(),
                        config.checkout.clone(),
                        metrics.clone(),
                        shutdown.clone(),
                    ));
                }
                Some((saga, shards.clone()))
            }
            _ => None,
        };
        let gate = match &config.redis_url {
            Some(url) => Some(Arc::new(Gate::connect(
                url.expose(),
                config.carts.redis_timeout,
            )?)),
            None => None,
        };
        if let Some(gate) = gate.as_ref().filter(|_| config.background_workers) {
            let worker = flash::worker::Worker {
                gate: gate.clone(),
                db: db.clone(),
                inventory: inventory.clone(),
                region: config.region.clone(),
                consumer: instance.clone(),
                metrics: metrics.clone(),
            };
            tasks.spawn(worker.run(shutdown.clone()));
        }
        if config.background_workers {
            tasks.spawn(inventory::sweeper::run(
                db.clone(),
                metrics.clone(),
                config.inventory.sweep_interval,
                shutdown.clone(),
            ));
            tasks.spawn(inventory::reconcile::run(
                db.clone(),
                metrics.clone(),
                config.inventory.reconcile_interval,
                config.inventory.sweep_interval,
                shutdown.clone(),
            ));
        }
        if let Some(url) = config.redis_url.clone() {
            let subscriber = invalidation::run_subscriber(
                url,
                config.cache.l2_timeout,
                cache.clone(),
                metrics.clone(),
                instance,
                modes.clone(),
                shutdown.clone(),
            );
            tasks.spawn(async move {
                if let Err(error) = subscriber.await {
                    tracing::error!(%error, "invalidation subscriber stopped");
                }
            });
        }

        let region_header = HeaderValue::from_str(&config.region).map_err(|_| {
            crate::config::ConfigError::Invalid {
                field: "region",
                problem: "must be a valid header value".into(),
                layer: None,
            }
        })?;
        let cart_state = CartState::new(CartContext {
            store: carts,
            auth: shoppers.clone(),
            db: db.clone(),
            metrics: metrics.clone(),
        });
        let state = AppState(Arc::new(AppParts {
            notify: NotifyState::new(NotifyContext {
                store: notify_store,
                db: db.clone(),
            }),
            discovery: DiscoveryState::new(DiscoveryContext {
                db: db.clone(),
                modes: modes.clone(),
                region: region_header.clone(),
            }),
            catalog: CatalogState::new(CatalogContext {
                db: db.clone(),
                cache,
                region: region_header,
                headers: CacheHeaders::new(&config.cache),
                fx_ttl: config.cache.fx_ttl,
                debug_headers: config.debug_headers,
            }),
            inventory: InventoryState::new(InventoryContext {
                db: db.clone(),
                inventory,
            }),
            cart: cart_state.clone(),
            flash: FlashState::new(FlashContext {
                gate,
                db: db.clone(),
                region: config.region.clone(),
                metrics: metrics.clone(),
            }),
            checkout: CheckoutState::new(CheckoutContext {
                saga,
                cart: cart_state,
                db: db.clone(),
                config: config.checkout.clone(),
                metrics: metrics.clone(),
            }),
            orders: OrdersState::new(OrdersContext { shards }),
            modes: ModesState::new(ModesContext {
                db: db.clone(),
                region: config.region.clone(),
                retry_after: config.modes.retry_after,
                regions: config.modes.regions.clone(),
                applied: modes.clone(),
            }),
            shoppers,
            admin: AdminTokens::new(config.admin_tokens.clone()),
            metrics: metrics.clone(),
            health: HealthState(Arc::new(HealthContext {
                db,
                l2,
                region: config.region.clone().into(),
                modes,
                draining: draining.clone(),
            })),
        }));
        let router = public_routes(state.clone(), config.max_body_bytes);
        let internal_router = internal_routes(state, config.max_body_bytes, config.admin_api);
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })
        };
        let listener = bind(config.listen).await?;
        let internal_listener = bind(config.internal_listen).await?;
        Ok(Application {
            listener,
            router,
            internal_listener,
            internal_router,
            head_timeout: config.request_head_timeout,
            drain_delay: config.drain_delay,
            draining,
            shutdown,
            tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The internal listener's address (admin, metrics, readiness).
    pub fn internal_addr(&self) -> SocketAddr {
        self.internal_listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until `stop` resolves; then `/readyz` answers 503 for
    /// `drain_delay` while both listeners still serve, then the listeners
    /// close, open requests finish and the background tasks stop.
    pub async fn run_until_stopped(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartError> {
        let Application {
            listener,
            router,
            internal_listener,
            internal_router,
            head_timeout,
            drain_delay,
            draining,
            shutdown,
            mut tasks,
        } = self;
        let stop = async move {
            stop.await;
            draining.store(true, std::sync::atomic::Ordering::Relaxed);
            if !drain_delay.is_zero() {
                tracing::info!(
                    ?drain_delay,
                    "draining: not ready, listeners close after the delay"
                );
                tokio::time::sleep(drain_delay).await;
            }
        };
        // The internal listener drains with the public one: `stop` ends
        // the public server, whose end cancels `shutdown`.
        let internal_stop = shutdown.clone();
        let internal = tokio::spawn(serve::serve(
            internal_listener,
            internal_router,
            head_timeout,
            DRAIN,
            async move { internal_stop.cancelled().await },
        ));
        serve::serve(listener, router, head_timeout, DRAIN, stop).await;
        shutdown.cancel();
        if let Err(error) = internal.await {
            tracing::warn!(%error, "internal listener task failed");
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// The public listener: shopper routes, `/v1/modes` (the edges poll it)
/// and `/healthz` (the edges' health checks). Nothing else.
pub fn public_routes(state: AppState, max_body_bytes: usize) -> Router {
    let routes = Router::new()
        .merge(catalog::router())
        .merge(inventory::router())
        .merge(cart::router(max_body_bytes))
        .merge(orders::router())
        .merge(checkout::router(max_body_bytes))
        .merge(flash::router())
        .merge(modes::router())
        .merge(notify_me::router(max_body_bytes))
        .merge(discovery::router())
        .route("/healthz", get(healthz));
    finish(routes, state)
}

/// The internal listener: the admin API (with `admin_api`), `/metrics`,
/// `/readyz`, `/healthz`.
pub fn internal_routes(state: AppState, max_body_bytes: usize, admin_api: bool) -> Router {
    let mut routes = Router::new();
    if admin_api {
        routes = routes
            .merge(catalog::admin_router(max_body_bytes))
            .merge(inventory::admin_router(max_body_bytes))
            .merge(flash::admin_router(max_body_bytes))
            .merge(modes::admin_router(max_body_bytes))
            .merge(notify_me::admin_router());
    }
    let routes = routes
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(crate::openapi::serve));
    finish(routes, state)
}

/// What both listeners share: problem answers for unknown routes and
/// methods, request metrics, panics caught, and (outermost, so a panic's
/// 500 is logged too) trace context, request id and access log.
fn finish(routes: Router<AppState>, state: AppState) -> Router {
    let region = state.0.health.0.region.clone();
    routes
        .fallback(problem::not_found)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(metrics::HttpMetricsLayer::new(state.0.metrics.clone()))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                problem::ApiError::Internal("handler panicked".into()).into_response()
            },
        ))
        .layer(crate::telemetry::RequestTelemetryLayer::new(&region))
        .with_state(state)
}

#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "The process is up (both listeners)", body = serde_json::Value)))]
pub(crate) async fn healthz() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(serde_json::json!({ "status": "ok" })),
    )
}

/// Ready when catalog reads have a path: a usable replica or the primary.
/// Redis is reported but optional (without it reads are slower, not broken).
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "Ready: catalog reads have a path (internal listener)", body = serde_json::Value),
        (status = 503, description = "Not ready", body = serde_json::Value)))]
pub(crate) async fn readyz(State(HealthState(health)): State<HealthState>) -> Response {
    let replicas: Vec<serde_json::Value> = health
        .db
        .replicas()
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "usable": r.state.usable(),
                "lag_seconds": r.state.lag().as_secs_f64(),
            })
        })
        .collect();
    let any_replica = health.db.replicas().iter().any(|r| r.state.usable());
    let primary = health.db.primary_reachable().await;
    let redis = health.l2.as_ref().map(L2::is_available);
    let draining = health.draining.load(std::sync::atomic::Ordering::Relaxed);
    let ready = (any_replica || primary) && !draining;
    let applied = health.modes.current();
    let body = serde_json::json!({
        "ready": ready,
        "draining": draining,
        "region": &*health.region,
        "primary": primary,
        "replicas": replicas,
        "redis": redis,
        // A process that cannot read the mode table runs on its last known
        // setting (`stale`); it stays ready.
        "modes": {
            "mode": applied.effective.mode,
            "features": applied.effective.features,
            "loaded": applied.loaded,
            "stale": applied.stale,
            "changed_at_ms": applied.changed_at_ms,
        },
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(body),
    )
        .into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition (internal listener)", content_type = "text/plain", body = String)))]
pub(crate) async fn metrics_text(State(metrics): State<Metrics>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}
