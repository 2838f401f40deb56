"""Request limits (``ego_ros.core.limits``) and user text that looks like the model's markup.

A question, option or view list over its documented limit is refused on every path before
anything is tokenised or the model is held: the engine, ``introduce_concept``, the worker's RPC
(real ZeroMQ sockets, an engine that would accept anything behind it) and the CLI. The real
node in a subprocess is in ``test_limits_node.py``. A concept name or question holding one of
the model's special tokens is refused for both tiny families, and the render places visual
blocks by construction: text quoting every marker string still puts each block where the
template put its image.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import torch
from test_rpc import FakeEngine, frames

from ego_ros.backends.base import Visual
from ego_ros.cli.main import main as cli_main
from ego_ros.core import limits
from ego_ros.core.engine import EgoEngine
from ego_ros.core.introduce import introduce_concept
from ego_ros.core.limits import LimitExceeded
from ego_ros.core.store import MemoryStore
from ego_ros.serving.remote import RemoteEngine, serve_engine
from ego_ros.serving.rpc import RemoteError

ROOT = Path(__file__).resolve().parents[1]
HUGE = "Where is my mug? " * 12_000  # 204,000 characters


@pytest.fixture
def engine(backend, tmp_path):
    return EgoEngine(backend, MemoryStore(tmp_path / "store", backend.fingerprint))


def test_sizes_over_the_limits_are_refused_before_the_model(engine, backend, make_scene):
    frame = [make_scene(1)]
    started = time.perf_counter()
    with pytest.raises(LimitExceeded, match=r"question is 204000 characters long; the limit "
                                            r"is 1000"):
        engine.ask(HUGE, frame)
    with pytest.raises(LimitExceeded, match="11 options given; the limit is 10"):
        engine.ask("Which?", frame, options={chr(65 + i): "x" for i in range(11)})
    with pytest.raises(LimitExceeded, match="option 'B' is 5000 characters long"):
        engine.ask("Which?", frame, options={"A": "red", "B": "blue" * 1250})
    with pytest.raises(LimitExceeded, match="17 reference views given; one introduction "
                                            "takes at most 16"):
        engine.introduce("mug", frame * 17)
    with pytest.raises(LimitExceeded, match="17 reference views"):
        introduce_concept(backend, "mug", frame * 17, engine.layers)
    assert time.perf_counter() - started < 2.0  # no model pass ran
    assert engine.stats["requests"] == 0 and engine.concepts() == []
    # Within the characters, over the tokens: byte-level BPE spends bytes on rare symbols.
    rare = "\U0001f9ed" * limits.MAX_QUESTION_CHARS  # 1000 compasses: 4 bytes each
    assert len(backend.tokenize(rare)) > limits.MAX_QUESTION_TOKENS
    with pytest.raises(LimitExceeded, match=r"tokens long; the limit is 1024"):
        engine.ask(rare, frame)
    assert engine.stats["requests"] == 0
    # At the limits everything is accepted.
    at_limit = ("Is it red? " * 100)[:limits.MAX_QUESTION_CHARS]
    options = {"A": "r" * limits.MAX_OPTION_CHARS, "B": "blue"}
    assert engine.ask(at_limit, frame, options=options).answer is not None


def test_the_models_special_tokens_are_refused_in_names_and_questions(engine, backend,
                                                                      make_scene):
    """Every special or added token of the family (InternVL's <IMG_CONTEXT>, <img>, <video>
    included, which names.py alone does not know) is refused as part of a concept name, a
    question or an option, before the model runs."""
    frame = [make_scene(2)]
    specials = sorted(backend.special_tokens)
    family_markers = {"internvl": {"<IMG_CONTEXT>", "<img>", "</img>", "<video>"},
                      "qwen2_5_vl": {"<|vision_start|>", "<|image_pad|>", "<|video_pad|>"}}
    assert family_markers[backend.family] <= set(specials)
    for token in specials:
        for introduce in (lambda name: engine.introduce(name, frame),
                          lambda name: introduce_concept(backend, name, frame, engine.layers)):
            # names.py refuses '<|...' and '/' itself; the rest only the backend knows
            with pytest.raises(ValueError, match="special token|reserved|path separator"):
                introduce(f"my {token} mug")
        with pytest.raises(ValueError, match="special token") as refused:
            engine.ask(f"Is {token} here?", frame)
        assert repr(token) in str(refused.value)
        with pytest.raises(ValueError, match="special token"):
            engine.ask("Which?", frame, options={"A": token, "B": "b"})
    assert engine.stats["requests"] == 0 and engine.concepts() == []


def _blocks(backend, n: int) -> list[Visual]:
    """``n`` distinguishable memory blocks of 2-4 tokens."""
    return [backend.memory_block(torch.full((2 + i, backend.hidden_size), float(i)),
                                 torch.zeros(2 + i, 3, dtype=torch.long), (1, 1, 2 + i))
            for i in range(n)]


def test_text_can_never_be_taken_for_an_image_marker(backend):
    """The render of text quoting every special token and the template's image and video
    markers has its visual blocks exactly where the render of plain text has them: same
    segment structure, each text segment the same text with the quote in place of the plain
    word, and not one special-token id more (the quote stays text)."""
    markers = {backend.adapter.template_marker(k) for k in ("image", "video")}
    hostile = "".join(sorted(backend.special_tokens)) + "".join(sorted(markers))
    a, b, c = _blocks(backend, 3)
    template = ("These are the user's personal concepts:\nWORD: <ego:a>\nWORD WORD: <ego:b>\n"
                "Query image: <ego:q>\nDoes the query show WORD?")
    renders = {}
    for label, word in (("plain", "kiro"), ("hostile", hostile)):
        renders[label] = backend.render(template.replace("WORD", word),
                                        {"a": a, "b": b, "q": c})
    plain, quoted = renders["plain"], renders["hostile"]
    assert [s if isinstance(s, Visual) else None for s in quoted] == \
        [s if isinstance(s, Visual) else None for s in plain]
    assert [s for s in quoted if isinstance(s, Visual)] == [a, b, c]
    specials = set(backend.tokenizer.all_special_ids)
    for p, q in zip(plain, quoted):
        if isinstance(p, Visual):
            continue
        decode = backend.tokenizer.decode
        assert decode(q.tolist()) == decode(p.tolist()).replace("kiro", hostile)
        assert sorted(i for i in q.tolist() if i in specials) == \
            sorted(i for i in p.tolist() if i in specials)
    # And in the model's input: each block's rows sit at its own placeholder span.
    emb = backend.embed(quoted)
    assert [e - s for s, e in emb.visual_spans] == [2, 3, 4]
    for (start, end), block in zip(emb.visual_spans, (a, b, c)):
        torch.testing.assert_close(emb.embeds[0, start:end], block.tokens)


def test_plain_text_renders_to_the_ids_of_the_whole_rendered_string(backend):
    """For text without special-token strings the render's ids are those of tokenising the
    chat template's output in one go, piece by piece between image markers."""
    a, b = _blocks(backend, 2)
    texts = ["Memories:\nkiro: ", "\n\nQuery image: ", "\nAnswer yes or no. Is kiro here?"]
    segments = backend.render(f"{texts[0]}<ego:a>{texts[1]}<ego:b>{texts[2]}", {"a": a, "b": b})
    items = [{"type": "text", "text": texts[0]}, {"type": "image"},
             {"type": "text", "text": texts[1]}, {"type": "image"},
             {"type": "text", "text": texts[2]}]
    text = backend.processor.apply_chat_template([{"role": "user", "content": items}],
                                                 tokenize=False, add_generation_prompt=True)
    pieces = text.split(backend.adapter.template_marker("image"))
    assert len(pieces) == 3
    got = [s.tolist() for s in segments if not isinstance(s, Visual)]
    assert got == [backend.tokenize(p).tolist() for p in pieces]


