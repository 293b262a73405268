"""Helpers of the monitoring scenario's tests: commands in the VMs, Prometheus queries, alert deliveries."""

from __future__ import annotations

import json
import subprocess
import time

PROM, APP = "mon-prom", "mon-app"
RECEIVED = "/var/log/alerts.jsonl"
SITE = "https://agent.vmstack.test"
MONITOR_PASSWORD = "molecule-monitor-password-6a1f0c2e"
SECRETS = ["molecule-pg-password-3f8d2e61", "molecule-redis-password-b94a07d2", "molecule-secret-key-7c1e9a4b",
           MONITOR_PASSWORD, "molecule-backup-password-5d2c8e17",
           "molecule-backup-password-rotated-91c3e7"]


def sh(vm: str, command: str, *, check: bool = True, stdin: str | None = None, timeout: int = 300) -> str:
    result = subprocess.run(["docker", "exec", "-i", vm, "bash", "-c", command], input=stdin, text=True,
                            capture_output=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{vm}: {command}: rc={result.returncode}\n{result.stdout}\n{result.stderr}")
    return result.stdout


def query(expr: str) -> list[dict]:
    out = sh(PROM, "curl -sf -G http://127.0.0.1:9090/api/v1/query --data-urlencode query@-", stdin=expr)
    return json.loads(out)["data"]["result"]


def value(expr: str) -> float:
    result = query(expr)
    return float(result[0]["value"][1]) if result else 0.0


def wait_for(predicate, timeout: float, interval: float = 2.0):
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(interval)


def notifications() -> list[dict]:
    """Every alert the receiver got: alertname, status, labels, time received."""
    out = sh(PROM, f"cat {RECEIVED} 2>/dev/null || true")
    return [{"alertname": a["labels"]["alertname"], "status": a["status"], "labels": a["labels"],
             "at": body["received_at"]}
            for body in map(json.loads, out.splitlines()) for a in body["alerts"]]


def delivered(alertname: str, status: str, since: float, **labels: str) -> float | None:
    """Seconds from `since` until the receiver got this alert in this status, or None."""
    for n in notifications():
        if (n["alertname"] == alertname and n["status"] == status and n["at"] >= since
                and all(n["labels"].get(k) == v for k, v in labels.items())):
            return n["at"] - since
    return None


def invoke(texts: list[str], pause: float = 0) -> list[str]:
    """POST each text to /v1/agent/invoke through nginx over TLS, `pause` seconds apart; the status codes."""
    script = f"\nsleep {pause}\n".join(
        f"curl -sk -o /dev/null -w '%{{http_code}}\\n' -H 'Content-Type: application/json' "
        f"-d '{json.dumps({'input': t})}' {SITE}/v1/agent/invoke" for t in texts)
    return sh(APP, script).split()


def wait_delivered(wanted: dict[str, tuple[float, dict]], status: str, timeout: float) -> dict[str, float | None]:
    """Alert name -> seconds until the receiver got it in `status` (after its own start time), or None."""
    def check():
        return {name: delivered(name, status, since, **labels) for name, (since, labels) in wanted.items()}
    return wait_for(lambda: (lambda got: got if None not in got.values() else None)(check()), timeout, 3) or check()
