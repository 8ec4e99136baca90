//! The check at the end: for each client, which acknowledged events it had to receive, and
//! whether it did — once, in order.
//!
//! Epochs are ordered by the engine generation that first had them (a PostgreSQL restart keeps
//! the epoch; a Redis restart without persistence makes a new one). A client's log is a list of
//! segments, each starting at a cursor the client was handed. An acknowledged event on one of
//! the client's channels is **expected** when it falls in a segment's window — same epoch,
//! after the segment's start, and (except for the last segment, which ran to the final head) at
//! or before the furthest point the server said the client had reached — or when it lies after
//! every segment. It is **excused** when it lies in the gap the client was told about
//! (`not_recovered` / `recovered: false`: from where the client was to the cursor it was given),
//! and **not expected** when it precedes the client's first cursor. One refinement keeps the
//! check honest: an event whose notify was *sent after* the client received a cursor, yet has
//! an id at or below that cursor, is expected all the same — it was acknowledged while the
//! client was subscribed, so handing out that cursor lost it.

use std::collections::HashMap;

use crate::client::ClientLog;
use crate::notify::{Ack, Ledger};

/// The verdict over every client.
#[derive(Debug, Default, Clone)]
pub struct Verdict {
    /// (client, acknowledged event) pairs that had to be delivered.
    pub expected: u64,
    /// Of those, not delivered.
    pub lost: u64,
    /// Events delivered to a client more than once.
    pub duplicates: u64,
    /// Events delivered out of id order, or across an epoch change without notice.
    pub order: u64,
    /// Events whose channel or payload differed from what was sent, or that the client did
    /// not subscribe to.
    pub corrupt: u64,
    /// Delivered with another id (or epoch) than the one acknowledged.
    pub id_mismatch: u64,
    /// Acknowledged events excused by a recovery notice.
    pub excused: u64,
    /// Acknowledged events that no client that expected them received.
    pub lost_everywhere: u64,
    /// Clients that did not reach the final head before the end.
    pub not_caught_up: u64,
    /// WebSocket closes that tell a page not to retry (4001/4002), seen with valid
    /// credentials.
    pub final_closes: u64,
    /// A few examples of what went wrong.
    pub examples: Vec<String>,
}

impl Verdict {
    fn example(&mut self, what: String) {
        if self.examples.len() < 12 {
            self.examples.push(what);
        }
    }
}

