//! An in-memory POP3 server (RFC 1939 with CAPA, UIDL, TOP, USER and SASL PLAIN), for the
//! core's tests and fuzzing: it answers what the core sends, byte-stuffed as a real server
//! does, and counts the commands it was sent.

use std::collections::BTreeSet;

/// The server's state.
pub struct Server {
    messages: Vec<Vec<u8>>,
    deleted: BTreeSet<usize>,
    logged_in: bool,
    user: Option<String>,
    input: Vec<u8>,
    sasl: bool,
    /// Commands received, by verb (upper case).
    pub received: Vec<String>,
    /// The password it accepts.
    pub password: String,
    /// Whether it answers with PIPELINING in CAPA (it always accepts pipelined commands).
    pub pipelining: bool,
    /// Added to every size LIST reports (a server that lies about sizes).
    pub size_lie: i64,
    /// Messages that were deleted by QUIT.
    pub expunged: Vec<usize>,
}

impl Server {
    /// A server holding `messages` for user `u` with password `p`.
    pub fn new(messages: Vec<Vec<u8>>) -> Self {
        Server {
            messages,
            deleted: BTreeSet::new(),
            logged_in: false,
            user: None,
            input: Vec::new(),
            sasl: false,
            received: Vec::new(),
            password: "p".into(),
            pipelining: true,
            size_lie: 0,
            expunged: Vec::new(),
        }
    }

    /// The greeting, with an APOP banner.
    pub fn greeting(&self) -> Vec<u8> {
        b"+OK Sim ready. <1896.697170952@sim.example>\r\n".to_vec()
    }

    /// The CAPA lines a real server sends (as `ServerCaps::parse` reads them).
    pub fn capa_lines(&self) -> Vec<u8> {
        let mut c =
            b"TOP\r\nUIDL\r\nUSER\r\nRESP-CODES\r\nSASL PLAIN LOGIN CRAM-MD5\r\nEXPIRE NEVER\r\n"
                .to_vec();
        if self.pipelining {
            c.extend_from_slice(b"PIPELINING\r\n");
        }
        c
    }

    /// Takes bytes the core sent; returns the server's answers.
    pub fn input(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.input.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = memchr::memchr(b'\n', &self.input) {
            let line: Vec<u8> = self.input.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            out.extend_from_slice(&self.command(&line));
        }
        out
    }

    fn number(&self, arg: Option<&str>) -> Option<usize> {
        let n: usize = arg?.parse().ok()?;
        (n >= 1 && n <= self.messages.len() && !self.deleted.contains(&n)).then_some(n)
    }

