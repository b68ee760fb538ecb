//! The engine driven directly with built packets, grouped by what the
//! server (or the path) did with the SYN.

use pgreach::decode::LinkType;
use pgreach::engine::{Analyzer, Config};
use pgreach::outcome::{AnswerKind, GaveUp, Outcome, SessionEnd, TcpOutcome, UnreachableKind};
use pgreach::record::{AttemptRecord, Note};
use pgreach::time::Timestamp;

use crate::util::*;

const ISN: u32 = 1000;
const SISN: u32 = 5000;

struct Run {
    engine: Analyzer,
}

impl Run {
    fn new() -> Run {
        Run { engine: Analyzer::new(Config::default()) }
    }

    fn with(config: Config) -> Run {
        Run { engine: Analyzer::new(config) }
    }

    fn c2s(&mut self, t: f64, seg: Seg) -> &mut Run {
        self.frame(at(t), tcp_frame(CLIENT, SERVER, seg))
    }

    fn s2c(&mut self, t: f64, seg: Seg) -> &mut Run {
        self.frame(at(t), tcp_frame(SERVER, CLIENT, seg))
    }

    fn frame(&mut self, ts: Timestamp, frame: Vec<u8>) -> &mut Run {
        self.engine.handle_packet(ts, LinkType::Ethernet, &frame).expect("decodes");
        self
    }

    fn handshake(&mut self, t: f64) -> &mut Run {
        self.c2s(t, syn(ISN)).s2c(t + 0.0002, syn_ack(SISN, ISN + 1)).c2s(t + 0.0003, ack(ISN + 1, SISN + 1))
    }

    fn finish(&mut self) -> Vec<AttemptRecord> {
        self.engine.finish();
        std::iter::from_fn(|| self.engine.poll_finished()).collect()
    }

    fn only(&mut self) -> AttemptRecord {
        let mut all = self.finish();
        assert_eq!(all.len(), 1, "one attempt expected: {all:#?}");
        all.remove(0)
    }
}

mod established {
    use super::*;

    #[test]
    fn closed_by_client_fin() {
        let a = Run::new()
            .handshake(0.0)
            .c2s(0.01, data(ISN + 1, SISN + 1, b"hello"))
            .c2s(0.02, fin(ISN + 6, SISN + 1))
            .s2c(0.021, fin(SISN + 1, ISN + 7))
            .c2s(0.022, ack(ISN + 7, SISN + 2))
            .only();
        assert_eq!(a.tcp_outcome, TcpOutcome::Established);
        assert_eq!(a.session_end, Some(SessionEnd::FinClient));
        assert_eq!(a.handshake_ms, Some(0.2));
        assert_eq!(a.traffic.client_bytes, 5);
        assert_eq!(a.client, addr(CLIENT));
        assert_eq!(a.server, addr(SERVER));
    }

    #[test]
    fn reset_by_server() {
        let a = Run::new().handshake(0.0).s2c(1.0, rst_ack(SISN + 1, ISN + 1)).only();
        assert_eq!(a.tcp_outcome, TcpOutcome::Established);
        assert_eq!(a.session_end, Some(SessionEnd::RstServer));
    }

    #[test]
    fn open_when_the_capture_ends() {
        let a = Run::new().handshake(0.0).only();
        assert_eq!(a.session_end, Some(SessionEnd::Open));
    }

    #[test]
    fn syn_ack_missed_but_client_acked() {
        let a = Run::new().c2s(0.0, syn(ISN)).c2s(0.001, ack(ISN + 1, SISN + 1)).only();
        assert_eq!(a.tcp_outcome, TcpOutcome::Established);
        assert!(a.notes.contains(&Note::HandshakeInferred));
        assert_eq!(a.handshake_ms, None);
    }

