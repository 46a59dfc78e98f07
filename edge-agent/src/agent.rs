//! Wiring: builds the journal, the adapters and the API from a config and runs them until
//! shutdown. The binary is a thin shell around [`start`]; tests and harnesses call it too.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::adapters::bacnet::BacnetNetwork;
use crate::adapters::modbus::ModbusDevice;
use crate::adapters::modbus::rtu::ModbusBus;
use crate::adapters::zigbee::ZigbeeBridge;
use crate::adapters::{self, Adapter};
use crate::api::{self, ApiState, Catalog, auth::Users};
use crate::config::{Config, Synchronous};
use crate::journal::rules::RuleDriver;
use crate::journal::{self, JournalError, Reader, Writer, WriterSettings, query};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::rules;
use crate::uplink::session::{Uplink, UplinkError};
use crate::video::service::Video;

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
    #[error(transparent)]
    Uplink(#[from] UplinkError),
    #[error("the journal writer stopped unexpectedly (see the log); the agent cannot record")]
    WriterStopped,
    #[error("the rules do not compile: {0}")]
    Rules(String),
    #[error("{0}")]
    Adapter(String),
}

/// The adapters of the config's devices: one per Modbus TCP device, one per serial bus, one
/// per zigbee2mqtt bridge, one for all BACnet devices (they share the agent's BACnet/IP port).
fn adapters_of(config: &Config) -> Result<Vec<Arc<dyn Adapter>>, AgentError> {
    let modbus = &config.modbus;
    let tcp = modbus
        .devices
        .iter()
        .filter(|device| device.address.is_some())
        .map(|device| Arc::new(ModbusDevice::new(device.clone())) as Arc<dyn Adapter>);
    let buses = modbus.buses.iter().map(|bus| {
        Arc::new(ModbusBus::new(bus.clone(), modbus.bus_devices(bus))) as Arc<dyn Adapter>
    });
    let mut adapters: Vec<Arc<dyn Adapter>> = tcp.chain(buses).collect();
    for bridge in &config.zigbee.bridges {
        let id = bridge.id.get_ref();
        let devices = config
            .zigbee
            .devices
            .iter()
            .filter(|device| config.zigbee.bridge_of(device) == Some(id.as_str()))
            .cloned()
            .collect();
        let client_id = format!("gatehouse-{}-{id}", config.site.id);
        let adapter = ZigbeeBridge::new(bridge.clone(), devices, client_id)
            .map_err(|error| AgentError::Adapter(error.to_string()))?;
        adapters.push(Arc::new(adapter));
    }
    if !config.bacnet.devices.is_empty() {
        adapters.push(Arc::new(BacnetNetwork::new(config.bacnet.clone())));
    }
    Ok(adapters)
}

