//! sessionmesh: a session cluster with no external store.
//!
//! Architecture in ten lines:
//! - [`membership`]: nodes find each other by chitchat gossip and publish their
//!   addresses and status (`joining` → `ready` → `leaving`).
//! - [`ring`]: the `ready` members form a consistent-hash ring (explicit virtual
//!   nodes, the same on every node); the first node clockwise from a session id's
//!   hash owns the session.
//! - [`routing`]: a request naming a session is served here when this node owns it,
//!   else forwarded once to the owner's internal listener ([`peer_client`]); page
//!   reads ask the owner for the session over a multiplexed [`link`] instead,
//!   and replication batches travel over links too.
//! - [`session`]: the owner keeps sessions in memory with a sliding idle TTL.
//! - [`replication`]: each write is copied to the next nodes clockwise before it
//!   is acknowledged; after a ring change, copies move to their new holders.
//! - [`http`]: public pages and JSON API, cluster/health routes, the internal
//!   listener (every request signed with the cluster secret, see [`auth`]);
//!   [`tls`] optionally puts either listener, and every request to a peer, on TLS.
//! - [`node`]: start-up in order, graceful leave in reverse; [`config`] is parsed once.
//! - [`metrics`]: Prometheus families of one node; `/dashboard` and the [`cli`]
//!   subcommands (`status`, `whereis`, `leave`, `local-cluster`) are built on the
//!   same public HTTP routes.

pub mod auth;
pub mod cli;
pub mod config;
pub mod cookie;
pub mod http;
pub mod link;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod peer_client;
pub mod replication;
pub mod ring;
pub mod routing;
pub mod session;
pub mod tls;

pub use config::Config;
pub use node::{start, BoundAddrs, Node, NodeHandle};
