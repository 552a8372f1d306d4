"""Per-neuron pictures: the computations on constructed codes and models, the pages' grid,
the settings' checks, and a smoke run whose pictures reach the report."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from smoke_config import make_cfg

from vaesae.config import ConfigError, reference_epoch, schedule_of, validate_config
from vaesae.data.factors import DSPRITES
from vaesae.models import VAESAE
from vaesae.pictures import (
    direction_inputs,
    rank_units,
    resolve_epochs,
    response_curves,
    top_activating,
    traversal_images,
    traversal_latents,
)
from vaesae.pictures.callback import PictureSettings, write_pictures
from vaesae.pictures.render import HEADER, LABEL_WIDTH, PAD, SCALE
from vaesae.report import load_sweep, write_report
from vaesae.train import train


def test_top_activating_indices_are_the_argmax_and_the_sorted_top(seeded_one_thread):
    codes = torch.randn(50, 6).relu()
    units = torch.tensor([4, 1])
    idx, values = top_activating(codes, units, 5)
    assert idx.shape == values.shape == (2, 5)
    assert idx[:, 0].tolist() == codes[:, units].argmax(0).tolist()
    for u, unit in enumerate(units.tolist()):
        expected = np.argsort(-codes[:, unit].numpy(), kind="stable")[:5]
        assert idx[u].tolist() == expected.tolist()
        assert torch.equal(values[u], codes[idx[u], unit])


def test_ranking_draws_alive_units_only_best_first():
    frequency = torch.tensor([0.9, 0.0, 0.5, 0.7, 0.5, 0.2], dtype=torch.float64)
    alignment = torch.tensor([0.1, math.nan, 0.8, math.nan, 0.3, 0.9], dtype=torch.float64)
    dead = torch.tensor([True, True, False, False, False, False])
    assert rank_units("frequency", frequency, alignment, dead, 10).tolist() == [3, 2, 4, 5]
    assert rank_units("frequency", frequency, alignment, dead, 2).tolist() == [3, 2]
    # Unit 0 is the best aligned of all but dead; unit 3 alive but not described (NaN).
    assert rank_units("alignment", frequency, alignment, dead, 10).tolist() == [5, 2, 4]
    with pytest.raises(ValueError, match="valid: frequency, alignment"):
        rank_units("size", frequency, alignment, dead, 3)


def test_direction_inputs_are_b_pre_plus_a_times_the_column():
    b_pre = torch.tensor([1.0, -1.0, 0.5])
    w_d = torch.arange(12.0).reshape(3, 4)  # column i = (i, 4 + i, 8 + i)
    amplitudes = torch.tensor([[0.0, 2.0], [1.0, 3.0]])
    x = direction_inputs(b_pre, w_d, torch.tensor([2, 0]), amplitudes)
    assert x.shape == (2, 2, 3)
    assert torch.equal(x[0, 1], b_pre + 2.0 * torch.tensor([2.0, 6.0, 10.0]))
    assert torch.equal(x[1, 0], b_pre + torch.tensor([0.0, 4.0, 8.0]))
    assert torch.equal(x[0, 0], b_pre)  # a = 0: the bias alone


@pytest.mark.parametrize("site", ["latent", "hidden"])
def test_traversal_feeds_the_decoder_the_direction(site, seeded_one_thread):
    model = VAESAE(1, d_z=4, width=6, site=site, hidden_dim=16, center="ema")
    sae = model.sae
    direction = torch.randn(sae.d_in)
    with torch.no_grad():
        sae.decoder.weight[:, 3] = direction
        sae.b_pre.normal_()
        sae.input_mean.copy_(torch.randn(sae.d_in))  # the running centre c, added back
    centre = sae.input_mean.clone()
    amplitudes = torch.tensor([[0.0, 0.5, 2.0]])
    model.train()
    z = traversal_latents(model, torch.tensor([3]), amplitudes)
    raw = sae.b_pre + amplitudes[0, :, None] * direction + centre
    expected = raw if site == "latent" else model.latent_head(raw)[0]
    torch.testing.assert_close(z[0], expected.detach())
    assert model.training and torch.equal(sae.input_mean, centre)  # nothing updated
    images = traversal_images(model, torch.tensor([3]), amplitudes)
    assert images.shape == (1, 3, 1, 64, 64)
    model.eval()
    torch.testing.assert_close(images[0], torch.sigmoid(model.decoder(expected)).detach())


def test_response_curve_of_a_unit_copying_a_factor(seeded_one_thread):
    factors = DSPRITES.sample_factors(3000)
    codes = torch.stack([factors[:, 1].double(), torch.rand(3000, dtype=torch.float64)], 1)
    curves = response_curves(codes, factors, DSPRITES.factor_sizes)
    assert [c.shape for c in curves] == [(2, s) for s in DSPRITES.factor_sizes]
    assert curves[1][0].tolist() == list(range(6))  # the copied factor: its own classes
    assert (curves[1][0].diff() > 0).all()
    for k, size in enumerate(DSPRITES.factor_sizes):  # every cell is the mean over its class
        for v in (0, size - 1):
            torch.testing.assert_close(curves[k][1, v], codes[factors[:, k] == v, 1].mean())
    few = response_curves(codes[:2], factors[:2], DSPRITES.factor_sizes)
    assert torch.isnan(few[2]).any()  # an orientation no sample has


def _constructed(width: int = 20, n: int = 60):
    """Codes whose units 0..9 never fire; unit 10 fires on 2 samples, 11..19 on many."""
    gen = torch.Generator().manual_seed(1)
    codes = torch.rand(n, width, generator=gen)
    codes[:, :10] = 0
    codes[2:, 10] = 0
    factors = DSPRITES.sample_factors(n, gen)
    frequency = (codes > 0).double().mean(0)
    alignment = torch.full((width,), math.nan, dtype=torch.float64)
    alignment[12:15] = torch.tensor([0.3, 0.6, 0.1], dtype=torch.float64)
    return codes, factors, frequency, alignment, frequency == 0


def _marked(index: torch.Tensor) -> torch.Tensor:
    """Constant images whose grey level (odd, so never the page's 128) names the sample."""
    level = (11 + 2 * (index % 100)).to(torch.uint8)
    return level[:, None, None, None].expand(len(index), 1, 64, 64).clone()


def test_picture_files_have_the_grid_shape_and_leave_dead_units_out(tmp_path, seeded_one_thread):
    codes, factors, frequency, alignment, dead = _constructed()
    # Images know their sample through their factors' position in the evaluation set.
    lookup = {tuple(f.tolist()): i for i, f in enumerate(factors)}

    def images_of(f: torch.Tensor) -> torch.Tensor:
        return _marked(torch.tensor([lookup[tuple(r.tolist())] for r in f]))

    model = VAESAE(1, d_z=4, width=20, hidden_dim=16)
    # 8 columns: a page as wide as its caption, so its size is the grid's.
    settings = PictureSettings(epochs=(5,), num_units=12, images_per_unit=8, traversal_steps=8)
    record = write_pictures(
        tmp_path, 5, model, codes, factors, images_of, frequency, alignment, dead, "never",
        DSPRITES, settings,
    )  # fmt: skip
    assert (record["dead"], record["alive"], record["described"]) == (10, 10, 3)
    drawn = record["views"]["frequency"]["units"]
    assert len(drawn) == 10 and not dead[drawn].any()  # 12 asked, only the 10 alive drawn
    assert record["views"]["alignment"]["units"] == [13, 12, 14]

    def size(rows: int, cols: int) -> tuple[int, int]:
        grid_w, grid_h = (SCALE * (m * (64 + PAD) + PAD) for m in (cols, rows))
        return LABEL_WIDTH + grid_w, HEADER + grid_h

    for view, rows in (("frequency", 10), ("alignment", 3)):
        for kind in ("top", "traversal"):
            path = tmp_path / f"epoch_005_{view}_{kind}.png"
            page = np.asarray(Image.open(path).convert("RGB"))
            assert (page.shape[1], page.shape[0]) == size(rows, 8), (view, kind)
            assert page.std() > 0
        response = tmp_path / f"epoch_005_{view}_response.png"
        assert response.stat().st_size > 0 and np.asarray(Image.open(response)).std() > 0
    # Cell (row u, column j) of the top page shows the j-th most active sample of unit u.
    page = np.asarray(Image.open(tmp_path / "epoch_005_frequency_top.png").convert("L"))
    idx, values = top_activating(codes, torch.tensor(drawn), 8)
    for u in range(10):
        for j in range(8):
            y = HEADER + SCALE * (PAD + u * (64 + PAD) + 32)
            x = LABEL_WIDTH + SCALE * (PAD + j * (64 + PAD) + 32)
            want = 11 + 2 * (int(idx[u, j]) % 100) if values[u, j] > 0 else 128
            assert page[y, x] == want, (u, j)
    assert drawn.index(10) == 9 and (values[9] > 0).tolist() == [True] * 2 + [False] * 6


def test_picture_settings_are_checked():
    validate_config(make_cfg())
    validate_config(make_cfg("pictures.epochs=[]", "pictures.views=[alignment]"))
    bad = {
        "pictures.epochs=[first,last]": "choose one of: first, reference, final, or an epoch",
        "pictures.epochs=[7]": r"an epoch number 0\.\.3",
        "pictures.views=[size]": "choose one of: frequency, alignment",
        "pictures.num_units=0": "pictures.num_units=0 must be an integer >= 1",
        "pictures.images_per_unit=500": "must be <= data.eval_size=400",
        "pictures.traversal_steps=1": "pictures.traversal_steps=1 must be an integer >= 2",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            validate_config(make_cfg(override))
    assert resolve_epochs(["final", "first", 2, "reference"], 5, 9) == (0, 2, 5, 8)


def test_smoke_run_writes_pictures_at_the_chosen_epochs_and_the_report_shows_them(tmp_path):
    cfg = make_cfg(
        "schedule.hold_epochs=2",
        "pictures.num_units=4",
        "pictures.epochs=[first,reference,final]",  # the default; smoke runs draw none
    )
    run = tmp_path / "sweep" / "run"
    assert train(cfg, run)["status"] == "completed"
    ref, total = reference_epoch(cfg), schedule_of(cfg).total_epochs
    chosen = {0, ref, total - 1}
    assert len(chosen) == 3  # first, k_end and final are three different epochs here
    pngs = sorted(p.name for p in (run / "neurons").glob("epoch_*_*.png"))
    assert {int(n.split("_")[1]) for n in pngs} == chosen
    for epoch in chosen:
        for view in ("frequency", "alignment"):
            for kind in ("top", "traversal", "response"):
                assert (run / "neurons" / f"epoch_{epoch:03d}_{view}_{kind}.png").stat().st_size
        info = json.loads((run / "neurons" / f"epoch_{epoch:03d}_pictures.json").read_text())
        assert info["dead"] + info["alive"] == cfg.model.width
        assert len(info["views"]["frequency"]["units"]) == min(4, info["alive"])
    out = tmp_path / "report"
    text = write_report(load_sweep(tmp_path / "sweep"), out).read_text()
    body = text.split("## What surviving units respond to", 1)[1].split("\n## ", 1)[0]
    assert f"### dsprites / topk: seed 0, epoch {ref}" in body
    for kind in ("top", "traversal", "response"):
        link = f"figures/neurons/dsprites_topk/epoch_{ref:03d}_frequency_{kind}.png"
        assert f"({link})" in body and (out / link).stat().st_size > 0


def test_report_lists_runs_without_pictures_in_one_line(tmp_path):
    from report_fixtures import write_run

    from vaesae.report.neurons import neuron_section

    for dataset in ("dsprites", "shapes3d"):
        write_run(tmp_path / "sweep", dataset, "topk", 0, 0.4)
    text = neuron_section(load_sweep(tmp_path / "sweep").conditions(), tmp_path / "report")
    assert text.count("No pictures") == 1 and "###" not in text
    assert "dsprites / topk (seed 0, epoch 2)" in text
    assert "shapes3d / topk (seed 0, epoch 2)" in text