/// Checks `logs` against the ledger.
pub(crate) fn verify(ledger: &Ledger, logs: &[ClientLog]) -> Verdict {
    let mut v = Verdict::default();
    // Epoch string -> ordinal, in the order the engine generations had them.
    let mut ordinal: HashMap<&str, usize> = HashMap::new();
    for e in &ledger.epochs {
        let next = ordinal.len();
        ordinal.entry(e.as_str()).or_insert(next);
    }
    let gen_ord: Vec<usize> = ledger
        .epochs
        .iter()
        .map(|e| ordinal.get(e.as_str()).copied().unwrap_or(usize::MAX))
        .collect();
    let ack_ord = |a: &Ack| gen_ord.get(a.generation).copied().unwrap_or(usize::MAX);
    let mut by_chan: HashMap<usize, Vec<&Ack>> = HashMap::new();
    for a in &ledger.acks {
        by_chan.entry(a.chan).or_default().push(a);
    }
    let acked_by_seq: HashMap<u64, &Ack> = ledger.acks.iter().map(|a| (a.seq, a)).collect();
    // seq -> (expected by some client, delivered to one that expected it)
    let mut reach: HashMap<u64, (bool, bool)> = HashMap::new();

    for log in logs {
        v.order += log.order_violations;
        v.corrupt += log.corrupt;
        v.final_closes += log.final_closes;
        for w in &log.violations {
            v.example(format!("client {}: {w}", log.idx));
        }
        if log.segments.is_empty() {
            continue;
        }
        if !log.caught_up {
            v.not_caught_up += 1;
        }
        // Segments with their epoch ordinals.
        let segs: Vec<(usize, &crate::client::Segment)> = log
            .segments
            .iter()
            .map(|s| {
                (
                    ordinal.get(s.epoch.as_str()).copied().unwrap_or(usize::MAX),
                    s,
                )
            })
            .collect();
        if let Some((_, s)) = segs.iter().find(|(o, _)| *o == usize::MAX) {
            v.order += 1;
            let e = format!("client {}: a cursor of unknown epoch {}", log.idx, s.epoch);
            v.example(e);
        }
        let mut delivered: HashMap<u64, u32> = HashMap::new();
        for (o, s) in &segs {
            for (id, seq) in &s.events {
                *delivered.entry(*seq).or_default() += 1;
                if let Some(a) = acked_by_seq.get(seq) {
                    if a.id != *id || ack_ord(a) != *o {
                        v.id_mismatch += 1;
                        v.example(format!(
                            "client {}: seq {seq} delivered as {}:{id}, acknowledged as id {} of generation {}",
                            log.idx, s.epoch, a.id, a.generation
                        ));
                    }
                }
            }
        }
        for (seq, n) in &delivered {
            if *n > 1 {
                v.duplicates += u64::from(n - 1);
                v.example(format!("client {}: seq {seq} delivered {n} times", log.idx));
            }
        }
        let last = segs.len() - 1;
        for chan in &log.chans {
            for a in by_chan.get(chan).map(Vec::as_slice).unwrap_or(&[]) {
                let pos = (ack_ord(a), a.id);
                let mut expected = false;
                let mut decided = false;
                for (k, (o, s)) in segs.iter().enumerate() {
                    if *o != pos.0 {
                        continue;
                    }
                    let after_start = a.id > s.start || a.sent_at > s.received_at;
                    if after_start && (k == last || a.id <= s.last) {
                        expected = true;
                        decided = true;
                        break;
                    }
                }
                if !decided {
                    let (o0, s0) = segs[0];
                    if pos <= (o0, s0.start) {
                        // Before the client's first cursor: not its business.
                        decided = true;
                    }
                }
                if !decided {
                    for w in segs.windows(2) {
                        let ((oa, sa), (ob, sb)) = (w[0], w[1]);
                        if (oa, sa.last) < pos && pos <= (ob, sb.start) {
                            v.excused += 1;
                            decided = true;
                            break;
                        }
                    }
                }
                if !decided {
                    // After every segment, or somewhere no notice covers: it was due.
                    expected = true;
                }
                if !expected {
                    continue;
                }
                v.expected += 1;
                let got = delivered.contains_key(&a.seq);
                let r = reach.entry(a.seq).or_default();
                r.0 = true;
                r.1 |= got;
                if !got {
                    v.lost += 1;
                    let e = format!(
                        "client {}: lost seq {} (id {} of generation {}, channel {}); segments {}",
                        log.idx,
                        a.seq,
                        a.id,
                        a.generation,
                        a.chan,
                        describe(&log.segments)
                    );
                    v.example(e);
                }
            }
        }
    }
    v.lost_everywhere = reach.values().filter(|(e, d)| *e && !*d).count() as u64;
    v
}

