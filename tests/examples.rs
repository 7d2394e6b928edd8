//! The examples of `examples/`, each run as a cluster of its real binary (one
//! child process a node, real gossip and HTTP on loopback) and used as their
//! users would use them, crashes included.
//!
//! `harness` starts and stops the clusters (of any example binary that takes
//! the `sessionmesh` flags); one module an example holds its scenarios.

mod common;

#[path = "examples/harness.rs"]
mod harness;

#[path = "examples/cart.rs"]
mod cart;
