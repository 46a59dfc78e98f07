//! Test helpers: a BACpypes3 device in a child process ([`Bacpypes3Device`], in `peer.rs`)
//! and a minimal BACnet/IP client over a std `UdpSocket` that uses nothing but this crate's
//! codec ([`Client`]).

#![allow(dead_code)] // each test file uses part of this module

mod peer;

pub use peer::*;

use std::{
    collections::VecDeque,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::Instant,
};

use anyhow::{Context as _, ensure};
use gatehouse_bacnet::{Apdu, Bvlc, ConfirmedRequest, ConfirmedRequestHeader, Npdu};

/// A BACnet/IP client on a std UDP socket, talking to one device by unicast.
pub struct Client {
    socket: UdpSocket,
    device: SocketAddr,
    next_invoke_id: u8,
    /// APDUs that arrived while waiting for another (COV notifications, mostly).
    unsolicited: VecDeque<Apdu>,
}

impl Client {
    pub fn new(device: SocketAddr) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        Ok(Self {
            socket,
            device,
            next_invoke_id: 0,
            unsolicited: VecDeque::new(),
        })
    }

    /// Sends `apdu` in an Original-Unicast-NPDU.
    pub fn send(&self, apdu: Apdu) -> anyhow::Result<()> {
        self.send_bvlc(&Bvlc::OriginalUnicast(Npdu::local(apdu)))
    }

    pub fn send_bvlc(&self, bvlc: &Bvlc) -> anyhow::Result<()> {
        self.send_raw(&bvlc.to_bytes()?)
    }

    pub fn send_raw(&self, datagram: &[u8]) -> anyhow::Result<()> {
        self.socket.send_to(datagram, self.device)?;
        Ok(())
    }

    /// Takes an invoke id for a request.
    pub fn invoke_id(&mut self) -> u8 {
        let id = self.next_invoke_id;
        self.next_invoke_id = self.next_invoke_id.wrapping_add(1);
        id
    }

    /// Sends a confirmed request and returns the device's answer to it.
    pub fn request(&mut self, request: ConfirmedRequest) -> anyhow::Result<Apdu> {
        let invoke_id = self.invoke_id();
        self.send(Apdu::ConfirmedRequest {
            header: ConfirmedRequestHeader::unsegmented(invoke_id),
            request,
        })?;
        self.answer_to(invoke_id)
    }

    /// The answer (ACK, Error, Reject or Abort) to `invoke_id`; other APDUs are kept for
    /// [`Client::next_unsolicited`].
    pub fn answer_to(&mut self, invoke_id: u8) -> anyhow::Result<Apdu> {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let apdu = self.receive(deadline)?;
            if answer_invoke_id(&apdu) == Some(invoke_id) {
                return Ok(apdu);
            }
            self.unsolicited.push_back(apdu);
        }
    }

    /// The next APDU that was not an answer, waiting up to [`ANSWER_TIMEOUT`] for one that
    /// `wanted` accepts; those it refuses are dropped.
    pub fn next_unsolicited(&mut self, wanted: impl Fn(&Apdu) -> bool) -> anyhow::Result<Apdu> {
        while let Some(apdu) = self.unsolicited.pop_front() {
            if wanted(&apdu) {
                return Ok(apdu);
            }
        }
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            let apdu = self.receive(deadline)?;
            if wanted(&apdu) {
                return Ok(apdu);
            }
        }
    }

    /// Receives and decodes one datagram from the device, carrying an APDU.
    fn receive(&self, deadline: Instant) -> anyhow::Result<Apdu> {
        loop {
            if let Some(apdu) = self.receive_bvlc(deadline)?.npdu().and_then(Npdu::apdu) {
                return Ok(apdu.clone());
            }
        }
    }

    /// Receives and decodes one datagram from the device, whatever it carries.
    pub fn receive_bvlc(&self, deadline: Instant) -> anyhow::Result<Bvlc> {
        let mut buffer = [0; 1500];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            ensure!(
                !left.is_zero(),
                "nothing from the device within {ANSWER_TIMEOUT:?}"
            );
            self.socket.set_read_timeout(Some(left))?;
            let (length, from) = self
                .socket
                .recv_from(&mut buffer)
                .context("waiting for the device")?;
            if from != self.device {
                continue;
            }
            let datagram = buffer.get(..length).unwrap_or_default();
            return Bvlc::decode(datagram).with_context(|| format!("decoding {datagram:02X?}"));
        }
    }
}

fn answer_invoke_id(apdu: &Apdu) -> Option<u8> {
    match apdu {
        Apdu::SimpleAck { invoke_id, .. }
        | Apdu::ComplexAck { invoke_id, .. }
        | Apdu::Error { invoke_id, .. }
        | Apdu::Reject { invoke_id, .. }
        | Apdu::Abort { invoke_id, .. } => Some(*invoke_id),
        Apdu::ConfirmedRequest { .. } | Apdu::UnconfirmedRequest(_) => None,
    }
}
