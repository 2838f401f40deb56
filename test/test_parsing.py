"""Parsers of LVLM text on tables of messy, real-world phrasings (including tricky negatives)."""

from __future__ import annotations

import pytest

from ego_ros.core.parsing import (
    clean_keywords,
    keyword_token_mask,
    mentioned_names,
    parse_area_percent,
    parse_choice,
    parse_present_names,
    parse_yes_no,
)

AREA_CASES = [
    ("about 30%", 30.0),
    ("30 percent", 30.0),
    ("30 per cent of the frame", 30.0),
    ("0.3", 30.0),
    (".5", 50.0),
    ("roughly 25-35%", 30.0),
    ("roughly 25\u201335%", 30.0),  # en dash
    ("25% to 35%", 30.0),
    ("between 20 and 30 percent", 25.0),
    ("The subject occupies approximately 40% of the image.", 40.0),
    ("**Approximately 12.5 %**", 12.5),
    ("3/4", 75.0),
    ("half", 50.0),
    ("It takes up about half of the picture.", 50.0),
    ("a quarter", 25.0),
    ("one third of the image", 100.0 / 3.0),
    ("three quarters of the frame", 75.0),
    ("two-thirds", 200.0 / 3.0),
    ("thirty-five percent", 35.0),
    ("one hundred percent", 100.0),
    ("100%", 100.0),
    ("0%", 0.0),
    ("In image 1, the mug covers 30%.", 30.0),  # a marked percentage beats a bare number
    ("The answer - 30%", 30.0),  # a spaced dash is not a minus sign
    ("1", 1.0),  # a bare integer is a percentage; "1.0" is the whole image
    ("1.0", 100.0),  # a bare number <= 1 is a fraction of the whole
    ("45", 45.0),
    ("about 0.25 of the image", 25.0),
    ("0.2-0.3", 25.0),
    # tricky negatives
    ("150%", None),
    ("-5%", None),
    ("The subject is -20 percent", None),
    ("I cannot tell.", None),
    ("", None),
    ("The mug covers most of it", None),
    ("250", None),
    ("none", None),  # "none" must not read as "one"
]


