//! [`EdgeServer`]: builds the pingora server for one edge from its config
//! (proxy service with plain and TLS listeners, health checks, admin API,
//! purge listener, mode follower), then runs it until a shutdown signal.
//!
//! The same path serves `meridian edge --config FILE`, `meridian up` (one
//! process per region) and the tests (in-process, stopped through a
//! channel).

use std::net::TcpListener as StdListener;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use pingora::apps::HttpServerOptions;
use pingora::listeners::ListenerConfig;
use pingora::listeners::tls::TlsSettings;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::admin::{AdminService, AdminState};
use crate::bots::BotScorer;
use crate::cache::EdgeCache;
use crate::config::{EdgeConfig, RedisUrl};
use crate::connection_cap::ConnectionCap;
use crate::geo::Geo;
use crate::head_deadline::HeadDeadline;
use crate::identity::Identity;
use crate::metrics::EdgeMetrics;
use crate::modes::{EdgeModes, ModesFollower};
use crate::proxy::EdgeProxy;
use crate::proxy::routing::Router;
use crate::purge_listener::PurgeListener;
use crate::rate_limiting::budget::CheckoutBudget;
use crate::rate_limiting::{LimitsMaintenance, RateLimits};
use crate::upstream::build_pools;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Geo(#[from] crate::geo::GeoError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error("checkout budget Redis client: {0}")]
    Redis(String),
    #[error("metrics registry: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("admin listener {addr}: {source}")]
    AdminBind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS certificate or key: {0}")]
    Tls(String),
    #[error("bot signatures: {0}")]
    Bots(#[from] aho_corasick::BuildError),
    #[error("cannot start the edge thread: {0}")]
    Thread(std::io::Error),
}

/// A built edge, ready to run.
pub struct EdgeServer {
    server: Server,
    pub cache: EdgeCache,
    /// Set when a graceful stop begins: `/readyz` answers 503.
    draining: Arc<AtomicBool>,
    drain_delay: std::time::Duration,
}

impl EdgeServer {
    pub fn build(config: EdgeConfig) -> Result<Self, StartError> {
        let conf = ServerConf {
            threads: config.threads,
            work_stealing: config.work_stealing,
            grace_period_seconds: Some(config.grace_period_seconds),
            graceful_shutdown_timeout_seconds: Some(config.grace_period_seconds),
            ..ServerConf::default()
        };
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();

        let cache = EdgeCache::new(&config.cache);
        let metrics = Arc::new(EdgeMetrics::new(&config.region, config.upstreams.len())?);
        let (pools, health_services) = build_pools(&config);
        let regions = config.failover_order();
        let latency: Vec<Vec<Option<u32>>> = regions
            .iter()
            .enumerate()
            .map(|(a, from)| {
                regions
                    .iter()
                    .map(|to| match a {
                        _ if from.name == to.name => Some(0),
                        0 => Some(to.latency_ms),
                        _ => from.latency_ms_to.get(&to.name).copied(),
                    })
                    .collect()
            })
            .collect();
        let countries: Vec<Vec<String>> = regions.iter().map(|r| r.countries.clone()).collect();
        let geo = Geo::new(&config.geo, &countries)?;
        let identity = config.identity.as_ref().map(Identity::new).transpose()?;
        let router = Arc::new(Router::new(
            pools,
            &latency,
            config.health.connect_timeout,
            config.health.read_timeout,
        ));

        let modes = Arc::new(EdgeModes::new(
            &config.region,
            metrics.clone(),
            config.modes.state_path.clone(),
        ));
        let modes_wake = Arc::new(tokio::sync::Notify::new());
        let own_origins = config
            .upstreams
            .iter()
            .find(|u| u.name == config.region)
            .map(|u| u.origins.clone())
            .unwrap_or_default();
        server.add_service(background_service(
            "modes",
            ModesFollower {
                modes: modes.clone(),
                origins: own_origins,
                poll_interval: config.modes.poll_interval,
                wake: modes_wake.clone(),
                cache,
            },
        ));

        let rate_limits = Arc::new(RateLimits::new(&config.limits));
        metrics.precreate(&crate::metrics::KnownLabels {
            upstreams: config.upstreams.iter().map(|u| u.name.as_str()).collect(),
            policies: rate_limits.policies(),
        });
        let budget = config
            .limits
            .checkout_budget
            .as_ref()
            .map(|b| {
                CheckoutBudget::new(b, config.redis_url.as_ref().map(RedisUrl::expose))
                    .map(Arc::new)
            })
            .transpose()
            .map_err(|e| StartError::Redis(e.to_string()))?;
        let waiting_room = config
            .waiting_room
            .as_ref()
            .map(|room| {
                crate::waiting_room::WaitingRoom::new(
                    room,
                    config.redis_url.as_ref().map(RedisUrl::expose),
                )
                .map(Arc::new)
            })
            .transpose()
            .map_err(|e| StartError::Redis(e.to_string()))?;
        server.add_service(background_service(
            "limits",
            LimitsMaintenance {
                limits: rate_limits.clone(),
                budget: budget.clone(),
                waiting_room: waiting_room.clone(),
            },
        ));
        let proxy = EdgeProxy {
            region: config.region.clone(),
            cache,
            router: router.clone(),
            metrics: metrics.clone(),
            debug_headers: config.debug_headers,
            geo,
            identity,
            rate_limits,
            bots: config.bots.as_ref().map(BotScorer::new).transpose()?,
            budget,
            modes: modes.clone(),
            mode_rules: crate::proxy::mode_rules::ModeRules::new(&config.modes),
            waiting_room: waiting_room.clone(),
            limits: crate::proxy::request_filters::RequestLimits {
                max_header_bytes: config.max_request_header_bytes,
                max_headers: config.max_request_headers,
            },
        };
        let mut app = pingora::proxy::http_proxy(&server.configuration, proxy);
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        app.server_options = Some(options);
        let mut service = Service::new(
            "edge".to_string(),
            HeadDeadline::new(app, config.request_head_timeout, metrics.clone()),
        );
        if config.max_connections_per_address > 0 {
            let ports = std::iter::once(config.listen.port())
                .chain(config.tls.as_ref().map(|tls| tls.listen.port()))
                .collect();
            service.set_connection_filter(Arc::new(ConnectionCap::new(
                config.max_connections_per_address,
                ports,
                metrics.clone(),
            )));
        }
        // Larger than a typical cached response, so header and body leave
        // in one `send()` (pingora's default, 1,460 bytes, splits a ~2 KiB
        // response into two segments).
        let buffers = L4BufferSettings::default().write(config.write_buffer_bytes);
        service.add_listener(ListenerConfig::tcp(config.listen.to_string()).l4_buffer(buffers));
        if let Some(tls) = &config.tls {
            let cert = tls.cert.display().to_string();
            let key = tls.key.display().to_string();
            let mut settings = TlsSettings::intermediate(&cert, &key)
                .map_err(|e| StartError::Tls(e.to_string()))?;
            settings.enable_h2();
            service.add_listener(
                ListenerConfig::tcp(tls.listen.to_string())
                    .tls(settings)
                    .l4_buffer(buffers),
            );
        }
        server.add_service(service);
        for health in health_services {
            server.add_service(health);
        }

        let purge_listener = config.redis_url.as_ref().map(|url| {
            let subscribed = Arc::new(AtomicBool::new(false));
            let listener = PurgeListener {
                redis_url: url.clone(),
                channel: config.purge_channel.clone(),
                cache,
                metrics: metrics.clone(),
                subscribed: subscribed.clone(),
                modes_wake: modes_wake.clone(),
            };
            server.add_service(background_service("purge listener", listener));
            subscribed
        });

        let admin_listener =
            StdListener::bind(config.admin_listen).map_err(|source| StartError::AdminBind {
                addr: config.admin_listen,
                source,
            })?;
        admin_listener
            .set_nonblocking(true)
            .map_err(|source| StartError::AdminBind {
                addr: config.admin_listen,
                source,
            })?;
        let draining = Arc::new(AtomicBool::new(false));
        let admin = AdminService::new(
            admin_listener,
            AdminState {
                region: config.region.clone(),
                cache,
                router,
                metrics,
                tokens: config
                    .admin_tokens
                    .iter()
                    .map(|t| t.token.clone())
                    .collect(),
                purge_listener,
                modes,
                public_listeners: std::iter::once(config.listen)
                    .chain(config.tls.as_ref().map(|tls| tls.listen))
                    .collect(),
                draining: draining.clone(),
            },
        );
        server.add_service(background_service("admin", admin));
        Ok(Self {
            server,
            cache,
            draining,
            drain_delay: config.drain_delay,
        })
    }

    /// Serves until `shutdown` fires (SIGTERM/SIGINT for the binary). A
    /// graceful stop (SIGTERM) first drains: `/readyz` turns 503 while the
    /// listeners keep accepting for `drain_delay`, then they close and
    /// in-flight requests get the grace period.
    pub fn run(self, shutdown: impl ShutdownSignalWatch + Send + Sync + 'static) {
        self.server.run(RunArgs {
            shutdown_signal: Box::new(Draining {
                inner: shutdown,
                draining: self.draining,
                delay: self.drain_delay,
            }),
        });
    }
}

/// A shutdown signal that, on a graceful stop, marks the edge draining and
/// waits `delay` before pingora closes the listeners.
struct Draining<W> {
    inner: W,
    draining: Arc<AtomicBool>,
    delay: std::time::Duration,
}

#[async_trait::async_trait]
impl<W: ShutdownSignalWatch + Send + Sync> ShutdownSignalWatch for Draining<W> {
    async fn recv(&self) -> pingora::server::ShutdownSignal {
        let signal = self.inner.recv().await;
        if matches!(signal, pingora::server::ShutdownSignal::GracefulTerminate) {
            self.draining
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(delay = ?self.delay, "draining: not ready, listeners close after the delay");
            tokio::time::sleep(self.delay).await;
        }
        signal
    }
}

/// A shutdown signal fired by dropping (or using) a [`StopHandle`]: how
/// tests and embedders stop an edge running on its own thread.
struct ChannelShutdown(parking_lot::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>);

#[async_trait::async_trait]
impl ShutdownSignalWatch for ChannelShutdown {
    async fn recv(&self) -> pingora::server::ShutdownSignal {
        let receiver = self.0.lock().take();
        if let Some(receiver) = receiver {
            // Fired or dropped: either way, stop.
            let _ = receiver.await;
        } else {
            std::future::pending::<()>().await;
        }
        pingora::server::ShutdownSignal::FastShutdown
    }
}

/// How long dropping a [`RunningEdge`] waits for pingora to stop.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// An edge running on a background thread; dropping it stops the edge and
/// waits (up to 5 s) for its thread. pingora's single-threaded runtimes
/// sometimes never finish shutting down (a listener task misses the stop);
/// the thread is then left behind rather than hanging the caller.
pub struct RunningEdge {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stopped: std::sync::mpsc::Receiver<()>,
    pub cache: EdgeCache,
}

impl EdgeServer {
    /// Builds and runs the edge on its own thread (tests, benchmarks).
    pub fn spawn(config: EdgeConfig) -> Result<RunningEdge, StartError> {
        let edge = Self::build(config)?;
        let cache = edge.cache;
        let (stop, receiver) = tokio::sync::oneshot::channel();
        let shutdown = ChannelShutdown(parking_lot::Mutex::new(Some(receiver)));
        let (done, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("edge".into())
            .spawn(move || {
                edge.run(shutdown);
                let _ = done.send(());
            })
            .map_err(StartError::Thread)?;
        Ok(RunningEdge {
            stop: Some(stop),
            thread: Some(thread),
            stopped,
            cache,
        })
    }
}

impl Drop for RunningEdge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.stopped.recv_timeout(STOP_WAIT) {
            Ok(()) => {
                if let Some(thread) = self.thread.take() {
                    let _ = thread.join();
                }
            }
            Err(_) => {
                tracing::warn!("the edge did not stop within {STOP_WAIT:?}; leaving its thread")
            }
        }
    }
}
