//! The sender's state machine, free of I/O: what to send next and what the relay holds.
//!
//! ```text
//!   disconnected ──connect──► connected: next = acked + 1 (resend all unacknowledged)
//!        ▲                        │  sent(last): next = last + 1, while in flight < window
//!        └───────disconnect───────┤  ack(up_to): acked = max(acked, up_to)
//!                                 ▼
//! ```
//! Invariants: `acked < next`; nothing beyond `acked + window` is in flight; after every
//! (re)connection sending starts right after what the relay acknowledged, so a record lost in
//! a broken connection is sent again, and the relay's idempotent store absorbs repeats.

/// See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    connected: bool,
    acked: u64,
    next: u64,
    window: u64,
}

impl Sender {
    /// `acked` is what the outbox state says the relay holds.
    pub fn new(acked: u64, window: u64) -> Self {
        Sender {
            connected: false,
            acked,
            next: acked + 1,
            window: window.max(1),
        }
    }

    pub fn on_connect(&mut self) {
        self.connected = true;
        self.next = self.acked + 1;
    }

    /// The relay has not acknowledged for too long: send everything unacknowledged again.
    pub fn rewind(&mut self) {
        if self.connected {
            self.next = self.acked + 1;
        }
    }

    pub fn on_disconnect(&mut self) {
        self.connected = false;
    }

    /// Returns whether the acknowledgement moved anything.
    pub fn on_ack(&mut self, up_to: u64) -> bool {
        if up_to <= self.acked {
            return false;
        }
        self.acked = up_to;
        self.next = self.next.max(up_to + 1);
        true
    }

    /// Where to read from and how many records may go, if any may.
    pub fn wants(&self) -> Option<(u64, u64)> {
        let in_flight = self.next - 1 - self.acked;
        (self.connected && in_flight < self.window).then(|| (self.next, self.window - in_flight))
    }

    pub fn on_sent(&mut self, last: u64) {
        self.next = self.next.max(last + 1);
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    pub fn in_flight(&self) -> u64 {
        self.next - 1 - self.acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Connect,
        Disconnect,
        Ack(u64),
        Send(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            Just(Step::Connect),
            Just(Step::Disconnect),
            (0u64..50).prop_map(Step::Ack),
            (1u64..20).prop_map(Step::Send),
        ]
    }

    proptest! {
        /// Against a model relay that acknowledges only what it received in order: the
        /// invariants hold after every step, and everything the relay acknowledged is
        /// exactly a prefix of what was sent.
        #[test]
        fn invariants_hold_for_any_interleaving(steps in proptest::collection::vec(step(), 0..200)) {
            let mut sender = Sender::new(0, 10);
            let mut received_up_to = 0u64; // the model relay holds 1..=received_up_to
            for step in steps {
                match step {
                    Step::Connect => {
                        sender.on_connect();
                        prop_assert_eq!(sender.wants().map(|w| w.0), Some(sender.acked() + 1));
                    }
                    Step::Disconnect => {
                        sender.on_disconnect();
                        prop_assert_eq!(sender.wants(), None);
                    }
                    Step::Ack(stale) => {
                        // Acks may arrive late, after newer ones: the relay only ever
                        // acknowledges what it holds.
                        sender.on_ack(stale.min(received_up_to));
                    }
                    Step::Send(count) => {
                        if let Some((from, room)) = sender.wants() {
                            let last = from + count.min(room) - 1;
                            // The model relay takes a batch that continues what it has.
                            if from <= received_up_to + 1 {
                                received_up_to = received_up_to.max(last);
                            }
                            sender.on_sent(last);
                        }
                    }
                }
                prop_assert!(sender.acked() <= received_up_to);
                prop_assert!(sender.in_flight() <= 10);
            }
        }
    }

    #[test]
    fn a_reconnection_resends_everything_unacknowledged() {
        let mut sender = Sender::new(5, 100);
        assert_eq!(sender.wants(), None);
        sender.on_connect();
        assert_eq!(sender.wants(), Some((6, 100)));
        sender.on_sent(40);
        assert_eq!(sender.wants(), Some((41, 65)));
        assert!(sender.on_ack(20));
        assert!(!sender.on_ack(10));
        sender.on_disconnect();
        sender.on_connect();
        assert_eq!(sender.wants(), Some((21, 100)));
        sender.on_sent(30);
        sender.rewind();
        assert_eq!(sender.wants(), Some((21, 100)));
    }
}
