import pytest

from tasks.records import Verdict
from tasks.rewards import (
    REWARDS,
    accuracy_reward,
    bound_reward,
    extract_answer,
    format_reward,
    format_verdict,
    language_reward,
    language_score,
    length_penalty,
    length_reward,
    repetition_penalty,
    self_consistency_reward,
)

GOOD = "<think>1+2=3</think><answer>3</answer>"


@pytest.mark.parametrize(
    "completion,reason",
    [
        (GOOD, "well_formed"),
        ("  " + GOOD + "\n", "well_formed"),  # whitespace around the blocks
        ("<think>1+2=3</think>\n<answer>3</answer>", "well_formed"),  # and between them
        ("<think></think><answer>5</answer>", "well_formed"),  # a one-number question: no step
        ("<think>x</think><answer> 3 </answer>", "well_formed"),  # layout inside the block
        ("<answer>3</answer>", "bad_format"),
        ("<think>x</think>", "bad_format"),
        ("", "bad_format"),
        ("plain text 3", "bad_format"),
        ("<answer>3</answer><think>x</think>", "bad_format"),  # blocks in the wrong order
        ("<think>x<answer>3</answer>", "bad_format"),  # think never closed
        ("<think>x</think><answer>3", "bad_format"),  # answer never closed (truncated)
        # text outside the blocks: before, between, after
        ("so <think>x</think><answer>3</answer>", "bad_format"),
        ("<think>x</think>so<answer>3</answer>", "bad_format"),
        ("<think>x</think><answer>3</answer>junk", "bad_format"),
        # two think blocks
        ("<think>a</think><think>b</think><answer>3</answer>", "bad_format"),
        ("<think>a<think>b</think><answer>3</answer>", "bad_format"),
        ("<think>a</think>b</think><answer>3</answer>", "bad_format"),
        # two answer blocks
        ("<think>x</think><answer>1</answer><answer>3</answer>", "bad_format"),
        ("<think>x</think><answer>1</answer>\n<answer>3</answer>", "bad_format"),
        ("<think>x</think><answer>1<answer>3</answer>", "bad_format"),
        ("<think>x</think><answer>3</answer>x</answer>", "bad_format"),
        # a block inside the other
        ("<think>a<answer>1</answer></think><answer>3</answer>", "bad_format"),
        ("<think>a</answer></think><answer>3</answer>", "bad_format"),
        ("<think>x</think><answer>3<think>y</answer>", "bad_format"),
        ("<think>x</think><answer>3</think></answer>", "bad_format"),
        ("<think>x</think><answer> </answer>", "empty_answer"),
        ("<think>x</think><answer></answer>", "empty_answer"),
    ],
)
def test_format_verdict(completion, reason):
    assert format_verdict(completion).reason == reason


@pytest.mark.parametrize(
    "completion,expected",
    [
        (GOOD, "3"),
        ("<think>x</think><answer> 3 \n</answer>", "3"),  # layout around the text is dropped
        ("<answer>1</answer><answer> 2 </answer>", "2"),  # several blocks: the last
        ("<think><answer>1</answer></think><answer>2</answer>", "2"),
        ("<answer>1<answer>2</answer>", "2"),  # a block holds no `<answer>` of its own
        ("<answer>1</answer><answer>2", "1"),  # an open block counts for nothing
        ("<answer>2", None),
        ("no answer", None),
        ("<answer></answer>", ""),
    ],
)
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


def test_rewards_have_trl_signature_and_none_for_infra_errors():
    prompts = ["Q: 1+2\n"] * 4
    completions = [GOOD, "<think></think><answer>4</answer>", "garbage", GOOD]
    answers = ["3", "3", "3", None]
    assert accuracy_reward(prompts, completions, answer=answers) == [1.0, 0.0, 0.0, None]
    assert format_reward(prompts, completions, answer=answers) == [1.0, 1.0, 0.0, 1.0]
    assert set(REWARDS) >= {"accuracy", "format"}


