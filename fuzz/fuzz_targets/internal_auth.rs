#![no_main]
//! See `sessionmesh_fuzz::internal_auth` for the property checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sessionmesh_fuzz::internal_auth(data));
