//! The single journal writer thread. See the invariants in the module above.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_protocol::{
    Event, EventBody, Incident, IncidentChange, LifecycleError, PointId, Transition, Value, ZoneId,
    ZoneMode,
};
use gatehouse_rules::Engine;
use gatehouse_rules::engine::Refusal;
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::{self, Checkpointer};
use super::clips::{self, ClipOutcome};
use super::rules::RuleDriver;
use super::{JournalError, from_micros, to_micros};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::uplink::outbox;

/// How the writer batches and trims.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub batch_max_events: usize,
    /// Delete events older than this.
    pub max_age: Option<Duration>,
    /// Trim the oldest events while the database uses more than this.
    pub max_bytes: Option<u64>,
    /// With an uplink: every event also goes to the outbox, which holds at most this many.
    pub outbox_max_records: Option<u64>,
}

/// A step in an incident's lifecycle requested by a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentAction {
    Acknowledge,
    Resolve,
}

/// Why an incident could not be changed.
#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("incident {0} does not exist")]
    NotFound(u64),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

enum Request {
    Append {
        body: EventBody,
        /// Answered with the event's seq once it is committed.
        committed: Option<oneshot::Sender<u64>>,
    },
    Incident {
        id: u64,
        action: IncidentAction,
        transition: Transition,
        reply: oneshot::Sender<Result<Incident, IncidentError>>,
    },
    Maintain {
        reply: oneshot::Sender<Result<u64, JournalError>>,
    },
    OutboxAck {
        up_to: u64,
        reply: oneshot::Sender<u64>,
    },
    /// Starts the rules engine (the writer's first request).
    StartRules,
    /// A rules deadline may have come.
    Tick,
    SetMode {
        zone: ZoneId,
        mode: ZoneMode,
        by: String,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    Bypass {
        point: PointId,
        on: bool,
        by: String,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    CheckCommand {
        point: PointId,
        value: Value,
        reply: oneshot::Sender<Result<(), Refusal>>,
    },
    /// The config changed: the newly compiled site takes over the state.
    Reload(Box<Engine>),
    /// The video service wrote a clip or gave up on it.
    FinishClip {
        id: u64,
        outcome: ClipOutcome,
        reply: oneshot::Sender<()>,
    },
    /// Retention deleted these clips' files.
    ForgetClips {
        ids: Vec<u64>,
        reply: oneshot::Sender<()>,
    },
}

/// The way into the journal; cheap to clone.
#[derive(Clone)]
pub struct JournalHandle {
    sender: mpsc::Sender<Request>,
}

impl JournalHandle {
    async fn send(&self, request: Request) -> Result<(), JournalError> {
        self.sender
            .send(request)
            .await
            .map_err(|_| JournalError::Closed)
    }

    /// Queues an event. It is committed, evaluated by the rules and broadcast shortly after;
    /// waits while the writer is saturated.
    pub async fn append(&self, body: EventBody) -> Result<(), JournalError> {
        self.send(Request::Append {
            body,
            committed: None,
        })
        .await
    }

    /// Appends an event and waits until it is committed; returns its seq. For records whose
    /// outcome someone is told about (a command's result).
    pub async fn append_committed(&self, body: EventBody) -> Result<u64, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Append {
            body,
            committed: Some(reply),
        })
        .await?;
        answer.await.map_err(|_| JournalError::Closed)
    }

