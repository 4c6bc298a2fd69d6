"""SFT with `model.chat_template: true`: the training tokens hold the whole reasoning, one BOS.

The template below behaves like DeepSeek-R1's (and Qwen3's for earlier turns): it keeps only
what follows `</think>` in an assistant turn, and it writes BOS itself, as real templates do.
A recipe that rendered the assistant turn through it would train on answers without their
reasoning; a recipe that tokenized the rendered prompt with the tokenizer's own BOS would train
on two. The training file's prompt is rendered as the generation stage renders it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tasks.config import FlywheelConfig
from tasks.prompts import encode_prompts, render_prompts
from tasks.requests import sft_request
from tasks.store import write_parquet
from tasks.trainers.sft import build_trainer

# Over the tiny character vocabulary (its tags `<think>`, `</think>` are single tokens).
THINK_STRIPPING = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}"
    "{% set content = m['content'].split('</think>')[-1].lstrip('\\n') %}"
    "A: {{ content }}{{ eos_token }}"
    "{% else %}Q: {{ m['content'] }}\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}A: {% endif %}"
)
QUESTION = "2+3"
COMPLETION = "<think>2+3=5. Check: 5-3=2.</think><answer>5</answer>"
TRAIN = dict(
    learning_rate=1e-3,
    epochs=1.0,
    batch_size=2,
    grad_accum=1,
    warmup_ratio=0.0,
    scheduler="constant",
    max_length=128,
    bf16=False,
    seed=0,
)


@pytest.fixture
def chat_tokenizer(tiny_tokenizer):
    tiny_tokenizer.chat_template = THINK_STRIPPING
    yield tiny_tokenizer
    tiny_tokenizer.chat_template = None


def test_the_template_drops_reasoning_from_assistant_turns(chat_tokenizer):
    """Control: rendered as a conversation, the sample loses its reasoning."""
    turns = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": COMPLETION}]
    rendered = chat_tokenizer.apply_chat_template(turns, tokenize=False)
    assert rendered == "<s>Q: 2+3\nA: <answer>5</answer></s>"
    assert "<think>" not in rendered


def test_sft_tokens_keep_the_think_block_and_one_bos(chat_tokenizer, tiny_model, tmp_path: Path):
    (prompt,) = render_prompts(chat_tokenizer, [QUESTION], "{question}", True, None)
    assert prompt == "<s>Q: 2+3\nA: "  # the template's own BOS
    path = tmp_path / "train.parquet"
    write_parquet([{"prompt": prompt, "completion": COMPLETION}] * 2, path)

    request = sft_request(FlywheelConfig(train=TRAIN), 0, tiny_model, path, tmp_path / "out")
    trainer = build_trainer(dataclasses.replace(request, progress=False))
    row = trainer.train_dataset[0]
    ids, labels = row["input_ids"], row["labels"]
    bos, eos = chat_tokenizer.bos_token_id, chat_tokenizer.eos_token_id

    # One BOS: the tokenizer adds none after a template that wrote it (it would, to plain text).
    assert chat_tokenizer(prompt)["input_ids"][:2] == [bos, bos], "control: a naive call doubles it"
    assert ids.count(bos) == 1 and ids[0] == bos
    # The context is the one the generator sampled from, token for token.
    (generated_from,) = encode_prompts(chat_tokenizer, [prompt], max_model_len=128)
    assert ids[: len(generated_from)] == generated_from

    # The trained tokens are the whole completion, reasoning included, then eos.
    trained = [t for t in labels if t != -100]
    assert trained[-1] == eos
    assert chat_tokenizer.decode(trained[:-1]) == COMPLETION
    assert labels[: len(generated_from)] == [-100] * len(generated_from)
    assert chat_tokenizer.decode(ids) == prompt + COMPLETION + "</s>"
