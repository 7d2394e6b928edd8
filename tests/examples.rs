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

#[path = "examples/counter_apps.rs"]
mod counter_apps;

#[path = "examples/actix_session_from_redis.rs"]
mod actix_session_from_redis;

#[path = "examples/axum_tower_sessions.rs"]
mod axum_tower_sessions;
