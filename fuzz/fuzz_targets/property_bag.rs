//! Property bags: decoding any text never panics, and decode → encode → decode is stable
//! (custom properties are re-ordered by key on encode, so compared sorted).
#![no_main]

use ironhub_protocol::topics::PropertyBag;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut bag = PropertyBag::decode(text);
    let _ = bag.size_in_bytes();
    let encoded = bag.encode();
    let mut again = PropertyBag::decode(&encoded);
    bag.custom.sort();
    again.custom.sort();
    assert_eq!(again, bag, "{text:?} → {encoded:?}");
    assert_eq!(again.encode(), encoded);
});
