"""evaluate_codes on constructed codes: every per-epoch figure has a known answer."""

import math

import pytest
import torch

from vaesae.evaluation import HIST_NAMES, EvalSettings, evaluate_codes, frequency_rule_name

N, WIDTH = 2000, 8
NAMES = ("a", "b")


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(0)
    factors = torch.stack([torch.randint(0, 4, (N,), generator=g) for _ in NAMES], 1)
    mu = torch.stack([factors[:, 0].float(), factors[:, 1].float()], 1)  # each latent = a factor
    codes = torch.zeros(N, WIDTH)
    codes[:, 0] = factors[:, 0].float()  # fires on 3/4 of samples, copies factor a
    codes[:, 1] = factors[:, 1].float() * 1e-4  # fires, but below the magnitude threshold
    codes[:5, 2] = 1.0  # fires on 5 samples: frequency 2.5e-3
    codes[:1, 3] = 1.0  # fires once: frequency 5e-4
    # units 4..7 never fire
    return mu, codes, factors


def test_dead_rules_histogram_and_dense(inputs):
    mu, codes, factors = inputs
    window = torch.tensor([True, False, False, False, True, True, True, True])
    s = evaluate_codes(mu, codes, factors, NAMES, EvalSettings(frequencies=(1e-3,)), window).scalars
    assert s["dead/never"] == 4 / 8
    assert s["dead/magnitude"] == 5 / 8  # unit 1 peaks at 3e-4 <= 1e-3
    assert s["dead/freq1e-3"] == 5 / 8  # unit 3 fires on 1/2000 < 1e-3 of the samples
    assert s["dead/window"] == 5 / 8
    assert s["dead/primary"] == s["dead/never"] and s["sparsity/dead_features"] == 4
    assert s["neurons/dense"] == 2 / 8  # units 0 and 1 fire on ~3/4 of samples
    assert sum(s[name] for name in HIST_NAMES) == WIDTH
    assert s["firing/hist_never"] == 4 and s["firing/hist_gt1e-1"] == 2
    assert s["firing/hist_1e-3_1e-2"] == 1 and s["firing/hist_1e-4_1e-3"] == 1
    assert math.isnan(s["neurons/revived"])
    expected_l0 = float((codes != 0).sum(1).double().mean())
    assert s["eval/l0"] == pytest.approx(expected_l0)


def test_mig_and_semantics(inputs):
    mu, codes, factors = inputs
    result = evaluate_codes(mu, codes, factors, NAMES, EvalSettings(frequencies=()))
    s = result.scalars
    # Each latent copies one factor; the other latent's empirical MI with it is ~1e-3 of H.
    assert s["mig/latent"] == pytest.approx(1.0, abs=0.01)
    assert s["mig/latent/a"] == pytest.approx(1.0, abs=0.01)
    assert s["mig/sae/a"] == pytest.approx(1.0, abs=0.01)  # unit 0 copies a
    # Unit 1 copies b at 1e-4 scale: dead under the magnitude rule, yet binning is scale-free.
    assert s["mig/sae/b"] == pytest.approx(1.0, abs=0.01)
    assert s["semantics/num_alive"] == 4
    assert s["semantics/num_described"] == 2  # units 2 and 3 fire too rarely to be described
    assert result.normalized_mi[0, 0] == pytest.approx(1.0)
    assert result.alignment[:2].tolist() == pytest.approx([1.0, 1.0])  # quantile bins: scale-free
    assert result.alignment[2:].isnan().all()
    assert torch.all(result.normalized_mi[2:] == 0)  # undescribed units carry no semantics
    assert s["semantics/factors_covered"] == 2


def test_transitions_against_the_reference_mask(inputs):
    mu, codes, factors = inputs
    reference = torch.tensor([False, True, True, False, True, False, False, False])
    s = evaluate_codes(
        mu, codes, factors, NAMES, EvalSettings(frequencies=()), None, reference
    ).scalars
    assert s["neurons/revived"] == 2  # units 1, 2 dead then, alive now
    assert s["neurons/newly_dead"] == 3  # units 5, 6, 7


def test_primary_rule_must_be_available(inputs):
    mu, codes, factors = inputs
    settings = EvalSettings(primary_kind="frequency", primary_value=1e-4, frequencies=(1e-4,))
    with pytest.raises(ValueError, match="freq1e-4"):
        evaluate_codes(mu, codes, factors, NAMES, settings)  # 2000 samples < 1/1e-4


def test_frequency_rule_names():
    assert [frequency_rule_name(v) for v in (1e-3, 1e-4, 1e-5, 5e-2)] == [
        "freq1e-3",
        "freq1e-4",
        "freq1e-5",
        "freq5e-2",
    ]


def test_streamed_firing_statistics_give_the_same_figures(inputs):
    """The callback streams firing statistics over evaluation batches (FiringStats); the result
    equals the one computed from the concatenated codes, and mismatched statistics are refused."""
    from vaesae.metrics import FiringStats

    mu, codes, factors = inputs
    settings = EvalSettings(frequencies=(1e-3,))
    stats = FiringStats(WIDTH)
    for chunk in codes.split(700):
        stats.update(chunk)
    streamed = evaluate_codes(mu, codes, factors, NAMES, settings, firing=stats.compute())
    whole = evaluate_codes(mu, codes, factors, NAMES, settings)
    assert streamed.scalars.keys() == whole.scalars.keys()
    for key, value in whole.scalars.items():
        assert streamed.scalars[key] == pytest.approx(value, nan_ok=True), key
    with pytest.raises(ValueError, match="do not describe codes"):
        evaluate_codes(mu, codes[:100], factors[:100], NAMES, settings, firing=stats.compute())


def test_global_metrics_read_the_alive_units_only(inputs):
    mu, codes, factors = inputs
    s = evaluate_codes(mu, codes, factors, NAMES, EvalSettings(frequencies=())).scalars
    # Each latent copies one factor: perfectly modular, and each factor has one informative code.
    assert s["modularity/latent"] == pytest.approx(1.0, abs=0.01)
    assert s["sap/latent"] == pytest.approx(1.0, abs=0.01)
    # Alive units 0..3: 0 and 1 copy a and b (modular), 2 and 3 fire on a few samples. The four
    # dead units, all-zero codes, would add four zeros to modularity's mean if they were read.
    alive = evaluate_codes(mu, codes[:, :4], factors, NAMES, EvalSettings(frequencies=()))
    assert s["modularity/sae"] == alive.scalars["modularity/sae"]
    assert s["sap/sae"] == alive.scalars["sap/sae"] == pytest.approx(1.0, abs=0.01)
    # DCI only with with_dci: NaN otherwise, so an epoch's row never holds an earlier epoch's.
    dci_names = [k for k in s if k.startswith("dci/")]
    assert len(dci_names) == 3 and all(math.isnan(s[k]) for k in dci_names)


def test_dci_is_computed_on_a_two_to_one_split_of_the_first_samples(inputs):
    from vaesae.metrics import dci

    mu, codes, factors = inputs
    settings = EvalSettings(frequencies=(), dci_samples=300)
    s = evaluate_codes(mu, codes, factors, NAMES, settings, with_dci=True).scalars
    direct = dci(mu[:200].double(), factors[:200], mu[200:300].double(), factors[200:300])
    assert s["dci/disentanglement/latent"] == direct.disentanglement == pytest.approx(1, abs=0.01)
    assert s["dci/completeness/latent"] == direct.completeness
    assert s["dci/informativeness/latent"] == direct.informativeness == 1.0
    assert "dci/disentanglement/sae" not in s  # dci_sae is off by default
