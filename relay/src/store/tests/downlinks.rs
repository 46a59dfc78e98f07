//! HQ commands for appliances: stored with their step, completed by the appliance's records,
//! claimed once per sweep, scoped to their tenant.

use anyhow::Context as _;
use gatehouse_protocol::{ApplianceId, IncidentState};

use super::fixtures::{Fixture, SECOND, T0, incident_record, observation};
use crate::store::{DownlinkStep, Micros, Store, StoreError, StoredDownlink, TenantScope};

on_both_backends!(
    a_step_and_its_command_commit_together_or_not_at_all,
    an_incident_record_at_or_past_the_step_completes_its_commands,
    due_commands_are_claimed_once_and_again_after_the_resend_delay,
    an_appliance_back_online_gets_every_pending_command_of_its_own,
);

/// A day, the retry window the tests use.
const DAY: Micros = 24 * 3600 * SECOND;

/// The fixture with incident 1 opened by record 1.
async fn with_open_incident(store: &Store, name: &str) -> anyhow::Result<Fixture> {
    let fixture = Fixture::new(store, name).await?;
    store
        .ingest(
            &fixture.appliance,
            &[incident_record(1, 1, IncidentState::Open)],
        )
        .await?;
    Ok(fixture)
}

async fn commands_of(
    store: &Store,
    scope: &TenantScope,
    appliance: &ApplianceId,
) -> anyhow::Result<Vec<StoredDownlink>> {
    Ok(store.incident_downlinks(scope, appliance, 1).await?)
}

async fn step(
    store: &Store,
    fixture: &Fixture,
    step: DownlinkStep,
    at: Micros,
) -> Result<StoredDownlink, StoreError> {
    let (_, command) = store
        .step_incident_with_downlink(
            &fixture.scope,
            &fixture.appliance,
            1,
            step,
            "dana",
            None,
            at,
        )
        .await?;
    Ok(command)
}

async fn a_step_and_its_command_commit_together_or_not_at_all(store: &Store) -> anyhow::Result<()> {
    let fixture = with_open_incident(store, "acme").await?;
    let (scope, appliance) = (&fixture.scope, &fixture.appliance);
    let (incident, command) = store
        .step_incident_with_downlink(
            scope,
            appliance,
            1,
            DownlinkStep::Acknowledge,
            "dana",
            Some("on my way"),
            T0 + 60 * SECOND,
        )
        .await?;
    assert_eq!(incident.state, IncidentState::Acknowledged);
    assert!(command.command_id.starts_with("cmd-"), "{command:?}");
    assert_eq!(
        (
            &command.tenant,
            &command.appliance,
            command.incident,
            command.step,
            command.by.as_str(),
            command.comment.as_deref(),
        ),
        (
            scope.tenant(),
            appliance,
            1,
            DownlinkStep::Acknowledge,
            "dana",
            Some("on my way"),
        )
    );
    assert_eq!(
        (
            command.created_at,
            command.sent_at,
            command.sends,
            command.done_at
        ),
        (T0 + 60 * SECOND, None, 0, None)
    );
    assert_eq!(
        commands_of(store, scope, appliance).await?,
        vec![command.clone()]
    );
    let comments = store.incident_comments(scope, appliance, 1).await?;
    assert_eq!(comments.len(), 1);
    assert_eq!(comments[0].author, "dana");

    // A step the lifecycle refuses stores no command.
    let again = step(store, &fixture, DownlinkStep::Acknowledge, T0 + 61 * SECOND).await;
    assert!(
        matches!(again, Err(StoreError::Lifecycle { .. })),
        "{again:?}"
    );
    // Nor does a step refused for its input: the transaction is rolled back whole.
    let blank = store
        .step_incident_with_downlink(scope, appliance, 1, DownlinkStep::Resolve, " ", None, T0)
        .await;
    assert!(
        matches!(
            blank,
            Err(StoreError::Invalid {
                field: "author",
                ..
            })
        ),
        "{blank:?}"
    );
    let missing = store
        .step_incident_with_downlink(
            scope,
            appliance,
            99,
            DownlinkStep::Resolve,
            "dana",
            None,
            T0,
        )
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
    assert_eq!(commands_of(store, scope, appliance).await?, vec![command]);
    let stored = store
        .incident(scope, appliance, 1)
        .await?
        .context("incident 1 is gone")?;
    assert_eq!(stored.state, IncidentState::Acknowledged);

    // Another tenant can neither step the incident nor see its commands.
    let other = Fixture::new(store, "globex").await?;
    let foreign = store
        .step_incident_with_downlink(
            &other.scope,
            appliance,
            1,
            DownlinkStep::Resolve,
            "mallory",
            None,
            T0,
        )
        .await;
    assert!(
        matches!(foreign, Err(StoreError::NotFound { .. })),
        "{foreign:?}"
    );
    assert!(
        commands_of(store, &other.scope, appliance)
            .await?
            .is_empty()
    );
    assert_eq!(commands_of(store, scope, appliance).await?.len(), 1);
    Ok(())
}

