"""A writer process for the kill -9 tests: ``two_phase_child.py SPEC STATE DIE_AT [RENAMES]``.

Runs :func:`two_phase_helpers.scripted_run` and kills itself right after step ``DIE_AT`` (0:
never), or inside the ``RENAMES``-th+1 ``os.replace`` of the files it publishes. Prints each
step as it completes (flushed), so the test knows what was done before the kill.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from two_phase_helpers import scripted_run


def main() -> None:
    spec = json.loads(sys.argv[1])
    state = Path(sys.argv[2])
    die_at = int(sys.argv[3]) or None
    if len(sys.argv) > 4:  # die while publishing files: after this many renames
        budget = int(sys.argv[4])
        replace = os.replace

        def dying_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            nonlocal budget
            if not str(dst).endswith((".owner", ".precommit")):  # a file published
                if budget == 0:
                    os.kill(os.getpid(), signal.SIGKILL)
                budget -= 1
            replace(src, dst)

        os.replace = dying_replace  # type: ignore[assignment]
    scripted_run(spec, state, die_at=die_at, on_step=lambda s: print(s, flush=True))


if __name__ == "__main__":
    main()
