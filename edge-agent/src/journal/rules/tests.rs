//! The engine inside the real writer, on a real journal: what it journals, in which
//! transaction, what it sends after commit, and what survives a restart and a reload.

use std::time::Duration;

use gatehouse_protocol::{
    CommandOutcome, Event, EventBody, IncidentChange, IncidentState, PointId, Severity, Transition,
    Value, ZoneId, ZoneMode,
};
use gatehouse_rules::engine::Refusal;
use jiff::Timestamp;

use crate::config::Config;
use crate::journal::IncidentAction;
use crate::test_helpers::{
    SITE, TestJournal, all_events, default_settings, observation, site_config, site_config_from,
};

fn point(id: &str) -> PointId {
    PointId::new(id).unwrap_or_else(|e| panic!("{e}"))
}

fn zone(id: &str) -> ZoneId {
    ZoneId::new(id).unwrap_or_else(|e| panic!("{e}"))
}

/// The test site with `from` replaced by `to` in its text.
fn site_with(from: &str, to: &str) -> Config {
    assert!(SITE.contains(from), "{from}");
    site_config_from(&SITE.replace(from, to))
}

/// The lobby with a one-second entry delay, which the door rule waits for.
fn entry_delay_site() -> Config {
    let source = SITE
        .replace(
            "mode = \"armed_away\"",
            "mode = \"armed_away\"\nentry_delay = \"1s\"",
        )
        .replace(
            "title = \"Door opened\" }",
            "title = \"Door opened\", delay = \"entry\" }",
        );
    site_config_from(&source)
}

async fn append(journal: &TestJournal, point: &str, value: Value) -> u64 {
    journal
        .handle
        .append_committed(observation(point, value))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A door opened twice in the armed lobby: one incident, then its second piece of evidence.
const OPENED_THEN_EVIDENCE: [(IncidentChange, u64, Severity, usize); 2] = [
    (IncidentChange::Opened, 1, Severity::High, 1),
    (IncidentChange::EvidenceAdded, 1, Severity::High, 2),
];

/// The incident events of the journal: (change, incident id, severity, evidence count).
fn incident_events(events: &[Event]) -> Vec<(IncidentChange, u64, Severity, usize)> {
    events
        .iter()
        .filter_map(|event| match &event.body {
            EventBody::Incident { change, incident } => Some((
                *change,
                incident.id,
                incident.severity,
                incident.evidence.len(),
            )),
            _ => None,
        })
        .collect()
}

/// Waits until the writer publishes a deadline and returns it.
async fn next_deadline(journal: &mut TestJournal) -> Timestamp {
    let wait = journal.deadline.wait_for(Option::is_some);
    let deadline = tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("no deadline published"))
        .unwrap_or_else(|e| panic!("{e}"));
    deadline.unwrap_or_else(|| panic!("no deadline"))
}

/// Sleeps until `at` and ticks the writer, as the agent's wake-up task does.
async fn tick_at(journal: &TestJournal, at: Timestamp) {
    let left = at.duration_since(Timestamp::now());
    if left.is_positive() {
        tokio::time::sleep(left.unsigned_abs() + Duration::from_millis(20)).await;
    }
    journal
        .handle
        .tick()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A committed append after the tick: the tick's batch is committed too.
    append(journal, "strike", Value::Bool(false)).await;
}

