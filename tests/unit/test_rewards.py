import pytest

from tasks.rewards import REWARDS, accuracy_reward, extract_answer, format_reward, format_verdict

GOOD = "<think>1+2=3</think><answer>3</answer>"


@pytest.mark.parametrize(
    "completion,reason",
    [
        (GOOD, "well_formed"),
        ("  " + GOOD + "\n", "well_formed"),
        ("<answer>3</answer>", "bad_format"),
        ("<think>x</think>", "bad_format"),
        ("<think>x</think><answer>3</answer>junk", "bad_format"),
        ("<think>a<think>b</think><answer>3</answer>", "bad_format"),
        ("<think>x</think><answer> </answer>", "empty_answer"),
        ("", "bad_format"),
    ],
)
def test_format_verdict(completion, reason):
    assert format_verdict(completion).reason == reason


def test_extract_answer_takes_last():
    assert extract_answer("<answer>1</answer><answer> 2 </answer>") == "2"
    assert extract_answer("no answer") is None


def test_rewards_have_trl_signature_and_none_for_infra_errors():
    prompts = ["Q: 1+2\n"] * 4
    completions = [GOOD, "<think></think><answer>4</answer>", "garbage", GOOD]
    answers = ["3", "3", "3", None]
    assert accuracy_reward(prompts, completions, answer=answers) == [1.0, 0.0, 0.0, None]
    assert format_reward(prompts, completions, answer=answers) == [1.0, 1.0, 0.0, 1.0]
    assert set(REWARDS) >= {"accuracy", "format"}
