"""What must hold of a flywheel folder after any fault, and after the run that resumes it.

`assert_invariants(flywheel_dir, ...)` reads the landed stages through `tasks.outputs` /
`tasks.store` and raises `AssertionError` naming the generation, stage, file and row at fault:

- complete stages: every landed stage's files verify against its manifest; a finished run
  leaves no `.tmp-*` folder and no stage folder without a manifest;
- no data lost: per generation, seeds x n per generator = samples + generation errors, and the
  curated verdicts count every sample once: accept + reject + infra_error = samples;
- no duplicates: sample ids unique within and across generations, verdicts one per sample, the
  accepted set a subset of the samples with no id or (prompt, normalised completion) twice;
- no partial model promoted: each gate's champion is the base model or a generation whose train
  folder verifies, whose eval landed and whose own gate promoted it; with a tracking URI the
  registry's `champion` alias names the same generation, and no generation is registered twice;
- infra errors are never verdicts: an infra_error sample is never kept, and a reject has a
  reward that scored it 0 (or was truncated), never only rewards that could not score it;
- idempotent rerun: with `before` (a `snapshot` taken before the rerun) every stage that had
  landed is byte-for-byte the same manifest (nothing redone); with `reference` (another
  flywheel of the same config) the data hashes of every stage are equal (`stage_hashes`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from tasks import store
from tasks.hygiene import exact_key
from tasks.outputs import STAGES, Generation, load_flywheel

# Files whose bytes depend on more than the data: logs, timings, plots, and the trainer's
# arguments (they name the stage's temporary folder, a random name per attempt).
VOLATILE = (".log", ".png", ".svg", ".html", "trainer_state.json", "training_args.json")


def snapshot(flywheel_dir: Path) -> dict[str, tuple[float, dict]]:
    """Every landed stage folder (relative path) -> (manifest `created`, its `files`)."""
    fw = Path(flywheel_dir)
    out = {}
    for man in sorted(fw.rglob(store.MANIFEST)):
        if any(p.startswith(".tmp-") for p in man.relative_to(fw).parts):
            continue
        m = store.read_manifest(man.parent)
        out[str(man.parent.relative_to(fw))] = (m.created, m.files)
    return out


def stage_hashes(flywheel_dir: Path, ignore: tuple[str, ...] = VOLATILE) -> dict[str, dict]:
    """Landed stage folder -> {file: sha256} of its data files plus its outputs' `hash`:
    what two runs of one deterministic config must share."""
    fw = Path(flywheel_dir)
    out = {}
    for rel in snapshot(fw):
        m = store.read_manifest(fw / rel)
        files = {k: v["sha256"] for k, v in m.files.items() if not k.endswith(ignore)}
        out[rel] = {"files": files, "hash": m.outputs.get("hash")}
    return out


def assert_invariants(
    flywheel_dir: Path,
    *,
    finished: bool = True,
    before: dict[str, tuple[float, dict]] | None = None,
    reference: Path | None = None,
    tracking_uri: str | None = None,
    registered_model: str | None = None,
) -> list[Generation]:
    """Assert every invariant of the folder; returns the generations read.

    `finished=False` for a folder a fault has just left (a `.tmp-*` leftover is allowed
    there: the next attempt removes it). `before`: a `snapshot` from before a rerun.
    `reference`: an uninterrupted run of the same config. `tracking_uri` and
    `registered_model`: check the registry's champion alias too."""
    fw = Path(flywheel_dir)
    assert fw.is_dir(), f"{fw}: no flywheel folder"
    check_complete_stages(fw, finished)
    gens = load_flywheel(fw)
    sample_ids: dict[str, int] = {}
    for gen in gens:
        check_no_data_lost(gen)
        check_no_duplicates(gen, sample_ids)
        check_infra_not_verdicts(gen)
    check_champion(fw, gens)
    if tracking_uri is not None:
        check_registry(gens, tracking_uri, registered_model or fw.name)
    if before is not None:
        check_not_redone(fw, before)
    if reference is not None:
        check_same_as(fw, Path(reference))
    return gens


def check_complete_stages(fw: Path, finished: bool) -> None:
    for gdir in sorted(fw.glob("gen-[0-9]*")):
        for entry in sorted(gdir.iterdir()):
            if entry.name.startswith(".tmp-"):
                assert not finished, f"{entry}: a stage's temporary folder left behind"
                continue
            if not entry.is_dir():
                continue
            assert store.read_manifest(entry) is not None, f"{entry}: stage folder, no manifest"
            try:
                store.read_manifest(entry, verify=True)
            except store.StageCorrupt as e:
                raise AssertionError(str(e)) from e


