//! envelopd's own operations with the server, each a short list of steps run in order: wait
//! until the client's commands are answered, send a command of envelopd's own and collect its
//! responses, open a stored message, and finally answer the client. Completing a FETCH
//! (classify, fetch the stored messages, show them), answering a SEARCH on the shown text, and
//! storing an appended message encrypted are such operations; the client is not read while one
//! runs, so nothing of the client's can interleave with them.

use std::collections::{HashMap, VecDeque};

use super::{needs_shown_form, tag_of, AppendCapture, Awaiting, Core, Shown, Work};
use crate::fetch::{self, FetchPlan};
use crate::search::{parse_search_response, SearchPlan};

/// How many messages one command of envelopd's own names at most (one line stays short).
const BATCH: usize = 500;

/// The most bytes of stored messages envelopd fetches with one command of its own (a message
/// larger than that comes alone): a cold folder's listing must not hold 500 stored messages.
const BODY_BYTES: u64 = 8 << 20;

/// An operation in progress.
pub(super) struct Job {
    ops: VecDeque<Op>,
    kind: Kind,
    /// Shown forms of the messages the operation needs, by UID.
    pub(super) shown: Shown,
    /// Server responses that arrived meanwhile and belong to the client, in order.
    extra: Vec<Vec<u8>>,
}

/// One step of an operation.
enum Op {
    /// Wait until the server answered every client command already sent.
    Quiesce,
    /// Send this command (without tag) and collect its responses until its tagged reply.
    Command(Vec<u8>, After),
    /// A command sent; its responses so far.
    Sent {
        tag: String,
        untagged: Vec<Vec<u8>>,
        then: After,
    },
    /// Open stored messages (one batch, in parallel).
    Present(Vec<(u32, Vec<u8>)>),
    /// Encrypt the appended message.
    Encrypt(Vec<u8>, smime::Cert),
    /// Go on with the operation (no I/O).
    Run(After),
    /// Send the APPEND line with the final literal size and wait for the server's `+`.
    AppendLine,
    /// Waiting for the `+` (or the refusal) of the APPEND.
    AppendWaiting,
}

/// What a finished step leads to.
enum After {
    Classify(Vec<u32>),
    Sizes(Vec<u32>),
    Bodies(Vec<u32>),
    Needed,
    FetchOutput,
    SearchFirst,
    SearchProtected,
    SearchGroups,
    SearchGroup,
    SearchUids,
    SearchRenumbered,
    SearchOutput,
}

/// The data of each kind of operation.
enum Kind {
    Fetch {
        plan: FetchPlan,
        held: Vec<Vec<u8>>,
        parsed: Vec<Option<(fetch::FetchResponse<'static>, Option<bool>)>>,
        tagged: Vec<u8>,
        classified: HashMap<u32, bool>,
    },
    Search {
        plan: SearchPlan,
        server_answer: Vec<u32>,
        result: Vec<u32>,
    },
    Append {
        cap: AppendCapture,
        message: Vec<u8>,
    },
}

impl Job {
    fn new(kind: Kind) -> Self {
        Job {
            ops: VecDeque::new(),
            kind,
            shown: HashMap::new(),
            extra: Vec::new(),
        }
    }
}

/// The UIDs in SEARCH responses; other responses go to `extra`.
fn numbers(untagged: Vec<Vec<u8>>, extra: &mut Vec<Vec<u8>>) -> Vec<u32> {
    let mut found = Vec::new();
    for m in untagged {
        match parse_search_response(&m) {
            Some(n) => found.extend(n),
            None => extra.push(m),
        }
    }
    found
}

impl Core {
    /// Runs the current operation's next step if it can run now; false when it waits for the
    /// server (or for work).
    pub(super) fn advance_job(&mut self) -> bool {
        let in_flight = self.in_flight;
        let Some(job) = self.job.as_mut() else {
            return false;
        };
        let Some(op) = job.ops.pop_front() else {
            self.job = None;
            return true;
        };
        match op {
            Op::Quiesce if in_flight > 0 => {
                job.ops.push_front(Op::Quiesce);
                false
            }
            Op::Quiesce => true,
            Op::Command(command, then) => {
                let tag = format!("ENVLPD.{}", self.next_tag);
                self.next_tag += 1;
                job.ops.push_front(Op::Sent {
                    tag: tag.clone(),
                    untagged: Vec::new(),
                    then,
                });
                let mut line = tag.into_bytes();
                line.push(b' ');
                line.extend_from_slice(&command);
                self.tell_server(&line);
                false
            }
            op @ (Op::Sent { .. } | Op::AppendWaiting) => {
                job.ops.push_front(op);
                false
            }
            Op::Present(batch) => {
                self.present(batch);
                false
            }
            Op::Encrypt(message, cert) => {
                self.work(Work::Encrypt { message, cert }, Awaiting::Encrypt);
                false
            }
            Op::Run(after) => {
                self.run(after, Vec::new(), Vec::new());
                true
            }
            Op::AppendLine => {
                let Kind::Append { cap, message } = &job.kind else {
                    unreachable!("only appends send an APPEND line")
                };
                let mut line = cap.prefix.clone();
                line.extend_from_slice(format!("{{{}}}\r\n", message.len()).as_bytes());
                job.ops.push_front(Op::AppendWaiting);
                self.tell_server(&line);
                false
            }
        }
    }

