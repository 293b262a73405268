"""The `mitogen_linear` strategy for the role scenarios, from the Mitogen
package installed beside Ansible (requirements-dev.txt, tests/lowest).

Mitogen keeps one Python interpreter per target for the whole run instead of
starting one per task: on the test bed a simple task costs a fifth to a tenth
of what it costs with the `linear` strategy over `docker exec`, a no-op run of
the harden role about half (docs/benchmarks.md).
The modules that run are the same; the `stack` scenario keeps `linear` over
SSH, the way operators run the playbook by default.

Mitogen's own strategy files find the package relative to their own path;
this one lets Ansible load it from a fixed place in the project
(`strategy_plugins` in .config/molecule/config.yml), whatever virtualenv
runs the scenario.
"""

import ansible_mitogen.loaders
import ansible_mitogen.strategy


class StrategyModule(ansible_mitogen.strategy.StrategyMixin,
                     ansible_mitogen.loaders.strategy_loader.get("linear", class_only=True)):
    """Ansible's `linear` strategy with Mitogen's connection and executor."""
