//! `ironhub_options`: the keyword options of the `create_from_*` factories (python-surface.md),
//! plus ironhub's own `operation_timeout`, ports and queue bounds.
//!
//! Each setter applies its value to a copy and runs the core's `ClientOptions::validate`, so a bad
//! value is refused at the setter that carries it (with the core's message) and a handle never
//! holds options a factory would reject for range reasons.

use std::ffi::c_char;
use std::time::Duration;

use super::boundary::{arg_mut, arg_str, ffi_fallible, ffi_panic_boundary, opt_str, FfiError};
use super::handles::Registry;
use super::ironhub_result;
use crate::options::{ClientOptions, ProxyOptions};

/// Options for a client factory. Create with `ironhub_options_new`, free with
/// `ironhub_options_free`; factories copy it, so it may be freed right after. One thread at a time
/// may use an options handle while any thread changes it (setters, free); factories only read it
/// and may share it. Every setter copies its string arguments.
pub struct ironhub_options {
    pub(crate) inner: ClientOptions,
}

static OPTIONS: Registry = Registry::new();

/// Borrowed options of a factory call: NULL means the defaults.
pub(crate) fn options_or_default(o: *const ironhub_options) -> ClientOptions {
    // SAFETY: a non-NULL options pointer is a live handle by the API contract.
    unsafe { o.as_ref() }.map(|o| o.inner.clone()).unwrap_or_default()
}

/// New options holding every default. Never NULL unless out of memory handling panicked.
#[no_mangle]
pub extern "C" fn ironhub_options_new() -> *mut ironhub_options {
    ffi_panic_boundary! {
        OPTIONS.export(ironhub_options { inner: ClientOptions::default() })
    }
}

/// Frees options. NULL-safe; free each handle exactly once (factories copy the options, so it may
/// be freed right after the factory returned).
#[no_mangle]
pub extern "C" fn ironhub_options_free(o: *mut ironhub_options) {
    ffi_panic_boundary! {
        drop(OPTIONS.reclaim(o));
    }
}

/// Applies `change` to a copy of `o`'s options and keeps it only if the core validates it.
fn update(
    o: *mut ironhub_options,
    change: impl FnOnce(&mut ClientOptions) -> Result<(), FfiError>,
) -> Result<(), FfiError> {
    let o = arg_mut(o, "o")?;
    let mut next = o.inner.clone();
    change(&mut next)?;
    next.validate().map_err(FfiError::from)?;
    o.inner = next;
    Ok(())
}

/// PEM text (not a path) of the root certificate(s) to trust instead of the public roots.
#[no_mangle]
pub extern "C" fn ironhub_options_set_server_verification_cert(
    o: *mut ironhub_options,
    pem: *const c_char,
) -> ironhub_result {
    ffi_fallible! {
        let pem = arg_str(pem, "pem")?.to_owned();
        update(o, |opts| { opts.server_verification_cert = Some(pem); Ok(()) })
    }
}

/// Host actually connected to (an IoT Edge gateway); the SAS resource keeps the hub host.
#[no_mangle]
pub extern "C" fn ironhub_options_set_gateway_hostname(o: *mut ironhub_options, host: *const c_char) -> ironhub_result {
    ffi_fallible! {
        let host = arg_str(host, "host")?.to_owned();
        update(o, |opts| { opts.gateway_hostname = Some(host); Ok(()) })
    }
}

/// MQTT over WebSockets (`wss://host:443/$iothub/websocket`).
#[no_mangle]
pub extern "C" fn ironhub_options_set_websockets(o: *mut ironhub_options, on: bool) -> ironhub_result {
    ffi_fallible! {
        update(o, |opts| { opts.websockets = on; Ok(()) })
    }
}

/// OpenSSL-style cipher list (`:`-separated names); unknown names are refused.
#[no_mangle]
pub extern "C" fn ironhub_options_set_cipher(o: *mut ironhub_options, cipher_list: *const c_char) -> ironhub_result {
    ffi_fallible! {
        let cipher = arg_str(cipher_list, "cipher_list")?.to_owned();
        update(o, |opts| { opts.cipher = cipher; Ok(()) })
    }
}

/// Appended to the user agent; a value starting with `dtmi` is a Plug and Play model id.
#[no_mangle]
pub extern "C" fn ironhub_options_set_product_info(o: *mut ironhub_options, info: *const c_char) -> ironhub_result {
    ffi_fallible! {
        let info = arg_str(info, "info")?.to_owned();
        update(o, |opts| { opts.product_info = info; Ok(()) })
    }
}

/// Connect through a proxy. `proxy_type` is "HTTP", "SOCKS4" or "SOCKS5"; `user` and `pass` may be NULL.
#[no_mangle]
pub extern "C" fn ironhub_options_set_proxy(
    o: *mut ironhub_options,
    proxy_type: *const c_char,
    addr: *const c_char,
    port: u16,
    user: *const c_char,
    pass: *const c_char,
) -> ironhub_result {
    ffi_fallible! {
        let proxy = ProxyOptions {
            proxy_type: crate::validate::proxy_type(arg_str(proxy_type, "proxy_type")?)?,
            proxy_addr: arg_str(addr, "addr")?.to_owned(),
            proxy_port: port,
            proxy_username: opt_str(user, "user")?.map(str::to_owned),
            proxy_password: opt_str(pass, "pass")?.map(str::to_owned),
        };
        update(o, |opts| { opts.proxy_options = Some(proxy); Ok(()) })
    }
}

