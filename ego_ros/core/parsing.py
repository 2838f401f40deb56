"""Robust parsing of what an LVLM says back.

Real checkpoints are chatty: "The subject occupies approximately 40% of the image.", "Sure!
Keywords: red mug, white handle.", "I don't think so.", "The answer is B) red". Every parser here
takes raw generated text and returns a typed value, or ``None`` when the text gives no clear
answer, so callers can fall back to a documented default instead of guessing.

All functions are pure (stdlib only) and Unicode-aware: text is NFKC-normalised, curly quotes are
straightened and comparisons use ``str.casefold``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Sequence

__all__ = [
    "KEYWORD_STOP_WORDS",
    "clean_keywords",
    "keyword_token_mask",
    "mentioned_names",
    "parse_area_percent",
    "parse_choice",
    "parse_options",
    "parse_present_names",
    "parse_yes_no",
]

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2032": "'"})
_DASHES = str.maketrans({"\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-",
                         "\u2014": "-", "\u2212": "-"})


def _normalize(text: str) -> str:
    """NFKC, straight quotes, ASCII dashes, no markdown emphasis; keeps case."""
    text = unicodedata.normalize("NFKC", text).translate(_QUOTES).translate(_DASHES)
    return re.sub(r"[*_`]{2,}|(?<!\w)[*`](?!\s)|(?<!\s)[*`](?!\w)", "", text)


# --------------------------------------------------------------------------------------------
# Area of the main subject
# --------------------------------------------------------------------------------------------

_NUM = r"(\d+(?:\.\d+)?|\.\d+)"
_PCT = r"\s*(?:%|percent\b|per\s+cent\b|pct\b)"
_SMALL_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19,
}
_TENS_WORDS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60,
               "seventy": 70, "eighty": 80, "ninety": 90}
_NUMBER_WORD_RE = re.compile(
    r"\b(?:(one\s+)?hundred|(" + "|".join(_TENS_WORDS) + r")(?:[\s-]+(" + "|".join(
        k for k in _SMALL_WORDS if _SMALL_WORDS[k] < 10) + r"))?|(" + "|".join(_SMALL_WORDS)
    + r"))\b"
)
# Fraction words, longest phrases first so "three quarters" wins over "quarter".
_FRACTION_WORDS: tuple[tuple[str, float], ...] = (
    (r"three[\s-]+quarters?", 75.0), (r"two[\s-]+thirds?", 200.0 / 3.0),
    (r"(?:a|one)[\s-]+half|half", 50.0), (r"(?:a|one)[\s-]+quarter|quarter", 25.0),
    (r"(?:a|one)[\s-]+third", 100.0 / 3.0), (r"(?:a|one)[\s-]+fifth", 20.0),
    (r"(?:a|one)[\s-]+tenth", 10.0),
)


def _words_to_digits(text: str) -> str:
    """Rewrite English number words up to one hundred as digits ("thirty-five" -> "35")."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0).endswith("hundred"):
            return "100"
        if m.group(2):
            return str(_TENS_WORDS[m.group(2)] + (_SMALL_WORDS[m.group(3)] if m.group(3) else 0))
        return str(_SMALL_WORDS[m.group(4)])

    return _NUMBER_WORD_RE.sub(repl, text)


def _in_range(value: float) -> float | None:
    return value if 0.0 <= value <= 100.0 else None