    /// A server message while an operation runs: one of its command's responses, the answer
    /// to its APPEND line, or (`Some`) one for the usual path.
    pub(super) fn job_message(&mut self, m: Vec<u8>) -> Option<Vec<u8>> {
        let Some(job) = self.job.as_mut() else {
            return Some(m);
        };
        match job.ops.front_mut() {
            Some(Op::Sent { tag, untagged, .. }) => {
                if tag_of(&m) != tag.as_bytes() {
                    untagged.push(m);
                    return None;
                }
                let Some(Op::Sent { untagged, then, .. }) = job.ops.pop_front() else {
                    unreachable!("matched above")
                };
                self.run(then, untagged, m);
                None
            }
            Some(Op::AppendWaiting) => {
                let Kind::Append { cap, message } = &mut job.kind else {
                    unreachable!("only appends wait for a continuation")
                };
                if m.starts_with(b"+") {
                    let mut data = std::mem::take(message);
                    data.extend_from_slice(b"\r\n");
                    job.ops.pop_front();
                    self.in_flight += 1;
                    self.tell_server(&data);
                } else if tag_of(&m) == cap.tag.as_bytes() {
                    // Refused before the literal (quota, no such folder): that is the answer.
                    job.ops.pop_front();
                    self.tell_client(&m);
                } else {
                    let c = self.caps(&m);
                    self.tell_client(&c);
                }
                None
            }
            _ => Some(m),
        }
    }

