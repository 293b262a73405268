"""The nginx role in front of the real app: TLS from three sources (ACME from
Pebble), headers, redirect, streaming, limits, logs, staged configuration,
bad input, renewal. Client-side checks run on nginx-client."""

import json
import os
import re
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from bedtest import run_role, wait_for

# Every test drives both instances through the proxy/client fixtures: run once.
testinfra_hosts = ["nginx-trixie"]

CA = "/etc/vmstack-test/pebble-root.pem"
APP = "https://app.vmstack.test"
INTERNAL = "https://internal.vmstack.test"
LIVE_FILES = "/etc/nginx/nginx.conf /etc/nginx/vmstack/sites.conf"
TLS_DIR = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "tls"
ACME_ENV = "REQUESTS_CA_BUNDLE=/etc/vmstack-test/pebble-api.pem"


def curl(client, args: str) -> str:
    return client.check_output(f"curl -sS --cacert {CA} {args}")


def headers(client, url: str) -> dict:
    out = curl(client, f"-o /dev/null -D - {shlex.quote(url)}")
    lines = out.replace("\r", "").splitlines()
    result = {"status": int(lines[0].split()[1])}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            result[name.strip().lower()] = value.strip()
    return result


def sites(**changes) -> list:
    """The scenario's nginx_sites (as in molecule.yml) with per-site changes."""
    base = [
        {"name": "agent", "server_names": ["app.vmstack.test"], "upstreams": ["127.0.0.1:8001", "127.0.0.1:8002"],
         "tls_source": "acme", "streaming_locations": ["/v1/agent/stream"],
         "limit_req_rate": "10r/s", "limit_req_burst": 10},
        {"name": "internal", "server_names": ["internal.vmstack.test"],
         "upstreams": ["127.0.0.1:8001", "127.0.0.1:8002"], "tls_source": "selfsigned",
         "limit_req_rate": "100000r/s", "limit_req_burst": 100000, "limit_conn": 10000},
        {"name": "ops", "server_names": ["ops.vmstack.test"], "upstreams": ["127.0.0.1:8002"],
         "tls_source": "provided", "tls_cert": (TLS_DIR / "ops.crt").read_text(),
         "tls_key": (TLS_DIR / "ops.key").read_text()},
    ]
    return [{**site, **changes.get(site["name"], {})} for site in base]


def live_state(proxy) -> tuple:
    """Live configuration, master pid and worker pids: all must survive a refused change."""
    config = proxy.check_output(f"cat {LIVE_FILES} | sha256sum")
    master = proxy.check_output("cat /run/nginx.pid")
    workers = proxy.check_output(f"pgrep -P {master} | sort | tr '\\n' ' '")
    return config, master, workers


def site_section(proxy, name: str) -> str:
    """One site's part of the live sites.conf."""
    text = proxy.file("/etc/nginx/vmstack/sites.conf").content_string
    sections = re.split(r"^# Site ", text, flags=re.M)
    return next(part for part in sections if part.startswith(f"{name}:"))


def access_log(proxy, request_id: str) -> dict:
    line = wait_for(lambda: proxy.run(f"grep -F '\"{request_id}\"' /var/log/nginx/access.log").stdout.strip(),
                    timeout=10, what="the access log line")
    return json.loads(line.splitlines()[-1])


# --- package, service, listeners ---------------------------------------------------------------

def test_nginx_from_debian_running_and_valid(proxy):
    assert proxy.package("nginx").is_installed
    assert proxy.service("nginx").is_running and proxy.service("nginx").is_enabled
    assert proxy.run("nginx -t").rc == 0
    assert not proxy.file("/etc/nginx/sites-enabled/default").exists or \
        "sites-enabled" not in proxy.file("/etc/nginx/nginx.conf").content_string


