#!/usr/bin/env python3
"""A misbehaving POP3 server for envelopd's bad-input tests (one connection at a time).

    fake_pop3.py PORT MODE

It holds two messages: 1 is S/MIME-typed (not decryptable: envelopd shows it with
decrypted=failed), 2 is plain. MODE says how it misbehaves:

  lie       LIST and STAT report every size 1000 octets too large; RETR's "+OK n octets" too
  cut       closes the connection in the middle of RETR 2
  garbage   answers LIST with a line that is not POP3
  overlong  answers LIST with a 200,000-byte line

It prints "ready" once it listens (and exits if the port is taken).
"""
import socket
import sys

SMIME = (b"From: a@x.example\r\nSubject: sealed\r\nContent-Type: application/pkcs7-mime; "
         b"smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\n"
         b"MIAGCSqGSIb3DQEHA6CAMIACAQA=\r\n")
PLAIN = b"From: a@x.example\r\nSubject: plain\r\n\r\n" + b"line of text\r\n" * 2000 + b".dot\r\n"
MESSAGES = [SMIME, PLAIN]


def stuffed(m):
    out = b"".join((b"." + l if l.startswith(b".") else l) for l in m.splitlines(True))
    return out + b".\r\n"


def serve(conn, mode):
    f = conn.makefile("rb")
    conn.sendall(b"+OK fake ready <1.2@fake>\r\n")
    lie = 1000 if mode == "lie" else 0
    while True:
        line = f.readline()
        if not line:
            return
        words = line.decode("latin-1").strip().split(" ")
        verb = words[0].upper()
        if verb == "CAPA":
            conn.sendall(b"+OK\r\nTOP\r\nUIDL\r\nUSER\r\nPIPELINING\r\n.\r\n")
        elif verb in ("USER", "PASS", "NOOP", "RSET", "DELE"):
            conn.sendall(b"+OK\r\n")
        elif verb == "QUIT":
            conn.sendall(b"+OK bye\r\n")
            return
        elif verb == "STAT":
            total = sum(len(m) + lie for m in MESSAGES)
            conn.sendall(b"+OK %d %d\r\n" % (len(MESSAGES), total))
        elif verb == "LIST" and len(words) == 1:
            if mode == "garbage":
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                continue
            if mode == "overlong":
                conn.sendall(b"+OK " + b"9" * 200_000 + b"\r\n")
                continue
            out = b"+OK\r\n" + b"".join(b"%d %d\r\n" % (i + 1, len(m) + lie)
                                        for i, m in enumerate(MESSAGES))
            conn.sendall(out + b".\r\n")
        elif verb == "LIST":
            n = int(words[1])
            conn.sendall(b"+OK %d %d\r\n" % (n, len(MESSAGES[n - 1]) + lie))
        elif verb == "UIDL" and len(words) == 1:
            conn.sendall(b"+OK\r\n1 fake-a\r\n2 fake-b\r\n.\r\n")
        elif verb == "UIDL":
            conn.sendall(b"+OK %s fake-%s\r\n" % (words[1].encode(), b"ab"[int(words[1]) - 1:int(words[1])]))
        elif verb == "TOP":
            n, k = int(words[1]), int(words[2])
            m = MESSAGES[n - 1]
            head, _, body = m.partition(b"\r\n\r\n")
            lines = body.splitlines(True)[:k]
            conn.sendall(b"+OK\r\n" + stuffed(head + b"\r\n\r\n" + b"".join(lines)))
        elif verb == "RETR":
            n = int(words[1])
            if not 1 <= n <= len(MESSAGES):
                conn.sendall(b"-ERR no such message\r\n")
                continue
            m = MESSAGES[n - 1]
            data = b"+OK %d octets\r\n" % (len(m) + lie) + stuffed(m)
            if mode == "cut" and n == 2:
                conn.sendall(data[: len(data) // 2])
                conn.close()
                return
            conn.sendall(data)
        else:
            conn.sendall(b"-ERR unknown\r\n")


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        sys.exit(1)
    s.listen(8)
    print("ready", flush=True)
    while True:
        conn, _ = s.accept()
        try:
            serve(conn, mode)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main()
