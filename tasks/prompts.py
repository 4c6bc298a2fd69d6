"""Prompts: how a question becomes the tokens a model sees, for every backend and trainer.

Rendering (plain template or the tokenizer's chat template), the named prompt templates
(`TEMPLATES`: plain, reflect), the rationalization hint (`hint_questions`), the generator's and
the student's prompts of one worker run (`generator_prompts`), encoding to token ids once (one
BOS, also after a chat template), and the per-prompt sampling seed. Pure of engines: the
trainers import this, not the generation worker.

- Prompts are tokenized here, once, by one function, and every backend receives token ids, so
  they see the same tokens whatever each would have done with a string (double BOS after a
  chat template, for one).
- Every prompt gets its own sampling seed, derived from (seed, prompt). With one seed shared by
  a whole batch, vLLM draws the same random numbers for every prompt and the samples of
  different prompts come out correlated; a per-prompt seed also makes a prompt's samples
  independent of what else is in the batch, so a resumed or resharded stage reproduces them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tasks.records import stable_hash

if TYPE_CHECKING:
    from tasks.requests import PromptSpec


def render_prompts(
    tokenizer: Any,
    questions: list[str],
    prompt_template: str,
    chat_template: bool,
    system_prompt: str | None,
) -> list[str]:
    """The text each question is sent to the model as.

    Plain: `prompt_template.format(question=q)`. Chat: the tokenizer's chat template over an
    optional system message and the question as the user turn, ending with the assistant cue.
    """
    if not chat_template:
        return [prompt_template.format(question=q) for q in questions]
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [
        tokenizer.apply_chat_template(
            [*head, {"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in questions
    ]


def generator_prompts(
    tokenizer: Any,
    student: Any,
    questions: list[str],
    spec: PromptSpec,
    template: str,
    hint: tuple[str, list[str]] | None = None,
) -> tuple[list[str], list[str]]:
    """(the prompts the generator samples, the prompts a student trains on) of `questions`.

    The generator's carry the named `template`'s instruction and, with `hint` (the hint
    template and each question's gold answer), the answer (`hint_questions`); the student's
    are the plain prompt in the student's own format (`student`'s tokenizer), whichever model,
    template or hint produced the completion: a teacher's chat markup, the reflect instruction
    or the given answer would otherwise become part of the student's training input.
    """
    shown = questions if hint is None else hint_questions(hint[0], questions, hint[1])
    prompt_template, system = apply_template(
        template, spec.prompt_template, spec.chat_template, spec.system_prompt
    )
    prompts = render_prompts(tokenizer, shown, prompt_template, spec.chat_template, system)
    plain = render_prompts(
        student, questions, spec.prompt_template, spec.chat_template, spec.system_prompt
    )
    return prompts, plain


def hint_questions(hint: str, questions: list[str], answers: list[str]) -> list[str]:
    """Each question with its gold answer shown, as STaR's rationalization asks
    (`sampling.rationalize.hint`, `{question}` and `{answer}`). The result takes the question's
    place in `render_prompts`, so the hint sits inside the configured prompt or chat format;
    only the generator sees it, never the prompt a student trains on."""
    return [hint.format(question=q, answer=a) for q, a in zip(questions, answers, strict=True)]


# Prompt templates per seed, by name: the one registry. `plain` is the configured prompt as is;
# `reflect` asks for reflection and verification, as V3's data generator did (a system message
# for chat models, a first line for plain-text prompts). Samples record the template's name.
REFLECT = (
    "Think step by step. After each step, check it; if a step is wrong, say so and redo it. "
    "Verify the final answer before you give it."
)
TEMPLATES: dict[str, str | None] = {"plain": None, "reflect": REFLECT}


def apply_template(
    name: str, prompt_template: str, chat_template: bool, system_prompt: str | None
) -> tuple[str, str | None]:
    """(prompt_template, system_prompt) with the named template's instruction added."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown prompt template {name!r}; known: {sorted(TEMPLATES)}")
    extra = TEMPLATES[name]
    if extra is None:
        return prompt_template, system_prompt
    if chat_template:
        return prompt_template, extra if system_prompt is None else f"{system_prompt}\n{extra}"
    return f"{extra}\n{prompt_template}", system_prompt


def encode_prompts(tokenizer: Any, prompts: list[str], max_model_len: int) -> list[list[int]]:
    """Token ids of each prompt, as every backend feeds them to the model.

    The tokenizer adds its special tokens (BOS) unless the text already starts with BOS, as a
    rendered chat template does. A prompt that leaves no room for one generated token is an
    error naming the setting to change, raised before any engine loads.
    """
    bos = tokenizer.bos_token
    ids = [
        tokenizer(p, add_special_tokens=not (bos and p.startswith(bos)))["input_ids"]
        for p in prompts
    ]
    longest = max((len(x) for x in ids), default=0)
    if longest >= max_model_len:
        raise ValueError(
            f"a prompt is {longest} tokens long, which leaves no room to generate within "
            f"engine.max_model_len={max_model_len}; raise engine.max_model_len"
        )
    return ids


def prompt_seed(seed: int, prompt: str) -> int:
    """The sampling seed of one prompt: a function of the run's seed and the prompt only."""
    # 62 bits: fits every engine's generator, and vLLM gives sample j the seed `base + j`.
    return int(stable_hash("prompt-seed", seed, prompt), 16) >> 2
