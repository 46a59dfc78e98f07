//! Weekly schedules that arm and disarm zones: "business hours: Mon–Fri 08:00–18:00,
//! Sat 09:00–13:00, Europe/Berlin, except public holidays".
//!
//! A schedule answers two questions for the engine, both pure (the caller passes the instant):
//! [`Schedule::is_active`] ("is it active at this instant?") and [`Schedule::next_change`]
//! ("when does that answer next change?"), so the engine sets one timer per change instead of
//! polling.
//!
//! # Configuration
//!
//! ```toml
//! [[schedules]]
//! id = "business-hours"
//! timezone = "Europe/Berlin"   # optional: without it, the site's zone
//!
//! [[schedules.windows]]
//! days = ["mon", "tue", "wed", "thu", "fri"]   # the days the window *starts* on
//! from = "08:00"
//! to = "18:00"
//!
//! [[schedules.windows]]
//! days = ["sat"]
//! from = "09:00"
//! to = "13:00"
//!
//! [[schedules.exceptions]]     # optional: days on which no window starts (public holidays)
//! dates = ["2026-12-25", "2026-12-26"]
//! ```
//!
//! - `days`: `mon`, `tue`, `wed`, `thu`, `fri`, `sat`, `sun`; at least one. A repeated day is
//!   harmless.
//! - `from`, `to`: `HH:MM` on a 24-hour clock, in the local time of the schedule's zone.
//!   `from` is `00:00`–`23:59`. `to` may also be `24:00`, the end of the day the window starts
//!   on. A `to` earlier than `from` runs past midnight into the next day: `from = "22:00"`,
//!   `to = "06:00"` on `fri` runs from Friday 22:00 to Saturday 06:00. `to = "00:00"` is the
//!   same as `24:00`. `from == to` is refused: write `00:00`–`24:00` for a whole day.
//! - Windows may overlap or touch: the schedule is active whenever at least one window is.
//!   Monday `00:00`–`24:00` and Tuesday `00:00`–`12:00` are one stretch, with no change at
//!   Tuesday midnight.
//! - `exceptions`: dates (`YYYY-MM-DD`, in the schedule's zone) on which **no window starts**.
//!   A window that started the evening before and runs past midnight into an exception date
//!   still ends at its normal time that morning: the Thursday 22:00–06:00 window before a
//!   Friday holiday runs until Friday 06:00, and the Friday 22:00 one does not start. List the
//!   day before as well to cancel that night too. Repeated dates are harmless.
//!
//! [`Schedule::compile`] checks the whole configuration and reports **every** problem at once,
//! each with the byte span of the offending value and a message saying how to fix it.
//!
//! # Daylight saving time
//!
//! Windows are wall-clock times, because that is how a site plans ("the cleaners leave at
//! 22:00"). Twice a year the wall clock skips or repeats an hour, so a wall-clock time may not
//! exist or may happen twice. One rule settles every case:
//!
//! > **A boundary (a `from` or a `to`) takes effect at the first instant at which the local
//! > clock shows that time or later.**
//!
//! What it means on the night of a change (Europe/Berlin shown; every zone behaves alike):
//!
//! - **Spring forward** (2026-03-29, 02:00 jumps to 03:00): a boundary at 02:30 does not
//!   exist that night. It takes effect at 03:00 new time, the moment the clock passes it. It is
//!   neither skipped (a zone would stay disarmed, or armed, for a whole day) nor moved an hour
//!   early (a zone would arm while the clock on the wall still says people are due in). A
//!   window wholly inside the skipped hour (02:10–02:40) does not happen that night: no
//!   instant shows any of its times.
//! - **Fall back** (2026-10-25, 03:00 goes back to 02:00): a boundary at 02:30 happens twice
//!   on the clock; it takes effect at the *first* 02:30 (summer time). The repeated hour never
//!   starts or ends a window again, so a window never becomes active twice for the same
//!   boundary, and a window that ended at the first 02:30 does not restart at the second.
//!   A window that contains the change keeps running until the clock shows its end time:
//!   02:30–03:00 that night lasts an hour and a half (02:30 summer time to 03:00 winter time).
//! - **Windows spanning the change** last as long as the clock says, not as long as usual: a
//!   22:00–06:00 window lasts 7 real hours on the night of spring forward and 9 on the night
//!   of fall back. That is intended: staff, cleaners and guards follow the wall clock.
//!
//! Zones whose changes are not one hour (Australia/Lord_Howe moves by 30 minutes) or not at
//! 02:00 follow the same rule. The zone's rules are read from the system's time zone database
//! when the schedule is compiled; a tzdata update takes effect when the configuration is
//! loaded again.
//!
//! # How it works
//!
//! A window on a date is an *occurrence*: the half-open interval of instants from its `from`
//! boundary to its `to` boundary, each placed by the rule above (which is monotonic in wall
//! time, so an occurrence never ends before it starts). The schedule is active at an instant
//! when some occurrence contains it. [`Schedule::is_active`] looks at the occurrences starting
//! on the local date of the instant and the dates either side. [`Schedule::next_change`] walks
//! occurrences day by day in start order, merging those that overlap or touch, and returns
//! the first boundary of the merged stretches after the instant. Past its last exception a
//! schedule repeats every week, so a walk that finds no change within [`QUIET_DAYS`] days past
//! both the instant and the last exception concludes there is none.

use std::ops::Range;

use gatehouse_protocol::ids::{IdError, validate_id};
use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};
use serde::Deserialize;
use toml::Spanned;

/// How many days past both the asked instant and the last exception [`Schedule::next_change`]
/// looks before concluding that a schedule never changes again. A week would do for a
/// repeating pattern; the second week covers a daylight-saving change hiding one gap.
pub const QUIET_DAYS: i64 = 15;

const MINUTES_PER_DAY: u16 = 24 * 60;

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One `[[schedules]]` entry of a site's configuration, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// The schedule's id, referred to by rules and zones (`business-hours`).
    pub id: Spanned<String>,
    /// An IANA time zone name (`Europe/Berlin`); without it, the site's zone.
    #[serde(default)]
    pub timezone: Option<Spanned<String>>,
    /// When the schedule is active; at least one.
    #[serde(default)]
    pub windows: Vec<WindowConfig>,
    /// Dates on which no window starts.
    #[serde(default)]
    pub exceptions: Vec<ExceptionConfig>,
}

/// One `[[schedules.windows]]` entry: a daily stretch of wall-clock time on some weekdays.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// The weekdays the window starts on: `mon` … `sun`.
    pub days: Spanned<Vec<Spanned<String>>>,
    /// The start, `HH:MM` (`00:00`–`23:59`).
    pub from: Spanned<String>,
    /// The end, `HH:MM` (`00:00`–`24:00`); earlier than `from` means the next day.
    pub to: Spanned<String>,
}

/// One `[[schedules.exceptions]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionConfig {
    /// Local dates, `YYYY-MM-DD`, on which no window starts.
    pub dates: Vec<Spanned<String>>,
}

