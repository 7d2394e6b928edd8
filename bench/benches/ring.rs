//! Ring cost at 10, 100 and 1000 nodes (128 virtual nodes each, the default):
//! building a snapshot (done on every membership change) and the per-request
//! lookups (`owner`, `preference_list`), keyed like real session ids.
//!
//! `cargo bench -p bench --bench ring`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sessionmesh::testing::ring::Ring;
use sessionmesh::SessionId;

const SIZES: [usize; 3] = [10, 100, 1000];
const VNODES: u32 = 128;

fn members(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("node-{i:04}")).collect()
}

fn keys() -> Vec<SessionId> {
    (0..1024).map(|_| SessionId::random()).collect()
}

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("ring_new");
    group.sample_size(10);
    for n in SIZES {
        let ids = members(n);
        group.bench_with_input(BenchmarkId::from_parameter(n), &ids, |b, ids| {
            b.iter(|| Ring::new(black_box(ids.iter().map(String::as_str)), VNODES, 3))
        });
    }
    group.finish();
}

fn lookups(c: &mut Criterion) {
    let keys = keys();
    for (name, copies) in [
        ("owner", 1),
        ("preference_list_2", 2),
        ("preference_list_3", 3),
    ] {
        let mut group = c.benchmark_group(name);
        for n in SIZES {
            let ring = Ring::new(members(n), VNODES, 3);
            let mut i = 0usize;
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter(|| {
                    i = (i + 1) % keys.len();
                    let key = black_box(keys[i].as_bytes());
                    if copies == 1 {
                        black_box(ring.owner(key).map(|n| n.len()))
                    } else {
                        black_box(Some(
                            ring.preference_list(key, copies).map(|n| n.len()).sum(),
                        ))
                    }
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, build, lookups);
criterion_main!(benches);