async fn an_incident_record_at_or_past_the_step_completes_its_commands(
    store: &Store,
) -> anyhow::Result<()> {
    let fixture = with_open_incident(store, "acme").await?;
    let (scope, appliance) = (&fixture.scope, &fixture.appliance);
    let ack = step(store, &fixture, DownlinkStep::Acknowledge, T0 + 10 * SECOND).await?;
    let resolve = step(store, &fixture, DownlinkStep::Resolve, T0 + 20 * SECOND).await?;

    // Another incident's record, and an observation, complete nothing.
    let unrelated = store
        .ingest_report(
            appliance,
            &[
                incident_record(2, 2, IncidentState::Resolved),
                observation(3),
            ],
        )
        .await?;
    assert_eq!(unrelated.downlinks_done, 0);

    // The appliance acknowledged: the acknowledgement is done, the resolution is not.
    let acknowledged = incident_record(4, 1, IncidentState::Acknowledged);
    let recorded_at = acknowledged.recorded_at;
    let report = store
        .ingest_report(appliance, std::slice::from_ref(&acknowledged))
        .await?;
    assert_eq!((report.downlinks_done, report.stored.clone()), (1, vec![4]));
    let done = |commands: &[StoredDownlink], id: &str| {
        commands
            .iter()
            .find(|command| command.command_id == id)
            .map(|command| command.done_at)
    };
    let commands = commands_of(store, scope, appliance).await?;
    assert_eq!(done(&commands, &ack.command_id), Some(Some(recorded_at)));
    assert_eq!(done(&commands, &resolve.command_id), Some(None));

    // A redelivery completes nothing more.
    let again = store.ingest_report(appliance, &[acknowledged]).await?;
    assert_eq!((again.downlinks_done, again.stored), (0, vec![]));

    // Resolved: the resolution is done too.
    let resolved = store
        .ingest_report(appliance, &[incident_record(5, 1, IncidentState::Resolved)])
        .await?;
    assert_eq!(resolved.downlinks_done, 1);
    let commands = commands_of(store, scope, appliance).await?;
    assert!(
        commands.iter().all(|command| command.done_at.is_some()),
        "{commands:?}"
    );
    assert_eq!(store.count_pending_downlinks(T0 - DAY).await?, 0);
    Ok(())
}

