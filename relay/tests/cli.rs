//! The `gatehouse-relay` command line as an operator meets it: the built binary, run in a
//! temporary folder.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use gatehouse_relay::pki::FleetCa;
use gatehouse_relay::store::{Role, SecretHash, Store};

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

fn relay(args: &[&str]) -> anyhow::Result<Output> {
    let output = Command::new(env!("CARGO_BIN_EXE_gatehouse-relay"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()?;
    Ok(Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// The value after `key: ` on stdout.
fn field(stdout: &str, key: &str) -> anyhow::Result<String> {
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}: ")))
        .map(str::to_owned)
        .with_context(|| format!("no `{key}:` in {stdout:?}"))
}

/// `pki init` in `folder`, then a configuration using what it wrote.
fn set_up(folder: &Path) -> anyhow::Result<std::path::PathBuf> {
    let dir = folder.display().to_string();
    let init = relay(&["pki", "init", "--dir", &dir, "--broker-host", "localhost"])?;
    anyhow::ensure!(init.code == 0, "pki init failed: {}", init.stderr);
    let config = folder.join("relay.toml");
    std::fs::write(
        &config,
        r#"
[api]
listen = "127.0.0.1:0"

[broker]
host = "localhost"
ca_file = "fleet-ca.pem"
cert_file = "relay.pem"
key_file = "relay.key"
client_id = "relay:test"

[fleet]
ca_cert = "fleet-ca.pem"
ca_key = "fleet-ca.key"
broker_host = "localhost"
"#,
    )?;
    Ok(config)
}

#[test]
fn help_names_every_command() -> anyhow::Result<()> {
    let help = relay(&["--help"])?;
    assert_eq!(help.code, 0);
    for command in [
        "run",
        "check-config",
        "pki",
        "tenant",
        "site",
        "claim",
        "token",
    ] {
        assert!(
            help.stdout
                .lines()
                .any(|line| line.trim_start().starts_with(command)),
            "{command}: {}",
            help.stdout
        );
    }
    let claim = relay(&["claim", "create", "--help"])?;
    assert!(claim.stdout.contains("--valid-for"), "{}", claim.stdout);
    assert!(claim.stdout.contains("[default: 24h]"), "{}", claim.stdout);
    Ok(())
}

#[test]
fn pki_init_writes_private_keys_for_their_owner_only_and_never_overwrites() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let dir = folder.path().join("pki");
    let dir_text = dir.display().to_string();
    let init = relay(&[
        "pki",
        "init",
        "--dir",
        &dir_text,
        "--broker-host",
        "mqtt.example.com",
    ])?;
    assert_eq!(init.code, 0, "{}", init.stderr);
    for (name, mode) in [
        ("fleet-ca.pem", 0o644),
        ("fleet-ca.key", 0o600),
        ("relay-ca.pem", 0o644),
        ("relay-ca.key", 0o600),
        ("broker.pem", 0o644),
        ("broker.key", 0o600),
        ("relay.pem", 0o644),
        ("relay.key", 0o600),
    ] {
        let metadata = std::fs::metadata(dir.join(name)).with_context(|| name.to_owned())?;
        assert_eq!(metadata.permissions().mode() & 0o777, mode, "{name}");
        assert!(init.stdout.contains(name), "{}", init.stdout);
    }
    let read = |name: &str| std::fs::read_to_string(dir.join(name));
    // Two distinct CAs whose keys load with their certificates.
    let fleet = FleetCa::load(&read("fleet-ca.pem")?, &read("fleet-ca.key")?)?;
    let relay_ca = FleetCa::load(&read("relay-ca.pem")?, &read("relay-ca.key")?)?;
    assert_ne!(fleet.cert_pem(), relay_ca.cert_pem());

    let before = read("relay.key")?;
    let again = relay(&["pki", "init", "--dir", &dir_text, "--broker-host", "other"])?;
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("refusing to overwrite"),
        "{}",
        again.stderr
    );
    assert_eq!(read("relay.key")?, before);
    Ok(())
}

#[test]
fn check_config_accepts_a_good_file_and_lists_every_problem_of_a_bad_one() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let config = set_up(folder.path())?;
    let good = relay(&["check-config", &config.display().to_string()])?;
    assert_eq!(good.code, 0, "{}", good.stderr);
    assert!(good.stdout.contains("is valid"), "{}", good.stdout);

    let bad = folder.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[api]\nlisten = \"127.0.0.1:0\"\n[broker]\nhost = \"h\"\nca_file = \"nope.pem\"\ncert_file = \
         \"relay.pem\"\nkey_file = \"relay.key\"\nclient_id = \"relay-1\"\n[alerts]\noffline_after_s = 5\n",
    )?;
    let refused = relay(&["check-config", &bad.display().to_string()])?;
    assert_eq!(refused.code, 1);
    assert!(
        refused.stderr.contains("bad.toml has 2 problems"),
        "{}",
        refused.stderr
    );
    assert!(
        refused
            .stderr
            .contains("bad.toml:8:13: broker.client_id must be `relay:`"),
        "{}",
        refused.stderr
    );
    assert!(
        refused
            .stderr
            .contains("bad.toml:10:19: alerts.offline_after_s"),
        "{}",
        refused.stderr
    );
    Ok(())
}

