//! What the site consists of (from the config), joined with the live state for responses.

use gatehouse_protocol::{DeviceId, DeviceStatus, PointId, Quality, Value, ZoneId};
use jiff::Timestamp;
use serde::Serialize;

use crate::config::Config;
use crate::live::Live;

/// A device as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeviceView {
    pub id: DeviceId,
    pub name: Option<String>,
    /// The adapter that drives it (`modbus_tcp`, `modbus_rtu`, `zigbee2mqtt`, `bacnet_ip`).
    pub protocol: &'static str,
    pub address: String,
    /// `null` until the adapter has tried to connect.
    pub status: Option<DeviceStatus>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub status_since: Option<Timestamp>,
    /// Why the device is offline or degraded.
    pub reason: Option<String>,
    pub points: Vec<PointId>,
}

/// A point as the API shows it: its description and latest value.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PointView {
    pub id: PointId,
    pub device: DeviceId,
    pub zone: Option<ZoneId>,
    pub unit: Option<String>,
    pub writable: bool,
    /// `null` until read, or when the last read failed.
    pub value: Option<Value>,
    /// `null` until the point has been read once.
    pub quality: Option<Quality>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub observed_at: Option<Timestamp>,
}

struct PointDescription {
    id: PointId,
    device: DeviceId,
    zone: Option<ZoneId>,
    unit: Option<String>,
    writable: bool,
}

struct DeviceDescription {
    id: DeviceId,
    name: Option<String>,
    protocol: &'static str,
    address: String,
}

/// The devices, points and zones of the site, in config order.
pub struct Catalog {
    devices: Vec<DeviceDescription>,
    points: Vec<PointDescription>,
    zones: Vec<(ZoneId, String)>,
}

impl Catalog {
    pub fn from_config(config: &Config) -> Self {
        let mut catalog = Catalog {
            devices: Vec::new(),
            points: Vec::new(),
            zones: config
                .zones
                .iter()
                .map(|zone| (zone.id.get_ref().clone(), zone.name.clone()))
                .collect(),
        };
        for device in &config.modbus.devices {
            let (protocol, address) = config.modbus.link_of(device);
            catalog.devices.push(DeviceDescription {
                id: device.id.get_ref().clone(),
                name: device.name.clone(),
                protocol,
                address,
            });
            for point in &device.points {
                catalog.points.push(PointDescription {
                    id: point.id.get_ref().clone(),
                    device: device.id.get_ref().clone(),
                    zone: device.point_zone(point),
                    unit: point.unit.clone(),
                    writable: point.writable,
                });
            }
        }
        for device in &config.zigbee.devices {
            let bridge = config
                .zigbee
                .bridge_of(device)
                .and_then(|id| config.zigbee.bridges.iter().find(|b| b.id.get_ref() == id));
            catalog.devices.push(DeviceDescription {
                id: device.id.get_ref().clone(),
                name: device.name.clone(),
                protocol: "zigbee2mqtt",
                address: format!(
                    "{} {}, {}",
                    bridge.map_or("", |b| b.broker.get_ref().as_str()),
                    bridge.map_or("", |b| b.base_topic.get_ref().as_str()),
                    device.describe()
                ),
            });
            for point in &device.points {
                catalog.points.push(PointDescription {
                    id: point.id.get_ref().clone(),
                    device: device.id.get_ref().clone(),
                    zone: device.point_zone(point),
                    unit: point.unit(),
                    writable: point.writable,
                });
            }
        }
        for device in &config.bacnet.devices {
            catalog.devices.push(DeviceDescription {
                id: device.id.get_ref().clone(),
                name: device.name.clone(),
                protocol: "bacnet_ip",
                address: device.describe(),
            });
            for point in &device.points {
                catalog.points.push(PointDescription {
                    id: point.id.get_ref().clone(),
                    device: device.id.get_ref().clone(),
                    zone: device.point_zone(point),
                    unit: point.unit.clone(),
                    writable: point.writable,
                });
            }
        }
        for camera in &config.video.cameras {
            let (protocol, address) = match (&camera.url, &camera.onvif) {
                (_, Some(onvif)) => ("onvif", onvif.get_ref().clone()),
                (Some(url), None) => ("rtsp", url.get_ref().clone()),
                (None, None) => ("rtsp", String::new()),
            };
            catalog.devices.push(DeviceDescription {
                id: camera.id.get_ref().clone(),
                name: None,
                protocol,
                address,
            });
            for point in camera.event_points() {
                catalog.points.push(PointDescription {
                    id: point,
                    device: camera.id.get_ref().clone(),
                    zone: camera.zone.as_ref().map(|zone| zone.get_ref().clone()),
                    unit: None,
                    writable: false,
                });
            }
        }
        catalog
    }

    pub fn devices(&self, live: &Live) -> Vec<DeviceView> {
        self.devices
            .iter()
            .map(|d| self.device_view(d, live))
            .collect()
    }

    pub fn device(&self, id: &DeviceId, live: &Live) -> Option<DeviceView> {
        self.devices
            .iter()
            .find(|d| &d.id == id)
            .map(|d| self.device_view(d, live))
    }

    fn device_view(&self, device: &DeviceDescription, live: &Live) -> DeviceView {
        let state = live.device(&device.id);
        DeviceView {
            id: device.id.clone(),
            name: device.name.clone(),
            protocol: device.protocol,
            address: device.address.clone(),
            status: state.as_ref().map(|s| s.status),
            status_since: state.as_ref().map(|s| s.since),
            reason: state.and_then(|s| s.reason),
            points: self
                .points
                .iter()
                .filter(|p| p.device == device.id)
                .map(|p| p.id.clone())
                .collect(),
        }
    }

    pub fn points(&self, device: Option<&DeviceId>, live: &Live) -> Vec<PointView> {
        self.points
            .iter()
            .filter(|p| device.is_none_or(|d| &p.device == d))
            .map(|p| point_view(p, live))
            .collect()
    }

    pub fn point(&self, id: &PointId, live: &Live) -> Option<PointView> {
        self.points
            .iter()
            .find(|p| &p.id == id)
            .map(|p| point_view(p, live))
    }

    /// The device owning `point` and whether the point is writable.
    pub fn point_owner(&self, point: &PointId) -> Option<(&DeviceId, bool)> {
        self.points
            .iter()
            .find(|p| &p.id == point)
            .map(|p| (&p.device, p.writable))
    }

    /// Every zone's id and name.
    pub fn zones(&self) -> impl Iterator<Item = (&ZoneId, &str)> {
        self.zones.iter().map(|(id, name)| (id, name.as_str()))
    }

    /// The zone of a point, if it has one.
    pub fn point_zone(&self, point: &PointId) -> Option<&ZoneId> {
        self.points
            .iter()
            .find(|p| &p.id == point)
            .and_then(|p| p.zone.as_ref())
    }

    pub fn has_device(&self, id: &DeviceId) -> bool {
        self.devices.iter().any(|d| &d.id == id)
    }
}

fn point_view(point: &PointDescription, live: &Live) -> PointView {
    let state = live.point(&point.id);
    PointView {
        id: point.id.clone(),
        device: point.device.clone(),
        zone: point.zone.clone(),
        unit: point.unit.clone(),
        writable: point.writable,
        value: state.as_ref().and_then(|s| s.value.clone()),
        quality: state.as_ref().map(|s| s.quality.clone()),
        observed_at: state.map(|s| s.observed_at),
    }
}
