#![no_main]
//! See `sessionmesh_fuzz::json_merge` for the property checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sessionmesh_fuzz::json_merge(data));
