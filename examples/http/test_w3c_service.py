#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""test_w3c_service.py SERVICE — checks examples/http/w3c_service.c the way
the W3C Trace Context suite drives it, without the suite (which needs
aiohttp and a download): this script plays the harness.

It starts the service on a free 127.0.0.1 port and an HTTP receiver of its
own, POSTs the harness's JSON (a list of {url, arguments}) with chosen
trace headers, and checks the calls the service made: one traceparent
each, the trace inherited (or restarted for an invalid one), a new
parent-id per call, the tracestate kept (its Level 2 cases included),
reserved flag bits zeroed, the random flag propagated, and the arguments
forwarded as the body.  Every wait is bounded; the service is stopped on
any exit."""
import http.server
import json
import re
import subprocess
import sys
import threading
import urllib.request

TP = "00-12345678901234567890123456789012-1234567890123456-00"
TRACE = "12345678901234567890123456789012"


class Receiver(http.server.BaseHTTPRequestHandler):
    calls = []
    lock = threading.Lock()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
        with Receiver.lock:
            Receiver.calls.append((self.path, self.headers.get_all("traceparent") or [],
                                   ",".join(self.headers.get_all("tracestate") or []), body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


def main():
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    rport = receiver.server_address[1]
    service = subprocess.Popen([sys.argv[1], "--port", "0"], stdout=subprocess.PIPE, text=True)
    failed = []

    def check(name, cond, detail=""):
        print(("ok   " if cond else "FAIL ") + name + ("" if cond else ": " + detail))
        if not cond:
            failed.append(name)

    try:
        line = service.stdout.readline()
        m = re.match(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if not m:
            print("FAIL the service did not start: " + line)
            return 1
        base = m.group(1)

        def drive(headers, count=1, arguments=None):
            Receiver.calls = []
            calls = [{"url": "http://127.0.0.1:%d/%d" % (rport, i), "arguments": arguments or []}
                     for i in range(count)]
            req = urllib.request.Request(base + "/test", data=json.dumps(calls).encode(), method="POST",
                                         headers=dict(headers, **{"Content-Type": "application/json"}))
            with urllib.request.urlopen(req, timeout=20) as r:
                r.read()
            return sorted(Receiver.calls)

        got = drive({"traceparent": TP}, 3, [{"url": "x", "arguments": []}])
        check("three calls made", len(got) == 3, repr(got))
        check("one traceparent each", all(len(c[1]) == 1 for c in got), repr(got))
        check("the trace inherited", all(c[1][0][3:35] == TRACE for c in got), repr(got))
        check("a new parent-id per call", len({c[1][0][36:52] for c in got}) == 3 and
              all(c[1][0][36:52] != "1234567890123456" for c in got), repr(got))
        check("the arguments forwarded", all(json.loads(c[3]) == [{"url": "x", "arguments": []}] for c in got),
              repr(got))
        got = drive({"traceparent": TP, "tracestate": "foo=1,foo=1"})
        check("duplicated keys: the tracestate kept", "foo=1" in got[0][2], repr(got))
        got = drive({"traceparent": TP, "tracestate": "foo@=1,bar=2"})
        check("'@' anywhere in a key", got[0][2] == "foo@=1,bar=2", repr(got))
        got = drive({"traceparent": TP, "tracestate": "@foo=1,bar=2"})
        check("a key starting with '@': the list dropped", got[0][2] == "", repr(got))
        got = drive({"traceparent": "00-00000000000000000000000000000000-1234567890123456-01"}, 2)
        check("an invalid traceparent: a new trace", all(c[1][0][3:35] != "0" * 32 for c in got) and
              got[0][1][0][3:35] == got[1][1][0][3:35], repr(got))
        got = drive({"traceparent": TP[:-2] + "ff"})
        check("reserved flags zeroed", got[0][1][0].endswith("-03"), repr(got))
        got = drive({"traceparent": TP[:-2] + "02"})
        check("the random flag propagated", int(got[0][1][0][-2:], 16) & 2 == 2, repr(got))
        got = drive({})
        check("no context: a trace started, random flag set", len(got[0][1]) == 1 and
              int(got[0][1][0][-2:], 16) & 2 == 2, repr(got))
        logged = service.stdout.readline()
        check("the span id sent is logged", re.match(r"call http://127\.0\.0\.1:\d+/\d+ trace=[0-9a-f]{32} "
                                                     r"span=[0-9a-f]{16}$", logged.strip()) is not None, logged)
    finally:
        service.terminate()
        try:
            service.wait(timeout=10)
        except subprocess.TimeoutExpired:
            service.kill()
        receiver.shutdown()
    print("w3c service: every check held" if not failed else "w3c service: FAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
