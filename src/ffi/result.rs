//! Result codes, connection reasons and the per-thread last-error text of the C ABI.
//!
//! Codes are part of the contract: never renumber or reuse one, only append.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::sync::OnceLock;

use strum::IntoEnumIterator;

/// Outcome of every fallible call. `IRONHUB_OK` is 0; every other value is an error whose
/// detail (if any) is available from `ironhub_last_error_message` on the same thread.
///
/// This enum is the one list of codes: their names (`ironhub_result_str`) and the conversion from
/// a raw number are derived from it, so nothing is kept in step by hand.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::FromRepr, strum::IntoStaticStr, strum::EnumIter)]
#[allow(non_camel_case_types)]
pub enum ironhub_result {
    IRONHUB_OK = 0,
    /// A required pointer argument was NULL.
    IRONHUB_ERROR_NULL_PARAMETER = 1,
    /// An argument had a bad value: invalid UTF-8, bad JSON, bad connection string, out of range.
    IRONHUB_ERROR_INVALID_ARGUMENT = 2,
    /// Any other client error (Python `ClientError`), including use after shutdown.
    IRONHUB_ERROR_CLIENT = 3,
    /// The connection could not be established (Python `ConnectionFailedError`).
    IRONHUB_ERROR_CONNECTION_FAILED = 4,
    /// The connection dropped while the operation was under way (`ConnectionDroppedError`).
    IRONHUB_ERROR_CONNECTION_DROPPED = 5,
    /// Not connected and auto-connect is off (`NoConnectionError`).
    IRONHUB_ERROR_NO_CONNECTION = 6,
    /// The hub refused the credentials (`CredentialError`).
    IRONHUB_ERROR_CREDENTIAL = 7,
    /// The operation did not complete in time (`OperationTimeout`).
    IRONHUB_ERROR_OPERATION_TIMEOUT = 8,
    /// The operation was cancelled by disconnect, shutdown or free, or a send was cut by a drop with
    /// `connection_retry` off (`OperationCancelled`).
    IRONHUB_ERROR_OPERATION_CANCELLED = 9,
    /// The service answered with a failure status (`ServiceError`).
    IRONHUB_ERROR_SERVICE = 10,
    /// The message is larger than IoT Hub accepts (256 KB telemetry).
    IRONHUB_ERROR_MESSAGE_TOO_LARGE = 11,
    /// The client was shut down; it accepts no further operation.
    IRONHUB_ERROR_SHUT_DOWN = 12,
    /// A Rust panic was caught at the boundary; the call had no effect that can be relied on.
    IRONHUB_ERROR_PANIC = 13,
    /// The call is not allowed from inside a callback of this client (`ironhub_client_free`):
    /// it would wait for the very callback that made it. Nothing was done.
    IRONHUB_ERROR_IN_CALLBACK = 14,
}

/// Why the connection state changed, as azure-iot-sdk-c names it.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum ironhub_connection_reason {
    IRONHUB_REASON_OK = 0,
    IRONHUB_REASON_EXPIRED_SAS_TOKEN = 1,
    IRONHUB_REASON_DEVICE_DISABLED = 2,
    IRONHUB_REASON_BAD_CREDENTIAL = 3,
    IRONHUB_REASON_RETRY_EXPIRED = 4,
    IRONHUB_REASON_NO_NETWORK = 5,
    IRONHUB_REASON_COMMUNICATION_ERROR = 6,
    IRONHUB_REASON_NO_PING_RESPONSE = 7,
    IRONHUB_REASON_CLIENT_CLOSE = 8,
}

impl ironhub_result {
    /// The code's name as a static C string (made once from the enum's own variant names).
    pub fn name(self) -> &'static CStr {
        static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
        let names = NAMES.get_or_init(|| {
            ironhub_result::iter()
                .map(|c| CString::new(<&'static str>::from(c)).expect("variant names have no NUL"))
                .collect()
        });
        let index = ironhub_result::iter().position(|c| c == self).expect("every code is in iter()");
        &names[index]
    }
}

thread_local! {
    // Per thread, like errno: a caller reads the detail of its own last failed call, never
    // another thread's.
    static LAST_ERROR: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Records `message` as this thread's last error detail (NUL bytes are dropped so the C copy
/// is never cut short).
pub(crate) fn set_last_error(message: &str) {
    LAST_ERROR.with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        e.extend(message.bytes().filter(|b| *b != 0));
    });
}

pub(crate) fn clear_last_error() {
    LAST_ERROR.with(|e| e.borrow_mut().clear());
}

/// Name of a result code, e.g. `"IRONHUB_ERROR_CREDENTIAL"`; `"IRONHUB_ERROR_UNKNOWN"` for a
/// value that is no code. Static storage: never free it.
///
/// Takes the raw number (the C `ironhub_result` is a `uint32_t` typedef) so that any value a C
/// program passes is sound to receive.
#[no_mangle]
pub extern "C" fn ironhub_result_str(r: u32) -> *const c_char {
    crate::ffi::boundary::ffi_panic_boundary! {
        ironhub_result::from_repr(r).map_or(c"IRONHUB_ERROR_UNKNOWN", ironhub_result::name).as_ptr()
    }
}

/// Copies the calling thread's last error detail into `buf` (at most `len - 1` bytes, always
/// NUL-terminated when `len > 0`) and returns the buffer size the whole text needs, terminating
/// NUL included: call with `buf = NULL, len = 0` to size a buffer. Returns 0 when the thread's
/// last fallible call succeeded or there was none. The text never contains keys, signatures or
/// tokens.
#[no_mangle]
pub extern "C" fn ironhub_last_error_message(buf: *mut c_char, len: usize) -> usize {
    crate::ffi::boundary::ffi_panic_boundary! {
        LAST_ERROR.with(|e| {
            let e = e.borrow();
            if e.is_empty() {
                if !buf.is_null() && len > 0 {
                    // SAFETY: the caller gave a writable buffer of at least `len` (> 0) bytes.
                    unsafe { *buf = 0 };
                }
                return 0;
            }
            if !buf.is_null() && len > 0 {
                let n = e.len().min(len - 1);
                // SAFETY: `buf` holds `len` bytes and we write `n + 1 <= len` of them; the
                // regions cannot overlap (ours is a Rust-owned Vec).
                unsafe {
                    std::ptr::copy_nonoverlapping(e.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            e.len() + 1
        })
    }
}

/// The library version, e.g. `"0.1.0"` (equals the `IRONHUB_VERSION` define of the header it
/// was built with). Static storage: never free it.
#[no_mangle]
pub extern "C" fn ironhub_version() -> *const c_char {
    crate::ffi::boundary::ffi_panic_boundary! {
        const VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => panic!("version has no interior NUL"),
        };
        VERSION.as_ptr()
    }
}
