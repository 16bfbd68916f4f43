//! A bounded queue from the network actor to the application: the actor never blocks on
//! it (a full queue drops its oldest item and counts the loss, reported to the reader as
//! one "lagged by n" item); the reader can block with a timeout, poll, or await.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// What a read of a [`Queue`] found.
#[derive(Debug)]
pub(crate) enum Pop<T> {
    /// The next item.
    Item(T),
    /// This many items were dropped (oldest first) since the last read.
    Lagged(u64),
    /// Nothing yet.
    Empty,
    /// Nothing more will come (the node shut down).
    Ended,
}

/// Ring capacity an emptied queue keeps (items); more is released when it empties.
const KEEP_CAPACITY: usize = 16;

struct Inner<T> {
    items: VecDeque<T>,
    lost: u64,
    /// The reader is gone: the actor stops feeding it.
    reader_closed: bool,
    /// The actor is gone: the reader gets what is left, then [`Pop::Ended`].
    writer_closed: bool,
}

/// See the module docs.
pub(crate) struct Queue<T> {
    inner: Mutex<Inner<T>>,
    cond: Condvar,
    notify: Notify,
    capacity: usize,
}

impl<T> Queue<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        Queue {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                lost: 0,
                reader_closed: false,
                writer_closed: false,
            }),
            cond: Condvar::new(),
            notify: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        // A panic while holding this lock cannot leave the queue inconsistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an item, dropping the oldest when full. Returns `(accepted, dropped_one)`;
    /// not accepted when the reader is gone.
    pub(crate) fn push(&self, item: T) -> (bool, bool) {
        let mut g = self.lock();
        if g.reader_closed {
            return (false, false);
        }
        let mut dropped = false;
        if g.items.len() >= self.capacity {
            g.items.pop_front();
            g.lost += 1;
            dropped = true;
        }
        g.items.push_back(item);
        drop(g);
        self.cond.notify_one();
        self.notify.notify_one();
        (true, dropped)
    }

    /// The reader is gone.
    pub(crate) fn close_reader(&self) {
        let mut g = self.lock();
        g.reader_closed = true;
        g.items.clear();
    }

    pub(crate) fn is_reader_closed(&self) -> bool {
        self.lock().reader_closed
    }

    /// The writer is gone (wakes every waiting reader).
    pub(crate) fn close_writer(&self) {
        self.lock().writer_closed = true;
        self.cond.notify_all();
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    fn pop_locked(g: &mut Inner<T>) -> Pop<T> {
        if g.lost > 0 {
            return Pop::Lagged(std::mem::take(&mut g.lost));
        }
        match g.items.pop_front() {
            Some(item) => {
                // A burst (e.g. a presence Online per peer at start) grows the ring; hand
                // that back once the reader caught up, so an idle queue stays small.
                if g.items.is_empty() && g.items.capacity() > KEEP_CAPACITY {
                    g.items.shrink_to(KEEP_CAPACITY);
                }
                Pop::Item(item)
            }
            None if g.writer_closed || g.reader_closed => Pop::Ended,
            None => Pop::Empty,
        }
    }

    /// Reads without waiting.
    pub(crate) fn try_pop(&self) -> Pop<T> {
        Self::pop_locked(&mut self.lock())
    }

    /// Waits up to `timeout` for something to read ([`Pop::Empty`] on timeout).
    pub(crate) fn pop_timeout(&self, timeout: Duration) -> Pop<T> {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            match Self::pop_locked(&mut g) {
                Pop::Empty => {}
                other => return other,
            }
            let now = Instant::now();
            if now >= deadline {
                return Pop::Empty;
            }
            g = match self.cond.wait_timeout(g, deadline - now) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Waits for something to read (never [`Pop::Empty`]).
    pub(crate) async fn pop(&self) -> Pop<T> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_pop() {
                Pop::Empty => notified.await,
                other => return other,
            }
        }
    }

    /// Items waiting.
    pub(crate) fn len(&self) -> usize {
        self.lock().items.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_oldest_and_reports_lag_once() {
        let q = Queue::new(2);
        assert_eq!(q.push(1), (true, false));
        assert_eq!(q.push(2), (true, false));
        assert_eq!(q.push(3), (true, true));
        assert_eq!(q.push(4), (true, true));
        assert!(matches!(q.try_pop(), Pop::Lagged(2)));
        assert!(matches!(q.try_pop(), Pop::Item(3)));
        assert!(matches!(q.try_pop(), Pop::Item(4)));
        assert!(matches!(q.try_pop(), Pop::Empty));
        assert!(matches!(
            q.pop_timeout(Duration::from_millis(5)),
            Pop::Empty
        ));
        q.push(5);
        q.close_writer();
        assert!(matches!(
            q.pop_timeout(Duration::from_secs(5)),
            Pop::Item(5)
        ));
        assert!(matches!(q.pop_timeout(Duration::from_secs(5)), Pop::Ended));
        q.close_reader();
        assert_eq!(q.push(6), (false, false));
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn an_emptied_queue_releases_a_burst() {
        let q = Queue::new(10_000);
        for i in 0..1_000 {
            q.push(i);
        }
        assert!(q.lock().items.capacity() >= 1_000);
        for i in 0..1_000 {
            assert!(matches!(q.try_pop(), Pop::Item(n) if n == i));
        }
        assert!(matches!(q.try_pop(), Pop::Empty));
        let cap = q.lock().items.capacity();
        assert!(
            cap <= KEEP_CAPACITY,
            "an empty queue kept room for {cap} items"
        );
        // And it still works after shrinking.
        q.push(7);
        assert!(matches!(q.try_pop(), Pop::Item(7)));
    }
}
