//! `gatehouse-edge`: the Gatehouse edge agent.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use gatehouse_edge::agent;
use gatehouse_edge::api::auth::{Role, hash_token, new_token};
use gatehouse_edge::config::Config;
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
    /// Runs the agent until SIGINT or SIGTERM.
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
