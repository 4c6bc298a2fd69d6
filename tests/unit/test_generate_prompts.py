"""Prompt rendering and encoding (what text and which token ids each backend is given), and
the backend registry's error when vLLM is missing."""

from __future__ import annotations

import pytest

from tasks.prompts import encode_prompts, prompt_seed, render_prompts

# A minimal chat template over the tiny vocabulary: BOS first, as real templates do.
CHAT = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'system' %}:{{ m['content'] }}\n"
    "{% else %}Q: {{ m['content'] }}\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}A: {% endif %}"
)


@pytest.fixture
def chat_tokenizer(tiny_tokenizer):
    tiny_tokenizer.chat_template = CHAT
    yield tiny_tokenizer
    tiny_tokenizer.chat_template = None


@pytest.mark.parametrize(
    ("template", "questions", "expected"),
    [
        ("Q: {question}\n", ["1+2", "3*4"], ["Q: 1+2\n", "Q: 3*4\n"]),
        ("{question}=", ["(1+2)"], ["(1+2)="]),
        ("Q: {question}\n", [], []),
    ],
)
def test_plain_template(tiny_tokenizer, template, questions, expected):
    assert render_prompts(tiny_tokenizer, questions, template, False, None) == expected


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        (None, "<s>Q: 1+2\nA: "),
        ("9", "<s>:9\nQ: 1+2\nA: "),
        ("", "<s>Q: 1+2\nA: "),  # an empty system prompt is no system message
    ],
)
def test_chat_template(chat_tokenizer, system, expected):
    # The plain template is ignored when the chat template is on.
    assert render_prompts(chat_tokenizer, ["1+2"], "X {question}", True, system) == [expected]


def test_encode_adds_bos_once(chat_tokenizer):
    plain = render_prompts(chat_tokenizer, ["1+2"], "Q: {question}\n", False, None)
    chat = render_prompts(chat_tokenizer, ["1+2"], "", True, None)
    bos = chat_tokenizer.bos_token_id
    for ids in encode_prompts(chat_tokenizer, plain + chat, max_model_len=64):
        assert ids[0] == bos and ids[1] != bos


def test_encode_rejects_prompt_without_room(tiny_tokenizer):
    # "<s>" + 5 characters = 6 tokens: fits 7, not 6.
    assert len(encode_prompts(tiny_tokenizer, ["Q: 12"], max_model_len=7)[0]) == 6
    with pytest.raises(ValueError, match="max_model_len=6"):
        encode_prompts(tiny_tokenizer, ["Q: 12"], max_model_len=6)


def test_prompt_seed_depends_on_seed_and_prompt_only():
    assert prompt_seed(0, "Q: 1\n") == prompt_seed(0, "Q: 1\n")
    seeds = {prompt_seed(s, p) for s in range(3) for p in ["Q: 1\n", "Q: 2\n", "Q: 3\n"]}
    assert len(seeds) == 9
    assert all(0 <= s < 2**62 for s in seeds)


def test_vllm_backend_without_vllm_says_what_to_do(monkeypatch):
    import sys

    from tasks.backends import BACKENDS
    from tasks.config import FlywheelConfig
    from tasks.requests import engine_spec, sampling_spec

    cfg = FlywheelConfig(sampling={"n": 1, "max_tokens": 4})
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(RuntimeError, match="engine.backend: hf"):
        BACKENDS["vllm"]("no-such-model", ["Q: 1\n"], engine_spec(cfg), sampling_spec(cfg, 0))


@pytest.mark.parametrize(
    ("multiprocessing", "tensor_parallel_size", "inside"),
    [(None, 1, True), (None, 2, False), (True, 1, False), (False, 1, True)],
)
def test_where_the_vllm_engine_runs(multiprocessing, tensor_parallel_size, inside, monkeypatch):
    """`engine.multiprocessing`: None puts a one-device engine on this CPU machine inside the
    worker, and sets vLLM up for it (VLLM_ENABLE_V1_MULTIPROCESSING, read when the engine
    starts, even after an in-process engine froze vLLM's reading of the environment)."""
    pytest.importorskip("vllm")
    import vllm.envs as envs

    from tasks.backends import engine_in_process
    from tasks.config import FlywheelConfig
    from tasks.requests import engine_spec

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1" if inside else "0")
    envs.enable_envs_cache()  # what an in-process engine leaves behind
    engine = engine_spec(
        FlywheelConfig(
            engine={
                "multiprocessing": multiprocessing,
                "tensor_parallel_size": tensor_parallel_size,
            }
        )
    )
    try:
        assert engine_in_process(engine) is inside
        assert envs.VLLM_ENABLE_V1_MULTIPROCESSING is not inside
    finally:
        envs.disable_envs_cache()


def test_an_engine_inside_the_worker_is_one_device():
    from pydantic import ValidationError

    from tasks.config import FlywheelConfig

    with pytest.raises(ValidationError, match="engine.*inside the worker, on one device"):
        FlywheelConfig(engine={"multiprocessing": False, "tensor_parallel_size": 2})
