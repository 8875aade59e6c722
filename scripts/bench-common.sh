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

# For the IMAP benchmarks: Bob's envelopd (keys/bob.p12, trust/) with IMAP on $1 in front of the
# test Dovecot (IMAP_PORT) and SMTP on $2 in front of its Postfix (SMTP_PLAIN_PORT); started
# with E, its PID in `epid`; returns once it listens.
bench_bob_imap() { # imap-port smtp-port
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
  "$root/scripts/mailserver.sh" start "$work/provider" bob@smime.example:bob-pw >/dev/null
  cd "$work"
  mkdir -p keys trust
  cp "$V/bob.p12" keys/ && echo bob >keys/pw && chmod 600 keys/*
  cp "$V/ca.rsa.crt" trust/ca.pem
  cp "$V"/alice.sign.* "$V"/bob.encrypt.crt . && chmod 600 alice.sign.key
}
