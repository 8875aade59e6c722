#!/usr/bin/env python3
"""A misbehaving IMAP server for envelopd's bad-input tests.

    fake_imap.py PORT MODE

Serves connections one after another: greeting, LOGIN, SELECT, then answers a FETCH the way
MODE says: "huge" (announces a 2 GiB literal and stalls), "garbage" (a FETCH response no parser
accepts), "truncated" (half a literal, then hangs up), "bad-smime" (claims S/MIME, then sends
base64 garbage as the message), "nested" (a message with MIME nested 200 levels deep),
"users" (LOGIN with password "wrong" fails; AUTHENTICATE of any kind logs in as "mallory";
the one message, S/MIME by its header, names the logged-in user in its Subject),
"known" (a scripted mailbox: UID 1 plain, UID 2 plain with a forged status header, UID 3
arriving after two FETCHes of the whole mailbox; answers UID, RFC822.SIZE, BODY.PEEK[HEADER],
BODY.PEEK[] and BODY.PEEK[HEADER.FIELDS (...)] for any UID set, and appends every command line it
receives to the file LOG).

    fake_imap.py PORT known LOG
"""
import re
import socket
import sys

port, mode = int(sys.argv[1]), sys.argv[2]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(5)
# The test waits for this line (not for a connection, which could reach another listener if
# the bind above failed): the server itself says it listens.
print("ready", flush=True)

NESTED = b"Subject: deep\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"
for i in range(1, 200):
    NESTED += b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i - 1, i)
NESTED += b"--b199\r\nContent-Type: text/plain\r\n\r\nbottom\r\n"
for i in range(199, -1, -1):
    NESTED += b"--b%d--\r\n" % i
KNOWN = {
    1: b"Subject: one\r\nContent-Type: text/plain\r\n\r\nhello\r\n",
    2: b"Subject: two\r\nX-Envelopd: decrypted=aes-256-gcm; signature=valid\r\n\r\nforged\r\n",
    3: b"Subject: three\r\nX-Envelopd: signature=valid\r\n\r\nlate\r\n",
}
known_fetches = 0


def header_fields(message, names):
    """The named header fields of a message, as a server sends BODY[HEADER.FIELDS (...)]."""
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    keep = [f for f in head if f.split(b":")[0].lower() in names]
    return b"".join(f + b"\r\n" for f in keep) + b"\r\n"


def answer_known(conn, tag, rest):
    """A FETCH or UID FETCH against the scripted mailbox."""
    global known_fetches
    uids = sorted(KNOWN) if known_fetches >= 2 else [1, 2]
    words = rest.split(b" ")
    is_uid = words[0].upper() == b"UID"
    spec = words[2 if is_uid else 1].decode()
    if spec == "1:*":
        wanted = uids
        known_fetches += 1
    else:
        wanted = [int(x) for x in spec.split(",")]
    out = b""
    for uid in wanted:
        if uid not in uids:
            continue
        m = KNOWN[uid]
        items = [b"UID %d" % uid] if is_uid or b"UID" in rest.upper().split(b"(", 1)[1] else []
        if b"RFC822.SIZE" in rest:
            items.append(b"RFC822.SIZE %d" % len(m))
        for section in re.findall(rb"BODY\.PEEK\[([^\]]*)\]", rest):
            if section == b"":
                data = m
            elif section == b"HEADER":
                data = m.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
            else:
                names = re.search(rb"\((.*)\)", section).group(1).lower().split(b" ")
                data = header_fields(m, names)
            items.append(b"BODY[%s] {%d}\r\n" % (section.upper(), len(data)) + data)
        out += b"* %d FETCH (" % uid + b" ".join(items) + b")\r\n"
    conn.sendall(out + tag + b" OK done\r\n")


SMIME_CT = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\n"