#[tokio::test]
async fn repeats_add_evidence_and_an_unacknowledged_incident_escalates() {
    let mut journal = TestJournal::with_defaults(&site_config());
    let opened = append(&journal, "door", Value::Bool(true)).await;
    append(&journal, "door", Value::Bool(false)).await;
    append(&journal, "door", Value::Bool(true)).await;
    let events = all_events(&journal.reader);
    assert_eq!(incident_events(&events), OPENED_THEN_EVIDENCE);
    // The incident's event is in the transaction of the observation that raised it.
    let incident_event = events
        .iter()
        .find(|e| matches!(e.body, EventBody::Incident { .. }))
        .unwrap_or_else(|| panic!("no incident event"));
    assert_eq!(incident_event.seq, opened + 1);

    // Escalation two seconds after opening, to the step's severity.
    let due = next_deadline(&mut journal).await;
    tick_at(&journal, due).await;
    let events = all_events(&journal.reader);
    let last = incident_events(&events).pop();
    assert_eq!(
        last,
        Some((IncidentChange::Escalated, 1, Severity::Critical, 2))
    );
    let stored = stored_incident(&journal, 1).await;
    assert_eq!(
        (stored.severity, stored.escalations),
        (Severity::Critical, 1)
    );

    // Acknowledged: no more steps, and a resolved incident takes no more evidence.
    let transition = Transition {
        by: "guard".into(),
        at: Timestamp::now(),
        comment: None,
    };
    journal
        .handle
        .change_incident(1, IncidentAction::Resolve, transition)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    append(&journal, "door", Value::Bool(false)).await;
    append(&journal, "door", Value::Bool(true)).await;
    let changes: Vec<(IncidentChange, u64)> = incident_events(&all_events(&journal.reader))
        .into_iter()
        .map(|(change, id, _, _)| (change, id))
        .collect();
    assert_eq!(
        changes[changes.len() - 2..],
        [(IncidentChange::Resolved, 1), (IncidentChange::Opened, 2)]
    );
}

