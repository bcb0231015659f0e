//! The replica lag monitor: every probe interval it samples the primary's
//! WAL position and each replica's replay position, and marks each replica
//! usable (up and within the lag tolerance) or not.
//!
//! Lag is measured in time from LSN samples, not from replay timestamps: a
//! replica's lag is how long ago the primary was at a position the replica
//! has replayed. An idle primary therefore shows zero lag, and a replica
//! whose replay is paused shows a lag that grows with the clock as soon as
//! the primary moves on.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{DbRouter, Lsn, Replica};

/// How much primary history is kept; a replica further behind counts as
/// at least this far behind.
const HISTORY: Duration = Duration::from_secs(120);

/// One probe query may take at most this long.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Primary WAL positions over time.
#[derive(Debug, Default)]
pub struct PrimaryHistory {
    samples: VecDeque<(Instant, Lsn)>,
}

impl PrimaryHistory {
    pub fn record(&mut self, at: Instant, lsn: Lsn) {
        self.samples.push_back((at, lsn));
        while let Some((oldest, _)) = self.samples.front() {
            if at.duration_since(*oldest) > HISTORY {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// How far behind a replica that has replayed `replayed` is, at `now`.
    /// `None` when there is no sample yet.
    pub fn lag(&self, replayed: Lsn, now: Instant) -> Option<Duration> {
        let (_, newest) = self.samples.back()?;
        if replayed >= *newest {
            return Some(Duration::ZERO);
        }
        // The newest moment the primary was at or behind `replayed`.
        let caught_up_at = self
            .samples
            .iter()
            .rev()
            .find(|(_, lsn)| *lsn <= replayed)
            .map(|(at, _)| *at);
        match caught_up_at {
            // The primary moved past `replayed` after that moment; the
            // replica is behind by at least the time since the next sample.
            Some(at) => Some(now.saturating_duration_since(at)),
            None => self
                .samples
                .front()
                .map(|(at, _)| now.saturating_duration_since(*at).max(HISTORY)),
        }
    }
}

impl DbRouter {
    /// Measures lag until `shutdown` is cancelled.
    pub async fn run_lag_monitor(self, interval: Duration, shutdown: CancellationToken) {
        let mut history = PrimaryHistory::default();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            self.probe_once(&mut history).await;
        }
    }

    async fn probe_once(&self, history: &mut PrimaryHistory) {
        let inner = &self.inner;
        let primary = tokio::time::timeout(
            PROBE_TIMEOUT,
            sqlx::query_scalar!(r#"select pg_current_wal_lsn()::text as "lsn!""#)
                .fetch_one(&inner.primary_read_only),
        )
        .await;
        let primary_known = match primary {
            Ok(Ok(text)) => match text.parse::<Lsn>() {
                Ok(lsn) => {
                    history.record(Instant::now(), lsn);
                    self.saw_primary_lsn(lsn);
                    true
                }
                Err(_) => false,
            },
            _ => false,
        };
        let probes = inner.replicas.iter().map(probe_replica);
        let results = futures::future::join_all(probes).await;
        let now = Instant::now();
        for (replica, replayed) in inner.replicas.iter().zip(results) {
            let state = &replica.state;
            let usable = match replayed {
                Some(lsn) => {
                    state.up.store(true, Ordering::Release);
                    state.replayed.store(lsn.0, Ordering::Release);
                    // Without a primary sample (primary down), the last
                    // verdict stands: a replica keeps serving reads.
                    if primary_known && let Some(lag) = history.lag(lsn, now) {
                        let micros = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
                        state.lag_micros.store(micros, Ordering::Release);
                        state
                            .within_tolerance
                            .store(lag <= inner.tolerance, Ordering::Release);
                        inner
                            .metrics
                            .replica_lag
                            .with_label_values(&[replica.name.as_str()])
                            .set(lag.as_secs_f64());
                    }
                    state.usable()
                }
                None => {
                    state.up.store(false, Ordering::Release);
                    false
                }
            };
            inner
                .metrics
                .replica_usable
                .with_label_values(&[replica.name.as_str()])
                .set(i64::from(usable));
        }
    }
}

/// The replica's replay position, or `None` if it does not answer.
async fn probe_replica(replica: &Replica) -> Option<Lsn> {
    let query = sqlx::query_scalar!(r#"select pg_last_wal_replay_lsn()::text as "lsn""#)
        .fetch_one(&replica.pool);
    match tokio::time::timeout(PROBE_TIMEOUT, query).await {
        Ok(Ok(Some(text))) => text.parse().ok(),
        // A server that is not in recovery has no replay position: it is
        // not a replica (misconfiguration); never route reads to it.
        Ok(Ok(None)) => None,
        Ok(Err(error)) => {
            tracing::debug!(replica = %replica.name, %error, "replica probe failed");
            None
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_primary_means_no_lag() {
        let mut h = PrimaryHistory::default();
        let t0 = Instant::now();
        h.record(t0, Lsn(100));
        h.record(t0 + Duration::from_secs(5), Lsn(100));
        assert_eq!(
            h.lag(Lsn(100), t0 + Duration::from_secs(5)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn paused_replica_lag_grows_with_time() {
        let mut h = PrimaryHistory::default();
        let t0 = Instant::now();
        h.record(t0, Lsn(100));
        h.record(t0 + Duration::from_millis(50), Lsn(200));
        h.record(t0 + Duration::from_millis(100), Lsn(300));
        let now = t0 + Duration::from_millis(400);
        assert_eq!(h.lag(Lsn(100), now), Some(Duration::from_millis(400)));
        assert_eq!(h.lag(Lsn(250), now), Some(Duration::from_millis(350)));
        assert_eq!(h.lag(Lsn(300), now), Some(Duration::ZERO));
        assert!(h.lag(Lsn(50), now).is_some_and(|l| l >= HISTORY));
    }
}
