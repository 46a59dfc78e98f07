//! The uplink to the relay: the outbox (this module's [`outbox`]) and, next, the MQTT session
//! that drains it.
//!
//! # The outbox
//! Everything that must reach the relay is written to the `outbox` table **in the same
//! transaction as the journal event it carries**, by the journal writer. Each row gets the
//! next outbox `seq` (1, 2, 3, ...), the appliance's sequence on the wire. A row leaves the
//! outbox only when the relay acknowledges its seq, after the relay's own durable commit.
//!
//! During a long outage the outbox is capped (`uplink.outbox_max_records`). Over the cap the
//! writer evicts, in this order: observations (telemetry) oldest first, then device status
//! changes and command records, and incident changes last. Every evicted row is counted
//! (`outbox_state.dropped`, metric `gatehouse_outbox_evicted_total`), and the sender
//! replaces each run of evicted seqs with one `Evicted` marker, so the relay's sequence stays
//! contiguous and the loss is visible at HQ.

pub mod outbox;

use serde::Deserialize;

/// `[uplink]`: present when the appliance reports to a relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// Most records the outbox holds before it evicts (1,000 to 100,000,000).
    #[serde(default = "UplinkConfig::default_outbox_max_records")]
    pub outbox_max_records: u64,
}

impl UplinkConfig {
    fn default_outbox_max_records() -> u64 {
        1_000_000
    }
}
