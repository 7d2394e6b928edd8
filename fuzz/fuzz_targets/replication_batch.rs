#![no_main]
//! See `sessionmesh_fuzz::replication_batch` for the property checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sessionmesh_fuzz::replication_batch(data));
