//! The synchronous `ProvisioningDeviceClient`: the async client driven on the shared runtime.

use serde_json::Value;

use super::RegistrationResult;
use crate::error::Result;
use crate::message::X509;
use crate::options::ClientOptions;

/// Blocking facade over [`super::ProvisioningClient`]; every call is bounded by `operation_timeout`.
#[derive(Clone)]
pub struct ProvisioningClient {
    inner: super::ProvisioningClient,
}

impl ProvisioningClient {
    pub fn from_async(inner: super::ProvisioningClient) -> ProvisioningClient {
        ProvisioningClient { inner }
    }

    pub fn as_async(&self) -> &super::ProvisioningClient {
        &self.inner
    }

    pub fn create_from_symmetric_key(
        provisioning_host: &str,
        registration_id: &str,
        id_scope: &str,
        symmetric_key: &str,
        options: ClientOptions,
    ) -> Result<ProvisioningClient> {
        super::ProvisioningClient::create_from_symmetric_key(provisioning_host, registration_id, id_scope, symmetric_key, options)
            .map(Self::from_async)
    }

    pub fn create_from_x509_certificate(
        provisioning_host: &str,
        registration_id: &str,
        id_scope: &str,
        x509: X509,
        options: ClientOptions,
    ) -> Result<ProvisioningClient> {
        super::ProvisioningClient::create_from_x509_certificate(provisioning_host, registration_id, id_scope, x509, options)
            .map(Self::from_async)
    }

    pub fn provisioning_payload(&self) -> Option<Value> {
        self.inner.provisioning_payload()
    }

    pub fn set_provisioning_payload(&self, payload: Option<Value>) {
        self.inner.set_provisioning_payload(payload)
    }

    pub fn register(&self) -> Result<RegistrationResult> {
        let inner = self.inner.clone();
        crate::runtime::block_on(async move { inner.register().await })
    }
}
