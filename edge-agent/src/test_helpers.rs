//! Fixtures shared by the unit tests: a real journal in a temporary folder.

use std::sync::Arc;
use std::time::Duration;

use gatehouse_protocol::{DeviceId, Event, EventBody, PointId, Quality, Value};
use jiff::Timestamp;

use crate::config::Config;
use crate::journal::{self, JournalHandle, Reader, Writer, WriterSettings};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::rules::Rules;

/// A site with one armed zone, a door contact and a rule on it, and three users.
pub const SITE: &str = r#"
[site]
id = "test-site"
name = "Test site"
[api]
listen = "127.0.0.1:0"
[[api.users]]
name = "admin"
role = "admin"
token_sha256 = "HASH_ADMIN"
[[api.users]]
name = "integrator"
role = "integrator"
token_sha256 = "HASH_INTEGRATOR"
[[api.users]]
name = "guard"
role = "guard"
token_sha256 = "HASH_GUARD"
[[zones]]
id = "lobby"
name = "Lobby"
armed = true
[[modbus.devices]]
id = "plc"
address = "127.0.0.1:1"
zone = "lobby"
[[modbus.devices.points]]
id = "door"
table = "discrete_input"
address = 0
[[modbus.devices.points]]
id = "strike"
table = "coil"
address = 0
writable = true
[[rules]]
id = "door-open"
title = "Door opened"
severity = "high"
point = "door"
when = { equals = true }
armed_only = true
"#;

/// The token of each test user is its role name.
pub fn site_config() -> Config {
    let source = SITE
        .replace("HASH_ADMIN", &crate::api::auth::hash_token("admin"))
        .replace(
            "HASH_INTEGRATOR",
            &crate::api::auth::hash_token("integrator"),
        )
        .replace("HASH_GUARD", &crate::api::auth::hash_token("guard"));
    Config::parse(&source).unwrap_or_else(|problems| panic!("{problems:?}"))
}

pub struct TestJournal {
    pub handle: JournalHandle,
    pub reader: Reader,
    pub live: Arc<Live>,
    pub folder: tempfile::TempDir,
}

impl TestJournal {
    pub fn start(config: &Config, settings: WriterSettings) -> TestJournal {
        let folder = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = folder.path().join("journal.db");
        let connection = journal::open_for_writing(&path, false).unwrap_or_else(|e| panic!("{e}"));
        let live = Arc::new(Live::default());
        let metrics = Arc::new(Metrics::default());
        let writer = Writer::new(
            connection,
            Rules::from_config(config),
            live.clone(),
            metrics,
            settings,
        );
        let (handle, _thread) = writer.spawn().unwrap_or_else(|e| panic!("{e}"));
        TestJournal {
            handle,
            reader: Reader::new(path),
            live,
            folder,
        }
    }

    pub fn with_defaults(config: &Config) -> TestJournal {
        Self::start(
            config,
            WriterSettings {
                batch_max_events: 256,
                max_age: None,
                max_bytes: None,
                outbox_max_records: None,
            },
        )
    }

    /// Waits until the live state has published `seq` (the writer is asynchronous).
    pub async fn wait_for_seq(&self, seq: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.live.last_seq() < seq {
            assert!(
                tokio::time::Instant::now() < deadline,
                "seq {seq} never committed"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// An observation body of `point` on device `plc`.
pub fn observation(point: &str, value: Value) -> EventBody {
    EventBody::Observation {
        device: DeviceId::new("plc").unwrap_or_else(|e| panic!("{e}")),
        point: PointId::new(point).unwrap_or_else(|e| panic!("{e}")),
        zone: None,
        value: Some(value),
        quality: Quality::Good,
        observed_at: Timestamp::now(),
    }
}

/// All events in the journal, oldest first.
pub fn all_events(reader: &Reader) -> Vec<Event> {
    reader
        .run_blocking(|c| journal::query::events_after(c, 0, 1_000_000))
        .unwrap_or_else(|e| panic!("{e}"))
}
