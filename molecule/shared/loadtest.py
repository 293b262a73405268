"""Load through nginx during a release, for the scenarios' tests: molecule/shared/loadgen.py run on
the VM (through `docker exec`), its summary and nginx's status counts read back."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from bedtest import wait_for

LOADGEN = Path(__file__).resolve().parent / "loadgen.py"


def in_container(container: str, command: str) -> str:
    return subprocess.run(["docker", "exec", container, "sh", "-c", command], capture_output=True, text=True,
                          timeout=120, check=True).stdout


class Traffic:
    """loadgen.py on `container` against nginx's `name` on 127.0.0.1 over HTTPS (trusting `cafile`):
    `short` clients on /ready, `invoke` on POST /v1/agent/invoke, `stream` on SSE streams, from
    `warm_up` seconds before the block's body (every replica holds calls and streams by then) until it
    ends. mark() notes the VM's clock: the summary's p99 of /ready compares before the first mark with
    between the first and the second (the block's body)."""

    def __init__(self, container: str, name: str, cafile: str, *, short: int = 25, invoke: int = 15,
                 stream: int = 15, warm_up: float = 25):
        self.container, self.warm_up, self.marks, self.summary, self.upstream = container, warm_up, [], {}, {}
        self.clients = {"short": short, "invoke": invoke, "stream": stream}
        self.args = (f"--name {name} --cafile {cafile} --short {short} --pause 0.3 --invoke {invoke} "
                     f"--stream {stream}")

    def vm(self, command: str) -> str:
        return in_container(self.container, command)

    def __enter__(self):
        subprocess.run(["docker", "cp", str(LOADGEN), f"{self.container}:/root/loadgen.py"], check=True)
        self.log_offset = int(self.vm("stat -c %s /var/log/nginx/access.log"))
        self.vm("rm -f /root/load.jsonl /root/load.stop; nohup python3 /root/loadgen.py run "
                f"{self.args} --out /root/load.jsonl --stop /root/load.stop >/root/load.err 2>&1 &")
        time.sleep(self.warm_up)
        self.mark()
        return self

    def mark(self):
        self.marks.append(float(self.vm("date +%s.%N")))

    def __exit__(self, *exc):
        self.mark()
        self.vm("touch /root/load.stop")
        wait_for(lambda: "abandoned" in self.vm("tail -n 1 /root/load.jsonl"), timeout=30, what="the load to stop")
        marks = " ".join(f"--mark {m}" for m in self.marks[:2])
        self.summary = json.loads(self.vm(f"python3 /root/loadgen.py summary /root/load.jsonl {marks}"))
        self.upstream = json.loads(self.vm(
            f"python3 /root/loadgen.py nginx /var/log/nginx/access.log --offset {self.log_offset}"))

    def report(self, what: str) -> str:
        s = self.summary
        return (f"\n--- {what}: {s['requests']} requests ({s['by_kind']}), {s['failed']} failed, "
                f"{s['cut_streams']} streams cut, statuses {s['statuses']}, {s['retried']} sent again on a new connection "
                f"after nginx closed a kept-alive one, {s['abandoned']} in flight at the end; "
                f"invoke {s['invoke_seconds']} s, streams {s['stream_seconds']} s; p99 of /ready before "
                f"{s['short_p99_before']} s ({s['short_before']}), during {s['short_p99_during']} s "
                f"({s['short_during']}), {s['short_p99_during'] / max(s['short_p99_before'], 0.001):.1f}x; "
                f"nginx status/upstream status: {self.upstream}")

    def assert_clean(self, *, requests: int = 5000, stream_seconds: float = 45, invoke_seconds: float = 10,
                     p99_ratio: float | None = 2.0, p99_floor: float = 2.0):
        """No failed request, no stream cut, no 502/504 anywhere in nginx's log of the time, the mix and
        the lengths asked for, and (unless None) the p99 of /ready during within p99_ratio of before or
        under p99_floor seconds. That bound catches a stall, not a slowdown: on two shared cores a
        replica's start alone doubles a p99 of 16 ms, and another scenario's load beside this one made
        it 94 -> 679 ms once; the ratios are figures in docs/benchmarks.md, not a timed assert."""
        s = self.summary
        assert s["failed"] == 0 and s["cut_streams"] == 0, s
        assert not [k for k in self.upstream if re.search(r"\b50[24]\b", k)], self.upstream
        assert s["requests"] >= requests, s
        assert all(s["by_kind"][kind] > 0 for kind, clients in self.clients.items() if clients), s
        assert not self.clients["stream"] or s["stream_seconds"][0] >= stream_seconds, s
        assert not self.clients["invoke"] or s["invoke_seconds"][0] >= invoke_seconds, s
        if p99_ratio is not None:
            assert s["short_p99_during"] <= max(p99_ratio * s["short_p99_before"], p99_floor), s
