//! Topics in both directions: parsing never panics, and a telemetry topic built from any ids and
//! property bag parses back to the same identity and properties.
#![no_main]

use ironhub_protocol::topics::{self, DeviceOriginated, PropertyBag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = topics::parse_device_bound(text);
    let _ = topics::parse_device_originated(text);

    // "device\nmodule\nbag": ids without '/' (IoT Hub refuses those) and any bag.
    let mut parts = text.splitn(3, '\n');
    let (Some(device), Some(module), Some(bag)) = (parts.next(), parts.next(), parts.next()) else { return };
    if device.is_empty() || device.contains(['/', '#', '+']) || module.contains(['/', '#', '+']) {
        return;
    }
    let module = (!module.is_empty()).then_some(module);
    let bag = PropertyBag::decode(bag);
    let topic = topics::telemetry_topic(device, module, &bag);
    match topics::parse_device_originated(&topic) {
        Some(DeviceOriginated::Telemetry { device_id, module_id, bag: properties }) => {
            assert_eq!(device_id, device, "{topic:?}");
            assert_eq!(module_id.as_deref(), module, "{topic:?}");
            assert_eq!(sorted(properties), sorted(bag), "{topic:?}");
        }
        other => panic!("telemetry topic {topic:?} parsed as {other:?}"),
    }
});

fn sorted(mut bag: PropertyBag) -> PropertyBag {
    bag.custom.sort();
    bag
}
