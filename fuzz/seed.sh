#!/usr/bin/env bash
# Builds the seed corpora from the public vectors and from messages envelopd and OpenSSL make.
set -euo pipefail
cd "$(dirname "$0")"
V="$(cd "${ENVELOPD_VECTORS:-../../shared/vectors}" && pwd)"
mkdir -p corpus/cms corpus/mime corpus/decrypt
cp "$V"/rfc4134/*.bin corpus/cms/
cp "$V"/rfc4134/*.eml corpus/mime/
cp "$V"/rfc4134/5.3.eml corpus/decrypt/
E="${ENVELOPD_BIN:-$(cd .. && pwd)/target/release/envelopd}"
[ -x "$E" ] || (cd .. && cargo build --release -q -p envelopd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cp "$V"/rfc9216/*.key "$V"/rfc9216/*.crt "$tmp"/; chmod 600 "$tmp"/*.key
printf 'From: alice@smime.example\r\nTo: bob@smime.example\r\nSubject: seed\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQ=\r\n--b--\r\n' > "$tmp/m.eml"
cp "$tmp/m.eml" corpus/mime/plain-multipart.eml
"$E" smime sign --key "$tmp/alice.sign.key" --cert "$tmp/alice.sign.crt" --in "$tmp/m.eml" --out corpus/mime/signed.eml
for c in aes256-gcm aes256-cbc; do
  "$E" smime encrypt --to "$tmp/bob.encrypt.crt" --cipher "$c" --in corpus/mime/signed.eml --out "corpus/decrypt/enc-$c.eml"
done
# Header protection (RFC 9788): a protected payload with HP-Outer and Legacy Display Elements.
printf 'Content-Type: multipart/alternative; boundary="c"; hp="cipher"\r\nFrom: alice@smime.example\r\nSubject: Dinner\r\nHP-Outer: Subject: [...]\r\n\r\n--c\r\nContent-Type: text/plain; hp-legacy-display="1"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nSubject: Dinner\r\n\r\nLet=27s meet.\r\n--c\r\nContent-Type: text/html; hp-legacy-display="1"\r\n\r\n<body><div class="header-protection-legacy-display"><pre>Subject: Dinner</pre></div><p>x</p></body>\r\n--c--\r\n' > corpus/mime/hp-payload.eml
openssl cms -encrypt -aes256 -outform DER -in "$tmp/m.eml" "$tmp/bob.encrypt.crt" > corpus/cms/openssl-enveloped.der
openssl cms -sign -nodetach -outform DER -signer "$tmp/alice.sign.crt" -inkey "$tmp/alice.sign.key" -in "$tmp/m.eml" > corpus/cms/openssl-signed.der
# With ESS signingCertificateV2 (CAdES-BES), which envelopd checks against the signer's certificate.
openssl cms -sign -nodetach -cades -outform DER -signer "$tmp/alice.sign.crt" -inkey "$tmp/alice.sign.key" -in "$tmp/m.eml" > corpus/cms/openssl-signed-cades.der
# IMAP: server responses (FETCH with literals, capabilities) and client commands.
mkdir -p corpus/imap_server corpus/imap_client
printf '* 1 FETCH (UID 7 RFC822.SIZE 44 BODY[] {12}\r\nSubject: x\r\n BODY[HEADER.FIELDS (CONTENT-TYPE X-ENVELOPD)] {2}\r\n\r\n FLAGS (\\Seen))\r\n* CAPABILITY IMAP4rev1 COMPRESS=DEFLATE IDLE\r\na OK done\r\n' > corpus/imap_server/fetch.txt
printf '* 2 FETCH (BODYSTRUCTURE (("TEXT" "PLAIN" ("CHARSET" "us-ascii") NIL NIL "7BIT" 5 1 NIL NIL NIL NIL)("APPLICATION" "PDF" NIL NIL NIL "BASE64" 4 NIL ("ATTACHMENT" ("FILENAME" "x.pdf")) NIL NIL) "MIXED" ("BOUNDARY" "b") NIL NIL NIL))\r\n' > corpus/imap_server/structure.txt
cp corpus/mime/plain-multipart.eml corpus/imap_server/
printf 'a UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From Subject)] BODYSTRUCTURE)\r\nb SEARCH OR BODY x NOT TEXT y SINCE 1-Jan-2026\r\nc APPEND Sent (\\Seen) {5}\r\nhello\r\nd IDLE\r\nDONE\r\n' > corpus/imap_client/commands.txt
# A whole IMAP session (0xff: pause): login, select, every kind of FETCH, SEARCH, APPEND, IDLE.
mkdir -p corpus/imap_session
printf 'a LOGIN doc pw\r\nb SELECT INBOX\r\nc FETCH 1:* (FLAGS BODY.PEEK[HEADER] BODYSTRUCTURE)\r\n\377d UID FETCH 1:* (BODY[] RFC822.SIZE ENVELOPE BODY[1]<0.5>)\r\ne SEARCH BODY hello\r\nf APPEND Sent {5}\r\nhello\r\ng IDLE\r\nDONE\r\nh LOGOUT\r\n' > corpus/imap_session/session.txt
printf 'a AUTHENTICATE PLAIN\r\nAGRvYwBwdw==\r\nb EXAMINE {5}\r\nINBOX\r\nc FETCH 2,3 (BODY[TEXT] BODY[HEADER.FIELDS (X-Envelopd)])\r\nd STARTTLS\r\n' > corpus/imap_session/sasl.txt
# SMTP: a submission with DATA, AUTH exchanges, BDAT (0xff bytes mark where the harness pauses).
mkdir -p corpus/smtp
printf 'EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: s\r\n\r\nbody\r\n..dot\r\n.\r\nQUIT\r\n' > corpus/smtp/data.txt
printf 'EHLO x\r\nAUTH PLAIN AGEAcGFzcw==\r\nAUTH LOGIN\r\nYQ==\r\ncGFzcw==\r\nMAIL FROM:<a@example.org> BODY=8BITMIME SMTPUTF8\r\nRCPT TO:<b@example.org>\r\nRSET\r\nQUIT\r\n' > corpus/smtp/auth.txt
printf 'EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nBDAT 12\r\nSubject: s\r\n\377BDAT 6 LAST\r\n\r\nbody\r\nQUIT\r\n' > corpus/smtp/bdat.txt
{ printf 'EHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n'; tr -d '\r' < corpus/mime/signed.eml | sed 's/$/\r/; s/^\./../'; printf '.\r\n'; } > corpus/smtp/signed.txt
mkdir -p corpus/pop3_client corpus/pop3_server
printf 'CAPA\r\nUSER u\r\nPASS p\r\nSTAT\r\nLIST\r\nUIDL\r\n\377RETR 2\r\nTOP 3 1\r\nLIST 2\r\nDELE 1\r\nRSET\r\nRETR 4\r\nQUIT\r\n' > corpus/pop3_client/session.txt
printf 'AUTH PLAIN\r\nAHUAcA==\r\nRETR 1\r\nSTLS\r\nAPOP u x\r\n\377AUTH PLAIN AHUAcA==\r\nTOP 2 0\r\n' > corpus/pop3_client/sasl.txt
printf '+OK\r\n+OK\r\n+OK 2 30\r\n+OK\r\n1 10\r\n2 20\r\n.\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n\377+OK\r\nContent-Type: application/pkcs7-mime\r\n\r\n.\r\n+OK\r\nX-Envelopd: x\r\n\r\n.\r\n+OK 10 octets\r\nSubject: s\r\n\r\n..x\r\n.\r\n' > corpus/pop3_server/replies.txt
# The trust layer: a signed message, a certificate chain, a CRL and an OCSP answer of the RFC 9216
# CA (current until 2036: the target judges at 2030-01-01), and a message carrying a mesh of
# three cross-certified CAs under one name (what the path search must give up on).
mkdir -p corpus/trust "$tmp/db"
cp corpus/mime/signed.eml corpus/trust/
cat "$tmp/alice.sign.crt" "$tmp/ca.rsa.crt" > corpus/trust/chain.pem
openssl x509 -in "$tmp/alice.sign.crt" -outform DER -out corpus/trust/alice.der
: > "$tmp/db/index.txt"; echo 01 > "$tmp/db/crlnumber"
printf '[ca]\ndefault_ca=d\n[d]\ndatabase=%s\ncrlnumber=%s\ndefault_md=sha256\ndefault_crl_days=3650\n' \
  "$tmp/db/index.txt" "$tmp/db/crlnumber" > "$tmp/db/ca.cnf"
ca=(-config "$tmp/db/ca.cnf" -keyfile "$tmp/ca.rsa.key" -cert "$tmp/ca.rsa.crt")
openssl ca "${ca[@]}" -valid "$tmp/alice.sign.crt" 2>/dev/null
openssl ca "${ca[@]}" -revoke "$tmp/bob.sign.crt" -crl_reason keyCompromise 2>/dev/null
openssl ca "${ca[@]}" -gencrl -out "$tmp/crl.pem" 2>/dev/null
openssl crl -in "$tmp/crl.pem" -outform DER -out corpus/trust/crl.der
openssl ocsp -issuer "$tmp/ca.rsa.crt" -cert "$tmp/alice.sign.crt" -no_nonce -reqout "$tmp/req.der"
openssl ocsp -index "$tmp/db/index.txt" -rsigner "$tmp/ca.rsa.crt" -rkey "$tmp/ca.rsa.key" \
  -CA "$tmp/ca.rsa.crt" -reqin "$tmp/req.der" -respout corpus/trust/ocsp-alice.der -ndays 3650 >/dev/null 2>&1
for i in 0 1 2; do
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/m$i.key" 2>/dev/null
  openssl req -x509 -new -key "$tmp/m$i.key" -subj "/CN=Mesh CA" -days 3650 -out "$tmp/m$i-$i.crt" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
done
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\n' > "$tmp/ca.ext"
for i in 0 1 2; do for j in 0 1 2; do [ $i = $j ] && continue
  openssl req -new -key "$tmp/m$i.key" -subj "/CN=Mesh CA" -out "$tmp/m$i.csr"
  openssl x509 -req -in "$tmp/m$i.csr" -CA "$tmp/m$j-$j.crt" -CAkey "$tmp/m$j.key" -set_serial $((10 * i + j + 1)) \
    -days 3650 -extfile "$tmp/ca.ext" -out "$tmp/m$i-$j.crt" 2>/dev/null
done; done
cat "$tmp"/m*-*.crt > "$tmp/mesh.pem"
openssl req -new -key "$tmp/m0.key" -subj "/CN=Mesh Leaf" -out "$tmp/leaf.csr"
printf 'keyUsage=digitalSignature\nextendedKeyUsage=emailProtection\nsubjectAltName=email:mallory@smime.example\n' > "$tmp/leaf.ext"
openssl x509 -req -in "$tmp/leaf.csr" -CA "$tmp/m0-0.crt" -CAkey "$tmp/m0.key" -set_serial 99 -days 3650 \
  -extfile "$tmp/leaf.ext" -out "$tmp/leaf.crt" 2>/dev/null
printf 'From: mallory@smime.example\r\nSubject: mesh\r\n\r\nx\r\n' |
  openssl cms -sign -signer "$tmp/leaf.crt" -inkey "$tmp/m0.key" -certfile "$tmp/mesh.pem" > corpus/trust/mesh.eml
echo "seed corpora: $(ls corpus/cms | wc -l) cms, $(ls corpus/mime | wc -l) mime, $(ls corpus/decrypt | wc -l) decrypt, $(ls corpus/smtp | wc -l) smtp, $(ls corpus/trust | wc -l) trust"
