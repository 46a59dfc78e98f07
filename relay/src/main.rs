//! `gatehouse-relay`: the Gatehouse cloud relay. This file is only the command line: parsing
//! arguments, loading the configuration, signals, and printing; the relay itself is
//! `gatehouse_relay::service`.

use std::fs::OpenOptions;
use std::io::{IsTerminal, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use gatehouse_protocol::SiteId;
use gatehouse_relay::config::Config;
use gatehouse_relay::pki::{FleetCa, RELAY_IDENTITY, Validity};
use gatehouse_relay::service;
use gatehouse_relay::store::{Micros, Role, Store, TenantId, TenantScope};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// The Gatehouse cloud relay: takes appliances' records and status in over MQTT (mutual TLS
/// 1.3), stores them in PostgreSQL or SQLite, raises an alert when an appliance goes offline,
/// and serves HQ operators a REST API and WebSocket. The admin commands (tenant, site, claim,
/// token) work directly on the database named by the configuration.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Log format on stderr. The level comes from RUST_LOG (default: info for `run`, warn
    /// otherwise).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the relay (ingestion, commands to appliances, API, offline alerts) until SIGINT
    /// or SIGTERM.
    Run {
        /// The relay configuration (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validates a configuration file and checks that the files it names exist, without
    /// starting anything; exit status 0 when valid, 1 with every problem listed
    /// (file:line:column) when not.
    CheckConfig {
        /// The relay configuration (TOML).
        file: PathBuf,
    },
    /// Certificates for the broker and the relay.
    Pki {
        #[command(subcommand)]
        command: PkiCommand,
    },
    /// Tenants: the relay's customers.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Sites of a tenant.
    Site {
        #[command(subcommand)]
        command: SiteCommand,
    },
    /// One-time claim codes that install appliances.
    Claim {
        #[command(subcommand)]
        command: ClaimCommand,
    },
    /// API tokens for HQ operators and integrations.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Makes the fleet CA, the relay CA, the broker's server certificate and the relay's
    /// client certificate in DIR (private keys readable by their owner only). Refuses to
    /// overwrite any existing file. relay/deploy/README.md says where each file goes.
    Init {
        /// Where to write the files (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// A DNS name or IP address appliances and relays use to reach the broker; repeat for
        /// several.
        #[arg(long = "broker-host", required = true)]
        broker_hosts: Vec<String>,
        /// How long the broker's and the relay's certificates are valid, in days (the CAs:
        /// 20 years).
        #[arg(long, default_value_t = 730, value_parser = clap::value_parser!(u64).range(1..=3650))]
        validity_days: u64,
    },
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Creates a tenant and prints its id.
    Create {
        #[arg(long, short)]
        config: PathBuf,
        /// The tenant's name, for people.
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum SiteCommand {
    /// Creates a site in a tenant and prints its id.
    Create {
        #[arg(long, short)]
        config: PathBuf,
        /// The tenant's id (from `tenant create`).
        #[arg(long)]
        tenant: TenantId,
        /// The site's name, for people.
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum ClaimCommand {
    /// Registers an appliance to be installed at a site and prints its id and its one-time
    /// claim code. The code is shown only this once; the relay keeps only its hash.
    Create {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        tenant: TenantId,
        /// The site's id (from `site create`).
        #[arg(long)]
        site: SiteId,
        /// The appliance's name, for people.
        #[arg(long)]
        name: String,
        /// How long the code can be redeemed: a number and a unit, s, m, h or d (`90m`, `7d`).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        valid_for: Duration,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Creates an API token in a tenant and prints it. The token is shown only this once; the
    /// relay keeps only its hash.
    Create {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        tenant: TenantId,
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The token's name, unique in the tenant (who or what uses it).
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    /// Everything, including sites, claim codes and tokens.
    Admin,
    /// Watch, acknowledge, resolve and comment.
    Operator,
    /// Watch only.
    Viewer,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Admin => Role::Admin,
            RoleArg::Operator => Role::Operator,
            RoleArg::Viewer => Role::Viewer,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Run { .. } => "info",
        _ => "warn",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let outcome = match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Pki {
            command:
                PkiCommand::Init {
                    dir,
                    broker_hosts,
                    validity_days,
                },
        } => pki_init(&dir, &broker_hosts, validity_days),
        Command::Run { config } => run(&config),
        admin => with_runtime(administer(admin)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // A config error lists its problems itself, one per line.
            match error.downcast_ref::<gatehouse_relay::config::ConfigError>() {
                Some(config) => eprint!("{config}"),
                None => eprintln!("error: {error:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

fn check_config(file: &Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    println!(
        "{} is valid: store {}, API on {} ({}), broker {}:{} as {}, claims {}, offline alerts after {} s",
        file.display(),
        config.store.redacted_url(),
        config.api.listen.get_ref(),
        match (config.api.tls().is_some(), config.api.behind_tls_proxy) {
            (true, _) => "HTTPS",
            (false, true) => "plain HTTP behind a TLS proxy",
            (false, false) => "plain HTTP on loopback",
        },
        config.broker.host.get_ref(),
        config.broker.port.get_ref(),
        config.broker.client_id.get_ref(),
        if config.fleet.is_some() {
            "answered"
        } else {
            "refused (no [fleet])"
        },
        config.alerts.offline_after().as_secs(),
    );
    Ok(())
}

fn with_runtime(work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()
        .context("starting the async runtime")?
        .block_on(work)
}

fn run(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    with_runtime(async {
        let shutdown = CancellationToken::new();
        let running = service::start(config, shutdown.clone()).await?;
        let signals = shutdown.clone();
        tokio::spawn(async move {
            match wait_for_signal().await {
                Ok(signal) => tracing::info!(signal, "stopping"),
                Err(error) => tracing::error!(%error, "cannot listen for signals; stopping"),
            }
            signals.cancel();
        });
        running.wait().await
    })
}

/// The name of the first of SIGINT and SIGTERM to arrive.
async fn wait_for_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted.map(|()| "SIGINT"),
        _ = terminate.recv() => Ok("SIGTERM"),
    }
}

/// The admin commands: straight to the database, as a platform admin.
async fn administer(command: Command) -> anyhow::Result<()> {
    let now = jiff::Timestamp::now().as_microsecond();
    match command {
        Command::Tenant {
            command: TenantCommand::Create { config, name },
        } => {
            let store = open_store(&config).await?;
            let (tenant, _) = store.create_tenant(&name, now).await?;
            println!("tenant: {}", tenant.id);
        }
        Command::Site {
            command:
                SiteCommand::Create {
                    config,
                    tenant,
                    name,
                },
        } => {
            let store = open_store(&config).await?;
            let scope = tenant_scope(&store, &tenant).await?;
            let site = store.create_site(&scope, &name, now).await?;
            println!("site: {}", site.id);
        }
        Command::Claim {
            command:
                ClaimCommand::Create {
                    config,
                    tenant,
                    site,
                    name,
                    valid_for,
                },
        } => {
            let store = open_store(&config).await?;
            let scope = tenant_scope(&store, &tenant).await?;
            let valid_for =
                Micros::try_from(valid_for.as_micros()).context("--valid-for is too long")?;
            let claim = store
                .create_claim(&scope, &site, &name, now, now.saturating_add(valid_for))
                .await?;
            let expires = jiff::Timestamp::from_microsecond(claim.expires_at)
                .map_or_else(|_| claim.expires_at.to_string(), |at| at.to_string());
            println!("appliance: {}", claim.appliance);
            println!("claim code: {}", claim.code);
            println!("expires: {expires}");
            eprintln!("The claim code is shown only this once; the relay keeps only its hash.");
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    config,
                    tenant,
                    role,
                    name,
                },
        } => {
            let store = open_store(&config).await?;
            let scope = tenant_scope(&store, &tenant).await?;
            let token = store
                .create_api_token(&scope, &name, role.into(), now)
                .await?;
            println!("token: {}", token.token);
            eprintln!(
                "The token (`{}`, {}) is shown only this once; the relay keeps only its hash.",
                token.name,
                token.role.as_str()
            );
        }
        other => anyhow::bail!("not an admin command: {other:?}"),
    }
    Ok(())
}

async fn open_store(config: &Path) -> anyhow::Result<Store> {
    let config = Config::load(config)?;
    Store::open(config.store.url.get_ref())
        .await
        .with_context(|| format!("opening the store {}", config.store.redacted_url()))
}

async fn tenant_scope(store: &Store, tenant: &TenantId) -> anyhow::Result<TenantScope> {
    store
        .admin_scope(tenant)
        .await?
        .with_context(|| format!("tenant `{tenant}` not found"))
}

/// `90s`, `30m`, `24h`, `7d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("`{text}` is not a duration: write a number and s, m, h or d (`24h`)");
    let (number, seconds) = [("s", 1), ("m", 60), ("h", 3600), ("d", 86_400)]
        .into_iter()
        .find_map(|(unit, seconds)| text.strip_suffix(unit).map(|number| (number, seconds)))
        .ok_or_else(invalid)?;
    let number: u64 = number.parse().map_err(|_| invalid())?;
    if number == 0 {
        return Err(format!(
            "`{text}`: a claim code must be valid for some time"
        ));
    }
    number
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(invalid)
}

/// One file `pki init` writes.
struct PkiFile {
    name: &'static str,
    contents: String,
    secret: bool,
    what: &'static str,
}

fn pki_init(dir: &Path, broker_hosts: &[String], validity_days: u64) -> anyhow::Result<()> {
    let validity = Validity::starting_now(Duration::from_secs(validity_days * 86_400));
    let fleet = FleetCa::generate("Gatehouse fleet CA")?;
    let relay_ca = FleetCa::generate("Gatehouse relay CA")?;
    let hosts: Vec<&str> = broker_hosts.iter().map(String::as_str).collect();
    let broker = fleet
        .issue_server_cert(&hosts, validity)
        .context("the broker's certificate")?;
    let relay = relay_ca.issue_client_cert(RELAY_IDENTITY, validity)?;
    let files = [
        PkiFile {
            name: "fleet-ca.pem",
            contents: fleet.cert_pem().to_owned(),
            secret: false,
            what: "fleet CA: broker cafile (appliance listener), relay [broker] ca_file and [fleet] ca_cert",
        },
        PkiFile {
            name: "fleet-ca.key",
            contents: fleet.key_pem().to_owned(),
            secret: true,
            what: "fleet CA key: the relay that answers claims ([fleet] ca_key), nowhere else",
        },
        PkiFile {
            name: "relay-ca.pem",
            contents: relay_ca.cert_pem().to_owned(),
            secret: false,
            what: "relay CA: broker cafile (relay listener)",
        },
        PkiFile {
            name: "relay-ca.key",
            contents: relay_ca.key_pem().to_owned(),
            secret: true,
            what: "relay CA key: keep offline, only to issue more relay certificates",
        },
        PkiFile {
            name: "broker.pem",
            contents: broker.cert_pem,
            secret: false,
            what: "broker server certificate: broker certfile",
        },
        PkiFile {
            name: "broker.key",
            contents: broker.key_pem,
            secret: true,
            what: "broker server key: broker keyfile",
        },
        PkiFile {
            name: "relay.pem",
            contents: relay.cert_pem,
            secret: false,
            what: "relay client certificate (CN relay): relay [broker] cert_file",
        },
        PkiFile {
            name: "relay.key",
            contents: relay.key_pem,
            secret: true,
            what: "relay client key: relay [broker] key_file",
        },
    ];
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let existing: Vec<String> = files
        .iter()
        .map(|file| dir.join(file.name))
        .filter(|path| path.exists())
        .map(|path| path.display().to_string())
        .collect();
    if !existing.is_empty() {
        anyhow::bail!(
            "refusing to overwrite {}; move them away or choose another --dir",
            existing.join(", ")
        );
    }
    for file in &files {
        let path = dir.join(file.name);
        let mut options = OpenOptions::new();
        options
            .write(true)
            .create_new(true)
            .mode(if file.secret { 0o600 } else { 0o644 });
        options
            .open(&path)
            .and_then(|mut out| out.write_all(file.contents.as_bytes()))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("{}  {}", path.display(), file.what);
    }
    println!(
        "The broker certificate names {}; it and the relay certificate are valid for {validity_days} days.",
        hosts.join(", ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_a_number_and_a_unit() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in [
            "",
            "h",
            "24",
            "1.5h",
            "-1h",
            "24 h",
            "0m",
            "99999999999999999d",
            // Not ASCII: a unit cut in the middle of a character used to panic.
            "5µ",
            "µ",
            "5hé",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
