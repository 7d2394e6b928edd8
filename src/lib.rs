//! sessionmesh: a session cluster with no external store.
//!
//! Web applications keep login state in sessions. sessionmesh keeps them in
//! the memory of the application's own nodes instead of Redis: the nodes find
//! each other by gossip, a consistent-hash ring makes one node the owner of
//! each session, any node reaches a session's owner in one hop, and replicas
//! on the next nodes of the ring keep sessions alive when a node dies.
//!
//! An application holds a [`Mesh`]: a running node and the typed session
//! operations on it ([`Mesh::get`], [`Mesh::create`], [`Mesh::merge_patch`],
//! [`Mesh::delete`], [`Mesh::renew`], ...), routed to the session's holders.
//! On top of it:
//! - [`actix`]: a middleware and a [`actix::Session`] extractor for the
//!   application's own actix-web routes;
//! - stores for the session crates applications already use, behind cargo
//!   features: `actix-session` (module `actix_session`) and `tower-sessions`
//!   (module `tower_sessions`, for axum);
//! - [`web`]: the JSON session API and operator routes (health, metrics,
//!   dashboard) to serve beside the application, and the public server the
//!   `sessionmesh` binary runs.
//! - [`gateway`]: gateway mode, for applications in any language: with
//!   `upstream` set, the binary routes every request to its session's owner
//!   and proxies it to the application next to that node, the session in
//!   request headers and its changes in response headers (`docs/gateway.md`).
//!
//! ```no_run
//! use actix_web::{web, App, HttpServer, Responder};
//! use sessionmesh::actix::{Session, SessionMiddleware};
//! use sessionmesh::{Config, Mesh};
//!
//! async fn visit(session: Session) -> actix_web::Result<impl Responder> {
//!     let visits: u64 = session.get("visits")?.unwrap_or(0) + 1;
//!     session.insert("visits", visits)?;
//!     Ok(format!("visit number {visits}, served with the session of {}", session.served_by()))
//! }
//!
//! #[actix_web::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let config = Config::load(&Default::default())?; // SESSIONMESH_* and flags
//!     let mesh = Mesh::start(config).await?;
//!     let app_mesh = mesh.clone();
//!     HttpServer::new(move || {
//!         App::new()
//!             .wrap(SessionMiddleware::new(app_mesh.clone()))
//!             .route("/", web::get().to(visit))
//!     })
//!     .bind(("127.0.0.1", 8080))?
//!     .run()
//!     .await?;
//!     mesh.shutdown().await;
//!     Ok(())
//! }
//! ```
//!
//! Inside, in ten lines (`docs/architecture.md` has the long form):
//! membership is chitchat gossip, every datagram sealed with the cluster
//! secret, with typed members (`joining` → `ready` → `leaving`), admitted only
//! after proving the cluster secret; the ready
//! members form a consistent-hash ring with explicit virtual nodes; the routing
//! policy sends an operation to the owner, or to the replica that takes over;
//! operations travel as frames on multiplexed peer links over the internal
//! listener (every request signed); the owner keeps sessions in a sharded
//! in-memory store with a sliding idle TTL and copies every write to its
//! replicas before acknowledging it; after a ring change, handoff moves copies
//! to their new holders; a node that was paused or regains sessions asks the
//! other holders before it serves its copies.

#![warn(missing_docs)]

pub mod actix;
#[cfg(feature = "actix-session")]
pub mod actix_session;
#[doc(hidden)]
pub mod cli;
pub mod config;
pub mod gateway;
#[cfg(feature = "tower-sessions")]
pub mod tower_sessions;
pub mod web;

mod auth;
mod cookie;
mod http;
mod link;
mod membership;
mod mesh;
mod metrics;
mod node;
mod protocol;
mod replication;
mod ring;
mod routing;
mod session;
mod tls;

pub use config::Config;
pub use mesh::{Document, Error, IfMatch, Mesh, MeshBuilder, StartError};
pub use session::{InvalidSessionId, SessionId};

/// The README's Rust code, compiled as doc tests so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Internals for this crate's own tests, benchmarks and fuzz targets. Not part
/// of the API: no stability promise, may change at any time.
#[doc(hidden)]
pub mod testing {
    pub use crate::node::Node;

    /// The node behind a mesh.
    pub fn node(mesh: &crate::Mesh) -> &Node {
        mesh.node()
    }

    /// The session API's JSON document of a session as `node` holds it.
    pub fn api_document(
        id: crate::SessionId,
        session: &crate::session::Session,
        node: &str,
        replicas: Vec<&str>,
    ) -> serde_json::Result<String> {
        let doc = crate::Document::new(id, session, node.into());
        crate::http::document_json(&doc, replicas)
    }

    /// RFC 7386 merge of `patch` into session data, as a PATCH applies it.
    pub fn merge_patch(
        current: &serde_json::value::RawValue,
        patch: &serde_json::Map<String, serde_json::Value>,
    ) -> Box<serde_json::value::RawValue> {
        crate::mesh::merge_patch(current, patch)
    }

    pub mod auth {
        pub use crate::auth::{body_digest, Signer, DIGEST_HEADER, HEADER, SESSION_HEADER};
    }
    pub mod cookie {
        pub use crate::cookie::CookieCodec;
    }
    pub mod link {
        pub use crate::link::{
            Frame, ACK, FAILED, FOUND, LINK_PATH, MISSING, OP, OP_REPLY, READ, REPLICATE,
        };
    }
    pub mod replication {
        pub mod client {
            pub use crate::replication::client::{Batch, REPLICATE_PATH};
        }
    }
    pub mod session {
        pub use crate::session::{
            check_version, empty_object, now_millis, replica_copy, to_raw, Change, Entry, Record,
            Session, SessionId, Store,
        };
    }
    pub mod tls {
        pub use crate::tls::{InternalTls, PublicTls};
    }
    pub mod ring {
        pub use crate::ring::Ring;
    }
    pub mod anti_entropy {
        use crate::ring::Ring;
        use crate::session::Store;

        /// The digest an anti-entropy round computes: one walk over `store`,
        /// summing the copies of sessions `owner` owns and `holder` holds.
        pub fn digest(
            store: &Store,
            ring: &Ring,
            rf: usize,
            owner: &str,
            holder: &str,
        ) -> Vec<u64> {
            crate::replication::anti_entropy_digest(store, ring, rf, owner, holder)
                .sums()
                .to_vec()
        }
    }
    pub mod lease {
        pub use crate::replication::lease::{LeaseView, Leases, Millis, Serve};
    }
    pub mod membership {
        pub use crate::membership::gossip::{
            DropReason, GossipDrops, GossipKeys, SealedTransport, HEADER_LEN as SEAL_HEADER_LEN,
            SEAL_LEN,
        };
        pub use crate::membership::Status;
    }
}
