//! APDUs (clause 20.1): the PDU types a client meets, decoded down to typed services.
//!
//! Segmentation is not supported: a segmented Confirmed-Request or ComplexACK, and any
//! SegmentACK, fail to decode with [`Problem::Segmented`]. Requests this crate sends carry
//! `segmented_response_accepted: false` so that a device answers what does not fit with an
//! Abort (segmentation-not-supported) rather than segments.

use crate::{
    error::{DecodeError, EncodeError, Problem},
    object::{AbortReason, ConfirmedServiceChoice, RejectReason, UnconfirmedServiceChoice},
    reader::Reader,
    services::{
        CovNotification, ErrorClassAndCode, IAm, ReadProperty, ReadPropertyAck,
        ReadPropertyMultiple, ReadPropertyMultipleAck, SubscribeCov, WhoIs, WriteProperty,
    },
    tag::{self, Tag},
};

/// PDU types: the high nibble of the first octet.
mod pdu_type {
    pub const CONFIRMED_REQUEST: u8 = 0;
    pub const UNCONFIRMED_REQUEST: u8 = 1;
    pub const SIMPLE_ACK: u8 = 2;
    pub const COMPLEX_ACK: u8 = 3;
    pub const SEGMENT_ACK: u8 = 4;
    pub const ERROR: u8 = 5;
    pub const REJECT: u8 = 6;
    pub const ABORT: u8 = 7;
}

/// First-octet flags of Confirmed-Request and ComplexACK.
const SEGMENTED_MESSAGE: u8 = 0x08;
const SEGMENTED_RESPONSE_ACCEPTED: u8 = 0x02;
/// First-octet flag of Abort: sent by the server.
const ABORT_FROM_SERVER: u8 = 0x01;

#[derive(Debug, Clone, PartialEq)]
pub enum Apdu {
    ConfirmedRequest {
        header: ConfirmedRequestHeader,
        request: ConfirmedRequest,
    },
    UnconfirmedRequest(UnconfirmedRequest),
    SimpleAck {
        invoke_id: u8,
        service: ConfirmedServiceChoice,
    },
    ComplexAck {
        invoke_id: u8,
        ack: ComplexAck,
    },
    Error {
        invoke_id: u8,
        service: ConfirmedServiceChoice,
        error: ErrorClassAndCode,
    },
    Reject {
        invoke_id: u8,
        reason: RejectReason,
    },
    Abort {
        invoke_id: u8,
        /// Sent by the server (the device answering) rather than the client.
        from_server: bool,
        reason: AbortReason,
    },
}

/// The fields of a Confirmed-Request before its service choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfirmedRequestHeader {
    pub invoke_id: u8,
    /// Largest APDU the sender accepts in the answer.
    pub max_apdu: MaxApdu,
    /// Most segments the sender accepts in the answer.
    pub max_segments: MaxSegments,
    pub segmented_response_accepted: bool,
}

impl ConfirmedRequestHeader {
    /// A request that accepts 1476-octet answers (a B/IP frame) and no segments.
    pub const fn unsegmented(invoke_id: u8) -> Self {
        Self {
            invoke_id,
            max_apdu: MaxApdu::Up1476,
            max_segments: MaxSegments::Unspecified,
            segmented_response_accepted: false,
        }
    }
}

/// Max-APDU-length-accepted codes (clause 20.1.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaxApdu {
    Up50 = 0,
    Up128 = 1,
    Up206 = 2,
    Up480 = 3,
    Up1024 = 4,
    Up1476 = 5,
}

impl MaxApdu {
    pub const ALL: [Self; 6] = [
        Self::Up50,
        Self::Up128,
        Self::Up206,
        Self::Up480,
        Self::Up1024,
        Self::Up1476,
    ];

    pub fn octets(self) -> u16 {
        match self {
            Self::Up50 => 50,
            Self::Up128 => 128,
            Self::Up206 => 206,
            Self::Up480 => 480,
            Self::Up1024 => 1024,
            Self::Up1476 => 1476,
        }
    }
}

/// Max-segments-accepted codes (clause 20.1.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaxSegments {
    Unspecified = 0,
    Two = 1,
    Four = 2,
    Eight = 3,
    Sixteen = 4,
    ThirtyTwo = 5,
    SixtyFour = 6,
    MoreThanSixtyFour = 7,
}

