//! Per-author ordering and replay protection for one topic.
//!
//! Each (author, topic) numbers its messages 1, 2, 3, … from a start value (the author's
//! clock in microseconds when it first published, so a restarted author continues above its
//! earlier numbers). Plumtree may deliver out of order (a graft arrives after later eager
//! pushes); this sequencer hands messages to the application in publish order, waiting at
//! most `reorder_timeout` for a gap to fill before skipping it. A skipped message that
//! arrives later is still delivered (late, out of order) — never dropped — and a message
//! already delivered, or older than the window, is refused as a replay.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use super::time::Time;
use crate::identity::PeerId;

/// Sequencer parameters.
#[derive(Clone, Debug)]
pub struct Config {
    /// How many sequence numbers below the next expected one are remembered (1,024); an
    /// older message is refused as a replay.
    pub window: u64,
    /// Longest wait for a missing message before later ones are delivered anyway (500 ms:
    /// a few graft rounds of 80 ms plus a round trip).
    pub reorder_timeout: Duration,
    /// Most messages held back per author while waiting (256); beyond it the gap is
    /// skipped at once.
    pub max_buffered_per_author: usize,
    /// Most authors tracked per topic (10,000); the least recently heard is forgotten.
    pub max_authors: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            window: 1024,
            reorder_timeout: Duration::from_millis(500),
            max_buffered_per_author: 256,
            max_authors: 10_000,
        }
    }
}

/// Why a message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqError {
    /// Already delivered (or waiting to be).
    Duplicate,
    /// Older than the replay window.
    TooOld,
}

#[derive(Debug)]
struct Author<T> {
    /// The next sequence number to deliver in order.
    next: u64,
    /// Bit `i` set: `next - 1 - i` was delivered. Covers `window` numbers below `next`.
    delivered: Vec<u64>,
    /// Messages above `next`, waiting for the gap to fill.
    waiting: BTreeMap<u64, T>,
    /// When the current gap will be skipped.
    gap_deadline: Option<Time>,
    last_heard: Time,
}

/// Orders one topic's messages per author.
#[derive(Debug)]
pub struct Sequencer<T> {
    config: Config,
    authors: HashMap<PeerId, Author<T>>,
    deadlines: BTreeSet<(Time, PeerId)>,
}

impl<T> Author<T> {
    fn new(first: u64, words: usize, now: Time) -> Self {
        Author {
            next: first,
            delivered: vec![0; words],
            waiting: BTreeMap::new(),
            gap_deadline: None,
            last_heard: now,
        }
    }

    fn bit(&self, seq: u64) -> Option<(usize, u64)> {
        let back = self.next.checked_sub(seq)?.checked_sub(1)?;
        let word = usize::try_from(back / 64).ok()?;
        (word < self.delivered.len()).then_some((word, 1 << (back % 64)))
    }

    fn was_delivered(&self, seq: u64) -> Option<bool> {
        self.bit(seq).map(|(w, m)| self.delivered[w] & m != 0)
    }

    /// Moves `next` forward by one, shifting the delivered bitmap; `delivered` says whether
    /// the number passed over was delivered (true) or skipped (false).
    fn advance(&mut self, delivered: bool) {
        let mut carry = u64::from(delivered);
        for w in self.delivered.iter_mut() {
            let out = *w >> 63;
            *w = (*w << 1) | carry;
            carry = out;
        }
        self.next = self.next.saturating_add(1);
    }

    fn check(&self, seq: u64) -> Result<(), SeqError> {
        if seq >= self.next {
            return if self.waiting.contains_key(&seq) {
                Err(SeqError::Duplicate)
            } else {
                Ok(())
            };
        }
        match self.was_delivered(seq) {
            Some(true) => Err(SeqError::Duplicate),
            Some(false) => Ok(()),
            None => Err(SeqError::TooOld),
        }
    }
}

impl<T> Sequencer<T> {
    /// An empty sequencer.
    pub fn new(config: Config) -> Self {
        Sequencer {
            config,
            authors: HashMap::new(),
            deadlines: BTreeSet::new(),
        }
    }

    fn words(&self) -> usize {
        usize::try_from(self.config.window.div_ceil(64))
            .unwrap_or(1)
            .max(1)
    }

    /// Whether a message `seq` from `author` would be accepted (checked before its signature
    /// is verified and before it is forwarded).
    pub fn check(&self, author: &PeerId, seq: u64) -> Result<(), SeqError> {
        match self.authors.get(author) {
            Some(a) => a.check(seq),
            None => Ok(()),
        }
    }

