//! The fuzz targets' properties (`fuzz/src/lib.rs`), run by `cargo test`: on the
//! committed seeds, on the crash reproductions the fuzzer found (kept in
//! `fuzz/regressions/<target>/`), and on random structured inputs from proptest.
//! The long, coverage-guided runs are `scripts/fuzz.sh` (see `fuzz/README.md`).

#[path = "../fuzz/src/lib.rs"]
mod props;

use std::path::Path;

use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use serde_json::{json, Value};

/// A fuzz target's property: panics when it fails on the input.
type Property = fn(&[u8]);

const TARGETS: &[(&str, Property)] = &[
    ("cookie_decode", props::cookie_decode),
    ("session_id", props::session_id),
    ("replication_batch", props::replication_batch),
    ("internal_auth", props::internal_auth),
    ("json_merge", props::json_merge),
];

/// Every committed seed and regression input passes its target's property.
#[test]
fn seeds_and_regressions_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for (target, check) in TARGETS {
        for kind in ["seeds", "regressions"] {
            let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
                continue;
            };
            for file in dir {
                let path = file.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let outcome = std::panic::catch_unwind(|| check(&data));
                assert!(outcome.is_ok(), "{target}: {} fails", path.display());
                replayed += 1;
            }
        }
    }
    assert!(replayed > 0, "no seed found under {}", root.display());
    eprintln!("replayed {replayed} seed and regression inputs");
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-c\u{e9}\"\\\\]{0,3}".prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map("[a-d]", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    btree_map("[a-e]", json_value(), 0..5).prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// Numbers a peer might send: ordinary ones and the edges.
fn wire_number() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(i64::MAX as u64),
        0u64..10,
        1_749_000_000_000u64..1_760_000_000_000,
        any::<u64>(),
    ]
}

/// A replication record: a well-formed or garbage id, any numbers, data that
/// is an object, another JSON value, or absent (a tombstone).
fn record() -> impl Strategy<Value = Value> {
    let id = prop_oneof![
        any::<[u8; 16]>().prop_map(|bits| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bits)
        }),
        ".{0,30}",
    ];
    let data = prop_oneof![
        json_object().prop_map(Some),
        json_value().prop_map(Some),
        Just(None),
    ];
    (
        id,
        (wire_number(), wire_number(), wire_number()),
        (wire_number(), wire_number()),
        data,
    )
        .prop_map(
            |(id, (version, updated_at, created_at), (expires_at, ttl_ms), data)| {
                let mut r = json!({
                    "id": id, "version": version, "updated_at": updated_at,
                    "created_at": created_at, "expires_at": expires_at, "ttl_ms": ttl_ms,
                });
                if let Some(data) = data {
                    r["data"] = data;
                }
                r
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn cookie_decode_on_random_bytes(data in vec(any::<u8>(), 0..80)) {
        props::cookie_decode(&data);
    }

    #[test]
    fn cookie_decode_on_cookie_like_text(text in "[A-Za-z0-9_\\-]{0,24}\\.?[A-Za-z0-9_\\-.=]{0,24}") {
        props::cookie_decode(text.as_bytes());
    }

    #[test]
    fn session_id_on_random_text(text in "[A-Za-z0-9_\\-+/=]{20,24}", bytes in vec(any::<u8>(), 0..40)) {
        props::session_id(text.as_bytes());
        props::session_id(&bytes);
    }

    #[test]
    fn replication_batch_on_structured_records(records in vec(record(), 0..6)) {
        let batch = json!({"from": "peer", "records": records});
        props::replication_batch(&serde_json::to_vec(&batch).unwrap());
    }

    #[test]
    fn replication_batch_on_random_bytes(data in vec(any::<u8>(), 0..200)) {
        props::replication_batch(&data);
    }

    #[test]
    fn internal_auth_on_random_text(header in ".{0,60}", method in "[A-Z]{0,7}", path in "/[ -~]{0,40}") {
        props::internal_auth(format!("{header}\n{method}\n{path}").as_bytes());
    }

    #[test]
    fn json_merge_on_random_values(doc in json_value(), patch in json_value()) {
        let mut data = serde_json::to_vec(&doc).unwrap();
        data.push(0);
        data.extend(serde_json::to_vec(&patch).unwrap());
        props::json_merge(&data);
    }

    #[test]
    fn json_merge_on_random_objects(doc in json_object(), patch in json_object()) {
        let mut data = serde_json::to_vec(&doc).unwrap();
        data.push(0);
        data.extend(serde_json::to_vec(&patch).unwrap());
        props::json_merge(&data);
    }
}
