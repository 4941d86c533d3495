"""Whether a model reference (a policy, a reward model) can only be a local path or may be a Hub id.

transformers takes any string that is not an existing directory for a Hub repo id, so a mistyped local path fails
late, as an ``OSError`` about a repo id; a reference that can only be a path is checked before anything loads.
"""

from __future__ import annotations

import re

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_local(model: str) -> bool:
    """A model reference that can only be a local path: absolute, relative (./, ../, ~), or with more than one '/'."""
    return not _HUB_ID.match(model) or model.startswith(("/", ".", "~"))
