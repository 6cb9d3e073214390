//! The waiting line: one FIFO lane per priority, bounded in total.

use std::collections::VecDeque;

use super::Priority;

/// What [`Queue::push`] did with an arrival.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Push<T> {
    /// It waits.
    Queued,
    /// It waits, in the place of this waiter of a lower priority, which is refused.
    Evicted(T),
    /// No room and nobody below it: it is refused.
    Full,
}

/// Waiters by priority, each lane first come first served, at most `capacity` in all.
///
/// When full, an arrival takes the place of the *newest* waiter of the lowest priority below
/// its own: that one has waited least, so refusing it wastes the least of anyone's time. An
/// arrival with nobody below it is refused at once: a queue that only grows under overload
/// turns every request into a slow failure instead of some into fast ones.
#[derive(Debug)]
pub(super) struct Queue<T> {
    lanes: [VecDeque<(u64, T)>; 4],
    len: usize,
    capacity: usize,
}

impl<T> Queue<T> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            lanes: Default::default(),
            len: 0,
            capacity,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Queues `item` under `ticket` (the caller's id for [`Queue::remove`]).
    pub(super) fn push(&mut self, priority: Priority, ticket: u64, item: T) -> Push<T> {
        let mut outcome = Push::Queued;
        if self.len >= self.capacity {
            let below = self.lanes[..priority.index()]
                .iter_mut()
                .find(|lane| !lane.is_empty());
            match below.and_then(VecDeque::pop_back) {
                Some((_, evicted)) => outcome = Push::Evicted(evicted),
                None => return Push::Full,
            }
        } else {
            self.len += 1;
        }
        self.lanes[priority.index()].push_back((ticket, item));
        outcome
    }

    /// The priority of the next waiter to serve: the highest that has one.
    pub(super) fn head(&self) -> Option<Priority> {
        Priority::ALL
            .into_iter()
            .rev()
            .find(|p| !self.lanes[p.index()].is_empty())
    }

    pub(super) fn pop(&mut self, priority: Priority) -> Option<T> {
        let (_, item) = self.lanes[priority.index()].pop_front()?;
        self.len -= 1;
        Some(item)
    }

    /// Takes the waiter `ticket` out (it gave up); `None` if it is no longer queued.
    pub(super) fn remove(&mut self, priority: Priority, ticket: u64) -> Option<T> {
        let lane = &mut self.lanes[priority.index()];
        let at = lane.iter().position(|(t, _)| *t == ticket)?;
        let (_, item) = lane.remove(at)?;
        self.len -= 1;
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Priority::*;

    #[test]
    fn the_highest_priority_is_served_first_and_each_lane_in_arrival_order() {
        let mut queue = Queue::new(8);
        for (ticket, priority) in [AnonymousLists, Critical, Reads, Critical, AnonymousLists]
            .into_iter()
            .enumerate()
        {
            assert_eq!(queue.push(priority, ticket as u64, ticket), Push::Queued);
        }
        let mut order = Vec::new();
        while let Some(priority) = queue.head() {
            order.push(queue.pop(priority).expect("the head lane has a waiter"));
        }
        assert_eq!(order, [1, 3, 2, 0, 4]);
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn a_full_queue_refuses_its_newest_lowest_waiter_for_a_higher_arrival() {
        let mut queue = Queue::new(3);
        assert_eq!(queue.push(Reads, 1, "r1"), Push::Queued);
        assert_eq!(queue.push(AnonymousLists, 2, "a2"), Push::Queued);
        assert_eq!(queue.push(AnonymousLists, 3, "a3"), Push::Queued);
        // Full: a critical arrival takes the newest anonymous list's place.
        assert_eq!(queue.push(Critical, 4, "c4"), Push::Evicted("a3"));
        // An equal priority has nobody below it to replace.
        assert_eq!(queue.push(AnonymousLists, 5, "a5"), Push::Full);
        assert_eq!(queue.push(Reads, 6, "r6"), Push::Evicted("a2"));
        // Only reads and a critical request are left: a read arrival is refused.
        assert_eq!(queue.push(Reads, 7, "r7"), Push::Full);
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.head(), Some(Critical));
    }

    #[test]
    fn a_waiter_that_gives_up_leaves_its_place() {
        let mut queue = Queue::new(2);
        assert_eq!(queue.push(Reads, 1, "r1"), Push::Queued);
        assert_eq!(queue.push(Reads, 2, "r2"), Push::Queued);
        assert_eq!(queue.remove(Reads, 1), Some("r1"));
        assert_eq!(queue.remove(Reads, 1), None, "already gone");
        assert_eq!(queue.push(AnonymousLists, 3, "a3"), Push::Queued);
        assert_eq!(queue.len(), 2);
    }

    #[test]
    fn a_queue_of_no_places_refuses_everyone() {
        let mut queue = Queue::new(0);
        assert_eq!(queue.push(Critical, 1, ()), Push::Full);
        assert_eq!(queue.head(), None);
    }
}
