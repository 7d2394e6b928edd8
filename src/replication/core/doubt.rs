//! Doubt after a ring change: a node that holds a session under the new ring
//! but did not under the old one held no copy the writes went to meanwhile,
//! so the copy it still has (from before it lost the session) may be stale.
//! Such a copy is put in doubt: served again only after a read-through.

use crate::ring::Ring;

/// Whether `me`'s copy of `key` is to be doubted after the ring changed from
/// `old` to `new`: it holds the key under `new` and did not under `old`.
pub fn regained(old: &Ring, new: &Ring, key: &[u8], me: &str, rf: usize) -> bool {
    new.holds(key, me, rf) && !old.holds(key, me, rf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_holder_again_after_not_being_one_doubts() {
        let four = Ring::new(["a", "b", "c", "d"], 16, 4);
        let three = Ring::new(["a", "b", "c"], 16, 4);
        let rf = 2;
        let mut regains = 0;
        for i in 0u32..200 {
            let key = i.to_be_bytes();
            for me in ["a", "b", "c"] {
                let got = regained(&four, &three, &key, me, rf);
                let want = three.holds(&key, me, rf) && !four.holds(&key, me, rf);
                assert_eq!(got, want);
                regains += usize::from(got);
                // The same ring puts nothing in doubt, and losing a key neither.
                assert!(!regained(&three, &three, &key, me, rf));
                if !three.holds(&key, me, rf) {
                    assert!(!regained(&four, &three, &key, me, rf));
                }
            }
        }
        assert!(regains > 0, "d's keys went to the others");
    }
}
