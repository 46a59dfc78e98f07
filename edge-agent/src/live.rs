//! The live state: the latest value of every point, the status of every device, and the bus
//! that carries committed events to stream subscribers.
//!
//! Only the journal writer changes it, and only with committed events, so what the API shows
//! is always something the journal holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use gatehouse_protocol::{
    DeviceId, DeviceStatus, Event, EventBody, PointId, Quality, Value, ZoneId, ZoneMode,
};
use jiff::Timestamp;
use tokio::sync::broadcast;

/// The latest committed observation of a point.
#[derive(Debug, Clone, PartialEq)]
pub struct PointState {
    pub value: Option<Value>,
    pub quality: Quality,
    pub observed_at: Timestamp,
    pub seq: u64,
}

/// The latest committed status of a device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceState {
    pub status: DeviceStatus,
    pub since: Timestamp,
    pub reason: Option<String>,
}

/// A zone's mode as last committed.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneView {
    pub id: ZoneId,
    pub mode: ZoneMode,
    /// When an armed mode takes (or took) effect.
    pub effective_at: Timestamp,
}

/// The rules' state as last committed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RulesView {
    /// How many rules are loaded.
    pub rules: usize,
    pub zones: Vec<ZoneView>,
    pub bypassed: Vec<PointId>,
    /// Whether the life-safety interlock holds egress doors released.
    pub interlock: bool,
}

/// How many committed events the bus holds for slow subscribers before they must catch up
/// from the journal.
const BUS_CAPACITY: usize = 4096;

pub struct Live {
    points: RwLock<HashMap<PointId, PointState>>,
    devices: RwLock<HashMap<DeviceId, DeviceState>>,
    last_seq: AtomicU64,
    bus: broadcast::Sender<Arc<Event>>,
    /// Why and since when the journal cannot commit, while it cannot.
    journal_failing: RwLock<Option<(String, Timestamp)>>,
    rules: RwLock<RulesView>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            points: RwLock::default(),
            devices: RwLock::default(),
            last_seq: AtomicU64::new(0),
            bus: broadcast::channel(BUS_CAPACITY).0,
            journal_failing: RwLock::default(),
            rules: RwLock::default(),
        }
    }
}

impl Live {
    /// Records a committed event in the state (not yet on the bus).
    pub fn apply(&self, event: &Event) {
        match &event.body {
            EventBody::Observation {
                point,
                value,
                quality,
                observed_at,
                ..
            } => {
                if let Ok(mut points) = self.points.write() {
                    points.insert(
                        point.clone(),
                        PointState {
                            value: value.clone(),
                            quality: quality.clone(),
                            observed_at: *observed_at,
                            seq: event.seq,
                        },
                    );
                }
            }
            EventBody::DeviceStatus {
                device,
                status,
                reason,
            } => {
                if let Ok(mut devices) = self.devices.write() {
                    devices.insert(
                        device.clone(),
                        DeviceState {
                            status: *status,
                            since: event.recorded_at,
                            reason: reason.clone(),
                        },
                    );
                }
            }
            EventBody::Command { .. }
            | EventBody::Incident { .. }
            | EventBody::ZoneMode { .. }
            | EventBody::Bypass { .. } => {}
        }
    }

    /// Hands a committed event to stream subscribers.
    pub fn publish(&self, event: Event) {
        self.last_seq.store(event.seq, Ordering::Release);
        // No subscriber is fine: the journal has it.
        let _ = self.bus.send(Arc::new(event));
    }

    /// Sets the newest seq at start-up.
    pub fn set_last_seq(&self, seq: u64) {
        self.last_seq.store(seq, Ordering::Release);
    }

    /// The newest seq published.
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// Records that commits fail (`Some(reason)`) or work again (`None`).
    pub fn set_journal_failing(&self, reason: Option<String>) {
        if reason.is_none() && self.journal_failing().is_none() {
            return; // the common case, without a write lock
        }
        if let Ok(mut failing) = self.journal_failing.write() {
            match reason {
                None => *failing = None,
                Some(reason) => {
                    let since = failing
                        .as_ref()
                        .map_or_else(Timestamp::now, |(_, since)| *since);
                    *failing = Some((reason, since));
                }
            }
        }
    }

    /// Why and since when commits fail, if they do.
    pub fn journal_failing(&self) -> Option<(String, Timestamp)> {
        self.journal_failing.read().ok()?.clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.bus.subscribe()
    }

    pub fn point(&self, id: &PointId) -> Option<PointState> {
        self.points.read().ok()?.get(id).cloned()
    }

    pub fn device(&self, id: &DeviceId) -> Option<DeviceState> {
        self.devices.read().ok()?.get(id).cloned()
    }

    /// Records the rules' state of a committed batch.
    pub fn set_rules(&self, view: RulesView) {
        if let Ok(mut rules) = self.rules.write() {
            *rules = view;
        }
    }

    pub fn rules(&self) -> RulesView {
        self.rules
            .read()
            .map(|rules| rules.clone())
            .unwrap_or_default()
    }
}
