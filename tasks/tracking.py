"""MLflow: one parent run per flywheel, one child run per generation, a registered model version
per challenger with `challenger` / `champion` aliases.

Everything goes through `MlflowClient` with explicit run ids (no fluent "active run" state, which
is per-thread and would tangle with Prefect's task threads). Run ids are kept in the flywheel
folder, so a resumed run continues the same MLflow runs instead of starting new ones. Metrics
are logged in batches (a synchronous `log_metric` costs ~22 ms on SQLite).
When tracking is off, `NullTracker` takes every call and does nothing.

Several flywheels may share the local SQLite file. MLflow creates and migrates a new database
on first use without a lock between processes (two first uses at once fail with
`duplicate column name: step`), so a tracker opens a SQLite store under a file lock beside it
(`mlflow.db.lock`). A model version carries the generation and the SHA-256 of its files
(`flywheel.model_hash`), and `register` looks that pair up before registering: a run killed, or
an MLflow server lost, between registering and landing the gate registers nothing twice.
Fault points (`tasks.faults`): `tracking.artifact`, as an artifact or a checkpoint is uploaded;
`tracking.register`, just after a version is registered.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tasks.faults import fault
from tasks.projections import flatten

# MLflow's telemetry fetches its settings in a background thread; where that fails (no internet,
# as on these machines) the thread removes `_MLFLOW_TELEMETRY_SESSION_ID` from `os.environ`
# while another thread may be iterating it (requests reads the proxy variables on every REST
# call), and that call dies with `KeyError: '_MLFLOW_TELEMETRY_SESSION_ID'`: one of 16
# flywheels run at once against an MLflow server failed so (`bench/bench_load.py`). Telemetry
# is therefore off unless the user sets MLFLOW_DISABLE_TELEMETRY themselves; set before any
# `import mlflow`, which this module owns.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

PARENT_ID_FILE = "mlflow_parent_run.json"
CHILD_ID_FILE = "mlflow_run_id"
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""MLflow's model-training kind on the flywheel's experiment, so its UI treats it as one with
runs to compare rather than GenAI traces."""


def default_tracking_uri(runs_dir: Path) -> str:
    """`MLFLOW_TRACKING_URI` when set, else a SQLite file beside the runs."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(runs_dir).resolve()}/mlflow.db"
    )


@contextlib.contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Held while a tracker first opens a local SQLite store (created and migrated on first
    use); a server's store needs none."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    db = Path(tracking_uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock"):
        yield


class TrackingBusy(RuntimeError):
    """The local SQLite store stayed locked by other processes past its busy timeout."""


class _SqliteClient:
    """An `MlflowClient` on a local SQLite file whose `database is locked` errors say what to
    do: many flywheels at once belong on an MLflow server."""

    def __init__(self, client: Any, uri: str):
        self._client, self._uri = client, uri

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except Exception as e:
                if "database is locked" not in str(e):
                    raise
                raise TrackingBusy(
                    f"MLflow's SQLite store {self._uri} is locked by other runs ({name}): for "
                    "several flywheels at once, run `mlflow server` (and a Prefect server) and "
                    "point MLFLOW_TRACKING_URI (and PREFECT_API_URL) at them"
                ) from e

        return call


def model_hash(model_dir: Path) -> str:
    """SHA-256 over the (relative name, SHA-256) of every file of a model folder, as its stage
    manifest lists them (checked against the files first; `tasks.store.file_hashes`)."""
    from tasks.store import file_hashes

    h = hashlib.sha256()
    for name, sha in sorted(file_hashes(model_dir).items()):
        h.update(f"{name}\0{sha}\n".encode())
    return h.hexdigest()


class NullTracker:
    """Tracking switched off: every call is accepted and does nothing."""

    parent_run_id: str | None = None

    def start(self, config_json: str, flywheel_dir: Path, tags: dict | None = None) -> None: ...
    def start_generation(self, generation: int, gen_folder: Path) -> None: ...
    def end_generation(self, status: str = "FINISHED") -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int, parent: bool = True) -> None: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_dataset(
        self, path: Path, name: str, context: str, source: dict | None = None
    ) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_table(self, rows: list[dict], artifact_file: str) -> None: ...
    def set_tags(self, tags: dict[str, str]) -> None: ...

    def register(self, model_dir: Path, tags: dict[str, str]) -> str | None:
        return None

    def set_alias(self, alias: str, version: str | None) -> None: ...
    def set_version_tags(self, version: str | None, tags: dict[str, str]) -> None: ...
    def log_dict(self, obj: dict, artifact_file: str) -> None: ...
    def log_parent_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...

    def champion(self) -> dict | None:
        """The registry's `champion` version: {"version", "generation"}, or None."""
        return None


