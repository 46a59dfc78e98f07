//! BVLC, BACnet/IP's link layer (Annex J): the 4-octet header of every B/IP datagram, and the
//! messages a client and a foreign device need.
//!
//! The BBMD table management functions (Write/Read-Broadcast-Distribution-Table,
//! Read-Foreign-Device-Table, Delete-Foreign-Device-Table-Entry) and Secure-BVLL are
//! recognised and refused with [`Problem::Unsupported`]: a client never receives them unless
//! it asked.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::{
    error::{DecodeError, EncodeError, Problem, check_max},
    npdu::Npdu,
    reader::Reader,
};

/// BVLC type octet of BACnet/IP (Annex J).
const BVLC_TYPE_BIP: u8 = 0x81;

mod function {
    pub const RESULT: u8 = 0x00;
    pub const FORWARDED_NPDU: u8 = 0x04;
    pub const REGISTER_FOREIGN_DEVICE: u8 = 0x05;
    pub const DISTRIBUTE_BROADCAST_TO_NETWORK: u8 = 0x09;
    pub const ORIGINAL_UNICAST_NPDU: u8 = 0x0A;
    pub const ORIGINAL_BROADCAST_NPDU: u8 = 0x0B;
}

/// One B/IP datagram.
#[derive(Debug, Clone, PartialEq)]
pub enum Bvlc {
    /// A BBMD's answer to Register-Foreign-Device and the like.
    Result(BvlcResultCode),
    /// Registers the sender as a foreign device with a BBMD for `time_to_live_seconds`
    /// (the BBMD adds a 30 s grace period); re-register before it runs out.
    RegisterForeignDevice {
        time_to_live_seconds: u16,
    },
    OriginalUnicast(Npdu),
    OriginalBroadcast(Npdu),
    /// A foreign device's broadcast, sent to its BBMD for distribution.
    DistributeBroadcastToNetwork(Npdu),
    /// A broadcast a BBMD forwarded; `origin` is the original sender's B/IP address.
    Forwarded {
        origin: SocketAddrV4,
        npdu: Npdu,
    },
}

crate::object::open_enumeration! {
    /// BVLC-Result codes.
    BvlcResultCode(u16) {
        SUCCESSFUL_COMPLETION = 0x0000 => "successful-completion",
        WRITE_BROADCAST_DISTRIBUTION_TABLE_NAK = 0x0010 => "write-broadcast-distribution-table-nak",
        READ_BROADCAST_DISTRIBUTION_TABLE_NAK = 0x0020 => "read-broadcast-distribution-table-nak",
        REGISTER_FOREIGN_DEVICE_NAK = 0x0030 => "register-foreign-device-nak",
        READ_FOREIGN_DEVICE_TABLE_NAK = 0x0040 => "read-foreign-device-table-nak",
        DELETE_FOREIGN_DEVICE_TABLE_ENTRY_NAK = 0x0050 => "delete-foreign-device-table-entry-nak",
        DISTRIBUTE_BROADCAST_TO_NETWORK_NAK = 0x0060 => "distribute-broadcast-to-network-nak",
    }
}

impl Bvlc {
    /// The NPDU this datagram carries, if it carries one.
    pub fn npdu(&self) -> Option<&Npdu> {
        match self {
            Self::OriginalUnicast(npdu)
            | Self::OriginalBroadcast(npdu)
            | Self::DistributeBroadcastToNetwork(npdu)
            | Self::Forwarded { npdu, .. } => Some(npdu),
            Self::Result(_) | Self::RegisterForeignDevice { .. } => None,
        }
    }

    /// The datagram's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        // The body first: the header holds its length.
        let mut body = Vec::new();
        let out = &mut body;
        let function = match self {
            Self::Result(code) => {
                out.extend_from_slice(&code.0.to_be_bytes());
                function::RESULT
            }
            Self::RegisterForeignDevice {
                time_to_live_seconds,
            } => {
                out.extend_from_slice(&time_to_live_seconds.to_be_bytes());
                function::REGISTER_FOREIGN_DEVICE
            }
            Self::OriginalUnicast(npdu) => {
                npdu.encode(out)?;
                function::ORIGINAL_UNICAST_NPDU
            }
            Self::OriginalBroadcast(npdu) => {
                npdu.encode(out)?;
                function::ORIGINAL_BROADCAST_NPDU
            }
            Self::DistributeBroadcastToNetwork(npdu) => {
                npdu.encode(out)?;
                function::DISTRIBUTE_BROADCAST_TO_NETWORK
            }
            Self::Forwarded { origin, npdu } => {
                out.extend_from_slice(&origin.ip().octets());
                out.extend_from_slice(&origin.port().to_be_bytes());
                npdu.encode(out)?;
                function::FORWARDED_NPDU
            }
        };
        let length = body.len() + 4;
        check_max(
            "BVLC length",
            length as u64,
            u16::MAX.into(),
            "4..=65535 octets",
        )?;
        let [high, low] = (length as u16).to_be_bytes();
        let mut datagram = Vec::with_capacity(length);
        datagram.extend_from_slice(&[BVLC_TYPE_BIP, function, high, low]);
        datagram.append(&mut body);
        Ok(datagram)
    }

    /// Decodes one UDP payload: BVLC, NPDU and APDU. Offsets in errors count from the start
    /// of `datagram`.
    pub fn decode(datagram: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(datagram);
        if reader.u8("BVLC type")? != BVLC_TYPE_BIP {
            return Err(reader.error_at(
                0,
                "BVLC type",
                Problem::Unsupported("BVLC type other than 0x81 (BACnet/IP)"),
            ));
        }
        let function = reader.u8("BVLC function")?;
        let length = reader.u16("BVLC length")?;
        if usize::from(length) != datagram.len() {
            return Err(reader.error_at(
                2,
                "BVLC length",
                Problem::Invalid("the BVLC length is not the datagram's length"),
            ));
        }
        let npdu = |reader: &mut Reader<'_>| {
            let offset = reader.offset();
            Npdu::decode(reader.rest()).map_err(|error| error.shifted(offset))
        };
        let bvlc = match function {
            function::RESULT => Self::Result(BvlcResultCode(reader.u16("BVLC-Result code")?)),
            function::REGISTER_FOREIGN_DEVICE => Self::RegisterForeignDevice {
                time_to_live_seconds: reader.u16("Register-Foreign-Device time-to-live")?,
            },
            function::ORIGINAL_UNICAST_NPDU => Self::OriginalUnicast(npdu(&mut reader)?),
            function::ORIGINAL_BROADCAST_NPDU => Self::OriginalBroadcast(npdu(&mut reader)?),
            function::DISTRIBUTE_BROADCAST_TO_NETWORK => {
                Self::DistributeBroadcastToNetwork(npdu(&mut reader)?)
            }
            function::FORWARDED_NPDU => {
                let ip = Ipv4Addr::from(reader.array::<4>("Forwarded-NPDU original address")?);
                let port = reader.u16("Forwarded-NPDU original port")?;
                Self::Forwarded {
                    origin: SocketAddrV4::new(ip, port),
                    npdu: npdu(&mut reader)?,
                }
            }
            0x01..=0x03 | 0x06..=0x08 | 0x0C => {
                return Err(reader.error_at(
                    1,
                    "BVLC function",
                    Problem::Unsupported("BBMD table management and Secure-BVLL functions"),
                ));
            }
            _ => {
                return Err(reader.error_at(
                    1,
                    "BVLC function",
                    Problem::Invalid("unknown BVLC function"),
                ));
            }
        };
        reader.finish("BVLC")?;
        Ok(bvlc)
    }
}
