//! The operating mode this edge applies ([`EdgeModes`]) and how it follows
//! the region's setting ([`ModesFollower`]). The edge never reads the mode
//! table and never believes a message on Redis: its region's origins
//! announce every setting they apply on the regional invalidation
//! channel, and an announcement (or the key `modes`) only wakes the
//! follower, which reads the setting from an origin's `GET /v1/modes` —
//! the state of record. The follower also polls at start and every
//! `modes.poll_interval`. The newest setting wins (by when its row was
//! written), so a lagging origin cannot turn the clock back, and a setting
//! dated more than [`MAX_CLOCK_SKEW_MS`] ahead of this edge's clock is
//! refused.
//!
//! The applied setting is kept in `modes.state_path`, so a restarted edge
//! starts in its last known mode even while no origin answers; a follower
//! that reaches no origin keeps that setting and reports it as stale
//! (`/readyz`, `meridian_edge_modes_stale`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use meridian_contracts::modes::{Announcement, Effective, Feature, Mode};
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::cache::{EdgeCache, PurgeTarget};
use crate::metrics::EdgeMetrics;

/// How far ahead of this edge's clock a setting's `changed_at_ms` may be
/// (clocks of origins and edges differ a little; a forged date a lot).
pub const MAX_CLOCK_SKEW_MS: i64 = 5_000;

/// The surrogate key of responses that depend on the mode.
pub const MODES_TAG: &str = "modes";

/// Where the applied setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Nothing known yet: `normal`, every default.
    Default,
    /// The state file of a previous run.
    StateFile,
    /// An answer to the follower's poll (woken by an announcement on the
    /// Redis channel, which is only ever a hint).
    Poll,
}

/// What `/readyz` shows and the state file keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub mode: Mode,
    pub features: std::collections::BTreeMap<Feature, bool>,
    /// When the setting's newest row was written (Unix ms; 0: default).
    pub changed_at_ms: i64,
    pub source: Source,
    /// No origin of the region could be asked on the last poll.
    #[serde(default)]
    pub stale: bool,
}

impl Status {
    fn effective(&self) -> Effective {
        Effective {
            mode: self.mode,
            features: self.features.clone(),
        }
    }
}

fn mode_index(mode: Mode) -> u8 {
    Mode::ALL.iter().position(|m| *m == mode).unwrap_or(0) as u8
}

fn feature_bits(effective: &Effective) -> u8 {
    Feature::ALL
        .iter()
        .enumerate()
        .filter(|(_, f)| effective.enabled(**f))
        .fold(0, |bits, (i, _)| bits | (1 << i))
}

/// The setting in force at this edge. The request path reads two atomics;
/// the full status sits behind a lock for `/readyz` and the follower.
pub struct EdgeModes {
    region: String,
    mode: AtomicU8,
    features: AtomicU8,
    status: Mutex<Status>,
    metrics: Arc<EdgeMetrics>,
    state_path: Option<PathBuf>,
}

