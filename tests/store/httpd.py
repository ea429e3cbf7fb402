#!/usr/bin/env python3
"""A small HTTP server for the blob-store tests (tests/store/blob_store.sh).

Serves the files under --root with HEAD and GET (size, a strong ETag, Range), and can
  --auth USER:PASS     answer 401 to any request without that Basic authorization;
  --hold-after BYTES   send only the first BYTES of a GET body, then wait until the file
                       --release exists before sending the rest (a download that is "in
                       flight" for as long as the test wants, without timing guesses).
Writes the port it listens on (127.0.0.1, chosen by the kernel) to --port-file.
"""
import argparse
import base64
import hashlib
import http.server
import os
import time

HOLD_POLL_S = 0.05


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--auth")
    ap.add_argument("--hold-after", type=int, default=-1)
    ap.add_argument("--release")
    a = ap.parse_args()
    want_auth = ("Basic " + base64.b64encode(a.auth.encode()).decode()) if a.auth else None

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            pass

        def _file(self):
            path = os.path.join(a.root, self.path.split("?")[0].lstrip("/"))
            if want_auth and self.headers.get("Authorization") != want_auth:
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            if not os.path.isfile(path):
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            with open(path, "rb") as f:
                return f.read()

        def _head(self, data, status=200, start=0, end=None):
            end = len(data) if end is None else end
            self.send_response(status)
            self.send_header("Content-Length", str(end - start))
            self.send_header("ETag", '"%s"' % hashlib.sha256(data).hexdigest()[:32])
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end - 1, len(data)))
            self.end_headers()

        def do_HEAD(self):
            data = self._file()
            if data is not None:
                self._head(data)

        def do_GET(self):
            data = self._file()
            if data is None:
                return
            start, status = 0, 200
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes=") and rng[6:].rstrip("-").isdigit():
                start, status = int(rng[6:].rstrip("-")), 206
            self._head(data, status, start)
            body = data[start:]
            if a.hold_after >= 0 and len(body) > a.hold_after:
                self.wfile.write(body[: a.hold_after])
                self.wfile.flush()
                while not (a.release and os.path.exists(a.release)):
                    time.sleep(HOLD_POLL_S)
                body = body[a.hold_after:]
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(a.port_file + ".tmp", a.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
