"""Served teachers: `distill.teachers` entries that name an OpenAI-compatible endpoint.

The config parses local paths and `{name, backend: openai, base_url, model}` entries into one
list and names the field of a bad entry; the generate worker sends a served teacher plain-text
prompts (no teacher tokenizer is loaded), with the key from the variable the entry names, and
the stage records the teacher's name on its samples.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks.backends import http_settings
from tasks.config import ConfigError, FlywheelConfig, ServedTeacher, load_config, teacher_label
from tasks.generate import main as generate_worker
from tasks.requests import (
    engine_spec,
    generate_request,
    sampling_spec,
    served_engine,
    to_json,
)
from tests.conftest import build_tiny_tokenizer
from tests.unit.test_openai_backend import Server

SERVED = {"name": "big", "backend": "openai", "base_url": "http://h:8000/v1", "model": "m"}


def _teachers(*entries) -> list:
    return FlywheelConfig(distill={"teachers": list(entries)}).distill.teachers


def test_local_paths_and_served_entries_parse_into_one_list():
    local, served = _teachers("/models/teacher", {**SERVED, "api_key_env": "BIG_KEY"})
    assert local == Path("/models/teacher")
    assert served == ServedTeacher(**SERVED, api_key_env="BIG_KEY")
    assert [teacher_label(t) for t in (local, served)] == ["/models/teacher", "big"]
    # The resolved JSON (logged to MLflow, given to Prefect) reads back as the same config.
    cfg = FlywheelConfig(distill={"teachers": ["/t", SERVED]})
    assert FlywheelConfig.model_validate_json(cfg.resolved_json()) == cfg


@pytest.mark.parametrize(
    "entry,field,rule",
    [
        ({k: v for k, v in SERVED.items() if k != "base_url"}, "base_url", "Field required"),
        ({**SERVED, "backend": "tgi"}, "backend", "'openai'"),
        ({**SERVED, "base_url": "h:8000"}, "base_url", "pattern"),
        ({**SERVED, "api_key": "sk-1"}, "api_key", "Extra inputs are not permitted"),
        ({**SERVED, "api_key_env": "not a var"}, "api_key_env", "pattern"),
        ({**SERVED, "name": ""}, "name", "pattern"),
    ],
)
def test_bad_served_teacher_names_its_field(tmp_path, entry, field, rule):
    import yaml

    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump({"distill": {"teachers": ["/t", entry]}}))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and f"distill.teachers.1.served.{field}" in msg and rule in msg
    assert "distill.teachers.0" not in msg  # the good local entry is not blamed


def test_a_non_path_non_mapping_entry_is_named_as_a_bad_path():
    with pytest.raises(ValueError, match=r"distill.teachers.0.local"):
        _teachers(3)


@pytest.mark.parametrize(
    "data,rule",
    [
        ({"distill": {"teachers": [SERVED, {**SERVED, "model": "x"}]}}, r"\['big'\] listed twice"),
        ({"distill": {"teachers": ["/t", "/t"]}}, r"\['/t'\] listed twice"),
        (
            {"distill": {"teachers": [SERVED]}, "train": {"mode": "gkd"}},
            r"train.gkd.teacher: GKD needs a local teacher",
        ),
        (
            {"distill": {"teachers": [SERVED]}, "model": {"chat_template": True}},
            r"distill.teachers: served teachers \['big'\] take plain-text prompts",
        ),
    ],
)
def test_unusable_teacher_sets_are_refused_at_load(data, rule):
    with pytest.raises(ValueError, match=rule):
        FlywheelConfig.model_validate(data)


def test_gkd_takes_an_explicit_local_teacher_next_to_served_ones():
    cfg = FlywheelConfig(
        distill={"teachers": [SERVED]}, train={"mode": "gkd", "gkd": {"teacher": "/t"}}
    )
    assert cfg.train.gkd.teacher == Path("/t")


def test_generators_carry_each_served_teacher_endpoint(tmp_path):
    from tasks.stages.generate import _generators

    local = tmp_path / "local"
    local.mkdir()
    (local / "config.json").write_text("{}")
    cfg = FlywheelConfig(distill={"teachers": [str(local), {**SERVED, "api_key_env": "K"}]})
    engine = engine_spec(cfg)
    served = replace(engine, backend="openai", base_url=SERVED["base_url"], api_key_env="K")
    assert _generators(cfg, "/policy") == [
        ("/policy", "/policy", engine),
        (str(local), str(local), engine),
        ("big", "m", served),
    ]
    missing = FlywheelConfig(distill={"teachers": [SERVED, "/nope"]})
    with pytest.raises(FileNotFoundError, match=r"distill.teachers\[1\]: /nope"):
        _generators(missing, "/policy")


def test_http_settings_take_the_entry_endpoint_and_key_variable(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env:1/v1")
    monkeypatch.setenv("FLYWHEEL_HTTP_RETRIES", "0")
    cfg = FlywheelConfig()
    teacher = ServedTeacher(**{**SERVED, "base_url": "http://t:2/v1/", "api_key_env": "T_KEY"})
    s = http_settings(served_engine(cfg, teacher))
    assert (s.base_url, s.api_key_env, s.retries) == ("http://t:2/v1", "T_KEY", 0)
    s = http_settings(replace(engine_spec(cfg), backend="openai"))  # a served judge
    assert (s.base_url, s.api_key_env) == ("http://env:1/v1", "OPENAI_API_KEY")


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


def test_worker_samples_a_served_teacher_without_its_tokenizer(server, tmp_path, monkeypatch):
    """The worker loads only the student's tokenizer; failed prompts come back as `error`."""
    student = tmp_path / "student"
    build_tiny_tokenizer().save_pretrained(student)
    questions = tmp_path / "q.parquet"
    rows = [{"seed_id": "a", "question": "ok 1+2"}, {"seed_id": "b", "question": "garbage 3"}]
    pq.write_table(pa.Table.from_pylist(rows), questions)
    monkeypatch.setenv("TEACHER_KEY", "sk-teacher")
    monkeypatch.setenv("FLYWHEEL_HTTP_RETRIES", "0")
    out = tmp_path / "raw.parquet"
    cfg = FlywheelConfig(sampling={"n": 2}, model={"prompt_template": "{question}\n"})
    name = "served-name-not-a-folder"
    teacher = ServedTeacher(
        name="t", backend="openai", base_url=server.url, model=name, api_key_env="TEACHER_KEY"
    )
    request = generate_request(
        cfg,
        teacher.model,
        sampling_spec(cfg, 0),
        questions,
        out,
        engine=served_engine(cfg, teacher),
        student_model=str(student),
    )
    # `warmup` is a local-engine knob: ignored by the served backend.
    stats = generate_worker(to_json(replace(request, progress=False, warmup=True)))
    rows = pq.read_table(out).to_pylist()
    assert stats["rows"] == 4 == len(rows)
    by = {(r["seed_id"], r["sample_index"]): r for r in rows}
    assert [by["a", k]["completion"] for k in (0, 1)] == ["VERDICT: accept"] * 2
    assert {by["b", k]["finish_reason"] for k in (0, 1)} == {"error"}
    assert {r["train_prompt"] for r in rows} == {"ok 1+2\n", "garbage 3\n"}
    assert server.keys == {"Bearer sk-teacher"}


def test_worker_refuses_a_chat_template_for_a_served_teacher(tmp_path):
    from tasks.generate import prompt_tokenizers

    cfg = FlywheelConfig(model={"chat_template": True})
    engine = served_engine(cfg, ServedTeacher(**SERVED))
    req = generate_request(cfg, "m", sampling_spec(cfg, 0), tmp_path / "q", "o", engine=engine)
    with pytest.raises(ValueError, match="m: a served model .* chat_template must be false"):
        prompt_tokenizers(req)
