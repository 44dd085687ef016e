//! The cross-surface validation table (`tests/validation_cases.json`) through the Rust API: each
//! value goes where a Rust user gives it (a message sent by an offline client, proxy options,
//! factory options) and must be accepted or refused with `ErrorKind::InvalidArgument` exactly as
//! the table says. The same table runs through C, Python and Go.

use ironhub::serde_json::{self, Value};
use ironhub::{Client, ClientOptions, ErrorKind, Message, ProxyOptions, X509};

const OFFLINE_CS: &str = "HostName=127.0.0.1;DeviceId=validation;SharedAccessKey=MDEyMzQ1Njc4OWFiY2RlZg==";

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/validation_cases.json")).unwrap();
    let table: Value = serde_json::from_str(&text).unwrap();
    table["cases"].as_array().unwrap().clone()
}

/// An offline client: validation happens before anything needs the network, so an accepted
/// message ends in `NoConnection` and a refused one in `InvalidArgument`.
fn offline_client() -> ironhub::blocking::Client {
    let opts = ClientOptions { auto_connect: false, ..Default::default() };
    ironhub::blocking::Client::create_from_connection_string(OFFLINE_CS, opts).unwrap()
}

fn send(m: &Message) -> ironhub::Result<()> {
    let c = offline_client();
    let r = c.send_message(m);
    c.shutdown().unwrap();
    match r {
        Err(e) if e.kind() == ErrorKind::NoConnection => Ok(()),
        other => other,
    }
}

fn apply(rule: &str, value: &str) -> ironhub::Result<()> {
    match rule {
        "expiry_time_utc" => {
            let mut m = Message::new("x");
            m.expiry_time_utc = Some(value.to_string());
            send(&m)
        }
        "property_key" => {
            let mut m = Message::new("x");
            m.set_property(value, "v");
            send(&m)
        }
        "proxy_type" => {
            let proxy_type = ironhub::validate::proxy_type(value)?;
            let proxy = ProxyOptions {
                proxy_type,
                proxy_addr: "127.0.0.1".into(),
                proxy_port: 3128,
                proxy_username: None,
                proxy_password: None,
            };
            let opts = ClientOptions { proxy_options: Some(proxy), auto_connect: false, ..Default::default() };
            Client::create_from_connection_string(OFFLINE_CS, opts).map(|_| ())
        }
        "x509_sastoken_ttl" => {
            let opts = ClientOptions { sastoken_ttl: Some(value.parse().unwrap()), ..Default::default() };
            let x509 = X509::new("/nonexistent/cert.pem", "/nonexistent/key.pem", None);
            Client::create_from_x509_certificate(x509, "hub.example", "dev", None, opts).map(|_| ())
        }
        "sastoken_sastoken_ttl" => {
            let opts = ClientOptions { sastoken_ttl: Some(value.parse().unwrap()), ..Default::default() };
            Client::create_from_sastoken("SharedAccessSignature sr=x", opts).map(|_| ())
        }
        "keep_alive" => {
            let opts = ClientOptions { keep_alive: value.parse().unwrap(), auto_connect: false, ..Default::default() };
            Client::create_from_connection_string(OFFLINE_CS, opts).map(|_| ())
        }
        "cipher" => {
            let opts = ClientOptions { cipher: value.to_string(), auto_connect: false, ..Default::default() };
            Client::create_from_connection_string(OFFLINE_CS, opts).map(|_| ())
        }
        "max_queued_messages" => {
            let opts = ClientOptions { max_queued_messages: value.parse().unwrap(), auto_connect: false, ..Default::default() };
            Client::create_from_connection_string(OFFLINE_CS, opts).map(|_| ())
        }
        "max_queued_bytes" => {
            let opts = ClientOptions { max_queued_bytes: value.parse().unwrap(), auto_connect: false, ..Default::default() };
            Client::create_from_connection_string(OFFLINE_CS, opts).map(|_| ())
        }
        other => panic!("unknown rule {other} in the table"),
    }
}

#[test]
fn every_case_of_the_table_through_the_rust_api() {
    let mut failures = Vec::new();
    let cases = cases();
    for case in &cases {
        let (rule, value, expect) =
            (case["rule"].as_str().unwrap(), case["value"].as_str().unwrap(), case["expect"].as_str().unwrap());
        let outcome = apply(rule, value);
        let ok = match (&outcome, expect) {
            (Ok(()), "ok") => true,
            (Err(e), "invalid_argument") => {
                e.kind() == ErrorKind::InvalidArgument
                    && case["contains"].as_str().is_none_or(|s| e.to_string().contains(s))
            }
            _ => false,
        };
        if !ok {
            failures.push(format!("{rule}({value:?}): expected {expect}, got {outcome:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases disagree:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
