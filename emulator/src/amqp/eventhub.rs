//! Owns the Event Hub-compatible endpoint: its name, partitions and consumer groups, the
//! `$management` node (`com.microsoft:eventhub` and `com.microsoft:partition` READ) and the
//! receiver links on `<entity>/ConsumerGroups/<group>/Partitions/<n>`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use fe2o3_amqp::acceptor::LinkEndpoint;
use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp_types::performatives::Attach;

use super::Connection;
use crate::hub::auth::Right;
use crate::hub::Hub;

/// IoT Hub's AMQP port, left out of connection strings.
pub const AMQPS_PORT: u16 = 5671;

pub const MANAGEMENT: &str = "$management";
pub const DEFAULT_CONSUMER_GROUP: &str = "$Default";

pub struct EventHubEndpoint {
    hub: Arc<Hub>,
    /// The Event Hub-compatible name (`EntityPath`): the hub's name.
    pub entity: String,
    pub partition_count: u32,
    consumer_groups: Mutex<BTreeSet<String>>,
}

impl EventHubEndpoint {
    pub fn new(hub: Arc<Hub>, partition_count: u32) -> Arc<EventHubEndpoint> {
        let groups = BTreeSet::from([DEFAULT_CONSUMER_GROUP.to_owned()]);
        // IoT Hub names the endpoint after the hub: the first label of its host name.
        let entity = hub.hostname().split('.').next().unwrap_or_default().to_owned();
        Arc::new(EventHubEndpoint { hub, entity, partition_count: partition_count.max(1), consumer_groups: Mutex::new(groups) })
    }

    /// The Event Hub-compatible connection string, signed with the `iothubowner` policy.
    pub fn connection_string(&self, host: &str, port: u16) -> String {
        let endpoint = if port == AMQPS_PORT { host.to_owned() } else { format!("{host}:{port}") };
        format!(
            "Endpoint=sb://{endpoint}/;SharedAccessKeyName=iothubowner;SharedAccessKey={};EntityPath={}",
            self.hub.policy_key(),
            self.entity
        )
    }

    pub fn consumer_groups(&self) -> Vec<String> {
        self.consumer_groups.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }
}

pub fn is_partition_address(path: &str) -> bool {
    path.split('/').nth(1).is_some_and(|s| s.eq_ignore_ascii_case("ConsumerGroups"))
}

pub async fn serve_management(conn: Arc<Connection>, receiver: Receiver) {
    let _ = (conn, receiver);
}

pub async fn serve_partition(conn: Arc<Connection>, attach: &Attach, path: &str, sender: Sender) {
    if !conn.claims.allows(path, Right::ServiceConnect) {
        return super::refuse_unauthorized(LinkEndpoint::Sender(sender), path).await;
    }
    let _ = attach;
}
