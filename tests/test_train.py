"""Training end to end on smoke-sized runs: configs, outputs, resume, bad input, sweeps, W&B."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from smoke_config import FAST, make_cfg

from vaesae.config import ConfigError, validate_config
from vaesae.records import read_metrics_csv
from vaesae.sparsity import k_schedule
from vaesae.train import CONF_DIR, train

# One epoch, evaluated at k = k_end (a one-epoch ramp from 500 would end its last step above it).
ONE_EPOCH = ("schedule=constant", "schedule.schedule_epochs=1", "schedule.hold_epochs=0")


def groups() -> list[tuple[str, str]]:
    return [
        (group.name, option.stem)
        for group in sorted(CONF_DIR.iterdir())
        if group.is_dir()
        for option in sorted(group.glob("*.yaml"))
    ]


@pytest.mark.parametrize("group, option", groups(), ids=lambda v: str(v))
def test_every_option_composes(group, option):
    extra = ["method=l1"] if (group, option) == ("arm", "jumprelu") else []  # an L1-only arm
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"{group}={option}", *extra])
    assert cfg.run_name
    # At the default 10,000 evaluation samples freq1e-4 and freq1e-5 would equal `never`.
    if group == "threshold" and option in ("freq1e-4", "freq1e-5"):
        with pytest.raises(ConfigError, match="needs data.eval_size >= 1000"):
            validate_config(cfg)
    elif group != "trainer":
        validate_config(cfg)


@pytest.mark.parametrize("method", ["topk", "l1"])
@pytest.mark.parametrize("dataset", ["dsprites", "shapes3d"])
def test_smoke_run_writes_its_outputs(tmp_path, method, dataset):
    cfg = make_cfg(f"method={method}", f"dataset={dataset}")
    assert train(cfg, tmp_path)["status"] == "completed"
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    total = cfg.schedule.schedule_epochs + cfg.schedule.hold_epochs
    assert [r["epoch"] for r in rows] == list(range(total))
    # The epoch mean of the per-step k equals the schedule averaged over the epoch's steps.
    steps = cfg.data.epoch_size // cfg.data.batch_size
    for r in rows:
        expected = [
            k_schedule(r["epoch"] + i / steps, "linear", 500, 50, 0, 3) for i in range(steps)
        ]
        assert r["sparsity/k"] == pytest.approx(sum(expected) / steps, rel=1e-6)
    assert rows[-1]["sparsity/k"] == 50
    for r in rows:
        for key in (
            "dead/never",
            "dead/magnitude",
            "dead/window",
            "dead/primary",
            "mig/latent",
            "mig/sae",
            "train/loss",
            "semantics/num_alive",
            "neurons/dense",
            "eval/recon",
            "eval/fvu",
            "sae/fvu",
        ):
            assert 0 <= r[key] < float("inf"), key
        assert 0 <= r["dead/never"] <= 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    levels = summary["recon_levels"]
    assert levels["mean_image"] > levels["floor"] >= 0
    assert (levels["floor"] == 0) == (dataset == "dsprites")  # binary targets: no entropy
    for r in rows:
        gap = levels["mean_image"] - levels["floor"]
        assert r["eval/gap_closed"] == pytest.approx((levels["mean_image"] - r["eval/recon"]) / gap)
        assert r["train/gap_closed"] == pytest.approx(
            (levels["mean_image"] - r["train/recon"]) / gap, rel=1e-5
        )
    assert summary["final"]["eval/gap_closed"] == pytest.approx(rows[-1]["eval/gap_closed"])
    assert summary["status"] == "completed"
    assert (summary["method"], summary["dataset"], summary["seed"]) == (method, dataset, 0)
    assert summary["final"]["dead/primary"] == pytest.approx(rows[-1]["dead/primary"])
    assert summary["train_images_per_s"] > 0
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert (tmp_path / "reconstructions.png").exists()


class _Kill(Exception):
    pass


def test_resume_continues_at_the_right_epoch(tmp_path, monkeypatch):
    reference = tmp_path / "full"
    train(make_cfg(), reference)
    full = read_metrics_csv(reference / "metrics.csv")

    from vaesae.records import RunRecorder

    original = RunRecorder.on_train_epoch_end

    def die_after_two(self, trainer, pl_module):
        original(self, trainer, pl_module)
        if trainer.current_epoch == 1:
            raise _Kill("simulated kill")

    interrupted = tmp_path / "interrupted"
    monkeypatch.setattr(RunRecorder, "on_train_epoch_end", die_after_two)
    with pytest.raises(_Kill):
        train(make_cfg(), interrupted)
    monkeypatch.setattr(RunRecorder, "on_train_epoch_end", original)
    assert json.loads((interrupted / "summary.json").read_text())["status"] == "failed"
    assert len(read_metrics_csv(interrupted / "metrics.csv")) == 2

    start = time.time()
    train(make_cfg("resume=true"), interrupted)
    resumed_process_s = time.time() - start
    resumed = read_metrics_csv(interrupted / "metrics.csv")
    assert [r["epoch"] for r in resumed] == [r["epoch"] for r in full]
    assert [r["sparsity/k"] for r in resumed] == [r["sparsity/k"] for r in full]
    # Same weights, data order and eval set: the resumed run reproduces the uninterrupted one.
    for a, b in zip(resumed, full, strict=True):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-4)
        assert a["dead/never"] == pytest.approx(b["dead/never"], abs=1e-9)
    summary = json.loads((interrupted / "summary.json").read_text())
    assert summary["status"] == "completed"
    # Throughput and wall time cover the whole run, not only the resumed process.
    assert (
        summary["train_samples"]
        == json.loads((reference / "summary.json").read_text())["train_samples"]
        == len(full) * 256
    )
    assert summary["wall_time_s"] > resumed_process_s


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_are_recorded_as_interrupted(tmp_path, monkeypatch, how):
    from vaesae.records import RunRecorder

    original = RunRecorder.on_train_batch_end

    def stop_in_second_epoch(self, trainer, pl_module, outputs, batch, batch_idx):
        original(self, trainer, pl_module, outputs, batch, batch_idx)
        if trainer.current_epoch == 1 and batch_idx == 1:
            if how == "ctrl-c":
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler stops after this batch

    monkeypatch.setattr(RunRecorder, "on_train_batch_end", stop_in_second_epoch)
    with pytest.raises(SystemExit):
        train(make_cfg(), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "interrupted", summary
    assert summary["epochs_completed"] == 1


def test_failure_before_training_still_writes_a_summary(tmp_path, monkeypatch):
    from vaesae import train as train_module

    def broken_trainer(*args, **kwargs):
        raise RuntimeError("no such accelerator")

    monkeypatch.setattr(train_module.pl, "Trainer", broken_trainer)
    with pytest.raises(RuntimeError):
        train(make_cfg(), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == "RuntimeError: no such accelerator"
    assert summary["method"] == "topk" and summary["seed"] == 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["schedule.k_end=600", "schedule.k_start=600"], "k_end=600 must be <= the SAE width=500"),
        (["schedule.k_start=40"], "k_start=40 must be >= k_end=50"),
        (["threshold=freq1e-4"], "needs data.eval_size >= 10001, got 400"),
        (["schedule.schedule_epochs=0"], "schedule_epochs=0 must be > 0"),
        (["data.batch_size=0"], "data.batch_size=0 must be a positive number"),
        (["model.site=middle"], "model.site='middle' is not valid; choose one of: hidden, latent"),
        (["schedule.hold_epochs=-1"], "hold_epochs=-1 must be >= 0"),
        (["data.epoch_size=10"], "data.epoch_size=10 must be null or >= data.batch_size=64"),
        (["metrics.dci_epochs=[last]"], "metrics.dci_epochs entry 'last' is not valid"),
        (["metrics.dci_samples=2"], "metrics.dci_samples=2 must be an integer >= 3"),
        (["model.init=xavier"], "model.init='xavier' is not valid; choose one of: he, torch"),
        (
            ["model._target_=vaesae.models.VAESAE"],
            "model._target_=vaesae.models.VAESAE is not a VAESAEModule (nor a subclass of one)",
        ),
        (["data._target_=no.such.Module"], "data._target_='no.such.Module' is not an importable"),
    ],
)
def test_bad_settings_fail_before_training(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train(make_cfg(*overrides), tmp_path)
    assert not (tmp_path / "metrics.csv").exists()


def run_cli(*args: str, cwd: Path, silent: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    env.pop("WANDB_SILENT", None)
    if silent:
        env["WANDB_SILENT"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "vaesae.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_run_with_offline_wandb_prints_no_library_warnings(tmp_path):
    # what `make demo` shows: W&B's own console output is on, Python warnings at their default
    env_warnings = os.environ.get("PYTHONWARNINGS")
    assert not env_warnings, f"PYTHONWARNINGS={env_warnings} would change what this test sees"
    out = run_cli(*FAST, *ONE_EPOCH, "method=l1", "logger=wandb", cwd=tmp_path, silent=False)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    assert "wandb: Run data is saved locally" in text  # W&B did print to the console
    noisy = [line for line in text.splitlines() if "WARNING" in line or "Warning:" in line]
    assert noisy == []


def test_unknown_group_option_lists_the_valid_ones(tmp_path):
    out = run_cli("method=topq", cwd=tmp_path)
    assert out.returncode != 0
    assert "Available options in 'method'" in out.stderr and "l1" in out.stderr
    out = run_cli(*FAST, "model.width=40", cwd=tmp_path)
    assert out.returncode == 2 and "k_end=50 must be <= the SAE width=40" in out.stderr


def test_multirun_sweep_one_dir_per_job_and_one_wandb_run_each(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli(
        "-m",
        *FAST,
        "logger=wandb",
        "method=topk,l1",
        "seed=0,1",
        *ONE_EPOCH,
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted(p.name for p in sweep.iterdir() if (p / "summary.json").exists())
    assert runs == [
        "l1-baseline-dsprites-s0-never",
        "l1-baseline-dsprites-s1-never",
        "topk-baseline-dsprites-s0-never",
        "topk-baseline-dsprites-s1-never",
    ]
    wandb_runs = [list((sweep / r / "wandb").glob("offline-run-*")) for r in runs]
    assert all(len(w) == 1 for w in wandb_runs)
    ids = {w[0].name.rsplit("-", 1)[-1] for w in wandb_runs}
    assert len(ids) == 4  # no two jobs share a W&B run
    for r in runs:
        assert json.loads((sweep / r / "summary.json").read_text())["status"] == "completed"


def test_multirun_with_a_failed_job_exits_1_and_names_it(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli(
        "-m",
        *FAST,
        *ONE_EPOCH,
        "schedule.k_start=50",
        "model.width=40,64",
        "run_name=w${model.width}",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert out.returncode == 1, out.stderr[-3000:]
    assert "1 job(s) of" in out.stderr
    assert "w40: failed (ConfigError: schedule k_end=50 must be <= the SAE width=40)" in out.stderr
    assert json.loads((sweep / "w64" / "summary.json").read_text())["status"] == "completed"


def test_multirun_skips_an_arm_method_combination_that_does_not_exist(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli(
        "-m", *FAST, *ONE_EPOCH, "arm=auxk", "method=l1", f"hydra.sweep.dir={sweep}", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "skipped l1-auxk-dsprites-s0-never: arm=auxk does not apply to method=l1" in (
        out.stdout + out.stderr
    )
    assert [p.name for p in sweep.iterdir() if p.is_dir()] == []
    single = run_cli(*FAST, *ONE_EPOCH, "arm=auxk", "method=l1", cwd=tmp_path)
    assert single.returncode == 2 and "valid combinations: arm=auxk method=topk" in single.stderr


def test_threshold_sweep_is_refused_and_points_to_the_report(tmp_path):
    out = run_cli("-m", *FAST, "threshold=never,magnitude", cwd=tmp_path)
    assert out.returncode != 0
    assert "would train the same model once per threshold" in out.stderr
    assert "--rule" in out.stderr


def test_resume_skips_a_completed_run_and_starts_a_missing_one(tmp_path):
    done = tmp_path / "done"
    train(make_cfg(*ONE_EPOCH), done)
    before = (done / "metrics.csv").read_text()
    out = train(make_cfg(*ONE_EPOCH, "resume=true"), done)
    assert out["status"] == "completed" and (done / "metrics.csv").read_text() == before
    fresh = tmp_path / "fresh"
    train(make_cfg(*ONE_EPOCH, "resume=true"), fresh)
    assert len(read_metrics_csv(fresh / "metrics.csv")) == 1