def _rows(folder: Path, name: str) -> list[dict]:
    return store.read_parquet(folder / name)


def check_no_data_lost(gen: Generation) -> None:
    where = gen.folder.name
    if gen.generate is not None:
        assert gen.seeds is not None, f"{where}: generate landed without seeds"
        samples = _rows(gen.folder / "generate", "samples.parquet")
        assert len(samples) == gen.generate.samples, (
            f"{where}/generate: samples.parquet has {len(samples)} rows, "
            f"its manifest says {gen.generate.samples}"
        )
        runs = max(len(gen.generate.sources), 1)
        errors = sum(int(s.get("errors", 0)) for s in gen.generate.sources)
        want = gen.seeds.count * gen.generate.params["n"] * runs
        assert len(samples) + errors == want, (
            f"{where}/generate: {gen.seeds.count} seeds x n={gen.generate.params['n']} x "
            f"{runs} generator runs = {want}, but {len(samples)} samples + {errors} errors"
        )
    if gen.curate is not None:
        assert gen.generate is not None, f"{where}: curate landed without generate"
        c = gen.curate.counts
        judged = sum(c.get(k, 0) for k in ("accept", "reject", "infra_error"))
        assert judged == gen.generate.samples, (
            f"{where}/curate: accept {c.get('accept', 0)} + reject {c.get('reject', 0)} + "
            f"infra_error {c.get('infra_error', 0)} = {judged}, "
            f"but generate made {gen.generate.samples} samples"
        )
        verdicts = _rows(gen.folder / "curate", "verdicts.parquet")
        assert len(verdicts) == gen.generate.samples, (
            f"{where}/curate: verdicts.parquet has {len(verdicts)} rows for "
            f"{gen.generate.samples} samples"
        )
        ids = {s["id"] for s in _rows(gen.folder / "generate", "samples.parquet")}
        lost = ids - {v["sample_id"] for v in verdicts}
        assert not lost, f"{where}/curate: no verdict for sample {sorted(lost)[0]}"


def check_no_duplicates(gen: Generation, seen: dict[str, int]) -> None:
    """`seen`: sample id -> generation, filled across generations."""
    where = gen.folder.name
    if gen.generate is None:
        return
    samples = _rows(gen.folder / "generate", "samples.parquet")
    for s in samples:
        assert s["id"] not in seen, (
            f"{where}/generate: sample {s['id']} also in gen-{seen[s['id']]:04d}"
            if seen.get(s["id"], gen.number) != gen.number
            else f"{where}/generate/samples.parquet: sample id {s['id']} twice"
        )
        seen[s["id"]] = gen.number
    if gen.curate is None:
        return
    dup = [
        k
        for k, n in Counter(
            v["sample_id"] for v in _rows(gen.folder / "curate", "verdicts.parquet")
        ).items()
        if n > 1
    ]
    assert not dup, f"{where}/curate/verdicts.parquet: sample {dup[0]} judged twice"
    accepted = _rows(gen.folder / "curate", "accepted.parquet")
    assert len(accepted) == gen.curate.accepted, (
        f"{where}/curate: accepted.parquet has {len(accepted)} rows, "
        f"its manifest says {gen.curate.accepted}"
    )
    ids = {s["id"] for s in samples}
    keys: dict[tuple[str, str], str] = {}
    accepted_ids: set[str] = set()
    for a in accepted:
        assert a["id"] in ids, f"{where}/curate: accepted {a['id']} is not a generated sample"
        assert a["id"] not in accepted_ids, f"{where}/curate: accepted {a['id']} twice"
        accepted_ids.add(a["id"])
        key = (a["prompt"], exact_key(a["completion"]))
        assert key not in keys, (
            f"{where}/curate/accepted.parquet: {a['id']} duplicates the content of {keys[key]}"
        )
        keys[key] = a["id"]


