//! What the POP3 sessions remember between them, in memory only: shown messages (bounded in
//! bytes), and per stored message whether it is shown in envelopd's form and how large it then
//! is, so that a program that polls a mailbox it leaves on the server every few minutes gets
//! exact LIST and STAT sizes without every message being opened again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use present::Presentation;

/// (login, UIDL, stored size): a UIDL names one message of one mailbox for good (RFC 1939 §7),
/// the login decides which keys open it, and the size guards against a server that reuses one.
pub type Key = (String, String, u64);

/// What is known about one stored message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// Shown as stored (no S/MIME, no status header): the server's own size holds.
    AsStored,
    /// Shown in envelopd's form, this many octets long.
    Shown(u64),
}

/// How long a shown size is trusted: the status it includes depends on the time (a certificate
/// expiring, a revocation list arriving), so it is worked out again after this.
const SHOWN_SIZE_FOR: Duration = Duration::from_secs(3600);

/// How many facts are remembered at most (about 100 bytes each); beyond, all are forgotten.
const MAX_FACTS: usize = 1 << 20;

/// Shown messages and facts about stored ones.
pub struct Cache {
    entries: HashMap<Key, Arc<Presentation>>,
    order: VecDeque<Key>,
    bytes: usize,
    limit: usize,
    facts: HashMap<Key, (Fact, Instant)>,
}

impl Cache {
    /// An empty cache holding at most `limit` bytes of shown messages.
    pub fn new(limit: usize) -> Self {
        Cache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            limit,
            facts: HashMap::new(),
        }
    }

    /// The shown form of a stored message, if kept.
    pub fn get(&self, key: &Key) -> Option<Arc<Presentation>> {
        self.entries.get(key).cloned()
    }

    /// What is known about a stored message at `now`.
    pub fn fact(&self, key: &Key, now: Instant) -> Option<Fact> {
        let (fact, at) = self.facts.get(key)?;
        match fact {
            Fact::Shown(_) if now.saturating_duration_since(*at) > SHOWN_SIZE_FOR => None,
            f => Some(*f),
        }
    }

    /// Remembers what a stored message is, learnt at `now`.
    pub fn set_fact(&mut self, key: Key, fact: Fact, now: Instant) {
        if self.facts.len() >= MAX_FACTS {
            self.facts.clear();
        }
        self.facts.insert(key, (fact, now));
    }

    /// Keeps a shown message (and its size), evicting the oldest beyond the limit; one over an
    /// eighth of the cache is not kept (opened again when asked for again).
    pub fn insert(&mut self, key: Key, value: Arc<Presentation>, now: Instant) {
        self.set_fact(
            key.clone(),
            Fact::Shown(crate::wire::wire_size(&value.message)),
            now,
        );
        let size = value.footprint();
        if size > self.limit / 8 {
            return;
        }
        if let Some(old) = self.entries.remove(&key) {
            self.bytes -= old.footprint();
            self.order.retain(|k| k != &key);
        }
        while self.bytes + size > self.limit {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(v) = self.entries.remove(&old) {
                self.bytes -= v.footprint();
            }
        }
        self.bytes += size;
        self.order.push_back(key.clone());
        self.entries.insert(key, value);
    }

    /// The bytes of shown messages held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_bytes_and_sizes_expire() {
        let now = Instant::now();
        let mut c = Cache::new(8000);
        let key = |u: &str| ("l".to_string(), u.to_string(), 10);
        let p = |n| Arc::new(Presentation::as_stored(vec![b'x'; n]));
        c.insert(key("a"), p(900), now);
        c.insert(key("b"), p(900), now);
        assert!(c.get(&key("a")).is_some());
        c.insert(key("a"), p(900), now);
        assert_eq!(c.bytes(), 1800, "a message kept again replaces itself");
        for u in ["c", "d", "e", "f", "g", "h", "i"] {
            c.insert(key(u), p(900), now);
        }
        assert!(c.bytes() <= 8000);
        assert!(c.get(&key("b")).is_none(), "oldest evicted");
        // Too large to keep, but its size is known.
        c.insert(key("big"), p(5000), now);
        assert!(c.get(&key("big")).is_none());
        assert_eq!(c.fact(&key("big"), now), Some(Fact::Shown(5002)));
        assert_eq!(c.fact(&key("big"), now + SHOWN_SIZE_FOR * 2), None);
        c.set_fact(key("plain"), Fact::AsStored, now);
        assert_eq!(
            c.fact(&key("plain"), now + SHOWN_SIZE_FOR * 2),
            Some(Fact::AsStored),
            "a stored message does not change"
        );
    }
}