    /// Late copies of the last ACK or FIN do not open a phantom connection.
    #[test]
    fn late_packets_after_close_are_absorbed() {
        let all = Run::new()
            .handshake(0.0)
            .c2s(0.02, fin(ISN + 1, SISN + 1))
            .s2c(0.021, fin(SISN + 1, ISN + 2))
            .c2s(0.022, ack(ISN + 2, SISN + 2))
            .c2s(0.5, ack(ISN + 2, SISN + 2))
            .s2c(0.6, fin(SISN + 1, ISN + 2))
            .finish();
        assert_eq!(all.len(), 1);
    }
}

mod refused {
    use super::*;

    #[test]
    fn by_rst() {
        let a =
            Run::new().c2s(0.0, Seg { ttl: 64, ..syn(ISN) }).s2c(0.0001, Seg { ttl: 63, ..rst_ack(0, ISN + 1) }).only();
        assert_eq!(a.outcome, Outcome::Refused);
        let answer = a.answer.expect("answer");
        assert_eq!(answer.kind, AnswerKind::Rst);
        assert_eq!(answer.from, addr(SERVER).ip());
        assert_eq!(answer.ttl, 63);
    }

    /// A client in SYN-SENT ignores a RST that does not acknowledge its SYN (RFC 9293 3.10.7.3).
    #[test]
    fn rst_with_wrong_ack_is_ignored() {
        let a = Run::new().c2s(0.0, syn(ISN)).s2c(0.001, rst_ack(0, ISN + 99)).c2s(10.0, ack(0, 0)).only();
        assert_ne!(a.outcome, Outcome::Refused);
        assert!(a.notes.contains(&Note::IgnoredRstBadAck));
    }

    #[test]
    fn by_icmp_port_unreachable() {
        let mut run = Run::new();
        run.c2s(0.0, syn(ISN));
        run.frame(at(0.001), icmp_frame("192.0.2.1", CLIENT, SERVER, ISN, 3, 3));
        let a = run.only();
        assert_eq!(a.outcome, Outcome::Refused);
        let answer = a.answer.expect("answer");
        assert_eq!((answer.kind, answer.unreachable), (AnswerKind::Icmp, Some(UnreachableKind::Port)));
        assert_eq!((answer.icmp_type, answer.icmp_code), (Some(3), Some(3)));
    }

    #[test]
    fn icmp_quoting_another_syn_is_not_linked() {
        let mut run = Run::new();
        run.c2s(0.0, syn(ISN));
        run.frame(at(0.001), icmp_frame("192.0.2.1", CLIENT, SERVER, ISN + 12345, 3, 3));
        let a = run.only();
        assert_eq!(a.answer, None);
        assert_eq!(run.engine.stats().unmatched_icmp, 1);
    }

    /// The client port is reused after a refusal: two attempts, not one.
    #[test]
    fn port_reuse_is_a_new_attempt() {
        let all = Run::new()
            .c2s(0.0, syn(ISN))
            .s2c(0.001, rst_ack(0, ISN + 1))
            .c2s(0.5, syn(ISN + 777_000))
            .s2c(0.5001, syn_ack(SISN, ISN + 777_001))
            .c2s(0.5002, ack(ISN + 777_001, SISN + 1))
            .finish();
        let outcomes: Vec<TcpOutcome> = all.iter().map(|a| a.tcp_outcome).collect();
        assert_eq!(outcomes, [TcpOutcome::Refused, TcpOutcome::Established]);
    }
}

mod unreachable {
    use super::*;

    fn icmp_outcome(from: &str, client: &str, server: &str, icmp_type: u8, code: u8) -> AttemptRecord {
        let mut run = Run::new();
        run.frame(at(0.0), tcp_frame(client, server, syn(ISN)));
        run.frame(at(0.002), icmp_frame(from, client, server, ISN, icmp_type, code));
        run.only()
    }

    #[test]
    fn admin_prohibited_from_a_firewall_keeps_its_address() {
        let a = icmp_outcome("192.0.2.254", CLIENT, SERVER, 3, 13);
        assert_eq!(a.outcome, Outcome::Unreachable);
        let answer = a.answer.expect("answer");
        assert_eq!(answer.from.to_string(), "192.0.2.254");
        assert_eq!(answer.unreachable, Some(UnreachableKind::AdminProhibited));
    }

