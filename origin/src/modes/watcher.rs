//! Applies the stored modes in a running origin. The region's effective
//! setting is read through the read handle (the region's replica, so it
//! arrives with the replication stream) at start, whenever the invalidation
//! tailer or the Redis channel carries the key `modes`, and every
//! `poll_interval` as a backstop. A process that cannot read the table
//! keeps its last known setting and says so (`meridian_modes_stale`,
//! `/readyz`).
//!
//! Once it has applied a new setting, the origin announces it on the
//! regional invalidation channel ([`Announcement`], with the key `modes`)
//! so the region's edges follow at once and purge what they cached under
//! the old setting; they also poll `GET /v1/modes`, which answers from
//! here without a database read.

use std::sync::Arc;
use std::time::Duration;

use meridian_contracts::invalidation::{CHANNEL, InvalidationMessage};
use meridian_contracts::modes::{Announcement, Effective, Feature, Mode};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::store;
use crate::cache::L2;
use crate::db::DbRouter;
use crate::metrics::Metrics;

/// What this process runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub effective: Effective,
    /// Whether the table has been read at all (before: the defaults).
    pub loaded: bool,
    /// Whether the last read failed (the setting may be out of date).
    pub stale: bool,
    /// When the newest row read was written (Unix ms; 0 before a read).
    pub changed_at_ms: i64,
}

impl Applied {
    /// The setting as `GET /v1/modes` answers and announcements carry it.
    pub fn announcement(&self, region: &str) -> Announcement {
        Announcement {
            region: region.to_string(),
            mode: self.effective.mode,
            features: self.effective.features.clone(),
            changed_at_ms: self.changed_at_ms,
            stale: self.stale,
        }
    }
}

/// Where applied changes are announced: the regional Redis and this
/// instance's name (origins ignore their own messages).
#[derive(Clone)]
pub struct Announcer {
    pub l2: L2,
    pub instance: String,
}

/// A handle on the applied setting; cheap to clone.
#[derive(Clone)]
pub struct Modes {
    current: watch::Receiver<Applied>,
    reload: Arc<Notify>,
}

impl Modes {
    /// The setting in force now.
    pub fn current(&self) -> Applied {
        self.current.borrow().clone()
    }

    pub fn mode(&self) -> Mode {
        self.current.borrow().effective.mode
    }

    pub fn enabled(&self, feature: Feature) -> bool {
        self.current.borrow().effective.enabled(feature)
    }

    /// Asks for a read now (the key `modes` was seen).
    pub fn reload(&self) {
        self.reload.notify_one();
    }

    /// Waits until the applied setting satisfies `ready` (tests and the
    /// CLI's propagation check).
    pub async fn wait_for(&self, ready: impl Fn(&Applied) -> bool) {
        let mut current = self.current.clone();
        let _ = current.wait_for(|applied| ready(applied)).await;
    }
}

/// What the watcher reads and where it reports.
pub struct Watch {
    pub db: DbRouter,
    pub region: String,
    pub metrics: Metrics,
    pub poll_interval: Duration,
    pub announcer: Option<Announcer>,
}

/// Starts reading the modes of `region`; the task ends with `shutdown`.
pub fn start(
    watch: Watch,
    shutdown: CancellationToken,
    tasks: &mut tokio::task::JoinSet<()>,
) -> Modes {
    let Watch {
        db,
        region,
        metrics,
        poll_interval,
        announcer,
    } = watch;
    let initial = Applied {
        effective: Effective::default(),
        loaded: false,
        stale: false,
        changed_at_ms: 0,
    };
    publish_metrics(&metrics, &initial);
    let (sender, current) = watch::channel(initial);
    let reload = Arc::new(Notify::new());
    let modes = Modes {
        current,
        reload: reload.clone(),
    };
    tasks.spawn(async move {
        let mut ticker = tokio::time::interval(poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
                _ = reload.notified() => {}
            }
            if let Some(applied) = refresh(&db, &region, &metrics, &sender).await
                && let Some(announcer) = &announcer
            {
                announce(announcer, &applied.announcement(&region)).await;
            }
        }
    });
    modes
}

/// Re-reads the table; returns the new setting if it changed.
async fn refresh(
    db: &DbRouter,
    region: &str,
    metrics: &Metrics,
    sender: &watch::Sender<Applied>,
) -> Option<Applied> {
    let read = db
        .read_background()
        .run(|conn| async move { store::rows(conn.pool()).await })
        .await;
    let rows = match read {
        Ok((rows, _)) => rows,
        Err(error) => {
            tracing::warn!(%error, "mode table unreadable; keeping the last known mode");
            mark_stale(metrics, sender);
            return None;
        }
    };
    let changed_at = rows.iter().map(|r| r.updated_at).max();
    let table = match store::table(rows) {
        Ok(table) => table,
        Err(error) => {
            tracing::error!(%error, "mode table not understood; keeping the last known mode");
            mark_stale(metrics, sender);
            return None;
        }
    };
    let next = Applied {
        effective: table.effective(region),
        loaded: true,
        stale: false,
        changed_at_ms: changed_at.map_or(0, |at| at.timestamp_millis()),
    };
    let previous = sender.borrow().clone();
    if previous == next {
        return None;
    }
    if previous.loaded && previous.effective != next.effective {
        metrics.mode_changes.inc();
        if let Some(at) = changed_at {
            let delay = (chrono::Utc::now() - at).to_std().unwrap_or_default();
            metrics.mode_propagation.observe(delay.as_secs_f64());
        }
        tracing::info!(
            mode = %next.effective.mode,
            features = ?next.effective.features,
            "operating mode applied"
        );
    }
    publish_metrics(metrics, &next);
    sender.send_replace(next.clone());
    Some(next)
}

async fn announce(announcer: &Announcer, announcement: &Announcement) {
    let message = InvalidationMessage {
        instance: announcer.instance.clone(),
        keys: vec![store::INVALIDATION_KEY.to_string()],
        modes: Some(announcement.clone()),
    };
    if let Ok(text) = serde_json::to_string(&message) {
        announcer.l2.publish(CHANNEL, text).await;
    }
}

fn mark_stale(metrics: &Metrics, sender: &watch::Sender<Applied>) {
    metrics.modes_stale.set(1);
    sender.send_if_modified(|applied| !std::mem::replace(&mut applied.stale, true));
}

fn publish_metrics(metrics: &Metrics, applied: &Applied) {
    for mode in Mode::ALL {
        metrics
            .mode
            .with_label_values(&[mode.as_str()])
            .set(i64::from(applied.effective.mode == mode));
    }
    for feature in Feature::ALL {
        metrics
            .feature_enabled
            .with_label_values(&[feature.as_str()])
            .set(i64::from(applied.effective.enabled(feature)));
    }
    metrics.modes_stale.set(i64::from(applied.stale));
}
