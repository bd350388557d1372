#!/usr/bin/env python3
"""The demo app behind meshd for `make run`: a tiny HTTP service on 127.0.0.1:8080."""
import http.server
import os
import socketserver
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = (f"hello from the demo app (pid {os.getpid()}): you asked for {self.path}\n"
                f"peer as the app sees it: {self.client_address[0]}:{self.client_address[1]}\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        sys.stderr.write("demo-app: " + (fmt % args) + "\n")


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    Server(("127.0.0.1", port), Handler).serve_forever()
