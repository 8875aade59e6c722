//! The shown messages of every session, in memory only and bounded in bytes, keyed so that a
//! message is shared only within one login, mailbox and UIDVALIDITY; and, per stored message,
//! whether it needs envelopd's form at all.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::present::Presentation;

/// Decrypted messages kept in memory, bounded by their total size; never written to disk. Also
/// remembers, per stored message, whether it is shown in envelopd's form at all (a stored
/// message never changes), so that a folder opened again needs no extra item from the server.
pub struct Cache {
    entries: HashMap<CacheKey, Arc<Presentation>>,
    order: VecDeque<CacheKey>,
    bytes: usize,
    limit: usize,
    kinds: HashMap<MailboxKey, HashMap<u32, bool>>,
    kind_count: usize,
}

/// (login, mailbox, UIDVALIDITY, UID): a UID names the same message only within all four.
pub(crate) type CacheKey = (String, String, u32, u32);

/// (login, mailbox, UIDVALIDITY): the messages of one mailbox as one login sees them.
pub(crate) type MailboxKey = (String, String, u32);

/// How many messages' kinds are remembered at most (about 40 bytes each); beyond, all are
/// forgotten and learnt again (each folder then costs one more header fetch).
const MAX_KINDS: usize = 1 << 20;

impl Cache {
    /// An empty cache holding at most `limit` bytes of shown messages.
    pub fn new(limit: usize) -> Self {
        Cache {
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            limit,
            kinds: HashMap::new(),
            kind_count: 0,
        }
    }

    pub(crate) fn get(&self, key: &CacheKey) -> Option<Arc<Presentation>> {
        self.entries.get(key).cloned()
    }

    /// Whether the stored message `uid` of `mailbox` is shown in envelopd's form, if known.
    pub(crate) fn kind(&self, mailbox: &MailboxKey, uid: u32) -> Option<bool> {
        self.kinds.get(mailbox)?.get(&uid).copied()
    }

    /// Whether anything is known about `mailbox`'s messages (it was opened before).
    pub(crate) fn knows(&self, mailbox: &MailboxKey) -> bool {
        self.kinds.get(mailbox).is_some_and(|k| !k.is_empty())
    }

    pub(crate) fn set_kind(&mut self, mailbox: &MailboxKey, uid: u32, shown: bool) {
        if self.kind_count >= MAX_KINDS {
            self.kinds.clear();
            self.kind_count = 0;
        }
        let known = self.kinds.entry(mailbox.clone()).or_default();
        if known.insert(uid, shown).is_none() {
            self.kind_count += 1;
        }
    }

    pub(crate) fn insert(&mut self, key: CacheKey, value: Arc<Presentation>) {
        let size = value.footprint();
        // A message of more than an eighth of the cache is opened again when asked for again
        // (about 0.1 s for 20 MB) rather than evicting a folder listing's worth of small ones.
        if size > self.limit / 8 {
            return;
        }
        while self.bytes + size > self.limit {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(v) = self.entries.remove(&old) {
                self.bytes -= v.footprint();
            }
        }
        if let Some(v) = self.entries.insert(key.clone(), value) {
            self.bytes -= v.footprint();
            self.order.retain(|k| k != &key);
        }
        self.bytes += size;
        self.order.push_back(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_stays_within_its_size() {
        let p = |n: usize| {
            Arc::new(Presentation::from(::present::Presentation::as_stored(
                vec![b'x'; n],
            )))
        };
        let k = |uid| ("u".to_string(), "INBOX".to_string(), 1, uid);
        // Counted exactly: the message, its status and the most its memo may keep.
        let limit = 80 * 1024;
        let mut c = Cache::new(limit);
        let one = p(1000).footprint();
        assert_eq!(one, 1000 + crate::fetch::MEMO_BYTES);
        for uid in 1..=10 {
            c.insert(k(uid), p(1000));
            assert!(c.bytes <= limit);
        }
        let kept: Vec<u32> = (1..=10).filter(|&u| c.get(&k(u)).is_some()).collect();
        assert_eq!(kept.len(), limit / one, "{kept:?}");
        assert_eq!(c.bytes, kept.len() * one);
        assert!(
            c.get(&k(1)).is_none() && c.get(&k(10)).is_some(),
            "oldest go first"
        );
        // More than an eighth of the cache: opened again when asked again, not kept.
        c.insert(k(11), p(limit / 8));
        assert!(c.get(&k(11)).is_none());
        assert_eq!(c.bytes, kept.len() * one);
    }
}