/// How long shutdown waits for adapters, and then for the journal writer, to finish.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

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
    let mut connection =
        journal::open_for_writing(&path, config.journal.synchronous == Synchronous::Full)
            .map_err(journal_error)?;
    // Before the writer owns the connection: an outbox acknowledged for another appliance id
    // (the appliance was claimed again) is renumbered from 1 for the new one.
    if let Some(uplink) = &config.uplink {
        let binding = crate::uplink::outbox::bind(&mut connection, &uplink.appliance_id)
            .map_err(journal_error)?;
        tracing::info!(appliance = %uplink.appliance_id, ?binding, "outbox bound");
    }
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
    tracing::info!(path = %path.display(), last_seq, "journal open");
    let engine = config.checked_engine().map_err(AgentError::Rules)?;
    let mut devices = adapters_of(&config)?;
    let video = if config.video.cameras.is_empty() {
        None
    } else {
        let (video, clip_outlets) =
            Video::new(&config.video).map_err(|error| AgentError::Adapter(error.to_string()))?;
        devices.extend(video.adapters());
        Some((video, clip_outlets))
    };
    let restreamer = crate::video::service::start_restream(
        &config.video,
        video.as_ref().map(|(v, _)| v.as_ref()),
    )
    .map_err(|error| AgentError::Adapter(error.to_string()))?;
    let (links, outlets) = journal::rules::links();
    let rules = RuleDriver::new(engine, links, live.clone(), metrics.clone());

    let settings = WriterSettings {
        batch_max_events: config.journal.batch_max_events,
        max_age: (config.journal.retention_max_age_days > 0).then(|| {
            Duration::from_secs(u64::from(config.journal.retention_max_age_days) * 86_400)
        }),
        max_bytes: (config.journal.retention_max_megabytes > 0)
            .then(|| config.journal.retention_max_megabytes * 1024 * 1024),
        outbox_max_records: config.uplink.as_ref().map(|u| u.outbox_max_records),
    };
    let (journal, writer_thread) =
        Writer::new(connection, rules, live.clone(), metrics.clone(), settings).spawn()?;

    let mut tasks = JoinSet::new();
    let commands = adapters::start(devices, &journal, &live, &metrics, &shutdown, &mut tasks);
    let command_timeout = Duration::from_millis(config.api.command_timeout_ms);
    tasks.spawn(rules::dispatch(
        outlets.commands,
        commands.clone(),
        journal.clone(),
        command_timeout,
        shutdown.clone(),
    ));
    tasks.spawn(rules::wake(
        outlets.deadline,
        journal.clone(),
        shutdown.clone(),
    ));
    if let Some(file) = config.file() {
        tasks.spawn(rules::watch_config(
            file.to_owned(),
            config.clone(),
            journal.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    tasks.spawn(retention(journal.clone(), shutdown.clone()));
    let video = match video {
        Some((video, clip_outlets)) => {
            tasks.spawn(video.clone().run(
                outlets.clips,
                clip_outlets,
                journal.clone(),
                reader.clone(),
                shutdown.clone(),
            ));
            Some(video)
        }
        // Without cameras no rule can ask for a clip (the rules' catalog has none).
        None => None,
    };
    if let Some(uplink) = &config.uplink {
        let uplink = Uplink::new(
            uplink,
            journal.clone(),
            reader.clone(),
            live.clone(),
            metrics.clone(),
        )?;
        tasks.spawn(uplink.run(shutdown.clone()));
    }

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
        command_timeout,
        shutdown: shutdown.clone(),
        stream_slots: Arc::new(tokio::sync::Semaphore::new(api::MAX_STREAM_CLIENTS)),
        video,
    });
    let app = api::router(state);
    tracing::info!(site = %config.site.id, api = %format!("http://{api_address}/api/v1"),
        devices = config.modbus.devices.len(), rules = config.rules.len(), "agent started");
    let mut writer = tokio::task::spawn_blocking(move || writer_thread.join());
    let task = tokio::spawn(async move {
        // Without TCP_NODELAY, Nagle's algorithm and the client's delayed ACK hold a small
        // stream frame back by ~40 ms: the whole latency budget of an alarm, eight times over.
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::warn!(%error, "cannot set TCP_NODELAY on an API connection");
            }
        });
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future();
        let result = tokio::select! {
            served = serve => served.map_err(AgentError::Io),
            // The writer ends only when every handle is gone, so this is a crash.
            _ = &mut writer => Err(AgentError::WriterStopped),
        };
        shutdown.cancel();
        drop(restreamer);
        let drained = tokio::time::timeout(STOP_TIMEOUT, async {
            while tasks.join_next().await.is_some() {}
        });
        if drained.await.is_err() {
            tracing::warn!("adapters did not stop in time");
        }
        // Every journal handle is gone now: the writer commits what it holds and stops. A
        // request still in flight may hold a handle a little longer; do not wait forever.
        if !writer.is_finished() && tokio::time::timeout(STOP_TIMEOUT, writer).await.is_err() {
            tracing::warn!("the journal writer did not stop in time; committed events are safe");
        }
        tracing::info!("agent stopped");
        result
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
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    result = journal.maintain() => if let Err(error) = result {
                        tracing::error!(%error, "journal retention failed");
                    },
                }
            }
        }
    }
}
