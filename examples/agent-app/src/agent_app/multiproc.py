"""The shared metrics directory of a multi-process command (no prometheus_client import here).

prometheus_client reads ``PROMETHEUS_MULTIPROC_DIR`` once, when it is first
imported: a command that starts several processes calls
:func:`use_multiprocess_dir` before anything imports it.
"""

from __future__ import annotations

import os
import shutil
import tempfile

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_multiprocess_dir() -> str:
    """Give this process and its children a fresh shared metrics directory; return it.

    An operator's ``PROMETHEUS_MULTIPROC_DIR`` is emptied and used (counters of
    an earlier run must not add up); otherwise a private temporary directory
    is made.
    """
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path, exist_ok=True)
    else:
        path = tempfile.mkdtemp(prefix="agent-app-metrics-")
        os.environ[MULTIPROC_ENV] = path
    return path