class MlflowTracker(NullTracker):
    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        registered_model: str,
        artifact_root: Path | None = None,
    ):
        import mlflow
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        self._mlflow = mlflow
        self.uri = tracking_uri
        self.model_name = registered_model
        with store_lock(tracking_uri):
            # The client opens (and on first use creates) the tracking store, the search the
            # registry's, both in the same database.
            mlflow.set_tracking_uri(tracking_uri)
            self.client = MlflowClient(tracking_uri)
            if tracking_uri.startswith("sqlite:"):
                self.client = _SqliteClient(self.client, tracking_uri)
            exp = self.client.get_experiment_by_name(experiment)
            self.client.search_registered_models(max_results=1)
            if exp is None:
                location = artifact_root.resolve().as_uri() if artifact_root else None
                try:
                    self.experiment_id = self.client.create_experiment(
                        experiment, location, EXPERIMENT_KIND
                    )
                except MlflowException:  # another flywheel on a server made it just now
                    exp = self.client.get_experiment_by_name(experiment)
                    if exp is None:
                        raise
            if exp is not None:
                self.experiment_id = exp.experiment_id
                if not any(k in exp.tags for k in EXPERIMENT_KIND):  # made before kinds were set
                    for k, v in EXPERIMENT_KIND.items():
                        self.client.set_experiment_tag(self.experiment_id, k, v)
        self.parent_run_id = None
        self.run_id: str | None = None  # the current generation's run

    # -- runs ---------------------------------------------------------------------------------
    def start(self, config_json: str, flywheel_dir: Path, tags: dict | None = None) -> None:
        id_file = Path(flywheel_dir) / PARENT_ID_FILE
        if id_file.is_file():
            self.parent_run_id = json.loads(id_file.read_text())["run_id"]
            self.client.update_run(self.parent_run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=Path(flywheel_dir).name,
                tags={"flywheel.role": "flywheel", **(tags or {})},
            )
            self.parent_run_id = run.info.run_id
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(json.dumps({"run_id": self.parent_run_id, "uri": self.uri}))
            config = json.loads(config_json)
            self._log_params(self.parent_run_id, flatten(config))
            self.client.log_dict(self.parent_run_id, config, "config.json")

    def start_generation(self, generation: int, gen_folder: Path) -> None:
        id_file = Path(gen_folder) / CHILD_ID_FILE
        if id_file.is_file():
            self.run_id = id_file.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
            return
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{Path(gen_folder).parent.name}/gen-{generation:04d}",
            tags={
                "mlflow.parentRunId": self.parent_run_id,
                "flywheel.role": "generation",
                "flywheel.generation": str(generation),
            },
        )
        self.run_id = run.info.run_id
        Path(gen_folder).mkdir(parents=True, exist_ok=True)
        id_file.write_text(self.run_id)

    def end_generation(self, status: str = "FINISHED") -> None:
        if self.run_id:
            self.client.set_terminated(self.run_id, status)
        self.run_id = None

    def end(self, status: str = "FINISHED") -> None:
        if self.parent_run_id:
            self.client.set_terminated(self.parent_run_id, status)

    # -- logging ------------------------------------------------------------------------------
    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_params(self, params: dict[str, Any]) -> None:
        self._log_params(self.run_id or self.parent_run_id, params)

    def log_metrics(self, metrics: dict[str, float], step: int, parent: bool = True) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k.replace("@", "_at_"), float(v), now, step)
            for k, v in metrics.items()
            if v is not None
        ]
        targets = [r for r in (self.run_id, self.parent_run_id if parent else None) if r]
        for run_id in targets:
            for i in range(0, len(items), 500):
                self.client.log_batch(run_id, metrics=items[i : i + 500])

    def log_dataset(self, path: Path, name: str, context: str, source: dict | None = None) -> None:
        """The Parquet file at `path` as a run input; `source` (a seeds manifest's `source`)
        names where its rows came from instead: a Hugging Face dataset or the user's file."""
        import mlflow.data
        import pandas as pd
        from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
        from mlflow.entities import DatasetInput, InputTag

        df = pd.read_parquet(path)
        origin: object = str(Path(source["path"] if source else path).resolve())
        if source and source["kind"] == "dataset":
            keys = {"config_name": "config", "data_files": "data_files", "split": "split"}
            origin = HuggingFaceDatasetSource(
                source["path"],
                revision=source["revision"],
                **{k: source[v] for k, v in keys.items()},
            )
        with warnings.catch_warnings():
            # MLflow hints about integer columns and ambiguous local sources: not actionable.
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_pandas(df, source=origin, name=name)
        tags = [InputTag("mlflow.data.context", context)]
        if source:  # the data's content hash (`tasks.seed_dataset`, `tasks.seedfile`)
            tags.append(InputTag("flywheel.source_hash", source.get("hash") or source["sha256"]))
        inp = DatasetInput(ds._to_mlflow_entity(), tags=tags)
        self.client.log_inputs(self.run_id or self.parent_run_id, datasets=[inp])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        run = self.run_id or self.parent_run_id
        fault("tracking.artifact")
        if Path(path).is_dir():
            self.client.log_artifacts(run, str(path), artifact_path)
        else:
            self.client.log_artifact(run, str(path), artifact_path)

    def log_table(self, rows: list[dict], artifact_file: str) -> None:
        import pandas as pd

        if rows:
            self.client.log_table(
                self.run_id or self.parent_run_id, pd.DataFrame(rows), artifact_file
            )

    def set_tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id or self.parent_run_id, k, str(v))

    # -- registry -----------------------------------------------------------------------------
    def register(self, model_dir: Path, tags: dict[str, str]) -> str:
        """Upload the checkpoint to the generation run and register it as a model version,
        unless a version of this generation with these very files is registered already."""
        from mlflow.exceptions import MlflowException

        tags = {k: str(v) for k, v in tags.items()} | {"flywheel.model_hash": model_hash(model_dir)}
        existing = self.client.search_model_versions(
            f"name='{self.model_name}' AND tags.`flywheel.generation` = "
            f"'{tags.get('flywheel.generation', '')}' AND tags.`flywheel.model_hash` = "
            f"'{tags['flywheel.model_hash']}'"
        )
        if existing:
            return str(min(int(v.version) for v in existing))
        fault("tracking.artifact")
        self.client.log_artifacts(self.run_id, str(model_dir), "model")
        try:
            self.client.create_registered_model(self.model_name)
        except MlflowException as e:
            if e.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        run = self.client.get_run(self.run_id)
        mv = self.client.create_model_version(
            self.model_name, source=f"{run.info.artifact_uri}/model", run_id=self.run_id, tags=tags
        )
        fault("tracking.register")  # registered, and the reply lost or the run killed
        return str(mv.version)

    def set_alias(self, alias: str, version: str | None) -> None:
        if version is not None:
            self.client.set_registered_model_alias(self.model_name, alias, version)

    def set_version_tags(self, version: str | None, tags: dict[str, str]) -> None:
        if version is not None:
            for k, v in tags.items():
                self.client.set_model_version_tag(self.model_name, version, k, v)

    def champion(self) -> dict | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(self.model_name, "champion")
        except MlflowException:
            return None  # no registered model yet, or no alias: the base model is champion
        return {"version": str(mv.version), "generation": int(mv.tags["flywheel.generation"])}

    def log_dict(self, obj: dict, artifact_file: str) -> None:
        self.client.log_dict(self.run_id or self.parent_run_id, obj, artifact_file)

    def log_parent_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """On the flywheel's run: artifacts that span generations (the trajectory plot)."""
        self.client.log_artifact(self.parent_run_id, str(path), artifact_path)


def make_tracker(enabled: bool, runs_dir: Path, experiment: str, registered_model: str):
    if not enabled:
        return NullTracker()
    local = not os.environ.get("MLFLOW_TRACKING_URI")
    artifacts = Path(runs_dir) / "mlartifacts" if local else None
    return MlflowTracker(default_tracking_uri(runs_dir), experiment, registered_model, artifacts)
