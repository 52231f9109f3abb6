//! The async runtime unboxd serves on.
//!
//! One setting beyond tokio's defaults: a worker that runs out of work keeps its core for a
//! moment (`--idle-spin-us`, yielding it to anything else runnable) before it sleeps. Under a
//! boot storm a worker runs out of work between one answer and the next request many thousand
//! times a second; each time it slept, the next request had to wake it, and on a virtual machine
//! a core that went idle comes back late: the boot-storm bench measured 7-9% of the machine
//! idle during the fetches (1% during pgbench), 3-6% with a 100 µs spin. Tokio offers no spin
//! of its own; the park hook runs right before the worker sleeps, and a request that arrives
//! during the spin is then found at once, with no wake-up. The cost is at most one spin per
//! sleep, on a server that has little to do at that moment anyway.

use std::time::{Duration, Instant};

/// A multi-thread runtime (a worker a core) with every driver, spinning `idle_spin` before a
/// worker sleeps.
pub fn build(idle_spin: Duration) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if !idle_spin.is_zero() {
        builder.on_thread_park(move || spin(idle_spin));
    }
    builder.build()
}

/// Keeps the core for `duration`, yielding it to any thread that is ready to run.
fn spin(duration: Duration) {
    let until = Instant::now() + duration;
    while Instant::now() < until {
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Workers still sleep and wake: a task waiting for a timer and one woken from another
    /// thread both finish, with and without the spin.
    #[test]
    fn workers_sleep_and_wake_with_the_spin() {
        for spin in [Duration::ZERO, Duration::from_micros(100)] {
            let runtime = build(spin).unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel();
            let waiter = runtime.spawn(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                rx.await.unwrap()
            });
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                tx.send(42).unwrap();
            });
            assert_eq!(runtime.block_on(waiter).unwrap(), 42);
        }
    }
}
