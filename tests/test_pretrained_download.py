"""Pretrained starts given by URL (model.init): rule download_weights fetches them from a real
HTTP server on 127.0.0.1 into checkpoints/, verified against the file name's sha256 prefix or a
pinned sha256, and the baseline trains from the local copy."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch
import yaml

from detrprune.config import ConfigError, validate_config
from detrprune.train.pretrained_files import (
    init_params,
    local_path,
    name_hash_prefix,
    url_problem,
)

from .conftest import REPO, micro_config, planned_jobs, run_snakemake
from .http_server import serve
from .test_full_config import full_config
from .test_pretrained import _resnet_state


def _resnet18_file() -> tuple[bytes, dict[str, torch.Tensor]]:
    """An ImageNet-like ResNet-18 file in torchvision's layout, as bytes, and its tensors."""
    state = _resnet_state(18)
    buffer = io.BytesIO()
    torch.save({**state, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, buffer)
    return buffer.getvalue(), state


def _write_config(workdir: Path, backbone: str | None, pinned: str | None = None) -> None:
    config = micro_config()
    # The recipe's frozen stem: it keeps the downloaded weights through training.
    config["model"].update(frozen_stages=1, norm_eval=True)
    config["model"]["init"].update(backbone=backbone, sha256={"backbone": pinned, "detector": None})
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.mark.parametrize(
    ("name", "prefix"),
    [
        ("resnet50-0676ba61.pth", "0676ba61"),
        (
            "deformable-detr-refine-twostage_r50_16xb2-50e_coco_20221021_184714-acc8a5ff.pth",
            "acc8a5ff",
        ),
        ("resnet50.pth", None),
        ("model-final.pth", None),  # "-final" is no hex
        ("weights-abc.pth", None),  # too short to verify anything
    ],
)
def test_the_sha256_prefix_is_read_from_a_model_zoo_file_name(name, prefix):
    assert name_hash_prefix(name) == prefix


def test_a_url_without_anything_to_verify_it_against_is_refused_in_one_line(tmp_path):
    config = micro_config()
    config["model"].update(frozen_stages=-1, norm_eval=False)
    config["model"]["init"]["backbone"] = "https://example.org/models/resnet18.pth"
    with pytest.raises(ConfigError) as error:
        validate_config(config, source=str(tmp_path / "config.yaml"))
    message = str(error.value)
    assert (
        "model.init.backbone: https://example.org/models/resnet18.pth: nothing to verify" in message
    )
    assert "\n" not in message
    # A pinned sha256 is enough, and so is a prefix in the name.
    assert url_problem("https://example.org/models/resnet18.pth", "a" * 64) is None
    assert url_problem("https://example.org/resnet18-f37072fd.pth", None) is None
    assert "only http and https" in url_problem("ftp://example.org/resnet18-f37072fd.pth", None)
    assert "plain file name" in url_problem("https://example.org/models/", "a" * 64)


def test_the_training_params_are_unchanged_for_both_configs():
    """Nothing an existing study has finished reruns: config.yaml's model.init (no files) and
    the full study's (before: the local path of the file its URL now names) keep their value."""
    default = micro_config()["model"]["init"]
    assert init_params(default) == default
    full = full_config()["model"]["init"]
    assert init_params(full) == {
        "backbone": None,
        "detector": "checkpoints/deformable-detr-refine-twostage_r50_16xb2-50e_coco_20221021_"
        "184714-acc8a5ff.pth",
        "sha256": {"backbone": None, "detector": None},
    }
    assert list(init_params(full)) == list(full)  # the same key order, so the same repr


def test_the_baseline_trains_from_a_downloaded_backbone(tmp_path):
    content, state = _resnet18_file()
    digest = hashlib.sha256(content).hexdigest()
    name = f"resnet18-{digest[:8]}.pth"
    with serve({f"/models/{name}": content}) as server:
        url = server.url(f"/models/{name}")
        _write_config(tmp_path, url)
        plan = run_snakemake(tmp_path, "results/baseline/model.pth", "-n")
        assert plan.returncode == 0, plan.stderr[-3000:]
        assert planned_jobs(plan)["download_weights"] == 1
        run = run_snakemake(tmp_path, "results/baseline/model.pth", "--cores", "2")
        assert run.returncode == 0, run.stderr[-4000:]
        requests = list(server.requests)
    local = tmp_path / "checkpoints" / name
    assert local.read_bytes() == content
    assert requests == [(f"/models/{name}", None)]
    download_log = (tmp_path / "logs" / "download_weights" / f"{name}.log").read_text()
    assert "sha256 prefix ok" in download_log
    train_log = (tmp_path / "logs" / "train_baseline.log").read_text()
    assert f"tensors loaded from checkpoints/{name}" in train_log
    baseline = torch.load(tmp_path / "results" / "baseline" / "model.pth", weights_only=True)
    trained = baseline["state_dict"]
    # The frozen stem still holds the downloaded weights.
    assert torch.equal(trained["backbone.conv1.weight"], state["conv1.weight"])

    # Pinning the sha256 after the download, or naming the local copy instead of the URL,
    # changes no weights: nothing reruns.
    _write_config(tmp_path, url, pinned=digest)
    assert planned_jobs(run_snakemake(tmp_path, "results/baseline/model.pth", "-n")) == {}
    _write_config(tmp_path, str(Path("checkpoints") / name))
    plan = run_snakemake(tmp_path, "results/baseline/model.pth", "-n")
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert planned_jobs(plan) == {}


def test_a_download_that_does_not_match_its_name_fails_and_leaves_no_file(tmp_path):
    content, _ = _resnet18_file()
    name = "resnet18-00000000.pth"
    with serve({f"/{name}": content}) as server:
        _write_config(tmp_path, server.url(f"/{name}"))
        run = run_snakemake(tmp_path, f"checkpoints/{name}", "--cores", "1")
    assert run.returncode != 0
    log = (tmp_path / "logs" / "download_weights" / f"{name}.log").read_text()
    error = log.strip().splitlines()[-1]  # the exception's one line, under its traceback
    assert "sha256 mismatch: expected a digest starting with 00000000" in error, log[-2000:]
    assert error.endswith(f"got {hashlib.sha256(content).hexdigest()}")
    # Neither the file nor its .part is left behind.
    assert not any((tmp_path / "checkpoints").glob("*"))


def test_a_pinned_sha256_overrides_the_name_and_is_checked(tmp_path):
    content, _ = _resnet18_file()
    name = f"resnet18-{hashlib.sha256(content).hexdigest()[:8]}.pth"
    with serve({f"/{name}": content}) as server:
        # The name's prefix matches, the pin does not: the pin decides.
        _write_config(tmp_path, server.url(f"/{name}"), pinned="1" * 64)
        run = run_snakemake(tmp_path, f"checkpoints/{name}", "--cores", "1")
    assert run.returncode != 0
    log = (tmp_path / "logs" / "download_weights" / f"{name}.log").read_text()
    assert f"sha256 mismatch: expected {'1' * 64}" in log
    assert not (tmp_path / "checkpoints" / name).exists()


def test_a_local_path_downloads_nothing(tmp_path):
    content, _ = _resnet18_file()
    path = tmp_path / "weights" / "resnet18.pth"
    path.parent.mkdir()
    path.write_bytes(content)
    _write_config(tmp_path, str(path))
    plan = run_snakemake(tmp_path, "results/baseline/model.pth", "-n")
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = planned_jobs(plan)
    assert "download_weights" not in jobs and jobs["train_baseline"] == 1
    assert local_path(str(path)) == path


def test_checkpoints_are_not_tracked_by_git():
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "/checkpoints/" in ignored