def check_infra_not_verdicts(gen: Generation) -> None:
    where = gen.folder.name
    if gen.curate is None:
        return
    for v in _rows(gen.folder / "curate", "verdicts.parquet"):
        if v["outcome"] == "infra_error":
            assert not v["kept"], f"{where}/curate: infra_error sample {v['sample_id']} kept"
        if v["outcome"] == "reject" and v["reason"] != "truncated":
            scores = [x for k, x in v.items() if k.startswith("reward_")]
            assert any(x == 0.0 for x in scores), (
                f"{where}/curate: sample {v['sample_id']} rejected ({v['reason']}) though no "
                f"reward scored it 0: {scores} (an infra error counted as a wrong answer)"
            )


def _verify_stage(folder: Path, why: str) -> None:
    try:
        man = store.read_manifest(folder, verify=True)
    except store.StageCorrupt as e:
        raise AssertionError(f"{why}: {e}") from e
    assert man is not None, f"{why}: {folder} has not landed"


def check_champion(fw: Path, gens: list[Generation]) -> None:
    by_number = {g.number: g for g in gens}
    for gen in gens:
        if gen.gate is None:
            continue
        champ = gen.gate.champion
        why = f"{gen.folder.name}/gate: champion gen-{champ.generation:04d}"
        assert champ.generation <= gen.number, f"{why} is from the future"
        if champ.generation == 0:
            assert champ.version is None, f"{why} (the base model) has version {champ.version}"
            continue
        won = by_number.get(champ.generation)
        assert won is not None, f"{why}: no such generation folder"
        train = won.folder / "train"
        assert Path(champ.model) == train / "model", f"{why}: model {champ.model} not {train}"
        _verify_stage(train, why)
        assert (train / "model").is_dir(), f"{why}: {train / 'model'} missing"
        _verify_stage(won.folder / "eval", why)
        assert won.gate is not None, f"{why}: its own gate has not landed"
        assert won.gate.decision.promote, f"{why}: its own gate did not promote it"
        assert won.gate.challenger_version == champ.version, (
            f"{why}: version {champ.version}, but its gate registered {won.gate.challenger_version}"
        )


def check_registry(gens: list[Generation], tracking_uri: str, name: str) -> None:
    """The registry's `champion` alias names the last gate's champion (none: the base)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    per_generation = Counter(
        v.tags.get("flywheel.generation") for v in client.search_model_versions(f"name='{name}'")
    )
    twice = sorted(g for g, n in per_generation.items() if n > 1)
    assert not twice, f"registry: generation {twice[0]} registered {per_generation[twice[0]]} times"
    gated = [g for g in gens if g.gate is not None]
    if not gated:
        return
    want = gated[-1].gate.champion
    try:
        mv = client.get_model_version_by_alias(name, "champion")
    except MlflowException:
        mv = None
    if want.version is None:
        assert mv is None, f"registry: champion alias on version {mv.version}; gate kept the base"
        return
    assert mv is not None, f"registry: no champion alias; the gate chose version {want.version}"
    assert str(mv.version) == str(want.version), (
        f"registry: champion alias on version {mv.version}, the gate chose {want.version}"
    )
    assert int(mv.tags["flywheel.generation"]) == want.generation, (
        f"registry: champion version {mv.version} is tagged generation "
        f"{mv.tags['flywheel.generation']}, the gate's champion is gen-{want.generation:04d}"
    )


def check_not_redone(fw: Path, before: dict[str, tuple[float, dict]]) -> None:
    after = snapshot(fw)
    for rel, value in before.items():
        assert rel in after, f"{rel}: landed before the rerun, gone after it"
        assert after[rel] == value, f"{rel}: redone or changed by the rerun"


def check_same_as(fw: Path, reference: Path) -> None:
    mine, ref = stage_hashes(fw), stage_hashes(reference)
    assert sorted(mine) == sorted(ref), (
        f"stages differ from {reference}: only here {sorted(set(mine) - set(ref))}, "
        f"only there {sorted(set(ref) - set(mine))}"
    )
    for rel in sorted(
        ref,
        key=lambda r: (
            r.split("/")[0],
            STAGES.index(r.split("/")[-1]) if r.split("/")[-1] in STAGES else -1,
        ),
    ):
        assert mine[rel] == ref[rel], (
            f"{rel}: differs from the uninterrupted run {reference / rel}: "
            + ", ".join(
                k
                for k in sorted(set(mine[rel]["files"]) | set(ref[rel]["files"]))
                if mine[rel]["files"].get(k) != ref[rel]["files"].get(k)
            )
            + (" (outputs hash)" if mine[rel]["hash"] != ref[rel]["hash"] else "")
        )
