//! What an anti-entropy round costs a node (issue 14, `src/replication/sync.rs`):
//! each round walks the whole store once to build the digest of the copies
//! it shares with one peer (and the peer walks its store once to answer),
//! on tokio's blocking threads, holding each of the store's 64 shard locks
//! for its part of the walk.
//!
//! A store of 100,000 sessions of about 100 bytes, a 3-node ring (128
//! virtual nodes each, replication factor 2) in which `node1` owns about a
//! third; the digest of what `node1` owns and `node2` holds.
//!
//! `cargo bench -p bench --bench anti_entropy`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use sessionmesh::testing::anti_entropy::digest;
use sessionmesh::testing::ring::Ring;
use sessionmesh::testing::session::{now_millis, to_raw, Session, SessionId, Store};

const SESSIONS: usize = 100_000;

fn walk(c: &mut Criterion) {
    let store = Store::new(64 * 1024);
    let now = now_millis();
    for i in 0..SESSIONS {
        let mut data = serde_json::Map::new();
        data.insert("user".into(), format!("user{i}").into());
        data.insert("cart".into(), serde_json::json!([i]));
        let data = to_raw(&data);
        let session = Session::new(data, Duration::from_secs(3600), now);
        store
            .insert_new(SessionId::random(), session, now)
            .expect("a fresh random id");
    }
    let ring = Ring::new(["node1", "node2", "node3"], 128, 3);
    let mut group = c.benchmark_group("anti_entropy");
    group.sample_size(20);
    group.bench_function("digest_walk_100k_sessions", |b| {
        b.iter(|| black_box(digest(&store, &ring, 2, "node1", "node2")))
    });
    group.finish();
}

criterion_group!(benches, walk);
criterion_main!(benches);
