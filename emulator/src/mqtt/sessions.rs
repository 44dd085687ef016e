//! The session table: for every identity, its persistent subscriptions and its live
//! connection (if any), plus the handle through which anyone delivers to that connection.
//!
//! IoT Hub keeps a clean-session-false client's subscriptions across reconnects, and
//! azure-iot-device relies on that (it never re-subscribes), so sessions outlive connections.
//! One identity has at most one live connection: attaching a new one hands back the old one
//! for the caller to close ("second connection wins").

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use rumqttc::mqttbytes::v4::{Packet, Publish};
use rumqttc::mqttbytes::QoS;
use tokio::sync::{mpsc, watch};

use super::acl::filter_matches;
use crate::identity::Identity;

/// The sending side of one live connection. Cheap to clone; deliveries never wait, so a
/// slow client can only hurt itself: when its queue is full it is dropped.
#[derive(Clone)]
pub(super) struct ConnectionHandle {
    pub(super) id: u64,
    outbound: mpsc::Sender<Packet>,
    close: Arc<watch::Sender<bool>>,
    next_pkid: Arc<AtomicU16>,
}

impl ConnectionHandle {
    pub(super) fn new(id: u64, outbound: mpsc::Sender<Packet>, close: Arc<watch::Sender<bool>>) -> Self {
        ConnectionHandle { id, outbound, close, next_pkid: Arc::new(AtomicU16::new(0)) }
    }

    /// Queues a hub → client PUBLISH (QoS 1 gets a packet id). False when the connection is
    /// gone or its queue is full; in the latter case the connection is closed, since a client
    /// that does not read would otherwise hold hub messages forever.
    pub(super) fn deliver(&self, publish: Publish) -> bool {
        self.deliver_tracked(publish).is_some()
    }

    /// [`deliver`](Self::deliver), answering the packet id the PUBLISH went out with (0 for QoS 0),
    /// so the PUBACK can be matched to it.
    pub(super) fn deliver_tracked(&self, mut publish: Publish) -> Option<u16> {
        if publish.qos != QoS::AtMostOnce {
            publish.pkid = self.allocate_pkid();
        }
        let pkid = publish.pkid;
        match self.outbound.try_send(Packet::Publish(publish)) {
            Ok(()) => Some(pkid),
            Err(mpsc::error::TrySendError::Full(_)) => {
                log::warn!("mqtt: connection {} is not reading; dropping it", self.id);
                self.close();
                None
            }
            Err(mpsc::error::TrySendError::Closed(_)) => None,
        }
    }

    pub(super) fn close(&self) {
        self.close.send_replace(true);
    }

    fn allocate_pkid(&self) -> u16 {
        loop {
            let pkid = self.next_pkid.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            if pkid != 0 {
                return pkid;
            }
        }
    }
}

/// Filters one session may hold. An IoT Hub client needs five at most (C2D or inputs, methods,
/// twin responses, desired patches); the bound keeps a peer from growing the table without end.
pub(super) const MAX_SUBSCRIPTIONS: usize = 32;

#[derive(Default)]
struct Session {
    subscriptions: Vec<String>,
    /// Clean session false: keep the subscriptions once the connection is gone.
    persistent: bool,
    connection: Option<ConnectionHandle>,
}

pub(super) struct Sessions {
    table: Mutex<HashMap<Identity, Session>>,
    /// Bumped on every connect, disconnect and subscription change, so direct-method
    /// callers can wait for a target to come online without polling.
    changes: watch::Sender<u64>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions { table: Mutex::new(HashMap::new()), changes: watch::Sender::new(0) }
    }
}

impl Sessions {
    fn table(&self) -> MutexGuard<'_, HashMap<Identity, Session>> {
        // A panic elsewhere while holding the lock leaves a table that is still consistent
        // (every update is a single insert/remove), so keep serving.
        self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(super) fn watch_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Makes `conn` the identity's live connection. `before_visible(session_present)` runs
    /// before anyone else can see the connection, so the CONNACK is first in its queue.
    /// Returns the connection it replaced.
    pub(super) fn attach(
        &self,
        id: &Identity,
        clean_session: bool,
        conn: ConnectionHandle,
        before_visible: impl FnOnce(bool),
    ) -> Option<ConnectionHandle> {
        let previous = {
            let mut table = self.table();
            let session = table.entry(id.clone()).or_default();
            let session_present = !clean_session && session.persistent;
            if clean_session || !session.persistent {
                session.subscriptions.clear();
            }
            session.persistent = !clean_session;
            before_visible(session_present);
            session.connection.replace(conn)
        };
        self.changed();
        previous
    }

    /// Forgets connection `conn_id` if it is still the identity's live one (a replaced
    /// connection must not detach its successor). True if it was.
    pub(super) fn detach(&self, id: &Identity, conn_id: u64) -> bool {
        let detached = {
            let mut table = self.table();
            match table.get_mut(id) {
                Some(session) if session.connection.as_ref().is_some_and(|c| c.id == conn_id) => {
                    session.connection = None;
                    if !session.persistent {
                        table.remove(id);
                    }
                    true
                }
                _ => false,
            }
        };
        if detached {
            self.changed();
        }
        detached
    }

    /// Adds a filter; false when the session already holds [`MAX_SUBSCRIPTIONS`] others.
    pub(super) fn subscribe(&self, id: &Identity, filter: &str) -> bool {
        let accepted = {
            let mut table = self.table();
            let session = table.entry(id.clone()).or_default();
            if session.subscriptions.iter().any(|f| f == filter) {
                true
            } else if session.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                false
            } else {
                session.subscriptions.push(filter.to_owned());
                true
            }
        };
        self.changed();
        accepted
    }

    pub(super) fn unsubscribe(&self, id: &Identity, filter: &str) {
        if let Some(session) = self.table().get_mut(id) {
            session.subscriptions.retain(|f| f != filter);
        }
        self.changed();
    }

    pub(super) fn connection(&self, id: &Identity) -> Option<ConnectionHandle> {
        self.table().get(id).and_then(|s| s.connection.clone())
    }

    /// The live connection of `id`, if one of its session's filters matches `topic`.
    pub(super) fn subscribed_connection(&self, id: &Identity, topic: &str) -> Option<ConnectionHandle> {
        let table = self.table();
        let session = table.get(id)?;
        let connection = session.connection.as_ref()?;
        session.subscriptions.iter().any(|f| filter_matches(f, topic)).then(|| connection.clone())
    }
}
