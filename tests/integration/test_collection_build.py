"""The collection builds, installs offline from its tarball, and a playbook
outside this checkout reaches its roles by FQCN."""

import os
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(cmd, cwd, env=None):
    result = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, check=False)
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    work = tmp_path_factory.mktemp("collection")
    # Nothing of this checkout on the collection path: only the tarball counts.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    built = run(["ansible-galaxy", "collection", "build", str(ROOT), "--output-path", str(work)], cwd=work, env=clean)
    assert built.returncode == 0, built.stdout
    tarballs = list(work.glob("vmstack-deploy-*.tar.gz"))
    assert len(tarballs) == 1
    dest = work / "collections"
    env = dict(clean, ANSIBLE_COLLECTIONS_PATH=str(dest), ANSIBLE_NOCOLOR="1")
    inst = run(["ansible-galaxy", "collection", "install", "--offline", "--no-deps", "-p", str(dest),
                str(tarballs[0])], cwd=work, env=env)
    assert inst.returncode == 0, inst.stdout
    assert (dest / "ansible_collections" / "vmstack" / "deploy" / "MANIFEST.json").is_file(), inst.stdout
    return {"work": work, "tarball": tarballs[0], "env": env, "dest": dest}


def run_play(installed, name: str, text: str):
    """ansible-playbook of a play written outside this checkout, against localhost."""
    play = installed["work"] / name
    play.write_text(text)
    return run(["ansible-playbook", "-i", "localhost,", "-c", "local", str(play)],
               cwd=installed["work"], env=installed["env"])


def test_tarball_leaves_out_tests_and_build_outputs(installed):
    with tarfile.open(installed["tarball"]) as tar:
        names = tar.getnames()
    assert "roles/docker/tasks/main.yml" in names
    assert "playbooks/deploy.yml" in names
    for prefix in ("tests/", "molecule/", ".ci/", ".venv/", "build/", ".github/"):
        assert not [n for n in names if n.startswith(prefix)], prefix


def test_installed_role_documents_its_arguments(installed):
    doc = run(["ansible-doc", "-t", "role", "vmstack.deploy.docker"], cwd=installed["work"], env=installed["env"])
    assert doc.returncode == 0, doc.stdout
    assert "docker_install_source" in doc.stdout


def test_playbook_calls_role_by_fqcn(installed):
    """The installed role runs from a playbook elsewhere: argument validation
    (the role's first step) rejects a bad value with the role's own message."""
    result = run_play(installed, "play.yml",
                      "- hosts: localhost\n"
                      "  gather_facts: false\n"
                      "  roles:\n"
                      "    - role: vmstack.deploy.docker\n"
                      "      docker_install_source: snap\n")
    assert result.returncode != 0
    assert "vmstack.deploy.docker" in result.stdout
    assert "docker_install_source" in result.stdout and "snap" in result.stdout


def test_shipped_playbooks_pass_syntax_check(installed):
    playbooks = installed["dest"] / "ansible_collections" / "vmstack" / "deploy" / "playbooks"
    for playbook in sorted(playbooks.glob("*.yml")):
        result = run(["ansible-playbook", "--syntax-check", "-i", "localhost,", str(playbook)],
                     cwd=installed["work"], env=installed["env"])
        assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("playbook", ["deploy", "harden", "app", "nginx"])
def test_playbooks_are_callable_by_fqcn(installed, playbook):
    """Operators run the parts by name from the installed collection."""
    result = run(["ansible-playbook", "--syntax-check", "-i", "localhost,", f"vmstack.deploy.{playbook}"],
                 cwd=installed["work"], env=installed["env"])
    assert result.returncode == 0, result.stdout


def test_installed_plugins_load(installed):
    """The filter and test plugins the playbooks use resolve from the installed collection,
    and the filter finds the app role's defaults there."""
    result = run_play(installed, "plugins.yml",
                      "- hosts: localhost\n"
                      "  gather_facts: false\n"
                      "  tasks:\n"
                      "    - ansible.builtin.assert:\n"
                      "        that:\n"
                      "          - \"'vmstack/app:1.0' is vmstack.deploy.pinned_image\"\n"
                      "          - \"'vmstack/app:latest' is not vmstack.deploy.pinned_image\"\n"
                      "          - \"['localhost'] | vmstack.deploy.api_upstreams(hostvars, 'localhost')"
                      " == ['127.0.0.1:8001', '127.0.0.1:8002']\"\n")
    assert result.returncode == 0, result.stdout
