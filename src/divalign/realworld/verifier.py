"""The real-model world's verifier: does an answer name exactly one valid item of its category, and which one?

Both the answer and every accepted spelling are normalised the same way (`normalise`): accents dropped, lower case,
full stops and apostrophes removed ("U.K." → "uk"), any other punctuation a space. An item is named where one of its
spellings occurs as whole words, so an answer inside a sentence counts ("I'd say the Netherlands." names
Netherlands), a near miss does not ("Germay", "Frances", "Pluto" for a planet). Where spellings overlap the longest
one wins ("West Virginia" names West Virginia, not Virginia; "Guinea-Bissau" is not Guinea), among the valid items
and the category's other known items too ("Papua New Guinea" names a country outside Africa, not Guinea), and the
names that contain an item's name but name none ("Northern Ireland" is not Ireland, "Washington D.C." not the state:
`catalog.NOT_ITEMS`). "may" used as a verb is not the month: before a subject pronoun's verb ("it may rain"), before
"be", "have", "not" and a few more ("may be June"), and as "May I/we/you" opening a sentence. An answer
is valid when it names exactly one known item and that item is valid: one naming several ("France, Italy and
Spain", "Japan or France") is not an answer to "name one", one naming none or only an item outside the set is not
either.

`names_valid_item` is the function `divalign eval --verifier divalign.realworld.verifier:names_valid_item` calls,
with the prompt's `answer` column holding the category key.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache

from .catalog import CATEGORY_KEYS, Category, category

_DROPPED = re.compile(r"[.'’`ʼ]")
_SEPARATORS = re.compile(r"[^a-z0-9]+")
# "may" the verb, read on the answer as written (punctuation tells "Is it May? Yes." from "it may rain")
_MODAL_MAY = re.compile(
    r"\b(?:i|you|he|she|it|we|they)\s+may(?=\s+[a-z])"
    r"|\bmay(?=\s+(?:be|have|not|also|well|vary|depend|seem)\b)"
    r"|(?:^|(?<=[.!?]\s))may(?=\s+(?:i|we|you)\b)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Verdict:
    """What the verifier found in one answer: the valid item it names (None when invalid) and why."""

    item: str | None
    reason: str

    @property
    def valid(self) -> bool:
        return self.item is not None


def normalise(text: str) -> str:
    """Accents dropped, lower case, full stops and apostrophes removed, other punctuation and spaces one space."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()
    return _SEPARATORS.sub(" ", _DROPPED.sub("", plain)).strip()


@cache
def _matcher(key: str) -> tuple[re.Pattern[str], dict[str, tuple[str, bool] | None]]:
    """One pattern per category: every spelling of its valid and other known items and every name of its `not_items`
    as whole words, longest first (so the longest overlapping one wins at a position), and the (item, valid) each
    normalised spelling names (None for a name that names no item)."""
    cat = category(key)
    owner: dict[str, tuple[str, bool] | None] = {normalise(name): None for name in cat.not_items}
    for items, valid in ((cat.items, True), (cat.others, False)):
        for item in items:
            for spelling in item.spellings:
                norm = normalise(spelling)
                if owner.setdefault(norm, (item.name, valid)) != (item.name, valid):
                    other = "a name of no item" if owner[norm] is None else repr(owner[norm][0])
                    raise ValueError(f"category {key!r}: {spelling!r} spells both {other} and {item.name!r}")
    alternatives = "|".join(re.escape(s) for s in sorted(owner, key=len, reverse=True))
    return re.compile(rf"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])"), owner


def identify(text: str, category_key: str | Category) -> Verdict:
    """The valid item `text` names in the category, or None with the reason (none named, several named, or the one
    named is outside the valid set)."""
    key = category_key.key if isinstance(category_key, Category) else category_key
    pattern, owner = _matcher(key)
    plain = normalise(_MODAL_MAY.sub(lambda m: m.group(0)[:-3] + "might", text))
    named = list(dict.fromkeys(n for m in pattern.finditer(plain) if (n := owner[m.group(0)]) is not None))
    if not named:
        return Verdict(None, "names no known item")
    if len(named) > 1:
        return Verdict(None, f"names {len(named)} items: {', '.join(name for name, _ in named)}")
    name, valid = named[0]
    return Verdict(name, "names one valid item") if valid else Verdict(None, f"names {name}, outside the valid set")


def names_valid_item(completion: str, answer: str | None) -> bool:
    """`divalign eval --verifier` entry: True when `completion` names exactly one valid item of the category whose key
    is the prompt's `answer` (e.g. "european_country")."""
    if answer not in CATEGORY_KEYS:
        raise ValueError(
            f"divalign.realworld.verifier:names_valid_item needs each prompt's answer column to hold a category key "
            f"({', '.join(CATEGORY_KEYS)}), got {answer!r}"
        )
    return identify(completion, answer).valid
