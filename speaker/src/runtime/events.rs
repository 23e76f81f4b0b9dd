//! One handler per input the main loop receives that is not "run the election again":
//! interfaces that may have changed, a conflict a socket reader saw, gratuitous announcements
//! that are due.

use std::net::IpAddr;
use std::time::Instant;

use crate::decide::inputs;
use crate::edge::responder::ConflictSeen;
use crate::metrics::IpLabels;
use crate::wire::Message;

use super::Speaker;

impl Speaker {
    /// Re-reads interfaces and opens or closes sockets. Returns whether anything the
    /// election reads changed.
    pub(super) async fn on_links(&mut self) -> bool {
        let named = inputs::named_interfaces(&self.stores.ads.state());
        let outcome = self.links.scan(&named).await;
        for (interface, error) in &outcome.new_socket_failures {
            self.status.socket_failure(interface, error);
        }
        if outcome.interfaces_changed {
            self.links.sync_multicast(self.announcer.owned());
            self.heartbeats.lock().links = self.links.usable();
        }
        if outcome.answers_stale {
            self.links.publish(&self.announcer, self.period);
        }
        outcome.interfaces_changed
    }

    /// Another station answered for an IP this node announces: a metric and (at most once a
    /// minute per IP, however many stations claim it) a log line and a Warning Event on every
    /// Service using the IP.
    pub(super) fn on_conflict(&mut self, seen: ConflictSeen) {
        // The reader judged from its snapshot; the IP may have moved on since.
        if !self.announcer.owned().any(|o| *o == seen.ip) {
            return;
        }
        let ip = &seen.ip;
        self.metrics
            .conflicts
            .get_or_create(&IpLabels { ip: ip.to_string() })
            .inc();
        self.status.conflict(&self.stores.services.state(), &seen);
    }

    /// Sends the gratuitous announcements that are due.
    pub(super) async fn send_due(&mut self) {
        let ifaces = self.links.announcing();
        for (interface, frame) in self.announcer.due(&ifaces, Instant::now()) {
            let ip = match frame.message {
                Message::ArpRequest(r) => IpAddr::V4(r.sender_ip),
                Message::ArpReply(r) => IpAddr::V4(r.sender_ip),
                Message::NeighborAdvertisement(na) => IpAddr::V6(na.target),
                Message::NeighborSolicitation(_) => continue,
            };
            // Sent only while the gate allows the period these IPs were elected in.
            if self.links.send(&interface, &frame, self.period).await {
                self.metrics
                    .gratuitous_sent
                    .get_or_create(&IpLabels { ip: ip.to_string() })
                    .inc();
            }
        }
    }
}
