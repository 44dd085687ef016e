//! Ownership of every allocation handed to C: handles (`Box`) and owned strings (`CString`).
//!
//! Each kind has a registry of live addresses, so `*_free` is NULL-safe and a pointer this library
//! never handed out (e.g. a message lent to a callback) is never freed. The registry also catches
//! many double frees, but it cannot tell a stale pointer from a new handle at a reused address:
//! the header therefore says "free exactly once", and promises nothing about a second free.

use std::collections::BTreeSet;
use std::ffi::{c_char, CString};
use std::sync::Mutex;

/// Live addresses of one kind of allocation, stored inverted (`!addr`): a leak checker
/// (LeakSanitizer, valgrind) scanning memory must not mistake the registry for a reference, or a
/// handle the C program forgot to free would never be reported.
pub struct Registry(Mutex<BTreeSet<usize>>);

fn key<T>(ptr: *const T) -> usize {
    !(ptr as usize)
}

impl Registry {
    pub const fn new() -> Self {
        Self(Mutex::new(BTreeSet::new()))
    }

    fn live(&self) -> std::sync::MutexGuard<'_, BTreeSet<usize>> {
        // A panic while holding this lock cannot leave the set half-updated (single insert or
        // remove), so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands `value` to C.
    pub fn export<T>(&self, value: T) -> *mut T {
        let ptr = Box::into_raw(Box::new(value));
        self.live().insert(key(ptr));
        ptr
    }

    /// Whether `ptr` is a live handle of this registry (a freed address may be live again once the
    /// allocator reused it for a new handle: this is a diagnostic, not a guarantee).
    pub fn contains<T>(&self, ptr: *const T) -> bool {
        self.live().contains(&key(ptr))
    }

    /// Takes back what `export` handed out; `None` for NULL, an already freed or a foreign pointer.
    pub fn reclaim<T>(&self, ptr: *mut T) -> Option<Box<T>> {
        if ptr.is_null() || !self.live().remove(&key(ptr)) {
            return None;
        }
        // SAFETY: the address was produced by `Box::into_raw` in `export` for this registry's
        // type and removed from the live set just now, so it is reclaimed exactly once.
        Some(unsafe { Box::from_raw(ptr) })
    }
}

static STRINGS: Registry = Registry::new();

/// Hands an owned string to C (freed with `ironhub_string_free`).
pub fn export_string(s: String) -> *mut c_char {
    // Interior NULs cannot occur in the JSON we return (serde escapes them); drop any anyway
    // rather than fail or truncate silently at the first one.
    let c = CString::new(s).unwrap_or_else(|e| {
        let bytes: Vec<u8> = e.into_vec().into_iter().filter(|b| *b != 0).collect();
        CString::new(bytes).unwrap_or_default()
    });
    let raw = c.into_raw();
    STRINGS.live().insert(key(raw));
    raw
}

/// Frees a string this library returned (e.g. by `ironhub_client_get_twin`). NULL-safe. Free each
/// string exactly once; a pointer this library did not return is ignored.
#[no_mangle]
pub extern "C" fn ironhub_string_free(s: *mut c_char) {
    super::boundary::ffi_panic_boundary! {
        if s.is_null() || !STRINGS.live().remove(&key(s)) {
            return;
        }
        // SAFETY: `s` came from `CString::into_raw` in `export_string` and was live until now.
        drop(unsafe { CString::from_raw(s) });
    }
}
