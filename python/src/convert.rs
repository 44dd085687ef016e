//! Conversions between Python values and the core's types: `ironhub.models.Message` ↔
//! `ironhub::Message`, method requests/responses, and JSON documents (twins, payloads).
//! JSON goes through Python's own `json` module so that what serializes, and how, is exactly
//! what azure-iot-device accepts (it uses `json.dumps` too).

use bytes::Bytes;
use ironhub::{Message, MethodRequest, MethodResponse};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyMemoryView, PyString};
use serde_json::Value;

static MESSAGE_CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static METHOD_REQUEST_CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static JSON_DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static JSON_LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A Python value as JSON (`json.dumps` semantics: non-serializable → `TypeError`).
pub fn to_json(value: &Bound<'_, PyAny>) -> PyResult<Value> {
    let py = value.py();
    let text: String = JSON_DUMPS
        .import(py, "json", "dumps")?
        .call1((value,))?
        .extract()?;
    serde_json::from_str(&text).map_err(|e| PyValueError::new_err(format!("not valid JSON: {e}")))
}

/// A JSON document as Python objects (dicts keep the document's key order).
pub fn from_json<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    JSON_LOADS
        .import(py, "json", "loads")?
        .call1((value.to_string(),))
}

/// The payload bytes of `Message.data`, converted as paho-mqtt converts a payload for
/// azure-iot-device: text as UTF-8, numbers as their `str()`, `None` as empty. One copy of the
/// bytes, straight into the buffer the core keeps.
fn payload(data: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    if data.is_none() {
        return Ok(Bytes::new());
    }
    if let Ok(s) = data.cast::<PyString>() {
        return Ok(Bytes::from(s.to_cow()?.into_owned()));
    }
    if let Ok(b) = data.cast::<PyBytes>() {
        return Ok(Bytes::copy_from_slice(b.as_bytes()));
    }
    if let Ok(b) = data.cast::<PyByteArray>() {
        return Ok(Bytes::from(b.to_vec()));
    }
    if data.is_instance_of::<PyMemoryView>() {
        let b: Vec<u8> = data.call_method0("tobytes")?.extract()?;
        return Ok(Bytes::from(b));
    }
    if data.is_instance_of::<PyInt>()
        || data.is_instance_of::<PyFloat>()
        || data.is_instance_of::<PyBool>()
    {
        return Ok(Bytes::from(text(data)?));
    }
    Err(PyTypeError::new_err(
        "Message data must be a str, bytes, bytearray, int, float or None",
    ))
}

/// `str(value)`; an exact `str` is read as it is (no `str()` call, no new object).
fn text(value: &Bound<'_, PyAny>) -> PyResult<String> {
    if let Ok(s) = value.cast_exact::<PyString>() {
        return Ok(s.to_cow()?.into_owned());
    }
    Ok(value.str()?.to_cow()?.into_owned())
}

/// Where a message's attributes are read from. An exact `ironhub.models.Message` keeps them in
/// its instance `__dict__`, read with dict lookups (no attribute protocol per field); a subclass
/// or look-alike may define properties, so it is read attribute by attribute.
struct Fields<'a, 'py> {
    msg: &'a Bound<'py, PyAny>,
    dict: Option<Bound<'py, PyDict>>,
}

impl<'py> Fields<'_, 'py> {
    fn get(&self, name: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(dict) = &self.dict {
            if let Some(v) = dict.get_item(name)? {
                return Ok(v);
            }
        }
        self.msg.getattr(name) // missing from the dict (deleted?): whatever the attribute protocol says
    }

    /// `str(value)` of an optional attribute, as azure-iot-device formats system properties.
    fn optional_text(&self, name: &Bound<'py, PyString>) -> PyResult<Option<String>> {
        let v = self.get(name)?;
        if v.is_none() {
            return Ok(None);
        }
        Ok(Some(text(&v)?))
    }
}

/// A value to send as a core message: an `ironhub.models.Message` is converted attribute by
/// attribute, any other value is sent as `Message(value)` (azure-iot-device's rule), without
/// making that Python object.
pub fn outgoing_message(value: &Bound<'_, PyAny>) -> PyResult<Message> {
    let class = MESSAGE_CLASS.import(value.py(), "ironhub.models", "Message")?;
    if value.get_type().is(class) {
        let dict = value.getattr(intern!(value.py(), "__dict__"))?.cast_into::<PyDict>().ok();
        message_from_fields(&Fields { msg: value, dict })
    } else if value.is_instance(class)? {
        message_from_py(value)
    } else {
        Ok(Message::new(payload(value)?))
    }
}

