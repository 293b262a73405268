"""vmstack.deploy.port_holders: which programs hold which ports, from `ss -Hltnp` (playbooks/preflight.yml)."""

from ansible_collections.vmstack.deploy.plugins.filter.port_clashes import FilterModule, port_holders

SS = [
    'LISTEN 0 4096 127.0.0.1:38157 0.0.0.0:* users:(("containerd",pid=115,fd=10))',
    'LISTEN 0 128 0.0.0.0:22 0.0.0.0:* users:(("sshd",pid=240,fd=6))',
    'LISTEN 0 511 0.0.0.0:80 0.0.0.0:* users:(("nginx",pid=106,fd=5),("nginx",pid=105,fd=5))',
    'LISTEN 0 511 [::]:443 [::]:* users:(("apache2",pid=9,fd=4))',
    'LISTEN 0 4096 172.18.0.5:5432 0.0.0.0:* users:(("docker-proxy",pid=77,fd=7))',
    'LISTEN 0 4096 127.0.0.11:37633 0.0.0.0:*',
    'LISTEN 0 4096 10.0.0.5:6379 0.0.0.0:*',
]


def test_the_programs_on_each_wanted_port():
    assert port_holders(SS, [80, 443, 5432, 6379, 8080]) == {
        80: ["nginx"], 443: ["apache2"], 5432: ["docker-proxy"], 6379: ["?"],
    }


def test_only_the_programs_not_allowed_there():
    allowed = {80: ["nginx"], 443: ["nginx"], 5432: ["docker-proxy", "postgres"]}
    assert port_holders(SS, [80, 443, 5432, 6379], allowed) == {443: ["apache2"], 6379: ["?"]}


def test_nothing_held_nothing_listed():
    assert port_holders(SS[:2], [80]) == {}
    assert port_holders([], [80]) == {}


def test_registered():
    assert FilterModule().filters()["port_holders"] is port_holders