    #[test]
    fn host_and_net_codes() {
        assert_eq!(
            icmp_outcome("192.0.2.254", CLIENT, SERVER, 3, 1).answer.unwrap().unreachable,
            Some(UnreachableKind::Host)
        );
        assert_eq!(
            icmp_outcome("192.0.2.254", CLIENT, SERVER, 3, 0).answer.unwrap().unreachable,
            Some(UnreachableKind::Net)
        );
        assert_eq!(icmp_outcome("192.0.2.254", CLIENT, SERVER, 3, 10).outcome, Outcome::Unreachable);
    }

    #[test]
    fn icmpv6_admin_prohibited_and_port() {
        let c6 = "[2001:db8::50]:40000";
        let s6 = "[2001:db8::1]:5432";
        let a = icmp_outcome("2001:db8::1", c6, s6, 1, 1);
        assert_eq!(a.outcome, Outcome::Unreachable);
        assert_eq!(a.answer.unwrap().unreachable, Some(UnreachableKind::AdminProhibited));
        assert_eq!(icmp_outcome("2001:db8::1", c6, s6, 1, 4).outcome, Outcome::Refused);
    }
}

mod timeout {
    use super::*;

    /// Linux 6.x: four retransmissions 1 s apart, then exponential backoff.
    #[test]
    fn linear_then_exponential_schedule_then_silence() {
        let times = [0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 10.0];
        let mut run = Run::new();
        for &t in &times {
            run.c2s(t, syn(ISN));
        }
        // Another connection's traffic moves the clock far past the give-up point.
        run.frame(at(60.0), tcp_frame("192.0.2.77:1234", SERVER, syn(1)));
        let all = run.finish();
        let a = &all[0];
        assert_eq!(a.outcome, Outcome::Timeout);
        assert_eq!(a.gave_up, Some(GaveUp::StoppedRetransmitting));
        let syn = a.syn.as_ref().expect("syn evidence");
        assert_eq!(syn.count, 7);
        assert_eq!(syn.at_ms, times.iter().map(|t| t * 1000.0).collect::<Vec<_>>());
        assert_eq!(a.wait_ms, Some(10_000.0));
    }

    /// The give-up decision waits for twice the last gap: a client still
    /// backing off exponentially is not declared gone early.
    #[test]
    fn long_backoff_is_not_giving_up() {
        let mut run = Run::new();
        for t in [0.0, 1.0, 3.0, 7.0, 15.0] {
            run.c2s(t, syn(ISN));
        }
        run.frame(at(30.0), tcp_frame("192.0.2.77:1234", SERVER, syn(1)));
        assert!(run.engine.poll_finished().is_none(), "still waiting at 30 s (next SYN due at 31 s)");
        run.c2s(31.0, syn(ISN));
        let a = &run.finish()[0];
        assert_eq!(a.syn.as_ref().unwrap().count, 6);
    }

    #[test]
    fn client_reset() {
        let a = Run::new().c2s(0.0, syn(ISN)).c2s(1.0, syn(ISN)).c2s(2.0, rst_ack(ISN + 1, 0)).only();
        assert_eq!(a.outcome, Outcome::Timeout);
        assert_eq!(a.gave_up, Some(GaveUp::ClientReset));
        assert_eq!(a.wait_ms, Some(2000.0));
    }

