//! Wiring: builds the journal, the adapters and the API from a config and runs them until
//! shutdown. The binary is a thin shell around [`start`]; tests and harnesses call it too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::adapters::modbus::ModbusDevice;
use crate::adapters::{self, Adapter};
use crate::api::{self, ApiState, Catalog, auth::Users};
use crate::config::{Config, Synchronous};
use crate::journal::{self, JournalError, Reader, Writer, WriterSettings, query};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::rules::Rules;

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot open the journal {path}: {source}")]
    Journal {
        path: String,
        #[source]
        source: JournalError,
    },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// How long shutdown waits for the journal writer to drain.
const WRITER_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(600);

/// A started agent.
pub struct Running {
    /// Where the API listens (useful with port 0).
    pub api_address: SocketAddr,
    task: tokio::task::JoinHandle<Result<(), AgentError>>,
}

impl Running {
    /// Waits until the agent has shut down and the journal is flushed.
    pub async fn wait(self) -> Result<(), AgentError> {
        self.task
            .await
            .map_err(|error| AgentError::Io(std::io::Error::other(error)))?
    }
}

/// Opens the journal, starts adapters and the API; returns once the API is listening.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, AgentError> {
    let metrics = Arc::new(Metrics::default());
    let live = Arc::new(Live::default());
    let path = config.journal.path.clone();
    let journal_error = |source| AgentError::Journal {
        path: path.display().to_string(),
        source,
    };
    if let Some(folder) = path.parent()
        && !folder.as_os_str().is_empty()
    {
        std::fs::create_dir_all(folder)?;
    }
    let connection =
        journal::open_for_writing(&path, config.journal.synchronous == Synchronous::Full)
            .map_err(journal_error)?;
    let reader = Reader::new(path.clone());
    let (latest, last_seq) = reader
        .run_blocking(|connection| {
            Ok((
                query::latest_states(connection)?,
                query::last_seq(connection)?,
            ))
        })
        .map_err(journal_error)?;
    for event in &latest {
        live.apply(event);
    }
    live.set_last_seq(last_seq);
    let mut rules = Rules::from_config(&config);
    rules.prime(&latest);
    tracing::info!(path = %path.display(), last_seq, "journal open");

    let settings = WriterSettings {
        batch_max_events: config.journal.batch_max_events,
        max_age: (config.journal.retention_max_age_days > 0).then(|| {
            Duration::from_secs(u64::from(config.journal.retention_max_age_days) * 86_400)
        }),
        max_bytes: (config.journal.retention_max_megabytes > 0)
            .then(|| config.journal.retention_max_megabytes * 1024 * 1024),
    };
    let (journal, writer_thread) =
        Writer::new(connection, rules, live.clone(), metrics.clone(), settings).spawn()?;

    let mut tasks = JoinSet::new();
    let devices: Vec<Arc<dyn Adapter>> = config
        .modbus
        .devices
        .iter()
        .map(|device| Arc::new(ModbusDevice::new(device.clone())) as Arc<dyn Adapter>)
        .collect();
    let commands = adapters::start(devices, &journal, &metrics, &shutdown, &mut tasks);
    tasks.spawn(retention(journal.clone(), shutdown.clone()));

    let listener = TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| AgentError::Listen {
            address: config.api.listen,
            source,
        })?;
    let api_address = listener.local_addr()?;
    let state = Arc::new(ApiState {
        catalog: Catalog::from_config(&config),
        users: Users::from_config(&config.api.users),
        live,
        reader,
        journal,
        commands,
        metrics,
        command_timeout: Duration::from_secs(10),
        shutdown: shutdown.clone(),
    });
    let app = api::router(state);
    tracing::info!(site = %config.site.id, api = %format!("http://{api_address}/api/v1"),
        devices = config.modbus.devices.len(), rules = config.rules.len(), "agent started");
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await;
        shutdown.cancel();
        while tasks.join_next().await.is_some() {}
        // Every journal handle is gone now: the writer commits what it holds and stops. A
        // request still in flight may hold a handle a little longer; do not wait forever.
        let writer = tokio::task::spawn_blocking(move || writer_thread.join());
        if tokio::time::timeout(WRITER_STOP_TIMEOUT, writer)
            .await
            .is_err()
        {
            tracing::warn!("the journal writer did not stop in time; committed events are safe");
        }
        tracing::info!("agent stopped");
        served.map_err(AgentError::Io)
    });
    Ok(Running { api_address, task })
}

/// Applies journal retention periodically.
async fn retention(journal: journal::JournalHandle, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(RETENTION_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {
                if let Err(error) = journal.maintain().await {
                    tracing::error!(%error, "journal retention failed");
                }
            }
        }
    }
}