    /// Continues the operation after a step: `untagged` and `tagged` are its command's
    /// responses, when it sent one.
    fn run(&mut self, after: After, untagged: Vec<Vec<u8>>, tagged: Vec<u8>) {
        let Some(mut job) = self.job.take() else {
            return;
        };
        match after {
            After::Classify(batch) => {
                let Kind::Fetch { classified, .. } = &mut job.kind else {
                    unreachable!("classifying belongs to a FETCH")
                };
                for m in untagged {
                    match fetch::parse_response(&m) {
                        Some(r)
                            if r.marker().is_some()
                                && r.uid().is_some_and(|u| batch.contains(&u)) =>
                        {
                            let (uid, needs) = (r.uid().expect("checked"), needs_shown_form(&r));
                            self.set_kind(uid, needs);
                            classified.insert(uid, needs);
                        }
                        _ => job.extra.push(m),
                    }
                }
            }
            After::Needed => {
                let Kind::Fetch {
                    parsed, classified, ..
                } = &job.kind
                else {
                    unreachable!("a FETCH's step")
                };
                let needed: Vec<u32> = parsed
                    .iter()
                    .flatten()
                    .filter(|(r, needs)| decide(classified, r, *needs))
                    .filter_map(|(r, _)| r.uid())
                    .collect();
                self.present_ops(&mut job, &needed);
                job.ops.push_back(Op::Run(After::FetchOutput));
            }
            After::Sizes(batch) => {
                let mut size = HashMap::new();
                for m in untagged {
                    match fetch::parse_response(&m) {
                        Some(r)
                            if r.uid().is_some_and(|u| batch.contains(&u))
                                && r.size().is_some() =>
                        {
                            size.insert(
                                r.uid().expect("checked"),
                                u64::from(r.size().expect("checked")),
                            );
                        }
                        _ => job.extra.push(m),
                    }
                }
                // A message the server gave no size for is fetched alone.
                let mut groups: Vec<Vec<u32>> = Vec::new();
                let mut bytes = 0;
                for uid in batch {
                    let n = size.get(&uid).copied().unwrap_or(BODY_BYTES);
                    match groups.last_mut() {
                        Some(g) if bytes + n <= BODY_BYTES => g.push(uid),
                        _ => {
                            groups.push(vec![uid]);
                            bytes = 0;
                        }
                    }
                    bytes += n;
                }
                for group in groups.into_iter().rev() {
                    let line = fetch::fetch_whole("", &group);
                    job.ops
                        .push_front(Op::Command(line[1..].to_vec(), After::Bodies(group)));
                }
            }
            After::Bodies(batch) => {
                let mut opens = Vec::new();
                for m in untagged {
                    match fetch::parse_response(&m) {
                        Some(r)
                            if r.whole_body().is_some()
                                && r.uid().is_some_and(|u| batch.contains(&u)) =>
                        {
                            opens.push((
                                r.uid().expect("checked"),
                                r.whole_body().expect("checked").to_vec(),
                            ));
                        }
                        _ => job.extra.push(m),
                    }
                }
                // Opened (together) before the next batch is asked for: one batch's bodies at
                // a time.
                if !opens.is_empty() {
                    job.ops.push_front(Op::Present(opens));
                }
            }
            After::FetchOutput => self.fetch_output(&mut job),
            After::SearchFirst => {
                let Kind::Search {
                    plan,
                    server_answer,
                    ..
                } = &mut job.kind
                else {
                    unreachable!("a SEARCH's step")
                };
                if !tagged[tag_of(&tagged).len()..].starts_with(b" OK") {
                    // The server's refusal (a bad charset, a syntax error) is the client's
                    // answer.
                    let mut reply = plan.tag.clone().into_bytes();
                    reply.extend_from_slice(&tagged[tag_of(&tagged).len()..]);
                    for m in untagged {
                        self.tell_client(&m);
                    }
                    self.tell_client(&reply);
                    job.ops.clear();
                } else {
                    *server_answer = numbers(untagged, &mut job.extra);
                    job.ops.push_back(Op::Command(
                        b"UID SEARCH HEADER Content-Type pkcs7\r\n".to_vec(),
                        After::SearchProtected,
                    ));
                }
            }
            After::SearchProtected => {
                let protected = numbers(untagged, &mut job.extra);
                self.present_ops(&mut job, &protected);
                job.ops.push_back(Op::Run(After::SearchGroups));
            }
            After::SearchGroups => {
                let Kind::Search {
                    plan,
                    server_answer,
                    result,
                } = &mut job.kind
                else {
                    unreachable!("a SEARCH's step")
                };
                let mut groups: HashMap<Vec<bool>, Vec<u32>> = HashMap::new();
                for (uid, p) in &job.shown {
                    groups
                        .entry(plan.answers(&p.message))
                        .or_default()
                        .push(*uid);
                }
                *result = server_answer
                    .iter()
                    .copied()
                    .filter(|u| !job.shown.contains_key(u))
                    .collect();
                for (answers, mut uids) in groups {
                    uids.sort_unstable();
                    job.ops.push_back(Op::Command(
                        plan.for_group("", &uids, &answers),
                        After::SearchGroup,
                    ));
                }
                job.ops.push_back(Op::Run(After::SearchUids));
            }
            After::SearchGroup => {
                let found = numbers(untagged, &mut job.extra);
                if let Kind::Search { result, .. } = &mut job.kind {
                    result.extend(found);
                }
            }
            After::SearchUids => {
                let Kind::Search { plan, result, .. } = &mut job.kind else {
                    unreachable!("a SEARCH's step")
                };
                result.sort_unstable();
                result.dedup();
                if !plan.uid && !result.is_empty() {
                    let set: Vec<String> = result.iter().map(u32::to_string).collect();
                    job.ops.push_back(Op::Command(
                        format!("SEARCH UID {}\r\n", set.join(",")).into_bytes(),
                        After::SearchRenumbered,
                    ));
                }
                job.ops.push_back(Op::Run(After::SearchOutput));
            }
            After::SearchRenumbered => {
                let found = numbers(untagged, &mut job.extra);
                if let Kind::Search { result, .. } = &mut job.kind {
                    *result = found;
                }
            }
            After::SearchOutput => self.search_output(&mut job),
        }
        self.job = Some(job);
    }

