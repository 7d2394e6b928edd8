//! The sessionmesh benchmark harness (`cargo run --release -p bench`, or
//! `scripts/bench.sh` which also builds the release binary; see BENCHMARKS.md).
//!
//! Layout:
//! - [`tools`]: checks for (and on Debian installs) `redis-server` and `wrk`.
//! - [`procs`]: real child processes on loopback: redis-server, the peer
//!   (`bench-peer`), sessionmesh nodes (the real binary).
//! - [`wrk`]: one wrk run (or several at once) with a Lua script that dumps wrk's
//!   whole latency histogram, so that runs merge exactly ([`stats`]).
//! - [`throughput`]: the contenders and their scenarios, run in interleaved rounds.
//! - [`gateway`]: a Flask application with Flask-Session and Redis against the
//!   same application behind sessionmesh's gateway mode, and alone (issue 15).
//! - [`memory`]: bytes per session, sessionmesh RSS against Redis `used_memory`.
//! - [`dynamics`]: join visibility, failure detection and takeover after kill -9.
//! - [`profile`]: perf profiles of the owner and forwarded read paths.
//! - [`report`]: the Markdown table and the JSON under `target/bench/`.
//! - [`page`]: the demo page template shared with the peer.

pub mod dynamics;
pub mod gateway;
pub mod memory;
pub mod page;
pub mod procs;
pub mod profile;
pub mod report;
pub mod stats;
pub mod throughput;
pub mod tools;
pub mod wrk;
