//! Owns the emulated blob storage endpoint: checking the SAS the hub handed out (a wrong or
//! expired one is 403 `AuthenticationFailed`, as Azure Storage answers), and the Block Blob
//! operations the SDKs use: Put Blob, Put Block, Put Block List and Get Blob.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

use super::Files;
use crate::http::request::ApiRequest;
use crate::http::response::Reply;

/// Uncommitted data one blob may hold before Put Block List (what a 4 MiB request limit allows
/// in a reasonable number of blocks).
const MAX_UNCOMMITTED_BYTES: usize = 256 * 1024 * 1024;

/// base64(HMAC-SHA256(key, "{blob path}\n{se}")): the emulator's own signing, checked only by itself.
pub(super) fn signature(key: &str, blob_path: &str, se: &str) -> String {
    ironhub_protocol::sas::sign(key, &format!("{blob_path}\n{se}")).unwrap_or_default()
}

fn reply(status: StatusCode, body: Bytes) -> Reply {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert("x-ms-version", HeaderValue::from_static("2021-08-06"));
    if let Ok(v) = HeaderValue::from_str(&format!("{:032x}", rand::random::<u128>())) {
        headers.insert("x-ms-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&Utc::now().format("%a, %d %b %Y %H:%M:%S GMT").to_string()) {
        headers.insert(http::header::DATE, v.clone());
        headers.insert(http::header::LAST_MODIFIED, v);
    }
    r
}

/// Azure Storage's error: XML body plus `x-ms-error-code`.
fn storage_error(status: StatusCode, code: &'static str, message: &str) -> Reply {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{}</Message></Error>",
        message.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
    );
    let mut r = reply(status, Bytes::from(body));
    r.headers_mut().insert("x-ms-error-code", HeaderValue::from_static(code));
    r.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    r
}

fn created() -> Reply {
    let mut r = reply(StatusCode::CREATED, Bytes::new());
    if let Ok(v) = HeaderValue::from_str(&format!("\"0x{:016X}\"", rand::random::<u64>())) {
        r.headers_mut().insert(http::header::ETAG, v);
    }
    r.headers_mut().insert("x-ms-request-server-encrypted", HeaderValue::from_static("true"));
    r
}

impl Files {
    /// Whether the request carries this blob's SAS, unexpired.
    fn authorized(&self, req: &ApiRequest, blob_path: &str) -> Result<(), &'static str> {
        let se = req.query.get("se").ok_or("the request carries no SAS")?;
        let sig = req.query.get("sig").ok_or("the request carries no SAS")?;
        let expected = signature(&self.key, blob_path, se);
        // Compared without an early exit, so timing says nothing about how much of it matched.
        let same = sig.len() == expected.len() && sig.bytes().zip(expected.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0;
        if !same {
            return Err("Signature did not match");
        }
        let expiry: DateTime<Utc> = se.parse().map_err(|_| "Signature expiry is not a time")?;
        if expiry < Utc::now() {
            return Err("Signed expiry time has passed");
        }
        Ok(())
    }

    /// One blob endpoint call on `{CONTAINER}/{blob path}`.
    pub fn serve_blob(&self, req: &ApiRequest, blob_path: &str) -> Reply {
        if let Err(why) = self.authorized(req, blob_path) {
            log::info!("files: refused {} on blob {blob_path}: {why}", req.method);
            return storage_error(StatusCode::FORBIDDEN, "AuthenticationFailed", why);
        }
        let comp = req.query.get("comp").map(String::as_str);
        match (&req.method, comp) {
            (&Method::PUT, None) => {
                if !req.header("x-ms-blob-type").is_some_and(|t| t.eq_ignore_ascii_case("BlockBlob")) {
                    return storage_error(StatusCode::BAD_REQUEST, "InvalidHeaderValue", "x-ms-blob-type must be BlockBlob");
                }
                let mut state = self.lock();
                state.blocks.remove(blob_path);
                match self.store_blob(&mut state, blob_path, req.body.clone()) {
                    Ok(()) => created(),
                    Err(e) => storage_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e.to_string()),
                }
            }
            (&Method::PUT, Some("block")) => {
                let Some(id) = req.query.get("blockid").filter(|b| !b.is_empty()) else {
                    return storage_error(StatusCode::BAD_REQUEST, "InvalidQueryParameterValue", "blockid is required");
                };
                if self.take_block_failure() {
                    return storage_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "injected block failure");
                }
                let mut state = self.lock();
                let blocks = state.blocks.entry(blob_path.to_owned()).or_default();
                let held: usize = blocks.values().map(Bytes::len).sum();
                if held + req.body.len() > MAX_UNCOMMITTED_BYTES {
                    return storage_error(StatusCode::PAYLOAD_TOO_LARGE, "RequestBodyTooLarge", "too much uncommitted data");
                }
                blocks.insert(id.clone(), req.body.clone());
                created()
            }
            (&Method::PUT, Some("blocklist")) => {
                let Some(ids) = block_list(&req.body) else {
                    return storage_error(StatusCode::BAD_REQUEST, "InvalidXmlDocument", "the block list is not valid XML");
                };
                let mut state = self.lock();
                let blocks = state.blocks.remove(blob_path).unwrap_or_default();
                let mut content = Vec::new();
                for id in &ids {
                    match blocks.get(id) {
                        Some(block) => content.extend_from_slice(block),
                        None => return storage_error(StatusCode::BAD_REQUEST, "InvalidBlockList", "the list names a block that was not uploaded"),
                    }
                }
                match self.store_blob(&mut state, blob_path, Bytes::from(content)) {
                    Ok(()) => created(),
                    Err(e) => storage_error(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", &e.to_string()),
                }
            }
            (&Method::GET, None) => match self.blob(blob_path) {
                Some(content) => get_blob(req, content),
                None => storage_error(StatusCode::NOT_FOUND, "BlobNotFound", "The specified blob does not exist."),
            },
            _ => storage_error(StatusCode::BAD_REQUEST, "UnsupportedHttpVerb", "not supported by the emulated blob endpoint"),
        }
    }
}

