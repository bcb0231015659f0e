//! The inventory reconciliation: every `inventory.reconcile_interval`, one
//! read on the primary checks that each SKU's counters agree with the
//! reservation rows they are kept from, and reports it as metrics.
//!
//! What it checks, per SKU (`inventory` row):
//! - `reserved` equals the units of its `held` reservation lines, and
//!   `sold` the units of its `committed` ones: `match`, else `mismatch`
//!   (`meridian_inventory_reconciliation_checks_total`, +1 per SKU per
//!   run). The batcher and the sweeper change a counter and the rows in one
//!   transaction, and one statement reads one snapshot, so a mismatch is
//!   never a race: a counter drifted from its rows.
//! - Oversold units: what the committed lines sold beyond the SKU's stock,
//!   `max(committed − (on_hand + sold), 0)` (`on_hand` counts the units not
//!   sold yet, so `on_hand + sold` is every unit the SKU had), summed over
//!   SKUs (`meridian_inventory_oversold_units`; 0 unless a sale bypassed
//!   the counters, since the CHECK constraints keep the counters in range).
//! - Held reservations past their expiry by more than one sweep interval
//!   (`meridian_reservations_overdue`): holds the sweeper should have
//!   released — stock locked with no order behind it.
//!
//! Cost: one aggregate over the held and committed reservation lines and
//! one row per SKU, read on the primary (a replica's lag would show holds
//! the sweeper already released as overdue). It only reads, so any number
//! of worker processes may run it; each reports what it saw.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::DbRouter;
use crate::metrics::Metrics;

/// How many mismatching SKUs a run names in its log line.
const EXAMPLES: i32 = 5;

/// What one reconciliation run found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// SKUs whose counters agree with their reservation rows.
    pub matched: u64,
    /// SKUs whose counters do not.
    pub mismatched: u64,
    /// Units sold beyond stock, summed over SKUs.
    pub oversold_units: i64,
    /// Held reservations past their expiry by more than a sweep interval.
    pub overdue: i64,
    /// The first few mismatching SKUs (for the log).
    pub examples: Vec<String>,
}

impl Report {
    /// Adds this run to the counters and sets the gauges.
    pub fn record(&self, metrics: &Metrics) {
        let checks = &metrics.reconciliation_checks;
        checks.with_label_values(&["match"]).inc_by(self.matched);
        checks
            .with_label_values(&["mismatch"])
            .inc_by(self.mismatched);
        metrics.oversold_units.set(self.oversold_units);
        metrics.reservations_overdue.set(self.overdue);
    }
}

/// Runs a reconciliation at once, then every `every`, until `shutdown`.
/// `sweep_interval` is the sweeper's: a hold is overdue once it is expired
/// for longer than that.
pub async fn run(
    db: DbRouter,
    metrics: Metrics,
    every: Duration,
    sweep_interval: Duration,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = shutdown.cancelled() => return,
        }
        match reconcile_once(&db, sweep_interval).await {
            Ok(report) => {
                report.record(&metrics);
                if report.mismatched > 0 || report.oversold_units > 0 {
                    tracing::error!(
                        mismatched = report.mismatched,
                        oversold_units = report.oversold_units,
                        examples = ?report.examples,
                        "inventory counters disagree with the reservations"
                    );
                }
                if report.overdue > 0 {
                    tracing::warn!(
                        overdue = report.overdue,
                        "held reservations past their expiry are not being released"
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "inventory reconciliation failed"),
        }
    }
}

/// One reconciliation: reads the primary, changes nothing.
pub async fn reconcile_once(
    db: &DbRouter,
    sweep_interval: Duration,
) -> Result<Report, sqlx::Error> {
    let overdue_ms = sweep_interval.as_secs_f64() * 1000.0;
    let (row, _) = db
        .read_primary()
        .background()
        .run(|conn| async move {
            sqlx::query!(
                r#"
                with lines as (
                    select l.sku,
                           sum(l.quantity) filter (where r.state = 'held') as held,
                           sum(l.quantity) filter (where r.state = 'committed') as committed
                    from reservations r
                    join reservation_lines l on l.reservation_id = r.id
                    where r.state in ('held', 'committed')
                    group by l.sku
                ), checked as (
                    select i.sku,
                           i.reserved = coalesce(l.held, 0)
                               and i.sold = coalesce(l.committed, 0) as agrees,
                           greatest(coalesce(l.committed, 0) - (i.on_hand + i.sold), 0) as oversold
                    from inventory i
                    left join lines l on l.sku = i.sku
                )
                select count(*) filter (where agrees) as "matched!",
                       count(*) filter (where not agrees) as "mismatched!",
                       coalesce(sum(oversold), 0)::bigint as "oversold!",
                       coalesce(
                           (array_agg(sku order by sku) filter (where not agrees))[1:$2],
                           '{}'
                       ) as "examples!",
                       (select count(*) from reservations
                        where state = 'held'
                          and expires_at < now() - $1 * interval '1 millisecond') as "overdue!"
                from checked
                "#,
                overdue_ms,
                EXAMPLES
            )
            .fetch_one(conn.pool())
            .await
        })
        .await?;
    Ok(Report {
        matched: u64::try_from(row.matched).unwrap_or_default(),
        mismatched: u64::try_from(row.mismatched).unwrap_or_default(),
        oversold_units: row.oversold,
        overdue: row.overdue,
        examples: row.examples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_adds_to_the_checks_and_sets_the_gauges() {
        let metrics = Metrics::new("us-east").unwrap();
        let report = Report {
            matched: 7,
            mismatched: 2,
            oversold_units: 3,
            overdue: 4,
            examples: vec!["A".into()],
        };
        report.record(&metrics);
        report.record(&metrics);
        let checks = |result: &str| {
            metrics
                .reconciliation_checks
                .with_label_values(&[result])
                .get()
        };
        assert_eq!((checks("match"), checks("mismatch")), (14, 4), "per run");
        assert_eq!(metrics.oversold_units.get(), 3, "the last run's");
        assert_eq!(metrics.reservations_overdue.get(), 4);
        Report::default().record(&metrics);
        assert_eq!(
            (
                metrics.oversold_units.get(),
                metrics.reservations_overdue.get()
            ),
            (0, 0),
            "a clean run clears the gauges"
        );
    }
}