    #[test]
    fn new_syn_from_the_same_port() {
        let all = Run::new().c2s(0.0, syn(ISN)).c2s(1.0, syn(ISN)).c2s(2.5, syn(ISN + 10)).finish();
        assert_eq!(all[0].outcome, Outcome::Timeout);
        assert_eq!(all[0].gave_up, Some(GaveUp::NewAttempt));
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn capture_ends_while_waiting() {
        let a = Run::new().c2s(0.0, syn(ISN)).c2s(1.0, syn(ISN)).c2s(2.0, syn(ISN)).c2s(4.0, syn(ISN)).only();
        assert_eq!(a.outcome, Outcome::Timeout);
        assert_eq!(a.gave_up, Some(GaveUp::StillWaitingAtCaptureEnd));
    }

    #[test]
    fn capture_ends_too_soon_to_tell() {
        let a = Run::new().c2s(0.0, syn(ISN)).c2s(1.0, syn(ISN)).only();
        assert_eq!(a.outcome, Outcome::CaptureEnded);
        assert_eq!(a.gave_up, None);
    }

    /// A short --syn-timeout must not end the wait before the first
    /// retransmission (Linux: after about 1 s), or the retransmission would
    /// look like a new attempt.
    #[test]
    fn short_syn_timeout_waits_for_the_first_retransmission() {
        let config = Config { syn_timeout: std::time::Duration::from_millis(500), ..Config::default() };
        let mut run = Run::with(config);
        run.c2s(0.0, syn(ISN));
        run.engine.handle_timeout(at(1.02));
        run.c2s(1.03, syn(ISN)).c2s(3.05, syn(ISN));
        run.engine.handle_timeout(at(20.0));
        let a = run.engine.poll_finished().expect("one attempt");
        assert!(run.engine.poll_finished().is_none(), "one attempt, not one per SYN");
        assert_eq!(a.outcome, Outcome::Timeout);
        assert_eq!(a.syn.as_ref().map(|s| s.count), Some(3));
        assert_eq!(a.gave_up, Some(GaveUp::StoppedRetransmitting));
    }

    /// The live view's count of what tracked connections are doing now.
    #[test]
    fn connections_now_by_state() {
        use pgreach::engine::ConnectionsNow;
        let mut run = Run::new();
        run.handshake(0.0);
        run.frame(at(0.5), tcp_frame("192.0.2.7:40001", SERVER, syn(77)));
        let three = std::time::Duration::from_secs(3);
        let now = run.engine.connections_now(at(1.0), three);
        assert_eq!(now, ConnectionsNow { open: 1, handshaking: 1, unanswered_syns: 0, closing: 0 });
        let now = run.engine.connections_now(at(3.6), three);
        assert_eq!(now, ConnectionsNow { open: 1, handshaking: 0, unanswered_syns: 1, closing: 0 });
        run.c2s(3.7, fin(ISN + 1, SISN + 1));
        assert_eq!(run.engine.connections_now(at(3.8), three).closing, 1);
    }

    /// Live mode: the timer, not a packet, ends the wait.
    #[test]
    fn deadline_fires_without_packets() {
        let mut run = Run::new();
        run.c2s(0.0, syn(ISN));
        // One SYN: its first retransmission may come after 3 s (RFC 2988
        // stacks), so the wait is that plus a second.
        let deadline = run.engine.poll_timeout().expect("a deadline");
        assert_eq!(deadline, at(4.0));
        run.engine.handle_timeout(at(3.9));
        assert!(run.engine.poll_finished().is_none());
        run.engine.handle_timeout(at(4.0));
        let a = run.engine.poll_finished().expect("finished at the deadline");
        assert_eq!(a.outcome, Outcome::Timeout);
    }
}

mod handshake_incomplete {
    use super::*;

    #[test]
    fn syn_ack_never_acked() {
        let a =
            Run::new().c2s(0.0, syn(ISN)).s2c(0.001, syn_ack(SISN, ISN + 1)).s2c(1.001, syn_ack(SISN, ISN + 1)).only();
        assert_eq!(a.outcome, Outcome::HandshakeIncomplete);
        assert!(a.notes.contains(&Note::SynAckRetransmitted));
    }
}

mod strays_and_midstream {
    use super::*;

