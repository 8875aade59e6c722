#!/usr/bin/env python3
"""A CRL distribution point for the revocation tests, misbehaving on request.

    crl_server.py PORT DIR

GET /NAME answers according to the file DIR/mode (read on every request):
  good     DIR/NAME with 200
  404      404 Not Found
  garbage  200 with an HTML page instead of a CRL
  wrong    DIR/wrong-NAME (a CRL signed by another CA) with 200
  slow     accepts, then says nothing for 60 seconds
Every request is appended to DIR/requests.log.
"""
import http.server
import os
import sys
import time

port, root = int(sys.argv[1]), sys.argv[2]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        name = os.path.basename(self.path)
        with open(os.path.join(root, "requests.log"), "a") as log:
            log.write(self.path + "\n")
        try:
            mode = open(os.path.join(root, "mode")).read().strip()
        except OSError:
            mode = "good"
        if mode == "slow":
            time.sleep(60)
            return
        if mode == "404":
            self.send_error(404)
            return
        if mode == "garbage":
            body = b"<html><body>Service temporarily unavailable</body></html>"
        else:
            path = os.path.join(root, ("wrong-" if mode == "wrong" else "") + name)
            try:
                body = open(path, "rb").read()
            except OSError:
                self.send_error(404)
                return
        self.send_response(200)
        self.send_header("Content-Type", "application/pkix-crl")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
