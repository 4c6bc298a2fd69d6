"""The bootstrap tokenizer: one token per character, tags as single tokens, exact round trip."""

import pytest

from tasks.bootstrap import TAG_TOKENS, build_tokenizer, pretrain_text
from tasks.domains import arith


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.mark.parametrize(
    "text",
    [
        pretrain_text("13-4+17", arith.solution("13-4+17")),
        pretrain_text("0-19-18", arith.solution("0-19-18")),
        "Q: What is 2*(3+4)?\n<think>3+4=7\n2*7=14</think><answer>14</answer>",
        "<think></think><answer>-5</answer>",
    ],
)
def test_round_trip_is_exact(tok, text):
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_tags_are_single_non_special_tokens(tok):
    for tag in TAG_TOKENS:
        ids = tok(tag, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, tag
        assert tag not in tok.all_special_tokens
    ids = tok("<answer>26</answer>", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<answer>", "2", "6", "</answer>"]


def test_characters_are_one_token_each(tok):
    text = "Q: 98-76+5\n"
    assert len(tok(text, add_special_tokens=False)["input_ids"]) == len(text)


def test_special_tokens_are_dropped_when_skipping(tok):
    ids = tok("Q: 1+1\n")["input_ids"] + [tok.eos_token_id, tok.pad_token_id]
    assert tok.decode(ids, skip_special_tokens=True) == "Q: 1+1\n"
    assert {tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id} == {0, 1, 2, 3}


def test_unknown_characters_map_to_unk(tok):
    ids = tok("1+€=é", add_special_tokens=False)["input_ids"]
    assert len(ids) == 5
    assert ids[2] == ids[4] == tok.unk_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "1+="
