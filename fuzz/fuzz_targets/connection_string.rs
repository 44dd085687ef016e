//! Device, module and service connection strings: parsing never panics, and what parses keeps
//! its host name non-empty.
#![no_main]

use ironhub_protocol::connection_string::ConnectionString;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(cs) = ConnectionString::parse(text) {
        assert!(!cs.host_name.is_empty(), "parsed without a HostName: {text:?}");
        let _ = cs.is_service();
    }
});
