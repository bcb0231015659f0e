//! The reservation planner: what one batch of the queue does to stock,
//! decided in memory from the rows the batch locked. Pure — no I/O — so
//! its invariants are checked by property tests:
//!
//! - `0 ≤ reserved ≤ on_hand` for every SKU after the batch, given it held
//!   before (nothing is sold twice, nothing is held beyond stock);
//! - units are conserved: `on_hand + sold` never changes, and `reserved`
//!   changes by exactly the units held minus the units finished;
//! - a reservation is finished (committed or released) on behalf of an
//!   order only if that order claimed it: one order per reservation;
//! - a reservation in a state the planner does not know is an error.
//!
//! Order of work: commits and releases first (released stock is available
//! to the same batch's reservations), then reservations in arrival order,
//! each all-or-nothing against what is left.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use super::batcher::Finish;
use super::model::{InventoryError, Line, Reservation, ReservationState};

/// One stock row as locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stock {
    pub on_hand: i64,
    pub reserved: i64,
}

impl Stock {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

/// A reservation being finished, as locked: its stored state (raw, so an
/// unknown one can be refused), the order that claimed it and its lines.
#[derive(Debug, Clone)]
pub struct Hold {
    pub state: String,
    pub order: Option<String>,
    pub lines: Vec<Line>,
}

/// A finish asked of the batch: which reservation, how, for which order
/// (`None`: the system itself, e.g. an admin or a test harness).
#[derive(Debug, Clone)]
pub struct FinishJob {
    pub id: i64,
    pub kind: Finish,
    pub order: Option<String>,
}

/// A reservation asked of the batch. `claimed` is the row its owner's
/// insert created (`None`: the owner was taken before — a replay).
#[derive(Debug, Clone)]
pub struct ReserveJob<'a> {
    pub owner: &'a str,
    pub lines: &'a [Line],
    pub claimed: Option<(i64, DateTime<Utc>)>,
}

/// Per-SKU changes of one batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Delta {
    pub on_hand: i64,
    pub reserved: i64,
    pub sold: i64,
}

#[derive(Debug)]
pub enum ReserveOutcome {
    Held(Reservation),
    Rejected(InventoryError),
    /// The owner was taken before: answer with the stored reservation.
    Replay,
}

/// What the batch writes and answers.
#[derive(Debug, Default)]
pub struct Plan {
    pub deltas: BTreeMap<String, Delta>,
    /// Reservations whose state changes.
    pub new_states: Vec<(i64, ReservationState)>,
    /// Claimed owners whose request was refused: their rows are deleted.
    pub rejected_ids: Vec<i64>,
    /// Lines of the new holds: `(reservation, line)`.
    pub new_lines: Vec<(i64, Line)>,
    pub finishes: Vec<Result<ReservationState, InventoryError>>,
    pub reserves: Vec<ReserveOutcome>,
    pub newly_committed: usize,
    pub newly_released: usize,
}

struct Ledger<'a> {
    stock: &'a mut HashMap<String, Stock>,
    deltas: &'a mut BTreeMap<String, Delta>,
}

impl Ledger<'_> {
    fn apply(&mut self, sku: &str, change: Delta) {
        if let Some(row) = self.stock.get_mut(sku) {
            row.on_hand += change.on_hand;
            row.reserved += change.reserved;
        }
        let entry = self.deltas.entry(sku.to_string()).or_default();
        entry.on_hand += change.on_hand;
        entry.reserved += change.reserved;
        entry.sold += change.sold;
    }
}

