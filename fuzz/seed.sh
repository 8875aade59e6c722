#!/usr/bin/env bash
# Builds the seed corpora from the public vectors and from messages envelopd and OpenSSL make.
set -euo pipefail
cd "$(dirname "$0")"
V="$(cd "${ENVELOPD_VECTORS:-../../shared/vectors}" && pwd)"
mkdir -p corpus/cms corpus/mime corpus/decrypt
cp "$V"/rfc4134/*.bin corpus/cms/
cp "$V"/rfc4134/*.eml corpus/mime/
cp "$V"/rfc4134/5.3.eml corpus/decrypt/
E="$(cd .. && pwd)/target/release/envelopd"
[ -x "$E" ] || (cd .. && cargo build --release -q -p envelopd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cp "$V"/rfc9216/*.key "$V"/rfc9216/*.crt "$tmp"/; chmod 600 "$tmp"/*.key
printf 'From: alice@smime.example\r\nTo: bob@smime.example\r\nSubject: seed\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQ=\r\n--b--\r\n' > "$tmp/m.eml"
cp "$tmp/m.eml" corpus/mime/plain-multipart.eml
"$E" smime sign --key "$tmp/alice.sign.key" --cert "$tmp/alice.sign.crt" --in "$tmp/m.eml" --out corpus/mime/signed.eml
for c in aes256-gcm aes256-cbc; do
  "$E" smime encrypt --to "$tmp/bob.encrypt.crt" --cipher "$c" --in corpus/mime/signed.eml --out "corpus/decrypt/enc-$c.eml"
done
openssl cms -encrypt -aes256 -outform DER -in "$tmp/m.eml" "$tmp/bob.encrypt.crt" > corpus/cms/openssl-enveloped.der
openssl cms -sign -nodetach -outform DER -signer "$tmp/alice.sign.crt" -inkey "$tmp/alice.sign.key" -in "$tmp/m.eml" > corpus/cms/openssl-signed.der
echo "seed corpora: $(ls corpus/cms | wc -l) cms, $(ls corpus/mime | wc -l) mime, $(ls corpus/decrypt | wc -l) decrypt"