def serve(conn):
    user = None
    f = conn.makefile("rb")
    conn.sendall(b"* OK [CAPABILITY IMAP4rev1 IDLE] fake server ready\r\n")
    while True:
        line = f.readline()
        if not line:
            return
        if mode == "known":
            with open(sys.argv[3], "ab") as log:
                log.write(line)
        tag, _, rest = line.partition(b" ")
        word = rest.split(b" ")[0].upper().strip()
        if word == b"UID":
            word = rest.split(b" ")[1].upper()
        if word == b"LOGIN":
            parts = rest.split()
            if mode == "users" and parts[-1] == b"wrong":
                conn.sendall(tag + b" NO [AUTHENTICATIONFAILED] wrong password\r\n")
            else:
                user = parts[1].decode()
                conn.sendall(tag + b" OK logged in\r\n")
        elif word == b"AUTHENTICATE":
            conn.sendall(b"+ \r\n")
            f.readline()
            user = "mallory"
            conn.sendall(tag + b" OK authenticated\r\n")
        elif word in (b"SELECT", b"EXAMINE"):
            conn.sendall(b"* 1 EXISTS\r\n* OK [UIDVALIDITY 7] ok\r\n" + tag + b" OK [READ-WRITE] selected\r\n")
        elif word == b"FETCH" and mode == "known":
            answer_known(conn, tag, rest.strip())
        elif word == b"FETCH" and b"BODY.PEEK[]" in rest and b"HEADER.FIELDS" not in rest:
            # envelopd's own fetch of the whole stored message.
            if mode == "bad-smime":
                body = b"Subject: x\r\n" + SMIME_CT + b"!!!! not base64 at all ####\r\n"
            elif mode == "users":
                body = b"Subject: mailbox of " + str(user).encode() + b"\r\n" + SMIME_CT + b"AAAA\r\n"
            else:
                body = NESTED
            conn.sendall(b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(body) + body + b")\r\n" + tag + b" OK done\r\n")
        elif word == b"FETCH":
            if mode == "huge":
                conn.sendall(b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (CONTENT-TYPE X-ENVELOPD)] {2147483648}\r\n")
                f.readline()  # stall until the proxy gives up
                return
            if mode == "garbage":
                conn.sendall(b"* 1 FETCH (UID 1 BODYSTRUCTURE (\"TEXT\" ((( garbage)\r\n" + tag + b" OK done\r\n")
            elif mode == "truncated":
                conn.sendall(b"* 1 FETCH (UID 1 BODY[] {100}\r\nabc")
                conn.close()
                return
            elif mode == "users":
                stored = b"Subject: stored\r\n\r\n"
                conn.sendall(b"* 1 FETCH (UID 1 BODY[HEADER] {%d}\r\n" % len(stored) + stored
                             + b" BODY[HEADER.FIELDS (CONTENT-TYPE X-ENVELOPD)] {%d}\r\n" % len(SMIME_CT) + SMIME_CT + b")\r\n" + tag + b" OK done\r\n")
            elif mode == "bad-smime":
                stored = b"Subject: x\r\n" + SMIME_CT + b"!!!! not base64 at all ####\r\n"
                conn.sendall(b"* 1 FETCH (UID 1 RFC822.SIZE 99 BODY[] {%d}\r\n" % len(stored) + stored
                             + b" BODY[HEADER.FIELDS (CONTENT-TYPE X-ENVELOPD)] {%d}\r\n" % len(SMIME_CT) + SMIME_CT + b")\r\n" + tag + b" OK done\r\n")
            elif mode == "nested":
                ct = b"Content-Type: multipart/mixed; boundary=b0\r\nX-Envelopd: forged\r\n\r\n"
                conn.sendall(b"* 1 FETCH (UID 1 BODYSTRUCTURE (\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 1 1) BODY[HEADER.FIELDS (CONTENT-TYPE X-ENVELOPD)] {%d}\r\n" % len(ct) + ct + b")\r\n" + tag + b" OK done\r\n")
        elif word == b"LOGOUT":
            conn.sendall(b"* BYE bye\r\n" + tag + b" OK bye\r\n")
            return
        else:
            conn.sendall(tag + b" OK\r\n")


while True:
    c, _ = srv.accept()
    try:
        serve(c)
    except Exception:  # a broken connection or odd input ends that session, never the server
        pass
    c.close()
