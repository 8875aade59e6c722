#!/usr/bin/env bash
# The envelopd demo on a fresh Debian machine: a real mail provider on loopback (Postfix for
# sending, Dovecot for reading; installed with apt if missing), a throwaway CA with two users
# and their PKCS#12 files, and envelopd in front. Dr. Alice's practice sends one message to
# Bob through envelopd; the copy the provider stored is shown to be S/MIME and is opened with
# `openssl cms` as proof. envelopd then keeps running for your own mail program until Ctrl-C;
# everything is removed afterwards.
#
#   scripts/demo.sh          # run, then wait for Ctrl-C
#   scripts/demo.sh --once   # run the proof and stop (used by the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
once=false
[ "${1:-}" = --once ] && once=true

SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "the demo runs Postfix and Dovecot: run it as root or install sudo" >&2; exit 1; }
  SUDO=sudo
fi

need=()
for pair in postfix:postfix dovecot:dovecot-imapd openssl:openssl curl:curl; do
  command -v "${pair%%:*}" >/dev/null || [ -x "/usr/sbin/${pair%%:*}" ] || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]} (apt)"
  # The packages must not configure or start system-wide mail servers: the demo runs its own.
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
  fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" ca-certificates >/dev/null
fi
export PATH="$PATH:/usr/sbin"

if [ -n "${ENVELOPD_BIN:-}" ]; then
  E=$ENVELOPD_BIN
else
  echo "== building envelopd (release)"
  cargo build --quiet --release -p envelopd
  E="$root/target/release/envelopd"
fi

work=$(mktemp -d /tmp/envelopd-demo.XXXXXX)
chmod 755 "$work"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  $SUDO "$root/scripts/mailserver.sh" stop "$work/provider" >/dev/null 2>&1 || true
  $SUDO rm -rf "$work"
  echo "== cleaned up"
}
trap cleanup EXIT
trap 'exit 0' INT TERM
cd "$work"

: "${DEMO_SMTP_PORT:=10587}" "${DEMO_IMAP_PORT:=10143}" "${DEMO_POP3_PORT:=10110}"
: "${SUBMISSION_PORT:=12587}" "${IMAPS_PORT:=12993}" "${POP3S_PORT:=12995}"
export SUBMISSION_PORT IMAPS_PORT POP3S_PORT

echo "== 1. a throwaway CA and two users with S/MIME certificates (PKCS#12)"
mkdir -p pki trust certs keys
openssl req -x509 -newkey rsa:2048 -nodes -days 400 -subj "/CN=Demo Health Network CA" \
  -keyout pki/ca.key -out trust/ca.pem -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
issue() { # name address
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "pki/$1.key" -out "pki/$1.csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\nsubjectAltName=email:%s\n' "$2" >"pki/$1.ext"
  openssl x509 -req -in "pki/$1.csr" -CA trust/ca.pem -CAkey pki/ca.key -CAserial pki/ca.srl -CAcreateserial -days 400 \
    -extfile "pki/$1.ext" -out "pki/$1.pem" 2>/dev/null
  openssl rand -hex 12 >"keys/$1.pass"
  openssl pkcs12 -export -inkey "pki/$1.key" -in "pki/$1.pem" -certfile trust/ca.pem \
    -passout "file:keys/$1.pass" -out "keys/$1.p12"
  chmod 600 "keys/$1.pass" "keys/$1.p12" "pki/$1.key"
  echo "   $2: certificate $(openssl x509 -in "pki/$1.pem" -noout -serial), keys/$1.p12"
}
issue alice dr.alice@praxis.test
issue bob bob@klinik.test
cp pki/bob.pem certs/bob.pem

echo "== 2. the mail provider: Postfix (submission with STARTTLS + AUTH) and Dovecot (IMAPS, POP3S)"
$SUDO "$root/scripts/mailserver.sh" start "$work/provider" \
  dr.alice@praxis.test:alice-demo bob@klinik.test:bob-demo | sed 's/^/   /'

cat >proxy.toml <<EOF
[smtp]
listen = "127.0.0.1:$DEMO_SMTP_PORT"

[imap]
listen = "127.0.0.1:$DEMO_IMAP_PORT"

[pop3]
listen = "127.0.0.1:$DEMO_POP3_PORT"

[upstream.smtp]
host = "localhost"
port = $SUBMISSION_PORT
tls = "starttls"
ca_file = "$work/provider/tls/ca.pem"
system_roots = false

[upstream.imap]
host = "localhost"
port = $IMAPS_PORT
tls = "implicit"
ca_file = "$work/provider/tls/ca.pem"
system_roots = false

[upstream.pop3]
host = "localhost"
port = $POP3S_PORT
tls = "implicit"
ca_file = "$work/provider/tls/ca.pem"
system_roots = false

[certificates]
anchors = ["trust"]
recipients = "certs"

# Both users' keys are in this one envelopd, as on a practice's gateway.
[[identity]]
addresses = ["dr.alice@praxis.test"]
pkcs12 = "keys/alice.p12"
password_file = "keys/alice.pass"

