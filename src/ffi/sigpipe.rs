//! Keeps SIGPIPE away from the C program. The network threads write to sockets the hub may have
//! closed (a drop, a kick); on Linux those writes (`writev`) raise SIGPIPE, whose default action
//! kills the whole process, and a C program, unlike a Rust or Python one, has not ignored it. The
//! library's own threads must not change the program's signal handling, so instead they start
//! with SIGPIPE blocked: a write then fails with `EPIPE` (a dropped connection) and nothing else
//! happens. Threads inherit the creating thread's mask, so blocking it on the calling thread
//! while the shared runtime is created covers its workers and every thread they start.

use std::sync::Once;

/// Creates the shared runtime (once, from the first C call) with SIGPIPE blocked in its threads.
pub(crate) fn shield_runtime() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        #[cfg(unix)]
        // SAFETY: plain libc calls on local, initialised sigset_t values; the calling thread's
        // mask is restored before returning.
        unsafe {
            let mut pipe: libc::sigset_t = std::mem::zeroed();
            let mut before: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut pipe);
            libc::sigaddset(&mut pipe, libc::SIGPIPE);
            libc::pthread_sigmask(libc::SIG_BLOCK, &pipe, &mut before);
            let _ = crate::runtime::handle();
            libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
        }
        #[cfg(not(unix))]
        let _ = crate::runtime::handle();
    });
}
