//! SubscribeCOV (clause 13.14): ask a device to notify changes of an object's value; renew by
//! subscribing again before the lifetime runs out; cancel by leaving out both optional fields.

use super::{read_object, read_optional_u32, read_u32};
use crate::{
    error::{DecodeError, EncodeError, Problem},
    object::ObjectIdentifier,
    reader::Reader,
    tag,
};

/// SubscribeCOV-Request; answered by a SimpleACK or an Error PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeCov {
    /// Chosen by the subscriber; comes back in every notification.
    pub subscriber_process_id: u32,
    pub object: ObjectIdentifier,
    /// `None` cancels the subscription.
    pub subscription: Option<CovSubscription>,
}

/// The terms of a (new or renewed) subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CovSubscription {
    /// ConfirmedCOVNotification (to be acknowledged) rather than Unconfirmed.
    pub confirmed: bool,
    /// Seconds until the subscription lapses; `None` (or 0) asks for no end.
    pub lifetime_seconds: Option<u32>,
}

impl SubscribeCov {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        tag::write_context_unsigned(out, 0, self.subscriber_process_id.into())?;
        tag::write_context_object_id(out, 1, self.object)?;
        if let Some(subscription) = self.subscription {
            tag::write_context_boolean(out, 2, subscription.confirmed)?;
            if let Some(lifetime) = subscription.lifetime_seconds {
                tag::write_context_unsigned(out, 3, lifetime.into())?;
            }
        }
        Ok(())
    }

    pub(crate) fn decode(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let subscriber_process_id = read_u32(reader, 0, "SubscribeCOV subscriber process id")?;
        let object = read_object(reader, 1, "SubscribeCOV monitored object")?;
        let confirmed = match tag::read_optional_context(reader, 2, "SubscribeCOV issue-confirmed")?
        {
            Some(content) => Some(match content.bytes {
                [0] => false,
                [1] => true,
                _ => {
                    return Err(DecodeError {
                        what: "SubscribeCOV issue-confirmed",
                        offset: content.offset,
                        problem: Problem::Invalid("a context Boolean is one octet, 0 or 1"),
                    });
                }
            }),
            None => None,
        };
        let start = reader.offset();
        let lifetime_seconds = read_optional_u32(reader, 3, "SubscribeCOV lifetime")?;
        let subscription = match (confirmed, lifetime_seconds) {
            (Some(confirmed), lifetime_seconds) => Some(CovSubscription {
                confirmed,
                lifetime_seconds,
            }),
            (None, None) => None,
            (None, Some(_)) => {
                return Err(reader.error_at(
                    start,
                    "SubscribeCOV lifetime",
                    Problem::Invalid("a lifetime without issue-confirmed-notifications"),
                ));
            }
        };
        Ok(Self {
            subscriber_process_id,
            object,
            subscription,
        })
    }
}