    /// Accepts a verified message and appends to `ready` everything now deliverable, in
    /// order. Returns the refusal instead if it is a duplicate or too old.
    pub fn push(
        &mut self,
        author: PeerId,
        seq: u64,
        item: T,
        now: Time,
        ready: &mut Vec<T>,
    ) -> Result<(), SeqError> {
        if !self.authors.contains_key(&author) {
            self.make_room(ready);
            let words = self.words();
            self.authors.insert(author, Author::new(seq, words, now));
        }
        let max_buffered = self.config.max_buffered_per_author;
        let window = self.config.window;
        let Some(a) = self.authors.get_mut(&author) else {
            return Ok(());
        };
        a.check(seq)?;
        a.last_heard = now;
        if seq < a.next {
            // A skipped message arriving late: deliver it now rather than lose it.
            if let Some((w, m)) = a.bit(seq) {
                a.delivered[w] |= m;
            }
            ready.push(item);
            return Ok(());
        }
        if seq - a.next > window {
            // A jump beyond the window (the author restarted, or we missed a long stretch):
            // release what waits and restart the count here.
            ready.extend(std::mem::take(&mut a.waiting).into_values());
            if let Some(t) = a.gap_deadline {
                self.deadlines.remove(&(t, author));
            }
            let words = a.delivered.len();
            *a = Author::new(seq, words, now);
        }
        a.waiting.insert(seq, item);
        Self::release(a, ready);
        if a.waiting.len() > max_buffered {
            Self::skip_gap(a, ready);
        }
        self.reschedule(author, now);
        Ok(())
    }

    /// Delivers consecutive waiting messages from `next` on.
    fn release(a: &mut Author<T>, ready: &mut Vec<T>) {
        while let Some(item) = a.waiting.remove(&a.next) {
            ready.push(item);
            a.advance(true);
        }
    }

    /// Gives up on the gap before the first waiting message.
    fn skip_gap(a: &mut Author<T>, ready: &mut Vec<T>) {
        if let Some((&first, _)) = a.waiting.first_key_value() {
            let gap = first - a.next;
            if gap as usize >= a.delivered.len() * 64 {
                a.delivered.iter_mut().for_each(|w| *w = 0);
                a.next = first;
            } else {
                for _ in 0..gap {
                    a.advance(false);
                }
            }
            Self::release(a, ready);
        }
    }

    fn reschedule(&mut self, author: PeerId, now: Time) {
        let Some(a) = self.authors.get_mut(&author) else {
            return;
        };
        let wanted = if a.waiting.is_empty() {
            None
        } else {
            Some(a.gap_deadline.unwrap_or(now + self.config.reorder_timeout))
        };
        if wanted != a.gap_deadline {
            if let Some(old) = a.gap_deadline {
                self.deadlines.remove(&(old, author));
            }
            if let Some(new) = wanted {
                self.deadlines.insert((new, author));
            }
            a.gap_deadline = wanted;
        }
    }

    /// At the author bound, forgets the author heard from least recently, first releasing
    /// whatever it had waiting (never dropped). A scan, but only at the bound.
    fn make_room(&mut self, ready: &mut Vec<T>) {
        if self.authors.len() < self.config.max_authors {
            return;
        }
        let victim = self
            .authors
            .iter()
            .min_by_key(|(id, a)| (a.last_heard, **id))
            .map(|(id, _)| *id);
        if let Some(mut a) = victim.and_then(|id| self.authors.remove(&id)) {
            if let (Some(t), Some(id)) = (a.gap_deadline, victim) {
                self.deadlines.remove(&(t, id));
            }
            ready.extend(std::mem::take(&mut a.waiting).into_values());
        }
    }

    /// When a gap will next be skipped.
    pub fn poll_timeout(&self) -> Option<Time> {
        self.deadlines.iter().next().map(|(t, _)| *t)
    }

    /// Skips every gap whose wait is over, appending the released messages to `ready`.
    pub fn handle_timeout(&mut self, now: Time, ready: &mut Vec<T>) {
        while let Some(&(t, author)) = self.deadlines.iter().next() {
            if t > now {
                break;
            }
            self.deadlines.remove(&(t, author));
            if let Some(a) = self.authors.get_mut(&author) {
                a.gap_deadline = None;
                Self::skip_gap(a, ready);
            }
            self.reschedule(author, now);
        }
    }

    /// How many authors are tracked.
    pub fn authors(&self) -> usize {
        self.authors.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId::from_bytes([n; 32])
    }

