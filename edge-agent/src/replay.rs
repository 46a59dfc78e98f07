//! `gatehouse-edge rules test`: replays recorded events (JSON Lines, as
//! `GET /api/v1/events/export` writes them) through a site's rules and says what they did:
//! which rules fired, which incidents they opened or added to, which commands, clips and mode
//! changes they asked for. Nothing touches a device or a journal: the replay runs the engine
//! on the events' own clock (see [`gatehouse_rules::replay`]).

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use gatehouse_protocol::Event;
use gatehouse_rules::Output;
use gatehouse_rules::replay::{Outcome, Replay};
use jiff::{SignedDuration, Timestamp};

use crate::config::Config;

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("line {line}: not an event: {reason}")]
    BadLine { line: usize, reason: String },
    #[error("line {line}: recorded at {at}, before the event of the line above ({previous})")]
    OutOfOrder {
        line: usize,
        at: Timestamp,
        previous: Timestamp,
    },
    #[error("the rules do not compile: {0}")]
    Rules(String),
    #[error("cannot read the events: {0}")]
    Read(std::io::Error),
    #[error("cannot write the report: {0}")]
    Write(std::io::Error),
}

/// What a replay found, in total.
#[derive(Debug, Default, PartialEq)]
pub struct Summary {
    pub events: usize,
    /// Actions (raises, escalations, commands, clips, mode changes) per rule.
    pub actions: BTreeMap<String, usize>,
    pub incidents: usize,
    pub commands: usize,
}

/// Replays `events` through `config`'s rules, writing one line per outcome to `out`, then a
/// summary. After the last event the clock runs on for `continue_for` (so that an entry
/// delay or a held-open timer started near the end can run out).
pub fn run(
    config: &Config,
    events: impl BufRead,
    continue_for: SignedDuration,
    out: &mut impl Write,
) -> Result<Summary, ReplayError> {
    let engine = config.checked_engine().map_err(ReplayError::Rules)?;
    let mut summary = Summary::default();
    let mut replay: Option<Replay> = None;
    let mut previous: Option<Timestamp> = None;
    for (index, line) in events.lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(ReplayError::Read)?;
        if line.trim().is_empty() {
            continue;
        }
        let event: Event = serde_json::from_str(&line).map_err(|error| ReplayError::BadLine {
            line: number,
            reason: error.to_string(),
        })?;
        if let Some(previous) = previous
            && event.recorded_at < previous
        {
            return Err(ReplayError::OutOfOrder {
                line: number,
                at: event.recorded_at,
                previous,
            });
        }
        previous = Some(event.recorded_at);
        summary.events += 1;
        let outcomes = match replay.as_mut() {
            Some(replay) => replay.event(event.body, event.recorded_at),
            None => {
                // The replay starts at the first event, from the config's initial modes.
                let (mut started, mut outcomes) =
                    Replay::start(engine.fresh(), &[], None, event.recorded_at);
                outcomes.extend(started.event(event.body, event.recorded_at));
                replay = Some(started);
                outcomes
            }
        };
        report(&outcomes, &mut summary, out)?;
    }
    if let Some(replay) = replay.as_mut()
        && let Some(last) = previous
    {
        let until = last.saturating_add(continue_for).unwrap_or(Timestamp::MAX);
        let outcomes = replay.advance(until);
        report(&outcomes, &mut summary, out)?;
    }
    let rules: Vec<String> = summary
        .actions
        .iter()
        .map(|(rule, times)| format!("{rule} ×{times}"))
        .collect();
    writeln!(
        out,
        "replayed {} events: {} incidents, {} commands; actions by rule: {}",
        summary.events,
        summary.incidents,
        summary.commands,
        if rules.is_empty() {
            "none".to_owned()
        } else {
            rules.join(", ")
        }
    )
    .map_err(ReplayError::Write)?;
    Ok(summary)
}

fn report(
    outcomes: &[Outcome],
    summary: &mut Summary,
    out: &mut impl Write,
) -> Result<(), ReplayError> {
    for outcome in outcomes {
        let (rule, text) = describe(outcome);
        if let Some(rule) = rule {
            *summary.actions.entry(rule).or_default() += 1;
        }
        match &outcome.output {
            Output::Raise(raise) if raise.attach_to.is_none() => summary.incidents += 1,
            Output::Command(_) => summary.commands += 1,
            _ => {}
        }
        writeln!(out, "{}  {text}", outcome.at).map_err(ReplayError::Write)?;
    }
    Ok(())
}

/// The rule an outcome is an action of, if it is one, and a line for a person.
fn describe(outcome: &Outcome) -> (Option<String>, String) {
    let incident = outcome
        .incident
        .map_or_else(|| "?".to_owned(), |id| id.to_string());
    match &outcome.output {
        Output::Raise(raise) => {
            let what = if raise.attach_to.is_some() {
                format!("evidence added to incident {incident}")
            } else {
                format!("incident {incident} opened")
            };
            let from = match (&raise.evidence.point, &raise.evidence.value) {
                (Some(point), Some(value)) => format!(" ({point} = {value})"),
                (Some(point), None) => format!(" ({point})"),
                _ => String::new(),
            };
            let joined = match raise.joined.len() {
                0 => String::new(),
                1 => ", and 1 later trigger during the entry delay".to_owned(),
                n => format!(", and {n} later triggers during the entry delay"),
            };
            (
                Some(raise.rule.to_string()),
                format!(
                    "rule {}: {what}: {} \"{}\"{from}{joined}",
                    raise.rule,
                    raise.severity.as_str(),
                    raise.title
                ),
            )
        }
        Output::Escalate {
            incident,
            rule,
            step,
            severity,
        } => (
            Some(rule.to_string()),
            format!(
                "rule {rule}: incident {incident} escalated (step {}){}",
                step + 1,
                severity.map_or_else(String::new, |s| format!(" to {}", s.as_str()))
            ),
        ),
        Output::Command(command) => (
            Some(command.rule.to_string()),
            format!(
                "rule {}: command {}.{} = {} (not sent: replay)",
                command.rule, command.device, command.point, command.value
            ),
        ),
        Output::CommandRefused { command, reason } => (
            Some(command.rule.to_string()),
            format!(
                "rule {}: command {} = {} refused: {reason}",
                command.rule, command.point, command.value
            ),
        ),
        Output::Clip {
            rule,
            camera,
            from,
            to,
            ..
        } => (
            Some(rule.to_string()),
            format!("rule {rule}: clip of {camera} from {from} to {to}"),
        ),
        Output::Mode(change) => (
            change.by.strip_prefix("rule:").map(str::to_owned),
            format!(
                "zone {}: {} by {} (in effect from {})",
                change.zone,
                change.mode.as_str(),
                change.by,
                change.effective_at
            ),
        ),
        Output::EntryDelay { rule, zone, until } => (
            None,
            format!("rule {rule}: entry delay in zone {zone} until {until}"),
        ),
        Output::Interlock { active } => (
            None,
            if *active {
                "life-safety interlock active: egress doors released".to_owned()
            } else {
                "life-safety interlock ended".to_owned()
            },
        ),
        Output::LoopSuppressed {
            rule,
            max_firings,
            window,
        } => (
            None,
            format!("rule {rule}: held back: fired more than {max_firings} times within {window}"),
        ),
    }
}
