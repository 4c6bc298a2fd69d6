"""MLflow: one parent run per flywheel, one child run per generation, a registered model version
per challenger with `challenger` / `champion` aliases.

Everything goes through `MlflowClient` with explicit run ids (no fluent "active run" state, which
is per-thread and would tangle with Prefect's task threads). Run ids are kept in the flywheel
folder, so a resumed run continues the same MLflow runs instead of starting new ones. Metrics
are logged in batches (a synchronous `log_metric` costs ~22 ms on SQLite).
When tracking is off, `NullTracker` takes every call and does nothing.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

from tasks.projections import flatten

PARENT_ID_FILE = "mlflow_parent_run.json"
CHILD_ID_FILE = "mlflow_run_id"


def default_tracking_uri(runs_dir: Path) -> str:
    """`MLFLOW_TRACKING_URI` when set, else a SQLite file beside the runs."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(runs_dir).resolve()}/mlflow.db"
    )


class NullTracker:
    """Tracking switched off: every call is accepted and does nothing."""

    parent_run_id: str | None = None

    def start(self, config_json: str, flywheel_dir: Path, tags: dict | None = None) -> None: ...
    def start_generation(self, generation: int, gen_folder: Path) -> None: ...
    def end_generation(self, status: str = "FINISHED") -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int, parent: bool = True) -> None: ...
    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_dataset(self, path: Path, name: str, context: str) -> None: ...
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

        self._mlflow = mlflow
        self.uri = tracking_uri
        mlflow.set_tracking_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri)
        self.model_name = registered_model
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = artifact_root.resolve().as_uri() if artifact_root else None
            self.experiment_id = self.client.create_experiment(experiment, location)
        else:
            self.experiment_id = exp.experiment_id
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

    def log_dataset(self, path: Path, name: str, context: str) -> None:
        import mlflow.data
        import pandas as pd
        from mlflow.entities import DatasetInput, InputTag

        df = pd.read_parquet(path)
        with warnings.catch_warnings():
            # MLflow hints about integer columns and ambiguous local sources: not actionable.
            warnings.simplefilter("ignore", UserWarning)
            ds = mlflow.data.from_pandas(df, source=str(Path(path).resolve()), name=name)
        inp = DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])
        self.client.log_inputs(self.run_id or self.parent_run_id, datasets=[inp])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        run = self.run_id or self.parent_run_id
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
        """Upload the checkpoint to the generation run and register it as a model version."""
        from mlflow.exceptions import MlflowException

        # A run killed after registering and before its stage landed registers nothing twice.
        existing = self.client.search_model_versions(f"run_id='{self.run_id}'")
        if existing:
            return str(existing[0].version)
        self.client.log_artifacts(self.run_id, str(model_dir), "model")
        try:
            self.client.create_registered_model(self.model_name)
        except MlflowException:
            pass  # already registered
        run = self.client.get_run(self.run_id)
        mv = self.client.create_model_version(
            self.model_name,
            source=f"{run.info.artifact_uri}/model",
            run_id=self.run_id,
            tags={k: str(v) for k, v in tags.items()},
        )
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
