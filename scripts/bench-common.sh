# Sourced by the benchmark scripts. For scripts/bench-smtp.sh and
# scripts/instructions-per-message.sh: the same envelopd set-up for both (RFC 9216's Alice signs and encrypts to Bob and to her own Sent certificate; a sender
# and recipient at plain.example go out as they are), so their figures describe the same work.
# Needs V (the RFC 9216 vectors directory) set by the caller.

# A temporary directory with the trust anchor, Bob's certificate and Alice's key, made the
# current directory and removed, with every process in `pids`, on exit.
bench_workdir() {
  work=$(mktemp -d); chmod 755 "$work"
  pids=()
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
  cd "$work"
  mkdir trust certs keys
  cp "$V/ca.rsa.crt" trust/ca.pem
  cp "$V/bob.encrypt.crt" certs/bob.pem
  cp "$V/alice.p12" keys/alice.p12
  cp "$V/alice.encrypt.crt" keys/alice-enc.pem
  echo alice >keys/pw
  chmod 600 keys/*
}

# proxy.toml for envelopd on LISTEN in front of smtp-sink on SINK_PORT.
bench_proxy_toml() { # listen-port sink-port
  cat >proxy.toml <<TOML
[smtp]
listen = "127.0.0.1:$1"
[upstream.smtp]
host = "127.0.0.1"
port = $2
tls = "none"
[certificates]
anchors = ["trust"]
recipients = "certs"
[[identity]]
addresses = ["alice@smime.example"]
pkcs12 = "keys/alice.p12"
password_file = "keys/pw"
encryption_cert = "keys/alice-enc.pem"
[policy]
fallback = "refuse"
# The relaying-only baseline: no key for the sender, no certificate for the recipient.
[[policy.override]]
pattern = "plain.example"
fallback = "plaintext"
TOML
}

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Waits until something listens on PORT; 30 s at most (envelopd under valgrind starts slowly).
wait_port() { for _ in $(seq 600); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "nothing on port $1" >&2; exit 1; }

# A message from Alice to Bob with BYTES of body in 76-character lines.
mkmsg() { # file body-bytes
  { printf 'From: Alice <alice@smime.example>\nTo: Bob <bob@smime.example>\nSubject: bench\n\n'
    head -c "$2" /dev/zero | tr '\0' 'x' | fold -w 76; echo; } >"$1"
}

# For the reading benchmarks: Bob's envelopd (keys/bob.p12, trust/) with IMAP on $1 in front of
# the test Dovecot (IMAP_PORT), SMTP on $2 in front of its Postfix (SMTP_PLAIN_PORT) and, given
# $3, POP3 on $3 in front of Dovecot's POP3 (POP3_PORT); started with E, its PID in `epid`;
# returns once it listens.
bench_bob_imap() { # imap-port smtp-port [pop3-port]
  local pop3=""
  if [ -n "${3:-}" ]; then
    pop3="[pop3]
listen = \"127.0.0.1:$3\"
[upstream.pop3]
host = \"127.0.0.1\"
port = $POP3_PORT
tls = \"none\""
  fi
  cat >proxy.toml <<TOML
[smtp]
listen = "127.0.0.1:$2"
[imap]
listen = "127.0.0.1:$1"
[upstream.smtp]
host = "127.0.0.1"
port = $SMTP_PLAIN_PORT
tls = "none"
[upstream.imap]
host = "127.0.0.1"
port = $IMAP_PORT
tls = "none"
$pop3
[certificates]
anchors = ["trust"]
[[identity]]
addresses = ["bob@smime.example"]
pkcs12 = "keys/bob.p12"
password_file = "keys/pw"
TOML
  RUST_LOG=warn "$E" run --config proxy.toml 2>envelopd.log &
  epid=$!
  wait_port "$1"
}

# For the IMAP benchmarks: a temporary directory (made current) with the test provider (Postfix
# and Dovecot from scripts/mailserver.sh, Bob's mailbox), Bob's key, the trust anchor and
# Alice's signing key; everything, envelopd (`epid`) included, stopped and removed on exit.
bench_imap_lab() { # name
  work=$(mktemp -d "/tmp/envelopd-$1.XXXXXX"); chmod 755 "$work"
  epid=""
  trap '{ [ -n "$epid" ] && kill "$epid" 2>/dev/null; } || true
        "$root/scripts/mailserver.sh" stop "$work/provider" >/dev/null 2>&1 || true
        rm -rf "$work"' EXIT
  export SMTP_PLAIN_PORT=$(port) SUBMISSION_PORT=$(port) SMTPS_PORT=$(port) IMAP_PORT=$(port) IMAPS_PORT=$(port)
  export POP3_PORT=$(port) POP3S_PORT=$(port)
  "$root/scripts/mailserver.sh" start "$work/provider" bob@smime.example:bob-pw >/dev/null
  cd "$work"
  mkdir -p keys trust
  cp "$V/bob.p12" keys/ && echo bob >keys/pw && chmod 600 keys/*
  cp "$V/ca.rsa.crt" trust/ca.pem
  cp "$V"/alice.sign.* "$V"/bob.encrypt.crt . && chmod 600 alice.sign.key
}

# For the reading benchmarks: fills Bob's mailbox (in the lab of bench_imap_lab) with N realistic
# messages, PERCENT of them S/MIME (signed by Alice, encrypted to Bob with AES-256-CBC): sizes
# 70 % 5-50 KB text, 25 % 100 KB-2 MB with an attachment, 5 % 5-20 MB (fixed seed: the same
# mailbox every run). Needs E.
bench_fill_realistic() { # n percent-smime
  mkdir -p plain
  local box="$work/provider/mail/smime.example/bob/cur"
  echo "== filling a mailbox with $1 messages ($2 % S/MIME, 5 KB to 20 MB)"
  python3 - "$1" "$2" <<'EOF'
import base64, random, sys
n, share = int(sys.argv[1]), int(sys.argv[2]) / 100
rng = random.Random(20261205)
for i in range(n):
    r = rng.random()
    size = (rng.randint(5_000, 50_000) if r < 0.70 else
            rng.randint(100_000, 2_000_000) if r < 0.95 else
            rng.randint(5_000_000, 20_000_000))
    smime = rng.random() < share
    text = ("Befund %d: unauffaellig. " % i) * 40
    head = ("From: Alice <alice@smime.example>\r\nTo: bob@smime.example\r\n"
            "Subject: %s %d\r\nMIME-Version: 1.0\r\n" % ("encrypted" if smime else "plain", i))
    if size <= 50_000:
        body = "\r\n".join(text[j:j + 76] for j in range(0, len(text), 76))
        filler = base64.b64encode(rng.randbytes(size * 3 // 4)).decode()
        body += "\r\n" + "\r\n".join(filler[j:j + 76] for j in range(0, len(filler), 76))
        m = head + "Content-Type: text/plain; charset=us-ascii\r\n\r\n" + body + "\r\n"
    else:
        data = base64.b64encode(rng.randbytes(size * 3 // 4)).decode()
        data = "\r\n".join(data[j:j + 76] for j in range(0, len(data), 76))
        m = (head + 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
             "Content-Type: text/plain\r\n\r\n" + text + "\r\n--b\r\n"
             "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
             'Content-Disposition: attachment; filename="befund.pdf"\r\n\r\n' + data + "\r\n--b--\r\n")
    open("plain/%04d.%s" % (i, "smime" if smime else "plain"), "w").write(m)
EOF
  local f i out
  for f in plain/*; do
    i=$((10#${f:6:4}))
    out="$box/$((1700000000 + i)).M${i}P1.bench:2,S"
    if [[ $f == *.smime ]]; then
      "$E" smime sign --key alice.sign.key --cert alice.sign.crt --in "$f" \
        | "$E" smime encrypt --to bob.encrypt.crt --cipher aes256-cbc --out "$out"
    else
      cp "$f" "$out"
    fi
    chown 5000:5000 "$out"
  done
  echo "   $(du -sh "$box" | cut -f1) stored"
}
