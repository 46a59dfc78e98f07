//! The station's health and quality decisions, driven through a scripted [`Link`].

use std::collections::VecDeque;
use std::sync::Arc;

use gatehouse_protocol::{DeviceStatus, Event, EventBody, PointId, Quality, Value};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use toml::Spanned;

use super::*;
use crate::adapters::modbus::config::DataType;
use crate::test_helpers::{TestJournal, all_events, site_config};

/// Answers reads from a script, in order; writes succeed.
struct Scripted {
    answers: VecDeque<Answer<Data>>,
    reads: Vec<(Table, u16, u16)>,
}

impl Link for Scripted {
    async fn read(&mut self, table: Table, start: u16, count: u16) -> Answer<Data> {
        self.reads.push((table, start, count));
        self.answers
            .pop_front()
            .unwrap_or_else(|| panic!("unscripted read of {table:?} {start}+{count}"))
    }

    async fn write(&mut self, _address: u16, _write: &Write) -> Answer<()> {
        Ok(Ok(()))
    }
}

fn link_error(failure: Failure, reason: &str) -> LinkError {
    LinkError {
        failure,
        reason: reason.to_owned(),
        counted_as: "test",
    }
}

struct Fixture {
    journal: TestJournal,
    context: AdapterContext,
    station: Station,
}

/// The test site's `plc`: blocks coil 0 (strike), then discrete inputs 0-1 (door, fire).
fn fixture() -> Fixture {
    let config = site_config();
    let journal = TestJournal::with_defaults(&config);
    let (_sender, receiver) = mpsc::channel(1);
    let context = AdapterContext {
        journal: journal.handle.clone(),
        live: journal.live.clone(),
        commands: Arc::new(Mutex::new(receiver)),
        metrics: journal.metrics.clone(),
        shutdown: CancellationToken::new(),
    };
    let station = Station::new(config.modbus.devices[0].clone(), &context);
    Fixture {
        journal,
        context,
        station,
    }
}

impl Fixture {
    /// Every event emitted so far, once committed.
    async fn events(&self) -> Vec<Event> {
        let marker = EventBody::DeviceStatus {
            device: gatehouse_protocol::DeviceId::new("marker").unwrap_or_else(|e| panic!("{e}")),
            status: DeviceStatus::Online,
            reason: None,
        };
        let seq = self
            .context
            .emit_committed(marker)
            .await
            .unwrap_or_else(|| panic!("journal gone"));
        self.journal.wait_for_seq(seq).await;
        all_events(&self.journal.reader)
            .into_iter()
            .filter(|e| e.body.device().is_none_or(|d| d.as_str() != "marker"))
            .collect()
    }
}

fn statuses(events: &[Event]) -> Vec<(DeviceStatus, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::DeviceStatus { status, reason, .. } => Some((*status, reason.clone())),
            _ => None,
        })
        .collect()
}

fn quality_of(events: &[Event], point: &str) -> Option<(Option<Value>, Quality)> {
    events.iter().rev().find_map(|e| match &e.body {
        EventBody::Observation {
            point: p,
            value,
            quality,
            ..
        } if p.as_str() == point => Some((value.clone(), quality.clone())),
        _ => None,
    })
}

#[tokio::test]
async fn a_device_that_answers_everything_is_online_before_its_values() {
    let mut f = fixture();
    let mut link = Scripted {
        answers: VecDeque::from([Ok(Ok(Err(vec![true]))), Ok(Ok(Err(vec![true, false])))]),
        reads: Vec::new(),
    };
    assert_eq!(f.station.poll(&mut link, &f.context).await, Ok(()));
    assert_eq!(
        link.reads,
        [(Table::Coil, 0, 1), (Table::DiscreteInput, 0, 2)]
    );
    let events = f.events().await;
    assert_eq!(statuses(&events), [(DeviceStatus::Online, None)]);
    assert!(matches!(events[0].body, EventBody::DeviceStatus { .. }));
    assert_eq!(
        quality_of(&events, "door"),
        Some((Some(Value::Bool(true)), Quality::Good))
    );
}

