//! The actix-session example (`examples/actix_session_from_redis.rs`) on
//! three nodes: the scenarios of `counter_apps`.

crate::counter_apps::counter_app_tests!("actix_session_from_redis");
