//! Gatehouse's hardware-in-the-loop harness: simulated and third-party devices, end-to-end
//! scenarios, and the load and latency harness.
//!
//! Layout:
//! - [`broker`]: a real Mosquitto broker running the configuration in `relay/deploy/`, with
//!   the fleet CA, client certificates and MQTT v5 sessions for tests.
//! - [`modbus_sim`]: an in-process Modbus TCP device with runtime fault injection.
//! - [`onvif_sim`]: a simulated ONVIF camera (device, media and PullPoint events services)
//!   that checks WS-Security digests, with events queued by the test and injected faults.
//! - [`pymodbus_peer`]: a third-party Modbus TCP or RTU device (pymodbus, in `peers/`) driven
//!   from Rust.
//! - [`serial_line`]: a socat pseudo-terminal pair as an RS-485 line, and a scripted RTU
//!   device for broken answers.
//! - [`test_camera`]: an RTSP camera (gstreamer-rtsp-server, `src/bin/gatehouse-test-camera.rs`)
//!   that can change its picture, stall and come back, and a camera that answers junk.
//! - [`video_check`]: gst-discoverer and a decoder to check the clips the agent writes.
//! - [`glass`]: a wall-clock bar code the test camera draws on each frame, and the page-side
//!   reader that turns it into glass-to-screen latency.
//! - [`browser`]: headless Chromium driven over the DevTools protocol.
//! - [`small_disk`]: a size-limited tmpfs for full-disk tests.
//! - [`child_peer`]: a peer device in a child process, driven by lines on its stdin.
//! - `src/bin/gatehouse-modbus-sim.rs`: simulated devices for the demo and benchmarks.

#![forbid(unsafe_code)]

pub mod broker;
pub mod browser;
pub mod child_peer;
pub mod cpu;
pub mod glass;
pub mod harness;
pub mod modbus_sim;
pub mod onvif_sim;
pub mod pymodbus_peer;
pub mod relay;
pub mod serial_line;
pub mod small_disk;
pub mod test_camera;
pub mod video_check;
