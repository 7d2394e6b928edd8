//! The axum example with tower-sessions (`examples/axum_tower_sessions.rs`)
//! on three nodes: the scenarios of `counter_apps`.

crate::counter_apps::counter_app_tests!("axum_tower_sessions");
