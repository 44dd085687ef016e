//! The panic boundary and argument checks every exported function goes through.
//!
//! `ffi_panic_boundary!` wraps a body (not the signature) so `#[no_mangle] pub extern "C" fn`
//! stays visible to cbindgen; a panic becomes `IRONHUB_ERROR_PANIC` (or NULL / false / 0) instead
//! of unwinding into C, which is undefined behaviour. `ffi_fallible!` adds the conversion of a
//! `Result<(), FfiError>` into a result code plus the thread's last-error text.

use std::ffi::{c_char, CStr};

use super::result::{clear_last_error, ironhub_result, set_last_error};

/// What an exported function returns when its body panicked.
pub trait PanicValue {
    fn panic_value() -> Self;
}

impl PanicValue for ironhub_result {
    fn panic_value() -> Self {
        ironhub_result::IRONHUB_ERROR_PANIC
    }
}
impl<T> PanicValue for *mut T {
    fn panic_value() -> Self {
        std::ptr::null_mut()
    }
}
impl<T> PanicValue for *const T {
    fn panic_value() -> Self {
        std::ptr::null()
    }
}
impl PanicValue for bool {
    fn panic_value() -> Self {
        false
    }
}
impl PanicValue for usize {
    fn panic_value() -> Self {
        0
    }
}
impl PanicValue for () {
    fn panic_value() -> Self {}
}

/// Records a caught panic as the thread's last error and yields the function's panic value.
pub fn caught_panic<T: PanicValue>(payload: Box<dyn std::any::Any + Send>) -> T {
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    set_last_error(&format!("internal error (panic): {detail}"));
    T::panic_value()
}

macro_rules! ffi_panic_boundary {
    ( $($body:tt)* ) => {{
        // Before anything can start the shared runtime: its threads never get SIGPIPE.
        $crate::ffi::sigpipe::shield_runtime();
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| { $($body)* })) {
            Ok(value) => value,
            Err(payload) => $crate::ffi::boundary::caught_panic(payload),
        }
    }};
}
pub(crate) use ffi_panic_boundary;

/// Body returns `Result<(), FfiError>` (use `?` freely); the function returns `ironhub_result`.
macro_rules! ffi_fallible {
    ( $($body:tt)* ) => {
        $crate::ffi::boundary::ffi_panic_boundary! {
            #[allow(clippy::redundant_closure_call)]
            let outcome: ::std::result::Result<(), $crate::ffi::boundary::FfiError> = (|| { $($body)* })();
            $crate::ffi::boundary::finish(outcome)
        }
    };
}
pub(crate) use ffi_fallible;

/// An error on its way to C: a code plus the detail for `ironhub_last_error_message`.
#[derive(Debug)]
pub struct FfiError {
    pub code: ironhub_result,
    pub message: String,
}

impl FfiError {
    pub fn new(code: ironhub_result, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
    pub fn null(name: &str) -> Self {
        Self::new(ironhub_result::IRONHUB_ERROR_NULL_PARAMETER, format!("`{name}` is NULL"))
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ironhub_result::IRONHUB_ERROR_INVALID_ARGUMENT, message)
    }
}

pub fn finish(outcome: Result<(), FfiError>) -> ironhub_result {
    match outcome {
        Ok(()) => {
            clear_last_error();
            ironhub_result::IRONHUB_OK
        }
        Err(e) => {
            set_last_error(&e.message);
            e.code
        }
    }
}

/// Borrows a handle argument; NULL is `IRONHUB_ERROR_NULL_PARAMETER`.
///
/// The caller (C) promises a non-NULL pointer came from this library and is still alive; the
/// returned lifetime is the call's.
pub fn arg_ref<'a, T>(ptr: *const T, name: &str) -> Result<&'a T, FfiError> {
    // SAFETY: non-NULL pointers are live handles by the C API's contract.
    unsafe { ptr.as_ref() }.ok_or_else(|| FfiError::null(name))
}