@pytest.mark.parametrize(("text", "expected"), AREA_CASES)
def test_parse_area_percent(text: str, expected: float | None) -> None:
    got = parse_area_percent(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


KEYWORD_CASES = [
    ("red, ceramic mug; handle", ["red", "ceramic mug", "handle"]),
    ("1. red\n2. mug", ["red", "mug"]),
    ("1) red\n2) mug\n3) red", ["red", "mug"]),
    ("1. red 2. mug", ["red", "mug"]),
    ("Keywords: red mug, white handle.", ["red mug", "white handle"]),
    ("Here are some keywords describing the main subject:\n- Red\n- Ceramic\n- mug\n- red",
     ["Red", "Ceramic", "mug"]),
    ("The main subject is a red mug.", ["red mug"]),
    ("Sure! Keywords: **red**, *mug*", ["red", "mug"]),
    ("Color: red, Material: ceramic", ["red", "ceramic"]),
    ("3.5 inch screen, black", ["3.5 inch screen", "black"]),
    ("\u2022 fluffy\n\u2022 golden fur\n\u2022 Fluffy", ["fluffy", "golden fur"]),
    ('"striped", "tabby" | "cat"', ["striped", "tabby", "cat"]),
    ("red / blue / green", ["red", "blue", "green"]),
    ("It is a vintage camera. Leather strap.", ["vintage camera", "Leather strap"]),
    ("Keywords", []),
    ("the main subject, the image", []),
    ("", []),
    ("Rot, Keramik, Tasse", ["Rot", "Keramik", "Tasse"]),
    ("café, crème brûlée", ["café", "crème brûlée"]),
]


@pytest.mark.parametrize(("text", "expected"), KEYWORD_CASES)
def test_clean_keywords(text: str, expected: list[str]) -> None:
    assert clean_keywords(text) == expected


SPECIAL = {"<|im_end|>", "<|endoftext|>"}

TOKEN_CASES = [
    # Qwen-style byte-level BPE, as convert_ids_to_tokens gives them
    (["Key", "words", ":", "\u0120red", ",", "\u0120cer", "amic", "\u0120mug", "<|im_end|>"],
     [False, False, False, True, False, True, True, True, False]),
    (["1", ".", "\u0120red", "\u010a", "2", ".", "\u0120mug", "\u010a"],
     [False, False, True, False, False, False, True, False]),
    (["\u0120The", "\u0120main", "\u0120subject", "\u0120is", "\u0120a", "\u0120blue", "\u0120car"],
     [False, False, False, False, False, True, True]),
    (["\u0120", "\u0120the", "\u0120white", "\u0120handle", ".", "<|endoftext|>"],
     [False, False, True, True, False, False]),
    (["red", "\u0120and", "\u0120white", "\u0120stri", "ped"], [True, False, True, True, True]),
    (["\u0120a", "pple"], [True, True]),  # "apple": a stop-word piece inside a word is kept
    (["\u0120the", "ater"], [True, True]),  # "theater"
    (["\u0120light", "-", "blue"], [True, False, True]),
    (["\u0120", "\u010a", "\u010a", "***", "\u0120\u2014"], [False] * 5),
    (["<|vision_start|>", "\u0120red"], [False, True]),  # special-shaped, not in the set
    # per-token decodes and SentencePiece pieces
    ([" red", ",", " mug", "\n", " handle", "</s>"], [True, False, True, False, True, False]),
    (["\u2581blue", "\u2581the", "\u2581ca", "p"], [True, False, True, True]),
    (["\u01203", "D", "\u0120printed"], [True, True, True]),
    (["\u012042"], [False]),  # bare numbers are numbering, not keywords
    ([], []),
]


@pytest.mark.parametrize(("tokens", "expected"), TOKEN_CASES)
def test_keyword_token_mask(tokens: list[str], expected: list[bool]) -> None:
    assert keyword_token_mask(tokens, SPECIAL) == expected


YES_NO_CASES = [
    ("Yes", True),
    ("yes.", True),
    ("Yes, it is.", True),
    ("**Yes**", True),
    ("Yeah, that's Anna.", True),
    ("Absolutely", True),
    ("The answer is yes", True),
    ("No doubt about it.", True),
    ("Y", True),
    ("Yes and no", True),  # the first clear answer word decides
    ("No", False),
    ("Nope", False),
    ("no, it isn't", False),
    ("I don't think so", False),
    ("Not present", False),
    ("Absolutely not.", False),
    ("Sure! No, it is not there.", False),  # "Sure" is an acknowledgement, not a yes
    ("The mug is not visible.", False),
    ("There isn\u2019t any mug.", False),  # curly apostrophe
    ("NO.", False),
    # unclear -> None
    ("Anna is in the image", None),
    ("Anna is present in the image.", None),  # a statement, not an answer word
    ("Present: no.", False),  # the question echoed before the answer
    ("I'm not sure.", None),
    ("I have no idea", None),
    ("I don't know", None),
    ("It is impossible to say.", None),
    ("Maybe, but it could be something else", None),
    ("yesterday I saw it", None),
    ("", None),
    ("Noah", None),
]


@pytest.mark.parametrize(("text", "expected"), YES_NO_CASES)
def test_parse_yes_no(text: str, expected: bool | None) -> None:
    assert parse_yes_no(text) is expected


CHOICE_CASES = [
    ("A", "A"),
    ("(B)", "B"),
    ("B.", "B"),
    ("b", "B"),
    ("a.", "A"),
    ("Answer: A", "A"),
    ("answer: b", "B"),
    ("The answer is B) red", "B"),
    ("The correct answer is (b).", "B"),
    ("option a", "A"),
    ("Option B is correct.", "B"),
    ("My choice is B", "B"),
    ("I'm going with (a)", "A"),
    ("I think it's B", "B"),
    ("B because it is blue", "B"),
    ("A, the red one", "A"),
    ("It is a mug.\nB", "B"),
    ("I think A is wrong; the answer is B.", "B"),  # an explicit answer beats an earlier letter
    # tricky negatives: the article "a" is not option A
    ("a red mug", None),
    ("A red mug", None),
    ("The answer is a red mug", None),
    ("I am not sure", None),  # "I" is not an option
    ("C", None),  # not among the options
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), CHOICE_CASES)
def test_parse_choice(text: str, expected: str | None) -> None:
    assert parse_choice(text) == expected