    /// Steps that fill `job.shown` for `uids`: from the cache, or fetched (in batches, after
    /// the client's commands are answered) and opened.
    fn present_ops(&mut self, job: &mut Job, uids: &[u32]) {
        let mut missing = Vec::new();
        for &uid in uids {
            if job.shown.contains_key(&uid) {
                continue;
            }
            match self.cached(uid) {
                Some(p) => {
                    job.shown.insert(uid, p);
                }
                None => missing.push(uid),
            }
        }
        if missing.is_empty() {
            return;
        }
        // envelopd's own command must not interleave with the client's. The sizes first, so
        // that the stored messages come in batches bounded in bytes.
        job.ops.push_back(Op::Quiesce);
        for batch in missing.chunks(BATCH) {
            if let [uid] = batch {
                // One message comes alone anyway: no round trip for its size.
                let line = fetch::fetch_whole("", batch);
                job.ops
                    .push_back(Op::Command(line[1..].to_vec(), After::Bodies(vec![*uid])));
            } else {
                job.ops.push_back(Op::Command(
                    fetch::sizes(batch),
                    After::Sizes(batch.to_vec()),
                ));
            }
        }
    }

    /// The pending FETCH's tagged reply has come: every held response is judged, and what is
    /// not known yet is found out before the client gets its answer.
    pub(super) fn complete_fetch(&mut self, tagged: Vec<u8>) {
        let plan = self.pending.take().expect("a pending FETCH");
        let held: Vec<Vec<u8>> = std::mem::take(&mut self.held).into();
        let mut parsed = Vec::with_capacity(held.len());
        let mut unknown = Vec::new();
        for m in &held {
            let r = if m.starts_with(b"* ") {
                fetch::parse_response(m)
            } else {
                None
            };
            let Some(r) = r else {
                parsed.push(None);
                continue;
            };
            let needs = self.judge(&r, &plan);
            match needs {
                None => unknown.extend(r.uid()),
                Some(false) if plan.marker && r.marker().is_none() => tracing::warn!(
                    "a FETCH response without the fields envelopd asked for; passed unchanged"
                ),
                _ => {}
            }
            parsed.push(Some((r.into_static(), needs)));
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        let mut job = Job::new(Kind::Fetch {
            plan,
            held,
            parsed,
            tagged,
            classified: HashMap::new(),
        });
        // What this FETCH already opened counts as shown (nothing is opening any more: the
        // tagged reply waited for it).
        job.shown = std::mem::take(&mut self.shown_here);
        self.ahead = 0;
        if !unknown.is_empty() {
            job.ops.push_back(Op::Quiesce);
            for batch in unknown.chunks(BATCH) {
                job.ops.push_back(Op::Command(
                    fetch::classify(batch),
                    After::Classify(batch.to_vec()),
                ));
            }
        }
        job.ops.push_back(Op::Run(After::Needed));
        self.job = Some(job);
    }

    /// Answers every held response of the FETCH, then its tagged reply, then what arrived
    /// meanwhile.
    fn fetch_output(&mut self, job: &mut Job) {
        let Kind::Fetch {
            plan,
            held,
            parsed,
            tagged,
            classified,
        } = &mut job.kind
        else {
            unreachable!("a FETCH's step")
        };
        let mut out = Vec::new();
        for (m, p) in std::mem::take(held).into_iter().zip(std::mem::take(parsed)) {
            match p {
                Some((r, needs)) => {
                    let view = if decide(classified, &r, needs) {
                        r.uid().and_then(|u| job.shown.get(&u))
                    } else {
                        None
                    };
                    out.extend_from_slice(&match view {
                        Some(p) => fetch::rewrite_memo(r, plan, Some(&p.message), &p.sections),
                        None => fetch::rewrite(r, plan, None),
                    });
                }
                None => out.extend_from_slice(&self.caps(&m)),
            }
        }
        out.extend_from_slice(&self.caps(tagged));
        for m in std::mem::take(&mut job.extra) {
            out.extend_from_slice(&self.caps(&m));
        }
        self.tell_client(&out);
    }

    /// Starts answering a SEARCH with BODY/TEXT keys for encrypted messages too (see
    /// [`crate::search`]).
    pub(super) fn start_search(&mut self, plan: SearchPlan) {
        let first = plan.original("");
        let mut job = Job::new(Kind::Search {
            plan,
            server_answer: Vec::new(),
            result: Vec::new(),
        });
        job.ops.push_back(Op::Quiesce);
        job.ops.push_back(Op::Command(first, After::SearchFirst));
        self.job = Some(job);
    }

    fn search_output(&mut self, job: &mut Job) {
        let Kind::Search { plan, result, .. } = &job.kind else {
            unreachable!("a SEARCH's step")
        };
        tracing::info!(
            encrypted = job.shown.len(),
            "SEARCH answered for encrypted messages too"
        );
        let mut out = Vec::new();
        for m in std::mem::take(&mut job.extra) {
            out.extend_from_slice(&self.caps(&m));
        }
        let list: Vec<String> = result.iter().map(u32::to_string).collect();
        if list.is_empty() {
            out.extend_from_slice(b"* SEARCH\r\n");
        } else {
            out.extend_from_slice(format!("* SEARCH {}\r\n", list.join(" ")).as_bytes());
        }
        out.extend_from_slice(
            format!(
                "{} OK SEARCH completed (envelopd also searched {} encrypted messages)\r\n",
                plan.tag,
                job.shown.len()
            )
            .as_bytes(),
        );
        self.tell_client(&out);
    }

    /// Stores the captured message encrypted to the user's own certificate (unless it already
    /// is S/MIME), with the client's tag, so the server's answer (APPENDUID …) reaches the
    /// client.
    pub(super) fn finish_append(&mut self, mut cap: AppendCapture) {
        let data = std::mem::take(&mut cap.data);
        let cert = cap.cert.clone();
        let plain = smime::message::kind(&data) == smime::message::Kind::Plain;
        let mut job = Job::new(Kind::Append {
            cap,
            message: Vec::new(),
        });
        if plain {
            job.ops.push_back(Op::Encrypt(data, cert));
        } else {
            if let Kind::Append { message, .. } = &mut job.kind {
                *message = data;
            }
            job.ops.push_back(Op::Quiesce);
            job.ops.push_back(Op::AppendLine);
        }
        self.job = Some(job);
    }

    /// The appended message is encrypted (or could not be).
    pub(super) fn encrypted(&mut self, result: Result<Vec<u8>, String>) {
        let Some(job) = self.job.as_mut() else {
            return;
        };
        let Kind::Append { cap, message } = &mut job.kind else {
            return;
        };
        match result {
            Ok(m) => {
                *message = m;
                job.ops.push_back(Op::Quiesce);
                job.ops.push_back(Op::AppendLine);
            }
            Err(e) => {
                let r = format!(
                    "{} NO envelopd could not encrypt the message: {e}\r\n",
                    cap.tag
                );
                job.ops.clear();
                self.tell_client(r.as_bytes());
            }
        }
    }
}

/// Whether a held response is answered from the shown form. A message the server no longer
/// describes counts as one to show: envelopd then tries to open it, and passes the server's
/// items only if that fails too.
fn decide(classified: &HashMap<u32, bool>, r: &fetch::FetchResponse, needs: Option<bool>) -> bool {
    needs.unwrap_or_else(|| {
        r.uid()
            .and_then(|u| classified.get(&u).copied())
            .unwrap_or(true)
    })
}