    #[test]
    fn lone_rst_and_syn_ack_are_not_attempts() {
        let mut run = Run::new();
        run.s2c(0.0, rst_ack(1, 2));
        run.s2c(0.1, syn_ack(SISN, 77));
        let all = run.finish();
        assert!(all.is_empty(), "{all:#?}");
        assert_eq!(run.engine.stats().stray_answers, 2);
    }

    #[test]
    fn data_without_a_handshake_is_midstream() {
        let a = Run::new()
            .c2s(0.0, data(ISN, SISN, b"Q"))
            .s2c(0.001, data(SISN, ISN + 1, b"T"))
            .c2s(0.002, fin(ISN + 1, SISN + 1))
            .s2c(0.003, fin(SISN + 1, ISN + 2))
            .only();
        assert_eq!(a.outcome, Outcome::Midstream);
        assert_eq!(a.session_end, Some(SessionEnd::FinClient));
        assert!(a.syn.is_none());
    }

    #[test]
    fn traffic_off_the_port_is_ignored() {
        let mut run = Run::new();
        run.frame(at(0.0), tcp_frame("192.0.2.50:40000", "192.0.2.1:80", syn(ISN)));
        assert!(run.finish().is_empty());
        assert_eq!(run.engine.stats().packets_on_port, 0);
    }

    #[test]
    fn duplicate_syn_copy_is_not_a_retransmission() {
        let a = Run::new().c2s(0.0, syn(ISN)).c2s(0.00001, syn(ISN)).s2c(0.001, rst_ack(0, ISN + 1)).only();
        assert_eq!(a.syn.unwrap().count, 1);
    }

    /// Timestamps that step back a little (multi-queue NICs) neither panic
    /// nor give negative durations.
    #[test]
    fn timestamps_stepping_back() {
        let a =
            Run::new().c2s(1.0, syn(ISN)).s2c(0.999, syn_ack(SISN, ISN + 1)).c2s(1.001, ack(ISN + 1, SISN + 1)).only();
        assert_eq!(a.tcp_outcome, TcpOutcome::Established);
        assert_eq!(a.handshake_ms, Some(0.0));
    }

    #[test]
    fn several_ports() {
        let mut run = Run::with(Config { server_ports: vec![5432, 6432], ..Config::default() });
        run.frame(at(0.0), tcp_frame(CLIENT, "192.0.2.1:6432", syn(ISN)));
        run.frame(at(0.001), tcp_frame("192.0.2.1:6432", CLIENT, rst_ack(0, ISN + 1)));
        assert_eq!(run.only().outcome, Outcome::Refused);
    }
}

mod bounded {
    use super::*;

    /// A SYN flood of many sources cannot grow the flow table past its cap;
    /// every attempt is still reported.
    #[test]
    fn syn_flood_stays_within_max_flows() {
        let cap = 1_000;
        let mut run = Run::with(Config { max_flows: cap, ..Config::default() });
        let n = 50_000u32;
        for i in 0..n {
            let client = format!("198.51.{}.{}:{}", (i >> 8) & 0xff, i & 0xff, 1024 + (i % 60000));
            let frame = tcp_frame(&client, SERVER, syn(i));
            run.engine.handle_packet(at(f64::from(i) * 0.00001), LinkType::Ethernet, &frame).expect("decodes");
            assert!(run.engine.live_flows() <= cap);
        }
        let all = run.finish();
        assert_eq!(all.len(), n as usize);
        assert_eq!(run.engine.stats().evicted, u64::from(n) - cap as u64);
        assert!(all.iter().filter(|a| a.notes.contains(&Note::Evicted)).count() >= (n as usize - cap));
    }

    #[test]
    fn timer_entries_do_not_pile_up() {
        let mut run = Run::new();
        run.handshake(0.0);
        for i in 0..10_000 {
            run.c2s(1.0 + f64::from(i) * 0.001, data(ISN + 1 + i, SISN + 1, b"x"));
        }
        assert!(run.engine.poll_timeout().is_none(), "an established flow has no deadline");
    }
}