async fn due_commands_are_claimed_once_and_again_after_the_resend_delay(
    store: &Store,
) -> anyhow::Result<()> {
    let fixture = with_open_incident(store, "acme").await?;
    let command = step(store, &fixture, DownlinkStep::Acknowledge, T0).await?;
    let retry_from = |now: Micros| now - DAY;
    let claim = async |now: Micros| -> anyhow::Result<Vec<StoredDownlink>> {
        Ok(store
            .claim_due_downlinks(now, now - 60 * SECOND, retry_from(now), 100)
            .await?)
    };
    assert_eq!(store.count_pending_downlinks(retry_from(T0)).await?, 1);

    // Offline: left for when it is back (the broker would queue every copy).
    assert!(claim(T0 + 61 * SECOND).await?.is_empty());
    store
        .set_appliance_status(&fixture.appliance, true, 0, T0)
        .await?;
    // Too young: the API's hand-over sends it first.
    assert!(claim(T0 + 30 * SECOND).await?.is_empty());
    let due = claim(T0 + 61 * SECOND).await?;
    assert_eq!(due.len(), 1);
    assert_eq!(
        (&due[0].command_id, due[0].sent_at, due[0].sends),
        (&command.command_id, Some(T0 + 61 * SECOND), 1)
    );
    // Just sent: not due again until a minute later.
    assert!(claim(T0 + 62 * SECOND).await?.is_empty());

    // Replicas sweeping at once: each due row goes to one of them.
    let now = T0 + 200 * SECOND;
    let sweeps = futures_util::future::join_all((0..4).map(|_| claim(now))).await;
    let mut claimed = 0;
    for sweep in sweeps {
        claimed += sweep?.len();
    }
    assert_eq!(claimed, 1);

    // A new command sent at once is noted, and so not due for a minute; the first one is.
    let second = step(store, &fixture, DownlinkStep::Resolve, T0 + 300 * SECOND).await?;
    store
        .mark_downlink_sent(&fixture.appliance, &second.command_id, T0 + 300 * SECOND)
        .await?;
    let ids = |due: &[StoredDownlink]| -> Vec<String> {
        due.iter().map(|c| c.command_id.clone()).collect()
    };
    assert_eq!(
        ids(&claim(T0 + 330 * SECOND).await?),
        vec![command.command_id.clone()]
    );
    let due = claim(T0 + 400 * SECOND).await?;
    assert_eq!(
        ids(&due),
        vec![command.command_id.clone(), second.command_id.clone()]
    );
    assert_eq!((due[0].sends, due[1].sends), (4, 2));

    // Past the retry window: no longer sent, nor counted.
    let later = T0 + 2 * DAY;
    assert!(claim(later).await?.is_empty());
    assert_eq!(store.count_pending_downlinks(retry_from(later)).await?, 0);
    assert_eq!(
        store
            .count_pending_downlinks(retry_from(T0 + 400 * SECOND))
            .await?,
        2
    );
    Ok(())
}

async fn an_appliance_back_online_gets_every_pending_command_of_its_own(
    store: &Store,
) -> anyhow::Result<()> {
    let fixture = with_open_incident(store, "acme").await?;
    let other = with_open_incident(store, "globex").await?;
    let mine = step(store, &fixture, DownlinkStep::Acknowledge, T0).await?;
    step(store, &other, DownlinkStep::Acknowledge, T0).await?;
    let now = T0 + 5 * SECOND;

    // Sent a moment ago or not: an appliance back online gets it again.
    for sends in 1..=2 {
        let claimed = store
            .claim_appliance_downlinks(&fixture.scope, &fixture.appliance, now, now - DAY)
            .await?;
        assert_eq!(claimed.len(), 1);
        assert_eq!(
            (&claimed[0].command_id, claimed[0].sent_at, claimed[0].sends),
            (&mine.command_id, Some(now), sends)
        );
    }
    // Only through its own tenant.
    let foreign = store
        .claim_appliance_downlinks(&other.scope, &fixture.appliance, now, now - DAY)
        .await?;
    assert!(foreign.is_empty());

    // Done, or older than the window: not sent.
    store
        .ingest(
            &fixture.appliance,
            &[incident_record(2, 1, IncidentState::Resolved)],
        )
        .await?;
    let claimed = store
        .claim_appliance_downlinks(&fixture.scope, &fixture.appliance, now, now - DAY)
        .await?;
    assert!(claimed.is_empty());
    let stale = store
        .claim_appliance_downlinks(&other.scope, &other.appliance, now, T0 + SECOND)
        .await?;
    assert!(stale.is_empty());
    Ok(())
}