def test_stub_status_and_health_on_loopback_only(proxy, client):
    assert "Active connections" in proxy.check_output("curl -sf http://127.0.0.1:8088/stub_status")
    assert json.loads(proxy.check_output("curl -sf http://127.0.0.1:8088/nginx-health")) == {"status": "ok"}
    assert client.run("curl -s --max-time 3 http://nginx-trixie:8088/stub_status").rc != 0


def test_nginx_health_on_each_site(client):
    assert json.loads(curl(client, f"{APP}/nginx-health")) == {"status": "ok"}
    assert json.loads(curl(client, "http://app.vmstack.test/nginx-health")) == {"status": "ok"}


# --- TLS ----------------------------------------------------------------------------------------

def test_acme_certificate_from_pebble_trusted_only_by_test_clients(proxy, client):
    out = client.check_output(
        f"openssl s_client -connect app.vmstack.test:443 -servername app.vmstack.test -CAfile {CA} "
        "</dev/null 2>&1")
    assert "Verify return code: 0 (ok)" in out
    assert re.search(r"issuer=.*Pebble Intermediate", out)
    # the system stores were not touched: without the test CA nothing trusts Pebble
    assert client.run(f"curl -s -o /dev/null {APP}/nginx-health").rc == 60
    assert proxy.run("curl -s -o /dev/null https://nginx-client:14000/dir").rc == 60
    assert proxy.check_output("readlink /etc/nginx/tls/agent/fullchain.pem") == "/etc/letsencrypt/live/agent/fullchain.pem"


def test_selfsigned_and_provided_certificates(client):
    internal = client.check_output(
        "openssl s_client -connect internal.vmstack.test:443 -servername internal.vmstack.test </dev/null 2>/dev/null"
        " | openssl x509 -noout -subject -issuer -ext subjectAltName")
    assert "DNS:internal.vmstack.test" in internal
    subject, issuer = re.findall(r"^(?:subject|issuer)=(.*)$", internal, re.M)
    assert subject == issuer  # self-signed
    served = client.check_output(
        "openssl s_client -connect ops.vmstack.test:443 -servername ops.vmstack.test </dev/null 2>/dev/null"
        " | openssl x509 -noout -fingerprint -sha256")
    supplied = client.check_output(
        f"echo {shlex.quote((TLS_DIR / 'ops.crt').read_text())} | openssl x509 -noout -fingerprint -sha256")
    assert served == supplied


def test_ocsp_stapling_only_where_the_certificate_names_a_responder(proxy):
    assert "ssl_stapling on;" in site_section(proxy, "ops")
    for site in ("agent", "internal"):
        assert "ssl_stapling" not in site_section(proxy, site)


def test_tls_profile_intermediate(client):
    def handshake(flag: str) -> int:
        return client.run(f"openssl s_client -connect app.vmstack.test:443 -servername app.vmstack.test {flag} "
                          "</dev/null").rc
    assert handshake("-tls1_3") == 0
    assert handshake("-tls1_2") == 0
    # OpenSSL 3 refuses TLS 1.1 on its own at the default security level: lower it, and prove
    # on a local TLS 1.1 server that this client then speaks TLS 1.1, so the refusal is nginx's.
    old_tls = "-tls1_1 -cipher 'DEFAULT:@SECLEVEL=0'"
    client.check_output("cd /tmp && openssl req -x509 -newkey rsa:2048 -nodes -keyout t11.key -out t11.crt "
                        "-subj /CN=t11 -days 1 2>/dev/null")
    client.check_output(f"cd /tmp && (timeout 10 openssl s_server -accept 4433 -www {old_tls} -cert t11.crt "
                        "-key t11.key >/dev/null 2>&1 &) && sleep 1")
    control = client.run(f"openssl s_client -connect 127.0.0.1:4433 {old_tls} </dev/null")
    assert control.rc == 0 and "TLSv1.1" in control.stdout, control.stdout + control.stderr
    assert handshake(old_tls) != 0
    assert handshake("-tls1_2 -cipher ECDHE-ECDSA-AES128-SHA") != 0  # CBC is not in the profile