# -- accuracy on the math domain: exact match first, math-verify behind it ----------------------
@pytest.mark.parametrize(
    "completion,gold,expected",
    [
        ("<think>x</think><answer>5/6</answer>", "5/6", 1.0),  # exact match fast path
        ("<think>x</think><answer>\\frac{5}{6}</answer>", "5/6", 1.0),  # LaTeX vs plain
        ("<think>x</think><answer>10/12</answer>", "\\frac{5}{6}", 1.0),  # unreduced
        ("<think>x</think><answer>\\sqrt{8}</answer>", "2\\sqrt{2}", 1.0),  # symbolic
        ("<think>x</think><answer>5/7</answer>", "5/6", 0.0),
        ("<think>x</think><answer>2</answer>", "2\\sqrt{2}", 0.0),  # not read as `2`
        ("<think>x</think><answer>cat?</answer>", "5/6", 0.0),  # unparsable model answer
        ("no answer tags", "5/6", 0.0),
        # A gold answer that cannot be parsed never rewards 1.0, not even on an exact copy.
        ("<think>x</think><answer>\\frac{1}{</answer>", "\\frac{1}{", None),
        ("<think>x</think><answer>5/6</answer>", "\\frac{1}{", None),
        ("<think>x</think><answer></answer>", "", None),
    ],
)
def test_math_accuracy(completion, gold, expected):
    assert accuracy_reward(["p"], [completion], answer=[gold], domain="math") == [expected]


# -- language consistency -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "prompt,completion,expected",
    [
        ("Q: what is two plus two?", "<think>two plus two</think><answer>4</answer>", 1.0),
        ("Q: what is two plus two?", "<think>two 加 two 是</think><answer>4</answer>", 6 / 8),
        ("问：二加二是多少？", "<think>二加二 equals 四</think><answer>4</answer>", 4 / 10),
        ("问：二加二是多少？", "<think>二加二等于四</think><answer>4</answer>", 1.0),
        ("Вопрос: два плюс два", "<think>два плюс два</think><answer>4</answer>", 1.0),
        ("Q: 13-4+17", "<think>13-4=9\n9+17=26</think><answer>26</answer>", 1.0),  # no letters
        ("13-4", "<think>mostly latin 中</think><answer>9</answer>", 11 / 12),  # CoT's own script
        ("Q: x", "no think block at all", 1.0),
    ],
)
def test_language_score(prompt, completion, expected):
    assert language_score(prompt, completion) == pytest.approx(expected)


def test_language_reward_prefers_the_question_column_over_the_rendered_prompt():
    chat = "<|system|>You are a helpful assistant<|user|>二加二？<|assistant|>"
    completion = "<think>二加二等于四</think><answer>4</answer>"
    assert language_reward([chat], [completion]) == [0.0]  # the template's Latin dominates
    assert language_reward([chat], [completion], question=["二加二？"]) == [1.0]


# -- length ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "length,expected",
    [
        (0, 0.0),
        (384, 0.0),
        (385, -1 / 128),
        (448, -0.5),
        (511, -127 / 128),
        (512, -1.0),
        (900, -1.0),
    ],
)
def test_length_penalty_is_soft_inside_the_buffer(length, expected):
    assert length_penalty(length, 512, 128) == pytest.approx(expected)


def test_length_reward_counts_tokens_when_known():
    texts = ["x" * 100, "x" * 10]
    assert length_reward(None, texts, length_limit=20, length_buffer=10) == [-1.0, 0.0]
    ids = [[1] * 5, [1] * 15]
    assert length_reward(None, texts, completion_ids=ids, length_limit=20, length_buffer=10) == [
        0.0,
        -0.5,
    ]
    assert length_reward(None, texts, num_tokens=[20, 0], length_limit=20, length_buffer=10) == [
        -1.0,
        0.0,
    ]
    with pytest.raises(ValueError, match="length_buffer"):
        length_reward(None, texts, length_limit=10, length_buffer=20)


