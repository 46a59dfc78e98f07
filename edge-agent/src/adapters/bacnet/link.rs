//! The agent's one BACnet/IP UDP socket, shared by every device: sends requests with invoke
//! ids, a timeout and retries, and routes what arrives.
//!
//! ```text
//!   socket ──► receive loop ──► answer (ACK/Error/Reject/Abort) ──► the waiting request,
//!                          │                                        by (source, invoke id)
//!                          ├──► I-Am ──► every device looking for its instance
//!                          ├──► COV notification ──► the device of its initiating instance
//!                          │      (a confirmed one is answered with a SimpleACK first)
//!                          ├──► BVLC-Result from the BBMD ──► the registration loop
//!                          └──► anything that does not decode: logged, counted, dropped
//! ```
//!
//! Requests of different devices never wait for each other: each waits on its own answer slot
//! and the receive loop never blocks on a device (its channels are bounded and `try_send`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse_bacnet::services::{CovNotification, IAm};
use gatehouse_bacnet::{
    Apdu, Bvlc, BvlcResultCode, ConfirmedRequest, ConfirmedRequestHeader, ConfirmedServiceChoice,
    Npdu, RejectReason, UnconfirmedRequest,
};
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::metrics::{DeviceLabels, Metrics};

/// The largest B/IP datagram (1476-octet APDU and headers fit).
const MAX_DATAGRAM: usize = 1500;

/// Why a confirmed request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("no answer from {to} after {attempts} attempts of {timeout_ms} ms")]
    Timeout {
        to: SocketAddr,
        attempts: u32,
        timeout_ms: u64,
    },
    #[error("all 256 invoke ids to {0} are waiting for answers")]
    NoInvokeId(SocketAddr),
    #[error("cannot encode the request: {0}")]
    Encode(#[from] gatehouse_bacnet::EncodeError),
    #[error("cannot send to {to}: {error}")]
    Send {
        to: SocketAddr,
        error: std::io::Error,
    },
}

type Waiting = HashMap<(SocketAddr, u8), oneshot::Sender<Apdu>>;

/// The socket and what waits on it.
pub struct Link {
    socket: UdpSocket,
    timeout: Duration,
    retries: u32,
    waiting: Mutex<Waiting>,
    next_invoke_id: Mutex<u8>,
    i_am: broadcast::Sender<(IAm, SocketAddr)>,
    /// COV notifications by the initiating device's instance, with the address they came
    /// from (the device takes only those from its own address).
    notifications: HashMap<u32, mpsc::Sender<(CovNotification, SocketAddr)>>,
    bbmd: Option<SocketAddr>,
    bbmd_results: mpsc::Sender<BvlcResultCode>,
    /// Why the last foreign-device registration failed, if it did.
    registration: Mutex<Option<String>>,
    metrics: Arc<Metrics>,
}

impl Link {
    /// A link on `socket`; `notifications` routes COV notifications to the devices.
    pub fn new(
        socket: UdpSocket,
        timeout: Duration,
        retries: u32,
        notifications: HashMap<u32, mpsc::Sender<(CovNotification, SocketAddr)>>,
        bbmd: Option<SocketAddr>,
        metrics: Arc<Metrics>,
    ) -> (Link, mpsc::Receiver<BvlcResultCode>) {
        let (bbmd_results, results) = mpsc::channel(4);
        let (i_am, _) = broadcast::channel(64);
        let link = Link {
            socket,
            timeout,
            retries,
            waiting: Mutex::new(HashMap::new()),
            next_invoke_id: Mutex::new(0),
            i_am,
            notifications,
            bbmd,
            bbmd_results,
            registration: Mutex::new(None),
            metrics,
        };
        (link, results)
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.socket.local_addr().ok()
    }

    /// I-Am messages from now on, with their senders.
    pub fn i_ams(&self) -> broadcast::Receiver<(IAm, SocketAddr)> {
        self.i_am.subscribe()
    }

    pub fn registration_problem(&self) -> Option<String> {
        self.registration
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_registration_problem(&self, problem: Option<String>) {
        *self.registration.lock().unwrap_or_else(|e| e.into_inner()) = problem;
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub async fn send(&self, bvlc: &Bvlc, to: SocketAddr) -> Result<(), LinkError> {
        let datagram = bvlc.to_bytes()?;
        self.socket
            .send_to(&datagram, to)
            .await
            .map(|_| ())
            .map_err(|error| LinkError::Send { to, error })
    }

    /// Sends an unconfirmed request (Who-Is) to `to`: a unicast, or a broadcast when `to` is
    /// the broadcast address, or through the BBMD when registered with one.
    pub async fn send_unconfirmed(
        &self,
        request: UnconfirmedRequest,
        to: Option<SocketAddr>,
        broadcast: SocketAddr,
    ) -> Result<(), LinkError> {
        let npdu = Npdu::local(Apdu::UnconfirmedRequest(request));
        match (to, self.bbmd) {
            (Some(to), _) => self.send(&Bvlc::OriginalUnicast(npdu), to).await,
            (None, Some(bbmd)) => {
                self.send(&Bvlc::DistributeBroadcastToNetwork(npdu), bbmd)
                    .await
            }
            (None, None) => self.send(&Bvlc::OriginalBroadcast(npdu), broadcast).await,
        }
    }

    /// Sends a confirmed request to `to` and returns its answer (an ACK, Error, Reject or
    /// Abort), sending it again after each timeout, `retries` times.
    pub async fn request(
        &self,
        device: &str,
        to: SocketAddr,
        request: ConfirmedRequest,
    ) -> Result<Apdu, LinkError> {
        for attempt in 0..=self.retries {
            if attempt > 0 {
                self.metrics
                    .bacnet_requests_retried
                    .get_or_create(&DeviceLabels {
                        device: device.to_owned(),
                    })
                    .inc();
            }
            let (invoke_id, answer) = self.wait_for(to)?;
            let bvlc = Bvlc::OriginalUnicast(Npdu::local(Apdu::ConfirmedRequest {
                header: ConfirmedRequestHeader::unsegmented(invoke_id),
                request: request.clone(),
            }));
            if let Err(error) = self.send(&bvlc, to).await {
                self.forget(to, invoke_id);
                return Err(error);
            }
            match tokio::time::timeout(self.timeout, answer).await {
                Ok(Ok(apdu)) => return Ok(apdu),
                _ => self.forget(to, invoke_id),
            }
        }
        Err(LinkError::Timeout {
            to,
            attempts: self.retries + 1,
            timeout_ms: self.timeout.as_millis() as u64,
        })
    }

    /// Takes an invoke id free for `to` and the slot its answer comes in.
    fn wait_for(&self, to: SocketAddr) -> Result<(u8, oneshot::Receiver<Apdu>), LinkError> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self
            .next_invoke_id
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for _ in 0..=u8::MAX {
            let invoke_id = *next;
            *next = next.wrapping_add(1);
            if let std::collections::hash_map::Entry::Vacant(slot) = waiting.entry((to, invoke_id))
            {
                let (sender, receiver) = oneshot::channel();
                slot.insert(sender);
                return Ok((invoke_id, receiver));
            }
        }
        Err(LinkError::NoInvokeId(to))
    }

    fn forget(&self, to: SocketAddr, invoke_id: u8) {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(to, invoke_id));
    }

