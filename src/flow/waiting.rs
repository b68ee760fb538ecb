//! A SYN waiting for its first answer, kept compact: under a SYN flood
//! millions of flows are only their SYN, and a full `Flow` for each would
//! be a heap allocation of a few hundred bytes that is never used.
//!
//! Only a flow that has seen exactly its SYN is kept this way; anything
//! more (an answer, a retransmission, its deadline, its end) turns it back
//! into the very `Flow` it was, field for field, before the flow reads it.

use super::{Flow, Origin, State};
use crate::duplicate::LastSegments;
use crate::record::Traffic;
use crate::seq::SeqNumber;
use crate::time::Timestamp;
use crate::tls::KeyStore;

/// What a flow made by `Flow::from_syn` holds besides its defaults.
#[derive(Debug)]
pub struct WaitingSyn {
    pub id: u64,
    pub start: Timestamp,
    isn: Option<SeqNumber>,
    ttl: Option<u8>,
    last_segments: LastSegments,
    traffic: Traffic,
    armed: Option<Timestamp>,
    keys: Option<KeyStore>,
}

impl Flow {
    /// The compact form of a flow that has seen only its SYN; any other
    /// flow comes back as it was, boxed to be stored.
    pub fn into_waiting(self) -> Result<WaitingSyn, Box<Flow>> {
        let only_the_syn = self.state == State::SynSent
            && self.origin == Origin::Syn
            && self.syn_count == 1
            && self.first_syn == Some(self.start)
            && self.later_syns.is_empty()
            && self.last == self.start
            && self.server_isn.is_none()
            && self.syn_ack_at.is_none()
            && self.server_ttl.is_none()
            && self.answer.is_none()
            && self.client_reset_at.is_none()
            && self.session_end.is_none()
            && !self.fin_client
            && !self.fin_server
            && self.notes.is_empty()
            && self.pg.is_none();
        if !only_the_syn {
            return Err(Box::new(self));
        }
        Ok(WaitingSyn {
            id: self.id,
            start: self.start,
            isn: self.client_isn,
            ttl: self.client_ttl,
            last_segments: self.last_segments,
            traffic: self.traffic,
            armed: self.armed,
            keys: self.keys,
        })
    }
}

impl From<WaitingSyn> for Flow {
    fn from(w: WaitingSyn) -> Flow {
        let mut flow = Flow::empty(w.id, w.start, State::SynSent, Origin::Syn);
        flow.client_isn = w.isn;
        flow.client_ttl = w.ttl;
        flow.syn_count = 1;
        flow.first_syn = Some(w.start);
        flow.last_segments = w.last_segments;
        flow.traffic = w.traffic;
        flow.armed = w.armed;
        flow.keys = w.keys;
        flow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{TcpFlags, TcpSegment};

    #[test]
    fn a_lone_syn_comes_back_as_the_flow_it_was() {
        let seg = TcpSegment {
            src: "192.0.2.7:40000".parse().unwrap(),
            dst: "192.0.2.1:5432".parse().unwrap(),
            seq: SeqNumber(7),
            ack: SeqNumber(0),
            flags: TcpFlags { syn: true, ..TcpFlags::default() },
            ttl: 63,
            wire_payload_len: 0,
            payload: &[],
        };
        let mut flow = Flow::from_syn(3, &seg, Timestamp::from_secs_nanos(5, 6));
        flow.armed = Some(Timestamp::from_secs_nanos(8, 6));
        let was = format!("{flow:?}");
        let back = Flow::from(flow.into_waiting().expect("a lone SYN waits"));
        assert_eq!(format!("{back:?}"), was);
        // A retransmission makes it a flow with more to say.
        let mut flow = Box::new(back);
        flow.record_syn(Timestamp::from_secs_nanos(6, 0));
        assert!(flow.into_waiting().is_err());
    }
}
