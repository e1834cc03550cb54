//! Small helpers shared by the protocol cores.

use std::collections::HashMap;
use std::hash::Hash;

/// Tables at or below this capacity are never shrunk (not worth the rehash).
pub const SHRINK_ABOVE: usize = 1024;

/// Gives back the room a burst left in `map`: one four times larger than what it
/// holds is shrunk to twice that. A `HashMap` keeps its peak capacity otherwise, and
/// the values of the call tables are large, so a busy minute would hold its peak for
/// good. Cheap to call often: it only rehashes when the map is that oversized.
pub fn shrink_map<K: Eq + Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > SHRINK_ABOVE && map.len() * 4 < map.capacity() {
        map.shrink_to(map.len() * 2);
    }
}

#[cfg(test)]
mod tests {
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
