//! Small helpers shared by the protocol cores.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The hash map of the SIP core's tables (transactions, calls, legs): foldhash, seeded
/// at random per table like the standard `RandomState`, so keys a peer chooses
/// (branches, Call-IDs, tags) cannot be picked to collide, at a fraction of SipHash's
/// cost on these short string keys.
pub type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Tables at or below this capacity are never shrunk (not worth the rehash).
pub const SHRINK_ABOVE: usize = 1024;

/// Gives back the room a burst left in `map`: one four times larger than what it
/// holds is shrunk to twice that. A `HashMap` keeps its peak capacity otherwise, and
/// the values of the call tables are large, so a busy minute would hold its peak for
/// good. Cheap to call often: it only rehashes when the map is that oversized.
pub fn shrink_map<K: Eq + Hash, V, S: std::hash::BuildHasher>(map: &mut HashMap<K, V, S>) {
    if let Some(capacity) = shrunk_capacity(map.len(), map.capacity()) {
        map.shrink_to(capacity);
    }
}

/// The capacity a table (map, queue) holding `len` in room for `capacity` is shrunk
/// to, when it is oversized: above [`SHRINK_ABOVE`] and four times larger than what it
/// holds, twice that; `None` otherwise. [`shrink_map`]'s rule, for any table.
pub fn shrunk_capacity(len: usize, capacity: usize) -> Option<usize> {
    (capacity > SHRINK_ABOVE && len * 4 < capacity).then_some(len * 2)
}

/// How often, at most, a SIP core checks its tables for room to give back.
pub const SHRINK_EVERY: Duration = Duration::from_secs(1);

/// Paces [`shrink_map`]: a table whose size swings with the traffic (calls in flight
/// double in a burst and drain after it) would otherwise be rehashed down and grown
/// again at every swing. Checks run at most once per [`SHRINK_EVERY`], and at once
/// when the tables are empty. A check put off is owed: [`ShrinkPace::owed_at`] says
/// when to run it, so tables left oversized by a burst that ended inside the
/// interval (and nothing after it to ask again) still give their room back.
#[derive(Debug, Default)]
pub struct ShrinkPace {
    last: Option<Instant>,
    owed: bool,
}

impl ShrinkPace {
    /// Whether the tables may be checked now (and the check counted as done); when
    /// not, the check is owed.
    pub fn due(&mut self, now: Instant, empty: bool) -> bool {
        let due = empty
            || self
                .last
                .is_none_or(|last| now.saturating_duration_since(last) >= SHRINK_EVERY);
        if due {
            self.last = Some(now);
        }
        self.owed = !due;
        due
    }

    /// When the check put off last should run, if one was.
    pub fn owed_at(&self) -> Option<Instant> {
        self.last
            .filter(|_| self.owed)
            .map(|last| last + SHRINK_EVERY)
    }
}

/// The process's open-file limit (the soft `RLIMIT_NOFILE`, from `/proc/self/limits`);
/// `None` when it cannot be read or is unlimited.
pub fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    open_file_limit_in(&limits)
}

fn open_file_limit_in(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_open_file_limit_is_the_soft_one() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63432                63432                processes \n\
                      Max open files            20000                524288               files     \n";
        assert_eq!(super::open_file_limit_in(limits), Some(20_000));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(super::open_file_limit_in(unlimited), None);
        assert!(super::open_file_limit().is_some_and(|n| n > 0));
    }

    #[test]
    fn an_oversized_map_gives_room_back_and_a_small_one_is_left_alone() {
        let mut map: std::collections::HashMap<u32, [u8; 64]> =
            (0..10_000).map(|i| (i, [0; 64])).collect();
        map.retain(|k, _| *k < 100);
        let before = map.capacity();
        super::shrink_map(&mut map);
        assert!(
            map.capacity() < before / 4,
            "{} -> {}",
            before,
            map.capacity()
        );
        assert_eq!(map.len(), 100);
        let mut small: std::collections::HashMap<u32, u8> = (0..500).map(|i| (i, 0)).collect();
        small.clear();
        let cap = small.capacity();
        super::shrink_map(&mut small);
        assert_eq!(small.capacity(), cap);
    }

    #[test]
    fn shrink_checks_run_once_a_second_or_when_the_tables_are_empty() {
        let start = std::time::Instant::now();
        let at = |ms| start + std::time::Duration::from_millis(ms);
        let mut pace = super::ShrinkPace::default();
        assert!(pace.due(at(0), false), "the first check runs");
        assert!(!pace.due(at(10), false));
        assert!(!pace.due(at(999), false));
        assert!(pace.due(at(10), true), "empty tables are checked at once");
        assert!(!pace.due(at(1009), false), "a second after the last check");
        assert!(pace.due(at(1010), false));
    }

    #[test]
    fn a_check_put_off_is_owed_until_it_runs() {
        let start = std::time::Instant::now();
        let at = |ms| start + std::time::Duration::from_millis(ms);
        let mut pace = super::ShrinkPace::default();
        assert!(pace.due(at(0), false));
        assert_eq!(pace.owed_at(), None, "nothing put off");
        assert!(!pace.due(at(300), false));
        assert_eq!(pace.owed_at(), Some(at(1000)));
        assert!(pace.due(at(1000), false));
        assert_eq!(pace.owed_at(), None, "paid");
    }
}