/// Get Blob, whole or the `x-ms-range` / `Range` the SDKs ask for (`bytes=start-end`, inclusive).
fn get_blob(req: &ApiRequest, content: Bytes) -> Reply {
    let total = content.len();
    let range = req.header("x-ms-range").or_else(|| req.header("range")).and_then(|r| {
        let (start, end) = r.strip_prefix("bytes=")?.split_once('-')?;
        let start: usize = start.parse().ok()?;
        let end: usize = if end.is_empty() { total.saturating_sub(1) } else { end.parse().ok()? };
        Some((start, end.min(total.saturating_sub(1))))
    });
    let mut r = match range {
        Some((start, end)) if start < total && start <= end => {
            let mut r = reply(StatusCode::PARTIAL_CONTENT, content.slice(start..=end));
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{total}")) {
                r.headers_mut().insert(http::header::CONTENT_RANGE, v);
            }
            r
        }
        Some(_) => return storage_error(StatusCode::RANGE_NOT_SATISFIABLE, "InvalidRange", "The range specified is invalid"),
        _ => reply(StatusCode::OK, content),
    };
    r.headers_mut().insert("x-ms-blob-type", HeaderValue::from_static("BlockBlob"));
    r
}

/// The block ids of a Put Block List body, in order: `<BlockList>` holding `<Latest>`,
/// `<Uncommitted>` or `<Committed>` elements (all read as "the uploaded block": the emulator
/// keeps no committed blocks apart from the blob). `None` when the body is not that shape.
pub fn block_list(body: &[u8]) -> Option<Vec<String>> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<BlockList>")? + "<BlockList>".len();
    let end = text.rfind("</BlockList>")?;
    let mut rest = text.get(start..end)?.trim();
    let mut ids = Vec::new();
    while !rest.is_empty() {
        let tag = ["Latest", "Uncommitted", "Committed"].into_iter().find(|t| rest.starts_with(&format!("<{t}>")))?;
        let open = tag.len() + 2;
        let close = rest.find(&format!("</{tag}>"))?;
        // Block ids are base64: no markup or entities inside.
        let id = rest.get(open..close)?;
        if id.contains(['<', '&']) {
            return None;
        }
        ids.push(id.to_owned());
        rest = rest[close + tag.len() + 3..].trim_start();
    }
    Some(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_lists_parse_in_order() {
        let body = b"<?xml version='1.0' encoding='utf-8'?>\n<BlockList><Latest>QUE=</Latest>\n <Uncommitted>QUI=</Uncommitted><Committed>QUM=</Committed></BlockList>";
        assert_eq!(block_list(body).unwrap(), ["QUE=", "QUI=", "QUM="]);
        assert_eq!(block_list(b"<BlockList></BlockList>").unwrap(), Vec::<String>::new());
        assert!(block_list(b"<BlockList><Latest>a</Other></BlockList>").is_none());
        assert!(block_list(b"<BlockList><Bogus>a</Bogus></BlockList>").is_none());
        assert!(block_list(b"nothing").is_none());
    }
}
