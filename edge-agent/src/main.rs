//! `gatehouse-edge`: the Gatehouse edge agent.

use std::io::{BufRead, BufReader, IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use gatehouse_edge::agent;
use gatehouse_edge::api::auth::{Role, hash_token, new_token};
use gatehouse_edge::claim::{self, ClaimOptions, CodeArg, SiteConfigUpdate};
use gatehouse_edge::config::Config;
use gatehouse_edge::replay;
use jiff::SignedDuration;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// The Gatehouse edge agent: polls the site's devices, keeps every event in a local journal,
/// raises incidents from rules, and serves a REST API and WebSocket stream.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Log format on stderr. The level comes from RUST_LOG (default: info).
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
    /// Runs the agent until SIGINT or SIGTERM. Changes to the config's zones, schedules and
    /// rules are taken over while it runs (a file with problems is refused and logged).
    Run {
        /// The site configuration (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validates a configuration file without starting anything; exit status 0 when valid,
    /// 1 with every problem listed (file:line:column) when not.
    CheckConfig {
        /// The site configuration (TOML).
        file: PathBuf,
    },
    /// Makes a new random API token and prints it with the `[[api.users]]` entry that holds
    /// its hash. The token is shown once; the config keeps only the hash.
    Token {
        /// The user's name.
        #[arg(long, default_value = "integrator")]
        name: String,
        /// The user's role.
        #[arg(long, value_enum, default_value_t = RoleArg::Integrator)]
        role: RoleArg,
    },
    /// Claims this appliance into its tenant: makes its key pair, sends a certificate request
    /// with the one-time claim code from HQ to the relay, checks the certificate it answers,
    /// writes the identity to DIR and prints the `[uplink]` section of the site config.
    Claim {
        /// The relay's base URL (https://; http:// only to a loopback address, for tests).
        #[arg(long)]
        relay: String,
        /// The one-time claim code from HQ. `-` reads it from the first line of standard
        /// input; without --code it is taken from $GATEHOUSE_CLAIM_CODE. A code written on the
        /// command line can be read by every user of this machine while the claim runs
        /// (`ps`) and stays in the shell's history: prefer `-` or the variable.
        #[arg(
            long,
            value_name = "CODE|-",
            env = "GATEHOUSE_CLAIM_CODE",
            hide_env_values = true
        )]
        code: CodeArg,
        /// The folder for the key, the certificate and the fleet CA (made if missing).
        #[arg(long)]
        dir: PathBuf,
        /// The CA (PEM) that signed the relay's HTTPS certificate; default: the system's.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// A site config to append the `[uplink]` section to (only if it has none).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Replace an identity already in DIR with a new key and certificate.
        #[arg(long)]
        force: bool,
    },
    /// Works with the site's rules without running the agent.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Replays recorded events (JSON Lines, as GET /api/v1/events/export writes them) through
    /// the config's rules and prints what fired: incidents, commands, clips, mode changes.
    /// Nothing is sent to any device. Exit status 1 on a config or event file problem.
    Test {
        /// The site configuration (TOML) whose zones, schedules and rules to test.
        #[arg(long, short)]
        config: PathBuf,
        /// The recorded events; `-` reads standard input.
        #[arg(long, short)]
        events: PathBuf,
        /// Let the clock run on this long after the last event (`90s`, `5m`), so that timers
        /// started near the end (entry delays, doors held open) can run out.
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        continue_for: SignedDuration,
    },
}

