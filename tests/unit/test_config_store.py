from pathlib import Path

import pytest

from tasks import store
from tasks.config import ConfigError, load_config

CONFIGS = sorted(Path(__file__).parents[2].joinpath("configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_file_validates(path):
    cfg = load_config(path)
    assert cfg.name


@pytest.mark.parametrize(
    "yaml_text,field,rule",
    [
        ("sampling:\n  n: 0\n", "sampling.n", "greater than 0"),
        ("sampling:\n  top_p: 1.5\n", "sampling.top_p", "less than or equal to 1"),
        ("engine:\n  backend: tgi\n", "engine.backend", "'vllm', 'hf' or 'ray'"),
        ("sampling:\n  nn: 3\n", "sampling.nn", "Extra inputs are not permitted"),
        ("curation:\n  rewards: [accuracy, vibes]\n", "curation", "unknown reward"),
        ("bootstrap:\n  hidden_size: 100\n  num_heads: 3\n", "bootstrap", "divisible"),
        ("name: 'bad name/'\n", "name", "pattern"),
        ("model:\n  prompt_template: 'no slot'\n", "model", "{question}"),
    ],
)
def test_invalid_config_names_field_and_rule(tmp_path, yaml_text, field, rule):
    p = tmp_path / "bad.yaml"
    p.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and field in msg and rule in msg


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such config"):
        load_config(tmp_path / "missing.yaml")
    p = tmp_path / "list.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(p)
    p.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


def test_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\n")
    assert load_config(p, **{"sampling.n": 3}).sampling.n == 3


def test_write_stage_is_atomic_and_never_overwrites(tmp_path):
    folder = tmp_path / "gen-0001" / "generate"
    with pytest.raises(RuntimeError):
        with store.write_stage(folder, "generate") as (tmp, out):
            (tmp / "a.jsonl").write_text('{"x": 1}\n')
            raise RuntimeError("crash mid-stage")
    assert store.read_manifest(folder) is None
    assert not list(folder.parent.iterdir())  # the temporary folder is gone too
    with store.write_stage(folder, "generate") as (tmp, out):
        store.write_parquet([{"x": 1}, {"x": 2}], tmp / "rows.parquet")
        out["n"] = 2
    man = store.read_manifest(folder, verify=True)
    assert man.outputs == {"n": 2} and man.files["rows.parquet"]["rows"] == 2
    with pytest.raises(FileExistsError):
        with store.write_stage(folder, "generate"):
            pass
    (folder / "rows.parquet").write_bytes(b"tampered")
    with pytest.raises(store.StageCorrupt):
        store.read_manifest(folder, verify=True)


def test_leftover_without_manifest_is_replaced(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "half.parquet").write_text("partial")
    (tmp_path / ".tmp-s-dead").mkdir()
    with store.write_stage(folder, "s") as (tmp, out):
        (tmp / "ok.txt").write_text("ok")
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "ok.txt"]
    assert not (tmp_path / ".tmp-s-dead").exists()
