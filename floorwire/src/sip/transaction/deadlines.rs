//! The layer's deadlines, one queue per delay.
//!
//! Every timer of §17 is set to one of a handful of delays (T1 doubled a few times,
//! T2, T4, 64·T1, 32 s, Timer C), and from a clock that only moves forward, so the
//! deadlines set with one delay come due in the order they were set: a FIFO per delay
//! keeps them sorted for free. Setting and taking a deadline is then O(1), against
//! O(log n) for a binary heap holding every transaction's timers (a few hundred
//! thousand at thousands of calls a second, most of them 32 s away), whose every
//! pop walks its depth through memory no cache holds. The exception, a timer re-armed
//! from its own due time after firing late, is put in its place (a search and a move
//! of what was set after it). Deadlines come out as the heap gave them: by time, then
//! by entry.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Deadlines of entries `E` (ordered, to break ties the same way every time).
#[derive(Debug)]
pub(super) struct Deadlines<E> {
    /// (delay, its deadlines in order). A few entries: searched linearly.
    queues: Vec<(Duration, VecDeque<(Instant, E)>)>,
}

impl<E: Copy + Ord> Default for Deadlines<E> {
    fn default() -> Self {
        Self { queues: Vec::new() }
    }
}

/// How far from the back [`place_near_back`] looks before a binary search does.
const NEAR_BACK: usize = 32;

/// Where `item` goes in `queue` (sorted, its last element larger than `item`) when
/// that is among the last [`NEAR_BACK`] places. The usual case: a round of the SIP
/// core sets many deadlines at one instant, each after a transaction newer than its
/// own, so it goes just before the back. A binary search of the whole queue (hundreds
/// of thousands of deadlines 32 s away) would read memory no cache holds.
fn place_near_back<E: Copy + Ord>(
    queue: &VecDeque<(Instant, E)>,
    item: (Instant, E),
) -> Option<usize> {
    let len = queue.len();
    (1..=NEAR_BACK.min(len))
        .map(|back| len - back)
        .find(|&i| queue[i] <= item)
        .map(|i| i + 1)
}

impl<E: Copy + Ord> Deadlines<E> {
    /// Sets `entry` due `delay` after `from`; returns when that is.
    pub fn push(&mut self, from: Instant, delay: Duration, entry: E) -> Instant {
        let at = from + delay;
        let queue = match self.queues.iter().position(|(d, _)| *d == delay) {
            Some(i) => &mut self.queues[i].1,
            None => {
                self.queues.push((delay, VecDeque::new()));
                &mut self.queues.last_mut().expect("just pushed").1
            }
        };
        // A deadline set from an earlier instant than the last one (a timer fired
        // late and re-armed from its own due time), or due at the same instant with a
        // smaller entry, goes in its place.
        match queue.back() {
            Some(&last) if last > (at, entry) => {
                let place = place_near_back(queue, (at, entry))
                    .unwrap_or_else(|| queue.partition_point(|&e| e <= (at, entry)));
                queue.insert(place, (at, entry));
            }
            _ => queue.push_back((at, entry)),
        }
        at
    }

    /// The earliest deadline.
    pub fn peek(&self) -> Option<Instant> {
        self.queues
            .iter()
            .filter_map(|(_, q)| q.front().map(|&(at, _)| at))
            .min()
    }

    /// The earliest deadline if it is due at `now`, taken out.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, E)> {
        let (i, _) = self
            .queues
            .iter()
            .enumerate()
            .filter_map(|(i, (_, q))| q.front().map(|&front| (i, front)))
            .filter(|(_, (at, _))| *at <= now)
            .min_by_key(|&(_, front)| front)?;
        self.queues[i].1.pop_front()
    }

    /// Deadlines set and not taken yet.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.queues.iter().map(|(_, q)| q.len()).sum()
    }

    /// Gives back the room a burst left: a queue four times larger than what it holds
    /// is shrunk to twice that.
    pub fn shrink(&mut self) {
        for (_, queue) in &mut self.queues {
            if let Some(capacity) = crate::util::shrunk_capacity(queue.len(), queue.capacity()) {
                queue.shrink_to(capacity);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the order deadlines are set in, from whatever instants and with
    /// whatever delays, they come out in time order (ties by entry), each once.
    #[test]
    fn deadlines_come_due_in_time_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Deadlines::default();
        let mut expected = Vec::new();
        // From a clock moving forward, with delays shared and not, and two re-armed
        // late (from an instant before the last one set with their delay).
        let sets = [
            (0, 500, 1u32),
            (0, 32_000, 2),
            (10, 500, 3),
            (20, 1_000, 4),
            (20, 500, 5),
            (5, 500, 6),
            (600, 32_000, 7),
            (0, 510, 8),
            (10, 500, 9),
            // Due with entry 9 (and 3), set after it with a smaller entry.
            (10, 500, 0),
        ];
        for (from, delay, entry) in sets {
            let at = d.push(t0 + ms(from), ms(delay), entry);
            assert_eq!(at, t0 + ms(from + delay));
            expected.push((at, entry));
        }
        expected.sort();
        assert_eq!(d.len(), sets.len());
        assert_eq!(d.peek(), Some(expected[0].0));
        // Nothing is due before the first deadline.
        assert_eq!(d.pop_due(expected[0].0 - ms(1)), None);
        let mut got = Vec::new();
        while let Some(e) = d.pop_due(t0 + ms(20_000)) {
            got.push(e);
        }
        let due: Vec<_> = expected
            .iter()
            .copied()
            .filter(|(at, _)| *at <= t0 + ms(20_000))
            .collect();
        assert_eq!(got, due);
        assert_eq!(d.len(), 2);
        assert_eq!(d.peek(), Some(t0 + ms(32_000)));
        while let Some(e) = d.pop_due(t0 + ms(40_000)) {
            got.push(e);
        }
        assert_eq!(got, expected);
        assert_eq!((d.len(), d.peek()), (0, None));
    }

    /// Deadlines set at one instant out of entry order, near the back and far from
    /// it, and one from an earlier instant: out in time, then entry, order.
    #[test]
    fn ties_set_out_of_order_far_and_near_come_out_sorted() {
        let t0 = Instant::now();
        let delay = Duration::from_secs(32);
        let mut d = Deadlines::default();
        let mut expected = Vec::new();
        // Each pair swapped: the second goes just before the back.
        for pair in 0..2 * NEAR_BACK as u32 {
            for entry in [2 * pair + 1, 2 * pair] {
                expected.push((d.push(t0, delay, entry), entry));
            }
        }
        // Smaller than all of them: past the look near the back.
        expected.push((d.push(t0, delay, 0), 0));
        // Set from an earlier instant: before everything.
        expected.push((d.push(t0 - Duration::from_millis(5), delay, 1_000), 1_000));
        expected.sort();
        let mut got = Vec::new();
        while let Some(e) = d.pop_due(t0 + delay) {
            got.push(e);
        }
        assert_eq!(got, expected);
    }
}
