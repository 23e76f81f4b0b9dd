#!/usr/bin/env python3
"""The node lab's backend: answers every HTTP GET with its node's name.

    backend.py NODE_NAME PORT ADDRESS [ADDRESS...]

Listens on PORT at each ADDRESS (IPv4 or IPv6). The body is the node name and a
newline; the header X-Herald-Peer carries the client address as the backend saw
it (kube-proxy's masquerading, or not, shows there). No request logging: the
failover benchmark sends a request every few milliseconds.
"""

import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server_version = "herald-lab-backend"
    sys_version = ""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = (self.server.node_name + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Herald-Node", self.server.node_name)
        self.send_header("X-Herald-Peer", self.client_address[0])
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address, port, node_name):
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.node_name = node_name
        super().__init__((address, port), Handler)

    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()

    def handle_error(self, request, client_address):
        pass  # a client that hangs up early is not news


def main():
    if len(sys.argv) < 4:
        sys.stderr.write(__doc__)
        return 2
    node_name, port, addresses = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    servers = [Server(a, port, node_name) for a in addresses]
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"{node_name}: serving on port {port} at {' '.join(addresses)}", flush=True)
    try:
        servers[0].serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