impl EdgeModes {
    /// Starts from the state file if there is a readable one for this
    /// region, else from the defaults (`normal`).
    pub fn new(region: &str, metrics: Arc<EdgeMetrics>, state_path: Option<PathBuf>) -> Self {
        let defaults = Effective::default();
        let mut status = Status {
            mode: defaults.mode,
            features: defaults.features,
            changed_at_ms: 0,
            source: Source::Default,
            stale: false,
        };
        if let Some(path) = &state_path {
            match std::fs::read(path) {
                Ok(bytes) => match serde_json::from_slice::<Status>(&bytes) {
                    Ok(stored) => {
                        tracing::info!(mode = %stored.mode, path = %path.display(), "starting in the last known mode");
                        status = Status {
                            source: Source::StateFile,
                            stale: false,
                            ..stored
                        };
                    }
                    Err(error) => {
                        tracing::warn!(%error, path = %path.display(), "ignoring an unreadable mode state file")
                    }
                },
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(%error, path = %path.display(), "cannot read the mode state file")
                }
            }
        }
        let modes = EdgeModes {
            region: region.to_string(),
            mode: AtomicU8::new(0),
            features: AtomicU8::new(0),
            status: Mutex::new(status.clone()),
            metrics,
            state_path,
        };
        modes.publish(&status);
        modes
    }

    pub fn mode(&self) -> Mode {
        Mode::ALL
            .get(usize::from(self.mode.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or(Mode::Normal)
    }

    pub fn enabled(&self, feature: Feature) -> bool {
        let index = Feature::ALL.iter().position(|f| *f == feature).unwrap_or(0);
        self.features.load(Ordering::Relaxed) & (1 << index) != 0
    }

    pub fn status(&self) -> Status {
        self.status.lock().clone()
    }

    /// Applies `announcement` if it is for this region and at least as new
    /// as what is in force; returns whether the setting changed (the caller
    /// then [`persist`](Self::persist)s it).
    pub fn offer(&self, announcement: &Announcement, source: Source) -> bool {
        if announcement.region != self.region {
            tracing::warn!(region = %announcement.region, "ignoring the mode of another region");
            return false;
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        if announcement.changed_at_ms > now_ms + MAX_CLOCK_SKEW_MS {
            // A setting "from the future" would pin itself against every
            // later, real change: refused.
            tracing::warn!(
                changed_at_ms = announcement.changed_at_ms,
                now_ms,
                "ignoring a mode setting dated in the future"
            );
            return false;
        }
        let mut status = self.status.lock();
        if announcement.changed_at_ms < status.changed_at_ms {
            return false;
        }
        let effective = announcement.effective();
        let changed = effective != status.effective();
        let from_memory = matches!(status.source, Source::Default | Source::StateFile);
        if !changed && !from_memory && status.changed_at_ms == announcement.changed_at_ms {
            return false;
        }
        *status = Status {
            mode: effective.mode,
            features: effective.features.clone(),
            changed_at_ms: announcement.changed_at_ms,
            source,
            stale: status.stale,
        };
        let next = status.clone();
        drop(status);
        if changed {
            self.metrics.mode_changes.inc();
            let delay_ms = (now_ms - announcement.changed_at_ms).max(0);
            self.metrics
                .mode_propagation
                .observe(delay_ms as f64 / 1000.0);
            tracing::info!(mode = %next.mode, features = ?next.features, ?source, delay_ms, "operating mode applied");
        }
        self.publish(&next);
        changed
    }

    /// Whether the region's origins could be asked on the last poll.
    pub fn set_stale(&self, stale: bool) {
        self.status.lock().stale = stale;
        self.metrics.modes_stale.set(i64::from(stale));
    }

    /// Writes the applied setting to the state file (atomically: a
    /// temporary file renamed over it).
    pub async fn persist(&self) {
        let Some(path) = &self.state_path else {
            return;
        };
        let Ok(body) = serde_json::to_vec_pretty(&self.status()) else {
            return;
        };
        let temporary = path.with_extension("tmp");
        let written = async {
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            tokio::fs::write(&temporary, body).await?;
            tokio::fs::rename(&temporary, path).await
        };
        if let Err(error) = written.await {
            tracing::warn!(%error, path = %path.display(), "cannot keep the mode state file");
        }
    }

    fn publish(&self, status: &Status) {
        let effective = status.effective();
        self.mode.store(mode_index(status.mode), Ordering::Relaxed);
        self.features
            .store(feature_bits(&effective), Ordering::Relaxed);
        for mode in Mode::ALL {
            self.metrics
                .mode
                .with_label_values(&[mode.as_str()])
                .set(i64::from(status.mode == mode));
        }
        for feature in Feature::ALL {
            self.metrics
                .feature_enabled
                .with_label_values(&[feature.as_str()])
                .set(i64::from(effective.enabled(feature)));
        }
        self.metrics.modes_stale.set(i64::from(status.stale));
    }
}

/// Polls the region's origins for the setting they apply.
pub struct ModesFollower {
    pub modes: Arc<EdgeModes>,
    /// The edge's own region's origins (a name is resolved by the HTTP
    /// client on each poll).
    pub origins: Vec<crate::origin_dns::OriginAddress>,
    pub poll_interval: Duration,
    /// Rung by the purge listener when the key `modes` passes.
    pub wake: Arc<Notify>,
    /// Purged of what was cached under the old setting (tag `modes`) when a
    /// poll finds a change the channel did not bring (an edge that was not
    /// subscribed yet, or Redis down).
    pub cache: EdgeCache,
}

impl ModesFollower {
    async fn poll(&self, client: &reqwest::Client, turn: usize) {
        self.modes.metrics.mode_polls.inc();
        let count = self.origins.len();
        for i in 0..count {
            let origin = &self.origins[(turn + i) % count];
            let answer = async {
                client
                    .get(format!("http://{origin}/v1/modes"))
                    .send()
                    .await?
                    .error_for_status()?
                    .json::<Announcement>()
                    .await
            };
            match answer.await {
                Ok(announcement) => {
                    self.modes.set_stale(false);
                    if self.modes.offer(&announcement, Source::Poll) {
                        let purged = self.cache.purge(&PurgeTarget::Tag(MODES_TAG.into()));
                        tracing::debug!(purged, "purged what the old mode cached");
                        self.modes.persist().await;
                    }
                    return;
                }
                Err(error) => tracing::debug!(%error, %origin, "origin did not tell its mode"),
            }
        }
        if count > 0 {
            if !self.modes.status().stale {
                tracing::warn!("no origin of the region told its mode; keeping the last known one");
            }
            self.modes.set_stale(true);
        }
    }
}

#[async_trait]
impl BackgroundService for ModesFollower {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let client = match reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .connect_timeout(Duration::from_millis(500))
            .build()
        {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(%error, "mode follower cannot build its HTTP client");
                return;
            }
        };
        let mut ticker = tokio::time::interval(self.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut turn = 0;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticker.tick() => {}
                _ = self.wake.notified() => {}
            }
            self.poll(&client, turn).await;
            turn = turn.wrapping_add(1);
        }
    }
}
