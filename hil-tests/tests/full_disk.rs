//! The journal's disk fills up during a burst: the agent keeps serving, holds what it could
//! not commit, shows nobody an uncommitted event, and carries on once space is freed.
//!
//! The disk is a small tmpfs mounted for the test, so the test needs root (CI runs as root).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use gatehouse_hil_tests::harness::{self, ADMIN_TOKEN, AgentProcess, GUARD_TOKEN, StreamClient};
use gatehouse_hil_tests::small_disk::SmallDisk;
use gatehouse_protocol::{Event, Value};

async fn metric(api: std::net::SocketAddr, name: &str) -> anyhow::Result<u64> {
    let text = reqwest::Client::new()
        .get(format!("http://{api}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0))
}

#[tokio::test]
async fn a_full_disk_holds_events_back_and_loses_none_that_were_shown() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let disk = SmallDisk::mount(&folder.path().join("disk"), "3m")?;
    let filler = disk.path().join("filler");
    std::fs::write(&filler, vec![0u8; 1024 * 1024])?;

    let sim = Arc::new(harness::simulator().await?);
    let port = harness::free_port()?;
    let config = format!(
        "{}{}{}",
        harness::site_header(port, &disk.path().join("journal.db")).replace(
            "synchronous = \"full\"",
            "synchronous = \"full\"\nbatch_max_events = 64"
        ),
        harness::busy_device("busy", sim.addr(), 100),
        harness::door_device("io", sim.addr(), 50),
    );
    let mut agent = AgentProcess::start(folder.path(), &config, port).await?;

    // Record everything the stream shows, in the background.
    let shown: Arc<Mutex<Vec<Event>>> = Arc::default();
    let mut stream = StreamClient::connect(agent.api, GUARD_TOKEN, Some(0)).await?;
    let reader = {
        let shown = shown.clone();
        tokio::spawn(async move {
            while let Ok(Some(event)) = stream.next_event(Duration::from_secs(30)).await {
                if let Ok(mut shown) = shown.lock() {
                    shown.push(event);
                }
            }
        })
    };

    let running = Arc::new(AtomicBool::new(true));
    let churn = tokio::spawn(harness::churn_registers(sim.clone(), 100, running.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while metric(agent.api, "gatehouse_journal_commit_failures_total").await? == 0 {
        if tokio::time::Instant::now() > deadline {
            bail!("the disk never filled; log:\n{}", agent.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.store(false, Ordering::Relaxed);
    churn.await?;

    // Full, yet the agent answers and reads work.
    let admin = agent.api(ADMIN_TOKEN);
    let (status, _) = admin.get("/api/v1/events?order=desc&limit=5").await?;
    assert_eq!(status, 200);
    assert!(
        agent.log().contains("journal commit failed"),
        "{}",
        agent.log()
    );

    // Space comes back: the held batch commits and new changes flow again.
    std::fs::remove_file(&filler)?;
    sim.set_discrete(1, 0, true);
    admin
        .wait_for("/api/v1/points/io.door", Duration::from_secs(30), |p| {
            p["value"] == serde_json::json!(true)
        })
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    agent.kill9()?;
    reader.await?;
    let shown = shown.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(shown.len() > 500, "{}", shown.len());
    assert!(
        shown.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "the stream has a gap or a repeat: an event was shown that the journal did not keep"
    );
    assert!(
        shown
            .iter()
            .any(|e| harness::is_observation(e, "io.door", Some(&Value::Bool(true))))
    );

    let agent = AgentProcess::start_with(&agent.config, port).await?;
    let stored = agent.api(ADMIN_TOKEN).all_events("").await?;
    let stored: std::collections::HashMap<u64, Event> =
        stored.into_iter().map(|e| (e.seq, e)).collect();
    for event in &shown {
        assert_eq!(stored.get(&event.seq), Some(event), "seq {}", event.seq);
    }
    Ok(())
}
