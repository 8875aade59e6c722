#!/usr/bin/env python3
"""Lets Postfix's smtp-sink stand in for a provider that checks logins.

smtp-sink announces AUTH but answers it with "250 2.0.0 Ok" (it checks nothing), which envelopd
rightly does not count as a login (RFC 4954 wants 235). This relay sits between envelopd and
smtp-sink and changes only that one reply into 235; every other byte, hang-up and delay of
smtp-sink (its fault options) passes through unchanged.

With SINK_AUTH_READS=FILE in the environment it also notes, for every read from the client,
the SMTP commands that arrived together in it (one line per read, e.g. "MAIL RCPT"): how a
client pipelines shows there, since a client that waits for each reply can never put two
commands into one read.

With SINK_AUTH_RATE=BYTES_PER_SECOND it reads from the client no faster than that, through a
small receive buffer: a provider behind a slow uplink, as a practice's DSL line makes it.

usage: sink_auth.py LISTEN_PORT SINK_PORT
"""
import os
import socket
import socketserver
import sys
import threading
import time

LISTEN, SINK = int(sys.argv[1]), int(sys.argv[2])
READS = os.environ.get("SINK_AUTH_READS")
RATE = int(os.environ.get("SINK_AUTH_RATE", "0"))
# A command word is followed by a space or ends the line; base64 message lines have neither.
WITH_ARGS = {b"EHLO ", b"MAIL ", b"RCPT ", b"BDAT "}
ALONE = {b"DATA", b"RSET", b"QUIT", b"NOOP"}
notes = threading.Lock()


def note_read(data):
    """One line per read: the commands it holds (message lines are not commands)."""
    if not READS:
        return
    verbs = []
    for line in data.split(b"\n"):
        if line[:5].upper() in WITH_ARGS or line.rstrip(b"\r").upper() in ALONE:
            verbs.append(line[:4].upper().decode())
    if verbs:
        with notes, open(READS, "a") as f:
            f.write(" ".join(verbs) + "\n")


class Relay(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            up = socket.create_connection(("127.0.0.1", SINK))
        except OSError:
            return  # provider down: the client sees the connection close
        auth_pending = threading.Event()

        def down():
            buf = b""
            while True:
                try:
                    data = up.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    line += b"\n"
                    if auth_pending.is_set() and line.startswith(b"250 "):
                        auth_pending.clear()
                        line = b"235 2.7.0 Authentication successful\r\n"
                    self.request.sendall(line)
            try:
                self.request.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        t = threading.Thread(target=down, daemon=True)
        t.start()
        buf = b""
        up_gone = False
        while True:
            try:
                data = self.request.recv(16384 if RATE else 65536)
            except OSError:
                data = b""
            if not data:
                break
            if RATE:
                time.sleep(len(data) / RATE)
            note_read(data)
            if up_gone:
                # smtp-sink hung up (e.g. -A: 550 during DATA). Keep reading what the client
                # still sends until the reply thread has passed on smtp-sink's last words and
                # closed: returning now would close the client's socket under that thread.
                continue
            buf += data
            # Whole lines go on; an AUTH command arms the rewrite of its reply.
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line[:5].upper() == b"AUTH ":
                    auth_pending.set()
                try:
                    up.sendall(line + b"\n")
                except OSError:
                    up_gone = True
                    buf = b""
                    break
        try:
            up.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        t.join(30)


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def server_bind(self):
        if RATE:
            # Set on the listener so the accepted sockets start with it (window scaling).
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        super().server_bind()


with Server(("127.0.0.1", LISTEN), Relay) as s:
    s.serve_forever()