def test_unknown_names_get_nothing(client):
    assert client.run("openssl s_client -connect app.vmstack.test:443 -servername other.example </dev/null").rc != 0
    assert client.run("curl -s -H 'Host: other.example' http://app.vmstack.test/").rc == 52  # 444: empty reply


# --- redirect and headers -------------------------------------------------------------------

def test_http_redirects_with_308_except_the_acme_challenge(proxy, client):
    got = headers(client, "http://app.vmstack.test/v1/agent/runs?x=1")
    assert got["status"] == 308
    assert got["location"] == f"{APP}/v1/agent/runs?x=1"
    proxy.check_output("echo probe-token > /var/lib/vmstack-acme/.well-known/acme-challenge/probe")
    assert client.check_output("curl -s http://app.vmstack.test/.well-known/acme-challenge/probe") == "probe-token"


@pytest.mark.parametrize("path", ["/health", "/does-not-exist"])
def test_hsts_and_security_headers(client, path):
    got = headers(client, APP + path)
    hsts = got["strict-transport-security"]
    assert int(re.search(r"max-age=(\d+)", hsts).group(1)) >= 15552000
    assert "includeSubDomains" in hsts and "preload" not in hsts
    assert got["x-content-type-options"] == "nosniff"
    assert got["x-frame-options"] == "DENY"
    assert got["content-security-policy"] == "frame-ancestors 'none'"
    assert got["referrer-policy"] == "strict-origin-when-cross-origin"
    assert got["server"] == "nginx"  # server_tokens off


# --- reverse proxy ----------------------------------------------------------------------------

def test_proxy_to_the_app_propagates_request_id_and_logs_json(proxy, client):
    request_id = f"molecule-{uuid.uuid4().hex}"
    body = json.loads(curl(client, f"-H 'X-Request-ID: {request_id}' -H 'Content-Type: application/json' "
                                   f"-d '{{\"input\": \"count the words {request_id}\"}}' {APP}/v1/agent/invoke"))
    assert "word_count" in body["output"]
    entry = access_log(proxy, request_id)
    assert entry["status"] == 200 and entry["method"] == "POST" and entry["uri"] == "/v1/agent/invoke"
    assert entry["upstream_addr"] in ("127.0.0.1:8001", "127.0.0.1:8002")
    assert entry["upstream_status"] == "200"
    assert float(entry["upstream_response_time"]) >= 0 and float(entry["request_time"]) >= 0
    assert entry["ssl_protocol"] == "TLSv1.3"
    # Without an id from the caller, nginx makes one, logs it and hands it to the app, which
    # echoes it: the id in the answer is the one in nginx's log (an app-made id would not be).
    echoed = headers(client, f"{APP}/health")["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", echoed)
    assert access_log(proxy, echoed)["uri"] == "/health"


def test_requests_spread_over_every_replica(proxy, client):
    marker = uuid.uuid4().hex
    client.check_output(f"for i in $(seq 8); do curl -sk -o /dev/null -H \"X-Request-ID: {marker}-$i\" "
                        f"{INTERNAL}/health; done")
    addrs = {access_log(proxy, f"{marker}-{i}")["upstream_addr"] for i in range(1, 9)}
    assert addrs == {"127.0.0.1:8001", "127.0.0.1:8002"}


def test_gzip_for_json(client):
    got = curl(client, f"-o /dev/null -D - -H 'Accept-Encoding: gzip' {APP}/openapi.json").lower()
    assert "content-type: application/json" in got
    assert "content-encoding: gzip" in got


