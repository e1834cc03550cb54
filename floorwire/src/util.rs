//! Small helpers shared by the protocol cores.

use std::collections::HashMap;
use std::hash::Hash;

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
    if map.capacity() > SHRINK_ABOVE && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
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
}
