//! The one tokio runtime every client of the process shares, created lazily on first use: network
//! loops of any number of clients are tasks on a small fixed set of worker threads.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Handle, Runtime};

fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(2)
            // DNS lookups of connects run on blocking threads: bounded, so a burst of
            // thousands of connects does not mean thousands of threads.
            .max_blocking_threads(4)
            .thread_name("ironhub-net")
            .enable_all()
            .build()
            .expect("cannot start the ironhub runtime")
    })
}

/// Handle of the shared runtime.
pub fn handle() -> &'static Handle {
    runtime().handle()
}

/// Runs `fut` on the shared runtime and blocks the calling thread until it finishes. Works from
/// any thread, including one inside another runtime (it blocks that thread, it does not panic).
pub fn block_on<F>(fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let task = handle().spawn(fut);
    match futures::executor::block_on(task) {
        Ok(v) => v,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => panic!("ironhub runtime task was cancelled"),
    }
}