SSE_CLIENT = r"""
import json, socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
start = time.monotonic()
sock = ctx.wrap_socket(socket.create_connection(("app.vmstack.test", 443)), server_hostname="app.vmstack.test")
sock.sendall(b"GET /v1/agent/stream?input=stream+me+some+tokens+through+nginx HTTP/1.1\r\n"
             b"Host: app.vmstack.test\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n")
first = None
data = b""
while True:
    chunk = sock.recv(4096)
    if not chunk:
        break
    data += chunk
    if first is None and b"\ndata: {\"token\"" in data:
        first = time.monotonic() - start
end = time.monotonic() - start
print(json.dumps({"first": first, "end": end, "done": b"event: done" in data,
                  "tokens": data.count(b"data: {\"token\"")}))
"""


def sse(client) -> dict:
    return json.loads(client.check_output(f"python3 -c {shlex.quote(SSE_CLIENT)} {CA}"))


def test_sse_first_event_arrives_long_before_the_stream_ends(client):
    timing = sse(client)
    print(f"SSE through nginx: first event {timing['first']:.3f} s, end {timing['end']:.3f} s, "
          f"{timing['tokens']} tokens")
    assert timing["done"] and timing["tokens"] >= 3
    assert timing["first"] < 1.0
    assert timing["end"] - timing["first"] > 1.0  # the tokens came one by one, not in one buffered body


def test_rate_limit_429_for_a_burst_not_for_normal_traffic(client):
    time.sleep(2)  # let the bucket refill after the tests above
    normal = client.check_output(
        f"for i in 1 2 3 4 5; do curl -s --cacert {CA} -o /dev/null -w '%{{http_code}} ' {APP}/health; "
        "sleep 0.2; done").split()
    assert normal == ["200"] * 5
    burst = curl(client, "-w '\\n%{http_code}\\n' " + " ".join([f"{APP}/health"] * 40))
    codes = re.findall(r"^(\d{3})$", burst, re.M)
    assert len(codes) == 40 and codes.count("429") >= 10 and codes.count("200") >= 10, codes
    assert '{"detail":"too many requests"}' in burst


# --- testssl.sh (most of a minute: it runs while the read-only tests run) --------------------

TESTSSL = f"testssl --quiet --color 0 --warnings off --add-ca {CA} --jsonfile /tmp/testssl.json {APP}"


@pytest.fixture(scope="module", autouse=True)
def testssl_in_the_background(client):
    """Started before the first test; its test, placed before the tests that
    renew certificates or re-run the role, waits for the report."""
    client.check_output("rm -f /tmp/testssl.json /tmp/testssl.out /tmp/testssl.status")
    client.check_output(f"({TESTSSL} > /tmp/testssl.out 2>&1; echo $? > /tmp/testssl.status) > /dev/null 2>&1 &")


def test_testssl_grade_a_plus_on_the_acme_certificate(client):
    wait_for(lambda: client.file("/tmp/testssl.status").exists, timeout=300, interval=2, what="testssl.sh")
    findings = json.loads(client.file("/tmp/testssl.json").content_string)
    rating = {f["id"]: f["finding"] for f in findings if f["id"] in ("overall_grade", "final_score")}
    caps = [f["finding"] for f in findings if f["id"].startswith("grade_cap")]
    print(f"testssl.sh {APP}: {rating} caps={caps}")
    assert rating.get("overall_grade") == "A+", (rating, caps, client.file("/tmp/testssl.out").content_string[-3000:])


# --- ACME renewal ----------------------------------------------------------------------------

def test_renewal_timer_and_dry_run(proxy):
    assert proxy.service("certbot.timer").is_enabled
    assert "REQUESTS_CA_BUNDLE=/etc/vmstack-test/pebble-api.pem" in \
        proxy.file("/etc/systemd/system/certbot.service.d/vmstack.conf").content_string
    result = proxy.run(f"{ACME_ENV} certbot renew --no-random-sleep-on-renew --dry-run --cert-name agent --server https://nginx-client:14000/dir")
    assert result.rc == 0, result.stdout + result.stderr


