"""The kinds of job the runner knows, by queue function name.

Adding a kind: its module here (a JobKind: a name and one attempt's work), a line below, and how
pages and the CLI present its result. The runner, the queue and the store stay as they are.
"""

from __future__ import annotations

from backend.kinds.archive import ARCHIVE
from backend.runner import JobKind

KINDS: dict[str, JobKind] = {kind.name: kind for kind in (ARCHIVE,)}
