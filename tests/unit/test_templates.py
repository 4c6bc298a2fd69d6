import pytest

from tasks.config import ConfigError, load_config
from tasks.prompts import REFLECT, apply_template


@pytest.mark.parametrize(
    "name,chat,system,expected",
    [
        ("plain", False, None, ("Q: {question}\n", None)),
        ("plain", True, "Be brief.", ("Q: {question}\n", "Be brief.")),
        ("reflect", False, None, (REFLECT + "\nQ: {question}\n", None)),
        ("reflect", True, None, ("Q: {question}\n", REFLECT)),
        ("reflect", True, "Be brief.", ("Q: {question}\n", "Be brief.\n" + REFLECT)),
    ],
)
def test_apply_template(name, chat, system, expected):
    assert apply_template(name, "Q: {question}\n", chat, system) == expected


def test_unknown_template_is_named():
    with pytest.raises(ValueError, match="unknown prompt template 'fancy'"):
        apply_template("fancy", "Q: {question}\n", False, None)


@pytest.mark.parametrize(
    "yaml_text,rule",
    [
        ("distill:\n  templates: [plain, fancy]\n", "unknown ['fancy']"),
        ("distill:\n  templates: [plain, plain]\n", "listed twice"),
        ("distill:\n  templates: []\n", "at least 1"),
        ("distill:\n  include_policy: false\n", "no generator"),
    ],
)
def test_invalid_distill_config(tmp_path, yaml_text, rule):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert "distill" in str(e.value) and rule in str(e.value)
