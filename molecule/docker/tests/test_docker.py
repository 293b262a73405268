"""The docker role on a systemd "VM": engine, daemon.json, Compose, images, users."""

import json

import pytest
from bedtest import run_role, wait_for

COMPOSE = """\
name: bedcheck
services:
  web:
    image: vmstack/busybox:1
    command: ["httpd", "-f", "-p", "8080", "-h", "/srv"]
    volumes: ["./srv:/srv:ro"]
    ports: ["127.0.0.1:18080:8080"]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/index.html"]
      interval: 1s
      retries: 30
"""


def docker_json(host, fmt: str, *args: str):
    return json.loads(host.check_output(f"docker {' '.join(args)} --format '{fmt}'"))


def test_engine_running_and_enabled(host):
    service = host.service("docker")
    assert service.is_running
    assert service.is_enabled


def test_distro_packages_installed(host):
    assert host.package("docker.io").is_installed
    assert host.package("docker-compose").is_installed
    assert not host.package("docker-ce").is_installed
    # with apt told to skip Recommends (prepare.yml), the client too
    assert host.package("docker-cli").is_installed
    assert host.run("docker version --format '{{.Client.Version}}'").rc == 0


def test_daemon_json_applied(host):
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config["log-driver"] == "local"
    assert config["log-opts"] == {"max-size": "20m", "max-file": "5"}
    assert config["live-restore"] is True
    info = docker_json(host, "{{json .}}", "info")
    assert info["LoggingDriver"] == "local"
    assert info["LiveRestoreEnabled"] is True
    assert info["Driver"] == "overlay2"


def test_compose_v2_plugin(host):
    version = host.check_output("docker compose version --short").lstrip("v")
    major, minor = (int(p) for p in version.split(".")[:2])
    assert (major, minor) >= (2, 18), version


def test_image_loaded_and_staging_cleaned(host):
    assert host.run("docker image inspect vmstack/busybox:1").rc == 0
    assert not host.file("/var/lib/vmstack/images/busybox.tar").exists


def test_container_health_check_and_hardening(host):
    name = "bedcheck-health"
    host.run(f"docker rm -f {name}")
    host.check_output(
        f"docker run -d --name {name} --health-cmd true --health-interval 1s "
        "vmstack/busybox:1 sleep 300"
    )
    try:
        wait_for(lambda: host.check_output(
            f"docker inspect -f '{{{{.State.Health.Status}}}}' {name}") == "healthy",
            timeout=30, what="container healthy")
        # daemon-wide no-new-privileges and log rotation reach every container
        status = host.check_output(f"docker exec {name} cat /proc/1/status")
        assert "NoNewPrivs:\t1" in status
        log_config = docker_json(host, "{{json .HostConfig.LogConfig}}", "inspect", name)
        assert log_config == {"Type": "local", "Config": {"max-file": "5", "max-size": "20m"}}
    finally:
        host.run(f"docker rm -f {name}")


def test_compose_project_up_wait_and_serves(host):
    workdir = "/tmp/bedcheck"
    host.check_output(f"mkdir -p {workdir}/srv && echo vmstack-ok > {workdir}/srv/index.html")
    host.check_output(f"cat > {workdir}/compose.yaml <<'EOF'\n{COMPOSE}EOF")
    try:
        host.check_output(f"cd {workdir} && docker compose up -d --wait --wait-timeout 60")
        body = host.check_output(
            "python3 -c \"import urllib.request;"
            "print(urllib.request.urlopen('http://127.0.0.1:18080/index.html').read().decode())\"")
        assert body.strip() == "vmstack-ok"
    finally:
        host.run(f"cd {workdir} && docker compose down -v")


def test_docker_group_member_can_use_engine(host):
    assert "docker" in host.user("deploy").groups
    assert host.run("runuser -u deploy -- docker ps").rc == 0


@pytest.mark.parametrize(("role_vars", "message"), [
    ({"docker_install_source": "snap"}, "docker_install_source"),
    ({"docker_images": [{"name": "vmstack/busybox", "source": "load", "archive": "/nonexistent.tar"}]},
     "pinned"),
    ({"docker_images": [{"name": "vmstack/app:1", "source": "load", "archive": "/nonexistent.tar"}]},
     "/nonexistent.tar"),
    ({"docker_log_driver": "local", "docker_log_max_file": "many"}, "docker_log_max_file"),
])
def test_bad_input_fails_before_any_change(host, role_vars, message):
    before = host.file("/etc/docker/daemon.json").content_string
    started = host.check_output("systemctl show -p ActiveEnterTimestampMonotonic docker")
    result = run_role(host.backend.get_hostname(), "docker", role_vars)
    assert result.returncode != 0, result.stdout
    assert message in result.stdout, result.stdout[-3000:]
    assert "changed=0" in result.stdout, result.stdout[-3000:]
    assert host.file("/etc/docker/daemon.json").content_string == before
    assert host.check_output("systemctl show -p ActiveEnterTimestampMonotonic docker") == started
