#![no_main]
//! See `sessionmesh_fuzz::cookie_decode` for the property checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sessionmesh_fuzz::cookie_decode(data));
