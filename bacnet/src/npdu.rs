//! NPDUs (clause 6.2): version, control octet, optional destination and source network
//! addresses, hop count; then either an APDU or a network layer message.
//!
//! Network layer messages (Who-Is-Router-To-Network, I-Am-Router-To-Network, ...) are
//! recognised and kept as raw octets: a client on one B/IP network has nothing to do with
//! them but skip them.

use crate::{
    apdu::Apdu,
    error::{DecodeError, EncodeError, Problem, check_max},
    reader::Reader,
};

const VERSION: u8 = 0x01;

/// Control octet bits.
const NETWORK_MESSAGE: u8 = 0x80;
const DESTINATION_PRESENT: u8 = 0x20;
const SOURCE_PRESENT: u8 = 0x08;
const EXPECTING_REPLY: u8 = 0x04;
const PRIORITY_MASK: u8 = 0x03;

#[derive(Debug, Clone, PartialEq)]
pub struct Npdu {
    pub header: NpduHeader,
    pub payload: NpduPayload,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NpduHeader {
    /// Set on confirmed requests (the "data expecting reply" bit).
    pub expecting_reply: bool,
    pub priority: NetworkPriority,
    /// A remote network, through a router; `None` for the local network.
    pub destination: Option<Destination>,
    /// The original sender when a router forwarded the message.
    pub source: Option<NetworkAddress>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// DNET 0xFFFF is a global broadcast; an empty `mac` a broadcast on `network`.
    pub address: NetworkAddress,
    pub hop_count: u8,
}

/// A network number and a MAC address on it (6 octets on B/IP: IPv4 address and port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkAddress {
    pub network: u16,
    pub mac: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkPriority {
    #[default]
    Normal = 0,
    Urgent = 1,
    CriticalEquipment = 2,
    LifeSafety = 3,
}

impl NetworkPriority {
    pub const ALL: [Self; 4] = [
        Self::Normal,
        Self::Urgent,
        Self::CriticalEquipment,
        Self::LifeSafety,
    ];
}

#[derive(Debug, Clone, PartialEq)]
pub enum NpduPayload {
    Apdu(Apdu),
    NetworkMessage(NetworkMessage),
}

/// A network layer message, not interpreted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkMessage {
    pub message_type: u8,
    /// Present on the wire for proprietary message types (0x80 and up); encoding such a
    /// message without one writes vendor 0, and this field is not written for other types.
    pub vendor_id: Option<u16>,
    pub data: Vec<u8>,
}

impl Npdu {
    /// An NPDU for the local network carrying `apdu`, expecting a reply if it is a
    /// confirmed request.
    pub fn local(apdu: Apdu) -> Self {
        Self {
            header: NpduHeader {
                expecting_reply: matches!(apdu, Apdu::ConfirmedRequest { .. }),
                ..NpduHeader::default()
            },
            payload: NpduPayload::Apdu(apdu),
        }
    }

    /// The APDU, unless this is a network layer message.
    pub fn apdu(&self) -> Option<&Apdu> {
        match &self.payload {
            NpduPayload::Apdu(apdu) => Some(apdu),
            NpduPayload::NetworkMessage(_) => None,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let header = &self.header;
        let mut control = header.priority as u8;
        if matches!(self.payload, NpduPayload::NetworkMessage(_)) {
            control |= NETWORK_MESSAGE;
        }
        if header.destination.is_some() {
            control |= DESTINATION_PRESENT;
        }
        if header.source.is_some() {
            control |= SOURCE_PRESENT;
        }
        if header.expecting_reply {
            control |= EXPECTING_REPLY;
        }
        out.extend_from_slice(&[VERSION, control]);
        if let Some(destination) = &header.destination {
            write_address(out, &destination.address, "NPDU DADR")?;
        }
        if let Some(source) = &header.source {
            check_max(
                "NPDU SNET",
                source.network.into(),
                0xFFFE,
                "1..=65534, not a broadcast",
            )?;
            if source.mac.is_empty() {
                return Err(EncodeError {
                    what: "NPDU SLEN",
                    value: 0,
                    range: "1..=255",
                });
            }
            write_address(out, source, "NPDU SADR")?;
        }
        if let Some(destination) = &header.destination {
            out.push(destination.hop_count);
        }
        match &self.payload {
            NpduPayload::Apdu(apdu) => apdu.encode(out),
            NpduPayload::NetworkMessage(message) => {
                out.push(message.message_type);
                if message.message_type >= 0x80 {
                    out.extend_from_slice(&message.vendor_id.unwrap_or(0).to_be_bytes());
                }
                out.extend_from_slice(&message.data);
                Ok(())
            }
        }
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Decodes an NPDU and the APDU it carries; offsets in errors count from the start of
    /// `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let version = reader.u8("NPDU version")?;
        if version != VERSION {
            return Err(reader.error_at(
                0,
                "NPDU version",
                Problem::Unsupported("NPDU version other than 1"),
            ));
        }
        let control = reader.u8("NPDU control")?;
        if control & 0x50 != 0 {
            return Err(reader.error_at(
                1,
                "NPDU control",
                Problem::Invalid("reserved control bits 6 or 4 set"),
            ));
        }
        let destination_address = if control & DESTINATION_PRESENT != 0 {
            Some(read_address(&mut reader, "NPDU DNET/DLEN/DADR")?)
        } else {
            None
        };
        let source = if control & SOURCE_PRESENT != 0 {
            let start = reader.offset();
            let source = read_address(&mut reader, "NPDU SNET/SLEN/SADR")?;
            if source.network == 0xFFFF || source.mac.is_empty() {
                return Err(reader.error_at(
                    start,
                    "NPDU SNET/SLEN/SADR",
                    Problem::Invalid("a source cannot be a broadcast (SNET 0xFFFF or SLEN 0)"),
                ));
            }
            Some(source)
        } else {
            None
        };
        let destination = match destination_address {
            Some(address) => Some(Destination {
                address,
                hop_count: reader.u8("NPDU hop count")?,
            }),
            None => None,
        };
        let header = NpduHeader {
            expecting_reply: control & EXPECTING_REPLY != 0,
            priority: NetworkPriority::ALL
                .get(usize::from(control & PRIORITY_MASK))
                .copied()
                .unwrap_or_default(),
            destination,
            source,
        };
        let payload = if control & NETWORK_MESSAGE != 0 {
            let message_type = reader.u8("network layer message type")?;
            let vendor_id = if message_type >= 0x80 {
                Some(reader.u16("network layer message vendor id")?)
            } else {
                None
            };
            NpduPayload::NetworkMessage(NetworkMessage {
                message_type,
                vendor_id,
                data: reader.rest().to_vec(),
            })
        } else {
            let offset = reader.offset();
            NpduPayload::Apdu(Apdu::decode(reader.rest()).map_err(|error| error.shifted(offset))?)
        };
        Ok(Self { header, payload })
    }
}

fn write_address(
    out: &mut Vec<u8>,
    address: &NetworkAddress,
    what: &'static str,
) -> Result<(), EncodeError> {
    check_max(what, address.mac.len() as u64, 255, "0..=255 octets")?;
    out.extend_from_slice(&address.network.to_be_bytes());
    out.push(address.mac.len() as u8);
    out.extend_from_slice(&address.mac);
    Ok(())
}

fn read_address(
    reader: &mut Reader<'_>,
    what: &'static str,
) -> Result<NetworkAddress, DecodeError> {
    let network = reader.u16(what)?;
    let length = reader.u8(what)?;
    let mac = reader.take(length.into(), what)?.to_vec();
    Ok(NetworkAddress { network, mac })
}