#[tokio::test]
async fn a_silent_device_is_unreachable_after_one_timeout_and_goes_offline_with_stale_points() {
    let mut f = fixture();
    let mut link = Scripted {
        answers: VecDeque::from([Ok(Ok(Err(vec![false]))), Ok(Ok(Err(vec![false, false])))]),
        reads: Vec::new(),
    };
    assert_eq!(f.station.poll(&mut link, &f.context).await, Ok(()));
    link.answers
        .push_back(Err(link_error(Failure::Silent, "unit 1 did not answer")));
    assert_eq!(
        f.station.poll(&mut link, &f.context).await,
        Err(PollError::Unreachable("unit 1 did not answer".into()))
    );
    // Its second block was not asked: a silent unit costs one timeout, not one per block.
    assert_eq!(link.reads.len(), 3);
    f.station
        .go_offline(&f.context, "unit 1 did not answer")
        .await;
    assert!(f.station.is_offline());
    let events = f.events().await;
    assert_eq!(
        statuses(&events),
        [
            (DeviceStatus::Online, None),
            (DeviceStatus::Offline, Some("unit 1 did not answer".into()))
        ]
    );
    let (value, quality) = quality_of(&events, "door").unwrap_or_else(|| panic!("no door"));
    assert_eq!(value, Some(Value::Bool(false)), "the last value is kept");
    assert!(matches!(quality, Quality::Stale { .. }), "{quality:?}");
    // Whoever sees the device offline finds its points stale already.
    let last = events.last().map(|e| &e.body);
    assert!(
        matches!(
            last,
            Some(EventBody::DeviceStatus {
                status: DeviceStatus::Offline,
                ..
            })
        ),
        "{last:?}"
    );
}

#[tokio::test]
async fn a_garbled_block_gives_its_points_bad_quality_and_the_device_is_degraded() {
    let mut f = fixture();
    let mut link = Scripted {
        answers: VecDeque::from([
            Ok(Ok(Err(vec![true]))),
            Err(link_error(Failure::Garbled, "an answer with a bad CRC")),
        ]),
        reads: Vec::new(),
    };
    assert_eq!(f.station.poll(&mut link, &f.context).await, Ok(()));
    let events = f.events().await;
    assert_eq!(
        statuses(&events),
        [(
            DeviceStatus::Degraded,
            Some("an answer with a bad CRC".into())
        )]
    );
    assert_eq!(
        quality_of(&events, "strike"),
        Some((Some(Value::Bool(true)), Quality::Good))
    );
    for point in ["door", "fire"] {
        assert_eq!(
            quality_of(&events, point),
            Some((None, Quality::bad("an answer with a bad CRC"))),
            "{point}"
        );
    }
    // The next clean poll brings it back online.
    link.answers
        .extend([Ok(Ok(Err(vec![true]))), Ok(Ok(Err(vec![false, false])))]);
    assert_eq!(f.station.poll(&mut link, &f.context).await, Ok(()));
    let events = f.events().await;
    assert_eq!(
        statuses(&events).last(),
        Some(&(DeviceStatus::Online, None))
    );
    assert_eq!(
        quality_of(&events, "door"),
        Some((Some(Value::Bool(false)), Quality::Good))
    );
}

#[tokio::test]
async fn only_garbled_answers_or_a_broken_link_are_no_answer_at_all() {
    let mut f = fixture();
    let mut link = Scripted {
        answers: VecDeque::from([
            Err(link_error(Failure::Garbled, "bad CRC")),
            Err(link_error(Failure::Garbled, "bad CRC again")),
        ]),
        reads: Vec::new(),
    };
    assert_eq!(
        f.station.poll(&mut link, &f.context).await,
        Err(PollError::Unreachable("bad CRC again".into()))
    );
    link.answers
        .push_back(Err(link_error(Failure::Broken, "port gone")));
    assert_eq!(
        f.station.poll(&mut link, &f.context).await,
        Err(PollError::Broken("port gone".into()))
    );
    assert!(statuses(&f.events().await).is_empty());
}

fn point(deadband: f64) -> ModbusPointConfig {
    ModbusPointConfig {
        id: Spanned::new(0..0, PointId::new("t").unwrap_or_else(|e| panic!("{e}"))),
        table: Table::InputRegister,
        address: 0,
        data_type: Some(Spanned::new(0..0, DataType::U16)),
        word_order: Default::default(),
        scale: 0.1,
        offset: 0.0,
        unit: None,
        deadband,
        writable: false,
        zone: None,
        egress_lock_value: None,
    }
}

#[test]
fn deadband_filters_small_moves_but_not_quality_changes() {
    let p = point(0.5);
    let last = (Some(Value::Float(20.0)), Quality::Good);
    let good = Quality::Good;
    assert!(!changed(&p, Some(&last), Some(&Value::Float(20.4)), &good));
    assert!(changed(&p, Some(&last), Some(&Value::Float(20.5)), &good));
    assert!(changed(&p, Some(&last), Some(&Value::Float(19.5)), &good));
    assert!(changed(&p, Some(&last), None, &Quality::bad("exception")));
    assert!(changed(&p, None, Some(&Value::Float(20.0)), &good));
    let p = point(0.0);
    assert!(changed(&p, Some(&last), Some(&Value::Float(20.01)), &good));
    assert!(!changed(&p, Some(&last), Some(&Value::Float(20.0)), &good));
}