    fn t(ms: u64) -> Time {
        Time::from_millis(ms)
    }

    fn push(s: &mut Sequencer<u64>, seq: u64, now: Time) -> Result<Vec<u64>, SeqError> {
        let mut ready = vec![];
        s.push(peer(1), seq, seq, now, &mut ready).map(|_| ready)
    }

    #[test]
    fn in_order_messages_pass_straight_through() {
        let mut s = Sequencer::new(Config::default());
        for seq in 100..110 {
            assert_eq!(push(&mut s, seq, t(0)), Ok(vec![seq]));
        }
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn out_of_order_messages_are_reordered() {
        let mut s = Sequencer::new(Config::default());
        assert_eq!(push(&mut s, 10, t(0)), Ok(vec![10]));
        assert_eq!(push(&mut s, 12, t(1)), Ok(vec![]));
        assert_eq!(push(&mut s, 13, t(2)), Ok(vec![]));
        assert_eq!(s.poll_timeout(), Some(t(501)));
        assert_eq!(push(&mut s, 11, t(3)), Ok(vec![11, 12, 13]));
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn a_gap_is_skipped_after_the_timeout_and_the_late_message_still_delivered() {
        let mut s = Sequencer::new(Config::default());
        push(&mut s, 1, t(0)).unwrap();
        assert_eq!(push(&mut s, 3, t(0)), Ok(vec![]));
        let mut ready = vec![];
        s.handle_timeout(t(499), &mut ready);
        assert!(ready.is_empty());
        s.handle_timeout(t(500), &mut ready);
        assert_eq!(ready, vec![3]);
        assert_eq!(push(&mut s, 2, t(600)), Ok(vec![2]), "late but not lost");
        assert_eq!(push(&mut s, 2, t(601)), Err(SeqError::Duplicate));
        assert_eq!(push(&mut s, 4, t(602)), Ok(vec![4]));
    }

    #[test]
    fn replays_are_refused() {
        let mut s = Sequencer::new(Config {
            window: 64,
            ..Config::default()
        });
        for seq in 1..=200 {
            push(&mut s, seq, t(0)).unwrap();
        }
        assert_eq!(s.check(&peer(1), 200), Err(SeqError::Duplicate));
        assert_eq!(s.check(&peer(1), 137), Err(SeqError::Duplicate));
        assert_eq!(s.check(&peer(1), 136), Err(SeqError::TooOld));
        assert_eq!(s.check(&peer(1), 1), Err(SeqError::TooOld));
        assert_eq!(push(&mut s, 5, t(0)), Err(SeqError::TooOld));
        assert_eq!(s.check(&peer(1), 201), Ok(()));
        assert_eq!(
            s.check(&peer(2), 1),
            Ok(()),
            "other authors are independent"
        );
    }

    #[test]
    fn first_contact_accepts_earlier_numbers_out_of_order() {
        // A late joiner first sees seq 10, then 9 (which was still in flight).
        let mut s = Sequencer::new(Config::default());
        assert_eq!(push(&mut s, 10, t(0)), Ok(vec![10]));
        assert_eq!(push(&mut s, 9, t(0)), Ok(vec![9]));
        assert_eq!(push(&mut s, 9, t(0)), Err(SeqError::Duplicate));
    }

    #[test]
    fn a_restarted_author_jumping_far_ahead_is_accepted() {
        let mut s = Sequencer::new(Config::default());
        push(&mut s, 5, t(0)).unwrap();
        push(&mut s, 7, t(0)).unwrap();
        assert_eq!(push(&mut s, 1_000_000, t(1)), Ok(vec![7, 1_000_000]));
        assert_eq!(push(&mut s, 1_000_001, t(1)), Ok(vec![1_000_001]));
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn buffers_and_authors_are_bounded() {
        let mut s = Sequencer::new(Config {
            max_buffered_per_author: 4,
            max_authors: 3,
            ..Config::default()
        });
        push(&mut s, 1, t(0)).unwrap();
        let mut out = vec![];
        for seq in 3..=6 {
            out.extend(push(&mut s, seq, t(0)).unwrap());
        }
        assert!(out.is_empty());
        assert_eq!(push(&mut s, 7, t(0)), Ok(vec![3, 4, 5, 6, 7]));
        for n in 2..50u8 {
            let mut ready = vec![];
            s.push(peer(n), 1, 1, t(u64::from(n)), &mut ready).unwrap();
            assert_eq!(ready, vec![1]);
        }
        assert_eq!(s.authors(), 3);
    }
}
