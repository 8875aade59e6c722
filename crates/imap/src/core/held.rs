//! The responses of a pending FETCH: answered at once where they can be, otherwise held in
//! order while the stored messages they carry are opened beside the session
//! ([`Step::Open`], [`Core::opened`]), read ahead of the client no further than
//! [`AHEAD_BYTES`](super::AHEAD_BYTES).

use std::sync::Arc;

use super::{needs_form, needs_shown_form, Core, Reply, Step, Stored, MOVE_BODY};
use crate::fetch::{self, FetchPlan};
use crate::present::Presentation;

impl Core {
    /// The shown form of a stored message handed out with [`Step::Open`].
    pub fn opened(&mut self, uid: u32, shown: Arc<Presentation>) {
        let Some(size) = self.opening.remove(&uid) else {
            tracing::error!("the IMAP session got a message it did not ask to open");
            return self.close();
        };
        self.ahead = self.ahead.saturating_sub(size) + shown.message.len();
        if let Some(old) = self.shown_here.insert(uid, shown) {
            self.ahead = self.ahead.saturating_sub(old.message.len());
        }
        self.release();
        if self.opening.is_empty() {
            if let Some(tagged) = self.tagged.take() {
                self.complete_fetch(tagged);
            }
        }
        self.pump();
    }

    /// The answer to one response of a pending FETCH, if it can be given without fetching the
    /// stored message (plain, or shown form cached); `None`: it must wait.
    pub(super) fn answer_now(&self, m: Vec<u8>) -> Result<Reply, Vec<u8>> {
        let Some(plan) = self.pending.as_ref() else {
            return Err(m);
        };
        let m = if plan.marker {
            if let Some((cut, marker)) = fetch::peek_marker(&m, plan) {
                let needs = needs_form(&marker);
                let uid = fetch::quick_uid(&m);
                if let Some(uid) = uid {
                    self.set_kind(uid, needs);
                }
                if !needs {
                    return Ok(Reply::Bytes(fetch::cut_marker(m, cut)));
                }
                // Waits for its shown form: not parsed now (a parse checks every byte of a
                // stored message that may be megabytes long).
                if uid.is_some_and(|u| self.cached(u).is_none()) {
                    return Err(m);
                }
            }
            m
        } else {
            if let Some(uid) = fetch::quick_uid(&m) {
                match self.kind(uid) {
                    // A message known to be plain passes as the server sent it, unparsed.
                    Some(false) if plan.shows_uid() => return Ok(Reply::Bytes(m)),
                    // A shown message answered before from the same server response.
                    Some(true) => match self.cached(uid) {
                        Some(p) => {
                            if let Some(a) = p.sections.answer(plan, &m) {
                                return Ok(Reply::Bytes(a));
                            }
                        }
                        // Waits for its shown form (not parsed now, as above); a small
                        // response may carry no content (an unsolicited FLAGS) and is judged.
                        None if m.len() >= MOVE_BODY => return Err(m),
                        None => {}
                    },
                    _ => {}
                }
            }
            m
        };
        let answer = match m
            .starts_with(b"* ")
            .then(|| fetch::parse_response(&m))
            .flatten()
        {
            None => Some(Reply::Bytes(self.caps(&m))),
            Some(r) => match self.judge(&r, plan) {
                None => None,
                Some(false) => Some(Reply::Bytes(fetch::rewrite(r, plan, None))),
                Some(true) => r.uid().and_then(|uid| self.cached(uid)).map(|shown| {
                    let parts =
                        fetch::rewrite_parts(r, plan, Some(&shown.message), &shown.sections);
                    if let [fetch::Part::Bytes(answer)] = parts.as_slice() {
                        shown.sections.keep_answer(plan, &m, answer);
                    }
                    Reply::Shown(shown, parts)
                }),
            },
        };
        answer.ok_or(m)
    }

    /// The shown form of the stored message `uid`, if it was opened during this FETCH or is in
    /// the cache.
    pub(super) fn cached(&self, uid: u32) -> Option<Arc<Presentation>> {
        if let Some(p) = self.shown_here.get(&uid) {
            return Some(p.clone());
        }
        // A message being opened is answered with what its opening gives back (the cache may
        // have it a moment earlier: its shown form would then stay here, unclaimed).
        if self.opening.contains_key(&uid) {
            return None;
        }
        let k = self.cache_key(uid)?;
        self.env.cache().lock().ok()?.get(&k)
    }

