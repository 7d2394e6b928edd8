//! The replication core: every decision the replication layer takes, as pure,
//! synchronous types with no tokio, no sockets and no clock of their own. The
//! async code in [`super`] and [`super::rebalance`] only moves copies and
//! answers between nodes and feeds what came back to these types, as toydb's
//! server drives its Raft node by messages and ticks.
//!
//! - [`write`]: the write quorum of one write ([`WriteRound`]): which peers
//!   get the copy, stand-ins for the ones that fail, the refusal of a write
//!   made on a stale copy, and when the write may be acknowledged.
//! - [`read`]: read-through ([`ReadThrough`]): which holders to ask, and
//!   whether their answers are enough to trust the best copy (or a miss).
//! - [`doubt`]: which copies a ring change puts in doubt.
//! - [`handoff`]: after a ring change, who sends each copy to whom, and when
//!   a node that no longer holds a copy may drop it ([`HandoffPass`]).
//!
//! The leases ([`super::lease`]) and anti-entropy ([`super::anti_entropy`])
//! are network-free in the same way. The tests of this module drive several
//! nodes, each with a real [`crate::session::Store`], through a simulated
//! network that drops, delays, duplicates and reorders messages and pauses
//! nodes, across ring changes of one member at a time.

pub mod doubt;
pub mod handoff;
pub mod read;
pub mod write;

#[cfg(test)]
mod sim;

pub use handoff::{HandoffPass, Placement};
pub use read::ReadThrough;
pub use write::{Delivery, Step, Verdict, WriteRound, FALLBACKS};
