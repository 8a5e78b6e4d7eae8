//! Memory benchmark: the heap each stage of a sync keeps alive, at 1000 and 10000 Services × 10
//! endpoints (the cluster of `planner.rs` and `hack/bench`).
//!
//! Run with `cargo bench -p kproxy-rules --bench memory`. It prints a markdown table of the
//! bytes each value holds, counted by a global allocator that tracks live bytes: what the
//! program asked for, without the allocator's own overhead and fragmentation, so the agent's
//! RSS is higher than the sum.

#![allow(unsafe_code, reason = "a counting global allocator is unsafe by definition")]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{cluster, cluster_with_one_endpoint_changed, convert, node, to_model};
use kproxy_rules::model;
use kproxy_rules::nft::{self, Transaction};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only a counter is updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Builds a value and returns it with the bytes it keeps alive.
fn retained<T>(build: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    let value = build();
    (value, LIVE.load(Ordering::Relaxed).saturating_sub(before))
}

fn mib(bytes: usize) -> String {
    format!("{:.1}", bytes as f64 / (1024.0 * 1024.0))
}

fn main() {
    let sizes = [1000, 10000];
    let mut rows: Vec<(&str, Vec<usize>)> = [
        "k8s-openapi objects (Services + EndpointSlices)",
        "model objects (converted)",
        "joined Service ports",
        "ruleset (`nft::render`)",
        "full transaction (`Transaction::replace`)",
        "its nft text, whole (`kproxy debug render`; `kproxy run` streams it to nft in 1 MiB chunks)",
        "incremental update for one endpoint (`nft::diff`)",
    ]
    .into_iter()
    .map(|name| (name, Vec::new()))
    .collect();
    for n in sizes {
        let (objects, bytes) = retained(|| cluster(n));
        rows[0].1.push(bytes);
        let (converted, bytes) = retained(|| convert(&objects));
        rows[1].1.push(bytes);
        let (ports, bytes) = retained(|| model::join(&converted.0, &converted.1).ports);
        rows[2].1.push(bytes);
        let (ruleset, bytes) = retained(|| nft::render(&ports, &node()));
        rows[3].1.push(bytes);
        let (replace, bytes) = retained(|| Transaction::replace(&ruleset));
        rows[4].1.push(bytes);
        let (_text, bytes) = retained(|| replace.to_string());
        rows[5].1.push(bytes);
        let after = nft::render(&to_model(&cluster_with_one_endpoint_changed(n)), &node());
        let (_update, bytes) = retained(|| nft::diff(&ruleset, &after));
        rows[6].1.push(bytes);
    }
    println!("| live heap, MiB | {} |", sizes.map(|n| format!("N={n}")).join(" | "));
    println!("|---|{}", "---|".repeat(sizes.len()));
    for (name, bytes) in rows {
        println!("| {name} | {} |", bytes.iter().map(|b| mib(*b)).collect::<Vec<_>>().join(" | "));
    }
}
