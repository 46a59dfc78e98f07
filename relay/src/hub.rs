//! The relay's in-process channels between its parts: live updates for operators
//! ([`Hub`]), and HQ actions on their way down to appliances ([`Downlink`]).
//!
//! # Live updates
//!
//! Whoever commits a change operators should see (ingestion, the offline-alert job, the API
//! itself) publishes it with [`Hub::publish`] after the commit, never before: nothing is shown
//! that the database does not hold. Every operator WebSocket holds a [`HubReceiver`].
//!
//! - **A receiver sees one tenant.** [`Hub::subscribe`] takes the subscriber's
//!   [`TenantScope`] and the receiver drops every other tenant's update itself, so no caller
//!   can forget the filter.
//! - **Nothing is missed silently.** The hub is a bounded broadcast ([`HUB_CAPACITY`]); a
//!   receiver that falls that far behind gets [`Received::Lagged`] and must re-read over REST.
//!   It carries no count on purpose: the channel is shared by every tenant, so the number of
//!   updates dropped would tell one tenant how busy the others are.
//! - Publishing never waits: with no subscriber the update is simply dropped (the database
//!   has it).
//!
//! # Downlink
//!
//! An operator's acknowledgement or resolution at the relay is stored together with its command
//! (the `downlinks` table, `store/downlinks.rs`), which is the real queue: the API also hands
//! it to the service's publisher as a [`Downlink`] on an `mpsc` channel (the fast path), and
//! the service sends pending commands again when their appliance comes back online and
//! periodically, until a record of the appliance shows the step carried out. Each goes on the
//! appliance's `down/commands` topic ([`Downlink::topic`], [`Downlink::payload`]) with QoS 1;
//! `by` is the operator's token name (the appliance writes it as `hq:<name>`).

use std::sync::Arc;

use gatehouse_protocol::ApplianceId;
use gatehouse_protocol::wire::topics::{Channel, topic};
use gatehouse_protocol::wire::{self, pb};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;

use crate::store::{Alert, Appliance, Incident, TenantId, TenantScope};

/// How many updates the hub holds for its slowest receiver before that one lags.
pub const HUB_CAPACITY: usize = 4096;

/// Something operators of one tenant should see now. As JSON it is the object with a `type`
/// tag: `{"type": "incident", "appliance": ..., "id": ..., ...}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveUpdate {
    /// An incident's new state (from its appliance, or an operator's step at the relay).
    Incident(Incident),
    /// An appliance's new health or claim state.
    Appliance(Appliance),
    /// An alert raised or cleared by the relay.
    Alert(Alert),
}

/// One update as the hub carries it: allocated once, shared by every receiver.
#[derive(Debug)]
struct Published {
    tenant: TenantId,
    update: Arc<LiveUpdate>,
}

/// The fan-out of live updates to operator streams. Cheap to clone; every clone publishes to
/// the same receivers.
#[derive(Debug, Clone)]
pub struct Hub {
    sender: broadcast::Sender<Arc<Published>>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

impl Hub {
    pub fn new() -> Hub {
        Hub::with_capacity(HUB_CAPACITY)
    }

    /// A hub that lets a receiver fall `capacity` updates behind before it lags.
    pub fn with_capacity(capacity: usize) -> Hub {
        Hub {
            sender: broadcast::channel(capacity.max(1)).0,
        }
    }

    /// Sends `update` to every receiver of `tenant`. Call it after the change is committed.
    pub fn publish(&self, tenant: &TenantId, update: LiveUpdate) {
        let published = Arc::new(Published {
            tenant: tenant.clone(),
            update: Arc::new(update),
        });
        // An error only means nobody is listening.
        let _ = self.sender.send(published);
    }

    /// A receiver of the updates of `scope`'s tenant published from now on.
    pub fn subscribe(&self, scope: &TenantScope) -> HubReceiver {
        HubReceiver {
            tenant: scope.tenant().clone(),
            receiver: self.sender.subscribe(),
        }
    }
}

/// What a [`HubReceiver`] got.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    Update(Arc<LiveUpdate>),
    /// The receiver fell behind and some of its updates may have been dropped; re-read the
    /// current state over REST. (How many is not said: see the module note.)
    Lagged,
}

/// The updates of one tenant. Made by [`Hub::subscribe`].
#[derive(Debug)]
pub struct HubReceiver {
    tenant: TenantId,
    receiver: broadcast::Receiver<Arc<Published>>,
}