[[identity]]
addresses = ["bob@klinik.test"]
pkcs12 = "keys/bob.p12"
password_file = "keys/bob.pass"

[policy]
fallback = "refuse"
# Bob's envelopd reads AES-GCM (authenticated encryption); Outlook would not.
gcm_capable = ["klinik.test"]
EOF

echo "== 3. envelopd check"
"$E" check --config proxy.toml | sed 's/^/   /'

echo "== 4. envelopd run (log: $work/envelopd.log)"
"$E" run --config proxy.toml 2>envelopd.log &
pid=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$DEMO_SMTP_PORT") 2>/dev/null && break; sleep 0.1; done

echo "== 5. Dr. Alice's practice software sends a Befund to Bob through envelopd"
printf 'From: Dr. Alice <dr.alice@praxis.test>\r\nTo: Bob <bob@klinik.test>\r\nSubject: Befund Herr Muster\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nLieber Kollege,\r\nder Befund von Herrn Muster ist unauff\xc3\xa4llig.\r\nViele Gr\xc3\xbc\xc3\x9fe, Alice\r\n' >befund.eml
curl -sS "smtp://127.0.0.1:$DEMO_SMTP_PORT" --user dr.alice@praxis.test:alice-demo \
  --mail-from dr.alice@praxis.test --mail-rcpt bob@klinik.test -T befund.eml
echo "   accepted by the provider (curl got 250 only after Postfix took the message)"

echo "== 6. what the provider stored in Bob's mailbox"
box="$work/provider/mail/klinik.test/bob/new"
for _ in $(seq 100); do [ -n "$($SUDO ls "$box")" ] && break; sleep 0.1; done
stored=$($SUDO sh -c "ls $box/* | head -1")
$SUDO cat "$stored" >stored.eml
sed -n '1,/^\r\{0,1\}$/p' stored.eml | grep -E '^(From|To|Subject|Content-Type|Received: from)' | sed 's/^/   | /'
echo "   | ... $(wc -c <stored.eml) bytes of base64 ciphertext; 'unauffällig' appears $(grep -c 'unauff' stored.eml || true) times"

echo "== 7. proof: OpenSSL, with Bob's key, decrypts it and verifies Dr. Alice's signature"
echo "   (the text is quoted-printable: envelopd made it 7-bit so the signature survives transport)"
openssl cms -decrypt -inkey pki/bob.key -in stored.eml | openssl cms -verify -CAfile trust/ca.pem 2>verify.txt \
  | sed -n '/^\r\{0,1\}$/,$p' | sed 's/^/   | /'
echo "   openssl: $(cat verify.txt)"

echo "== 8. Bob reads his mail through envelopd (IMAP, curl): decrypted, signature checked"
curl -sS "imap://127.0.0.1:$DEMO_IMAP_PORT/INBOX;UID=1" --user bob@klinik.test:bob-demo >read.eml
grep -E '^(X-Envelopd|From|Subject):' read.eml | sed 's/^/   | /'
sed -n '/^\r\{0,1\}$/,$p' read.eml | sed 's/^/   | /'
echo "   (the X-Envelopd line is envelopd's verdict; a copy of it arriving in the mail is removed)"

echo "== 9. practice software that fetches by POP3 gets the same message (Python poplib)"
python3 - "$DEMO_POP3_PORT" >pop3.txt <<'PY'
import poplib, sys
p = poplib.POP3("127.0.0.1", int(sys.argv[1]))
p.user("bob@klinik.test"); p.pass_("bob-demo")
count, size = p.stat()
_, lines, octets = p.retr(1)
print(f"STAT: {count} message(s), {size} octets; RETR 1: {octets} octets (LIST and RETR agree)")
for l in lines:
    l = l.decode("utf-8", "replace")
    if l.startswith(("X-Envelopd:", "Subject:")):
        print(l)
p.quit()
PY
sed 's/^/   | /' pop3.txt

cat <<EOF
== 10. try it with your own mail program (Thunderbird, Outlook, practice software ...)
   Outgoing (SMTP):  server 127.0.0.1, port $DEMO_SMTP_PORT, no encryption (this machine only),
                     user dr.alice@praxis.test, password alice-demo
   Incoming (IMAP):  server 127.0.0.1, port $DEMO_IMAP_PORT, no encryption (this machine only),
                     user bob@klinik.test, password bob-demo: encrypted mail reads as plain text
                     with an "X-Envelopd:" line saying how it was protected and who signed it
   Incoming (POP3):  server 127.0.0.1, port $DEMO_POP3_PORT, no encryption, same user: the same
                     decrypted message, for programs that only fetch by POP3
   Send to bob@klinik.test: it leaves signed and encrypted. Send to anyone else: refused with
   550 5.7.1, because policy "refuse" is set and they have no certificate.
EOF
if $once; then exit 0; fi
echo "== envelopd is running; Ctrl-C stops it and removes everything"
wait "$pid"
