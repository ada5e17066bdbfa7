"""docker/Dockerfile*: hadolint clean, one image per file, and each image holding only its part.

These checks read the files (hadolint parses them for real) and check them against the
project's own settings; tests/deploy/test_stack.py builds the CPU images with a real engine.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.helpers import (
    ROOT,
    Dockerfile,
    Stage,
    env_assignments,
    read_dockerfile,
    service_env_names,
    venv_tool,
)

DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile*"))
CPU = ROOT / "docker" / "Dockerfile"
GPU = ROOT / "docker" / "Dockerfile.gpu"
MONITOR = ROOT / "docker" / "Dockerfile.monitor"
TRAINER = ROOT / "docker" / "Dockerfile.trainer"
#: The images that run `probserve serve`.
SERVICE = [CPU, GPU]


def test_every_dockerfile_exists() -> None:
    assert [p.name for p in DOCKERFILES] == [
        "Dockerfile",
        "Dockerfile.gpu",
        "Dockerfile.monitor",
        "Dockerfile.trainer",
    ]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_one_image_per_file_so_the_classic_builder_builds_nothing_else(path: Path) -> None:
    # The classic builder (a Docker without buildx) builds every stage of a file before the
    # target: a stage the final image does not copy from would be built for nothing (the torch
    # stages once made the service image need PyTorch's index).
    dockerfile = read_dockerfile(path)
    final = _final(dockerfile)
    used = {final.name}
    for stage in reversed(dockerfile.stages):
        if stage.name in used:
            for copy in stage.all("COPY"):
                match = re.search(r"--from=(\S+)", copy.value)
                if match:
                    used.add(match.group(1))
            used.add(dockerfile.resolve(stage.base))
    unused = [s.name for s in dockerfile.stages if s.name not in used]
    assert not unused, f"{path.name}: stages no image copies from: {unused}"
    # A `# syntax=` line makes BuildKit pull a frontend image from a registry.
    assert not path.read_text().startswith("# syntax="), path.name


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(path: Path) -> None:
    result = subprocess.run(
        [venv_tool("hadolint"), "--no-color", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_ignored_hadolint_rule_is_justified(path: Path) -> None:
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"#\s*hadolint ignore=([\w,]+)", line.strip())
        if not match:
            continue
        above = lines[number - 1].strip() if number else ""
        for rule in match.group(1).split(","):
            assert above.startswith("#") and rule in above, (
                f"{path.name}:{number + 1}: ignoring {rule} needs a comment above saying why"
            )


def _final(dockerfile: Dockerfile) -> Stage:
    # The default build target is the last stage.
    return dockerfile.stages[-1]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_bases_are_pinned_to_exact_tags(path: Path) -> None:
    dockerfile = read_dockerfile(path)
    stage_names = {s.name for s in dockerfile.stages}
    for stage in dockerfile.stages:
        base = dockerfile.resolve(stage.base)
        if base in stage_names:
            continue
        tag = base.rpartition(":")[2]
        assert tag and tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), (
            f"{path.name}: base {base!r} is not pinned to an exact version"
        )


@pytest.mark.parametrize("path", SERVICE, ids=lambda p: p.name)
def test_final_image_runs_the_service_as_non_root(path: Path) -> None:
    final = _final(read_dockerfile(path))
    assert final.name == "runtime"
    (user,) = final.all("USER")
    assert user.value.split(":")[0] not in {"0", "root"}
    (entrypoint,) = final.all("ENTRYPOINT")
    assert entrypoint.value == '["probserve", "serve"]'
    assert [v.value for v in final.all("VOLUME")] == ['["/models"]']
    # HTTP and gRPC, the settings' default ports.
    assert [e.value for e in final.all("EXPOSE")] == ["8000 8001"]
    (healthcheck,) = final.all("HEALTHCHECK")
    assert "/healthz" in healthcheck.value and '"python"' in healthcheck.value
    # The healthcheck asks the port the service listens on (the setting's default, 8000).
    assert "PROBSERVE_PORT" in healthcheck.value and "'8000'" in healthcheck.value


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_final_image_has_no_compilers_or_package_installs(path: Path) -> None:
    final = _final(read_dockerfile(path))
    for run in final.all("RUN"):
        assert not re.search(r"apt-get|apk |pip install|uv pip|gcc|build-essential", run.value), (
            f"{path.name}: the final stage installs something: {run.value}"
        )
    copies = [c.value for c in final.all("COPY")]
    assert any(c.startswith("--from=builder /opt/venv") for c in copies)


@pytest.mark.parametrize("path", SERVICE, ids=lambda p: p.name)
def test_image_environment_is_real_service_settings(path: Path) -> None:
    final = _final(read_dockerfile(path))
    env = env_assignments(final)
    probserve = {k for k in env if k.startswith("PROBSERVE_")}
    assert probserve <= service_env_names(), probserve - service_env_names()
    assert env["PROBSERVE_HOST"] == "0.0.0.0"
    assert env["PROBSERVE_MODEL_REPOSITORY"] == "/models"


def test_service_images_install_only_the_serving_extras() -> None:
    for path, extras in [(CPU, "'.[cpu]'"), (GPU, "'.[gpu]'")]:
        runs = " ".join(r.value for s in read_dockerfile(path).stages for r in s.all("RUN"))
        installs = " ".join(re.findall(r"pip install[^&;]*", runs))
        assert extras in installs, f"{path.name} does not install {extras}"
        for heavy in ["train", "torch", "drift", "data"]:
            assert heavy not in installs, f"{path.name} installs {heavy}"


def test_monitor_image_runs_drift_and_has_no_model_runtime() -> None:
    dockerfile = read_dockerfile(MONITOR)
    runs = " ".join(r.value for r in dockerfile.stage("builder").all("RUN"))
    assert "'.[data,drift]'" in runs
    assert "cpu" not in runs and "torch" not in runs
    final = _final(dockerfile)
    (user,) = final.all("USER")
    assert user.value.split(":")[0] not in {"0", "root"}
    (entrypoint,) = final.all("ENTRYPOINT")
    assert entrypoint.value == '["probserve", "drift"]'
    env = env_assignments(final)
    assert env["DO_NOT_TRACK"] == "1"
    (healthcheck,) = final.all("HEALTHCHECK")
    # `drift serve --port` reads PROBSERVE_PORT; 9108 is the port the compose file gives it.
    assert "PROBSERVE_PORT" in healthcheck.value and "'9108'" in healthcheck.value


def test_trainer_installs_cpu_torch_from_its_index_or_handed_in_wheels() -> None:
    dockerfile = read_dockerfile(TRAINER)
    builder = dockerfile.stage("builder")
    runs = " ".join(r.value for r in builder.all("RUN"))
    (arg,) = [a.value for a in builder.all("ARG") if a.value.startswith("TORCH_INDEX_URL")]
    assert arg == "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu"
    assert '--index-url "$TORCH_INDEX_URL" torch==' in runs
    assert "--no-index --find-links /wheels torch==" in runs
    assert "'.[cpu,data,train]'" in runs
    trainer = _final(dockerfile)
    (user,) = trainer.all("USER")
    assert user.value == _final(read_dockerfile(CPU)).all("USER")[0].value  # owner of /models
    (entrypoint,) = trainer.all("ENTRYPOINT")
    assert "train-if-empty" in entrypoint.value
    script = (ROOT / "docker" / "train-if-empty.sh").read_text()
    assert "exec probserve train" in script


def test_torch_pin_in_the_trainer_matches_pyproject() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    (pin,) = re.findall(r'"torch==([\w.]+)"', pyproject)
    assert f"torch=={pin}" in TRAINER.read_text()


def test_gpu_image_states_its_cuda_pairing_and_uses_onnxruntime_gpu_pin() -> None:
    text = GPU.read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    (pin,) = re.findall(r'"onnxruntime-gpu==([\w.]+)"', pyproject)
    assert f"onnxruntime-gpu {pin}" in text
    base = read_dockerfile(GPU).resolve("${CUDA_IMAGE}")
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base), base
    assert "CUDA 12" in text and "cuDNN 9" in text


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_copied_sources_exist(path: Path) -> None:
    for stage in read_dockerfile(path).stages:
        for copy in stage.all("COPY"):
            words = copy.value.split()
            if any(w.startswith("--from") for w in words):
                continue
            for source in words[:-1]:
                assert (ROOT / source).exists(), f"{path.name}: COPY {source}: no such path"


def test_dockerignore_keeps_state_and_environments_out() -> None:
    entries = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in [".git", ".venv", "models", "**/__pycache__", ".pytest_cache", "drift", "*.log"]:
        assert needed in entries
    assert "predictions" in entries  # the default Parquet log
    # What the images COPY must not be ignored.
    for source in ["service", "training", "monitoring", "pyproject.toml", "README.md", "docker"]:
        assert source not in entries
