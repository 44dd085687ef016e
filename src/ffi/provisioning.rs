//! `ironhub_provisioning_client`: the Device Provisioning Service client (the core's blocking
//! `provisioning::ProvisioningClient`), and the group-enrollment key derivation.

use std::ffi::c_char;

use serde_json::Value;

use super::boundary::{arg_ref, arg_str, ffi_fallible, ffi_panic_boundary, opt_str, FfiError, Out};
use super::handles::{export_string, Registry};
use super::ironhub_result;
use super::options::{ironhub_options, options_or_default};
use crate::error::Result;
use crate::message::X509;
use crate::provisioning::blocking::ProvisioningClient;

/// A DPS registration client for one registration id. Any number of threads may use it.
pub struct ironhub_provisioning_client {
    client: ProvisioningClient,
}

static PROVISIONING_CLIENTS: Registry = Registry::new();

fn export(made: Result<ProvisioningClient>, out: Out<*mut ironhub_provisioning_client>) -> Result<(), FfiError> {
    let client = made?;
    out.write(PROVISIONING_CLIENTS.export(ironhub_provisioning_client { client }));
    Ok(())
}

/// Client that registers `registration_id` in `id_scope` at `provisioning_host` (Azure:
/// `global.azure-devices-provisioning.net`) with a base64 symmetric key: an individual
/// enrollment's key, or a group member's key from `ironhub_provisioning_derive_device_key`.
/// `opts` may be NULL; websockets, proxy, cipher, server_verification_cert, sastoken_ttl,
/// keep_alive, the ports and operation_timeout apply.
#[no_mangle]
pub extern "C" fn ironhub_provisioning_client_create_from_symmetric_key(
    provisioning_host: *const c_char,
    registration_id: *const c_char,
    id_scope: *const c_char,
    symmetric_key: *const c_char,
    opts: *const ironhub_options,
    out: *mut *mut ironhub_provisioning_client,
) -> ironhub_result {
    ffi_fallible! {
        let host = arg_str(provisioning_host, "provisioning_host")?;
        let registration_id = arg_str(registration_id, "registration_id")?;
        let id_scope = arg_str(id_scope, "id_scope")?;
        let key = arg_str(symmetric_key, "symmetric_key")?;
        let out = Out::new(out, "out")?;
        export(ProvisioningClient::create_from_symmetric_key(host, registration_id, id_scope, key, options_or_default(opts)), out)
    }
}

/// As `ironhub_provisioning_client_create_from_symmetric_key`, attested by an X.509 certificate
/// (PEM file paths; the certificate's common name is the registration id). `pass_phrase` may be NULL.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn ironhub_provisioning_client_create_from_x509_certificate(
    provisioning_host: *const c_char,
    registration_id: *const c_char,
    id_scope: *const c_char,
    cert_file: *const c_char,
    key_file: *const c_char,
    pass_phrase: *const c_char,
    opts: *const ironhub_options,
    out: *mut *mut ironhub_provisioning_client,
) -> ironhub_result {
    ffi_fallible! {
        let host = arg_str(provisioning_host, "provisioning_host")?;
        let registration_id = arg_str(registration_id, "registration_id")?;
        let id_scope = arg_str(id_scope, "id_scope")?;
        let x509 = X509::new(
            arg_str(cert_file, "cert_file")?,
            arg_str(key_file, "key_file")?,
            opt_str(pass_phrase, "pass_phrase")?.map(str::to_owned),
        );
        let out = Out::new(out, "out")?;
        export(ProvisioningClient::create_from_x509_certificate(host, registration_id, id_scope, x509, options_or_default(opts)), out)
    }
}

/// Frees the client. NULL-safe. Must not be called while another thread uses it.
#[no_mangle]
pub extern "C" fn ironhub_provisioning_client_free(p: *mut ironhub_provisioning_client) {
    ffi_panic_boundary! {
        drop(PROVISIONING_CLIENTS.reclaim(p));
    }
}

/// Sets the JSON payload sent with the registration (`provisioning_payload`); NULL clears it.
#[no_mangle]
pub extern "C" fn ironhub_provisioning_client_set_provisioning_payload(
    p: *mut ironhub_provisioning_client,
    payload_json: *const c_char,
) -> ironhub_result {
    ffi_fallible! {
        let p = arg_ref(p, "p")?;
        let payload = match opt_str(payload_json, "payload_json")? {
            Some(text) => Some(serde_json::from_str::<Value>(text).map_err(|e| FfiError::invalid(format!("payload_json is not JSON: {e}")))?),
            None => None,
        };
        p.client.set_provisioning_payload(payload);
        Ok(())
    }
}

/// Registers (connect, register, poll with the service's retry-after, disconnect) and returns
/// once the device is assigned: `*assigned_hub` and `*device_id` receive where to connect
/// (e.g. with `ironhub_client_create_from_symmetric_key`); `*result_json`, unless `result_json`
/// is NULL, the whole result (`{"operationId", "status", "registrationState": {...}}`). Free
/// each string with `ironhub_string_free`. A failed or refused registration is an error
/// (`IRONHUB_ERROR_CREDENTIAL` for refused credentials, `IRONHUB_ERROR_CLIENT` for a service refusal).
#[no_mangle]
pub extern "C" fn ironhub_provisioning_client_register(
    p: *mut ironhub_provisioning_client,
    assigned_hub: *mut *mut c_char,
    device_id: *mut *mut c_char,
    result_json: *mut *mut c_char,
) -> ironhub_result {
    ffi_fallible! {
        let p = arg_ref(p, "p")?;
        let hub_out = Out::new(assigned_hub, "assigned_hub")?;
        let device_out = Out::new(device_id, "device_id")?;
        let json_out = if result_json.is_null() { None } else { Some(Out::new(result_json, "result_json")?) };
        let result = p.client.register()?;
        let (hub, device) = result.assignment()?;
        hub_out.write(export_string(hub.to_owned()));
        device_out.write(export_string(device.to_owned()));
        if let Some(out) = json_out {
            out.write(export_string(result.to_json().to_string()));
        }
        Ok(())
    }
}

/// The symmetric key of group enrollment member `registration_id`: base64(HMAC-SHA256(group
/// key, registration id)). Free `*device_key` with `ironhub_string_free`.
#[no_mangle]
pub extern "C" fn ironhub_provisioning_derive_device_key(
    group_key: *const c_char,
    registration_id: *const c_char,
    device_key: *mut *mut c_char,
) -> ironhub_result {
    ffi_fallible! {
        let group_key = arg_str(group_key, "group_key")?;
        let registration_id = arg_str(registration_id, "registration_id")?;
        let out = Out::new(device_key, "device_key")?;
        out.write(export_string(crate::provisioning::derive_device_key(group_key, registration_id)?));
        Ok(())
    }
}
