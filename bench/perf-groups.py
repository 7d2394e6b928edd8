#!/usr/bin/env python3
"""Groups the samples of a profile of `bench --parts profile` by what they were
doing, per kind of thread (the node's main runtime, where the replication
queue and its link live, or the others: the actix workers).

    perf script -i <out>/profile/app_login_rf2-owner.perf.data -F tid,ip,sym > s.txt
    python3 bench/perf-groups.py s.txt <main runtime thread ids, comma-separated>

The main runtime's thread ids are in the report's "samples per thread"
(bench-app: the thread named bench-app, whose id is the pid; sessionmesh: the
tokio-rt-worker threads). Each sample counts once: for the first rule of
RULES[:6] that a frame of its stack matches, else allocation when its leaf is
malloc/free/memcpy, else the first of the remaining rules, else "other"."""
import re, sys, collections

ALLOC = re.compile(r'^(_int_malloc|_int_free|malloc|cfree|free|realloc|_int_realloc|unlink_chunk|malloc_consolidate|__libc_malloc|__libc_free|__rust_alloc|__rust_dealloc|tcache|sysmalloc|__memset|__memmove|__memcpy)')
RULES = [
    ('cookie signing (HMAC, base64, Set-Cookie)', re.compile(r'CookieCodec|add_cookie|hmac::|sha2::|base64::|cookie::Cookie')),
    ('id minting (random ids, ring lookups)', re.compile(r'mint_owned_id')),
    ('replication: peer queue task (batch JSON, acks)', re.compile(r'replication::peer_queue')),
    ('replication: owner side (replicate, hand-off, wait)', re.compile(r'Replication::replicate|Inner::enqueue|Inner::deliver|push_here|Replication::create')),
    ('link I/O (peer link writer/reader tasks, link server)', re.compile(r'sessionmesh::link::|tungstenite|actix_ws')),
    ('session store (insert, lookups)', re.compile(r'session::store::')),
    ('serialization (serde_json outside the above)', re.compile(r'serde_json|serde::')),
    ('HTTP (actix parse/encode/dispatch, response send)', re.compile(r'actix_http::|actix_web::|actix_server::|actix_router')),
    ('runtime: park/unpark, epoll, wake-ups, context switches', re.compile(r'epoll_wait|futex|park|unpark|wake|finish_task_switch|schedule|eventfd|mio::poll')),
]

def samples(path):
    tid, stack = None, []
    for line in open(path, errors='replace'):
        if not line.strip():
            if tid is not None:
                yield tid, stack
            tid, stack = None, []
            continue
        if not line.startswith('\t') and not line.startswith(' '):
            tid = line.split()[0]
            stack = []
        else:
            parts = line.strip().split(None, 1)
            stack.append(parts[1] if len(parts) > 1 else '?')
    if tid is not None:
        yield tid, stack

def classify(stack):
    leaf = stack[0] if stack else ''
    for name, rx in RULES[:6]:
        if any(rx.search(f) for f in stack):
            return name
    if ALLOC.match(leaf):
        return 'allocation (malloc/free/memcpy at the leaf)'
    for name, rx in RULES[6:]:
        if any(rx.search(f) for f in stack):
            return name
    return 'other'

def main():
    path, main_tid = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None
    by = collections.Counter(); threads = collections.Counter(); total = 0
    for tid, stack in samples(path):
        total += 1
        kind = 'main runtime' if (main_tid and tid in main_tid.split(',')) else 'workers and others'
        threads[tid] += 1
        by[(kind, classify(stack))] += 1
    print(f'samples: {total}; per thread: ' + ', '.join(f'{t} {n*100/total:.1f}%' for t, n in threads.most_common()))
    for (kind, name), n in sorted(by.items(), key=lambda kv: (kv[0][0], -kv[1])):
        print(f'| {kind} | {name} | {n*100/total:.1f} % |')

main()
