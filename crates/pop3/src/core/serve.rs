//! Serving LIST, STAT, RETR and TOP: the index of the mailbox (UIDLs, stored and shown sizes,
//! remembered per login), opening shown messages in bounded batches, and writing a shown
//! message out in windows, byte-stuffed.

use super::*;

impl Core {
    pub(super) fn learn_uids(&mut self, uids: Vec<(u32, String)>) {
        let Some(index) = self.index.as_mut() else {
            return;
        };
        for (n, uid) in uids {
            if let Some(e) = index.get_mut(&n) {
                e.uid = Some(uid);
            }
        }
        // What earlier sessions learnt about these messages.
        let login = self.login.clone().unwrap_or_default();
        let now = Instant::now();
        let cache = self.env.cache().lock();
        let Ok(cache) = cache else { return };
        for e in index.values_mut() {
            let Some(uid) = &e.uid else { continue };
            match cache.fact(&(login.clone(), uid.clone(), e.stored), now) {
                Some(Fact::AsStored) => {
                    e.form = Some(false);
                    e.shown = Some(e.stored);
                }
                Some(Fact::Shown(size)) => {
                    e.form = Some(true);
                    e.shown = Some(size);
                }
                None => {}
            }
        }
    }

    pub(super) fn key(&self, n: u32) -> Option<Key> {
        let e = self.index.as_ref()?.get(&n)?;
        Some((
            self.login.clone().unwrap_or_default(),
            e.uid.clone()?,
            e.stored,
        ))
    }

    pub(super) fn remember(&mut self, n: u32, fact: Fact) {
        if let Some(key) = self.key(n) {
            if let Ok(mut c) = self.env.cache().lock() {
                c.set_fact(key, fact, Instant::now());
            }
        }
    }

    pub(super) fn start(&mut self, want: Want) {
        self.task = Task::Serving(want);
    }

    pub(super) fn entry(&self, n: u32) -> Option<&Entry> {
        self.index.as_ref()?.get(&n)
    }

    pub(super) fn entry_mut(&mut self, n: u32) -> Option<&mut Entry> {
        self.index.as_mut()?.get_mut(&n)
    }

    /// Whether message `n` exists and is not marked deleted.
    pub(super) fn listed(&self, n: u32) -> bool {
        self.entry(n).is_some() && !self.deleted.contains(&n)
    }

