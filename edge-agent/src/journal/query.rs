//! Reading the journal: filtered, cursor-paginated queries on read-only connections.
//!
//! WAL mode lets readers run beside the writer without blocking it. Connections are pooled;
//! callers run queries on a blocking thread (`Reader::run`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use gatehouse_protocol::{DeviceId, Event, EventBody, EventKind, Incident, IncidentState, PointId};
use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, ToSql};

use super::{JournalError, from_micros, open_for_reading, to_micros};

/// Newest first or oldest first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

/// Filters for an events query. `after` is the cursor of the previous page.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub device: Option<DeviceId>,
    pub point: Option<PointId>,
    pub kind: Option<EventKind>,
    /// Continue after this seq (in the query's order).
    pub cursor: Option<u64>,
    pub order: Order,
    pub limit: usize,
}

/// Filters for an incidents query.
#[derive(Debug, Clone, Default)]
pub struct IncidentQuery {
    pub state: Option<IncidentState>,
    /// Continue with ids below this one (newest first).
    pub cursor: Option<u64>,
    pub limit: usize,
}

/// One page of results and the cursor of the next page, if there may be one.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<u64>,
}

/// A pool of read-only connections to the journal.
#[derive(Clone)]
pub struct Reader {
    path: Arc<PathBuf>,
    pool: Arc<Mutex<Vec<Connection>>>,
    /// Bounds the queries running at once (and so the connections open).
    permits: Arc<tokio::sync::Semaphore>,
}

/// Most queries running at once; more wait their turn.
const MAX_READERS: usize = 8;

impl Reader {
    pub fn new(path: PathBuf) -> Self {
        Reader {
            path: Arc::new(path),
            pool: Arc::new(Mutex::new(Vec::new())),
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_READERS)),
        }
    }

    /// Runs `work` with a pooled connection on a blocking thread.
    pub async fn run<T, F>(&self, work: F) -> Result<T, JournalError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, JournalError> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| JournalError::Closed)?;
        let reader = self.clone();
        tokio::task::spawn_blocking(move || {
            let result = reader.run_blocking(work);
            drop(permit);
            result
        })
        .await
        .map_err(|_| JournalError::Closed)?
    }

    /// Runs `work` with a pooled connection on the current thread.
    pub fn run_blocking<T>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let pooled = self.pool.lock().ok().and_then(|mut pool| pool.pop());
        let connection = match pooled {
            Some(connection) => connection,
            None => open_for_reading(&self.path)?,
        };
        let result = work(&connection);
        if let Ok(mut pool) = self.pool.lock()
            && pool.len() < MAX_READERS
        {
            pool.push(connection);
        }
        result
    }
}

fn decode_event(seq: i64, recorded_at: i64, body: &str) -> Result<Event, JournalError> {
    let body: EventBody = serde_json::from_str(body)?;
    Ok(Event {
        seq: seq as u64,
        recorded_at: from_micros(recorded_at),
        body,
    })
}