/// `gatehouse-relay claim create` for an appliance `name` at `site`, valid for 2 hours.
fn create_claim(config: &str, tenant: &str, site: &str, name: &str) -> anyhow::Result<Output> {
    relay(&[
        "claim",
        "create",
        "-c",
        config,
        "--tenant",
        tenant,
        "--site",
        site,
        "--name",
        name,
        "--valid-for",
        "2h",
    ])
}

#[test]
fn admin_commands_make_a_tenant_a_site_a_claim_and_a_token() -> anyhow::Result<()> {
    let folder = tempfile::tempdir()?;
    let config = set_up(folder.path())?;
    let config = config.display().to_string();

    let tenant = relay(&["tenant", "create", "--config", &config, "--name", "Acme"])?;
    assert_eq!(tenant.code, 0, "{}", tenant.stderr);
    let tenant = field(&tenant.stdout, "tenant")?;
    let site = relay(&[
        "site", "create", "-c", &config, "--tenant", &tenant, "--name", "HQ",
    ])?;
    assert_eq!(site.code, 0, "{}", site.stderr);
    let site = field(&site.stdout, "site")?;

    let claim = create_claim(&config, &tenant, &site, "lobby")?;
    assert_eq!(claim.code, 0, "{}", claim.stderr);
    let appliance = field(&claim.stdout, "appliance")?;
    let code = field(&claim.stdout, "claim code")?;
    assert!(
        claim.stderr.contains("shown only this once"),
        "{}",
        claim.stderr
    );

    let token = relay(&[
        "token",
        "create",
        "-c",
        &config,
        "--tenant",
        &tenant,
        "--role",
        "operator",
        "--name",
        "night-shift",
    ])?;
    assert_eq!(token.code, 0, "{}", token.stderr);
    let token = field(&token.stdout, "token")?;

    // What they made is in the database the configuration names.
    let url = format!("sqlite://{}/relay.db?mode=rwc", folder.path().display());
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let store = Store::open(&url).await?;
        let principal = store
            .token_principal(&SecretHash::of_token(&token))
            .await?
            .context("the token is unknown")?;
        assert_eq!(principal.role, Role::Operator);
        assert_eq!(principal.scope.tenant().as_str(), tenant);
        let now = jiff::Timestamp::now().as_microsecond();
        let claimed = store.redeem_claim(&code, now).await?;
        assert_eq!(claimed.appliance.as_str(), appliance);
        assert_eq!(claimed.site.as_str(), site);
        // Valid for 2 hours, not 24.
        let later = now + 3 * 3600 * 1_000_000;
        let claim = create_claim(&config, &tenant, &site, "gate")?;
        let code = field(&claim.stdout, "claim code")?;
        assert!(store.redeem_claim(&code, later).await.is_err());
        anyhow::Ok(())
    })?;

    let unknown = relay(&[
        "site",
        "create",
        "-c",
        &config,
        "--tenant",
        "ten-nobody",
        "--name",
        "X",
    ])?;
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("tenant `ten-nobody` not found"),
        "{}",
        unknown.stderr
    );
    Ok(())
}
