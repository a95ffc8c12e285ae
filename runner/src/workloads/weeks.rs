//! The inpatient weeks and who owns them: what swap operations pick their pairs from.
//!
//! Loaded once per run from the database (direct), then kept current by the operations
//! themselves: a swap that the API says succeeded exchanges the owners here, a rollback puts
//! them back. A [`Lease`] holds its weeks while its request is in flight, so concurrent
//! operations of the `disjoint` kind never touch the same week, and a same-shift race is the
//! only way two requests meet.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::NaiveDate;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use uuid::Uuid;

/// Every week's owner, and the weeks in flight.
pub struct WeekBook {
    inner: Mutex<Inner>,
}

struct Inner {
    owners: BTreeMap<NaiveDate, Uuid>,
    busy: HashSet<NaiveDate>,
    rng: StdRng,
}

/// Two weeks with different owners, held until dropped.
pub struct Lease {
    book: Arc<WeekBook>,
    /// The faculty giving their week.
    pub source: Uuid,
    /// The source's week (a Monday).
    pub source_week: NaiveDate,
    /// The faculty taking it, giving theirs.
    pub target: Uuid,
    /// The target's week.
    pub target_week: NaiveDate,
}

impl WeekBook {
    /// Reads every week's owner (the Monday AM half-day's) from the database.
    pub async fn load(db: &tokio_postgres::Client, seed: u64) -> anyhow::Result<WeekBook> {
        let rows = db
            .query(
                "SELECT date, person_id FROM half_day_assignments
                 WHERE time_of_day = 'AM' AND EXTRACT(ISODOW FROM date) = 1",
                &[],
            )
            .await?;
        let owners = rows.iter().map(|row| (row.get(0), row.get(1))).collect();
        Ok(WeekBook::new(owners, seed))
    }