    /// Moves an incident along its lifecycle; returns it as committed.
    pub async fn change_incident(
        &self,
        id: u64,
        action: IncidentAction,
        transition: Transition,
    ) -> Result<Incident, IncidentError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Incident {
            id,
            action,
            transition,
            reply,
        })
        .await?;
        answer.await.map_err(|_| JournalError::Closed)?
    }

    /// The relay holds every outbox record up to `up_to`: forgets them. Returns how many
    /// rows left the outbox.
    pub async fn outbox_ack(&self, up_to: u64) -> Result<u64, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::OutboxAck { up_to, reply }).await?;
        answer.await.map_err(|_| JournalError::Closed)
    }

    /// Applies retention now; returns how many events were deleted.
    pub async fn maintain(&self) -> Result<u64, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Maintain { reply }).await?;
        answer.await.map_err(|_| JournalError::Closed)?
    }

    /// Runs the rules' deadlines that have come.
    pub async fn tick(&self) -> Result<(), JournalError> {
        self.send(Request::Tick).await
    }

    /// Arms or disarms a zone on a person's request (`by`); returns once the change is
    /// committed.
    pub async fn set_mode(
        &self,
        zone: ZoneId,
        mode: ZoneMode,
        by: String,
    ) -> Result<Result<(), Refusal>, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::SetMode {
            zone,
            mode,
            by,
            reply,
        })
        .await?;
        answer.await.map_err(|_| JournalError::Closed)
    }

    /// Bypasses a point (or ends its bypass) until its zone is next disarmed.
    pub async fn bypass(
        &self,
        point: PointId,
        on: bool,
        by: String,
    ) -> Result<Result<(), Refusal>, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Bypass {
            point,
            on,
            by,
            reply,
        })
        .await?;
        answer.await.map_err(|_| JournalError::Closed)
    }

    /// Whether the rules allow a command now (the life-safety interlock may refuse it).
    pub async fn check_command(
        &self,
        point: PointId,
        value: Value,
    ) -> Result<Result<(), Refusal>, JournalError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::CheckCommand {
            point,
            value,
            reply,
        })
        .await?;
        answer.await.map_err(|_| JournalError::Closed)
    }

    /// Hands a newly compiled site to the rules; its state carries over.
    pub async fn reload_rules(&self, engine: Engine) -> Result<(), JournalError> {
        self.send(Request::Reload(Box::new(engine))).await
    }

    /// Records how a clip ended (and updates its incident); returns once committed.
    pub async fn finish_clip(&self, id: u64, outcome: ClipOutcome) -> Result<(), JournalError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::FinishClip { id, outcome, reply })
            .await?;
        answer.await.map_err(|_| JournalError::Closed)
    }

    /// Forgets clips whose files are deleted; returns once committed.
    pub async fn forget_clips(&self, ids: Vec<u64>) -> Result<(), JournalError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::ForgetClips { ids, reply }).await?;
        answer.await.map_err(|_| JournalError::Closed)
    }
}

/// Owns the write connection; runs on its own thread until every handle is dropped.
pub struct Writer {
    connection: Connection,
    rules: RuleDriver,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    settings: WriterSettings,
    /// Rows in the outbox, read on first use.
    outbox_rows: Option<u64>,
}

/// What became of one request of a batch.
enum Outcome {
    Appended(u64),
    Incident(Box<Result<Incident, IncidentError>>),
    /// Retention runs after the batch is published.
    Maintain,
    /// Rows removed from the outbox by an acknowledgement.
    OutboxAcked(u64),
    /// The answer to a request to the rules.
    Rules(Result<(), Refusal>),
    /// Nothing to answer.
    Done,
    /// A permanent error: the request is refused, the rest of the batch goes on.
    Rejected(JournalError),
}

/// What a committed batch produced, to publish after COMMIT.
#[derive(Default)]
struct Committed {
    events: Vec<Event>,
    /// One per request, in order.
    outcomes: Vec<Outcome>,
    /// The outbox's row count after this batch.
    outbox_rows: Option<u64>,
}

/// Retention never trims below this many of the newest events, even when something else
/// (incidents) keeps the file over its size budget.
const RETENTION_FLOOR_EVENTS: i64 = 1000;

/// Errors that may pass: the disk is full or busy. Anything else is a defect in one request.
fn is_transient(error: &JournalError) -> bool {
    use rusqlite::ErrorCode::{
        CannotOpen, DatabaseBusy, DatabaseLocked, DiskFull, OutOfMemory, SystemIoFailure,
    };
    matches!(error, JournalError::Sqlite(rusqlite::Error::SqliteFailure(failure, _))
        if matches!(failure.code, DiskFull | SystemIoFailure | DatabaseBusy | DatabaseLocked
            | CannotOpen | OutOfMemory))
}

fn is_disk_full(error: &JournalError) -> bool {
    matches!(error, JournalError::Sqlite(rusqlite::Error::SqliteFailure(failure, _))
        if failure.code == rusqlite::ErrorCode::DiskFull)
}

impl Writer {
    pub fn new(
        connection: Connection,
        rules: RuleDriver,
        live: Arc<Live>,
        metrics: Arc<Metrics>,
        settings: WriterSettings,
    ) -> Self {
        Writer {
            connection,
            rules,
            live,
            metrics,
            settings,
            outbox_rows: None,
        }
    }

