"""``python -m agent_app`` is the same as the ``agent-app`` command."""

import sys

from agent_app.cli import main

sys.exit(main())
