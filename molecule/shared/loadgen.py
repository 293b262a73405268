#!/usr/bin/env python3
"""Load through nginx for the release tests, run on the VM (the standard library only: no PyPI there).

  loadgen.py run --name agent.vmstack.test --out /root/load.jsonl --stop /root/load.stop \
      --short 20 --invoke 15 --stream 15 [--address 127.0.0.1] [--cafile CA] [--seconds 900]
  loadgen.py summary /root/load.jsonl --mark BEFORE_END [--mark DURING_END]
  loadgen.py nginx /var/log/nginx/access.log --offset BYTES

`run` keeps --short clients on GET /ready (a pause of --pause seconds between two), --invoke clients
on POST /v1/agent/invoke and --stream clients on the SSE stream, each request with a new input (no
cache answers), until the --stop file appears. Each finished request is one JSON line: kind, start,
end, status, and what went wrong: a socket error, or a stream that ended before its `event: done`
(cut). A request that found its kept-alive connection closed by the server before any answer (an
nginx reload retires the old workers' connections) is sent again once on a new connection, as
HTTP clients do, and counted (retried); any other error fails it. Requests still in flight when it
stops are left out and counted (abandoned).

`summary` prints the totals, every failure by kind, and the p99 latency of the short requests that
started before the first mark and between the two marks (the test's marks: roll start and end).

`nginx` counts the statuses nginx answered and those its upstreams gave (its JSON access log from
byte --offset on): "200 upstream 200", "502 upstream 502, 502" and the like.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import socket
import ssl
import sys
import threading
import time
import uuid
from urllib.parse import quote


class Connection(http.client.HTTPSConnection):
    """HTTPS to `address` with `name` as SNI and Host (curl's --resolve)."""

    def __init__(self, name: str, address: str, context: ssl.SSLContext, timeout: float):
        super().__init__(name, 443, context=context, timeout=timeout)
        self.address = address

    def connect(self):
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


# A kept-alive connection the server closed as the request went out (nginx's old workers close
# theirs when a reload retires them): no answer came, so the request was not processed.
STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


def request(conn: Connection, kind: str) -> dict:
    """One request of `kind`; its record (the connection is closed after any error). A request sent on a
    kept-alive connection that the server closed before answering is sent again once on a new one, as
    curl, browsers and Go's client do; the record says so (retried)."""
    record = {"kind": kind, "start": time.time()}
    # (letters only: digits make the stand-in model's planner pick its calculator)
    words = " ".join("".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:6]) for _ in range(4))
    for attempt in (1, 2):
        reused = conn.sock is not None
        try:
            if kind == "short":
                conn.request("GET", "/ready")
            elif kind == "invoke":
                conn.request("POST", "/v1/agent/invoke", body=json.dumps({"input": f"count these words {words}"}),
                             headers={"Content-Type": "application/json"})
            else:
                conn.request("GET", "/v1/agent/stream?input=" + quote(f"count these words {words}"),
                             headers={"Accept": "text/event-stream"})
            response = conn.getresponse()
        except STALE as exc:
            conn.close()
            if reused and attempt == 1:
                record["retried"] = f"{type(exc).__name__}"
                continue
            record["error"] = f"{type(exc).__name__}: {exc}"[:200]
            break
        except (OSError, http.client.HTTPException) as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"[:200]
            conn.close()
            break
        record["status"] = response.status
        try:
            if kind == "stream" and response.status == 200:
                done = False
                for line in response:
                    if line.startswith(b"event: done"):
                        done = True
                response.read()  # (the end of the body: the connection can take the next request)
                record["cut"] = not done
            else:
                response.read()
        except (OSError, http.client.HTTPException) as exc:
            record["error"] = f"{type(exc).__name__} in the body: {exc}"[:200]
            conn.close()
        break
    record["end"] = time.time()
    return record