    /// Opens the stored message a held FETCH response carries (`BODY[]`) beside the session
    /// now, if it is one envelopd shows in its form and has not opened yet; returns the
    /// response to hold. A large stored message moves out of the response (which keeps an empty literal in
    /// its place, answered from the shown form): it is not held twice while it waits.
    pub(super) fn open_early(&mut self, m: Vec<u8>) -> Vec<u8> {
        let Some(plan) = self.pending.as_ref() else {
            return m;
        };
        if !m.starts_with(b"* ") {
            return m;
        }
        if let Some(uid) = fetch::quick_uid(&m) {
            if self.kind(uid) == Some(false) || self.cached(uid).is_some() {
                return m;
            }
        }
        // A large stored message is cut out before parsing: imap-codec would check it byte by
        // byte, and it only has to be passed on to be opened.
        let hollow = (m.len() >= MOVE_BODY)
            .then(|| fetch::hollow_body(&m, MOVE_BODY))
            .flatten();
        let cut = hollow.as_ref().and_then(|(skeleton, range)| {
            let r = fetch::parse_response(skeleton)?;
            r.whole_body()
                .is_some_and(<[u8]>::is_empty)
                .then(|| (r, range.clone()))
        });
        // The parsed response, and where the stored message lies in `m`.
        let (r, body) = match cut {
            Some((r, range)) => (r, Some(range)),
            None => {
                let Some(r) = fetch::parse_response(&m) else {
                    return m;
                };
                let body = r.whole_body().map(|b| {
                    // imap-codec borrows it from `m`.
                    let start = b.as_ptr() as usize - m.as_ptr() as usize;
                    start..start + b.len()
                });
                (r, body)
            }
        };
        // A message new since the mailbox was classified (no marker was asked for): the stored
        // message in the response says what it is, so it is not held to the end of the FETCH.
        let judged = self.judge(&r, plan).or_else(|| {
            let (uid, body) = (r.uid()?, &m[body.clone()?]);
            let needs = needs_form(smime::mime::split(body).header);
            self.set_kind(uid, needs);
            Some(needs)
        });
        let (Some(uid), Some(true)) = (r.uid(), judged) else {
            return m;
        };
        drop(r);
        if self.cached(uid).is_some() || self.opening.contains_key(&uid) {
            return m;
        }
        let Some(body) = body else {
            return m;
        };
        let (held, bytes) = match fetch::take_literal(m, body.start, body.end, MOVE_BODY) {
            Ok(parts) => parts,
            Err(m) => {
                let bytes = m[body].to_vec();
                (m, bytes)
            }
        };
        self.ahead += bytes.len();
        self.opening.insert(uid, bytes.len());
        let message = Stored {
            uid,
            bytes,
            key: self.cache_key(uid),
        };
        let login = self.login.clone();
        self.steps.push_back(Step::Open { login, message });
        held
    }

    /// Sends the client every held response, in order, up to the first that still waits.
    pub(super) fn release(&mut self) {
        while let Some(front) = self.held.pop_front() {
            let size = front.len();
            // Its shown form has served once answered (the cache keeps it if it has room): a
            // sync of a large folder must not keep every message it opened until the FETCH
            // ends.
            let uid = if self.shown_here.is_empty() {
                None
            } else {
                fetch::quick_uid(&front)
                    .or_else(|| fetch::parse_response(&front).and_then(|r| r.uid()))
            };
            match self.answer_now(front) {
                Ok(out) => {
                    self.ahead = self.ahead.saturating_sub(size);
                    if let Some(p) = uid.and_then(|u| self.shown_here.remove(&u)) {
                        self.ahead = self.ahead.saturating_sub(p.message.len());
                    }
                    self.tell_reply(out);
                }
                Err(front) => {
                    self.held.push_front(front);
                    break;
                }
            }
        }
    }

    /// Whether a response of the pending FETCH must be answered from the shown message; `None`
    /// when envelopd does not know yet (no marker asked for, and a UID it has not classified).
    pub(super) fn judge(&self, r: &fetch::FetchResponse, plan: &FetchPlan) -> Option<bool> {
        if plan.marker {
            let needs = needs_shown_form(r);
            if let (Some(uid), true) = (r.uid(), r.marker().is_some()) {
                self.set_kind(uid, needs);
            }
            return Some(needs);
        }
        if !r.has_content() {
            return Some(false);
        }
        let Some(uid) = r.uid() else {
            tracing::warn!("a FETCH response without the UID envelopd asked for; passed unchanged");
            return Some(false);
        };
        self.kind(uid)
    }

    pub(super) fn kind(&self, uid: u32) -> Option<bool> {
        let k = self.pending_box.as_ref()?;
        self.env.cache().lock().ok()?.kind(k, uid)
    }

    pub(super) fn set_kind(&self, uid: u32, shown: bool) {
        if let (Some(k), Ok(mut c)) = (&self.pending_box, self.env.cache().lock()) {
            c.set_kind(k, uid, shown);
        }
    }
}
