//! Owns the `IOTEDGE_*` variables IoT Edge gives a module container, filled in for a module of
//! this emulator so that `create_from_edge_environment` (ironhub's or azure-iot-device's) finds it.

use crate::hub::Hub;

use super::{WorkloadEndpoints, DEFAULT_API_VERSION};

/// The variables for `device_id`/`module_id`. The hub host is also the gateway: the emulator plays
/// both IoT Hub and the edge device's Edge hub. `IOTEDGE_MODULEGENERATIONID` is left out for a
/// module the registry does not hold, and `IOTEDGE_WORKLOADURI` when no workload API is served,
/// so a client started with them reports an incomplete environment instead of failing later.
pub fn edge_environment(hub: &Hub, workload: &WorkloadEndpoints, device_id: &str, module_id: &str) -> Vec<(String, String)> {
    let host = hub.hostname();
    let mut vars = vec![
        ("IOTEDGE_IOTHUBHOSTNAME", host.to_owned()),
        ("IOTEDGE_DEVICEID", device_id.to_owned()),
        ("IOTEDGE_MODULEID", module_id.to_owned()),
        ("IOTEDGE_GATEWAYHOSTNAME", host.to_owned()),
        ("IOTEDGE_APIVERSION", DEFAULT_API_VERSION.to_owned()),
        // iotedged sets it for every module that authenticates with SAS tokens signed by the workload API.
        ("IOTEDGE_AUTHSCHEME", "sasToken".to_owned()),
    ];
    if let Ok(module) = hub.get_module(device_id, module_id) {
        vars.push(("IOTEDGE_MODULEGENERATIONID", module.generation_id));
    }
    if let Some(uri) = workload.uri() {
        vars.push(("IOTEDGE_WORKLOADURI", uri));
    }
    vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}
