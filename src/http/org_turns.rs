//! Updates of one organization take turns within this process.
//!
//! An update without `If-Match` that loses the race for its organization's row
//! (another update committed first) is planned again on the newer row, up to
//! `MAX_ATTEMPTS` times and then answered 503. With several clients updating
//! one organization, nothing made the loser of one race more likely to win the
//! next: the group committer writes at most one of them per batch, and each
//! batch's losers re-read and race again with the next requests. With 8 clients
//! PATCHing one organization for 10 s (a debug build, as the tests run it), one
//! request needed 37 attempts, and a CI run saw one give up after 64 (the SIGTERM
//! test in `tests/hostile_clients.rs`, which updates one organization from 8
//! workers).
//!
//! Taking turns — tokio's `Mutex` queues its waiters first come, first served —
//! plans each update on the row its predecessor committed, so within one process
//! it commits at the first attempt; the retries are left for other processes'
//! writes. A turn is held from the read to the answer of the commit; updates of
//! different organizations never wait for each other, so batching is unchanged.
//!
//! Written here rather than taken from a crate: what is needed is a map from id
//! to a fair async mutex that forgets an id once nobody holds or waits for its
//! turn (so the map holds only organizations being updated right now), and that
//! is these few lines over tokio's `Mutex`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Mutex as TurnLock, OwnedMutexGuard};

use crate::domain::ids::OrgId;

/// The map is split so that requests on different runtime threads rarely meet
/// on one lock.
const SHARDS: usize = 16;

type Turns = HashMap<OrgId, Arc<TurnLock<()>>>;

#[derive(Default)]
pub struct OrgTurns {
    shards: [Mutex<Turns>; SHARDS],
    spread: std::hash::RandomState,
}

/// This request's turn to update one organization; the next waiter's comes when
/// it is dropped.
pub struct Turn<'a> {
    turns: &'a OrgTurns,
    id: OrgId,
    held: Option<OwnedMutexGuard<()>>,
}

impl OrgTurns {
    /// Waits until every update of `id` that asked before has ended.
    pub async fn take(&self, id: OrgId) -> Turn<'_> {
        let lock = Arc::clone(self.shard(&id).entry(id).or_default());
        let mut turn = Turn {
            turns: self,
            id,
            held: None,
        };
        // A request cancelled while it waits here (its client went away) drops
        // the waiting future, and with it its share of the lock, before `turn`,
        // whose drop then finds the id idle and forgets it (tested below).
        turn.held = Some(lock.lock_owned().await);
        turn
    }

    /// Organizations someone holds or waits for a turn on.
    #[cfg(test)]
    fn busy(&self) -> usize {
        (0..SHARDS).map(|i| self.lock(i).len()).sum()
    }

    fn shard(&self, id: &OrgId) -> MutexGuard<'_, Turns> {
        use std::hash::BuildHasher;
        self.lock(self.spread.hash_one(id) as usize % SHARDS)
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Turns> {
        self.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.held.take());
        let mut shard = self.turns.shard(&self.id);
        // Every holder and waiter has a share, taken under this lock: the map's
        // own share alone means nobody else will ask for it.
        if shard
            .get(&self.id)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            shard.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_second_update_of_one_org_waits_and_others_do_not() {
        let turns = OrgTurns::default();
        let (a, b) = (OrgId::generate(), OrgId::generate());
        let first = turns.take(a).await;
        let waiting = tokio::time::timeout(Duration::from_millis(50), turns.take(a)).await;
        assert!(
            waiting.is_err(),
            "a second turn on one org was given at once"
        );
        let other = tokio::time::timeout(Duration::from_millis(50), turns.take(b)).await;
        assert!(other.is_ok(), "an update of another org waited");
        drop(other);
        drop(first);
        let next = tokio::time::timeout(Duration::from_millis(50), turns.take(a)).await;
        assert!(next.is_ok(), "the turn was not handed on");
    }

    #[tokio::test]
    async fn turns_come_in_the_order_they_were_asked_for() {
        let turns = Arc::new(OrgTurns::default());
        let id = OrgId::generate();
        let first = turns.take(id).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for n in 0..5 {
            let (turns, order) = (Arc::clone(&turns), Arc::clone(&order));
            waiters.push(tokio::spawn(async move {
                let _turn = turns.take(id).await;
                order.lock().unwrap().push(n);
                tokio::task::yield_now().await;
            }));
            // Each waiter is queued before the next is spawned.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(first);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(turns.busy(), 0);
    }

    #[tokio::test]
    async fn an_org_is_forgotten_when_nobody_holds_or_waits_for_it() {
        let turns = OrgTurns::default();
        let id = OrgId::generate();
        let held = turns.take(id).await;
        assert_eq!(turns.busy(), 1);
        // A waiter whose request is cancelled leaves nothing behind.
        let cancelled = tokio::time::timeout(Duration::from_millis(20), turns.take(id)).await;
        assert!(cancelled.is_err());
        assert_eq!(turns.busy(), 1);
        drop(held);
        assert_eq!(turns.busy(), 0);
    }

    #[tokio::test]
    async fn a_waiter_cancelled_after_its_turn_came_leaves_nothing_behind() {
        let turns = OrgTurns::default();
        let id = OrgId::generate();
        let held = turns.take(id).await;
        {
            let mut waiter = std::pin::pin!(turns.take(id));
            let queued = tokio::time::timeout(Duration::from_millis(20), &mut waiter).await;
            assert!(queued.is_err());
            // The holder leaves: the turn passes to the waiter, which is then
            // dropped unpolled, as when its client goes away.
            drop(held);
            assert_eq!(turns.busy(), 1);
        }
        assert_eq!(turns.busy(), 0);
        drop(turns.take(id).await);
        assert_eq!(turns.busy(), 0);
    }
}
