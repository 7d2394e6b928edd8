//! The axum example with tower-sessions (`examples/axum_tower_sessions.rs`)
//! on three nodes: the scenarios of `counter_apps`.

use crate::counter_apps;

const EXAMPLE: &str = "axum_tower_sessions";

#[tokio::test(flavor = "multi_thread")]
async fn a_session_follows_its_visitor_across_nodes() {
    counter_apps::a_session_follows_its_visitor_across_nodes(EXAMPLE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_session_outlives_its_owner_killed() {
    counter_apps::the_session_outlives_its_owner_killed(EXAMPLE).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_session_moves_when_its_owner_leaves() {
    counter_apps::the_session_moves_when_its_owner_leaves(EXAMPLE).await;
}