def test_the_worker_refuses_over_the_limits_before_its_engine(tmp_path):
    """Over real ZeroMQ sockets: the worker answers an over-limit request with the limit's
    error, and its engine (which would accept anything) is never called."""
    engine = FakeEngine()
    server = serve_engine(engine, "tcp://127.0.0.1:*").start()
    try:
        with RemoteEngine(server.endpoint, timeout_s=10) as remote:
            cases = [
                (lambda: remote.ask(HUGE, frames(90)), "question is 204000 characters long"),
                (lambda: remote.ask("Which?", frames(90),
                                    options={chr(65 + i): "x" for i in range(11)}),
                 "11 options given"),
                (lambda: remote.introduce("mug", frames(90, n=17)), "17 reference views"),
                (lambda: remote.introduce("m" * 100, frames(90)), "limit is 64"),
            ]
            for call, message in cases:
                started = time.perf_counter()
                with pytest.raises(RemoteError) as refused:
                    call()
                assert time.perf_counter() - started < 5.0
                assert message in refused.value.remote_message
                assert refused.value.type_name in ("LimitExceeded", "InvalidConceptName")
            assert engine.calls["ask"] == 0 and engine.calls["introduce"] == 0
            assert remote.ask("Where?", frames(90)).answer.startswith("Where?")
    finally:
        server.close()


def _cli_error(capsys, *argv) -> str:
    assert cli_main([str(a) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err


def test_the_cli_refuses_over_the_limits_with_exit_2(tiny_model_dirs, tmp_path, capsys,
                                                     make_scene):
    import cv2

    image = tmp_path / "view.png"
    assert cv2.imwrite(str(image), make_scene(3))
    store = tmp_path / "store"
    store.mkdir()
    model = tiny_model_dirs["internvl"]
    started = time.perf_counter()
    err = _cli_error(capsys, "ask", "--model", model, "--store", store, "--question", HUGE, image)
    assert "--question: the question is 204000 characters long; the limit is 1000" in err
    err = _cli_error(capsys, "ask", "--model", model, "--store", store, "-q", "Which?", image,
                     *[f"--option={chr(65 + i)}=x" for i in range(11)])
    assert "--option: 11 options given" in err
    err = _cli_error(capsys, "introduce", "--model", model, "--store", store, "--name", "mug",
                     *[image] * 17)
    assert "17 reference views given" in err
    assert time.perf_counter() - started < 5.0  # all refused before a model was loaded
    err = _cli_error(capsys, "introduce", "--model", model, "--store", store, "--name",
                     "my <IMG_CONTEXT>", image)
    assert "special token(s) '<IMG_CONTEXT>'" in err
    assert not list(store.iterdir())


def test_the_limits_are_documented():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Limits on requests")[1].split("\n## ")[0]
    for value in (limits.MAX_QUESTION_CHARS, limits.MAX_OPTION_CHARS, limits.MAX_OPTIONS,
                  limits.MAX_NAME_CHARS, limits.MAX_QUESTION_TOKENS, limits.MAX_VIEWS):
        assert re.search(rf"\b{value:,}\b|\b{value}\b", section), value
    assert limits.check_question("  Where?  ") == "Where?"
    limits.check_options(["A=" + "x" * limits.MAX_OPTION_CHARS, "B=y"])
    with pytest.raises(LimitExceeded, match="option 'A'"):
        limits.check_options(["A=" + "x" * (limits.MAX_OPTION_CHARS + 1), "B=y"])