impl MaxSegments {
    pub const ALL: [Self; 8] = [
        Self::Unspecified,
        Self::Two,
        Self::Four,
        Self::Eight,
        Self::Sixteen,
        Self::ThirtyTwo,
        Self::SixtyFour,
        Self::MoreThanSixtyFour,
    ];
}

/// A confirmed service request. `Other` carries services this crate does not decode, as
/// their raw service data; it is meant for service choices with no variant of their own.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfirmedRequest {
    ReadProperty(ReadProperty),
    ReadPropertyMultiple(ReadPropertyMultiple),
    WriteProperty(WriteProperty),
    SubscribeCov(SubscribeCov),
    CovNotification(CovNotification),
    Other {
        service: ConfirmedServiceChoice,
        data: Vec<u8>,
    },
}

/// An unconfirmed service request; `Other` as in [`ConfirmedRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum UnconfirmedRequest {
    WhoIs(WhoIs),
    IAm(IAm),
    CovNotification(CovNotification),
    Other {
        service: UnconfirmedServiceChoice,
        data: Vec<u8>,
    },
}

/// The answer of a ComplexACK; `Other` as in [`ConfirmedRequest`].
#[derive(Debug, Clone, PartialEq)]
pub enum ComplexAck {
    ReadProperty(ReadPropertyAck),
    ReadPropertyMultiple(ReadPropertyMultipleAck),
    Other {
        service: ConfirmedServiceChoice,
        data: Vec<u8>,
    },
}