    /// Starts the writer thread. The channel holds a few batches so bursts do not block.
    /// A journal in a file also gets its checkpoint thread, which stops after the writer.
    pub fn spawn(self) -> std::io::Result<(JournalHandle, std::thread::JoinHandle<()>)> {
        let checkpointer = self.start_checkpointer()?;
        let (sender, receiver) = mpsc::channel(self.settings.batch_max_events.max(1) * 4);
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || {
                self.run(receiver);
                if let Some((stop, checkpoints)) = checkpointer {
                    drop(stop);
                    if checkpoints.join().is_err() {
                        tracing::error!("the journal checkpoint thread panicked");
                    }
                }
            })?;
        Ok((JournalHandle { sender }, thread))
    }

    /// Moves WAL checkpoints off the commit path (see [`checkpoint`](super::checkpoint)).
    /// Returns the thread's stop handle and join handle; `None` for an in-memory journal.
    fn start_checkpointer(
        &self,
    ) -> std::io::Result<Option<(std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>)>> {
        let Some(path) = self.connection.path().filter(|path| !path.is_empty()) else {
            return Ok(None);
        };
        let setup = || -> Result<Checkpointer, JournalError> {
            let checkpointer = Checkpointer::open(Path::new(path), self.metrics.clone())?;
            self.connection
                .pragma_update(None, "wal_autocheckpoint", 0)?;
            self.connection.pragma_update(
                None,
                "journal_size_limit",
                checkpoint::WAL_SIZE_LIMIT_BYTES,
            )?;
            Ok(checkpointer)
        };
        let checkpointer = setup().map_err(std::io::Error::other)?;
        let (stop, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("journal-checkpoint".into())
            .spawn(move || checkpointer.run(stopped))?;
        Ok(Some((stop, thread)))
    }

    fn run(mut self, mut receiver: mpsc::Receiver<Request>) {
        let max = self.settings.batch_max_events.max(1);
        let mut batch = Vec::with_capacity(max);
        batch.push(Request::StartRules);
        self.process(&mut batch);
        while let Some(first) = receiver.blocking_recv() {
            batch.push(first);
            while batch.len() < max {
                match receiver.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.process(&mut batch);
        }
        tracing::info!("journal writer stopped: every handle was dropped");
    }

    /// Commits a batch, then publishes it and answers its requests.
    fn process(&mut self, batch: &mut Vec<Request>) {
        let committed = match self.commit_with_retry(batch) {
            Ok(committed) => committed,
            Err(error) => {
                tracing::error!(%error, requests = batch.len(),
                    "journal batch failed permanently; committing its requests one by one");
                let mut all = Committed::default();
                for index in 0..batch.len() {
                    match self.commit_with_retry(&batch[index..=index]) {
                        Ok(one) => {
                            all.events.extend(one.events);
                            all.outcomes.extend(one.outcomes);
                            all.outbox_rows = one.outbox_rows.or(all.outbox_rows);
                        }
                        Err(error) => {
                            self.metrics.journal_requests_rejected.inc();
                            tracing::error!(%error, "journal request rejected");
                            all.outcomes.push(Outcome::Rejected(error));
                        }
                    }
                }
                all
            }
        };
        self.metrics
            .journal_events_committed
            .inc_by(committed.events.len() as u64);
        if let Some(rows) = committed.outbox_rows {
            self.outbox_rows = Some(rows);
            self.metrics.outbox_backlog.set(rows as i64);
        }
        for event in &committed.events {
            self.live.apply(event);
        }
        let mut maintain = Vec::new();
        for (request, outcome) in batch.drain(..).zip(committed.outcomes) {
            match (request, outcome) {
                (
                    Request::Append {
                        committed: Some(reply),
                        ..
                    },
                    Outcome::Appended(seq),
                ) => {
                    let _ = reply.send(seq);
                }
                (Request::Incident { reply, .. }, Outcome::Incident(result)) => {
                    let _ = reply.send(*result);
                }
                (Request::Incident { reply, .. }, Outcome::Rejected(error)) => {
                    let _ = reply.send(Err(error.into()));
                }
                (Request::Maintain { reply }, _) => maintain.push(reply),
                (Request::OutboxAck { reply, .. }, Outcome::OutboxAcked(removed)) => {
                    let _ = reply.send(removed);
                }
                (
                    Request::SetMode { reply, .. }
                    | Request::Bypass { reply, .. }
                    | Request::CheckCommand { reply, .. },
                    Outcome::Rules(answer),
                ) => {
                    let _ = reply.send(answer);
                }
                (
                    Request::FinishClip { reply, .. } | Request::ForgetClips { reply, .. },
                    Outcome::Done,
                ) => {
                    let _ = reply.send(());
                }
                // An append nobody waits for, or one rejected (its waiter sees Closed).
                _ => {}
            }
        }
        for event in committed.events {
            self.live.publish(event);
        }
        // Retention runs after publishing, so it never delays the stream.
        for reply in maintain {
            let _ = reply.send(self.maintain());
        }
        self.let_the_wal_restart();
    }

    /// The checkpoint thread copies the WAL back while this thread keeps appending, so it
    /// rarely finds every frame copied, and SQLite restarts the WAL from its beginning only
    /// then: the file would only grow. After each pass of that thread that saw more than
    /// [`checkpoint::WRITER_PASS_FRAMES`], the writer copies back (between batches, after
    /// publishing) the few frames written since; its next commit then restarts the WAL.
    fn let_the_wal_restart(&mut self) {
        if self.metrics.journal_wal_frames.get() <= checkpoint::WRITER_PASS_FRAMES {
            return;
        }
        match checkpoint::passive(&self.connection) {
            // Fully copied: the next commit starts the WAL over, so it holds nothing.
            Ok(pass) if pass.checkpointed == pass.wal_frames => {
                self.metrics.journal_wal_frames.set(0);
            }
            Ok(pass) => {
                self.metrics.journal_wal_frames.set(pass.wal_frames);
            }
            Err(error) => {
                self.metrics.journal_checkpoint_failures.inc();
                tracing::warn!(%error, "journal checkpoint by the writer failed");
            }
        }
    }

    /// Commits `batch`, retrying transient errors (full or busy disk) until they pass; a
    /// permanent error is returned.
    fn commit_with_retry(&mut self, batch: &[Request]) -> Result<Committed, JournalError> {
        let mut delay = Duration::from_millis(50);
        loop {
            let started = Instant::now();
            match self.commit(batch) {
                Ok(committed) => {
                    self.metrics
                        .journal_commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.live.set_journal_failing(None);
                    self.rules.committed();
                    return Ok(committed);
                }
                Err(error) => {
                    if let Err(error) = self.rules.rolled_back(&self.connection) {
                        tracing::error!(%error, "cannot rebuild the rules' state after a failed batch; it may be behind");
                    }
                    if !is_transient(&error) {
                        return Err(error);
                    }
                    self.metrics.journal_commit_failures.inc();
                    self.live.set_journal_failing(Some(error.to_string()));
                    tracing::error!(%error, retry_in_ms = delay.as_millis() as u64,
                        "journal commit failed; holding the batch and retrying");
                    if is_disk_full(&error)
                        && let Err(error) = self.maintain()
                    {
                        tracing::warn!(%error, "retention could not free space");
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn commit(&mut self, batch: &[Request]) -> Result<Committed, JournalError> {
        // Stored with microsecond precision; publish exactly what is stored.
        let recorded_at = from_micros(to_micros(Timestamp::now()));
        let transaction = self.connection.transaction()?;
        let mut committed = Committed::default();
        for request in batch {
            let events = &mut committed.events;
            let outcome = match request {
                Request::Append { body, .. } => {
                    let event = insert_event(&transaction, recorded_at, body.clone())?;
                    let seq = event.seq;
                    self.rules.feed(&transaction, event, events)?;
                    Outcome::Appended(seq)
                }
                Request::Incident {
                    id,
                    action,
                    transition,
                    ..
                } => match change_incident(&transaction, recorded_at, *id, *action, transition)? {
                    Ok((incident, event)) => {
                        self.rules.feed(&transaction, event, events)?;
                        Outcome::Incident(Box::new(Ok(incident)))
                    }
                    Err(refused) => Outcome::Incident(Box::new(Err(refused))),
                },
                Request::Maintain { .. } => Outcome::Maintain,
                Request::OutboxAck { up_to, .. } => {
                    Outcome::OutboxAcked(outbox::acknowledge(&transaction, *up_to)?)
                }
                Request::StartRules => {
                    self.rules.start(&transaction, recorded_at, events)?;
                    Outcome::Done
                }
                Request::Tick => {
                    let outputs = self.rules.engine_mut().advance(recorded_at);
                    self.rules
                        .apply(&transaction, recorded_at, outputs, events)?;
                    Outcome::Done
                }
                Request::SetMode { zone, mode, by, .. } => {
                    let changed = self
                        .rules
                        .engine_mut()
                        .set_mode(zone, *mode, by, recorded_at);
                    match changed {
                        Ok(outputs) => {
                            self.rules
                                .apply(&transaction, recorded_at, outputs, events)?;
                            Outcome::Rules(Ok(()))
                        }
                        Err(refused) => Outcome::Rules(Err(refused)),
                    }
                }
                Request::Bypass { point, on, by, .. } => {
                    let result = self.rules.engine_mut().bypass(point, *on);
                    if result.is_ok() {
                        tracing::warn!(%point, bypassed = *on, %by, "point bypass changed");
                        let body = EventBody::Bypass {
                            point: point.clone(),
                            bypassed: *on,
                            by: by.clone(),
                        };
                        let event = insert_event(&transaction, recorded_at, body)?;
                        self.rules.feed(&transaction, event, events)?;
                    }
                    Outcome::Rules(result)
                }
                Request::CheckCommand { point, value, .. } => {
                    Outcome::Rules(self.rules.engine().check_command(point, value))
                }
                Request::Reload(engine) => {
                    self.rules
                        .reload(&transaction, engine, recorded_at, events)?;
                    Outcome::Done
                }
                Request::FinishClip { id, outcome, .. } => {
                    if let Some(body) = clips::finish(&transaction, *id, outcome)? {
                        let event = insert_event(&transaction, recorded_at, body)?;
                        self.rules.feed(&transaction, event, events)?;
                    }
                    Outcome::Done
                }
                Request::ForgetClips { ids, .. } => {
                    clips::forget(&transaction, ids)?;
                    Outcome::Done
                }
            };
            committed.outcomes.push(outcome);
        }
        self.rules.save(&transaction, recorded_at)?;
        committed.outbox_rows = fill_outbox(
            &transaction,
            &committed,
            self.settings.outbox_max_records,
            self.outbox_rows,
            &self.metrics,
        )?;
        transaction.commit()?;
        Ok(committed)
    }

    /// Retention by age, then by size. Runs outside any batch transaction.
    fn maintain(&mut self) -> Result<u64, JournalError> {
        let mut deleted = 0u64;
        if let Some(max_age) = self.settings.max_age {
            let age = i64::try_from(max_age.as_micros()).unwrap_or(i64::MAX);
            let cutoff = Timestamp::now().as_microsecond().saturating_sub(age);
            loop {
                let removed = self.connection.execute(
                    "DELETE FROM events WHERE seq IN \
                     (SELECT seq FROM events WHERE recorded_at < ?1 ORDER BY seq LIMIT 20000)",
                    [cutoff],
                )?;
                deleted += removed as u64;
                if removed == 0 {
                    break;
                }
            }
        }
        if let Some(max_bytes) = self.settings.max_bytes {
            loop {
                let used = used_bytes(&self.connection)?;
                if used <= max_bytes {
                    break;
                }
                let count: i64 =
                    self.connection
                        .query_row("SELECT count(*) FROM events", [], |row| row.get(0))?;
                let deletable = count - RETENTION_FLOOR_EVENTS;
                if deletable <= 0 {
                    tracing::warn!(
                        used,
                        max_bytes,
                        "the journal is over its size budget with only \
                        the newest events left (incidents take the rest); raise retention_max_megabytes"
                    );
                    break;
                }
                // Delete the share of rows that is over the limit, plus 1% so the loop ends
                // in a few rounds; rows are about the same size.
                let over = (used - max_bytes) as f64 / used as f64;
                let chunk = ((count as f64 * (over + 0.01)).ceil() as i64).clamp(1, deletable);
                let removed = self.connection.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?1)",
                    [chunk],
                )?;
                deleted += removed as u64;
            }
        }
        if deleted > 0 {
            self.connection
                .execute_batch("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(PASSIVE);")?;
            self.metrics.journal_events_expired.inc_by(deleted);
            tracing::info!(deleted, "journal retention removed old events");
        }
        Ok(deleted)
    }
}

/// Puts the batch's events into the outbox (when there is an uplink) and evicts over the
/// cap; returns the outbox's row count as it will be after COMMIT.
fn fill_outbox(
    transaction: &Transaction,
    committed: &Committed,
    max: Option<u64>,
    known_rows: Option<u64>,
    metrics: &Metrics,
) -> Result<Option<u64>, JournalError> {
    let Some(max) = max else {
        return Ok(None);
    };
    let mut rows = match known_rows {
        Some(rows) => rows,
        None => outbox::state(transaction)?.backlog,
    };
    for outcome in &committed.outcomes {
        if let Outcome::OutboxAcked(removed) = outcome {
            rows = rows.saturating_sub(*removed);
        }
    }
    for event in &committed.events {
        outbox::insert(transaction, event)?;
    }
    rows += committed.events.len() as u64;
    if rows > max {
        let evicted = outbox::evict(transaction, rows - max)?;
        rows -= evicted;
        metrics.outbox_evicted.inc_by(evicted);
        tracing::warn!(
            evicted,
            max,
            "outbox full: evicted the oldest, least important records"
        );
    }
    Ok(Some(rows))
}

/// Bytes held by live pages (free pages do not count).
fn used_bytes(connection: &Connection) -> Result<u64, JournalError> {
    let pragma = |name: &str| -> Result<u64, JournalError> {
        let value: i64 = connection.pragma_query_value(None, name, |row| row.get(0))?;
        Ok(value.max(0) as u64)
    };
    Ok((pragma("page_count")? - pragma("freelist_count")?) * pragma("page_size")?)
}

pub(super) fn insert_event(
    transaction: &Transaction,
    recorded_at: Timestamp,
    body: EventBody,
) -> Result<Event, JournalError> {
    let json = serde_json::to_string(&body)?;
    let mut statement = transaction.prepare_cached(
        "INSERT INTO events (recorded_at, kind, device, point, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    statement.execute(params![
        to_micros(recorded_at),
        body.kind().as_str(),
        body.device().map(|d| d.as_str()),
        body.point().map(|p| p.as_str()),
        json
    ])?;
    Ok(Event {
        seq: transaction.last_insert_rowid() as u64,
        recorded_at,
        body,
    })
}

pub(super) fn store_incident(
    transaction: &Transaction,
    incident: &Incident,
) -> Result<(), JournalError> {
    transaction
        .prepare_cached("UPDATE incidents SET state = ?2, body = ?3 WHERE id = ?1")?
        .execute(params![
            incident.id as i64,
            incident.state.as_str(),
            serde_json::to_string(incident)?
        ])?;
    Ok(())
}

fn incident_event(
    transaction: &Transaction,
    recorded_at: Timestamp,
    change: IncidentChange,
    incident: &Incident,
) -> Result<Event, JournalError> {
    insert_event(
        transaction,
        recorded_at,
        EventBody::Incident {
            change,
            incident: Box::new(incident.clone()),
        },
    )
}

/// Applies a lifecycle step. The outer error aborts the batch; the inner one is the caller's.
fn change_incident(
    transaction: &Transaction,
    recorded_at: Timestamp,
    id: u64,
    action: IncidentAction,
    transition: &Transition,
) -> Result<Result<(Incident, Event), IncidentError>, JournalError> {
    let mut incident = match load_incident(transaction, id) {
        Ok(Some(incident)) => incident,
        Ok(None) => return Ok(Err(IncidentError::NotFound(id))),
        Err(error @ JournalError::Json(_)) => return Ok(Err(IncidentError::Journal(error))),
        Err(error) => return Err(error),
    };
    let transition = Transition {
        at: recorded_at,
        ..transition.clone()
    };
    let (step, change) = match action {
        IncidentAction::Acknowledge => (
            incident.acknowledge(transition),
            IncidentChange::Acknowledged,
        ),
        IncidentAction::Resolve => (incident.resolve(transition), IncidentChange::Resolved),
    };
    if let Err(refused) = step {
        return Ok(Err(refused.into()));
    }
    store_incident(transaction, &incident)?;
    let event = incident_event(transaction, recorded_at, change, &incident)?;
    tracing::info!(
        incident = id,
        state = incident.state.as_str(),
        "incident changed"
    );
    Ok(Ok((incident, event)))
}

/// An incident as stored.
pub(super) fn load_incident(
    transaction: &Transaction,
    id: u64,
) -> Result<Option<Incident>, JournalError> {
    let body: Option<String> = transaction
        .prepare_cached("SELECT body FROM incidents WHERE id = ?1")?
        .query_row([id as i64], |row| row.get(0))
        .optional()?;
    body.map(|body| serde_json::from_str(&body).map_err(JournalError::from))
        .transpose()
}