/// What is wrong with one value of a schedule's configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The id breaks the identifier rule.
    #[error("id: {0}")]
    BadId(IdError),
    /// `timezone` names no zone of the time zone database.
    #[error(
        "timezone: `{0}` is not a known time zone: use an IANA name such as `Europe/Berlin` or \
         `America/New_York` (the names under /usr/share/zoneinfo), or leave `timezone` out to \
         use the site's zone"
    )]
    UnknownTimeZone(String),
    /// The schedule has no window, so it would never be active.
    #[error(
        "no windows: add at least one [[schedules.windows]] with `days`, `from` and `to`, \
         e.g. days = [\"mon\"], from = \"08:00\", to = \"18:00\""
    )]
    NoWindows,
    /// A `days` entry is not a day name.
    #[error("days: `{0}` is not a day: use mon, tue, wed, thu, fri, sat or sun (lowercase)")]
    BadDay(String),
    /// `days` is empty, so the window would never start.
    #[error("days: empty: list the days the window starts on, e.g. days = [\"mon\", \"tue\"]")]
    NoDays,
    /// `from` or `to` is not `HH:MM` within the day.
    #[error(
        "{field}: `{text}` is not a time: write HH:MM on a 24-hour clock, 00:00 to 23:59 \
         (`to` may also be 24:00, the end of the day), e.g. \"08:00\" or \"18:30\""
    )]
    BadTime {
        /// `from` or `to`.
        field: &'static str,
        /// The value as written.
        text: String,
    },
    /// `from` is `24:00`.
    #[error(
        "from: a window cannot start at 24:00, the end of a day: start it at 00:00 on the \
         next day"
    )]
    StartsAtEndOfDay,
    /// `from` and `to` are the same time.
    #[error(
        "from and to are both {0}, which would be an empty window: for a whole day write \
         from = \"00:00\", to = \"24:00\""
    )]
    EmptyWindow(String),
    /// An exception date is not a valid `YYYY-MM-DD` date.
    #[error("dates: `{0}` is not a date: write YYYY-MM-DD, e.g. \"2026-12-25\"")]
    BadDate(String),
}

/// A problem found by [`Schedule::compile`], at one place of the configuration text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schedule `{schedule}`: {error}")]
pub struct ScheduleProblem {
    /// The schedule's id as written (possibly itself the problem).
    pub schedule: String,
    /// The byte range of the offending value in the configuration text (from [`Spanned`]).
    pub span: Range<usize>,
    /// What is wrong and how to fix it.
    pub error: ScheduleError,
}

/// A window as compiled: minutes since local midnight of the day it starts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct LocalWindow {
    /// `0..1440`.
    start: u16,
    /// `start + 1 ..= start + 1439`; past 1440 means the next day.
    end: u16,
}

/// A checked schedule, ready to answer [`is_active`](Schedule::is_active) and
/// [`next_change`](Schedule::next_change). See the [module documentation](self) for the
/// semantics.
#[derive(Debug, Clone)]
pub struct Schedule {
    id: String,
    zone: TimeZone,
    /// The windows starting on each weekday (Monday first), sorted by start.
    windows_by_weekday: [Vec<LocalWindow>; 7],
    /// Sorted, without repeats.
    exceptions: Vec<Date>,
}

impl Schedule {
    /// Checks `config` and compiles it; `default_zone` (the site's) applies when the schedule
    /// names none. Every problem is reported, not just the first.
    pub fn compile(
        config: &ScheduleConfig,
        default_zone: &TimeZone,
    ) -> Result<Schedule, Vec<ScheduleProblem>> {
        let schedule = config.id.get_ref().clone();
        let mut problems = Vec::new();
        let mut problem = |span: Range<usize>, error| {
            problems.push(ScheduleProblem {
                schedule: schedule.clone(),
                span,
                error,
            });
        };

        if let Err(error) = validate_id(config.id.get_ref()) {
            problem(config.id.span(), ScheduleError::BadId(error));
        }

        let zone = match &config.timezone {
            None => default_zone.clone(),
            Some(name) => TimeZone::get(name.get_ref()).unwrap_or_else(|_| {
                problem(
                    name.span(),
                    ScheduleError::UnknownTimeZone(name.get_ref().clone()),
                );
                default_zone.clone()
            }),
        };

        if config.windows.is_empty() {
            problem(config.id.span(), ScheduleError::NoWindows);
        }
        let mut windows_by_weekday: [Vec<LocalWindow>; 7] = Default::default();
        for window in &config.windows {
            let mut weekdays = Vec::new();
            for day in window.days.get_ref() {
                match DAY_NAMES.iter().position(|name| name == day.get_ref()) {
                    Some(weekday) => weekdays.push(weekday),
                    None => problem(day.span(), ScheduleError::BadDay(day.get_ref().clone())),
                }
            }
            if window.days.get_ref().is_empty() {
                problem(window.days.span(), ScheduleError::NoDays);
            }

            let start = match parse_time(window.from.get_ref()) {
                Some(MINUTES_PER_DAY) => {
                    problem(window.from.span(), ScheduleError::StartsAtEndOfDay);
                    None
                }
                Some(minutes) => Some(minutes),
                None => {
                    problem(
                        window.from.span(),
                        ScheduleError::BadTime {
                            field: "from",
                            text: window.from.get_ref().clone(),
                        },
                    );
                    None
                }
            };
            let end = parse_time(window.to.get_ref());
            if end.is_none() {
                problem(
                    window.to.span(),
                    ScheduleError::BadTime {
                        field: "to",
                        text: window.to.get_ref().clone(),
                    },
                );
            }
            let (Some(start), Some(end)) = (start, end) else {
                continue;
            };
            let end = match end {
                end if end == start => {
                    problem(
                        window.to.span(),
                        ScheduleError::EmptyWindow(window.from.get_ref().clone()),
                    );
                    continue;
                }
                end if end < start => end + MINUTES_PER_DAY,
                end => end,
            };
            for weekday in weekdays {
                windows_by_weekday[weekday].push(LocalWindow { start, end });
            }
        }
        for windows in &mut windows_by_weekday {
            windows.sort_unstable();
            windows.dedup();
        }

        let mut exceptions = Vec::new();
        for date in config.exceptions.iter().flat_map(|entry| &entry.dates) {
            match parse_date(date.get_ref()) {
                Some(parsed) => exceptions.push(parsed),
                None => problem(date.span(), ScheduleError::BadDate(date.get_ref().clone())),
            }
        }
        exceptions.sort_unstable();
        exceptions.dedup();

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Schedule {
            id: schedule,
            zone,
            windows_by_weekday,
            exceptions,
        })
    }

    /// The schedule's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The zone whose wall clock the windows follow.
    pub fn time_zone(&self) -> &TimeZone {
        &self.zone
    }

    /// Whether the schedule is active at `at`: some window started at or before it and ends
    /// after it (a window includes its `from` and excludes its `to`).
    pub fn is_active(&self, at: Timestamp) -> bool {
        let date = self.zone.to_datetime(at).date();
        // An occurrence containing `at` starts on the local date of `at` or the day before (a
        // window is shorter than a day), or, when a clock falls back across midnight, the day
        // after.
        [date.yesterday().ok(), Some(date), date.tomorrow().ok()]
            .into_iter()
            .flatten()
            .any(|day| {
                self.occurrences_on(day)
                    .any(|(start, end)| start <= at && at < end)
            })
    }

    /// The first instant strictly after `after` at which [`is_active`](Schedule::is_active)
    /// changes, or `None` if it never does again (e.g. a schedule covering the whole week, past
    /// its last exception).
    ///
    /// Takes microseconds: it walks at most to the first change, or [`QUIET_DAYS`] days past
    /// both `after` and the last exception. A day without occurrences costs next to nothing;
    /// a day with occurrences costs a few time zone look-ups per window.
    pub fn next_change(&self, after: Timestamp) -> Option<Timestamp> {
        let after_date = self.zone.to_datetime(after).date();
        let last_date = self
            .exceptions
            .last()
            .map_or(after_date, |last| (*last).max(after_date));
        let give_up_after = last_date
            .checked_add(jiff::Span::new().days(QUIET_DAYS))
            .ok()?;

        // The stretch of merged occurrences being built; its start is never after `after`
        // (otherwise that start is the answer).
        let mut stretch: Option<(Timestamp, Timestamp)> = None;
        // Every occurrence containing `after` starts on its local date or the day before.
        let mut day = after_date.yesterday().ok()?;
        while day <= give_up_after {
            for (start, end) in self.occurrences_on(day) {
                match stretch {
                    Some((stretch_start, stretch_end)) if start <= stretch_end => {
                        stretch = Some((stretch_start, stretch_end.max(end)));
                    }
                    _ => {
                        // Occurrences come in start order: nothing later joins the stretch.
                        if let Some((_, stretch_end)) = stretch
                            && stretch_end > after
                        {
                            return Some(stretch_end);
                        }
                        if start > after {
                            return Some(start);
                        }
                        stretch = Some((start, end));
                    }
                }
            }
            day = day.tomorrow().ok()?;
        }
        // Past the last exception every weekday's windows start within a week, and each one
        // either joined the stretch or ended the walk. So the schedule has been active without
        // a break for more than a week of its repeating pattern: it covers the whole week.
        None
    }

    /// The occurrences of the windows starting on the local date `day`, in start order, as
    /// half-open intervals; none on an exception date. Empty ones (inside a skipped hour) are
    /// left out.
    fn occurrences_on(&self, day: Date) -> impl Iterator<Item = (Timestamp, Timestamp)> + '_ {
        let windows: &[LocalWindow] = if self.exceptions.binary_search(&day).is_ok() {
            &[]
        } else {
            let weekday = day.weekday().to_monday_zero_offset().unsigned_abs();
            &self.windows_by_weekday[usize::from(weekday)]
        };
        windows.iter().filter_map(move |window| {
            let start = self.boundary(day, window.start)?;
            let end = self.boundary(day, window.end)?;
            (start < end).then_some((start, end))
        })
    }

    /// The instant at which a boundary `minutes` after local midnight of `day` takes effect:
    /// the first instant at which the local clock shows that time or later. `None` only at
    /// the ends of the representable range of time.
    fn boundary(&self, day: Date, minutes: u16) -> Option<Timestamp> {
        let day = if minutes >= MINUTES_PER_DAY {
            day.tomorrow().ok()?
        } else {
            day
        };
        let minutes = minutes % MINUTES_PER_DAY;
        let hour = i8::try_from(minutes / 60).ok()?;
        let minute = i8::try_from(minutes % 60).ok()?;
        let wall = DateTime::new(day.year(), day.month(), day.day(), hour, minute, 0, 0).ok()?;
        match self.zone.to_ambiguous_timestamp(wall).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(wall).ok(),
            // The clock jumps over `wall`: the first instant showing a later time is the jump
            // itself. Read on the offset after the jump, `wall` names an instant shortly
            // before it, so the jump is the zone's next transition from there. (A gap always
            // has one; were it missing, `wall` read on the offset before the jump is the
            // nearest instant past the gap.)
            AmbiguousOffset::Gap { before, after } => {
                let before_jump = after.to_timestamp(wall).ok()?;
                match self.zone.following(before_jump).next() {
                    Some(jump) => Some(jump.timestamp()),
                    None => before.to_timestamp(wall).ok(),
                }
            }
            // The clock shows `wall` twice: first on the offset before the fold.
            AmbiguousOffset::Fold { before, .. } => before.to_timestamp(wall).ok(),
        }
    }
}