/// An `ironhub.models.Message` (or any object with its attributes) as a core message.
pub fn message_from_py(msg: &Bound<'_, PyAny>) -> PyResult<Message> {
    message_from_fields(&Fields { msg, dict: None })
}

/// The conversion itself. Attribute names are interned once: a send looks them up without making
/// a Python string each.
fn message_from_fields(f: &Fields<'_, '_>) -> PyResult<Message> {
    let py = f.msg.py();
    let mut out = Message::new(payload(&f.get(intern!(py, "data"))?)?);
    out.message_id = f.optional_text(intern!(py, "message_id"))?;
    out.correlation_id = f.optional_text(intern!(py, "correlation_id"))?;
    out.user_id = f.optional_text(intern!(py, "user_id"))?;
    out.content_encoding = f.optional_text(intern!(py, "content_encoding"))?;
    out.content_type = f.optional_text(intern!(py, "content_type"))?;
    out.output_name = f.optional_text(intern!(py, "output_name"))?;
    // A read-only property of Message over `_iothub_interface_id`.
    out.iothub_interface_id = if f.dict.is_some() {
        f.optional_text(intern!(py, "_iothub_interface_id"))?
    } else {
        f.optional_text(intern!(py, "iothub_interface_id"))?
    };
    let expiry = f.get(intern!(py, "expiry_time_utc"))?;
    if !expiry.is_none() {
        // A datetime goes out as ISO 8601, like azure-iot-device does.
        let text = if expiry.hasattr(intern!(py, "isoformat"))? {
            expiry.call_method0(intern!(py, "isoformat"))?
        } else {
            expiry
        };
        out.expiry_time_utc = Some(self::text(&text)?);
    }
    let props = f.get(intern!(py, "custom_properties"))?;
    if let Ok(dict) = props.cast::<PyDict>() {
        // The usual case (a dict): no `items()` view and no tuple per property.
        out.custom_properties.reserve(dict.len());
        for (k, v) in dict.iter() {
            out.set_property(text(&k)?, text(&v)?);
        }
    } else if !props.is_none() {
        for item in props.call_method0(intern!(py, "items"))?.try_iter()? {
            let (k, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item?.extract()?;
            out.set_property(text(&k)?, text(&v)?);
        }
    }
    Ok(out)
}

/// A received core message as an `ironhub.models.Message` (data as bytes).
pub fn message_to_py<'py>(py: Python<'py>, msg: &Message) -> PyResult<Bound<'py, PyAny>> {
    let obj = MESSAGE_CLASS
        .import(py, "ironhub.models", "Message")?
        .call1((PyBytes::new(py, &msg.data),))?;
    let set = |name: &str, v: &Option<String>| obj.setattr(name, v.as_deref());
    set("message_id", &msg.message_id)?;
    set("expiry_time_utc", &msg.expiry_time_utc)?;
    set("correlation_id", &msg.correlation_id)?;
    set("user_id", &msg.user_id)?;
    set("content_encoding", &msg.content_encoding)?;
    set("content_type", &msg.content_type)?;
    set("output_name", &msg.output_name)?;
    set("input_name", &msg.input_name)?;
    set("ack", &msg.ack)?;
    set("_iothub_interface_id", &msg.iothub_interface_id)?;
    let props = obj.getattr("custom_properties")?;
    for (k, v) in &msg.custom_properties {
        props.set_item(k, v)?;
    }
    Ok(obj)
}

/// A received method request as an `ironhub.models.MethodRequest`.
pub fn method_request_to_py<'py>(
    py: Python<'py>,
    req: &MethodRequest,
) -> PyResult<Bound<'py, PyAny>> {
    let payload = from_json(py, &req.payload)?;
    METHOD_REQUEST_CLASS
        .import(py, "ironhub.models", "MethodRequest")?
        .call1((req.request_id.as_str(), req.name.as_str(), payload))
}

/// An `ironhub.models.MethodResponse` (or any object with its attributes) as a core one.
pub fn method_response_from_py(resp: &Bound<'_, PyAny>) -> PyResult<MethodResponse> {
    let request_id: String = resp
        .getattr("request_id")?
        .extract()
        .map_err(|_| PyTypeError::new_err("MethodResponse.request_id must be a str"))?;
    let status: i32 = resp
        .getattr("status")?
        .extract()
        .map_err(|_| PyTypeError::new_err("MethodResponse.status must be an int"))?;
    let payload = resp.getattr("payload")?;
    let payload = if payload.is_none() {
        None
    } else {
        Some(to_json(&payload)?)
    };
    Ok(MethodResponse::new(request_id, status, payload))
}
