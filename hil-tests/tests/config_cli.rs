//! The `gatehouse-edge` command line as an installer meets it.

use std::process::Command;

use gatehouse_hil_tests::harness::agent_binary;

/// The shipped example site.
const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../edge-agent/examples/site.toml"
);

fn run(args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let output = Command::new(agent_binary()?).args(args).output()?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[test]
fn check_config_accepts_the_shipped_example() -> anyhow::Result<()> {
    let (code, stdout, _) = run(&["check-config", EXAMPLE])?;
    assert_eq!(code, 0);
    assert!(stdout.contains("is valid"), "{stdout}");
    assert!(stdout.contains("5 points"), "{stdout}");
    Ok(())
}

#[test]
fn check_config_lists_every_problem_with_file_and_line_and_exits_1() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let file = folder.path().join("broken.toml");
    std::fs::write(
        &file,
        r#"[site]
id = "s"
name = "S"
[api]
listen = "127.0.0.1:8080"
[[zones]]
id = "a"
name = "A"
[[zones]]
id = "a"
name = "A again"
[[rules]]
id = "r"
when.event = { point = "nowhere" }
then = [{ raise = { severity = "high", title = "R" } }]
"#,
    )?;
    let (code, _, stderr) = run(&["check-config", &file.display().to_string()])?;
    assert_eq!(code, 1);
    assert!(stderr.contains("2 problems"), "{stderr}");
    assert!(
        stderr.contains("broken.toml:10:6: zone `a` is defined twice"),
        "{stderr}"
    );
    assert!(stderr.contains("broken.toml:14:24:"), "{stderr}");
    assert!(stderr.contains("nowhere"), "{stderr}");

    std::fs::write(&file, "[site]\nid = \"s\"\nname = \"S\"\nsurprise = 1\n")?;
    let (code, _, stderr) = run(&["check-config", &file.display().to_string()])?;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("broken.toml:4:1: unknown field `surprise`"),
        "{stderr}"
    );

    let (code, _, stderr) = run(&["check-config", "/nonexistent/site.toml"])?;
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot read the file"), "{stderr}");
    Ok(())
}

#[test]
fn run_refuses_a_bad_config_before_starting() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let file = folder.path().join("site.toml");
    std::fs::write(&file, "[site]\nid = \"Bad Id\"\nname = \"S\"\n")?;
    let (code, _, stderr) = run(&["run", "--config", &file.display().to_string()])?;
    assert_eq!(code, 1);
    assert!(stderr.contains("site.toml:2:6"), "{stderr}");
    assert!(stderr.contains("not a valid id"), "{stderr}");
    Ok(())
}

#[test]
fn token_prints_a_token_and_the_matching_config_entry() -> anyhow::Result<()> {
    let (code, stdout, _) = run(&["token", "--name", "desk", "--role", "guard"])?;
    assert_eq!(code, 0);
    let token = stdout
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .unwrap_or_default();
    let hash = gatehouse_edge::api::auth::hash_token(token);
    assert!(
        stdout.contains(&format!("token_sha256 = \"{hash}\"")),
        "{stdout}"
    );
    assert!(stdout.contains("role = \"guard\""), "{stdout}");
    Ok(())
}

#[test]
fn help_describes_every_command() -> anyhow::Result<()> {
    let (code, stdout, _) = run(&["--help"])?;
    assert_eq!(code, 0);
    for command in ["run", "check-config", "token", "claim", "rules"] {
        assert!(stdout.contains(command), "{stdout}");
    }
    Ok(())
}

/// A door observation of the example site, `second` seconds into the recording.
fn door_event(seq: u64, second: i64, open: bool) -> String {
    use gatehouse_protocol::{DeviceId, Event, EventBody, PointId, Quality, Value};
    let at = jiff::Timestamp::from_second(1_790_000_000 + second).unwrap_or_default();
    let event = Event {
        seq,
        recorded_at: at,
        body: EventBody::Observation {
            device: DeviceId::new("lobby-io").unwrap_or_else(|e| panic!("{e}")),
            point: PointId::new("lobby.door.open").unwrap_or_else(|e| panic!("{e}")),
            zone: None,
            value: Some(Value::Bool(open)),
            quality: Quality::Good,
            observed_at: at,
        },
    };
    serde_json::to_string(&event).unwrap_or_default()
}

/// Writes `events` to `NAME.jsonl` in `folder` and replays them through `rules test` with
/// the example site.
fn replay(
    folder: &tempfile::TempDir,
    name: &str,
    events: &[String],
    extra: &[&str],
) -> anyhow::Result<(i32, String, String)> {
    let file = folder.path().join(format!("{name}.jsonl"));
    std::fs::write(&file, events.join("\n") + "\n")?;
    let file = file.display().to_string();
    let mut args = vec!["rules", "test", "--config", EXAMPLE, "--events", &file];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn rules_test_replays_recorded_events_and_says_what_fired() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    // The door opens in the armed lobby and stays open: the entry delay (30 s) runs out, then
    // the door has been held open for a minute.
    let door_opens = [door_event(1, 0, false), door_event(2, 5, true)];
    let (code, stdout, stderr) =
        replay(&folder, "recorded", &door_opens, &["--continue-for", "3m"])?;
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].contains("rule lobby-intrusion: clip of cam.lobby from"),
        "{stdout}"
    );
    assert!(
        lines[1].contains("rule lobby-intrusion: entry delay in zone lobby"),
        "{stdout}"
    );
    assert!(
        lines[2].contains("rule lobby-intrusion: incident 1 opened: high \"Intrusion: lobby.door.open opened in lobby\""),
        "{stdout}"
    );
    assert!(
        lines[3].contains("rule lobby-door-held: incident 2 opened"),
        "{stdout}"
    );
    assert!(
        lines[4].contains("rule lobby-intrusion: incident 1 escalated (step 1) to critical"),
        "{stdout}"
    );
    assert!(
        stdout.contains("replayed 2 events: 2 incidents, 0 commands; actions by rule: lobby-door-held ×1, lobby-intrusion ×3"),
        "{stdout}"
    );

    // The door opening again while the entry delay runs is evidence of the same incident.
    let twice = [
        door_event(1, 0, false),
        door_event(2, 5, true),
        door_event(3, 10, false),
        door_event(4, 15, true),
    ];
    let (code, stdout, stderr) = replay(&folder, "twice", &twice, &["--continue-for", "1m"])?;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("incident 1 opened: high \"Intrusion: lobby.door.open opened in lobby\" (lobby.door.open = true), and 1 later trigger during the entry delay"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("entry delay in zone lobby").count(),
        1,
        "{stdout}"
    );

    // Without the extra time, the entry delay has not run out when the recording ends.
    let (_, stdout, _) = replay(&folder, "recorded", &door_opens, &[])?;
    assert!(stdout.contains("0 incidents"), "{stdout}");

    // A broken line is refused with its number; nothing is half-reported as a success.
    let broken = [door_event(1, 0, true), r#"{"seq": 2}"#.to_owned()];
    let (code, _, stderr) = replay(&folder, "broken", &broken, &[])?;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("broken.jsonl: line 2: not an event"),
        "{stderr}"
    );
    Ok(())
}
