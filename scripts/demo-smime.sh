#!/usr/bin/env bash
# A self-contained demo of envelopd's S/MIME core with the public RFC 9216 example keys:
# Alice signs and encrypts a message to Bob (and to herself, for her Sent folder), Bob decrypts
# and verifies it, and OpenSSL (if installed) independently checks the same message.
set -euo pipefail
cd "$(dirname "$0")/.."
V="$(cd "${ENVELOPD_VECTORS:-../shared/vectors}" && pwd)/rfc9216"
[ -d "$V" ] || { echo "RFC 9216 vectors not found at $V (set ENVELOPD_VECTORS)" >&2; exit 1; }

echo "== building envelopd"
cargo build --quiet --release -p envelopd
E="$PWD/target/release/envelopd"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cp "$V"/*.crt "$V"/*.key "$work"/ && chmod 600 "$work"/*.key
cd "$work"

printf 'From: Alice <alice@smime.example>\r\nTo: Bob <bob@smime.example>\r\nSubject: Befund Herr Muster\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nLieber Bob,\r\nder Befund ist unauff\xc3\xa4llig.\r\nGr\xc3\xbc\xc3\x9fe, Alice\r\n' > message.eml

echo "== 1. Alice signs (RSA, SHA-256) and encrypts (AES-256-GCM) to Bob and herself"
"$E" smime sign --key alice.sign.key --cert alice.sign.crt --encryption-cert alice.encrypt.crt --in message.eml \
  | "$E" smime encrypt --to bob.encrypt.crt --to alice.encrypt.crt --cipher aes256-gcm --out outgoing.eml
sed -n '1,/^\r\{0,1\}$/p' outgoing.eml
echo "   ($(wc -c < outgoing.eml) bytes; the body is ciphertext)"

echo "== 2. Bob decrypts and verifies"
"$E" smime decrypt --key bob.encrypt.key --cert bob.encrypt.crt --in outgoing.eml --out decrypted.eml
"$E" smime verify --ca ca.rsa.crt --in decrypted.eml --out plain.eml 2> status.json
echo "   status: $(cat status.json)"
echo "   message as Bob reads it:"
sed 's/^/     | /' plain.eml

if command -v openssl >/dev/null; then
  echo "== 3. OpenSSL checks the same message independently"
  openssl cms -decrypt -inkey bob.encrypt.key -recip bob.encrypt.crt -in outgoing.eml \
    | openssl cms -verify -CAfile ca.rsa.crt -out /dev/null
fi

echo "== 4. Tampering is detected"
sed 's/unauff/auff/' decrypted.eml > tampered.eml
if "$E" smime verify --ca ca.rsa.crt --in tampered.eml --out /dev/null 2> tampered.json; then
  echo "   tampered message verified?!" >&2; exit 1
fi
echo "   status: $(cat tampered.json)"
echo "== demo complete"