/// Plans one batch. `stock` holds every SKU the batch touches, as locked.
pub fn plan(
    mut stock: HashMap<String, Stock>,
    mut holds: BTreeMap<i64, Hold>,
    finishes: &[FinishJob],
    reserves: &[ReserveJob<'_>],
) -> Plan {
    let mut out = Plan::default();
    let mut ledger = Ledger {
        stock: &mut stock,
        deltas: &mut out.deltas,
    };
    for job in finishes {
        let result = finish_one(&mut ledger, &mut holds, job);
        if let Ok((new, true)) = &result {
            out.new_states.push((job.id, *new));
            match new {
                ReservationState::Committed => out.newly_committed += 1,
                _ => out.newly_released += 1,
            }
        }
        out.finishes.push(result.map(|(state, _)| state));
    }

    // The same owner twice in one batch: the first request decides, the
    // later ones replay it (or share its rejection).
    let mut first_claim: HashMap<&str, Option<InventoryError>> = HashMap::new();
    for job in reserves {
        let Some((id, expires_at)) = job.claimed else {
            out.reserves.push(ReserveOutcome::Replay);
            continue;
        };
        if let Some(first) = first_claim.get(job.owner) {
            out.reserves.push(match first {
                Some(error) => ReserveOutcome::Rejected(error.clone()),
                None => ReserveOutcome::Replay,
            });
            continue;
        }
        let short = job.lines.iter().find_map(|line| {
            let available = ledger.stock.get(&line.sku).map_or(0, Stock::available);
            (available < i64::from(line.quantity)).then(|| InventoryError::Insufficient {
                sku: line.sku.clone(),
                available: available.max(0),
                wanted: line.quantity,
            })
        });
        first_claim.insert(job.owner, short.clone());
        if let Some(error) = short {
            out.rejected_ids.push(id);
            out.reserves.push(ReserveOutcome::Rejected(error));
            continue;
        }
        for line in job.lines {
            let change = Delta {
                reserved: i64::from(line.quantity),
                ..Delta::default()
            };
            ledger.apply(&line.sku, change);
            out.new_lines.push((id, line.clone()));
        }
        out.reserves.push(ReserveOutcome::Held(Reservation {
            id,
            owner: job.owner.to_string(),
            state: ReservationState::Held,
            expires_at,
            lines: job.lines.to_vec(),
            replayed: false,
        }));
    }
    out
}

/// One commit or release: the state it leaves and whether it changed.
fn finish_one(
    ledger: &mut Ledger<'_>,
    holds: &mut BTreeMap<i64, Hold>,
    job: &FinishJob,
) -> Result<(ReservationState, bool), InventoryError> {
    let id = job.id;
    let hold = holds
        .get_mut(&id)
        .ok_or(InventoryError::UnknownReservation(id))?;
    let state = ReservationState::parse(&hold.state).ok_or_else(|| InventoryError::Corrupt {
        id,
        state: hold.state.clone(),
    })?;
    if let Some(order) = &job.order
        && hold.order.as_deref() != Some(order.as_str())
    {
        return Err(InventoryError::NotClaimed {
            id,
            by: hold.order.clone(),
        });
    }
    let each = |ledger: &mut Ledger<'_>, lines: &[Line], change: fn(i64) -> Delta| {
        for line in lines {
            ledger.apply(&line.sku, change(i64::from(line.quantity)));
        }
    };
    let new = match (job.kind, state) {
        (Finish::Commit, ReservationState::Committed)
        | (Finish::Release, ReservationState::Released | ReservationState::Expired) => state,
        (Finish::Commit, ReservationState::Held) => {
            each(ledger, &hold.lines, |q| Delta {
                on_hand: -q,
                reserved: -q,
                sold: q,
            });
            ReservationState::Committed
        }
        (Finish::Commit, ReservationState::Expired)
            if hold.lines.iter().all(|line| {
                ledger
                    .stock
                    .get(&line.sku)
                    .is_some_and(|s| s.available() >= i64::from(line.quantity))
            }) =>
        {
            // The hold lapsed but its units are still free: sell them.
            each(ledger, &hold.lines, |q| Delta {
                on_hand: -q,
                reserved: 0,
                sold: q,
            });
            ReservationState::Committed
        }
        (Finish::Commit, lapsed @ (ReservationState::Released | ReservationState::Expired)) => {
            return Err(InventoryError::WrongState {
                id,
                state: lapsed.as_str(),
                wanted: "committed",
            });
        }
        (Finish::Release, ReservationState::Held) => {
            each(ledger, &hold.lines, |q| Delta {
                reserved: -q,
                ..Delta::default()
            });
            ReservationState::Released
        }
        (Finish::Release, ReservationState::Committed) => {
            return Err(InventoryError::WrongState {
                id,
                state: "committed",
                wanted: "released",
            });
        }
    };
    let changed = new != state;
    if changed {
        hold.state = new.as_str().to_string();
    }
    Ok((new, changed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SKUS: [&str; 3] = ["A", "B", "C"];

    /// `(SKU index, quantity)` lines.
    type RawLines = Vec<(usize, i32)>;

    #[derive(Debug, Clone)]
    struct Case {
        stock: Vec<(i64, i64)>,
        /// `(state index, claiming order, lines)`.
        holds: Vec<(u8, Option<u8>, RawLines)>,
        /// `(reservation, commit?, on behalf of order)`.
        finishes: Vec<(i64, bool, Option<u8>)>,
        /// `(owner, replay?, lines)`.
        reserves: Vec<(u8, bool, RawLines)>,
    }

    fn lines(raw: &[(usize, i32)]) -> Vec<Line> {
        let mut merged: BTreeMap<&str, i32> = BTreeMap::new();
        for (sku, q) in raw {
            *merged.entry(SKUS[*sku]).or_default() += q;
        }
        merged
            .into_iter()
            .map(|(sku, quantity)| Line {
                sku: sku.into(),
                quantity,
            })
            .collect()
    }

    fn case() -> impl Strategy<Value = Case> {
        let line = (0..SKUS.len(), 1..5i32);
        (
            prop::collection::vec((0..40i64, 0..40i64), SKUS.len()),
            prop::collection::vec(
                (
                    0..5u8,
                    prop::option::of(0..3u8),
                    prop::collection::vec(line.clone(), 1..3),
                ),
                0..6,
            ),
            prop::collection::vec((0..8i64, any::<bool>(), prop::option::of(0..3u8)), 0..8),
            prop::collection::vec(
                (0..4u8, any::<bool>(), prop::collection::vec(line, 1..3)),
                0..8,
            ),
        )
            .prop_map(|(stock, holds, finishes, reserves)| Case {
                stock,
                holds,
                finishes,
                reserves,
            })
    }

    /// Builds consistent locked rows: every held reservation's units are
    /// counted in `reserved`, which never exceeds `on_hand`.
    fn rows(case: &Case) -> (HashMap<String, Stock>, BTreeMap<i64, Hold>) {
        let mut stock: HashMap<String, Stock> = SKUS
            .iter()
            .zip(&case.stock)
            .map(|(sku, (on_hand, _))| {
                (
                    sku.to_string(),
                    Stock {
                        on_hand: *on_hand,
                        reserved: 0,
                    },
                )
            })
            .collect();
        let mut holds = BTreeMap::new();
        for (id, (state, order, raw)) in case.holds.iter().enumerate() {
            let lines = lines(raw);
            let state = ["held", "committed", "released", "expired", "mystery"][*state as usize];
            if state == "held" {
                let fits = lines
                    .iter()
                    .all(|l| stock[&l.sku].available() >= i64::from(l.quantity));
                if !fits {
                    continue;
                }
                for l in &lines {
                    stock.get_mut(&l.sku).unwrap().reserved += i64::from(l.quantity);
                }
            }
            holds.insert(
                id as i64,
                Hold {
                    state: state.into(),
                    order: order.map(|o| format!("o{o}")),
                    lines,
                },
            );
        }
        (stock, holds)
    }

    proptest! {
        #[test]
        fn plans_keep_stock_bounded_conserved_and_one_order_per_reservation(case in case()) {
            let (stock, holds) = rows(&case);
            let finishes: Vec<FinishJob> = case
                .finishes
                .iter()
                .map(|(id, commit, order)| FinishJob {
                    id: *id,
                    kind: if *commit { Finish::Commit } else { Finish::Release },
                    order: order.map(|o| format!("o{o}")),
                })
                .collect();
            let owners: Vec<String> = case.reserves.iter().map(|(o, _, _)| format!("r{o}")).collect();
            let reserve_lines: Vec<Vec<Line>> = case.reserves.iter().map(|(_, _, l)| lines(l)).collect();
            let mut next_id = 1000;
            let mut seen = std::collections::HashSet::new();
            let reserves: Vec<ReserveJob<'_>> = case
                .reserves
                .iter()
                .enumerate()
                .map(|(i, (_, replay, _))| {
                    let fresh = !*replay && seen.insert(owners[i].clone());
                    next_id += 1;
                    ReserveJob {
                        owner: &owners[i],
                        lines: &reserve_lines[i],
                        claimed: fresh.then(|| (next_id, Utc::now())),
                    }
                })
                .collect();
            let plan = plan(stock.clone(), holds.clone(), &finishes, &reserves);

            // Bounded: the result of applying the deltas stays legal.
            for (sku, before) in &stock {
                let d = plan.deltas.get(sku).copied().unwrap_or_default();
                let on_hand = before.on_hand + d.on_hand;
                let reserved = before.reserved + d.reserved;
                prop_assert!(on_hand >= 0 && reserved >= 0 && reserved <= on_hand, "{sku}: {on_hand}/{reserved}");
                // Conserved: what leaves on_hand is sold.
                prop_assert_eq!(d.on_hand + d.sold, 0);
            }
            // reserved moves by held units minus finished units.
            let mut expected: BTreeMap<String, i64> = BTreeMap::new();
            for (id, line) in &plan.new_lines {
                prop_assert!(*id > 1000);
                *expected.entry(line.sku.clone()).or_default() += i64::from(line.quantity);
            }
            let mut finished = std::collections::HashSet::new();
            for (job, result) in finishes.iter().zip(&plan.finishes) {
                let hold = holds.get(&job.id);
                match result {
                    Ok(_) => {
                        let hold = hold.expect("a finished reservation exists");
                        // One order per reservation.
                        if let Some(order) = &job.order {
                            prop_assert_eq!(hold.order.as_ref(), Some(order));
                        }
                        prop_assert!(ReservationState::parse(&hold.state).is_some());
                        if hold.state == "held" && finished.insert(job.id) {
                            for l in &hold.lines {
                                *expected.entry(l.sku.clone()).or_default() -= i64::from(l.quantity);
                            }
                        }
                    }
                    Err(InventoryError::Corrupt { .. }) => {
                        prop_assert_eq!(hold.map(|h| h.state.as_str()), Some("mystery"));
                    }
                    Err(_) => {}
                }
            }
            for sku in SKUS {
                let d = plan.deltas.get(sku).copied().unwrap_or_default();
                prop_assert_eq!(d.reserved, expected.get(sku).copied().unwrap_or(0), "{}", sku);
            }
            prop_assert_eq!(plan.reserves.len(), reserves.len());
            prop_assert_eq!(plan.finishes.len(), finishes.len());
        }
    }

    #[test]
    fn a_reservation_claimed_by_one_order_cannot_be_finished_by_another() {
        let stock = HashMap::from([(
            "A".to_string(),
            Stock {
                on_hand: 1,
                reserved: 1,
            },
        )]);
        let holds = BTreeMap::from([(
            7,
            Hold {
                state: "held".into(),
                order: Some("first".into()),
                lines: vec![Line {
                    sku: "A".into(),
                    quantity: 1,
                }],
            },
        )]);
        let jobs = [
            FinishJob {
                id: 7,
                kind: Finish::Commit,
                order: Some("second".into()),
            },
            FinishJob {
                id: 7,
                kind: Finish::Release,
                order: Some("second".into()),
            },
            FinishJob {
                id: 7,
                kind: Finish::Commit,
                order: Some("first".into()),
            },
            FinishJob {
                id: 7,
                kind: Finish::Commit,
                order: Some("first".into()),
            },
        ];
        let plan = plan(stock, holds, &jobs, &[]);
        assert!(matches!(
            &plan.finishes[0],
            Err(InventoryError::NotClaimed { by: Some(by), .. }) if by == "first"
        ));
        assert!(matches!(
            &plan.finishes[1],
            Err(InventoryError::NotClaimed { .. })
        ));
        assert!(matches!(&plan.finishes[2], Ok(ReservationState::Committed)));
        assert!(matches!(&plan.finishes[3], Ok(ReservationState::Committed)));
        assert_eq!(plan.newly_committed, 1);
        assert_eq!(
            plan.deltas["A"],
            Delta {
                on_hand: -1,
                reserved: -1,
                sold: 1
            }
        );
    }
}
