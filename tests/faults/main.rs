//! Load and fault tests: a real `hark up` on loopback under an open-loop load, overloaded,
//! with a replica killed, with its store's disk full or read-only, and with its Docker
//! Engine restarted. Its own test binary, because cargo runs test binaries one after
//! another: the load shares the machine with nothing else of the test suite. Within the
//! binary the tests take [`exclusive`] so they do not load the machine at once either.

#[allow(dead_code)]
#[path = "../hark/util.rs"]
mod util;

mod disk;
mod engine;
mod load;
mod overload;
mod replica;

use tokio::sync::{Mutex, MutexGuard};

/// Held by each test for its whole run: one load or fault test at a time.
pub async fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::const_new(());
    LOCK.lock().await
}

/// Has the gateway write the activation records it still holds (they are written in
/// batches, a moment after each call): the activation listing writes them before it
/// answers. For tests that read the database itself.
pub async fn flush_activations(gw: &util::Gateway) {
    let listed = gw
        .request(reqwest::Method::GET, "/system/activations?limit=1")
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200, "the listing flushes pending records");
}