def test_forced_renewal_reloads_without_dropping_a_stream(proxy, client):
    def serial() -> str:
        return client.check_output(
            "openssl s_client -connect app.vmstack.test:443 -servername app.vmstack.test </dev/null 2>/dev/null"
            " | openssl x509 -noout -serial")
    before, master = serial(), proxy.check_output("cat /run/nginx.pid")
    client.check_output(f"(python3 -c {shlex.quote(SSE_CLIENT)} {CA} > /tmp/stream.json 2>&1 &) ; sleep 0.7")
    renewed = proxy.run(f"{ACME_ENV} certbot renew --no-random-sleep-on-renew --force-renewal --cert-name agent")
    assert renewed.rc == 0, renewed.stdout + renewed.stderr
    stream = wait_for(lambda: client.run("cat /tmp/stream.json").stdout.strip(), timeout=30, what="the stream")
    stream = json.loads(stream)
    assert stream["done"] and stream["tokens"] >= 3, stream
    assert stream["end"] > 0.7  # it was open while certbot renewed and the hook reloaded
    assert serial() != before
    assert proxy.check_output("cat /run/nginx.pid") == master  # reloaded, not restarted


# --- sslyze (on the controller: it is pip-only) --------------------------------------------------

SSLYZE = os.environ.get("VMSTACK_SSLYZE") or shutil.which("sslyze")


@pytest.mark.skipif(not SSLYZE, reason="sslyze is not installed on the controller (pip install sslyze)")
def test_sslyze_mozilla_intermediate_compliant(proxy, client, tmp_path):
    root = tmp_path / "pebble-root.pem"
    root.write_text(client.file(CA).content_string)
    address = proxy.interface("eth0").addresses[0]
    run = subprocess.run([SSLYZE, "--mozilla_config=intermediate", f"--certinfo_ca_file={root}",
                          f"app.vmstack.test:443{{{address}}}"], capture_output=True, text=True, timeout=120,
                         check=False)
    compliance = run.stdout[run.stdout.find("COMPLIANCE AGAINST"):]
    print(f"sslyze: {compliance.strip()}")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "app.vmstack.test:443: OK - Compliant." in compliance


# --- staged configuration, bad input, the down flag (these re-run the role) ----------------------

@pytest.mark.parametrize(("changes", "message"), [
    ({"agent": {"server_names": ["app.vmstack.test; return 200"]}}, "invalid server_name"),
    ({"ops": {"tls_key": (TLS_DIR / "other.key").read_text() if (TLS_DIR / "other.key").exists() else ""}},
     "does not match its key"),
    ({"internal": {"upstreams": []}}, "upstream list is empty"),
], ids=["server_name", "cert_key_mismatch", "empty_upstreams"])
def test_bad_input_fails_early_and_leaves_nginx_alone(proxy, changes, message):
    before = live_state(proxy)
    result = run_role("nginx-trixie", "nginx", {"nginx_sites": sites(**changes)})
    assert result.returncode != 0
    assert message in result.stdout, result.stdout[-3000:]
    assert re.search(r"changed=0 ", result.stdout), result.stdout[-3000:]
    assert live_state(proxy) == before
    assert "BEGIN" not in result.stdout.split("Check each site")[-1]  # no key material in the failure


def fingerprint(client, pem: str = "") -> str:
    source = (f"echo {shlex.quote(pem)}" if pem else
              "openssl s_client -connect ops.vmstack.test:443 -servername ops.vmstack.test </dev/null 2>/dev/null")
    return client.check_output(f"{source} | openssl x509 -noout -fingerprint -sha256")


def new_ops_certificate(directory: Path) -> Path:
    """A new self-signed certificate for the provided site, on the key other.key."""
    cert = directory / "ops-new.crt"
    subprocess.run(["openssl", "req", "-x509", "-key", str(TLS_DIR / "other.key"), "-days", "30",
                    "-subj", "/CN=ops.vmstack.test", "-addext", "subjectAltName=DNS:ops.vmstack.test",
                    "-out", str(cert)], check=True, capture_output=True)
    return cert


