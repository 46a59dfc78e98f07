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
//!
//! The sequence belongs to one appliance id, recorded in `outbox_state.appliance`: when the
//! agent starts as another id (a re-claim), [`outbox::bind`] renumbers what waits from 1, as
//! the relay expects of an id it has never heard from.

pub mod outbox;
pub mod sender;
pub mod session;

use std::path::PathBuf;

use gatehouse_protocol::ApplianceId;
use serde::Deserialize;

/// `[uplink]`: present when the appliance reports to a relay. `gatehouse-edge claim` writes
/// the identity files and this section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// This appliance's id: the CN of its certificate, the `{appliance}` of its topics.
    pub appliance_id: ApplianceId,
    /// The relay's MQTT broker, `host:port` (TLS).
    pub broker: String,
    /// The fleet CA (PEM) that signed the broker's and this appliance's certificates.
    pub ca_file: PathBuf,
    /// This appliance's certificate (PEM).
    pub cert_file: PathBuf,
    /// This appliance's private key (PEM). Keep it readable by the agent only.
    pub key_file: PathBuf,
    /// Most records the outbox holds before it evicts (1,000 to 100,000,000).
    #[serde(default = "UplinkConfig::default_outbox_max_records")]
    pub outbox_max_records: u64,
}

impl UplinkConfig {
    fn default_outbox_max_records() -> u64 {
        1_000_000
    }
}

impl UplinkConfig {
    pub(crate) fn validate(&self, problems: &mut crate::config::Problems<'_>) {
        if !(1_000..=100_000_000).contains(&self.outbox_max_records) {
            problems.global("uplink.outbox_max_records must be between 1000 and 100000000");
        }
        let has_port = self.broker.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !has_port {
            problems.global(format!("uplink.broker `{}` must be host:port", self.broker));
        }
        for (key, path) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if !path.is_file() {
                problems.global(format!(
                    "uplink.{key}: {} does not exist (`gatehouse-edge claim` writes it)",
                    path.display()
                ));
            }
        }
    }
}