impl HubReceiver {
    /// The next update of this receiver's tenant, or `None` once every [`Hub`] is dropped.
    pub async fn recv(&mut self) -> Option<Received> {
        loop {
            match self.receiver.recv().await {
                Ok(published) if published.tenant == self.tenant => {
                    return Some(Received::Update(Arc::clone(&published.update)));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => return Some(Received::Lagged),
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// An HQ action for one appliance, to be published on its `down/commands` topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Downlink {
    pub appliance: ApplianceId,
    pub command: pb::Command,
}

impl Downlink {
    /// `gatehouse/v1/{appliance}/down/commands`.
    pub fn topic(&self) -> String {
        topic(&self.appliance, Channel::DownCommands)
    }

    /// The command in a current-version envelope, as the MQTT payload.
    pub fn payload(&self) -> Vec<u8> {
        wire::encode(pb::envelope::Body::Command(self.command.clone()))
    }
}

#[cfg(test)]
mod tests {
    use anyhow::Context as _;
    use gatehouse_protocol::{IncidentState, Severity};
    use serde_json::json;

    use super::*;
    use crate::store::Store;

    fn incident(id: u64) -> anyhow::Result<Incident> {
        Ok(Incident {
            appliance: ApplianceId::new("app-1")?,
            id,
            state: IncidentState::Open,
            severity: Severity::High,
            title: "Door held open".into(),
            opened_at: 1,
            updated_at: 2,
            last_seq: 3,
            body: "{}".into(),
        })
    }

    async fn two_tenants() -> anyhow::Result<(Store, TenantScope, TenantScope)> {
        let store = Store::open("sqlite::memory:").await?;
        let (_, a) = store.create_tenant("A", 0).await?;
        let (_, b) = store.create_tenant("B", 0).await?;
        Ok((store, a, b))
    }

    fn update_id(received: Option<Received>) -> anyhow::Result<u64> {
        match received.context("the hub closed")? {
            Received::Update(update) => match update.as_ref() {
                LiveUpdate::Incident(incident) => Ok(incident.id),
                other => anyhow::bail!("not an incident: {other:?}"),
            },
            Received::Lagged => anyhow::bail!("lagged"),
        }
    }

    #[tokio::test]
    async fn a_receiver_sees_only_its_tenant() -> anyhow::Result<()> {
        let (_store, a, b) = two_tenants().await?;
        let hub = Hub::new();
        let mut of_a = hub.subscribe(&a);
        let mut of_b = hub.subscribe(&b);
        hub.publish(b.tenant(), LiveUpdate::Incident(incident(1)?));
        hub.publish(a.tenant(), LiveUpdate::Incident(incident(2)?));
        hub.publish(b.tenant(), LiveUpdate::Incident(incident(3)?));
        assert_eq!(update_id(of_a.recv().await)?, 2);
        assert_eq!(update_id(of_b.recv().await)?, 1);
        assert_eq!(update_id(of_b.recv().await)?, 3);
        drop(hub);
        assert_eq!(of_a.recv().await, None, "B's update leaked to A");
        Ok(())
    }

    #[tokio::test]
    async fn a_lagging_receiver_is_told_to_re_read() -> anyhow::Result<()> {
        let (_store, a, _) = two_tenants().await?;
        let hub = Hub::with_capacity(4);
        let mut receiver = hub.subscribe(&a);
        for id in 1..=10 {
            hub.publish(a.tenant(), LiveUpdate::Incident(incident(id)?));
        }
        assert_eq!(receiver.recv().await, Some(Received::Lagged));
        for expected in 7..=10 {
            assert_eq!(update_id(receiver.recv().await)?, expected);
        }
        Ok(())
    }

    #[test]
    fn updates_are_tagged_with_their_type() -> anyhow::Result<()> {
        let value = serde_json::to_value(LiveUpdate::Incident(incident(7)?))?;
        assert_eq!(value["type"], json!("incident"));
        assert_eq!(value["id"], json!(7));
        assert_eq!(value["state"], json!("open"));
        Ok(())
    }

    #[test]
    fn a_downlink_is_an_incident_command_on_the_appliance_topic() -> anyhow::Result<()> {
        let first = Downlink {
            appliance: ApplianceId::new("app-1")?,
            command: pb::Command {
                command_id: "cmd-1".into(),
                action: Some(pb::command::Action::Incident(pb::IncidentAction {
                    incident_id: 4,
                    step: pb::incident_action::Step::Resolve.into(),
                    by: "dana".into(),
                    comment: Some("fixed".into()),
                })),
            },
        };
        assert_eq!(first.topic(), "gatehouse/v1/app-1/down/commands");
        let pb::envelope::Body::Command(decoded) = wire::decode(&first.payload())? else {
            anyhow::bail!("not a command envelope");
        };
        assert_eq!(decoded, first.command);
        let Some(pb::command::Action::Incident(action)) = decoded.action else {
            anyhow::bail!("not an incident action");
        };
        assert_eq!(
            (action.incident_id, action.step(), action.by.as_str()),
            (4, pb::incident_action::Step::Resolve, "dana")
        );
        Ok(())
    }
}