    /// The messages not marked deleted, in order.
    pub(super) fn live(&self) -> Vec<u32> {
        self.index
            .as_ref()
            .map(|i| {
                i.keys()
                    .copied()
                    .filter(|n| !self.deleted.contains(n))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Goes on with a command envelopd answers itself; false while it waits for the server
    /// or for work.
    pub(super) fn serve(&mut self, want: Want) -> bool {
        if !self.sent.is_empty() || !self.queued.is_empty() {
            return false;
        }
        // The message list, with the UIDs that key what is remembered.
        if self.index.is_none() {
            self.send(Req {
                line: b"LIST\r\n".to_vec(),
                multi: true,
                purpose: Purpose::List,
            });
            if self.caps.uidl {
                self.send(Req {
                    line: b"UIDL\r\n".to_vec(),
                    multi: true,
                    purpose: Purpose::Uidl,
                });
            }
            return false;
        }
        let n = match want {
            Want::Stat | Want::List(None) => None,
            Want::List(Some(n)) | Want::Retr(n) | Want::Top(n, _) => Some(n),
        };
        if let Some(n) = n {
            if !self.listed(n) {
                self.task = Task::Ready;
                self.tell_client(b"-ERR no such message\r\n");
                return true;
            }
        }
        match want {
            Want::Stat | Want::List(_) => self.serve_listing(want),
            Want::Retr(n) | Want::Top(n, _) => self.serve_message(want, n),
        }
    }

    /// STAT and LIST: every size the client is told is the size RETR then sends.
    pub(super) fn serve_listing(&mut self, want: Want) -> bool {
        let wanted: Vec<u32> = match want {
            Want::List(Some(n)) => vec![n],
            _ => self.live(),
        };
        if !self.batch.is_empty() {
            return self.open_batch(want);
        }
        // Which messages are shown in envelopd's form: their headers, in one go.
        let unknown: Vec<u32> = wanted
            .iter()
            .copied()
            .filter(|n| {
                self.entry(*n)
                    .is_some_and(|e| e.shown.is_none() && e.form.is_none() && !e.header_asked)
            })
            .collect();
        if self.caps.top && !unknown.is_empty() {
            for n in unknown {
                if let Some(e) = self.entry_mut(n) {
                    e.header_asked = true;
                }
                self.send(Req {
                    line: format!("TOP {n} 0\r\n").into_bytes(),
                    multi: true,
                    purpose: Purpose::Header(n),
                });
            }
            return false;
        }
        // Shown messages whose size is not known: opened in batches on every core (a
        // message whose header could not be read is opened to find out).
        let mut bytes = 0;
        let mut batch = Vec::new();
        for n in &wanted {
            let Some(e) = self.entry(*n) else { continue };
            if e.shown.is_some() {
                continue;
            }
            if e.stored > self.cfg.max_message as u64 {
                // Shown with its stored size; RETR says why it is not opened.
                let stored = e.stored;
                if let Some(e) = self.entry_mut(*n) {
                    e.shown = Some(stored);
                }
                continue;
            }
            if !batch.is_empty()
                && (bytes + e.stored > BATCH_BYTES || batch.len() >= 2 * self.cfg.workers.max(1))
            {
                break;
            }
            bytes += e.stored;
            batch.push(*n);
        }
        if !batch.is_empty() {
            if want == Want::List(None) {
                // A listing that needs messages opened goes out as their sizes become known,
                // so a client's read timeout does not run out on a large mailbox.
                self.list_known(false);
            }
            for n in batch {
                self.send(Req {
                    line: format!("RETR {n}\r\n").into_bytes(),
                    multi: true,
                    purpose: Purpose::Retr(n),
                });
            }
            return false;
        }
        self.answer_listing(want);
        self.task = Task::Ready;
        true
    }

    /// The retrieved messages of a batch: those shown as stored get their size, the others
    /// are handed out to be opened. False while they are.
    pub(super) fn open_batch(&mut self, want: Want) -> bool {
        let mut open = Vec::new();
        for stored in std::mem::take(&mut self.batch) {
            let header = &stored.bytes[..wire::header_end(&stored.bytes)];
            if present::header_needs_presentation(header) {
                open.push(stored);
                continue;
            }
            let n = stored.number;
            if let Some(e) = self.entry_mut(n) {
                e.form = Some(false);
                e.shown = Some(e.stored);
            }
            self.remember(n, Fact::AsStored);
            if let Want::Retr(_) = want {
                // Asked for: sent as it came.
                self.show(want, Arc::new(Presentation::as_stored(stored.bytes)));
                return true;
            }
            if let Want::Top(n, k) = want {
                self.relay(
                    format!("TOP {n} {k}\r\n").into_bytes(),
                    true,
                    After::Nothing,
                );
                return false;
            }
        }
        if open.is_empty() {
            return true;
        }
        self.presenting = open.iter().map(|s| s.number).collect();
        self.task = Task::Presenting(want);
        self.awaiting = true;
        self.out.push_back(Step::Do(Work::Present {
            login: self.login.clone(),
            messages: open,
        }));
        false
    }

    /// RETR and TOP: from a kept shown form, passed through for a message shown as stored, or
    /// retrieved and opened.
    pub(super) fn serve_message(&mut self, want: Want, n: u32) -> bool {
        if !self.batch.is_empty() {
            return self.open_batch(want);
        }
        let cached = self
            .key(n)
            .and_then(|k| self.env.cache().lock().ok()?.get(&k));
        if let Some(p) = cached {
            self.show(want, p);
            return true;
        }
        let e = self.entry(n).expect("listed").clone();
        if e.form == Some(false) {
            let line = match want {
                Want::Top(n, k) => format!("TOP {n} {k}\r\n"),
                _ => format!("RETR {n}\r\n"),
            };
            self.relay(line.into_bytes(), true, After::Nothing);
            return false;
        }
        if e.stored > self.cfg.max_message as u64 {
            self.too_large(n);
            return true;
        }
        self.send(Req {
            line: format!("RETR {n}\r\n").into_bytes(),
            multi: true,
            purpose: Purpose::Retr(n),
        });
        false
    }

    /// Shown messages are back from the work.
    pub(super) fn presented(&mut self, shown: Vec<Arc<Presentation>>) {
        let numbers = std::mem::take(&mut self.presenting);
        let Task::Presenting(want) = self.task else {
            return;
        };
        self.task = Task::Serving(want);
        let mut asked = None;
        for (n, p) in numbers.into_iter().zip(shown) {
            let size = wire::wire_size(&p.message);
            if let Some(e) = self.entry_mut(n) {
                e.form = Some(true);
                e.shown = Some(size);
            }
            if matches!(want, Want::Retr(m) | Want::Top(m, _) if m == n) {
                asked = Some(p);
            }
        }
        if let Some(p) = asked {
            self.show(want, p);
        }
    }

    /// Sends a shown message (RETR) or its top (TOP) to the client, in windows.
    pub(super) fn show(&mut self, want: Want, p: Arc<Presentation>) {
        if let Want::Retr(n) = want {
            let size = wire::wire_size(&p.message);
            if let Some(listed) = self.entry(n).and_then(|e| e.shown).filter(|l| *l != size) {
                // The verdict changed since LIST (a certificate expired, a CRL arrived): the
                // reader gets today's verdict, not the size announced.
                tracing::warn!(
                    number = n,
                    listed,
                    size,
                    "a shown message's size changed since LIST"
                );
                if let Some(e) = self.entry_mut(n) {
                    e.shown = Some(size);
                }
            }
        }
        let end = match want {
            Want::Top(_, k) => wire::top(&p.message, k).len(),
            _ => p.message.len(),
        };
        let status = match want {
            Want::Top(..) => "+OK\r\n".to_string(),
            _ => format!("+OK {} octets\r\n", wire::wire_size(&p.message)),
        };
        self.tell_client(status);
        self.outgoing = Some(Outgoing {
            message: p,
            end,
            pos: 0,
            bol: true,
        });
        self.task = Task::Ready;
    }

    /// The next window of a shown message going out, byte-stuffed; the last one carries the
    /// terminator.
    pub(super) fn next_window(&mut self) -> Option<Vec<u8>> {
        let o = self.outgoing.as_mut()?;
        let bytes = &o.message.message[..o.end];
        let stop = (o.pos + WRITE_WINDOW).min(bytes.len());
        let mut chunk = Vec::with_capacity(stop - o.pos + 64);
        let mut i = o.pos;
        while i < stop {
            if o.bol && bytes[i] == b'.' {
                chunk.push(b'.');
            }
            match memchr::memchr(b'\n', &bytes[i..stop]) {
                Some(p) => {
                    chunk.extend_from_slice(&bytes[i..i + p + 1]);
                    i += p + 1;
                    o.bol = true;
                }
                None => {
                    chunk.extend_from_slice(&bytes[i..stop]);
                    i = stop;
                    o.bol = false;
                }
            }
        }
        o.pos = stop;
        if o.pos >= bytes.len() {
            chunk.extend_from_slice(wire::tail(bytes));
            chunk.extend_from_slice(b".\r\n");
            self.outgoing = None;
        }
        Some(chunk)
    }

    /// STAT's or LIST's answer from the index.
    pub(super) fn answer_listing(&mut self, want: Want) {
        let size = |e: &Entry| e.shown.unwrap_or(e.stored);
        match want {
            Want::List(Some(n)) => {
                let e = self.entry(n).expect("listed");
                let reply = format!("+OK {n} {}\r\n", size(e));
                self.tell_client(reply);
            }
            _ if self.listed.is_some() => {
                // A listing under way: the remaining lines, then the end.
                self.list_known(true);
                self.listed = None;
                self.tell_client(".\r\n");
            }
            _ => {
                let live = self.live();
                let total: u64 = live.iter().filter_map(|n| self.entry(*n)).map(size).sum();
                if want == Want::Stat {
                    return self.tell_client(format!("+OK {} {total}\r\n", live.len()));
                }
                let mut out = format!("+OK {} messages ({total} octets)\r\n", live.len());
                for n in live {
                    if let Some(e) = self.entry(n) {
                        out.push_str(&format!("{n} {}\r\n", size(e)));
                    }
                }
                out.push_str(".\r\n");
                self.tell_client(out);
            }
        }
    }

    /// Writes the lines of the whole-mailbox listing whose sizes are known, in order, from
    /// where the last call stopped; the first call writes its status line (the total is not
    /// known yet, so it gives the count only). `last`: every line that is left, a size still
    /// unknown given as stored (as a listing answered at once gives it).
    fn list_known(&mut self, last: bool) {
        let live = self.live();
        let mut out = String::new();
        let mut at = match self.listed {
            Some(at) => at,
            None => {
                out.push_str(&format!("+OK {} messages\r\n", live.len()));
                0
            }
        };
        while let Some(n) = live.get(at) {
            match self.entry(*n).map(|e| (e.shown, e.stored)) {
                Some((Some(size), _)) => out.push_str(&format!("{n} {size}\r\n")),
                Some((None, stored)) if last => out.push_str(&format!("{n} {stored}\r\n")),
                Some((None, _)) => break,
                None => {}
            }
            at += 1;
        }
        self.listed = Some(at);
        if !out.is_empty() {
            self.tell_client(out);
        }
    }
}