# -- repetition -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text,expected",
    [
        ("<think>13-4=9\n9+17=26</think><answer>26</answer>", 0.0),
        ("the cat sat on the mat", 0.0),
        ("the cat sat the cat sat the cat sat", -4 / 7),  # 7 trigrams, 3 distinct
        ("我爱你我爱你我爱你", -4 / 7),  # CJK characters are words
        ("a a a a a a", -3 / 4),
        ("too short", 0.0),
        ("", 0.0),
    ],
)
def test_repetition_penalty(text, expected):
    assert repetition_penalty(text) == pytest.approx(expected)


# -- self-consistency -----------------------------------------------------------------------------
def _ans(x: str) -> str:
    return f"<think>t</think><answer>{x}</answer>"


@pytest.mark.parametrize(
    "answers,gold,expected",
    [
        (["5", "5", "5", "6", "6", "x"], None, [1, 1, 1, 0, 0, 0]),  # majority 5
        (["5", "5", "6", "6"], None, [None] * 4),  # tie: no pseudo-label
        (["5", "6", "7"], None, [None] * 3),  # no two samples agree
        (["5", "5", "6"], "6", [0, 0, 1]),  # gold wins over the vote
        (["garbage", "5", "5"], None, [0, 1, 1]),
    ],
)
def test_self_consistency(answers, gold, expected):
    completions = [_ans(a) if a != "garbage" else "garbage" for a in answers]
    got = self_consistency_reward(["p"] * len(answers), completions, answer=[gold] * len(answers))
    assert got == [None if e is None else float(e) for e in expected]


def test_self_consistency_votes_per_prompt_and_by_the_domains_verifier():
    prompts = ["a", "a", "a", "b", "b", "b"]
    completions = [_ans(x) for x in ["1/2", "\\frac{1}{2}", "3/4", "7", "8", "8"]]
    got = self_consistency_reward(prompts, completions, answer=[None] * 6, domain="math")
    assert got == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]


def test_every_reward_has_verdicts_for_curation():
    completions = [GOOD, "garbage " * 20]
    columns = dict(prompts=["Q: 1+2\n"] * 2, answer=["3", "3"], domain="arith", num_tokens=[9, 9])
    # Model-backed rewards take their model's output precomputed, as curation passes it.
    columns.update(
        judge_verdict=[Verdict("accept", "judge_accept_3of3"), Verdict("reject", "r")],
        rm_score=[0.9, 0.1],
    )
    for name, (reward, verdicts) in REWARDS.items():
        vs = verdicts(completions, **columns)
        trl_columns = {k: v for k, v in columns.items() if k != "prompts"}
        assert len(reward(columns["prompts"], completions, **trl_columns)) == 2
        assert len(vs) == 2 and all(v.outcome in ("accept", "reject", "infra_error") for v in vs)
        assert vs[0].outcome == "accept", name  # the reference solution passes every check
    assert REWARDS["repetition"][1](completions)[1].reason == "repetitive"


def test_bound_reward_fixes_settings_and_takes_its_key_as_name():
    fn = bound_reward("length", length_limit=20, length_buffer=10)
    assert fn.__name__ == "length"
    assert fn(["p"], ["x" * 15]) == [-0.5]
    with pytest.raises(ValueError, match="unknown reward 'vibes'"):
        bound_reward("vibes")


def test_hygiene_reads_answers_with_the_one_extractor():
    from tasks.hygiene import diversity, final_answer

    two = "<answer>1</answer><answer>2</answer>"
    assert final_answer(two) == extract_answer(two) == "2"
    assert final_answer("no answer") == ""
    # Both completions answer 2, so the answer distribution has no entropy.
    assert diversity([two, "<answer>2</answer>"])["answer_entropy"] == 0.0