def parse_area_percent(text: str) -> float | None:
    """Percentage (0..100) of the image the main subject covers, or ``None`` if unparsable.

    Rules, tried in this order (the first that matches decides):

    1. A range marked as a percentage ("25-35%", "25% to 35%", "between 25 and 35 percent")
       gives its midpoint.
    2. The first number marked as a percentage ("about 30%", "30 percent", "12.5 %"); number
       words up to one hundred count ("thirty-five percent").
    3. A fraction "a/b" ("3/4" -> 75).
    4. A fraction word ("half", "a quarter", "three quarters", "a third", "two thirds", "a fifth",
       "a tenth").
    5. The first bare number: a decimal <= 1 is a fraction of the whole ("0.3" -> 30,
       "1.0" -> 100), anything else is already a percentage ("30" -> 30, "1" -> 1). A bare
       range gives its midpoint.

    The value chosen must lie in [0, 100]: a negative value ("-5%") or one above 100 ("150%")
    is ``None`` rather than being clipped, because such an answer says the model misunderstood.
    """
    t = _words_to_digits(_normalize(text).casefold())
    neg = r"(?:(?<![\w.])(-))?"
    m = re.search(r"(?:between\s+)?" + _NUM + r"\s*%?\s*(?:-|to)\s*" + _NUM + _PCT, t) or re.search(
        r"between\s+" + _NUM + r"\s*%?\s*and\s+" + _NUM + _PCT, t)
    if m:
        return _in_range((float(m.group(1)) + float(m.group(2))) / 2.0)
    m = re.search(neg + _NUM + _PCT, t)
    if m:
        return None if m.group(1) else _in_range(float(m.group(2)))
    m = re.search(r"(?<![\d./])(\d+)\s*/\s*(\d+)(?![\d/])", t)
    if m and int(m.group(2)) > 0:
        return _in_range(100.0 * int(m.group(1)) / int(m.group(2)))
    words_text = _normalize(text).casefold()  # before "one third" became "1 third"
    for pattern, value in _FRACTION_WORDS:
        if re.search(r"\b(?:" + pattern + r")\b", words_text):
            return value
    m = re.search(r"(?<![\d.])" + _NUM + r"\s*(?:-|to)\s*" + _NUM + r"(?![\d.])", t)
    if m:
        mid = (float(m.group(1)) + float(m.group(2))) / 2.0
        return _in_range(mid * 100.0 if mid <= 1.0 and "." in m.group(0) else mid)
    m = re.search(neg + _NUM + r"(?!\d)", t)
    if m:
        if m.group(1):
            return None
        value = float(m.group(2))
        fraction = value <= 1.0 and "." in m.group(2)  # "0.3", "1.0"; a bare "1" is 1 %
        return _in_range(value * 100.0 if fraction else value)
    return None


# --------------------------------------------------------------------------------------------
# Keywords
# --------------------------------------------------------------------------------------------

# Words that are never keywords on their own: articles, connectives and the template words a
# model echoes from the prompt ("Keywords:", "The main subject is ...").
KEYWORD_STOP_WORDS: frozenset[str] = frozenset({
    "a", "an", "the", "and", "or", "of", "with", "in", "on", "at", "to", "for", "from", "by",
    "is", "are", "it", "its", "this", "that", "these", "those", "some", "here", "there", "be",
    "keyword", "keywords", "main", "subject", "describing", "describe", "image", "photo",
    "picture", "etc", "sure",
})
# "The main subject is a red mug" / "It is a red mug": a sentence frame around a keyword.
_TEMPLATE_PREFIX = re.compile(
    r"^(?:(?:(?:the\s+)?(?:main\s+)?subject|it|this)\s+(?:is|are)\b|(?:it|this)'s\b)\s*",
    re.IGNORECASE,
)
# "Keywords:", "Here are some keywords describing the main subject:", "Color: red".
_LABEL = re.compile(r"^[^:]{1,80}:\s*(?=\S)")
_NUMBERING = re.compile(r"^\s*(?:\d+\s*[.):]|[-*\u2022\u00b7\u2013#>]+)(?:\s+|$)")
_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.IGNORECASE)


def clean_keywords(text: str) -> list[str]:
    """Split a generated keywords answer into keyword strings.

    Splits on newlines, commas, semicolons, "|", " / " and sentence ends; drops list numbering
    and bullets ("1.", "2)", "-", "*"), a leading label ("Keywords:", "Color: red" -> "red"),
    template phrases echoed from the prompt ("Here are some keywords:", "The main subject is"),
    a leading article, surrounding quotes and punctuation, and items made only of
    ``KEYWORD_STOP_WORDS``. Duplicates are removed case-insensitively, keeping the first
    spelling and the original order.
    """
    out: list[str] = []
    seen: set[str] = set()
    pieces = [
        sentence
        for part in re.split(r"[\n,;|]|\s/\s|\s\d{1,2}[.)](?=\s)", _normalize(text))
        for sentence in re.split(r"[.!?](?=\s|$)", _NUMBERING.sub("", part))
    ]
    for piece in pieces:
        item = piece.strip()
        while True:  # strip labels, sentence frames and articles until none is left
            stripped = _LABEL.sub("", item, count=1).strip()
            stripped = _TEMPLATE_PREFIX.sub("", stripped, count=1).strip()
            stripped = _ARTICLE.sub("", stripped).strip()
            if stripped == item:
                break
            item = stripped
        item = item.strip(" \t\"'()[]{}<>:.-*#").strip()
        words = re.findall(r"\w+", item.casefold())
        if not words or all(w in KEYWORD_STOP_WORDS or w.isdigit() for w in words):
            continue
        key = " ".join(words)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