fn parse_duration(text: &str) -> Result<SignedDuration, String> {
    let duration: SignedDuration = text
        .parse()
        .map_err(|error| format!("`{text}` is not a duration like 90s or 5m: {error}"))?;
    if duration.is_negative() {
        return Err(format!("`{text}` is negative"));
    }
    Ok(duration)
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoleArg {
    Admin,
    Integrator,
    Guard,
}

impl From<RoleArg> for Role {
    fn from(role: RoleArg) -> Role {
        match role {
            RoleArg::Admin => Role::Admin,
            RoleArg::Integrator => Role::Integrator,
            RoleArg::Guard => Role::Guard,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                let points: usize = config.modbus.devices.iter().map(|d| d.points.len()).sum();
                println!(
                    "{} is valid: site `{}`, {} devices, {points} points, {} rules, {} API users",
                    file.display(),
                    config.site.id,
                    config.modbus.devices.len(),
                    config.rules.len(),
                    config.api.users.len()
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprint!("{error}");
                ExitCode::FAILURE
            }
        },
        Command::Token { name, role } => {
            let token = new_token();
            let role = Role::from(role);
            println!("token: {token}");
            println!();
            println!("[[api.users]]");
            println!("name = \"{name}\"");
            println!(
                "role = \"{}\"",
                serde_json::to_value(role)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            );
            println!("token_sha256 = \"{}\"", hash_token(&token));
            ExitCode::SUCCESS
        }
        Command::Run { config } => run(config),
        Command::Rules {
            command:
                RulesCommand::Test {
                    config,
                    events,
                    continue_for,
                },
        } => rules_test(&config, &events, continue_for),
        Command::Claim {
            relay,
            code,
            dir,
            ca_file,
            config,
            force,
        } => {
            let code = match read_code(code) {
                Ok(code) => code,
                Err(error) => {
                    eprintln!("claim failed: {error}");
                    return ExitCode::FAILURE;
                }
            };
            run_claim(&ClaimOptions {
                relay,
                code,
                dir,
                ca_file,
                config,
                force,
            })
        }
    }
}

/// The claim code of `--code`; for `-`, from standard input, with a prompt when a person is
/// typing it.
fn read_code(code: CodeArg) -> Result<claim::ClaimCode, claim::ClaimError> {
    let stdin = std::io::stdin();
    if code == CodeArg::Stdin && stdin.is_terminal() {
        eprint!("claim code: ");
        let _ = std::io::stderr().flush();
    }
    code.read(stdin.lock())
}

fn run_claim(options: &ClaimOptions) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let claimed = match runtime.block_on(claim::claim(options)) {
        Ok(claimed) => claimed,
        Err(error) => {
            eprintln!("claim failed: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "claimed appliance `{}`: {}, {} and {} are in {}",
        claimed.appliance_id,
        claim::KEY_FILE,
        claim::CERT_FILE,
        claim::CA_FILE,
        claimed.dir.display()
    );
    println!();
    print!("{}", claimed.uplink_section);
    println!();
    match claimed.site_config {
        SiteConfigUpdate::NotRequested => {
            println!("Add this section to the site config.");
            ExitCode::SUCCESS
        }
        SiteConfigUpdate::Appended(file) => {
            println!("Appended to {}, which is valid.", file.display());
            ExitCode::SUCCESS
        }
        SiteConfigUpdate::AppendedWithProblems(error) => {
            eprintln!("Appended to the site config, but it is not valid yet:");
            eprint!("{error}");
            ExitCode::FAILURE
        }
        SiteConfigUpdate::AppendFailed(error) => {
            eprintln!("{error}; add the section above by hand.");
            ExitCode::FAILURE
        }
        SiteConfigUpdate::AlreadyHasUplink(file) => {
            eprintln!(
                "{} already has an [uplink] section and was left untouched; replace that \
                 section with the one above.",
                file.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn rules_test(config: &Path, events: &Path, continue_for: SignedDuration) -> ExitCode {
    let config = match Config::load(config) {
        Ok(config) => config,
        Err(error) => {
            eprint!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let input: Box<dyn BufRead> = if events == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(events) {
            Ok(file) => Box::new(BufReader::new(file)),
            Err(error) => {
                eprintln!("cannot open {}: {error}", events.display());
                return ExitCode::FAILURE;
            }
        }
    };
    let mut out = std::io::stdout().lock();
    match replay::run(&config, input, continue_for, &mut out) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = out.flush();
            eprintln!("{}: {error}", events.display());
            ExitCode::FAILURE
        }
    }
}

fn run(path: PathBuf) -> ExitCode {
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(error) => {
            eprint!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let running = match agent::start(config, shutdown.clone()).await {
            Ok(running) => running,
            Err(error) => {
                tracing::error!(%error, "agent could not start");
                return ExitCode::FAILURE;
            }
        };
        tokio::spawn(wait_for_signal(shutdown));
        match running.wait().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!(%error, "agent stopped with an error");
                ExitCode::FAILURE
            }
        }
    })
}

async fn wait_for_signal(shutdown: CancellationToken) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
