//! Keyword arguments of the `create_from_*` factories → the core's `ClientOptions`.
//! Mirrors azure-iot-device's argument handling: an unknown (or, for this factory, refused)
//! keyword is a `TypeError`, a value of the wrong type a `TypeError`, a value out of range a
//! `ValueError` (the range checks themselves are the core's `ClientOptions::validate`).

use std::time::Duration;

use ironhub::{ClientOptions, ProxyOptions};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use crate::errors::to_py_err;

/// Every keyword any factory accepts: azure-iot-device's, then ironhub's own.
const KNOWN_KWARGS: &[&str] = &[
    "server_verification_cert",
    "gateway_hostname",
    "websockets",
    "cipher",
    "product_info",
    "proxy_options",
    "sastoken_ttl",
    "keep_alive",
    "auto_connect",
    "connection_retry",
    "connection_retry_interval",
    "ensure_desired_properties",
    // ironhub only: ports (for a hub on non-standard ports) and the bound on every operation.
    "mqtt_port",
    "https_port",
    "operation_timeout",
    // ironhub only: the telemetry queue bounds (one send past them is a ClientError at once).
    "max_queued_messages",
    "max_queued_bytes",
];

/// Builds validated options from `kwargs`; `refused` lists the keywords this factory does
/// not take (e.g. `sastoken_ttl` for `create_from_sastoken`).
pub fn from_kwargs(
    kwargs: Option<&Bound<'_, PyDict>>,
    refused: &[String],
) -> PyResult<ClientOptions> {
    let mut options = ClientOptions::default();
    let Some(kwargs) = kwargs else {
        return Ok(options);
    };
    // Names first, values second, like azure-iot-device: a typo is reported even when
    // another keyword also has a bad value.
    for key in kwargs.keys() {
        let name: String = key.extract()?;
        if !KNOWN_KWARGS.contains(&name.as_str()) || refused.contains(&name) {
            return Err(PyTypeError::new_err(format!(
                "Unsupported keyword argument: '{name}'"
            )));
        }
    }
    for (key, value) in kwargs.iter() {
        let name: String = key.extract()?;
        apply(&mut options, &name, &value)?;
    }
    options.validate().map_err(to_py_err)?;
    Ok(options)
}

fn apply(options: &mut ClientOptions, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
    match name {
        "server_verification_cert" => options.server_verification_cert = optional_str(name, value)?,
        "gateway_hostname" => options.gateway_hostname = optional_str(name, value)?,
        "websockets" => options.websockets = value.is_truthy()?,
        "cipher" => options.cipher = cipher(value)?,
        "product_info" => options.product_info = optional_str(name, value)?.unwrap_or_default(),
        "proxy_options" => options.proxy_options = proxy_options(value)?,
        "sastoken_ttl" => options.sastoken_ttl = Some(non_negative(name, value)?),
        "keep_alive" => options.keep_alive = non_negative(name, value)?,
        "auto_connect" => options.auto_connect = value.is_truthy()?,
        "connection_retry" => options.connection_retry = value.is_truthy()?,
        "connection_retry_interval" => {
            options.connection_retry_interval = non_negative(name, value)?
        }
        "ensure_desired_properties" => options.ensure_desired_properties = value.is_truthy()?,
        "mqtt_port" => options.mqtt_port = port(name, value)?,
        "https_port" => options.https_port = port(name, value)?,
        "operation_timeout" => options.operation_timeout = seconds(name, value)?,
        "max_queued_messages" => options.max_queued_messages = count(name, value)?,
        "max_queued_bytes" => options.max_queued_bytes = count(name, value)?,
        _ => unreachable!("names were checked against KNOWN_KWARGS"),
    }
    Ok(())
}

fn optional_str(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    if value.is_none() {
        return Ok(None);
    }
    value
        .extract::<String>()
        .map(Some)
        .map_err(|_| PyTypeError::new_err(format!("Invalid type for '{name}'. Must be a string.")))
}

/// `int(value)` as azure-iot-device applies it ("60" and 60.0 pass; "abc" is a TypeError).
fn integer(name: &str, value: &Bound<'_, PyAny>) -> PyResult<i128> {
    let int_type = value.py().get_type::<pyo3::types::PyInt>();
    int_type
        .call1((value,))
        .and_then(|i| i.extract::<i128>())
        .map_err(|_| {
            PyTypeError::new_err(format!(
                "Invalid type for '{name}'. Must be a numeric value."
            ))
        })
}

/// Negative values become 0 so that the core's range check reports them as a ValueError.
fn non_negative(name: &str, value: &Bound<'_, PyAny>) -> PyResult<u64> {
    let i = integer(name, value)?;
    Ok(u64::try_from(i.max(0)).unwrap_or(u64::MAX))
}

fn port(name: &str, value: &Bound<'_, PyAny>) -> PyResult<u16> {
    let i = integer(name, value)?;
    u16::try_from(i).ok().filter(|p| *p != 0).ok_or_else(|| {
        PyValueError::new_err(format!(
            "'{name}' must be a port number (1..65535), got {i}"
        ))
    })
}

/// A strict positive `int` (a bound, unlike azure-iot-device's `int(value)` keywords): a bool,
/// float or string is a TypeError, since `True` or `"1e4"` as a queue bound is a caller's mistake.
fn count(name: &str, value: &Bound<'_, PyAny>) -> PyResult<usize> {
    if value.is_instance_of::<pyo3::types::PyBool>() || !value.is_instance_of::<pyo3::types::PyInt>() {
        return Err(PyTypeError::new_err(format!("Invalid type for '{name}'. Must be an int.")));
    }
    let i: i128 = value.extract().unwrap_or(i128::MAX);
    if i <= 0 {
        return Err(PyValueError::new_err(format!("'{name}' must be greater than 0, got {i}")));
    }
    Ok(usize::try_from(i).unwrap_or(usize::MAX))
}

fn seconds(name: &str, value: &Bound<'_, PyAny>) -> PyResult<Duration> {
    let secs: f64 = value.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "Invalid type for '{name}'. Must be a numeric value."
        ))
    })?;
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            PyValueError::new_err(format!("'{name}' must be a positive number of seconds"))
        })
}

/// A cipher string, or a list of suite names joined by `:` (azure-iot-device accepts both).
fn cipher(value: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(s.to_cow()?.into_owned());
    }
    if value.is_instance_of::<PyList>() || value.is_instance_of::<PyTuple>() {
        let names: Vec<String> = value
            .extract()
            .map_err(|_| PyTypeError::new_err("Invalid type for 'cipher'"))?;
        return Ok(names.join(":"));
    }
    Err(PyTypeError::new_err("Invalid type for 'cipher'"))
}

/// Reads a `ProxyOptions` (or any object with its attributes).
fn proxy_options(value: &Bound<'_, PyAny>) -> PyResult<Option<ProxyOptions>> {
    if value.is_none() {
        return Ok(None);
    }
    let attr = |n: &str| {
        value
            .getattr(n)
            .map_err(|_| PyTypeError::new_err("proxy_options must be a ProxyOptions"))
    };
    let kind: String = attr("proxy_type")?.extract()?;
    Ok(Some(ProxyOptions {
        proxy_type: ironhub::validate::proxy_type(&kind).map_err(to_py_err)?,
        proxy_addr: attr("proxy_address")?.extract()?,
        proxy_port: port("proxy_port", &attr("proxy_port")?)?,
        proxy_username: attr("proxy_username")?.extract()?,
        proxy_password: attr("proxy_password")?.extract()?,
    }))
}