impl ConfirmedRequest {
    pub fn service(&self) -> ConfirmedServiceChoice {
        match self {
            Self::ReadProperty(_) => ConfirmedServiceChoice::READ_PROPERTY,
            Self::ReadPropertyMultiple(_) => ConfirmedServiceChoice::READ_PROPERTY_MULTIPLE,
            Self::WriteProperty(_) => ConfirmedServiceChoice::WRITE_PROPERTY,
            Self::SubscribeCov(_) => ConfirmedServiceChoice::SUBSCRIBE_COV,
            Self::CovNotification(_) => ConfirmedServiceChoice::CONFIRMED_COV_NOTIFICATION,
            Self::Other { service, .. } => *service,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(self.service().0);
        match self {
            Self::ReadProperty(request) => request.encode(out),
            Self::ReadPropertyMultiple(request) => request.encode(out),
            Self::WriteProperty(request) => request.encode(out),
            Self::SubscribeCov(request) => request.encode(out),
            Self::CovNotification(request) => request.encode(out),
            Self::Other { data, .. } => {
                out.extend_from_slice(data);
                Ok(())
            }
        }
    }

    fn decode(
        service: ConfirmedServiceChoice,
        reader: &mut Reader<'_>,
    ) -> Result<Self, DecodeError> {
        Ok(match service {
            ConfirmedServiceChoice::READ_PROPERTY => {
                Self::ReadProperty(ReadProperty::decode(reader)?)
            }
            ConfirmedServiceChoice::READ_PROPERTY_MULTIPLE => {
                Self::ReadPropertyMultiple(ReadPropertyMultiple::decode(reader)?)
            }
            ConfirmedServiceChoice::WRITE_PROPERTY => {
                Self::WriteProperty(WriteProperty::decode(reader)?)
            }
            ConfirmedServiceChoice::SUBSCRIBE_COV => {
                Self::SubscribeCov(SubscribeCov::decode(reader)?)
            }
            ConfirmedServiceChoice::CONFIRMED_COV_NOTIFICATION => {
                Self::CovNotification(CovNotification::decode(reader)?)
            }
            service => Self::Other {
                service,
                data: reader.rest().to_vec(),
            },
        })
    }
}

impl UnconfirmedRequest {
    pub fn service(&self) -> UnconfirmedServiceChoice {
        match self {
            Self::WhoIs(_) => UnconfirmedServiceChoice::WHO_IS,
            Self::IAm(_) => UnconfirmedServiceChoice::I_AM,
            Self::CovNotification(_) => UnconfirmedServiceChoice::UNCONFIRMED_COV_NOTIFICATION,
            Self::Other { service, .. } => *service,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(self.service().0);
        match self {
            Self::WhoIs(request) => request.encode(out),
            Self::IAm(request) => request.encode(out),
            Self::CovNotification(request) => request.encode(out),
            Self::Other { data, .. } => {
                out.extend_from_slice(data);
                Ok(())
            }
        }
    }

    fn decode(
        service: UnconfirmedServiceChoice,
        reader: &mut Reader<'_>,
    ) -> Result<Self, DecodeError> {
        Ok(match service {
            UnconfirmedServiceChoice::WHO_IS => Self::WhoIs(WhoIs::decode(reader)?),
            UnconfirmedServiceChoice::I_AM => Self::IAm(IAm::decode(reader)?),
            UnconfirmedServiceChoice::UNCONFIRMED_COV_NOTIFICATION => {
                Self::CovNotification(CovNotification::decode(reader)?)
            }
            service => Self::Other {
                service,
                data: reader.rest().to_vec(),
            },
        })
    }
}

impl ComplexAck {
    pub fn service(&self) -> ConfirmedServiceChoice {
        match self {
            Self::ReadProperty(_) => ConfirmedServiceChoice::READ_PROPERTY,
            Self::ReadPropertyMultiple(_) => ConfirmedServiceChoice::READ_PROPERTY_MULTIPLE,
            Self::Other { service, .. } => *service,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.push(self.service().0);
        match self {
            Self::ReadProperty(ack) => ack.encode(out),
            Self::ReadPropertyMultiple(ack) => ack.encode(out),
            Self::Other { data, .. } => {
                out.extend_from_slice(data);
                Ok(())
            }
        }
    }

    fn decode(
        service: ConfirmedServiceChoice,
        reader: &mut Reader<'_>,
    ) -> Result<Self, DecodeError> {
        Ok(match service {
            ConfirmedServiceChoice::READ_PROPERTY => {
                Self::ReadProperty(ReadPropertyAck::decode(reader)?)
            }
            ConfirmedServiceChoice::READ_PROPERTY_MULTIPLE => {
                Self::ReadPropertyMultiple(ReadPropertyMultipleAck::decode(reader)?)
            }
            service => Self::Other {
                service,
                data: reader.rest().to_vec(),
            },
        })
    }
}

impl Apdu {
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match self {
            Self::ConfirmedRequest { header, request } => {
                let flags = if header.segmented_response_accepted {
                    SEGMENTED_RESPONSE_ACCEPTED
                } else {
                    0
                };
                out.push(pdu_type::CONFIRMED_REQUEST << 4 | flags);
                out.push((header.max_segments as u8) << 4 | header.max_apdu as u8);
                out.push(header.invoke_id);
                request.encode(out)
            }
            Self::UnconfirmedRequest(request) => {
                out.push(pdu_type::UNCONFIRMED_REQUEST << 4);
                request.encode(out)
            }
            Self::SimpleAck { invoke_id, service } => {
                out.extend_from_slice(&[pdu_type::SIMPLE_ACK << 4, *invoke_id, service.0]);
                Ok(())
            }
            Self::ComplexAck { invoke_id, ack } => {
                out.extend_from_slice(&[pdu_type::COMPLEX_ACK << 4, *invoke_id]);
                ack.encode(out)
            }
            Self::Error {
                invoke_id,
                service,
                error,
            } => {
                out.extend_from_slice(&[pdu_type::ERROR << 4, *invoke_id, service.0]);
                error.encode(out)
            }
            Self::Reject { invoke_id, reason } => {
                out.extend_from_slice(&[pdu_type::REJECT << 4, *invoke_id, reason.0]);
                Ok(())
            }
            Self::Abort {
                invoke_id,
                from_server,
                reason,
            } => {
                let flags = if *from_server { ABORT_FROM_SERVER } else { 0 };
                out.extend_from_slice(&[pdu_type::ABORT << 4 | flags, *invoke_id, reason.0]);
                Ok(())
            }
        }
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Decodes a whole APDU; every byte must belong to it.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(bytes);
        let apdu = Self::read(&mut reader)?;
        reader.finish("APDU")?;
        Ok(apdu)
    }