    /// Receives and routes datagrams until the socket fails (its error).
    pub async fn receive(&self) -> std::io::Error {
        let mut buffer = vec![0; MAX_DATAGRAM];
        loop {
            let (length, from) = match self.socket.recv_from(&mut buffer).await {
                Ok(received) => received,
                // An ICMP port-unreachable of an earlier send, where the system reports it:
                // that device's requests time out; the socket is fine.
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    continue;
                }
                Err(error) => return error,
            };
            let datagram = buffer.get(..length).unwrap_or_default();
            match Bvlc::decode(datagram) {
                Ok(bvlc) => self.route(bvlc, from).await,
                Err(error) => self.rejected(from, &format!("does not decode: {error}")),
            }
        }
    }

    pub(super) fn rejected(&self, from: SocketAddr, reason: &str) {
        tracing::warn!(%from, reason, "BACnet datagram dropped");
        self.metrics.bacnet_datagrams_rejected.inc();
    }

    async fn route(&self, bvlc: Bvlc, from: SocketAddr) {
        let (npdu, source) = match bvlc {
            Bvlc::Result(code) if Some(from) == self.bbmd => {
                let _ = self.bbmd_results.try_send(code);
                return;
            }
            Bvlc::Forwarded { origin, npdu } => (npdu, SocketAddr::V4(origin)),
            Bvlc::OriginalUnicast(npdu)
            | Bvlc::OriginalBroadcast(npdu)
            | Bvlc::DistributeBroadcastToNetwork(npdu) => (npdu, from),
            other => return self.rejected(from, &format!("unexpected {other:?}")),
        };
        let Some(apdu) = npdu.apdu() else {
            // Network layer messages (router announcements) are not for a client.
            return;
        };
        match apdu {
            Apdu::SimpleAck { invoke_id, .. }
            | Apdu::ComplexAck { invoke_id, .. }
            | Apdu::Error { invoke_id, .. }
            | Apdu::Reject { invoke_id, .. }
            | Apdu::Abort { invoke_id, .. } => {
                let slot = self
                    .waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&(source, *invoke_id));
                match slot {
                    Some(slot) => {
                        let _ = slot.send(apdu.clone());
                    }
                    None => self.rejected(
                        source,
                        &format!("an answer to invoke id {invoke_id}, which nothing waits for"),
                    ),
                }
            }
            Apdu::UnconfirmedRequest(UnconfirmedRequest::IAm(i_am)) => {
                let _ = self.i_am.send((*i_am, source));
            }
            Apdu::UnconfirmedRequest(UnconfirmedRequest::CovNotification(notification)) => {
                self.notify(notification.clone(), source);
            }
            Apdu::ConfirmedRequest { header, request } => {
                let answer = match request {
                    ConfirmedRequest::CovNotification(notification) => {
                        self.notify(notification.clone(), source);
                        Apdu::SimpleAck {
                            invoke_id: header.invoke_id,
                            service: ConfirmedServiceChoice::CONFIRMED_COV_NOTIFICATION,
                        }
                    }
                    _ => Apdu::Reject {
                        invoke_id: header.invoke_id,
                        reason: RejectReason::UNRECOGNIZED_SERVICE,
                    },
                };
                if let Err(error) = self
                    .send(&Bvlc::OriginalUnicast(Npdu::local(answer)), source)
                    .await
                {
                    tracing::warn!(%source, %error, "cannot answer a BACnet request");
                }
            }
            Apdu::UnconfirmedRequest(_) => {}
        }
    }

    fn notify(&self, notification: CovNotification, source: SocketAddr) {
        let instance = notification.initiating_device.instance;
        match self.notifications.get(&instance) {
            Some(device) => {
                if device.try_send((notification, source)).is_err() {
                    self.rejected(source, "a COV notification its device had no room for");
                }
            }
            None => self.rejected(
                source,
                &format!("a COV notification from device {instance}, which is not configured"),
            ),
        }
    }
}