def test_parse_choice_more_options_and_texts() -> None:
    assert parse_choice("D) none of the above", options=("A", "B", "C", "D")) == "D"
    assert parse_choice("It's c.", options=("a", "b", "c")) == "c"  # returned as given
    assert parse_choice("A red mug", option_texts=("red mug", "blue mug")) == "A"
    assert parse_choice("A blue mug, I think", option_texts=("red mug", "blue mug")) == "B"
    # both option texts appear: ambiguous
    assert parse_choice("red mug or blue mug?", option_texts=("red mug", "blue mug")) is None
    with pytest.raises(ValueError, match="option_texts"):
        parse_choice("x", option_texts=("only one",))


NAMES = ["Anna", "Bo", "my mug", "mug", "ceramic_head", "Zo\u00eb", "\u5c0f\u660e"]

MENTION_CASES = [
    ("Bo is holding a bottle.", ["Bo"]),
    ("bonus round", []),  # "Bo" inside a word
    ("My mug is on the table.", ["my mug"]),  # longest name wins; "mug" inside it is hidden
    ("Anna's cat sits next to my mug.", ["Anna", "my mug"]),
    ("I see a mug near anna", ["mug", "Anna"]),
    ("my mug and another mug", ["my mug", "mug"]),
    ("BO and ANNA", ["Bo", "Anna"]),
    ("The ceramic head is on the shelf", ["ceramic_head"]),
    ("ZO\u00cb waves", ["Zo\u00eb"]),
    ("Zoe waves", []),
    ("\u5c0f\u660e\u7684\u676f\u5b50", ["\u5c0f\u660e"]),  # no spaces in Chinese
    ("Annabelle and Bob", []),
    ("Hello, Anna! Anna?", ["Anna"]),
    ("my\nmug", ["my mug"]),
    ("", []),
]


@pytest.mark.parametrize(("text", "expected"), MENTION_CASES)
def test_mentioned_names(text: str, expected: list[str]) -> None:
    assert mentioned_names(text, NAMES) == expected


def test_mentioned_names_overlap_at_different_starts() -> None:
    # "the red" starts first but "red coffee mug" is longer: the longer occurrence wins.
    names = ["the red", "red coffee mug"]
    assert mentioned_names("in the red coffee mug", names) == ["red coffee mug"]
    assert mentioned_names("the red mugs... the red coffee mug", names) == [
        "the red", "red coffee mug"]
    # equal length: the earlier one wins
    assert mentioned_names("the red mug", ["the red", "red mug"]) == ["the red"]


PRESENT_NAMES = ["Anna", "Bo", "my mug"]

PRESENT_CASES = [
    ("none", []),
    ("None.", []),
    ("None of them", []),
    ("None of the known concepts are present.", []),
    ("Anna and my mug", ["Anna", "my mug"]),
    ("- anna\n- bo", ["Anna", "Bo"]),
    ("Present: Bo.", ["Bo"]),
    ("Present: Bo. Absent: Anna", ["Bo"]),
    ("Bo is here, Anna is not.", ["Bo"]),
    ("Neither Anna nor Bo", []),
    ("Anna is present but not Bo", ["Anna"]),
    ("No, only Bo", ["Bo"]),
    ("I can't see Anna, but Bo is there.", ["Bo"]),
    ("Yes: Anna, Bo and my mug are all visible.", ["Anna", "Bo", "my mug"]),
    ("BO; ANNA", ["Bo", "Anna"]),
    ("A bottle and a mug", []),
]


@pytest.mark.parametrize(("text", "expected"), PRESENT_CASES)
def test_parse_present_names(text: str, expected: list[str]) -> None:
    assert parse_present_names(text, PRESENT_NAMES) == expected


def test_name_with_negation_word_is_not_a_negation() -> None:
    # The name's own words are not negation cues.
    assert parse_present_names("No Face is here", ["No Face", "Anna"]) == ["No Face"]


def test_parse_options() -> None:
    from ego_ros.core.parsing import parse_options

    assert parse_options([]) is None
    assert parse_options(["A=on the table", " b = on the floor "]) == {
        "A": "on the table", "B": "on the floor"}
    assert parse_options(["A=x=y", "B=z"]) == {"A": "x=y", "B": "z"}  # text may hold '='
    for bad, message in ((["A on the table", "B=x"], "LETTER=TEXT"), (["AB=x", "C=y"], "LETTER"),
                         (["1=x", "2=y"], "LETTER"), (["A=", "B=y"], "LETTER"),
                         (["A=x", "a=y"], "given twice"), (["A=x"], "at least two"),
                         (["\u00c9=x", "B=y"], "LETTER")):
        with pytest.raises(ValueError, match=message):
            parse_options(bad)