    fn command(&mut self, line: &str) -> Vec<u8> {
        if self.sasl {
            self.sasl = false;
            return self.sasl_plain(line);
        }
        let mut words = line.split(' ');
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        self.received.push(verb.clone());
        let arg1 = words.next();
        let arg2 = words.next();
        let err = |t: &str| format!("-ERR {t}\r\n").into_bytes();
        match verb.as_str() {
            "CAPA" => {
                let mut o = b"+OK\r\n".to_vec();
                o.extend_from_slice(&self.capa_lines());
                o.extend_from_slice(b".\r\n");
                o
            }
            "QUIT" => {
                if self.logged_in {
                    self.expunged = self.deleted.iter().copied().collect();
                }
                b"+OK Logging out.\r\n".to_vec()
            }
            "USER" if !self.logged_in => {
                self.user = arg1.map(str::to_string);
                b"+OK\r\n".to_vec()
            }
            "PASS" if !self.logged_in => {
                let pass = line.split_once(' ').map(|x| x.1).unwrap_or("");
                if self.user.is_some() && pass == self.password {
                    self.logged_in = true;
                    b"+OK Logged in.\r\n".to_vec()
                } else {
                    err("[AUTH] Authentication failed.")
                }
            }
            "AUTH" if !self.logged_in => match (arg1.map(|a| a.to_ascii_uppercase()), arg2) {
                (Some(m), Some(ir)) if m == "PLAIN" => self.sasl_plain(ir),
                (Some(m), None) if m == "PLAIN" => {
                    self.sasl = true;
                    b"+ \r\n".to_vec()
                }
                _ => err("Unsupported authentication mechanism."),
            },
            _ if !self.logged_in => err("Unknown command."),
            "STAT" => {
                let live: Vec<usize> = self.live();
                let total: i64 = live.iter().map(|n| self.size(*n)).sum();
                format!("+OK {} {total}\r\n", live.len()).into_bytes()
            }
            "LIST" => match arg1 {
                Some(a) => match self.number(Some(a)) {
                    Some(n) => format!("+OK {n} {}\r\n", self.size(n)).into_bytes(),
                    None => err("There's no message."),
                },
                None => {
                    let mut o = format!("+OK {} messages:\r\n", self.live().len()).into_bytes();
                    for n in self.live() {
                        o.extend_from_slice(format!("{n} {}\r\n", self.size(n)).as_bytes());
                    }
                    o.extend_from_slice(b".\r\n");
                    o
                }
            },
            "UIDL" => match arg1 {
                Some(a) => match self.number(Some(a)) {
                    Some(n) => format!("+OK {n} uid{n:08}\r\n").into_bytes(),
                    None => err("There's no message."),
                },
                None => {
                    let mut o = b"+OK\r\n".to_vec();
                    for n in self.live() {
                        o.extend_from_slice(format!("{n} uid{n:08}\r\n").as_bytes());
                    }
                    o.extend_from_slice(b".\r\n");
                    o
                }
            },
            "RETR" => match self.number(arg1) {
                Some(n) => {
                    let m = &self.messages[n - 1];
                    let mut o =
                        format!("+OK {} octets\r\n", crate::wire::wire_size(m)).into_bytes();
                    stuff(m, &mut o);
                    o
                }
                None => err("There's no message."),
            },
            "TOP" => match (self.number(arg1), arg2.and_then(|k| k.parse::<u64>().ok())) {
                (Some(n), Some(k)) => {
                    let m = crate::wire::top(&self.messages[n - 1], k).to_vec();
                    let mut o = b"+OK\r\n".to_vec();
                    stuff(&m, &mut o);
                    o
                }
                _ => err("There's no message."),
            },
            "DELE" => match self.number(arg1) {
                Some(n) => {
                    self.deleted.insert(n);
                    b"+OK Marked to be deleted.\r\n".to_vec()
                }
                None => err("There's no message."),
            },
            "RSET" => {
                self.deleted.clear();
                b"+OK\r\n".to_vec()
            }
            "NOOP" => b"+OK\r\n".to_vec(),
            _ => err("Unknown command."),
        }
    }

    fn sasl_plain(&mut self, response: &str) -> Vec<u8> {
        if response == "*" {
            return b"-ERR Authentication aborted by client.\r\n".to_vec();
        }
        let ok = smime::mime::base64_decode(response.as_bytes())
            .ok()
            .and_then(|raw| {
                let mut parts = raw.split(|b| *b == 0);
                let _authz = parts.next()?;
                let _user = parts.next()?;
                let pass = parts.next()?;
                Some(pass == self.password.as_bytes())
            })
            .unwrap_or(false);
        if ok {
            self.logged_in = true;
            b"+OK Logged in.\r\n".to_vec()
        } else {
            b"-ERR [AUTH] Authentication failed.\r\n".to_vec()
        }
    }

    /// The size LIST reports: the octets RETR sends, plus the lie.
    fn size(&self, n: usize) -> i64 {
        crate::wire::wire_size(&self.messages[n - 1]) as i64 + self.size_lie
    }

    fn live(&self) -> Vec<usize> {
        (1..=self.messages.len())
            .filter(|n| !self.deleted.contains(n))
            .collect()
    }
}

/// Byte-stuffs a message and ends it, as a server sends it.
fn stuff(m: &[u8], out: &mut Vec<u8>) {
    crate::wire::stuff_into(m, out);
}