    fn read(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let first = reader.u8("APDU type")?;
        match first >> 4 {
            pdu_type::CONFIRMED_REQUEST => {
                if first & SEGMENTED_MESSAGE != 0 {
                    return Err(reader.error_at(0, "Confirmed-Request", Problem::Segmented));
                }
                let limits = reader.u8("Confirmed-Request max-segments/max-APDU")?;
                let max_segments = MaxSegments::ALL
                    .get(usize::from(limits >> 4 & 0x07))
                    .copied()
                    .unwrap_or(MaxSegments::Unspecified);
                let Some(max_apdu) = MaxApdu::ALL.get(usize::from(limits & 0x0F)).copied() else {
                    return Err(reader.error_at(
                        1,
                        "Confirmed-Request max-APDU",
                        Problem::Invalid("reserved max-APDU code (6 to 15)"),
                    ));
                };
                let header = ConfirmedRequestHeader {
                    invoke_id: reader.u8("Confirmed-Request invoke id")?,
                    max_apdu,
                    max_segments,
                    segmented_response_accepted: first & SEGMENTED_RESPONSE_ACCEPTED != 0,
                };
                let service =
                    ConfirmedServiceChoice(reader.u8("Confirmed-Request service choice")?);
                let request = ConfirmedRequest::decode(service, reader)?;
                Ok(Self::ConfirmedRequest { header, request })
            }
            pdu_type::UNCONFIRMED_REQUEST => {
                let service =
                    UnconfirmedServiceChoice(reader.u8("Unconfirmed-Request service choice")?);
                UnconfirmedRequest::decode(service, reader).map(Self::UnconfirmedRequest)
            }
            pdu_type::SIMPLE_ACK => Ok(Self::SimpleAck {
                invoke_id: reader.u8("SimpleACK invoke id")?,
                service: ConfirmedServiceChoice(reader.u8("SimpleACK service choice")?),
            }),
            pdu_type::COMPLEX_ACK => {
                if first & SEGMENTED_MESSAGE != 0 {
                    return Err(reader.error_at(0, "ComplexACK", Problem::Segmented));
                }
                let invoke_id = reader.u8("ComplexACK invoke id")?;
                let service = ConfirmedServiceChoice(reader.u8("ComplexACK service choice")?);
                let ack = ComplexAck::decode(service, reader)?;
                Ok(Self::ComplexAck { invoke_id, ack })
            }
            pdu_type::SEGMENT_ACK => Err(reader.error_at(0, "SegmentACK", Problem::Segmented)),
            pdu_type::ERROR => {
                let invoke_id = reader.u8("Error invoke id")?;
                let service = ConfirmedServiceChoice(reader.u8("Error service choice")?);
                let error = read_error_payload(reader)?;
                Ok(Self::Error {
                    invoke_id,
                    service,
                    error,
                })
            }
            pdu_type::REJECT => Ok(Self::Reject {
                invoke_id: reader.u8("Reject invoke id")?,
                reason: RejectReason(reader.u8("Reject reason")?),
            }),
            pdu_type::ABORT => Ok(Self::Abort {
                invoke_id: reader.u8("Abort invoke id")?,
                from_server: first & ABORT_FROM_SERVER != 0,
                reason: AbortReason(reader.u8("Abort reason")?),
            }),
            _ => Err(reader.error_at(
                0,
                "APDU type",
                Problem::Invalid("unknown PDU type (8 to 15)"),
            )),
        }
    }
}

/// The Error PDU's payload: the plain Error production (every service this crate sends), or
/// for services whose error is constructed (CreateObject, WritePropertyMultiple, ...) the
/// error inside opening tag [0]; what follows that is not kept.
fn read_error_payload(reader: &mut Reader<'_>) -> Result<ErrorClassAndCode, DecodeError> {
    let what = "Error PDU error class and code";
    if tag::peek_tag(reader, what)? == Some(Tag::Opening(0)) {
        tag::expect_opening(reader, 0, what)?;
        let error = ErrorClassAndCode::decode(reader, what)?;
        tag::expect_closing(reader, 0, what)?;
        reader.rest();
        return Ok(error);
    }
    ErrorClassAndCode::decode(reader, what)
}
