#!/bin/bash
# qtctl: usage errors exit 2, a dead socket exits 1 with a clear message,
# and a live server's answer is printed (a python3 stand-in server on a unix socket).
set -u
qtctl=$1
fail() { echo "FAIL: $*"; exit 1; }
tmp=$(mktemp -d); trap 'kill $srv 2>/dev/null; rm -rf "$tmp"' EXIT

"$qtctl" --help | grep -q "power-button" || fail "--help lacks the vm commands"
"$qtctl" vm info >/dev/null 2>&1; [ $? -eq 2 ] || fail "missing --api-socket must exit 2"
"$qtctl" -s "$tmp/x" bogus >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown target must exit 2"
"$qtctl" -s "$tmp/x" vm frobnicate >/dev/null 2>&1; [ $? -eq 2 ] || fail "unknown vm command must exit 2"
out=$("$qtctl" -s "$tmp/none.sock" vm info 2>&1); [ $? -eq 1 ] || fail "dead socket must exit 1"
echo "$out" | grep -q "connection refused" || fail "dead socket message: $out"

python3 - "$tmp/api.sock" <<'PY' &
import http.server, socketserver, sys, os
class H(http.server.BaseHTTPRequestHandler):
    def _reply(self, code, body):
        self.send_response(code); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        if self.path == "/api/v1/vm": self._reply(200, b'{"state":"running"}')
        else: self._reply(404, b'{"error":"no route"}')
    def do_PUT(self):
        n = int(self.headers.get("Content-Length", 0)); body = self.rfile.read(n)
        self._reply(200 if self.path == "/api/v1/ports" and body else 400, b'{"echo":' + (body or b'null') + b'}')
    def do_PATCH(self):
        n = int(self.headers.get("Content-Length", 0)); body = self.rfile.read(n)
        self._reply(200 if self.path == "/api/v1/ports/bond0" and body else 400, b'{"patched":' + (body or b'null') + b'}')
    def log_message(self, *a): pass
    def address_string(self): return "unix"
class S(socketserver.UnixStreamServer): pass
s = S(sys.argv[1], H); s.serve_forever()
PY
srv=$!
for _ in $(seq 50); do [ -S "$tmp/api.sock" ] && break; sleep 0.1; done
out=$("$qtctl" -s "$tmp/api.sock" vm info) || fail "vm info against a live server failed"
echo "$out" | grep -q '"state": *"running"' || fail "vm info output: $out"
"$qtctl" -s "$tmp/api.sock" vm pause >/dev/null 2>&1; [ $? -eq 1 ] || fail "an error answer must exit 1"
out=$("$qtctl" -s "$tmp/api.sock" card put ports '{"name":"p0"}') || fail "card put failed"
echo "$out" | grep -q '"name": *"p0"' || fail "card put body not sent: $out"
out=$("$qtctl" -s "$tmp/api.sock" card patch ports/bond0 '{"members":["a1"]}') || fail "card patch failed"
echo "$out" | grep -q '"patched"' || fail "card patch did not send PATCH: $out"
echo "qtctl: all checks passed"