/// Parses `HH:MM` (`00:00`–`24:00`) into minutes since midnight.
fn parse_time(text: &str) -> Option<u16> {
    let (hour, minute) = text.split_once(':')?;
    let hour = parse_digits(hour, 2)?;
    let minute = parse_digits(minute, 2)?;
    match (hour, minute) {
        (0..=23, 0..=59) | (24, 0) => Some(hour * 60 + minute),
        _ => None,
    }
}

/// Parses `YYYY-MM-DD` into a valid date.
fn parse_date(text: &str) -> Option<Date> {
    let mut parts = text.split('-');
    let year = parse_digits(parts.next()?, 4)?;
    let month = parse_digits(parts.next()?, 2)?;
    let day = parse_digits(parts.next()?, 2)?;
    if parts.next().is_some() {
        return None;
    }
    Date::new(
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
    )
    .ok()
}

/// Parses exactly `count` ASCII digits.
fn parse_digits(text: &str, count: usize) -> Option<u16> {
    if text.len() != count || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use jiff::{SignedDuration, Zoned};
    use proptest::prelude::*;

    use super::*;

    /// The part of a site's configuration that holds schedules.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Site {
        schedules: Vec<ScheduleConfig>,
    }

    fn parse(source: &str) -> Vec<ScheduleConfig> {
        toml::from_str::<Site>(source)
            .unwrap_or_else(|e| panic!("{e}"))
            .schedules
    }

    fn zone(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Compiles the first schedule of `source`, with Europe/Berlin as the site's zone.
    fn compile(source: &str) -> Result<Schedule, Vec<ScheduleProblem>> {
        Schedule::compile(&parse(source)[0], &zone("Europe/Berlin"))
    }

    /// The problems of the first schedule of `source`, which must have some.
    fn refused(source: &str) -> Vec<ScheduleProblem> {
        match compile(source) {
            Ok(schedule) => panic!("schedule `{}` compiled", schedule.id()),
            Err(problems) => problems,
        }
    }

    /// A window as `("mon tue", "08:00", "18:00")`.
    type WindowText<'a> = (&'a str, &'a str, &'a str);

    fn schedule_text(zone: &str, windows: &[WindowText], exceptions: &[&str]) -> String {
        let mut text = format!("[[schedules]]\nid = \"test\"\ntimezone = \"{zone}\"\n");
        for (days, from, to) in windows {
            let days: Vec<String> = days.split(' ').map(|day| format!("\"{day}\"")).collect();
            text += &format!(
                "[[schedules.windows]]\ndays = [{}]\nfrom = \"{from}\"\nto = \"{to}\"\n",
                days.join(", ")
            );
        }
        if !exceptions.is_empty() {
            let dates: Vec<String> = exceptions
                .iter()
                .map(|date| format!("\"{date}\""))
                .collect();
            text += &format!("[[schedules.exceptions]]\ndates = [{}]\n", dates.join(", "));
        }
        text
    }

    fn weekly(zone: &str, windows: &[WindowText], exceptions: &[&str]) -> Schedule {
        compile(&schedule_text(zone, windows, exceptions)).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn business_hours() -> Schedule {
        weekly(
            "Europe/Berlin",
            &[
                ("mon tue wed thu fri", "08:00", "18:00"),
                ("sat", "09:00", "13:00"),
            ],
            &[],
        )
    }

    /// An instant written as a zoned datetime: `2026-03-29T03:00:00+02:00[Europe/Berlin]`.
    fn at(text: &str) -> Timestamp {
        text.parse::<Zoned>()
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .timestamp()
    }

    fn show(schedule: &Schedule, instant: Timestamp) -> String {
        instant.to_zoned(schedule.time_zone().clone()).to_string()
    }

    /// Every change in `[from, until)`, as `<instant> on|off`.
    fn changes(schedule: &Schedule, from: &str, until: &str) -> Vec<String> {
        let until = at(until);
        let mut found = Vec::new();
        let mut instant = at(from);
        while let Some(change) = schedule.next_change(instant) {
            if change >= until {
                break;
            }
            let state = if schedule.is_active(change) {
                "on"
            } else {
                "off"
            };
            found.push(format!("{} {state}", show(schedule, change)));
            instant = change;
        }
        found
    }

    fn hours(count: i64) -> SignedDuration {
        SignedDuration::from_hours(count)
    }

    fn active(schedule: &Schedule, instant: &str) -> bool {
        schedule.is_active(at(instant))
    }

    #[test]
    fn business_hours_are_active_on_weekdays_from_eight_to_six() {
        let schedule = business_hours();
        assert_eq!(schedule.id(), "test");
        // Monday 2026-06-08.
        assert!(!active(
            &schedule,
            "2026-06-08T07:59:59+02:00[Europe/Berlin]"
        ));
        assert!(active(
            &schedule,
            "2026-06-08T08:00:00+02:00[Europe/Berlin]"
        ));
        assert!(active(
            &schedule,
            "2026-06-08T17:59:59.999+02:00[Europe/Berlin]"
        ));
        assert!(!active(
            &schedule,
            "2026-06-08T18:00:00+02:00[Europe/Berlin]"
        ));
        assert!(active(
            &schedule,
            "2026-06-12T12:00:00+02:00[Europe/Berlin]"
        ));
        // Saturday mornings only, Sunday never.
        assert!(!active(
            &schedule,
            "2026-06-13T08:30:00+02:00[Europe/Berlin]"
        ));
        assert!(active(
            &schedule,
            "2026-06-13T09:00:00+02:00[Europe/Berlin]"
        ));
        assert!(!active(
            &schedule,
            "2026-06-13T13:00:00+02:00[Europe/Berlin]"
        ));
        assert!(!active(
            &schedule,
            "2026-06-14T12:00:00+02:00[Europe/Berlin]"
        ));
        // The same instant seen from elsewhere: 08:00 in Berlin is 06:00 UTC.
        assert!(schedule.is_active(at("2026-06-08T06:00:00+00:00[UTC]")));
        assert!(!schedule.is_active(at("2026-06-08T05:59:59+00:00[UTC]")));
    }

    #[test]
    fn next_change_walks_a_week_of_business_hours() {
        let schedule = business_hours();
        assert_eq!(
            changes(
                &schedule,
                "2026-06-07T00:00:00+02:00[Europe/Berlin]",
                "2026-06-14T00:00:00+02:00[Europe/Berlin]"
            ),
            [
                "2026-06-08T08:00:00+02:00[Europe/Berlin] on",
                "2026-06-08T18:00:00+02:00[Europe/Berlin] off",
                "2026-06-09T08:00:00+02:00[Europe/Berlin] on",
                "2026-06-09T18:00:00+02:00[Europe/Berlin] off",
                "2026-06-10T08:00:00+02:00[Europe/Berlin] on",
                "2026-06-10T18:00:00+02:00[Europe/Berlin] off",
                "2026-06-11T08:00:00+02:00[Europe/Berlin] on",
                "2026-06-11T18:00:00+02:00[Europe/Berlin] off",
                "2026-06-12T08:00:00+02:00[Europe/Berlin] on",
                "2026-06-12T18:00:00+02:00[Europe/Berlin] off",
                "2026-06-13T09:00:00+02:00[Europe/Berlin] on",
                "2026-06-13T13:00:00+02:00[Europe/Berlin] off",
            ]
        );
        // Strictly after: from a boundary itself, the next one.
        assert_eq!(
            schedule
                .next_change(at("2026-06-08T08:00:00+02:00[Europe/Berlin]"))
                .map(|change| show(&schedule, change)),
            Some("2026-06-08T18:00:00+02:00[Europe/Berlin]".to_owned())
        );
        // From inside a window, its end; from Saturday afternoon, Monday morning.
        assert_eq!(
            schedule
                .next_change(at("2026-06-10T12:34:56+02:00[Europe/Berlin]"))
                .map(|change| show(&schedule, change)),
            Some("2026-06-10T18:00:00+02:00[Europe/Berlin]".to_owned())
        );
        assert_eq!(
            schedule
                .next_change(at("2026-06-13T15:00:00+02:00[Europe/Berlin]"))
                .map(|change| show(&schedule, change)),
            Some("2026-06-15T08:00:00+02:00[Europe/Berlin]".to_owned())
        );
    }

    #[test]
    fn a_window_ending_before_it_starts_runs_past_midnight() {
        let schedule = weekly("Europe/Berlin", &[("fri", "22:00", "06:00")], &[]);
        assert!(!active(
            &schedule,
            "2026-06-12T21:59:59+02:00[Europe/Berlin]"
        ));
        assert!(active(
            &schedule,
            "2026-06-12T22:00:00+02:00[Europe/Berlin]"
        ));
        assert!(active(
            &schedule,
            "2026-06-13T00:00:00+02:00[Europe/Berlin]"
        ));
        assert!(active(
            &schedule,
            "2026-06-13T05:59:59+02:00[Europe/Berlin]"
        ));
        assert!(!active(
            &schedule,
            "2026-06-13T06:00:00+02:00[Europe/Berlin]"
        ));
        // It starts on Fridays only: no Saturday night.
        assert!(!active(
            &schedule,
            "2026-06-13T23:00:00+02:00[Europe/Berlin]"
        ));
        assert_eq!(
            changes(
                &schedule,
                "2026-06-08T00:00:00+02:00[Europe/Berlin]",
                "2026-06-22T00:00:00+02:00[Europe/Berlin]"
            ),
            [
                "2026-06-12T22:00:00+02:00[Europe/Berlin] on",
                "2026-06-13T06:00:00+02:00[Europe/Berlin] off",
                "2026-06-19T22:00:00+02:00[Europe/Berlin] on",
                "2026-06-20T06:00:00+02:00[Europe/Berlin] off",
            ]
        );
    }

    #[test]
    fn twenty_four_hundred_is_the_end_of_the_day_and_touching_windows_merge() {
        let until_midnight = weekly(
            "Europe/Berlin",
            &[("mon", "20:00", "24:00"), ("tue", "00:00", "02:00")],
            &[],
        );
        let into_the_night = weekly("Europe/Berlin", &[("mon", "20:00", "02:00")], &[]);
        let up_to_zero = weekly(
            "Europe/Berlin",
            &[("mon", "20:00", "00:00"), ("tue", "00:00", "02:00")],
            &[],
        );
        let expected = [
            "2026-06-08T20:00:00+02:00[Europe/Berlin] on",
            "2026-06-09T02:00:00+02:00[Europe/Berlin] off",
        ];
        for schedule in [&until_midnight, &into_the_night, &up_to_zero] {
            assert_eq!(
                changes(
                    schedule,
                    "2026-06-08T00:00:00+02:00[Europe/Berlin]",
                    "2026-06-15T00:00:00+02:00[Europe/Berlin]"
                ),
                expected
            );
            assert!(active(schedule, "2026-06-08T23:59:59+02:00[Europe/Berlin]"));
            assert!(active(schedule, "2026-06-09T00:00:00+02:00[Europe/Berlin]"));
        }
        let whole_day = weekly("Europe/Berlin", &[("wed", "00:00", "24:00")], &[]);
        assert_eq!(
            changes(
                &whole_day,
                "2026-06-08T00:00:00+02:00[Europe/Berlin]",
                "2026-06-15T00:00:00+02:00[Europe/Berlin]"
            ),
            [
                "2026-06-10T00:00:00+02:00[Europe/Berlin] on",
                "2026-06-11T00:00:00+02:00[Europe/Berlin] off",
            ]
        );
    }

    #[test]
    fn overlapping_windows_are_one_stretch() {
        let schedule = weekly(
            "Europe/Berlin",
            &[
                ("mon", "10:00", "14:00"),
                ("mon", "08:00", "12:00"),
                ("mon", "14:00", "16:00"),
                ("mon mon", "09:00", "10:00"),
            ],
            &[],
        );
        assert_eq!(
            changes(
                &schedule,
                "2026-06-08T00:00:00+02:00[Europe/Berlin]",
                "2026-06-15T00:00:00+02:00[Europe/Berlin]"
            ),
            [
                "2026-06-08T08:00:00+02:00[Europe/Berlin] on",
                "2026-06-08T16:00:00+02:00[Europe/Berlin] off",
            ]
        );
    }

    #[test]
    fn saturday_only() {
        let schedule = weekly("Europe/Berlin", &[("sat", "09:00", "13:00")], &[]);
        for day in 8..=12 {
            assert!(!active(
                &schedule,
                &format!("2026-06-{day:02}T10:00:00+02:00[Europe/Berlin]")
            ));
        }
        assert!(active(
            &schedule,
            "2026-06-13T10:00:00+02:00[Europe/Berlin]"
        ));
        assert!(!active(
            &schedule,
            "2026-06-14T10:00:00+02:00[Europe/Berlin]"
        ));
        assert_eq!(
            changes(
                &schedule,
                "2026-06-13T13:00:00+02:00[Europe/Berlin]",
                "2026-06-27T00:00:00+02:00[Europe/Berlin]"
            ),
            [
                "2026-06-20T09:00:00+02:00[Europe/Berlin] on",
                "2026-06-20T13:00:00+02:00[Europe/Berlin] off",
            ]
        );
    }

    #[test]
    fn no_window_starts_on_an_exception_date() {
        let schedule = weekly(
            "Europe/Berlin",
            &[
                ("mon tue wed thu fri", "08:00", "18:00"),
                ("sat", "09:00", "13:00"),
            ],
            &["2026-12-25", "2026-12-26", "2026-12-25"],
        );
        // Christmas Day is a Friday, Boxing Day a Saturday.
        assert!(active(
            &schedule,
            "2026-12-24T10:00:00+01:00[Europe/Berlin]"
        ));
        assert!(!active(
            &schedule,
            "2026-12-25T10:00:00+01:00[Europe/Berlin]"
        ));
        assert!(!active(
            &schedule,
            "2026-12-26T10:00:00+01:00[Europe/Berlin]"
        ));
        assert_eq!(
            changes(
                &schedule,
                "2026-12-24T00:00:00+01:00[Europe/Berlin]",
                "2026-12-29T00:00:00+01:00[Europe/Berlin]"
            ),
            [
                "2026-12-24T08:00:00+01:00[Europe/Berlin] on",
                "2026-12-24T18:00:00+01:00[Europe/Berlin] off",
                "2026-12-28T08:00:00+01:00[Europe/Berlin] on",
                "2026-12-28T18:00:00+01:00[Europe/Berlin] off",
            ]
        );
    }

    #[test]
    fn an_overnight_window_into_an_exception_date_ends_at_its_normal_time() {
        let schedule = weekly(
            "Europe/Berlin",
            &[("mon tue wed thu fri sat sun", "22:00", "06:00")],
            &["2026-12-25"],
        );
        assert!(active(
            &schedule,
            "2026-12-25T05:00:00+01:00[Europe/Berlin]"
        ));
        assert!(!active(
            &schedule,
            "2026-12-25T23:00:00+01:00[Europe/Berlin]"
        ));
        assert_eq!(
            changes(
                &schedule,
                "2026-12-24T12:00:00+01:00[Europe/Berlin]",
                "2026-12-27T12:00:00+01:00[Europe/Berlin]"
            ),
            [
                "2026-12-24T22:00:00+01:00[Europe/Berlin] on",
                "2026-12-25T06:00:00+01:00[Europe/Berlin] off",
                "2026-12-26T22:00:00+01:00[Europe/Berlin] on",
                "2026-12-27T06:00:00+01:00[Europe/Berlin] off",
            ]
        );
    }

    #[test]
    fn a_schedule_covering_the_whole_week_changes_only_for_exceptions() {
        let always = weekly(
            "Europe/Berlin",
            &[("mon tue wed thu fri sat sun", "00:00", "24:00")],
            &[],
        );
        let now = at("2026-06-08T12:00:00+02:00[Europe/Berlin]");
        assert!(always.is_active(now));
        assert_eq!(always.next_change(now), None);

        // Two overnight halves cover the week too; a holiday months away still ends it.
        let halves = weekly(
            "Europe/Berlin",
            &[
                ("mon tue wed thu fri sat sun", "08:00", "20:00"),
                ("mon tue wed thu fri sat sun", "20:00", "08:00"),
            ],
            &["2027-01-01"],
        );
        assert_eq!(
            changes(
                &halves,
                "2026-06-08T12:00:00+02:00[Europe/Berlin]",
                "2028-01-01T00:00:00+01:00[Europe/Berlin]"
            ),
            [
                "2027-01-01T08:00:00+01:00[Europe/Berlin] off",
                "2027-01-02T08:00:00+01:00[Europe/Berlin] on",
            ]
        );
        assert_eq!(
            halves.next_change(at("2027-01-02T08:00:00+01:00[Europe/Berlin]")),
            None
        );
    }

    #[test]
    fn exceptions_on_every_window_day_postpone_the_next_change() {
        let schedule = weekly(
            "Europe/Berlin",
            &[("mon", "08:00", "18:00")],
            &[
                "2026-06-15",
                "2026-06-22",
                "2026-06-29",
                "2026-07-06",
                "2026-07-13",
            ],
        );
        assert_eq!(
            changes(
                &schedule,
                "2026-06-08T10:00:00+02:00[Europe/Berlin]",
                "2026-08-01T00:00:00+02:00[Europe/Berlin]"
            ),
            [
                "2026-06-08T18:00:00+02:00[Europe/Berlin] off",
                "2026-07-20T08:00:00+02:00[Europe/Berlin] on",
                "2026-07-20T18:00:00+02:00[Europe/Berlin] off",
                "2026-07-27T08:00:00+02:00[Europe/Berlin] on",
                "2026-07-27T18:00:00+02:00[Europe/Berlin] off",
            ]
        );
    }

    #[test]
    fn spring_forward_in_berlin_moves_boundaries_in_the_gap_to_three_o_clock() {
        // 2026-03-29 (a Sunday): 02:00 CET jumps to 03:00 CEST.
        let in_gap = weekly("Europe/Berlin", &[("sun", "02:30", "05:00")], &[]);
        assert_eq!(
            changes(
                &in_gap,
                "2026-03-28T12:00:00+01:00[Europe/Berlin]",
                "2026-03-30T00:00:00+02:00[Europe/Berlin]"
            ),
            [
                "2026-03-29T03:00:00+02:00[Europe/Berlin] on",
                "2026-03-29T05:00:00+02:00[Europe/Berlin] off",
            ]
        );
        assert!(!active(&in_gap, "2026-03-29T01:59:59+01:00[Europe/Berlin]"));

        let ending_in_gap = weekly("Europe/Berlin", &[("sun", "01:00", "02:30")], &[]);
        assert_eq!(
            changes(
                &ending_in_gap,
                "2026-03-28T12:00:00+01:00[Europe/Berlin]",
                "2026-03-30T00:00:00+02:00[Europe/Berlin]"
            ),
            [
                "2026-03-29T01:00:00+01:00[Europe/Berlin] on",
                "2026-03-29T03:00:00+02:00[Europe/Berlin] off",
            ]
        );

        // A window wholly inside the skipped hour does not happen that night.
        let inside_gap = weekly("Europe/Berlin", &[("sun", "02:10", "02:40")], &[]);
        assert_eq!(
            changes(
                &inside_gap,
                "2026-03-28T12:00:00+01:00[Europe/Berlin]",
                "2026-04-06T00:00:00+02:00[Europe/Berlin]"
            ),
            [
                "2026-04-05T02:10:00+02:00[Europe/Berlin] on",
                "2026-04-05T02:40:00+02:00[Europe/Berlin] off",
            ]
        );

        // The night of the change is an hour shorter.
        let overnight = weekly("Europe/Berlin", &[("sat", "22:00", "06:00")], &[]);
        let start = at("2026-03-28T22:00:00+01:00[Europe/Berlin]");
        let end = overnight.next_change(start);
        assert_eq!(
            end.map(|end| show(&overnight, end)),
            Some("2026-03-29T06:00:00+02:00[Europe/Berlin]".to_owned())
        );
        assert_eq!(end.map(|end| end.duration_since(start)), Some(hours(7)));
    }

    #[test]
    fn fall_back_in_berlin_takes_boundaries_at_their_first_occurrence() {
        // 2026-10-25 (a Sunday): 03:00 CEST goes back to 02:00 CET.
        let in_fold = weekly("Europe/Berlin", &[("sun", "02:30", "04:00")], &[]);
        assert_eq!(
            changes(
                &in_fold,
                "2026-10-24T12:00:00+02:00[Europe/Berlin]",
                "2026-10-26T00:00:00+01:00[Europe/Berlin]"
            ),
            [
                "2026-10-25T02:30:00+02:00[Europe/Berlin] on",
                "2026-10-25T04:00:00+01:00[Europe/Berlin] off",
            ]
        );
        // Through the repeated hour without a break.
        assert!(active(&in_fold, "2026-10-25T02:15:00+01:00[Europe/Berlin]"));

        // Ended at the first 02:30, not active again at the second.
        let ending_in_fold = weekly("Europe/Berlin", &[("sun", "01:00", "02:30")], &[]);
        assert_eq!(
            changes(
                &ending_in_fold,
                "2026-10-24T12:00:00+02:00[Europe/Berlin]",
                "2026-10-26T00:00:00+01:00[Europe/Berlin]"
            ),
            [
                "2026-10-25T01:00:00+02:00[Europe/Berlin] on",
                "2026-10-25T02:30:00+02:00[Europe/Berlin] off",
            ]
        );
        assert!(!active(
            &ending_in_fold,
            "2026-10-25T02:00:00+01:00[Europe/Berlin]"
        ));
        assert!(!active(
            &ending_in_fold,
            "2026-10-25T02:45:00+01:00[Europe/Berlin]"
        ));

        // Inside the repeated hour: once, on the first pass.
        let inside_fold = weekly("Europe/Berlin", &[("sun", "02:10", "02:40")], &[]);
        assert_eq!(
            changes(
                &inside_fold,
                "2026-10-24T12:00:00+02:00[Europe/Berlin]",
                "2026-10-26T00:00:00+01:00[Europe/Berlin]"
            ),
            [
                "2026-10-25T02:10:00+02:00[Europe/Berlin] on",
                "2026-10-25T02:40:00+02:00[Europe/Berlin] off",
            ]
        );

        // Until the clock shows 03:00: an hour and a half that night.
        let to_three = weekly("Europe/Berlin", &[("sun", "02:30", "03:00")], &[]);
        assert_eq!(
            changes(
                &to_three,
                "2026-10-24T12:00:00+02:00[Europe/Berlin]",
                "2026-10-26T00:00:00+01:00[Europe/Berlin]"
            ),
            [
                "2026-10-25T02:30:00+02:00[Europe/Berlin] on",
                "2026-10-25T03:00:00+01:00[Europe/Berlin] off",
            ]
        );

        // The night of the change is an hour longer.
        let overnight = weekly("Europe/Berlin", &[("sat", "22:00", "06:00")], &[]);
        let start = at("2026-10-24T22:00:00+02:00[Europe/Berlin]");
        let end = overnight.next_change(start);
        assert_eq!(
            end.map(|end| show(&overnight, end)),
            Some("2026-10-25T06:00:00+01:00[Europe/Berlin]".to_owned())
        );
        assert_eq!(end.map(|end| end.duration_since(start)), Some(hours(9)));
    }

    #[test]
    fn spring_forward_and_fall_back_in_new_york() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT; 2026-11-01: 02:00 EDT goes back to 01:00 EST.
        let schedule = weekly(
            "America/New_York",
            &[("sun", "02:30", "04:00"), ("sat", "22:00", "06:00")],
            &[],
        );
        assert_eq!(
            changes(
                &schedule,
                "2026-03-07T12:00:00-05:00[America/New_York]",
                "2026-03-09T00:00:00-04:00[America/New_York]"
            ),
            [
                "2026-03-07T22:00:00-05:00[America/New_York] on",
                "2026-03-08T06:00:00-04:00[America/New_York] off",
            ]
        );
        let in_gap = weekly("America/New_York", &[("sun", "02:30", "04:00")], &[]);
        assert_eq!(
            changes(
                &in_gap,
                "2026-03-07T12:00:00-05:00[America/New_York]",
                "2026-03-09T00:00:00-04:00[America/New_York]"
            ),
            [
                "2026-03-08T03:00:00-04:00[America/New_York] on",
                "2026-03-08T04:00:00-04:00[America/New_York] off",
            ]
        );
        let overnight = weekly("America/New_York", &[("sat", "22:00", "06:00")], &[]);
        let start = at("2026-03-07T22:00:00-05:00[America/New_York]");
        assert_eq!(
            overnight
                .next_change(start)
                .map(|end| end.duration_since(start)),
            Some(hours(7))
        );
        let start = at("2026-10-31T22:00:00-04:00[America/New_York]");
        assert_eq!(
            overnight
                .next_change(start)
                .map(|end| end.duration_since(start)),
            Some(hours(9))
        );

        // The repeated hour is 01:00-02:00.
        let in_fold = weekly("America/New_York", &[("sun", "01:30", "03:00")], &[]);
        assert_eq!(
            changes(
                &in_fold,
                "2026-10-31T12:00:00-04:00[America/New_York]",
                "2026-11-02T00:00:00-05:00[America/New_York]"
            ),
            [
                "2026-11-01T01:30:00-04:00[America/New_York] on",
                "2026-11-01T03:00:00-05:00[America/New_York] off",
            ]
        );
        let ending_in_fold = weekly("America/New_York", &[("sun", "00:30", "01:30")], &[]);
        assert_eq!(
            changes(
                &ending_in_fold,
                "2026-10-31T12:00:00-04:00[America/New_York]",
                "2026-11-09T00:00:00-05:00[America/New_York]"
            ),
            [
                "2026-11-01T00:30:00-04:00[America/New_York] on",
                "2026-11-01T01:30:00-04:00[America/New_York] off",
                "2026-11-08T00:30:00-05:00[America/New_York] on",
                "2026-11-08T01:30:00-05:00[America/New_York] off",
            ]
        );
        assert!(!active(
            &ending_in_fold,
            "2026-11-01T01:15:00-05:00[America/New_York]"
        ));
    }

    #[test]
    fn midnight_changes_in_santiago() {
        // 2026-04-05 00:00 -03 goes back to Saturday 23:00 -04: Saturday's last hour repeats.
        let schedule = weekly(
            "America/Santiago",
            &[("sat", "22:00", "24:00"), ("sun", "00:00", "06:00")],
            &[],
        );
        assert_eq!(
            changes(
                &schedule,
                "2026-04-04T12:00:00-03:00[America/Santiago]",
                "2026-04-06T00:00:00-04:00[America/Santiago]"
            ),
            [
                "2026-04-04T22:00:00-03:00[America/Santiago] on",
                "2026-04-05T06:00:00-04:00[America/Santiago] off",
            ]
        );
        // Saturday's local date again, inside Sunday's window.
        assert!(active(
            &schedule,
            "2026-04-04T23:30:00-04:00[America/Santiago]"
        ));
        // A window ending at midnight runs until the clock first shows Sunday 00:00: through
        // the repeated hour, like 02:30-03:00 on a European fall-back night.
        let saturday_only = weekly("America/Santiago", &[("sat", "22:00", "24:00")], &[]);
        assert!(active(
            &saturday_only,
            "2026-04-04T23:30:00-04:00[America/Santiago]"
        ));
        assert_eq!(
            saturday_only
                .next_change(at("2026-04-04T22:00:00-03:00[America/Santiago]"))
                .map(|change| show(&saturday_only, change)),
            Some("2026-04-05T00:00:00-04:00[America/Santiago]".to_owned())
        );

        // 2026-09-06 00:00 -04 jumps to 01:00 -03: Sunday has no midnight.
        assert_eq!(
            changes(
                &schedule,
                "2026-09-05T12:00:00-04:00[America/Santiago]",
                "2026-09-07T00:00:00-03:00[America/Santiago]"
            ),
            [
                "2026-09-05T22:00:00-04:00[America/Santiago] on",
                "2026-09-06T06:00:00-03:00[America/Santiago] off",
            ]
        );
        assert_eq!(
            saturday_only
                .next_change(at("2026-09-05T22:00:00-04:00[America/Santiago]"))
                .map(|change| show(&saturday_only, change)),
            Some("2026-09-06T01:00:00-03:00[America/Santiago]".to_owned())
        );
    }

    #[test]
    fn without_a_timezone_the_site_zone_applies() {
        let source = "[[schedules]]\nid = \"open\"\n[[schedules.windows]]\ndays = [\"mon\"]\n\
                      from = \"08:00\"\nto = \"18:00\"\n";
        let config = &parse(source)[0];
        let schedule = Schedule::compile(config, &zone("America/New_York"))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(schedule.time_zone().iana_name(), Some("America/New_York"));
        assert!(!schedule.is_active(at("2026-06-08T08:00:00+02:00[Europe/Berlin]")));
        assert!(schedule.is_active(at("2026-06-08T08:00:00-04:00[America/New_York]")));
    }

    #[test]
    fn the_example_in_the_module_documentation_compiles() {
        let example: String = include_str!("schedule.rs")
            .lines()
            .skip_while(|line| *line != "//! ```toml")
            .skip(1)
            .take_while(|line| *line != "//! ```")
            .map(|line| format!("{}\n", line.trim_start_matches("//!").trim_start()))
            .collect();
        assert!(example.contains("business-hours"), "{example}");
        let schedule = compile(&example).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(schedule.id(), "business-hours");
        assert!(active(
            &schedule,
            "2026-12-24T12:00:00+01:00[Europe/Berlin]"
        ));
        assert!(!active(
            &schedule,
            "2026-12-25T12:00:00+01:00[Europe/Berlin]"
        ));
    }

    #[test]
    fn unknown_fields_are_refused_when_parsing() {
        let source = "[[schedules]]\nid = \"x\"\n[[schedules.windows]]\ndays = [\"mon\"]\n\
                      from = \"08:00\"\nuntil = \"18:00\"\n";
        let Err(error) = toml::from_str::<Site>(source) else {
            panic!("accepted an unknown field");
        };
        assert!(error.message().contains("unknown field `until`"), "{error}");
    }

    /// The byte range of the first `needle` in `source`.
    fn span_of(source: &str, needle: &str) -> Range<usize> {
        let start = source
            .find(needle)
            .unwrap_or_else(|| panic!("`{needle}` not in the source"));
        start..start + needle.len()
    }

    #[test]
    fn every_problem_is_reported_with_its_span() {
        let source = r#"
[[schedules]]
id = "Business Hours"
timezone = "Europe/Berln"
[[schedules.windows]]
days = ["mon", "Tue", "wednesday"]
from = "8am"
to = "25:00"
[[schedules.windows]]
days = []
from = "24:00"
to = "18:60"
[[schedules.windows]]
days = ["sat"]
from = "09:00"
to = "09:00"
[[schedules.windows]]
days = ["sun"]
from = "00:00"
to = "24:00"
[[schedules.exceptions]]
dates = ["2026-12-25", "2026-02-30", "25.12.2026", "2026-12-25T00:00"]
"#;
        let problems = refused(source);
        let found: Vec<(Range<usize>, ScheduleError)> = problems
            .iter()
            .map(|problem| (problem.span.clone(), problem.error.clone()))
            .collect();
        let bad_time = |field, text: &str| ScheduleError::BadTime {
            field,
            text: text.to_owned(),
        };
        assert_eq!(
            found,
            [
                (
                    span_of(source, "\"Business Hours\""),
                    ScheduleError::BadId(IdError::BadCharacter("Business Hours".to_owned()))
                ),
                (
                    span_of(source, "\"Europe/Berln\""),
                    ScheduleError::UnknownTimeZone("Europe/Berln".to_owned())
                ),
                (
                    span_of(source, "\"Tue\""),
                    ScheduleError::BadDay("Tue".to_owned())
                ),
                (
                    span_of(source, "\"wednesday\""),
                    ScheduleError::BadDay("wednesday".to_owned())
                ),
                (span_of(source, "\"8am\""), bad_time("from", "8am")),
                (span_of(source, "\"25:00\""), bad_time("to", "25:00")),
                (span_of(source, "[]"), ScheduleError::NoDays),
                (
                    span_of(source, "\"24:00\""),
                    ScheduleError::StartsAtEndOfDay
                ),
                (span_of(source, "\"18:60\""), bad_time("to", "18:60")),
                (
                    span_of(source, "to = \"09:00\"").start + 5
                        ..span_of(source, "to = \"09:00\"").end,
                    ScheduleError::EmptyWindow("09:00".to_owned())
                ),
                (
                    span_of(source, "\"2026-02-30\""),
                    ScheduleError::BadDate("2026-02-30".to_owned())
                ),
                (
                    span_of(source, "\"25.12.2026\""),
                    ScheduleError::BadDate("25.12.2026".to_owned())
                ),
                (
                    span_of(source, "\"2026-12-25T00:00\""),
                    ScheduleError::BadDate("2026-12-25T00:00".to_owned())
                ),
            ]
        );
        assert_eq!(
            problems[1].to_string(),
            "schedule `Business Hours`: timezone: `Europe/Berln` is not a known time zone: use \
             an IANA name such as `Europe/Berlin` or `America/New_York` (the names under \
             /usr/share/zoneinfo), or leave `timezone` out to use the site's zone"
        );
    }

    #[test]
    fn a_schedule_without_windows_is_refused() {
        let source = "[[schedules]]\nid = \"nothing\"\n";
        let problems = refused(source);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].span, span_of(source, "\"nothing\""));
        assert_eq!(problems[0].error, ScheduleError::NoWindows);
    }

    #[test]
    fn times_and_dates_parse_strictly() {
        assert_eq!(parse_time("00:00"), Some(0));
        assert_eq!(parse_time("08:30"), Some(510));
        assert_eq!(parse_time("23:59"), Some(1439));
        assert_eq!(parse_time("24:00"), Some(1440));
        for bad in [
            "24:01", "8:00", "08:0", "0800", "08:00:00", "-1:00", "+8:00", " 08:00", "",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(
            parse_date("2028-02-29"),
            Some(jiff::civil::date(2028, 2, 29))
        );
        for bad in [
            "2026-02-29",
            "2026-1-05",
            "20261225",
            "2026-12-25-",
            "+2026-12-25",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    /// Schedules for the property test: overnight windows, windows in the daylight-saving
    /// hours, whole-week coverage and exceptions.
    const PROPERTY_SCHEDULES: &[(&[WindowText], &[&str])] = &[
        (
            &[
                ("mon tue wed thu fri", "08:00", "18:00"),
                ("sat", "09:00", "13:00"),
            ],
            &["2026-12-25", "2026-12-26", "2027-01-01"],
        ),
        (
            &[
                ("mon tue wed thu fri sat sun", "22:00", "06:00"),
                ("sun", "02:30", "02:45"),
                ("sun", "01:59", "02:01"),
            ],
            &["2026-03-29", "2026-11-01"],
        ),
        (
            &[("mon tue wed thu fri sat sun", "00:00", "24:00")],
            &["2026-06-01", "2027-03-28"],
        ),
        (
            &[
                ("mon tue wed thu fri sat sun", "08:00", "20:00"),
                ("mon tue wed thu fri sat sun", "20:00", "08:00"),
            ],
            &["2026-10-25", "2026-10-26"],
        ),
        (
            &[
                ("fri", "23:30", "00:30"),
                ("sat", "02:00", "03:00"),
                ("sun", "01:00", "03:00"),
                ("wed", "00:00", "24:00"),
                ("wed", "18:00", "06:00"),
                ("thu", "02:15", "02:30"),
            ],
            &["2026-04-01"],
        ),
    ];

    const PROPERTY_ZONES: &[&str] = &[
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "America/Santiago",
        "America/Havana",
        "UTC",
    ];

    /// Whether the wall clock at `local` falls inside a window, as the configuration reads:
    /// a model of [`Schedule::is_active`] away from daylight-saving changes.
    fn active_by_the_wall_clock(schedule: &Schedule, local: DateTime) -> bool {
        let minute = u16::try_from(local.hour()).unwrap_or_else(|e| panic!("{e}")) * 60
            + u16::try_from(local.minute()).unwrap_or_else(|e| panic!("{e}"));
        let windows_on = |day: Date| -> &[LocalWindow] {
            if schedule.exceptions.contains(&day) {
                return &[];
            }
            let weekday = day.weekday().to_monday_zero_offset().unsigned_abs();
            &schedule.windows_by_weekday[usize::from(weekday)]
        };
        let today = local.date();
        let yesterday = today.yesterday().unwrap_or_else(|e| panic!("{e}"));
        windows_on(today)
            .iter()
            .any(|window| window.start <= minute && minute < window.end)
            || windows_on(yesterday)
                .iter()
                .any(|window| minute + MINUTES_PER_DAY < window.end)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn is_active_holds_until_next_change_and_flips_there(
            schedule_index in 0..PROPERTY_SCHEDULES.len(),
            zone_index in 0..PROPERTY_ZONES.len(),
            near_a_transition in any::<bool>(),
            transition_index in 0..8usize,
            seconds_from_transition in -150_000i64..150_000,
            // 2025-01-01 to 2029-01-01.
            seconds_anywhere in 1_735_689_600i64..1_861_920_000,
            nanoseconds in 0..1_000_000_000i32,
        ) {
            let (windows, exceptions) = PROPERTY_SCHEDULES[schedule_index];
            let zone_name = PROPERTY_ZONES[zone_index];
            let schedule = weekly(zone_name, windows, exceptions);
            let zone = zone(zone_name);
            let start_of_2025 = at("2025-01-01T00:00:00+00:00[UTC]");
            let transition = zone.following(start_of_2025).nth(transition_index);
            let seconds = match transition {
                Some(transition) if near_a_transition => {
                    transition.timestamp().as_second() + seconds_from_transition
                }
                _ => seconds_anywhere,
            };
            let now = Timestamp::new(seconds, nanoseconds).unwrap_or_else(|e| panic!("{e}"));
            let now_active = schedule.is_active(now);

            // Away from daylight-saving changes, is_active is the wall clock read naively.
            let two_days = SignedDuration::from_hours(48);
            let quiet = zone
                .following(now.checked_sub(two_days).unwrap_or_else(|e| panic!("{e}")))
                .next()
                .is_none_or(|transition| transition.timestamp().duration_since(now) > two_days);
            if quiet {
                prop_assert_eq!(
                    now_active,
                    active_by_the_wall_clock(&schedule, zone.to_datetime(now)),
                    "at {}", show(&schedule, now)
                );
            }

            let nanos = |instant: Timestamp| instant.as_nanosecond();
            let instant = |nanos: i128| {
                Timestamp::from_nanosecond(nanos).unwrap_or_else(|e| panic!("{e}"))
            };
            match schedule.next_change(now) {
                Some(change) => {
                    prop_assert!(change > now);
                    prop_assert_ne!(schedule.is_active(change), now_active,
                        "no flip at {} after {}", show(&schedule, change), show(&schedule, now));
                    let length = nanos(change) - nanos(now);
                    let mut samples: Vec<i128> = (1..=8).map(|k| nanos(now) + length * k / 9).collect();
                    samples.push(nanos(change) - 1);
                    for sample in samples {
                        prop_assert_eq!(schedule.is_active(instant(sample)), now_active,
                            "change at {} before {} (from {})", show(&schedule, instant(sample)),
                            show(&schedule, change), show(&schedule, now));
                    }
                }
                None => {
                    for hours in (1..=2400).step_by(7) {
                        let later = now.checked_add(SignedDuration::from_hours(hours))
                            .unwrap_or_else(|e| panic!("{e}"));
                        prop_assert_eq!(schedule.is_active(later), now_active,
                            "no change after {} but one by {}", show(&schedule, now),
                            show(&schedule, later));
                    }
                }
            }
        }
    }
}
