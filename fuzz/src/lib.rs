//! The properties that the fuzz targets check: one function per target, each
//! taking the fuzzer's raw bytes and panicking when a property fails.
//!
//! They use only sessionmesh and its own dependencies, so the main crate's
//! `tests/fuzz_properties.rs` includes this file as a module and replays every
//! property on the committed seeds (`fuzz/seeds/<target>/`), on the crash
//! reproductions kept in `fuzz/regressions/<target>/`, and on random inputs: the
//! properties run in CI even though cargo-fuzz does not.
//!
//! What each target stands for:
//! - [`cookie_decode`]: the `SESSION` cookie a browser sends (anyone can send anything);
//! - [`session_id`]: the `{id}` of `/api/sessions/{id}` and of the internal routes;
//! - [`replication_batch`]: the body of `POST /internal/replicate` from a peer, parsed,
//!   merged into a store and then served, copied, edited and deleted as a node does;
//! - [`internal_auth`]: the `x-sessionmesh-auth` header of internal requests;
//! - [`json_merge`]: `PATCH` of session data (RFC 7386 merge patch over stored text).

use std::borrow::Cow;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use sessionmesh::config::{Config, Secret};
use sessionmesh::testing::auth::Signer;
use sessionmesh::testing::cookie::CookieCodec;
use sessionmesh::testing::replication::client::Batch;
use sessionmesh::testing::session::{self, replica_copy, Change, Entry, Record, SessionId, Store};

/// The store's clock in these properties: fixed, so that a failure reproduces.
const NOW: u64 = 1_750_000_000_000;

fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// The id spelled by 16 bytes (every 128-bit value has exactly one spelling).
fn id_from(bits: &[u8]) -> SessionId {
    let spelled = URL_SAFE_NO_PAD.encode(&bits[..16]);
    SessionId::parse(&spelled).expect("the encoding of 16 bytes is a well-formed id")
}

fn cookie_codec(secret: &[u8]) -> CookieCodec {
    CookieCodec::new(&Config {
        cookie_secret: Secret::new(secret.to_vec()),
        ..Config::default()
    })
}

/// Cookie values: anything decodes to no session, except the exact cookie of an
/// id under this secret; a valid cookie with one byte changed, cut short,
/// lengthened or signed with another secret names no session.
pub fn cookie_decode(data: &[u8]) {
    let codec = cookie_codec(b"fuzz-cookie-secret-0123456789abcdef");
    let value = text(data);
    if let Some(id) = codec.decode(&value) {
        assert_eq!(codec.encode(&id), value, "a cookie has one spelling");
    }
    if data.len() < 18 {
        return;
    }
    let id = id_from(data);
    let good = codec.encode(&id);
    assert_eq!(codec.decode(&good), Some(id), "a cookie we made decodes");
    let mut bytes = good.clone().into_bytes();
    let at = usize::from(data[16]) % bytes.len();
    bytes[at] = data[17];
    if let Ok(changed) = std::str::from_utf8(&bytes) {
        if changed != good {
            assert_eq!(codec.decode(changed), None, "one byte changed: {changed:?}");
        }
    }
    let cut = usize::from(data[16]) % good.len();
    assert_eq!(
        codec.decode(&good[..cut]),
        None,
        "cut short: {:?}",
        &good[..cut]
    );
    let longer = format!("{good}{}", text(&data[18..]));
    if longer != good {
        assert_eq!(codec.decode(&longer), None, "lengthened: {longer:?}");
    }
    let other = cookie_codec(b"another-cookie-secret-0123456789ab");
    assert_eq!(other.decode(&good), None, "signed with another secret");
}

/// Session ids: a parsed id is exactly the text it came from, 22 URL-safe base64
/// characters spelling 16 bytes canonically; every 16 bytes spell one id.
pub fn session_id(data: &[u8]) {
    let given = text(data);
    if let Some(id) = SessionId::parse(&given) {
        assert_eq!(id.as_str(), given);
        assert_eq!(id.as_str().len(), 22);
        let bits = URL_SAFE_NO_PAD
            .decode(id.as_bytes())
            .expect("an id is base64");
        assert_eq!(bits.len(), 16);
        assert_eq!(URL_SAFE_NO_PAD.encode(&bits), given, "one spelling per id");
        assert_eq!(SessionId::parse(&id.to_string()), Some(id));
    }
    if data.len() >= 16 {
        let id = id_from(data);
        assert_eq!(SessionId::parse(id.as_str()), Some(id));
    }
}

/// A replication batch from a peer: parsing never panics; every record that a
/// node accepts (as `Replication::apply` does: a well-formed id, then
/// `Record::into_entry`) round-trips through its wire form, and a node holding
/// it can serve it, copy it to peers, edit it and delete it without panicking.
pub fn replication_batch(data: &[u8]) {
    let Ok(batch) = serde_json::from_slice::<Batch>(data) else {
        return;
    };
    let store = Store::default();
    let mut held = Vec::new();
    for record in batch.records {
        let Some(id) = SessionId::parse(&record.id) else {
            continue;
        };
        let wire = serde_json::to_string(&record).expect("a record serialises");
        let Some(entry) = record.into_entry() else {
            continue;
        };
        if let Entry::Live(s) = &entry {
            assert!(s.data.get().starts_with('{'), "live data is an object");
        }
        let again: Record = serde_json::from_str(&wire).expect("a serialised record parses");
        let again = again.into_entry().expect("and is accepted again");
        assert!(
            !again.supersedes(&entry) && !entry.supersedes(&again),
            "the wire form is the same copy"
        );
        if store.merge(id, entry, NOW) {
            held.push(id);
        }
    }
    for id in held {
        use_copy(&store, &id);
    }
}

