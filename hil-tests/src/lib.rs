//! Gatehouse's hardware-in-the-loop harness: simulated and third-party devices, end-to-end
//! scenarios, and the load and latency harness.
//!
//! Layout:
//! - [`modbus_sim`]: an in-process Modbus TCP device with runtime fault injection.
//! - [`pymodbus_peer`]: a third-party Modbus TCP device (pymodbus, in `peers/`) driven from Rust.
//! - `src/bin/gatehouse-modbus-sim.rs`: simulated devices for the demo and benchmarks.

#![forbid(unsafe_code)]

pub mod harness;
pub mod modbus_sim;
pub mod pymodbus_peer;