/// Lifetime in seconds of the SAS tokens the client generates (default 3600).
#[no_mangle]
pub extern "C" fn ironhub_options_set_sastoken_ttl(o: *mut ironhub_options, seconds: u32) -> ironhub_result {
    ffi_fallible! {
        update(o, |opts| { opts.sastoken_ttl = Some(u64::from(seconds)); Ok(()) })
    }
}

/// MQTT keep-alive in seconds, 1..1740 (default 60).
#[no_mangle]
pub extern "C" fn ironhub_options_set_keep_alive(o: *mut ironhub_options, seconds: u32) -> ironhub_result {
    ffi_fallible! {
        update(o, |opts| { opts.keep_alive = u64::from(seconds); Ok(()) })
    }
}

/// Whether operations that need the network connect first (default true).
#[no_mangle]
pub extern "C" fn ironhub_options_set_auto_connect(o: *mut ironhub_options, on: bool) -> ironhub_result {
    ffi_fallible! {
        update(o, |opts| { opts.auto_connect = on; Ok(()) })
    }
}

/// Whether the client reconnects by itself after an unexpected drop (default true).
#[no_mangle]
pub extern "C" fn ironhub_options_set_connection_retry(o: *mut ironhub_options, on: bool) -> ironhub_result {
    ffi_fallible! {
        update(o, |opts| { opts.connection_retry = on; Ok(()) })
    }
}

/// Seconds between reconnect attempts, > 0 (default 10).
#[no_mangle]
pub extern "C" fn ironhub_options_set_connection_retry_interval(
    o: *mut ironhub_options,
    seconds: u32,
) -> ironhub_result {
    ffi_fallible! {
        update(o, |opts| { opts.connection_retry_interval = u64::from(seconds); Ok(()) })
    }
}

/// After every (re)connect, fetch the twin and deliver the whole desired document to the patch
/// handler when its `$version` moved (default true).
#[no_mangle]
pub extern "C" fn ironhub_options_set_ensure_desired_properties(o: *mut ironhub_options, on: bool) -> ironhub_result {
    ffi_fallible! {
        update(o, |opts| { opts.ensure_desired_properties = on; Ok(()) })
    }
}

/// ironhub only: bound in seconds on every blocking operation, > 0 (default 240).
#[no_mangle]
pub extern "C" fn ironhub_options_set_operation_timeout(o: *mut ironhub_options, seconds: u32) -> ironhub_result {
    ffi_fallible! {
        update(o, |opts| { opts.operation_timeout = Duration::from_secs(u64::from(seconds)); Ok(()) })
    }
}

/// ironhub only: telemetry messages queued or in flight at once, > 0 (default 1000; 0 is
/// `IRONHUB_ERROR_INVALID_ARGUMENT`). One send past the bound fails at once with
/// `IRONHUB_ERROR_CLIENT` ("queue full: ..."; for `ironhub_client_send_message_async`, through its
/// callback) and is not sent; raise it for large pipelined bursts.
#[no_mangle]
pub extern "C" fn ironhub_options_set_max_queued_messages(o: *mut ironhub_options, count: u32) -> ironhub_result {
    ffi_fallible! {
        update(o, |opts| { opts.max_queued_messages = count as usize; Ok(()) })
    }
}

/// ironhub only: bytes (topic + payload) of telemetry queued or in flight at once, > 0 (default
/// 4 MiB; 0 is `IRONHUB_ERROR_INVALID_ARGUMENT`); like `ironhub_options_set_max_queued_messages`,
/// one send past it fails at once with `IRONHUB_ERROR_CLIENT`.
#[no_mangle]
pub extern "C" fn ironhub_options_set_max_queued_bytes(o: *mut ironhub_options, bytes: u64) -> ironhub_result {
    ffi_fallible! {
        // Past usize (32-bit targets) the bound is unreachable anyway: saturate rather than refuse.
        update(o, |opts| { opts.max_queued_bytes = usize::try_from(bytes).unwrap_or(usize::MAX); Ok(()) })
    }
}

/// ironhub only: MQTT/TLS port of the hub or gateway, non-zero (default 8883).
#[no_mangle]
pub extern "C" fn ironhub_options_set_mqtt_port(o: *mut ironhub_options, port: u16) -> ironhub_result {
    ffi_fallible! {
        update(o, |opts| { opts.mqtt_port = port; Ok(()) })
    }
}

/// ironhub only: HTTPS / MQTT-over-WebSockets port, non-zero (default 443).
#[no_mangle]
pub extern "C" fn ironhub_options_set_https_port(o: *mut ironhub_options, port: u16) -> ironhub_result {
    ffi_fallible! {
        update(o, |opts| { opts.https_port = port; Ok(()) })
    }
}