/// Runs an events query.
pub fn events(connection: &Connection, query: &EventQuery) -> Result<Page<Event>, JournalError> {
    let mut conditions: Vec<&str> = Vec::new();
    let mut values: Vec<Box<dyn ToSql>> = Vec::new();
    if let Some(from) = query.from {
        conditions.push("recorded_at >= ?");
        values.push(Box::new(to_micros(from)));
    }
    if let Some(to) = query.to {
        conditions.push("recorded_at < ?");
        values.push(Box::new(to_micros(to)));
    }
    if let Some(device) = &query.device {
        conditions.push("device = ?");
        values.push(Box::new(device.as_str().to_owned()));
    }
    if let Some(point) = &query.point {
        conditions.push("point = ?");
        values.push(Box::new(point.as_str().to_owned()));
    }
    if let Some(kind) = query.kind {
        conditions.push("kind = ?");
        values.push(Box::new(kind.as_str()));
    }
    if let Some(cursor) = query.cursor {
        conditions.push(match query.order {
            Order::Asc => "seq > ?",
            Order::Desc => "seq < ?",
        });
        values.push(Box::new(cursor as i64));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let direction = match query.order {
        Order::Asc => "ASC",
        Order::Desc => "DESC",
    };
    // One extra row tells whether another page exists.
    let sql = format!(
        "SELECT seq, recorded_at, body FROM events {filter} ORDER BY seq {direction} LIMIT {}",
        query.limit + 1
    );
    let mut statement = connection.prepare_cached(&sql)?;
    let params: Vec<&dyn ToSql> = values.iter().map(|v| v.as_ref()).collect();
    let rows = statement.query_map(params.as_slice(), |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    let mut items = Vec::with_capacity(query.limit);
    let mut more = false;
    for row in rows {
        let (seq, recorded_at, body) = row?;
        if items.len() == query.limit {
            more = true;
            break;
        }
        items.push(decode_event(seq, recorded_at, &body)?);
    }
    let next_cursor = if more {
        items.last().map(|event: &Event| event.seq)
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// Events with `seq > after`, oldest first: the stream's catch-up.
pub fn events_after(
    connection: &Connection,
    after: u64,
    limit: usize,
) -> Result<Vec<Event>, JournalError> {
    let page = events(
        connection,
        &EventQuery {
            cursor: Some(after),
            limit,
            ..EventQuery::default()
        },
    )?;
    Ok(page.items)
}

/// The newest committed seq (0 for an empty journal).
pub fn last_seq(connection: &Connection) -> Result<u64, JournalError> {
    let seq: Option<i64> =
        connection.query_row("SELECT max(seq) FROM events", [], |row| row.get(0))?;
    Ok(seq.unwrap_or(0) as u64)
}

/// The latest observation of each point and the latest status of each device, to rebuild
/// the live state at start-up.
pub fn latest_states(connection: &Connection) -> Result<Vec<Event>, JournalError> {
    let mut statement = connection.prepare(
        "SELECT seq, recorded_at, body FROM events WHERE seq IN ( \
            SELECT max(seq) FROM events WHERE kind = 'observation' GROUP BY point \
            UNION SELECT max(seq) FROM events WHERE kind = 'device_status' GROUP BY device) \
         ORDER BY seq",
    )?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    rows.map(|row| {
        let (seq, recorded_at, body) = row?;
        decode_event(seq, recorded_at, &body)
    })
    .collect()
}

/// The latest observation of each of `points` that had good quality: what the rules last
/// saw (they ignore bad and stale readings).
pub fn latest_good_observations(
    connection: &Connection,
    points: &[PointId],
) -> Result<Vec<Event>, JournalError> {
    let mut statement = connection.prepare(
        "SELECT seq, recorded_at, body FROM events \
         WHERE point = ?1 AND kind = 'observation' ORDER BY seq DESC LIMIT 10000",
    )?;
    let mut found = Vec::new();
    for point in points {
        let mut rows = statement.query([point.as_str()])?;
        while let Some(row) = rows.next()? {
            let event = decode_event(row.get(0)?, row.get(1)?, &row.get::<_, String>(2)?)?;
            if matches!(&event.body, EventBody::Observation { quality, .. } if quality.is_good()) {
                found.push(event);
                break;
            }
        }
    }
    found.sort_by_key(|event| event.seq);
    Ok(found)
}

/// Incidents, newest first.
pub fn incidents(
    connection: &Connection,
    query: &IncidentQuery,
) -> Result<Page<Incident>, JournalError> {
    let mut statement = connection.prepare_cached(
        "SELECT id, body FROM incidents WHERE (?1 IS NULL OR state = ?1) AND id < ?2 \
         ORDER BY id DESC LIMIT ?3",
    )?;
    let cursor = query.cursor.map_or(i64::MAX, |c| c as i64);
    let rows = statement.query_map(
        rusqlite::params![
            query.state.map(IncidentState::as_str),
            cursor,
            query.limit as i64 + 1
        ],
        |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
    )?;
    let mut items = Vec::with_capacity(query.limit);
    let mut more = false;
    for row in rows {
        let (_, body) = row?;
        if items.len() == query.limit {
            more = true;
            break;
        }
        items.push(serde_json::from_str::<Incident>(&body)?);
    }
    let next_cursor = if more {
        items.last().map(|incident: &Incident| incident.id)
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// One incident by id.
pub fn incident(connection: &Connection, id: u64) -> Result<Option<Incident>, JournalError> {
    let body: Option<String> = connection
        .prepare_cached("SELECT body FROM incidents WHERE id = ?1")?
        .query_row([id as i64], |row| row.get(0))
        .optional()?;
    body.map(|body| serde_json::from_str(&body).map_err(JournalError::from))
        .transpose()
}