/// As `arg_ref`, mutably: C callers do not share a message or options handle across threads
/// while mutating it (documented in the header).
pub fn arg_mut<'a, T>(ptr: *mut T, name: &str) -> Result<&'a mut T, FfiError> {
    // SAFETY: as arg_ref; exclusive use during the call is the caller's promise.
    unsafe { ptr.as_mut() }.ok_or_else(|| FfiError::null(name))
}

/// A required NUL-terminated UTF-8 string argument.
pub fn arg_str<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, FfiError> {
    opt_str(ptr, name)?.ok_or_else(|| FfiError::null(name))
}

/// An optional string argument: NULL means "not given".
pub fn opt_str<'a>(ptr: *const c_char, name: &str) -> Result<Option<&'a str>, FfiError> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL string arguments are NUL-terminated by the C API's contract.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    bytes.to_str().map(Some).map_err(|_| FfiError::invalid(format!("`{name}` is not valid UTF-8")))
}

/// A `(data, len)` byte buffer; NULL is accepted only with `len == 0`.
pub fn arg_bytes<'a>(data: *const u8, len: usize, name: &str) -> Result<&'a [u8], FfiError> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(FfiError::null(name));
    }
    // SAFETY: the caller gave `len` readable bytes at `data`.
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

/// An out-parameter, checked before any work so that a NULL one fails without side effects;
/// `write` is the only way to fill it, and is called on success only.
pub struct Out<T>(*mut T);

impl<T> Out<T> {
    pub fn new(ptr: *mut T, name: &str) -> Result<Self, FfiError> {
        if ptr.is_null() {
            Err(FfiError::null(name))
        } else {
            Ok(Self(ptr))
        }
    }
    pub fn write(self, value: T) {
        // SAFETY: checked non-NULL in `new`; the caller gave a writable slot. `write` does not
        // drop the (uninitialised) previous contents.
        unsafe { self.0.write(value) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last_error() -> String {
        let mut buf = vec![0 as c_char; 256];
        let n = crate::ffi::result::ironhub_last_error_message(buf.as_mut_ptr(), buf.len());
        assert!(n > 0);
        // SAFETY: ironhub_last_error_message NUL-terminates within `buf`.
        unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
    }

    #[test]
    fn a_panic_becomes_ironhub_error_panic_with_its_message() {
        let r: ironhub_result = ffi_fallible! {
            if true {
                panic!("boom in the core");
            }
            Ok(())
        };
        assert_eq!(r, ironhub_result::IRONHUB_ERROR_PANIC);
        assert!(last_error().contains("boom in the core"));
        let p: *const u8 = ffi_panic_boundary! { panic!("pointer") };
        assert!(p.is_null());
    }

    #[test]
    fn errors_set_and_success_clears_the_thread_error() {
        let r: ironhub_result = ffi_fallible! { Err(FfiError::invalid("bad value")) };
        assert_eq!(r, ironhub_result::IRONHUB_ERROR_INVALID_ARGUMENT);
        assert_eq!(last_error(), "bad value");
        let r: ironhub_result = ffi_fallible! { Ok(()) };
        assert_eq!(r, ironhub_result::IRONHUB_OK);
        assert_eq!(crate::ffi::result::ironhub_last_error_message(std::ptr::null_mut(), 0), 0);
    }

    #[test]
    fn invalid_utf8_is_an_invalid_argument_and_null_a_null_parameter() {
        let bad = [b'a', 0xff, 0];
        let e = arg_str(bad.as_ptr().cast(), "s").unwrap_err();
        assert_eq!(e.code, ironhub_result::IRONHUB_ERROR_INVALID_ARGUMENT);
        let e = arg_str(std::ptr::null(), "s").unwrap_err();
        assert_eq!(e.code, ironhub_result::IRONHUB_ERROR_NULL_PARAMETER);
        assert!(opt_str(std::ptr::null(), "s").unwrap().is_none());
        assert!(arg_bytes(std::ptr::null(), 0, "d").unwrap().is_empty());
        assert!(arg_bytes(std::ptr::null(), 3, "d").is_err());
    }
}
