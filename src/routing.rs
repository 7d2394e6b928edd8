//! Where a request for a session is served: here, or on its owner (one hop at most).
//!
//! Pure: a function of the ring snapshot, the session id, this node's id and
//! whether the request was already forwarded once.

use crate::ring::{NodeId, Ring};

/// The routing decision for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// Serve from this node's memory.
    Local,
    /// Forward to the owner's internal listener.
    Forward(&'a NodeId),
}

/// Decides where a request that names `key` is served.
///
/// A forwarded request is always served where it lands, whatever this node
/// believes about the ring: rings disagree for a gossip round or two after a
/// change, and bouncing a request between two nodes with different rings must
/// never happen. An empty ring (a lone node that is not ready yet, or the last node
/// leaving) also serves locally.
pub fn route<'a>(ring: &'a Ring, key: &[u8], self_id: &str, forwarded: bool) -> Route<'a> {
    if forwarded {
        return Route::Local;
    }
    match ring.owner(key) {
        Some(owner) if &**owner != self_id => Route::Forward(owner),
        _ => Route::Local,
    }
}

/// Whether a freshly minted id would be owned by `self_id`; used to create
/// sessions that need no forward.
pub fn owns(ring: &Ring, key: &[u8], self_id: &str) -> bool {
    ring.owner(key).is_some_and(|o| &**o == self_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn forwards_go_to_the_owner_and_never_twice(key in any::<[u8; 16]>(), me in 0usize..3, forwarded: bool) {
            let ring = Ring::new(["a", "b", "c"], 32, 2);
            let me = ["a", "b", "c"][me];
            let owner = ring.owner(&key).unwrap();
            match route(&ring, &key, me, forwarded) {
                Route::Local => prop_assert!(forwarded || &**owner == me),
                Route::Forward(to) => {
                    prop_assert!(!forwarded);
                    prop_assert_eq!(to, owner);
                    prop_assert_ne!(&**to, me);
                }
            }
        }
    }

    #[test]
    fn an_empty_ring_serves_locally() {
        assert_eq!(route(&Ring::empty(), b"k", "a", false), Route::Local);
        assert!(!owns(&Ring::empty(), b"k", "a"));
    }
}
