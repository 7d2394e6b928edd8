//! What the ownership lease (issue 14, `src/replication/lease.rs`) adds to the
//! owner's read path: the check `Replication::caught_up` makes before serving
//! a session from memory, `lease_view.load().may_serve(id, now_ms())`, i.e. a
//! read of the monotonic clock, a load of the published `ArcSwap<LeaseView>`
//! and the decision (for the owner with every grant held, its fast path: one
//! ring lookup and two compares; else the rules: the session's holders in
//! the view's ring, the grants held from the others). Also its parts, the
//! rules for a session the node does not own, and the cheapest form of the
//! owner's answer (`Replication::lease_held`: clock, load, two compares), and
//! the check as the owner's read path makes it now, with the ring under which
//! routing found the node the owner (`owner_read_check_routed`: clock, load,
//! a pointer compare, two compares).
//!
//! A 3-node view with replication factor 2 and every grant held, as on a
//! healthy cluster; 128 virtual nodes per node, as the nodes' default.
//!
//! `cargo bench -p bench --bench lease`

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion};
use sessionmesh::testing::lease::{LeaseView, Leases, Millis, Serve};
use sessionmesh::testing::ring::Ring;
use sessionmesh::SessionId;

const VNODES: u32 = 128;
const COPIES: usize = 2;
const NODES: [&str; 3] = ["node1", "node2", "node3"];

/// `node1`'s leases with the grants of the two others held for a long time.
fn healthy_view() -> LeaseView {
    let ring = Arc::new(Ring::new(NODES, VNODES, 3));
    let mut leases = Leases::new("node1".into(), 3_000, 300, COPIES, 0);
    leases.ring_changed(ring.clone());
    for other in &NODES[1..] {
        leases.granted(&(*other).into(), ring.fingerprint(), 3_000, Millis::MAX / 4);
    }
    leases.view()
}

/// 1,024 session ids whose owner is `node`.
fn keys_owned_by(view: &LeaseView, node: &str) -> Vec<SessionId> {
    std::iter::repeat_with(SessionId::random)
        .filter(|id| view.ring.owner(id.as_bytes()).is_some_and(|o| &**o == node))
        .take(1024)
        .collect()
}

fn lease_check(c: &mut Criterion) {
    let view = healthy_view();
    let keys = keys_owned_by(&view, "node1");
    // Sessions `node1` does not own: it answers by the rules, not the
    // owner's fast path (a replica, or not a holder).
    let others = keys_owned_by(&view, "node2");
    let now = Millis::MAX / 4 - 1;
    assert_eq!(view.may_serve(keys[0].as_bytes(), now), Serve::Now);
    let published = ArcSwap::from_pointee(view.clone());
    let clock = Instant::now();
    // The view's clock reads "now" far into the grants: shift the real clock.
    let base = now - 1_000_000;
    let now_ms = || base + clock.elapsed().as_millis() as u64;

    let mut group = c.benchmark_group("lease");
    let mut i = 0usize;
    group.bench_function("owner_read_check", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let key = black_box(keys[i].as_bytes());
            black_box(published.load().may_serve(key, now_ms()) == Serve::Now)
        })
    });
    // The check as the owner's read path makes it: routing found this node
    // the owner under the membership view's ring, which the lease view
    // shares, so no second ring lookup (`LeaseView::may_serve_owned`).
    let ring = view.ring.clone();
    assert_eq!(
        view.may_serve_owned(&ring, keys[0].as_bytes(), now),
        Serve::Now
    );
    group.bench_function("owner_read_check_routed", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let key = black_box(keys[i].as_bytes());
            black_box(published.load().may_serve_owned(&ring, key, now_ms()) == Serve::Now)
        })
    });
    group.bench_function("clock_read", |b| b.iter(|| black_box(now_ms())));
    group.bench_function("view_load", |b| {
        b.iter(|| black_box(published.load().held_by_all_until))
    });
    group.bench_function("may_serve", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(view.may_serve(black_box(keys[i].as_bytes()), black_box(now)))
        })
    });
    group.bench_function("may_serve_not_owner", |b| {
        b.iter(|| {
            i = (i + 1) % others.len();
            black_box(view.may_serve(black_box(others[i].as_bytes()), black_box(now)))
        })
    });
    group.bench_function("lease_held", |b| {
        b.iter(|| {
            let now = now_ms();
            let view = published.load();
            black_box(now < view.held_by_all_until && now >= view.old_grants_until)
        })
    });
    group.finish();
}

criterion_group!(benches, lease_check);
criterion_main!(benches);
