"""The container and cluster files, checked offline: docker/compose.yaml against the Compose
spec (check-jsonschema's vendored schema), docker/k8s/ against Kubernetes' schemas
(kubernetes-validate, at the Makefile's K8S_VERSION), and the images' Dockerfiles against the
Makefile's install (each runs `make install` after copying everything that install reads)."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[2]
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent
MAKEFILE = (ROOT / "Makefile").read_text()


def test_compose_file_follows_the_compose_spec_and_a_broken_one_does_not(tmp_path):
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    compose["services"]["prefect"]["restart_policy"] = "always"  # not a service key
    broken = tmp_path / "broken-compose.yaml"
    broken.write_text(yaml.safe_dump(compose))
    # one run for both files (the checker's start is most of its cost); each is reported alone
    r = subprocess.run(
        [
            *(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec"),
            *(str(DOCKER / "compose.yaml"), str(broken)),
        ],
        capture_output=True,
        text=True,
    )
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "restart_policy" in out and str(broken) in out, out
    assert str(DOCKER / "compose.yaml") not in out, out


def test_compose_runs_the_stack_the_workers_and_a_gpu_profile():
    services = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]
    assert {"postgres", "s3", "prefect", "mlflow", "worker-cpu", "worker-gpu"} <= set(services)
    for name in ("s3", "prefect", "mlflow"):
        assert services[name]["command"][:4] == ["flywheel", "stack", "--only", name]
    for name in ("prefect", "mlflow"):  # published on the host's loopback only
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"])
    assert "prefect worker start --pool cpu" in services["worker-cpu"]["command"][-1]
    gpu = services["worker-gpu"]
    assert gpu["profiles"] == ["gpu"] and "--pool gpu" in gpu["command"][-1]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert "profiles" not in services["worker-cpu"]


K8S_VERSION = re.search(r"^K8S_VERSION := (\S+)$", MAKEFILE, re.M).group(1)


@pytest.mark.parametrize("manifest", sorted(p.name for p in (DOCKER / "k8s").glob("*.yaml")))
def test_kubernetes_manifests_validate(manifest):
    import kubernetes_validate

    docs = [d for d in yaml.safe_load_all((DOCKER / "k8s" / manifest).read_text()) if d]
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_kubernetes_examples_are_a_gpu_worker_and_a_stage_job_and_bad_ones_fail():
    import kubernetes_validate

    docs = [
        d
        for p in sorted((DOCKER / "k8s").glob("*.yaml"))
        for d in yaml.safe_load_all(p.read_text())
    ]
    kinds = {d["kind"]: d for d in docs if d}
    worker = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["command"][:5] == ["prefect", "worker", "start", "--pool", "gpu"]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    job = kinds["Job"]["spec"]["template"]["spec"]
    assert job["restartPolicy"] == "Never" and job["containers"][0]["command"][0] == "flywheel"
    kinds["Job"]["spec"]["backoffLimit"] = "once"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(kinds["Job"], K8S_VERSION, strict=True)


def test_make_lint_checks_the_same_files():
    lint = MAKEFILE.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "check-jsonschema --builtin-schema vendor.compose-spec docker/compose.yaml" in lint
    assert "kubernetes-validate" in lint and "docker/k8s/*.yaml" in lint
    assert "bash -n docker/slurm/flywheel.sbatch" in lint


def _install_inputs() -> set[str]:
    """What `make install` reads: the Makefile, its stamp's prerequisites, and what
    `pip install -e .` reads (pyproject, its readme, its packages)."""
    prereqs = re.search(r"^\$\(STAMP\):(.*)$", MAKEFILE, re.M).group(1).split()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    return {"Makefile", *prereqs, project["project"]["readme"], *(p.rstrip("*") for p in packages)}


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.gpu"])
def test_images_install_what_the_makefile_installs(dockerfile):
    lines = (DOCKER / dockerfile).read_text().splitlines()
    install = [i for i, line in enumerate(lines) if re.match(r"RUN make install\b", line)]
    assert len(install) == 1, f"{dockerfile}: one `RUN make install` expected"
    copied: set[str] = set()
    for line in lines[: install[0]]:
        if line.startswith("COPY "):
            copied.update(line.split()[1:-1])
    missing = _install_inputs() - copied
    assert not missing, f"{dockerfile} runs make install without {sorted(missing)}"


def test_slurm_job_is_valid_bash_and_its_overrides_a_valid_config_with_one_rank_per_gpu():
    script = DOCKER / "slurm" / "flywheel.sbatch"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    header = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, re.M))
    gpus = int(header["gpus-per-node"])
    command = text.split(".venv/bin/flywheel run ", 1)[1].replace("\\\n", " ")
    config = command.split()[0]
    # The shell's values stand in as a node's would.
    sets = re.findall(r"--set (\S+)", command.replace('"$PWD/runs"', "/shared/runs"))
    sets = [s.replace('"$HEAD_IP:6379"', "10.0.0.1:6379") for s in sets]
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in sets)}
    from tasks.config import load_config

    cfg = load_config(ROOT / config, **overrides)
    assert cfg.engine.backend == "ray" and cfg.engine.ray_address == "10.0.0.1:6379"
    assert cfg.engine.replicas * cfg.engine.tensor_parallel_size == gpus == cfg.train.num_processes
    assert cfg.engine.ray_num_gpus == 1 and cfg.train.launcher == "accelerate"
