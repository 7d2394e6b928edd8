#![no_main]
//! See `sessionmesh_fuzz::session_id` for the property checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sessionmesh_fuzz::session_id(data));