# Byte-level BPE (GPT-2, Qwen, InternVL's Qwen tokenizer) prints a leading space as "Ġ", a
# newline as "Ċ", a tab as "ĉ" and a carriage return as "č"; SentencePiece prints a space as "▁".
_BYTE_LEVEL = str.maketrans({"\u0120": " ", "\u010a": "\n", "\u0109": "\t", "\u010d": "\r",
                             "\u2581": " "})
_SPECIAL_LIKE = re.compile(r"^<\|[^|]*\|>$|^</?s>$|^<(?:pad|unk|eos|bos)>$")


def _is_punct_or_symbol(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def keyword_token_mask(
    token_strings: Sequence[str], special_tokens: Collection[str]
) -> list[bool]:
    """Mark the generated tokens that belong to keywords (paper step "drop template tokens").

    ``token_strings`` are the per-token strings of the generated answer, either raw vocabulary
    entries (``convert_ids_to_tokens``: "Ġred", "Ċ", "amic") or per-token decodes (" red",
    "\\n"). Byte-level markers are decoded explicitly: "Ġ" is a space, "Ċ" a newline, "ĉ" a
    tab, "č" a carriage return and SentencePiece's "▁" a space.

    A token is False when it is a special token (in ``special_tokens`` or shaped like
    "<|...|>", "<s>", "</s>"), empty or whitespace-only, made only of punctuation/symbols or
    only of digits (list numbering such as "1."). Tokens are grouped into words (a word starts
    at a leading space/newline, at the first token, or after a non-word token); every token of a
    word that is in ``KEYWORD_STOP_WORDS`` (case-insensitive, e.g. "Key"+"words", "Ġthe") is
    False. The remaining tokens are True: sub-word pieces of a keyword ("Ġcer", "amic") all
    count.
    """
    n = len(token_strings)
    mask = [False] * n
    words: list[list[int]] = []  # indices of word-bearing tokens, grouped per word
    boundary = True
    for i, raw in enumerate(token_strings):
        if raw in special_tokens or _SPECIAL_LIKE.match(raw.strip()):
            boundary = True
            continue
        text = raw.translate(_BYTE_LEVEL)
        core = text.strip()
        if not core or all(_is_punct_or_symbol(c) for c in core):
            boundary = True
            continue
        if text[0].isspace() or boundary or _is_punct_or_symbol(core[0]):
            words.append([])
        words[-1].append(i)
        boundary = text[-1].isspace() or _is_punct_or_symbol(core[-1])
    for word in words:
        joined = "".join(token_strings[i].translate(_BYTE_LEVEL) for i in word)
        letters = "".join(ch for ch in joined if ch.isalnum()).casefold()
        if not letters or letters.isdigit() or letters in KEYWORD_STOP_WORDS:
            continue
        for i in word:
            mask[i] = any(ch.isalnum() for ch in token_strings[i].translate(_BYTE_LEVEL))
    return mask


# --------------------------------------------------------------------------------------------
# Yes / no
# --------------------------------------------------------------------------------------------

_YES = {"yes", "yeah", "yep", "yup", "yea", "absolutely", "definitely", "certainly", "indeed",
        "correct", "affirmative", "true"}
_NO = {"no", "nope", "nah", "not", "never", "negative", "false", "incorrect", "absent", "none",
       "isn't", "aren't", "doesn't", "don't", "didn't", "can't", "cannot", "won't", "wasn't",
       "isnt", "arent", "doesnt", "dont", "cant", "nobody", "nowhere", "missing"}
# Hedges: one of these before the first answer word means there is no clear yes or no.
_UNSURE = re.compile(
    r"(?:no\s+idea|not\s+(?:sure|certain|clear)|unsure|uncertain|unclear|maybe|perhaps|possibly|"
    r"(?:i\s+)?(?:do\s+not|don't|dont)\s+know|(?:can't|cannot|cant|can\s+not)\s+"
    r"(?:tell|say|determine|be\s+(?:sure|determined|certain))|hard\s+to\s+(?:say|tell)|"
    r"unable\s+to|it\s+depends)\b"
)
_WORD = re.compile(r"[\w']+")


def parse_yes_no(text: str) -> bool | None:
    """True for a yes, False for a no, ``None`` when the text gives no clear answer.

    Decides on the first clear answer word, scanning left to right: yes-words ("yes", "yeah",
    "yep", "absolutely", "definitely", "indeed", "correct", "true") and
    no-words ("no", "nope", "not", "never", "isn't", "don't", "cannot", "absent", "missing",
    ...). Special cases checked at each word before that: a hedge ("not sure", "I don't know",
    "can't tell", "maybe") gives ``None``; "no doubt" is a yes; a yes-intensifier followed by
    "not" ("absolutely not") is a no. A statement with no answer word ("Anna is in the image")
    is ``None``: callers should score from token probabilities rather than trust such text.
    "Sure" is deliberately not a yes-word (chat models open with it as an acknowledgement), nor
    are "present"/"visible", which models also echo from the question ("Present: no").
    """
    t = _normalize(text).casefold()
    words = list(_WORD.finditer(t))
    for k, m in enumerate(words):
        w = m.group(0).strip("'")
        if _UNSURE.match(t, m.start()):
            return None
        nxt = words[k + 1].group(0) if k + 1 < len(words) else ""
        if w == "no" and nxt == "doubt":
            return True
        if w in _YES:
            return nxt != "not"
        if w in _NO or w.endswith("n't"):
            return False
    stripped = t.strip(" .!\n\t")
    if stripped in ("y", "n"):
        return stripped == "y"
    return None


# --------------------------------------------------------------------------------------------
# Multiple choice
# --------------------------------------------------------------------------------------------


def parse_choice(
    text: str,
    options: Sequence[str] = ("A", "B"),
    option_texts: Sequence[str] | None = None,
) -> str | None:
    """The chosen option letter (as given in ``options``), or ``None``.

    Tried in order, the earliest match in the text winning within each step:

    1. After "option"/"choice": the next single letter, any case ("option a", "Choice: B").
    2. After "answer" ("Answer: A", "The answer is B) red", "correct answer is (b)"): an
       uppercase letter, or a lowercase one that is *marked*.
    3. Anywhere: a letter in parentheses "(B)", or a standalone letter that is marked, or an
       uppercase standalone letter other than an article-like "A" before a word.

    A letter is *marked* when followed by ")", ".", ":", ",", ";" or the end of the text. That is
    how the article is told apart from option A: in "a red mug" / "A red mug" the letter is
    followed by a space and a word, so it is not a choice, while "A.", "(a)", "a)" and a bare "A"
    are. Letters not in ``options`` are ignored (so the pronoun "I" is not option I unless
    asked for).

    4. If no letter was found and ``option_texts`` (aligned with ``options``) is given: the
       option whose text alone appears in the answer, case-insensitively.
    """
    letters = {o.strip().upper(): o for o in options}
    t = _normalize(text)
    marked = r"(?=\s*(?:[).:,;]|$))"
    steps = (
        r"(?i:\b(?:option|choice)\b(?:\s+(?:is|would\s+be))?\s*[:\-]?\s*)\(?([A-Za-z])\b",
        r"(?i:\banswer\b(?:\s+(?:is|would\s+be|will\s+be))?\s*[:\-]?\s*)\(?"
        r"(?:([A-Z])\b(?!')|([a-z])" + marked + r")",
        r"\(([A-Za-z])\)|(?<![\w'])(?:([A-Za-z])" + marked + r"|([B-Z])\b(?!')|(A)(?!\s+\w|'))",
    )
    for pattern in steps:
        for m in re.finditer(pattern, t, flags=re.MULTILINE):
            letter = next(g for g in m.groups() if g).upper()
            if letter in letters:
                return letters[letter]
    if option_texts is not None:
        if len(option_texts) != len(options):
            raise ValueError(
                f"option_texts has {len(option_texts)} entries but options has {len(options)}"
            )
        folded = t.casefold()
        hits = [o for o, ot in zip(options, option_texts)
                if ot.strip() and re.search(r"(?<!\w)" + re.escape(
                    _normalize(ot).strip().casefold()) + r"(?!\w)", folded)]
        if len(hits) == 1:
            return hits[0]
    return None


# --------------------------------------------------------------------------------------------
# Concept names
# --------------------------------------------------------------------------------------------


_SPACELESS_SCRIPTS = ("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR")


def parse_options(items: Sequence[str]) -> dict[str, str] | None:
    """Multiple-choice options written ``"A=on the table"`` -> ``{"A": "on the table"}``;
    None for no items. The letter may be lower case; raises ``ValueError`` naming the bad
    item, a letter given twice, or a single option."""
    if not items:
        return None
    options: dict[str, str] = {}
    for item in items:
        letter, sep, text = item.partition("=")
        letter = letter.strip().upper()
        if not sep or len(letter) != 1 or not ("A" <= letter <= "Z") or not text.strip():
            raise ValueError(f"option {item!r}: write it as LETTER=TEXT, e.g. 'A=on the table'")
        if letter in options:
            raise ValueError(f"option {letter} is given twice")
        options[letter] = text.strip()
    if len(options) < 2:
        raise ValueError("a multiple-choice question needs at least two options")
    return options


def _spaceless(ch: str) -> bool:
    """True for characters of scripts written without spaces between words."""
    return unicodedata.name(ch, "").startswith(_SPACELESS_SCRIPTS)


def _name_pattern(name: str) -> re.Pattern[str]:
    """Pattern for one name; word boundaries are not required at an edge in a spaceless script
    (Chinese, Japanese, Thai, ...), where names sit directly between other characters."""
    folded = _normalize(name).strip().casefold()
    body = r"[\s_]+".join(re.escape(p) for p in re.split(r"[\s_]+", folded) if p)
    head = "" if _spaceless(folded[0]) else r"(?<!\w)"
    tail = "" if _spaceless(folded[-1]) else r"(?!\w)"
    return re.compile(head + body + tail)


def _name_spans(text: str, names: Sequence[str]) -> tuple[str, list[tuple[int, int, str]]]:
    """Non-overlapping name occurrences in ``text``; longer matches win on overlap."""
    folded = _normalize(text).casefold()
    spans: list[tuple[int, int, str]] = []
    seen: set[str] = set()
    for name in names:
        key = _normalize(name).strip().casefold()
        if not key or key in seen:
            continue
        seen.add(key)
        spans += [(m.start(), m.end(), name) for m in _name_pattern(name).finditer(folded)]
    spans.sort(key=lambda s: (-(s[1] - s[0]), s[0]))
    chosen: list[tuple[int, int, str]] = []
    for s in spans:
        if all(s[1] <= c[0] or s[0] >= c[1] for c in chosen):
            chosen.append(s)
    chosen.sort()
    return folded, chosen


def mentioned_names(text: str, names: Sequence[str]) -> list[str]:
    """Known concept names the text mentions, in order of first appearance.

    Matching is case-insensitive (``casefold`` after NFKC) and word-boundary aware on Unicode
    word characters: "Bo" does not match "bottle", "Anna's" mentions "Anna", "my mug" matches
    "My mug is on the table.". Whitespace and "_" inside a name match any run of whitespace or
    "_" ("ceramic_head" matches "ceramic head"). When occurrences overlap, the longest wins
    ("my mug" hides the "mug" inside it; "mug" alone elsewhere still counts). The names are
    returned as given in ``names``.
    """
    _, spans = _name_spans(text, names)
    out: list[str] = []
    for _, _, name in spans:
        if name not in out:
            out.append(name)
    return out


_CLAUSE_SEP = re.compile(r"[.;,!?\n]|\b(?:but|while|whereas|however|although)\b")
_NEGATION = re.compile(
    r"\b(?:not|no|none|neither|nor|never|without|absent|missing|nobody|nothing|cannot|"
    r"isn't|aren't|doesn't|don't|can't|isnt|arent|doesnt|dont|cant)\b"
)


def parse_present_names(text: str, names: Sequence[str]) -> list[str]:
    """The known names a joint-recognition answer lists as present (empty for none).

    The answer is cut into clauses at sentence punctuation, commas, semicolons, newlines and
    contrast words ("but", "while", "however"); separators inside a matched name do not cut.
    Names in a clause that also holds a negation cue ("not", "no", "neither", "nor", "absent",
    "isn't", ...; the name's own words excluded) are absent; other mentioned names are present.
    So "Anna and my mug" -> both, "- anna\\n- bo" -> both, "Present: Bo. Absent: Anna" -> Bo,
    "Bo is here, Anna is not" -> Bo, "Neither Anna nor Bo" and "None of them" -> none.
    Order: first appearance in the text.
    """
    folded, spans = _name_spans(text, names)
    if not spans:
        return []
    cuts = [0]
    for m in _CLAUSE_SEP.finditer(folded):
        if not any(s <= m.start() < e for s, e, _ in spans):
            cuts.append(m.start())
    cuts.append(len(folded) + 1)
    out: list[str] = []
    for lo, hi in zip(cuts, cuts[1:]):
        inside = [s for s in spans if lo <= s[0] < hi]
        if not inside:
            continue
        clause = list(folded[lo:hi])
        for s, e, _ in inside:
            clause[s - lo:e - lo] = " " * (e - s)
        clause_text = "".join(clause)
        if _NEGATION.search(clause_text):
            continue
        out += [name for _, _, name in inside if name not in out]
    return out
