//! Direct methods: answering a request (any thread, any time after it arrived) and, for IoT Edge
//! modules, invoking a method on another device or module through the Edge hub's HTTPS API.

use std::sync::Arc;
use std::time::Duration;

use ironhub_protocol::limits;
use ironhub_protocol::topics;
use serde_json::Value;

use super::Session;
#[cfg(feature = "https")]
use super::{lock, user_agent};
use crate::error::{Error, Result};
use crate::message::MethodResponse;

impl Session {
    pub async fn send_method_response(self: &Arc<Self>, r: &MethodResponse) -> Result<()> {
        self.check_open()?;
        if r.request_id.is_empty() {
            return Err(Error::invalid("method response needs the request id"));
        }
        let payload = serde_json::to_vec(r.payload.as_ref().unwrap_or(&Value::Null))
            .map_err(|e| Error::invalid(format!("method response payload is not serializable: {e}")))?;
        if payload.len() > limits::MAX_METHOD_PAYLOAD_BYTES {
            return Err(Error::invalid(format!(
                "method response payload of {} bytes exceeds {} bytes",
                payload.len(),
                limits::MAX_METHOD_PAYLOAD_BYTES
            )));
        }
        self.publish(topics::method_response_topic(r.status, &r.request_id), payload, self.deadline()).await
    }

    pub async fn invoke_method(self: &Arc<Self>, params: &Value, device_id: &str, module_id: Option<&str>) -> Result<Value> {
        self.check_open()?;
        let gateway = match (&self.identity.module_id, &self.options.gateway_hostname) {
            (Some(_), Some(g)) if self.is_edge() || !g.is_empty() => g.clone(),
            _ => {
                return Err(Error::Client(
                    "invoke_method is only available to module clients of an IoT Edge deployment".into(),
                ))
            }
        };
        if device_id.trim().is_empty() {
            return Err(Error::invalid("device_id must not be empty"));
        }
        let obj = params.as_object().ok_or_else(|| Error::invalid("method_params must be a JSON object"))?;
        let name = obj.get("methodName").and_then(Value::as_str).filter(|n| !n.is_empty());
        let name = name.ok_or_else(|| Error::invalid("method_params needs a non-empty \"methodName\""))?;
        let secs = |k: &str, default: u64| obj.get(k).and_then(Value::as_u64).unwrap_or(default);
        let (response_timeout, connect_timeout) = (secs("responseTimeoutInSeconds", 30), secs("connectTimeoutInSeconds", 0));
        let body = serde_json::json!({
            "methodName": name,
            "payload": obj.get("payload").cloned().unwrap_or(Value::Null),
            "responseTimeoutInSeconds": response_timeout,
            "connectTimeoutInSeconds": connect_timeout,
        });
        let enc = ironhub_protocol::encoding::percent_encode;
        let mut path = format!("/twins/{}", enc(device_id));
        if let Some(m) = module_id {
            path.push_str(&format!("/modules/{}", enc(m)));
        }
        let port = if self.options.https_port == 443 { String::new() } else { format!(":{}", self.options.https_port) };
        let url = format!("https://{gateway}{port}{path}/methods?api-version=2019-10-01");
        // Wait as long as the hub may take (azure-iot-device cuts every call at 10 s).
        let timeout = Duration::from_secs(response_timeout.saturating_add(connect_timeout).saturating_add(10));
        self.edge_hub_post(url, body, timeout).await
    }

    /// POSTs a method invocation to the Edge hub and returns its answer's body.
    #[cfg(feature = "https")]
    async fn edge_hub_post(self: &Arc<Self>, url: String, body: Value, timeout: Duration) -> Result<Value> {
        let http = self.http_client(timeout)?;
        let token = self.auth.password(false).await?.map(|t| t.token).unwrap_or_default();
        let req = http
            .post(url)
            .timeout(timeout)
            .header("Authorization", token)
            .header("x-ms-edge-moduleId", self.identity.client_id())
            .header("Content-Type", "application/json")
            .header("User-Agent", user_agent() + &self.options.product_info)
            .body(body.to_string());
        let answer = crate::transport::http::send(req).await?;
        if answer.status >= 300 {
            return Err(Error::ServiceFailure {
                status: answer.status,
                message: crate::transport::http::hub_error_message(&answer.body),
            });
        }
        Ok(answer.body)
    }

    /// A firmware build without HTTPS cannot reach the Edge hub's method endpoint.
    #[cfg(not(feature = "https"))]
    async fn edge_hub_post(self: &Arc<Self>, _url: String, _body: Value, _timeout: Duration) -> Result<Value> {
        Err(Error::Client("invoke_method needs ironhub's `https` feature, which this build leaves out".into()))
    }

    #[cfg(feature = "https")]
    fn http_client(&self, timeout: Duration) -> Result<crate::transport::http::HttpsClient> {
        let mut h = lock(&self.http);
        if let Some(c) = &*h {
            return Ok(c.clone());
        }
        // The Edge hub's HTTPS endpoint is reached like the MQTT link: same cipher list, same proxy.
        let c = crate::transport::http::https_client(
            self.options.server_verification_cert.as_deref(),
            &self.options.cipher,
            self.options.proxy_options.as_ref(),
            timeout.max(Duration::from_secs(60)),
        )?;
        *h = Some(c.clone());
        Ok(c)
    }
}
