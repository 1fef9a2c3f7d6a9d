#!/usr/bin/env python3
"""Stand-ins for what an installed Sputnik talks to, for packaging/check: a Telegram Bot API
that answers getMe over HTTPS (with a certificate from a private CA, as behind a corporate
TLS proxy), and an HTTP CONNECT proxy that logs where it was asked to connect. Both listen on
127.0.0.1 only. Usage: fake_services.py CERT KEY TLS_PORT PROXY_PORT PROXY_LOG"""

import http.server
import json
import select
import socket
import socketserver
import ssl
import sys
import threading


class BotApi(http.server.BaseHTTPRequestHandler):
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path.lower().endswith("/getme"):
            body = {"ok": True, "result": {"id": 1, "is_bot": True, "first_name": "Sputnik",
                                           "username": "SputnikCheckBot", "can_join_groups": False,
                                           "can_read_all_group_messages": False,
                                           "supports_inline_queries": False,
                                           "has_main_web_app": False}}
        else:
            body = {"ok": False, "error_code": 404, "description": "Not Found"}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = answer
    do_POST = answer

    def log_message(self, *args):
        pass


class Proxy(socketserver.StreamRequestHandler):
    """CONNECT host:port → a tunnel to 127.0.0.1:port (every name is local here)."""

    def handle(self):
        request = self.rfile.readline().decode("latin-1").strip()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        method, target, _ = request.split(" ", 2)
        with open(sys.argv[5], "a") as log:
            log.write(f"{method} {target}\n")
        if method != "CONNECT":
            self.wfile.write(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            return
        port = int(target.rsplit(":", 1)[1])
        upstream = socket.create_connection(("127.0.0.1", port))
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        ends = [self.connection, upstream]
        while True:
            readable, _, _ = select.select(ends, [], [], 30)
            if not readable:
                break
            for end in readable:
                data = end.recv(65536)
                if not data:
                    return
                (upstream if end is self.connection else self.connection).sendall(data)


class Threaded(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


class ThreadedTcp(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    cert, key, tls_port, proxy_port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    api = Threaded(("127.0.0.1", tls_port), BotApi)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    api.socket = context.wrap_socket(api.socket, server_side=True)
    proxy = ThreadedTcp(("127.0.0.1", proxy_port), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    api.serve_forever()


if __name__ == "__main__":
    main()