    /// A book over the given owners (tests).
    pub fn new(owners: BTreeMap<NaiveDate, Uuid>, seed: u64) -> WeekBook {
        WeekBook {
            inner: Mutex::new(Inner {
                owners,
                busy: HashSet::new(),
                rng: StdRng::seed_from_u64(seed),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many weeks are known.
    pub fn len(&self) -> usize {
        self.lock().owners.len()
    }

    /// Whether no week is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Two free weeks, picked at random, whose owners differ; `None` when every week is in
    /// flight (or there are fewer than two owners).
    pub fn disjoint_pair(self: &Arc<Self>) -> Option<Lease> {
        let mut inner = self.lock();
        let free = inner.free();
        if free.len() < 2 {
            return None;
        }
        for _ in 0..32 {
            let a = free[inner.rng.random_range(0..free.len())];
            let b = free[inner.rng.random_range(0..free.len())];
            if a.1 != b.1 {
                inner.busy.insert(a.0);
                inner.busy.insert(b.0);
                return Some(Lease {
                    book: Arc::clone(self),
                    source: a.1,
                    source_week: a.0,
                    target: b.1,
                    target_week: b.0,
                });
            }
        }
        None
    }

    /// The owner of `week` as last known.
    pub fn owner(&self, week: NaiveDate) -> Option<Uuid> {
        self.lock().owners.get(&week).copied()
    }

    /// A free week picked at random, with its owner (a same-shift race round's contested
    /// week); it is marked busy until [`WeekBook::release`].
    pub fn take_week(&self) -> Option<(NaiveDate, Uuid)> {
        let mut inner = self.lock();
        let free = inner.free();
        if free.is_empty() {
            return None;
        }
        let pick = free[inner.rng.random_range(0..free.len())];
        inner.busy.insert(pick.0);
        Some(pick)
    }

    /// Frees a week taken with [`WeekBook::take_week`].
    pub fn release(&self, week: NaiveDate) {
        self.lock().busy.remove(&week);
    }

    /// Records that a one-to-one swap of `a_week` (owned by `a`) and `b_week` (owned by `b`)
    /// happened: the owners are exchanged.
    pub fn exchange(&self, a: Uuid, a_week: NaiveDate, b: Uuid, b_week: NaiveDate) {
        let mut inner = self.lock();
        inner.owners.insert(a_week, b);
        inner.owners.insert(b_week, a);
    }

    /// Marks `weeks` busy, all or none (`None` when one is already in flight): a rollback holds
    /// exactly the two weeks of the swap it undoes. The guard frees them.
    pub fn hold(self: &Arc<Self>, weeks: [NaiveDate; 2]) -> Option<Held> {
        let mut inner = self.lock();
        if weeks.iter().any(|week| inner.busy.contains(week)) {
            return None;
        }
        inner.busy.extend(weeks);
        Some(Held {
            book: Arc::clone(self),
            weeks,
        })
    }

    /// Re-reads the owners of `weeks` from the database: after an operation whose outcome is
    /// uncertain, for the weeks it holds (only held weeks, so no concurrent operation's update
    /// is overwritten by an older read).
    pub async fn refresh(&self, db: &tokio_postgres::Client, weeks: &[NaiveDate]) {
        let rows = db
            .query(
                "SELECT date, person_id FROM half_day_assignments
                 WHERE time_of_day = 'AM' AND date = ANY($1)",
                &[&weeks],
            )
            .await;
        match rows {
            Ok(rows) => {
                let mut inner = self.lock();
                for row in rows {
                    if let (Ok(week), Ok(owner)) = (row.try_get(0), row.try_get(1)) {
                        inner.owners.insert(week, owner);
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "re-reading the owners of weeks failed"),
        }
    }
}

impl Inner {
    /// The weeks not in flight, with their owners.
    fn free(&self) -> Vec<(NaiveDate, Uuid)> {
        self.owners
            .iter()
            .filter(|(week, _)| !self.busy.contains(*week))
            .map(|(week, owner)| (*week, *owner))
            .collect()
    }
}

/// Two given weeks held busy until dropped (see [`WeekBook::hold`]).
pub struct Held {
    book: Arc<WeekBook>,
    /// The weeks held.
    pub weeks: [NaiveDate; 2],
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut inner = self.book.lock();
        for week in self.weeks {
            inner.busy.remove(&week);
        }
    }
}

impl Lease {
    /// Records that this pair's swap happened (the owners are exchanged).
    pub fn swapped(&self) {
        self.book
            .exchange(self.source, self.source_week, self.target, self.target_week);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut inner = self.book.lock();
        inner.busy.remove(&self.source_week);
        inner.busy.remove(&self.target_week);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(weeks: usize, owners: usize) -> Arc<WeekBook> {
        let people: Vec<Uuid> = (0..owners).map(|_| Uuid::new_v4()).collect();
        let start = NaiveDate::from_ymd_opt(2025, 1, 6).unwrap();
        let map = (0..weeks)
            .map(|i| (start + chrono::Days::new(7 * i as u64), people[i % owners]))
            .collect();
        Arc::new(WeekBook::new(map, 7))
    }

    #[test]
    fn leases_never_share_a_week_and_free_them_when_dropped() {
        let book = book(6, 3);
        let leases: Vec<Lease> = (0..3).map(|_| book.disjoint_pair().unwrap()).collect();
        let mut seen = HashSet::new();
        for lease in &leases {
            assert_ne!(lease.source, lease.target);
            assert!(seen.insert(lease.source_week) && seen.insert(lease.target_week));
        }
        assert!(
            book.disjoint_pair().is_none(),
            "all six weeks are in flight"
        );
        drop(leases);
        assert!(book.disjoint_pair().is_some());
    }

    #[test]
    fn a_swap_exchanges_the_owners() {
        let book = book(4, 2);
        let lease = book.disjoint_pair().unwrap();
        let (a, b) = (lease.source, lease.target);
        lease.swapped();
        assert_eq!(book.owner(lease.source_week), Some(b));
        assert_eq!(book.owner(lease.target_week), Some(a));
    }

    #[test]
    fn given_weeks_are_held_all_or_none() {
        let book = book(4, 2);
        let weeks: Vec<NaiveDate> = book.lock().owners.keys().copied().collect();
        let held = book.hold([weeks[0], weeks[1]]).unwrap();
        assert!(
            book.hold([weeks[1], weeks[2]]).is_none(),
            "one of them is in flight"
        );
        assert!(!book.lock().busy.contains(&weeks[2]), "all or none");
        let lease = book.disjoint_pair().unwrap();
        assert_eq!(
            [lease.source_week, lease.target_week]
                .iter()
                .filter(|w| held.weeks.contains(w))
                .count(),
            0
        );
        drop((held, lease));
        assert!(book.lock().busy.is_empty());
    }
}
