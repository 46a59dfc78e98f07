//! Gatehouse's hardware-in-the-loop harness: simulated and third-party devices, end-to-end
//! scenarios, and the load and latency harness.
//!
//! Layout:
//! - [`broker`]: a real Mosquitto broker running the configuration in `relay/deploy/`, with
//!   the fleet CA, client certificates and MQTT v5 sessions for tests.
//! - [`modbus_sim`]: an in-process Modbus TCP device with runtime fault injection.
//! - [`pymodbus_peer`]: a third-party Modbus TCP or RTU device (pymodbus, in `peers/`) driven
//!   from Rust.
//! - [`serial_line`]: a socat pseudo-terminal pair as an RS-485 line, and a scripted RTU
//!   device for broken answers.
//! - `src/bin/gatehouse-modbus-sim.rs`: simulated devices for the demo and benchmarks.

#![forbid(unsafe_code)]

pub mod broker;
pub mod harness;
pub mod modbus_sim;
pub mod pymodbus_peer;
pub mod relay;
pub mod serial_line;
