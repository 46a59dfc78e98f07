//! I-Am (clause 16.10): a device announcing itself, in answer to Who-Is or on start-up.

use super::{read_application_unsigned, read_enumerated};
use crate::{
    error::{DecodeError, EncodeError, Expected},
    object::{ObjectIdentifier, Segmentation},
    reader::Reader,
    tag::{self, application},
    value::ApplicationValue,
};

/// I-Am-Request: four application-tagged values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IAm {
    pub device: ObjectIdentifier,
    pub max_apdu_length_accepted: u32,
    pub segmentation: Segmentation,
    pub vendor_id: u16,
}

impl IAm {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        ApplicationValue::ObjectIdentifier(self.device).encode(out)?;
        ApplicationValue::Unsigned(self.max_apdu_length_accepted.into()).encode(out)?;
        ApplicationValue::Enumerated(self.segmentation.0).encode(out)?;
        ApplicationValue::Unsigned(self.vendor_id.into()).encode(out)
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let what = "I-Am device identifier";
        let expected = Expected::Text("an application ObjectIdentifier");
        let device = tag::read_application(reader, application::OBJECT_IDENTIFIER, what, expected)?
            .object_identifier(what)?;
        let max_apdu =
            read_application_unsigned(reader, u32::MAX.into(), "0..=2^32-1", "I-Am max-APDU")?;
        let segmentation = read_enumerated(reader, "I-Am segmentation")?;
        let vendor_id =
            read_application_unsigned(reader, u16::MAX.into(), "0..=65535", "I-Am vendor id")?;
        Ok(Self {
            device,
            max_apdu_length_accepted: max_apdu as u32,
            segmentation: Segmentation(segmentation),
            vendor_id: vendor_id as u16,
        })
    }
}
