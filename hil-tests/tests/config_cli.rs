//! The `gatehouse-edge` command line as an installer meets it.

use std::process::Command;

use gatehouse_hil_tests::harness::agent_binary;

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
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../edge-agent/examples/site.toml"
    );
    let (code, stdout, _) = run(&["check-config", example])?;
    assert_eq!(code, 0);
    assert!(stdout.contains("is valid"), "{stdout}");
    assert!(stdout.contains("4 points"), "{stdout}");
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
title = "R"
severity = "high"
point = "nowhere"
when = { above = 1.0 }
"#,
    )?;
    let (code, _, stderr) = run(&["check-config", &file.display().to_string()])?;
    assert_eq!(code, 1);
    assert!(stderr.contains("2 problems"), "{stderr}");
    assert!(
        stderr.contains("broken.toml:10:6: zone `a` is defined twice"),
        "{stderr}"
    );
    assert!(stderr.contains("broken.toml:16:9:"), "{stderr}");

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
    for command in ["run", "check-config", "token"] {
        assert!(stdout.contains(command), "{stdout}");
    }
    Ok(())
}