#[tokio::test]
async fn the_fire_interlock_releases_egress_locks_and_refuses_to_lock_them() {
    let mut journal = TestJournal::with_defaults(&site_config());
    let strike = point("strike");
    let check = |journal: &TestJournal, value: bool| {
        let handle = journal.handle.clone();
        let strike = strike.clone();
        async move {
            handle
                .check_command(strike, Value::Bool(value))
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    assert_eq!(check(&journal, true).await, Ok(()));
    append(&journal, "fire", Value::Bool(true)).await;
    // The unlock leaves only after the commit, towards the adapters.
    let unlock = tokio::time::timeout(Duration::from_secs(5), journal.rule_commands.recv())
        .await
        .unwrap_or_else(|_| panic!("no unlock command"))
        .unwrap_or_else(|| panic!("channel closed"));
    assert_eq!(
        (unlock.point.as_str(), &unlock.value),
        ("strike", &Value::Bool(false))
    );
    assert_eq!(unlock.rule.as_str(), "fire");
    // ... and was journaled as sent, by the rule, before it left.
    let sent = all_events(&journal.reader).into_iter().any(|e| {
        matches!(&e.body, EventBody::Command { point, outcome: CommandOutcome::Sent, requested_by, .. }
            if point.as_str() == "strike" && requested_by == "rule:fire")
    });
    assert!(sent);
    assert!(journal.live.rules().interlock);
    assert_eq!(
        check(&journal, true).await,
        Err(Refusal::Interlock(strike.clone()))
    );
    assert_eq!(check(&journal, false).await, Ok(()));
    // The fire panel is reset: locking is allowed again.
    append(&journal, "fire", Value::Bool(false)).await;
    assert_eq!(check(&journal, true).await, Ok(()));
    assert!(!journal.live.rules().interlock);
}

#[tokio::test]
async fn a_mode_change_is_journaled_obeyed_and_kept_across_a_restart() {
    let config = site_config();
    let journal = TestJournal::with_defaults(&config);
    let changed = journal
        .handle
        .set_mode(zone("lobby"), ZoneMode::Disarmed, "guard".into())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(changed, Ok(()));
    let unknown = journal
        .handle
        .set_mode(zone("attic"), ZoneMode::ArmedAway, "guard".into())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(unknown, Err(Refusal::UnknownZone(_))));
    append(&journal, "door", Value::Bool(true)).await;
    let events = all_events(&journal.reader);
    assert!(incident_events(&events).is_empty(), "disarmed: no alarm");
    let modes: Vec<(String, ZoneMode, String)> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ZoneMode { zone, mode, by, .. } => {
                Some((zone.to_string(), *mode, by.clone()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        modes,
        [("lobby".to_owned(), ZoneMode::Disarmed, "guard".to_owned())]
    );

    // The config still says armed_away at first start; the saved mode wins after a restart.
    let journal = TestJournal::start_in(journal.stop(), &config, default_settings());
    append(&journal, "door", Value::Bool(false)).await;
    assert_eq!(journal.live.rules().zones[0].mode, ZoneMode::Disarmed);
    append(&journal, "door", Value::Bool(true)).await;
    assert!(incident_events(&all_events(&journal.reader)).is_empty());
}

#[tokio::test]
async fn an_entry_delay_running_out_while_the_agent_is_down_raises_at_restart() {
    let config = entry_delay_site();
    let journal = TestJournal::with_defaults(&config);
    append(&journal, "door", Value::Bool(true)).await;
    assert!(
        incident_events(&all_events(&journal.reader)).is_empty(),
        "still in the delay"
    );
    // Killed in the delay; back after it ended.
    let folder = journal.stop();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let journal = TestJournal::start_in(folder, &config, default_settings());
    append(&journal, "strike", Value::Bool(false)).await;
    let incidents = incident_events(&all_events(&journal.reader));
    assert_eq!(incidents, [(IncidentChange::Opened, 1, Severity::High, 1)]);
}

#[tokio::test]
async fn disarming_within_the_entry_delay_raises_nothing_and_a_reload_keeps_the_mode() {
    let config = entry_delay_site();
    let mut journal = TestJournal::with_defaults(&config);
    append(&journal, "door", Value::Bool(true)).await;
    let due = next_deadline(&mut journal).await;
    journal
        .handle
        .set_mode(zone("lobby"), ZoneMode::Disarmed, "guard".into())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
    tick_at(&journal, due).await;
    assert!(incident_events(&all_events(&journal.reader)).is_empty());

    // A changed config (one rule fewer) takes over; the disarmed lobby stays disarmed.
    let changed = site_with(
        "[[rules]]\nid = \"fire\"",
        "[[rules]]\nid = \"fire-renamed\"",
    );
    let engine = changed.engine().unwrap_or_else(|p| panic!("{p:?}"));
    journal
        .handle
        .reload_rules(engine)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    append(&journal, "door", Value::Bool(false)).await;
    let view = journal.live.rules();
    assert_eq!(view.zones[0].mode, ZoneMode::Disarmed);
    assert_eq!(view.rules, 2);
    let incident = journal
        .reader
        .run(|c| crate::journal::query::incident(c, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(incident.is_none_or(|i| i.state != IncidentState::Open));
}

#[tokio::test]
async fn a_bypassed_door_raises_nothing_until_the_zone_is_disarmed() {
    let journal = TestJournal::with_defaults(&site_config());
    let bypass = |on: bool| {
        let handle = journal.handle.clone();
        async move {
            handle
                .bypass(point("door"), on, "integrator".into())
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    assert_eq!(bypass(true).await, Ok(()));
    append(&journal, "door", Value::Bool(true)).await;
    assert!(incident_events(&all_events(&journal.reader)).is_empty());
    assert_eq!(journal.live.rules().bypassed, [point("door")]);
    let unknown = journal
        .handle
        .bypass(point("nothing"), true, "integrator".into())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(unknown, Err(Refusal::UnknownPoint(_))));
    assert_eq!(bypass(false).await, Ok(()));
    append(&journal, "door", Value::Bool(false)).await;
    append(&journal, "door", Value::Bool(true)).await;
    assert_eq!(incident_events(&all_events(&journal.reader)).len(), 1);
}

#[tokio::test]
async fn a_rule_that_retriggers_itself_is_held_back_counted_and_the_writer_goes_on() {
    // Every record of a command to the strike (its own "sent" included) commands it again.
    let config = site_config_from(&format!(
        "{SITE}[[rules]]\nid = \"echo\"\nwhen.event = {{ point = \"strike\", kind = \"command\" }}\n\
         then = [{{ command = {{ point = \"strike\", value = true }} }}]\n"
    ));
    let journal = TestJournal::with_defaults(&config);
    let first = EventBody::Command {
        device: gatehouse_protocol::DeviceId::new("plc").unwrap_or_else(|e| panic!("{e}")),
        point: point("strike"),
        value: Value::Bool(true),
        outcome: CommandOutcome::Done,
        requested_by: "admin".into(),
    };
    journal
        .handle
        .append_committed(first)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sent = all_events(&journal.reader)
        .iter()
        .filter(|e| {
            matches!(
                &e.body,
                EventBody::Command {
                    outcome: CommandOutcome::Sent,
                    ..
                }
            )
        })
        .count();
    assert_eq!(sent, gatehouse_rules::engine::DEFAULT_MAX_FIRINGS as usize);
    assert_eq!(journal.metrics.rules_loops_suppressed.get(), 1);
    // The writer is not stuck: the next event commits.
    append(&journal, "door", Value::Bool(false)).await;
}

#[tokio::test]
async fn a_batch_that_fails_to_commit_is_evaluated_again_from_the_committed_state() {
    let journal = TestJournal::with_defaults(&site_config());
    append(&journal, "door", Value::Bool(false)).await;
    // Another process holds the write lock: the writer's next commit fails (busy) after its
    // busy timeout, is rolled back, and is retried.
    let blocker = rusqlite::Connection::open(journal.folder.path().join("journal.db"))
        .unwrap_or_else(|e| panic!("{e}"));
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .unwrap_or_else(|e| panic!("{e}"));
    let handle = journal.handle.clone();
    let opening = tokio::spawn(async move {
        handle
            .append_committed(observation("door", Value::Bool(true)))
            .await
    });
    let failed = async {
        while journal.metrics.journal_commit_failures.get() == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), failed)
        .await
        .unwrap_or_else(|_| panic!("the commit never failed"));
    blocker
        .execute_batch("ROLLBACK")
        .unwrap_or_else(|e| panic!("{e}"));
    let opened = opening
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));

    // One incident, whose evidence is the committed observation; the engine knows it, so the
    // next opening adds to it.
    append(&journal, "door", Value::Bool(false)).await;
    append(&journal, "door", Value::Bool(true)).await;
    let events = all_events(&journal.reader);
    assert_eq!(incident_events(&events), OPENED_THEN_EVIDENCE);
    let incident = stored_incident(&journal, 1).await;
    assert_eq!(incident.evidence[0].seq, opened);
}

/// The test site with a camera whose clip the door rule asks for, before or after its raise.
fn clip_site(clip_first: bool, entry_delay: bool) -> Config {
    let clip = r#"{ clip = { camera = "cam.lobby", before = "2s", after = "3s" } }"#;
    let raise = if entry_delay {
        r#"{ raise = { severity = "high", title = "Door opened", delay = "entry" } }"#
    } else {
        r#"{ raise = { severity = "high", title = "Door opened" } }"#
    };
    let actions = if clip_first {
        format!("then = [{clip}, {raise}]")
    } else {
        format!("then = [{raise}, {clip}]")
    };
    let mut source = SITE.replace(
        r#"then = [{ raise = { severity = "high", title = "Door opened" } }]"#,
        &actions,
    );
    assert!(source.contains("cam.lobby"), "the door rule changed shape");
    if entry_delay {
        source = source.replace(
            "mode = \"armed_away\"",
            "mode = \"armed_away\"\nentry_delay = \"1s\"",
        );
    }
    source
        .push_str("\n[[video.cameras]]\nid = \"cam.lobby\"\nurl = \"rtsp://127.0.0.1:8554/cam\"\n");
    site_config_from(&source)
}

#[tokio::test]
async fn a_clip_is_recorded_with_its_trigger_and_linked_to_the_incident_in_either_order() {
    for clip_first in [false, true] {
        let mut journal = TestJournal::with_defaults(&clip_site(clip_first, false));
        let seq = append(&journal, "door", Value::Bool(true)).await;
        let request = journal
            .rule_clips
            .recv()
            .await
            .unwrap_or_else(|| panic!("no clip request"));
        assert_eq!(request.camera.as_str(), "cam.lobby");
        assert_eq!(request.to.duration_since(request.at).as_secs(), 3);
        assert_eq!(request.at.duration_since(request.from).as_secs(), 2);
        let incident = stored_incident(&journal, 1).await;
        assert_eq!(incident.clips.len(), 1, "clip first: {clip_first}");
        assert_eq!(incident.clips[0].id, request.id);
        assert_eq!(
            incident.clips[0].state,
            gatehouse_protocol::ClipState::Recording
        );
        let trigger = all_events(&journal.reader)
            .into_iter()
            .find(|e| e.seq == seq)
            .unwrap_or_else(|| panic!("no trigger event"));
        let clip = stored_clip(&journal, request.id).await;
        assert_eq!(clip.incident, Some(1));
        assert!(clip.trigger_at <= trigger.recorded_at);
    }
}

#[tokio::test]
async fn a_finished_clip_updates_its_incident_and_an_entry_delayed_raise_finds_its_clip() {
    let mut journal = TestJournal::with_defaults(&clip_site(false, true));
    append(&journal, "door", Value::Bool(true)).await;
    // The clip is asked for at the trigger; the raise waits for the entry delay.
    let request = journal
        .rule_clips
        .recv()
        .await
        .unwrap_or_else(|| panic!("no clip request"));
    let due = next_deadline(&mut journal).await;
    tick_at(&journal, due).await;
    assert_eq!(stored_incident(&journal, 1).await.clips[0].id, request.id);

    let outcome = crate::journal::clips::ClipOutcome::Ready {
        file: format!("{}.mp4", request.id),
        snapshot: None,
        bytes: 1234,
        duration_ms: 5_000,
    };
    journal
        .handle
        .finish_clip(request.id, outcome.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let updated = stored_incident(&journal, 1).await;
    assert_eq!(updated.clips[0].state, gatehouse_protocol::ClipState::Ready);
    // The change is an incident event, so the stream and the relay learn of it.
    let last = incident_events(&all_events(&journal.reader)).pop();
    assert_eq!(
        last.map(|(change, ..)| change),
        Some(IncidentChange::EvidenceAdded)
    );
    // A second outcome for the same clip changes nothing.
    let before = all_events(&journal.reader).len();
    journal
        .handle
        .finish_clip(
            request.id,
            crate::journal::clips::ClipOutcome::Failed {
                reason: "late".into(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(all_events(&journal.reader).len(), before);

    journal
        .handle
        .forget_clips(vec![request.id])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let gone = journal
        .reader
        .run(move |c| crate::journal::clips::get(c, request.id))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(gone.is_none());
}

#[tokio::test]
async fn a_door_opened_again_during_the_entry_delay_brings_its_clip_to_the_incident() {
    let mut journal = TestJournal::with_defaults(&clip_site(false, true));
    let first = append(&journal, "door", Value::Bool(true)).await;
    append(&journal, "door", Value::Bool(false)).await;
    let again = append(&journal, "door", Value::Bool(true)).await;
    let mut requested = Vec::new();
    for _ in 0..2 {
        let request = journal.rule_clips.recv().await;
        requested.push(request.unwrap_or_else(|| panic!("no clip request")).id);
    }
    let due = next_deadline(&mut journal).await;
    tick_at(&journal, due).await;
    let incident = stored_incident(&journal, 1).await;
    let clips: Vec<u64> = incident.clips.iter().map(|clip| clip.id).collect();
    assert_eq!(clips, requested);
    let evidence: Vec<u64> = incident.evidence.iter().map(|e| e.seq).collect();
    assert_eq!(evidence, [first, again]);
    for id in requested {
        let clip = stored_clip(&journal, id).await;
        assert_eq!(clip.incident, Some(1), "clip {id}");
    }
}

/// Incident `id` as the journal stores it.
async fn stored_incident(journal: &TestJournal, id: u64) -> gatehouse_protocol::Incident {
    journal
        .reader
        .run(move |c| crate::journal::query::incident(c, id))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("incident {id} missing"))
}

/// Clip `id`'s row.
async fn stored_clip(journal: &TestJournal, id: u64) -> crate::journal::clips::ClipRecord {
    journal
        .reader
        .run(move |c| crate::journal::clips::get(c, id))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("clip {id} missing"))
}