def test_config_rejected_by_nginx_never_goes_live(proxy, client, tmp_path):
    """A run that nginx -t rejects, and that also brings a new certificate for another site: neither the
    configuration nor the certificate goes live, not even for an nginx started afresh."""
    before, served = live_state(proxy), fingerprint(client)
    result = run_role("nginx-trixie", "nginx", {"nginx_sites": sites(
        agent={"extra_config": "no_such_directive on;"},
        ops={"tls_cert": new_ops_certificate(tmp_path).read_text(), "tls_key": (TLS_DIR / "other.key").read_text()})})
    assert result.returncode != 0
    assert "nginx -t rejected the staged configuration" in result.stdout, result.stdout[-3000:]
    assert "no_such_directive" in result.stdout
    assert live_state(proxy) == before  # same files, same master, same workers: no reload
    assert json.loads(curl(client, f"{APP}/health"))["status"] == "ok"
    proxy.check_output("systemctl restart nginx")  # what a reboot would load
    assert fingerprint(client) == served, "the rejected run's certificate went live"


@pytest.fixture(scope="module")
def day_two(proxy, client, tmp_path_factory):
    """One re-run of the role with two day-two changes, while a client keeps requesting the provided site:
    a new certificate and key for that site, and one replica of the internal site marked down."""
    new_cert = new_ops_certificate(tmp_path_factory.mktemp("tls"))
    before, master = fingerprint(client), proxy.check_output("cat /run/nginx.pid")
    client.check_output("rm -f /tmp/rotation-stop /tmp/rotation-codes; (while [ ! -e /tmp/rotation-stop ]; do"
                        " curl -sk -o /dev/null -w '%{http_code}\\n' https://ops.vmstack.test/health"
                        " >> /tmp/rotation-codes; sleep 0.2; done > /dev/null 2>&1 &)")
    result = run_role("nginx-trixie", "nginx", {"nginx_sites": sites(
        ops={"tls_cert": new_cert.read_text(), "tls_key": (TLS_DIR / "other.key").read_text()},
        internal={"upstreams_down": ["127.0.0.1:8002"]})})
    time.sleep(1)
    client.check_output("touch /tmp/rotation-stop; sleep 0.5")
    codes = client.check_output("cat /tmp/rotation-codes").split()
    assert result.returncode == 0, result.stdout[-3000:]
    return {"result": result, "before": before, "master": master, "codes": codes, "new_cert": new_cert}


def test_a_rotated_provided_certificate_is_served_after_a_reload_under_traffic(proxy, client, day_two):
    """The new certificate and key are served at once, by a reload (same master), while the client's
    requests to that site never fail."""
    assert (TLS_DIR / "other.key").read_text().splitlines()[1] not in day_two["result"].stdout  # never printed
    served = fingerprint(client)
    assert served != day_two["before"] and served == fingerprint(client, day_two["new_cert"].read_text())
    assert proxy.check_output("cat /run/nginx.pid") == day_two["master"]  # reloaded, not restarted
    codes = day_two["codes"]
    print(f"\n--- certificate rotation: {len(codes)} requests to the site, {codes.count('200')} answered 200")
    assert len(codes) > 10 and set(codes) == {"200"}, codes


def test_down_flag_drains_a_replica(proxy, client, day_two):
    assert "127.0.0.1:8002 max_fails=3 fail_timeout=10s down;" in site_section(proxy, "internal")
    marker = uuid.uuid4().hex
    client.check_output(f"for i in $(seq 6); do curl -sk -o /dev/null -H \"X-Request-ID: {marker}-$i\" "
                        f"{INTERNAL}/health; done")
    assert {access_log(proxy, f"{marker}-{i}")["upstream_addr"] for i in range(1, 7)} == {"127.0.0.1:8001"}
    # Last tests of the scenario: the instances are destroyed next, no need to undo.