fn describe(segs: &[crate::client::Segment]) -> String {
    segs.iter()
        .map(|s| {
            format!(
                "[{}:{}..{}, {} events]",
                s.epoch,
                s.start,
                s.last,
                s.events.len()
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Segment;
    use std::time::{Duration, Instant};

    fn ack(seq: u64, id: i64, generation: usize, sent_at: Instant) -> Ack {
        Ack {
            seq,
            id,
            generation,
            chan: 0,
            sent_at,
        }
    }

    fn seg(epoch: &str, start: i64, last: i64, at: Instant, events: &[(i64, u64)]) -> Segment {
        Segment {
            epoch: epoch.into(),
            start,
            received_at: at,
            last,
            events: events.to_vec(),
        }
    }

    fn log(segments: Vec<Segment>) -> ClientLog {
        ClientLog {
            idx: 0,
            chans: vec![0],
            segments,
            violations: Vec::new(),
            order_violations: 0,
            corrupt: 0,
            final_closes: 0,
            caught_up: true,
        }
    }

    #[test]
    fn events_before_the_first_cursor_are_not_expected_and_the_rest_are() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let ledger = Ledger {
            acks: vec![ack(1, 1, 0, t0), ack(2, 2, 0, t1), ack(3, 3, 0, t1)],
            sent: HashMap::new(),
            epochs: vec!["e".into()],
        };
        let v = verify(&ledger, &[log(vec![seg("e", 1, 3, t0, &[(2, 2), (3, 3)])])]);
        assert_eq!((v.expected, v.lost, v.duplicates), (2, 0, 0), "{v:?}");
        let v = verify(&ledger, &[log(vec![seg("e", 1, 3, t0, &[(3, 3)])])]);
        assert_eq!(v.lost, 1, "a missing event is lost: {v:?}");
        let v = verify(
            &ledger,
            &[log(vec![seg("e", 1, 3, t0, &[(2, 2), (3, 3), (3, 3)])])],
        );
        assert_eq!(v.duplicates, 1, "{v:?}");
    }

    #[test]
    fn an_event_sent_after_the_cursor_was_handed_out_is_due_even_below_it() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(1);
        let ledger = Ledger {
            // id 2 was acknowledged after the client got cursor 3.
            acks: vec![ack(1, 2, 0, later), ack(2, 4, 0, later)],
            sent: HashMap::new(),
            epochs: vec!["e".into()],
        };
        let v = verify(&ledger, &[log(vec![seg("e", 3, 4, t0, &[(4, 2)])])]);
        assert_eq!((v.expected, v.lost), (2, 1), "{v:?}");
    }

    #[test]
    fn a_recovery_notice_excuses_its_gap_only() {
        let t0 = Instant::now();
        let ledger = Ledger {
            acks: vec![
                ack(1, 5, 0, t0), // delivered before the notice
                ack(2, 6, 0, t0), // old epoch, after where the client was: excused
                ack(3, 1, 1, t0), // new epoch, up to the new cursor: excused
                ack(4, 2, 1, t0), // after the new cursor: due
                ack(5, 3, 1, t0), // after the new cursor: due, missing
            ],
            sent: HashMap::new(),
            epochs: vec!["a".into(), "b".into()],
        };
        let v = verify(
            &ledger,
            &[log(vec![
                seg("a", 4, 5, t0, &[(5, 1)]),
                seg("b", 1, 2, t0, &[(2, 4)]),
            ])],
        );
        assert_eq!((v.expected, v.excused, v.lost), (3, 2, 1), "{v:?}");
    }

    #[test]
    fn a_client_left_behind_in_an_old_epoch_loses_the_new_one() {
        let t0 = Instant::now();
        let ledger = Ledger {
            acks: vec![ack(1, 5, 0, t0), ack(2, 1, 1, t0)],
            sent: HashMap::new(),
            epochs: vec!["a".into(), "b".into()],
        };
        let v = verify(&ledger, &[log(vec![seg("a", 4, 5, t0, &[(5, 1)])])]);
        assert_eq!((v.expected, v.lost, v.lost_everywhere), (2, 1, 1), "{v:?}");
    }

    #[test]
    fn a_postgres_restart_keeps_the_epoch_and_every_event_is_due() {
        let t0 = Instant::now();
        let ledger = Ledger {
            acks: vec![ack(1, 5, 0, t0), ack(2, 6, 1, t0)],
            sent: HashMap::new(),
            epochs: vec!["a".into(), "a".into()],
        };
        let v = verify(&ledger, &[log(vec![seg("a", 4, 6, t0, &[(5, 1)])])]);
        assert_eq!((v.expected, v.lost), (2, 1), "{v:?}");
        let v = verify(&ledger, &[log(vec![seg("a", 4, 6, t0, &[(5, 1), (6, 2)])])]);
        assert_eq!((v.expected, v.lost, v.id_mismatch), (2, 0, 0), "{v:?}");
    }
}
