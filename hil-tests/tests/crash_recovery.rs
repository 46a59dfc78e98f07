//! kill -9 of the agent in the middle of a burst: every event a client was shown is still in
//! the journal after a restart, unchanged, and sequence numbers are never reused.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gatehouse_hil_tests::harness::{self, ADMIN_TOKEN, AgentProcess, GUARD_TOKEN, StreamClient};
use serde_json::json;

#[tokio::test]
async fn kill_9_during_a_burst_loses_no_event_a_client_was_shown() -> anyhow::Result<()> {
    let sim = Arc::new(harness::simulator().await?);
    let folder = tempfile::tempdir()?;
    let config = format!(
        "{}{}{}",
        harness::busy_device("busy", sim.addr(), 100),
        harness::door_device("io", sim.addr(), 50),
        harness::door_rule("io"),
    );
    let mut agent = AgentProcess::start_site(folder.path(), &config).await?;

    // Something acknowledged over REST before the crash: an incident, acknowledged.
    let guard = agent.api(GUARD_TOKEN);
    sim.set_discrete(1, 0, true);
    let incidents = guard
        .wait_for("/api/v1/incidents", Duration::from_secs(15), |page| {
            page["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty())
        })
        .await?;
    let id = incidents["items"][0]["id"].as_u64().unwrap_or(0);
    let (status, _) = guard
        .post(
            &format!("/api/v1/incidents/{id}/ack"),
            &json!({"comment": "before the crash"}),
        )
        .await?;
    assert_eq!(status, 200);

    // The burst: every register changes every millisecond, so each poll yields ~100 events.
    let running = Arc::new(AtomicBool::new(true));
    let burst = tokio::spawn(harness::churn_registers(sim.clone(), 100, running.clone()));
    let mut stream = StreamClient::connect(agent.api, GUARD_TOKEN, Some(0)).await?;
    let mut shown = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    while tokio::time::Instant::now() < until {
        if let Some(event) = stream.next_event(Duration::from_millis(200)).await? {
            shown.push(event);
        }
    }
    agent.kill9()?;
    // Whatever was already on the wire when the agent died was committed too.
    while let Ok(Some(event)) = stream.next_event(Duration::from_millis(200)).await {
        shown.push(event);
    }
    running.store(false, Ordering::Relaxed);
    burst.await?;
    assert!(
        shown.len() > 1000,
        "the burst was too small to prove much: {}",
        shown.len()
    );
    let seqs: Vec<u64> = shown.iter().map(|e| e.seq).collect();
    assert_eq!(seqs[0], 1, "the stream started at the beginning");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "the stream had a gap or a repeat"
    );

    let agent = AgentProcess::start_with(&agent.config, agent.api.port()).await?;
    let admin = agent.api(ADMIN_TOKEN);
    let stored: HashMap<u64, _> = admin
        .all_events("")
        .await?
        .into_iter()
        .map(|event| (event.seq, event))
        .collect();
    let mut missing = Vec::new();
    for event in &shown {
        match stored.get(&event.seq) {
            Some(stored) => assert_eq!(stored, event, "seq {} changed", event.seq),
            None => missing.push(event.seq),
        }
    }
    assert!(
        missing.is_empty(),
        "{} shown events lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );

    let (_, incident) = admin.get(&format!("/api/v1/incidents/{id}")).await?;
    assert_eq!(incident["state"], "acknowledged");
    assert_eq!(incident["acknowledged"]["comment"], "before the crash");
    // The restart does not raise the still-open door again.
    let (_, page) = admin.get("/api/v1/incidents").await?;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{page}");

    // New events continue after the highest seq ever committed: nothing is reused.
    let highest = stored.keys().max().copied().unwrap_or(0);
    let mut stream = StreamClient::connect(agent.api, GUARD_TOKEN, None).await?;
    sim.set_discrete(1, 0, false);
    let (closed, _) = stream
        .wait_for(Duration::from_secs(10), |e| {
            harness::is_observation(e, "io.door", Some(&gatehouse_protocol::Value::Bool(false)))
        })
        .await?;
    assert!(closed.seq > highest, "{} after {highest}", closed.seq);
    Ok(())
}

#[tokio::test]
async fn sigterm_stops_the_agent_cleanly_and_a_resuming_client_misses_nothing() -> anyhow::Result<()>
{
    let sim = harness::simulator().await?;
    let folder = tempfile::tempdir()?;
    let config = harness::door_device("io", sim.addr(), 20);
    let mut agent = AgentProcess::start_site(folder.path(), &config).await?;
    let mut stream = StreamClient::connect(agent.api, GUARD_TOKEN, Some(0)).await?;
    let (first, _) = stream
        .wait_for(Duration::from_secs(10), |e| {
            harness::is_observation(e, "io.count", None)
        })
        .await?;
    let status = agent.stop().await?;
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        agent.log()
    );

    // Changes while the agent is down are seen after restart; a client resuming from the
    // last seq it had gets everything after it, in order, without repeats.
    sim.set_input(1, 10, 99);
    let agent = AgentProcess::start_with(&agent.config, agent.api.port()).await?;
    let mut resumed = StreamClient::connect(agent.api, GUARD_TOKEN, Some(first.seq)).await?;
    let (seen, before) = resumed
        .wait_for(Duration::from_secs(10), |e| {
            harness::is_observation(e, "io.count", Some(&gatehouse_protocol::Value::Int(99)))
        })
        .await?;
    let mut seqs: Vec<u64> = before.iter().map(|e| e.seq).collect();
    seqs.push(seen.seq);
    assert!(
        seqs[0] == first.seq + 1,
        "resumed right after {}: {seqs:?}",
        first.seq
    );
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "no gaps: {seqs:?}"
    );
    Ok(())
}
