//! What `gatehouse-modbus-sim --demo` serves: values that change over time, so a demo has
//! something to show. Every other address is plain memory.
//!
//! | table            | address | meaning                                                       |
//! |------------------|---------|---------------------------------------------------------------|
//! | discrete input   | 0       | door contact: 0 closed, 1 open; toggles every 10 s, closed first |
//! | holding register | 0..=1   | temperature in °C, f32, high word first, drifting about 21.0  |
//! | input register   | 10      | counter, +1 every second, wrapping at 65535                   |

use std::f64::consts::TAU;

use super::ModbusSim;

/// Discrete input holding the door contact (1 = open).
pub const DOOR_CONTACT: u16 = 0;
/// Seconds the door stays closed, then open, then closed...
pub const DOOR_PERIOD_SECONDS: u64 = 10;
/// First of the two holding registers holding the temperature.
pub const TEMPERATURE: u16 = 0;
/// Input register holding the seconds counter.
pub const COUNTER: u16 = 10;

/// Sets the demo values of `unit` as they are `second` seconds after the demo started.
pub fn apply(sim: &ModbusSim, unit: u8, second: u64) {
    sim.set_discrete(unit, DOOR_CONTACT, door_open(second));
    sim.set_holding_f32(unit, TEMPERATURE, temperature(second));
    // Wraps like a device's 16-bit counter.
    sim.set_input(unit, COUNTER, second as u16);
}

/// Whether the door is open at `second`.
pub fn door_open(second: u64) -> bool {
    (second / DOOR_PERIOD_SECONDS) % 2 == 1
}

/// The temperature at `second`: 21.0 °C plus a slow swing of ±0.5 over 5 minutes and a ripple of
/// ±0.1, so it stays within 20.4..=21.6 °C and changes every second.
pub fn temperature(second: u64) -> f32 {
    let t = second as f64;
    (21.0 + 0.5 * (TAU * t / 300.0).sin() + 0.1 * (TAU * t / 17.0).sin()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_door_toggles_every_ten_seconds_starting_closed() {
        let states: Vec<bool> = [0, 9, 10, 19, 20].into_iter().map(door_open).collect();
        assert_eq!(states, [false, false, true, true, false]);
    }

    #[test]
    fn the_temperature_drifts_near_21_degrees() {
        let readings: Vec<f32> = (0..600).map(temperature).collect();
        assert!(
            readings.iter().all(|t| (20.4..=21.6).contains(t)),
            "{readings:?}"
        );
        assert!(
            readings.windows(2).all(|pair| pair[0] != pair[1]),
            "changes every second"
        );
    }

    #[tokio::test]
    async fn apply_sets_the_documented_addresses() -> anyhow::Result<()> {
        let sim = ModbusSim::start("127.0.0.1:0".parse()?).await?;
        apply(&sim, 3, 65_556);
        assert!(
            sim.discrete(3, DOOR_CONTACT),
            "second 65556 is in an open period"
        );
        assert_eq!(sim.holding_f32(3, TEMPERATURE), temperature(65_556));
        assert_eq!(sim.input(3, COUNTER), 20, "the counter wrapped");
        Ok(())
    }
}