def run(args: argparse.Namespace) -> int:
    context = ssl.create_default_context(cafile=args.cafile) if args.cafile else ssl._create_unverified_context()
    stop = threading.Event()
    lock = threading.Lock()
    in_flight = [0]
    out = open(args.out, "w", buffering=1)

    def client(kind: str, timeout: float) -> None:
        conn = Connection(args.name, args.address, context, timeout)
        while not stop.is_set():
            with lock:
                in_flight[0] += 1
            record = request(conn, kind)
            with lock:
                in_flight[0] -= 1
                if not stop.is_set():
                    out.write(json.dumps(record) + "\n")
            # (after a failure too: a client refused at once must not spin)
            if kind == "short" or "error" in record or not 200 <= record.get("status", 0) < 300:
                stop.wait(args.pause)
        conn.close()

    threads = [threading.Thread(target=client, args=(kind, timeout), daemon=True)
               for kind, count, timeout in (("short", args.short, 30), ("invoke", args.invoke, 120),
                                            ("stream", args.stream, 180))
               for _ in range(count)]
    for number, thread in enumerate(threads):
        thread.start()
        time.sleep(0.05 if number < args.short else 0.3)  # streams and calls spread over time
    deadline = time.time() + args.seconds
    while time.time() < deadline and not os.path.exists(args.stop):
        time.sleep(0.5)
    with lock:
        stop.set()
        out.write(json.dumps({"kind": "abandoned", "count": in_flight[0]}) + "\n")
        out.close()
    return 0


def p99(values: list[float]) -> float:
    values = sorted(values)
    return round(values[max(0, int(len(values) * 0.99) - 1)], 3) if values else 0.0


def summary(args: argparse.Namespace) -> int:
    records, abandoned = [], 0
    with open(args.file) as handle:
        for line in handle:
            record = json.loads(line)
            if record["kind"] == "abandoned":
                abandoned = record["count"]
            else:
                records.append(record)
    for r in records:
        r["failed"] = "error" in r or not 200 <= r.get("status", 0) < 300 or bool(r.get("cut"))
    failed = [r for r in records if r["failed"]]
    by_kind = {kind: sum(1 for r in records if r["kind"] == kind) for kind in ("short", "invoke", "stream")}
    durations = {kind: sorted(round(r["end"] - r["start"], 1) for r in records if r["kind"] == kind and not r["failed"])
                 for kind in ("invoke", "stream")}
    marks = args.mark or [float("inf")]
    short = [r for r in records if r["kind"] == "short" and not r["failed"]]
    before = [r["end"] - r["start"] for r in short if r["start"] < marks[0]]
    during = [r["end"] - r["start"] for r in short if len(marks) > 1 and marks[0] <= r["start"] < marks[1]]
    print(json.dumps({
        "requests": len(records), "by_kind": by_kind, "abandoned": abandoned,
        "failed": len(failed),
        "statuses": sorted({str(r.get("status")) for r in records}),
        "errors": sorted({r["error"] for r in failed if "error" in r})[:10],
        "cut_streams": sum(1 for r in records if r.get("cut")),
        "retried": sum(1 for r in records if r.get("retried")),
        "failed_samples": failed[:5],
        "invoke_seconds": [durations["invoke"][0], durations["invoke"][-1]] if durations["invoke"] else [],
        "stream_seconds": [durations["stream"][0], durations["stream"][-1]] if durations["stream"] else [],
        "short_p99_before": p99(before), "short_p99_during": p99(during),
        "short_before": len(before), "short_during": len(during),
    }))
    return 0


def nginx(args: argparse.Namespace) -> int:
    counts: collections.Counter = collections.Counter()
    with open(args.file, "rb") as handle:
        handle.seek(args.offset)
        for line in handle:
            record = json.loads(line)
            counts[f"{record['status']} upstream {record['upstream_status'] or '-'}"] += 1
    print(json.dumps(dict(counts)))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--name", required=True)
    r.add_argument("--address", default="127.0.0.1")
    r.add_argument("--cafile")
    r.add_argument("--out", required=True)
    r.add_argument("--stop", required=True)
    r.add_argument("--seconds", type=float, default=900)
    r.add_argument("--short", type=int, default=20)
    r.add_argument("--invoke", type=int, default=15)
    r.add_argument("--stream", type=int, default=15)
    r.add_argument("--pause", type=float, default=0.4)
    s = sub.add_parser("summary")
    s.add_argument("file")
    s.add_argument("--mark", type=float, action="append", default=[])
    n = sub.add_parser("nginx")
    n.add_argument("file")
    n.add_argument("--offset", type=int, default=0)
    args = parser.parse_args(argv)
    return {"run": run, "summary": summary, "nginx": nginx}[args.command](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
