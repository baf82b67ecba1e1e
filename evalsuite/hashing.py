"""The one way evalsuite hashes: sha256, hex, cut to `LENGTH` characters.

Store keys, cache keys, checksums and seeds all come from here, so a hash has one length everywhere.

>>> digest("mmlu", {"seed": 1234, "shots": 5})
'065fc46022b5084d'
>>> text_digest("{{ messages }}")
'f24189f08c85a1eb'
"""

import hashlib
import json

LENGTH = 16  # hex characters: 64 bits


def digest(*parts) -> str:
    """The hash of `parts` (JSON values: str, int, float, bool, None, lists, tuples and dicts with str keys),
    encoded as canonical JSON (sorted keys, no spaces). Anything else raises TypeError: convert it first."""
    encoded = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text_digest(encoded)


def text_digest(text: str) -> str:
    """The hash of `text` itself (its UTF-8 bytes), for hashing a file or a template as written."""
    return hashlib.sha256(text.encode()).hexdigest()[:LENGTH]
