//! sessionmesh: a session cluster with no external store.
pub mod config;
