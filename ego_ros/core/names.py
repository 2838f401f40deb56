"""Concept names: what a user may call a concept, and how it maps to a file on disk.

Names come from people (a ROS service call, the CLI) and end up in prompts, JSON manifests and
file systems. Any readable Unicode name is allowed ("Anna's mug", "mug 2", "café", "小狗"); what
is rejected is what would be invisible, ambiguous or dangerous: empty names, path separators,
control and formatting characters (including bidirectional overrides such as U+202E that make
a name display differently from what it is), and names made only of dots.

The on-disk file name is never the raw name: ``concept_file_stem`` builds an ASCII slug for
humans browsing the folder plus a hash of the exact name, so two names that slug alike
("Mug", "mug", "müg") still get different files, on case-insensitive file systems too.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from ego_ros.core.limits import MAX_NAME_CHARS

__all__ = [
    "MAX_NAME_LENGTH",
    "InvalidConceptName",
    "concept_file_stem",
    "validate_concept_name",
]

# Longest accepted name, in Unicode code points after NFC normalisation. Long enough for
# "Grandma's blue ceramic coffee mug", short enough to stay readable in a prompt and a UI.
# Defined with the other request limits in ``ego_ros.core.limits``.
MAX_NAME_LENGTH = MAX_NAME_CHARS

# Unicode general categories that are never part of a readable name: control (Cc), format
# (Cf: zero-width and bidi controls), surrogates (Cs: not encodable as UTF-8), line and
# paragraph separators (Zl, Zp).
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_PATH_SEPARATORS = ("/", "\\")
_SLUG_MAX = 32
_HASH_HEX = 16


class InvalidConceptName(ValueError):  # noqa: N818 (name fixed by the issue)
    """A concept name was rejected; the message says why and how to fix it."""


def validate_concept_name(name: str) -> str:
    """Return the canonical form of ``name`` (NFC, surrounding whitespace stripped).

    Raises ``InvalidConceptName`` when the name is not a string, is empty, longer than
    ``MAX_NAME_LENGTH`` characters, contains ``/`` or ``\\``, contains control/format
    characters, consists only of dots, or contains ``<ego:`` or ``<|`` (reserved in prompts).
    The model's own special tokens (``<IMG_CONTEXT>``, ``<img>``, ...) depend on the backend:
    ``EgoEngine.introduce`` and ``introduce_concept`` refuse those
    (``limits.check_user_text``).
    """
    if not isinstance(name, str):
        raise InvalidConceptName(f"concept name must be a string, got {type(name).__name__}")
    if len(name) > 4 * MAX_NAME_LENGTH:  # refused before NFC and strip() touch a huge string
        raise InvalidConceptName(f"concept name is {len(name)} characters long; the limit is "
                                 f"{MAX_NAME_LENGTH} (name starts {name[:20]!r})")
    canonical = unicodedata.normalize("NFC", name).strip()
    if not canonical:
        raise InvalidConceptName(f"concept name {name!r} is empty; give the concept a name")
    if len(canonical) > MAX_NAME_LENGTH:
        raise InvalidConceptName(
            f"concept name is {len(canonical)} characters long; the limit is {MAX_NAME_LENGTH} "
            f"(name starts {canonical[:20]!r})"
        )
    for sep in _PATH_SEPARATORS:
        if sep in canonical:
            raise InvalidConceptName(
                f"concept name {canonical!r} contains the path separator {sep!r}; remove it"
            )
    for ch in canonical:
        category = unicodedata.category(ch)
        if category in _FORBIDDEN_CATEGORIES:
            raise InvalidConceptName(
                f"concept name {canonical!r} contains the invisible or control character "
                f"U+{ord(ch):04X} (category {category}); use printable characters only"
            )
    if set(canonical) == {"."}:
        raise InvalidConceptName(f"concept name {canonical!r} consists only of dots")
    if "<ego:" in canonical or "<|" in canonical:
        # Names are written into the model's prompt: no prompt sentinel, no chat-template token.
        raise InvalidConceptName(f"concept name {canonical!r} contains '<ego:' or '<|', which "
                                 "are reserved in prompts; rename the concept")
    return canonical


def concept_file_stem(name: str) -> str:
    """Safe, deterministic file stem for a concept: ``<ascii-slug>-<16 hex of sha256>``.

    The slug (lowercase ASCII letters and digits joined by ``-``, at most 32 characters,
    ``concept`` when nothing ASCII remains) is only for humans; uniqueness comes from the
    SHA-256 of the canonical name. The stem matches ``[a-z0-9-]+`` and so can never contain a
    path separator, a dot-segment or a character a file system treats specially.
    """
    canonical = validate_concept_name(name)
    ascii_only = unicodedata.normalize("NFKD", canonical).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_only.lower()).strip("-")[:_SLUG_MAX].strip("-")
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:_HASH_HEX]
    return f"{slug or 'concept'}-{digest}"
