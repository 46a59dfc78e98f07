//! The stream under load: a client that stops reading falls behind the live bus and is caught
//! up from the journal, without a gap or a repeat.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gatehouse_hil_tests::harness::{self, ADMIN_TOKEN, AgentProcess, GUARD_TOKEN, StreamClient};

#[tokio::test]
async fn a_client_that_stops_reading_is_caught_up_without_gaps() -> anyhow::Result<()> {
    let sim = Arc::new(harness::simulator().await?);
    let folder = tempfile::tempdir()?;
    let config = harness::busy_device("busy", sim.addr(), 100);
    let agent = AgentProcess::start_site(folder.path(), &config).await?;
    let mut stream = StreamClient::connect(agent.api, GUARD_TOKEN, Some(0)).await?;
    let first = stream
        .next_event(Duration::from_secs(10))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no first event"))?;

    // Stop reading while thousands of events are committed: more than the live bus holds.
    let running = Arc::new(AtomicBool::new(true));
    let churn = tokio::spawn(harness::churn_registers(sim.clone(), 100, running.clone()));
    let admin = agent.api(ADMIN_TOKEN);
    admin
        .wait_for(
            "/api/v1/events?order=desc&limit=1",
            Duration::from_secs(60),
            |page| page["items"][0]["seq"].as_u64().unwrap_or(0) > first.seq + 60_000,
        )
        .await?;
    running.store(false, Ordering::Relaxed);
    churn.await?;

    let mut last = first.seq;
    let mut received = 0u64;
    while let Some(event) = stream.next_event(Duration::from_secs(2)).await? {
        assert_eq!(
            event.seq,
            last + 1,
            "the stream skipped or repeated after {last}"
        );
        last = event.seq;
        received += 1;
    }
    assert!(received > 60_000, "{received}");
    let metrics = reqwest::Client::new()
        .get(format!("http://{}/metrics", agent.api))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    let catch_ups = metrics
        .lines()
        .find_map(|line| line.strip_prefix("gatehouse_stream_catch_ups_total "))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(
        catch_ups > 0,
        "the slow client never fell behind the bus:\n{metrics}"
    );
    Ok(())
}