/// What a node does with a copy it holds.
fn use_copy(store: &Store, id: &SessionId) {
    let Some(entry) = store.entry(id, NOW) else {
        return;
    };
    // Sent to a peer (replication, handoff, read-through): the peer accepts it.
    let record = Record::from_entry(id.as_str(), &replica_copy(&entry));
    let wire = serde_json::to_vec(&record).expect("a copy serialises");
    let back: Record = serde_json::from_slice(&wire).expect("a copy we send parses");
    assert!(back.into_entry().is_some(), "a copy we send is accepted");
    // Served: the session document of the API.
    if let Ok((doc, touch)) = store.read(id, NOW, |s| {
        sessionmesh::testing::api_document(*id, s, "node1", vec!["node2"])
            .expect("a document serialises")
    }) {
        assert!(doc.starts_with('{'));
        if let Some(touch) = touch {
            let _ = replica_copy(&touch);
        }
    }
    // Edited (PATCH) and deleted, as the owner does.
    let patch: Map<String, Value> = [("counter".to_owned(), Value::from(1))]
        .into_iter()
        .collect();
    let _ = store.write(
        id,
        NOW + 1,
        |s| Ok(Change::data(merge_edit(&s.data, &patch))),
        |s| s.version,
    );
    if let Ok(tombstone) = store.delete(id, NOW + 2, |_| Ok(())) {
        let record = Record::from_entry(id.as_str(), &replica_copy(&tombstone));
        assert!(
            record.into_entry().is_some(),
            "a tombstone we send is accepted"
        );
    }
}

/// PATCH as the session API applies it: the stored text is parsed, merged
/// with the patch and stored as compact text.
pub fn merge_edit(current: &RawValue, patch: &Map<String, Value>) -> Box<RawValue> {
    sessionmesh::testing::merge_patch(current, patch)
}

/// Internal request signatures: arbitrary headers are never accepted; a header
/// made by `sign` verifies for that request and names its signer; the same header
/// with one byte changed is refused, and so is one made with another secret.
pub fn internal_auth(data: &[u8]) {
    let signer = Signer::new(Secret::new(b"fuzz-cluster-secret-0123456789ab".to_vec()));
    let given = text(data);
    let mut parts = given.splitn(3, '\n');
    let header = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or("POST");
    let path = parts.next().unwrap_or("/internal/replicate");
    assert!(
        signer.verify(Some(header), method, path, data).is_err(),
        "a header nobody signed was accepted: {header:?}"
    );
    if data.len() < 2 {
        return;
    }
    let node = if header.is_empty() { "node1" } else { header };
    let good = signer.sign(node, method, path, data);
    assert_eq!(signer.verify(Some(&good), method, path, data), Ok(node));
    assert!(
        signer
            .verify(Some(&good), method, path, b"another body")
            .is_err()
            || data == b"another body",
        "a signature accepted another body"
    );
    let mut bytes = good.clone().into_bytes();
    let at = usize::from(data[0]) % bytes.len();
    bytes[at] = data[1];
    if let Ok(changed) = std::str::from_utf8(&bytes) {
        if changed != good {
            assert!(
                signer.verify(Some(changed), method, path, data).is_err(),
                "one byte changed and still accepted: {changed:?}"
            );
        }
    }
    let other = Signer::new(Secret::new(b"another-cluster-secret-0123456789".to_vec()));
    assert!(other.verify(Some(&good), method, path, data).is_err());
}

/// JSON merge patch (RFC 7386) on session data: `data` is a document and a patch
/// separated by a NUL byte. For any two JSON values a merge never panics, and a
/// patch that is not an object replaces the target. For two objects, merged as
/// the session API does (through stored text): the result is an object that
/// parses again (so a later PATCH never finds unparsable data), keys the patch
/// sets to null are gone, other patch values are in place, untouched keys keep
/// their values, and applying the patch again changes nothing.
pub fn json_merge(data: &[u8]) {
    let (doc, patch) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b"{}"[..]),
    };
    let (Ok(doc), Ok(patch)) = (
        serde_json::from_slice::<Value>(doc),
        serde_json::from_slice::<Value>(patch),
    ) else {
        return;
    };
    let mut target = doc.clone();
    json_patch::merge(&mut target, &patch);
    if patch.is_object() {
        assert!(target.is_object(), "an object patch gives an object");
    } else {
        assert_eq!(target, patch, "a non-object patch replaces the target");
    }
    let (Value::Object(doc), Value::Object(patch)) = (doc, patch) else {
        return;
    };
    let stored = session::to_raw(&doc);
    let merged = merge_edit(&stored, &patch);
    let value: Value = serde_json::from_str(merged.get()).expect("merged data parses again");
    let Value::Object(result) = &value else {
        panic!("merged data is not an object: {}", merged.get());
    };
    for (key, v) in &patch {
        match v {
            Value::Null => assert!(!result.contains_key(key), "{key} was set to null"),
            Value::Object(_) => assert!(result[key].is_object(), "{key} is an object"),
            v => assert!(same(&result[key], v), "{key}: {} != {v}", result[key]),
        }
    }
    for (key, v) in &doc {
        if !patch.contains_key(key) {
            assert!(same(&result[key], v), "untouched {key} changed");
        }
    }
    let twice = merge_edit(&merged, &patch);
    let twice: Value = serde_json::from_str(twice.get()).expect("parses again");
    assert!(same(&twice, &value), "merge patch is idempotent");
}

/// Equality of JSON values, with floats equal within a rounding error (serde_json
/// does not promise that printing and parsing a float gives it back exactly).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            _ if x == y => true,
            (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (x, y) => x == y,
    }
}
