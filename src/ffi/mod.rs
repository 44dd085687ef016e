//! The C ABI (`include/ironhub.h`): thin, panic-safe wrappers over the Rust client.
//!
//! Conventions (the contract is `docs/c-api.md`): opaque handles created by `*_new` / `*_create_from_*` and
//! released by `*_free`; every fallible call returns `ironhub_result` and writes its out-params
//! only on success; strings in are NUL-terminated UTF-8; strings out are freed with
//! `ironhub_string_free`; callbacks take `user_data` first and run on a dispatcher thread.
//! No logic lives here beyond argument conversion and safety: behaviour belongs to the core.
//!
//! Threads: a client handle may be used from any number of threads at once. A message or an
//! options handle must not be mutated by one thread while another uses it. The library's threads
//! start with SIGPIPE blocked (`sigpipe`): a hub closing a socket never kills the C program.

// Exported functions take raw pointers without being `unsafe fn`, as rustls-ffi does: every
// dereference goes through the checked helpers of `boundary`, and C callers cannot see `unsafe`.
#![allow(clippy::not_unsafe_ptr_arg_deref)]
#![allow(non_camel_case_types)]

pub(crate) mod boundary;
pub mod client;
mod error_map;
pub mod handlers;
pub(crate) mod handles;
pub mod message;
pub mod options;
pub mod provisioning;
pub mod result;
mod sigpipe;
#[cfg(feature = "https")]
pub mod upload;

pub use client::{ironhub_client, ironhub_send_callback};
pub use handlers::{
    ironhub_background_exception_callback, ironhub_connection_state_callback, ironhub_message_callback,
    ironhub_method_callback, ironhub_sastoken_callback, ironhub_twin_patch_callback,
};
pub use message::ironhub_message;
pub use options::ironhub_options;
pub use provisioning::ironhub_provisioning_client;
#[cfg(feature = "https")]
pub use upload::ironhub_upload_progress_callback;
pub use result::{ironhub_connection_reason, ironhub_result};
