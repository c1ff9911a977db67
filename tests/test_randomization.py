"""Tests of model parameter randomization (docs/criteria.md).

- saliency_trust.models.randomize: block lists, cascading / independent steps, seeding, inits;
- saliency_trust.metrics.randomization: SSIM to the trained map, random pairs, degradation threshold;
- saliency_trust.stats.randomization: one-sided t-tests against the threshold;
- saliency_trust.storage.maps: the randomized-map cache (S x N x H x W).

References are independent: scikit-image SSIM loops, scipy's t-test and a hand-computed t statistic,
parameter-by-parameter comparisons of the models' tensors.
"""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from skimage.metrics import structural_similarity
from torch import nn

from saliency_trust.io import stable_seed
from saliency_trust.metrics.randomization import (
    RANDOMIZATION_COLUMNS,
    THRESHOLD_COLUMNS,
    degradation_threshold,
    random_pairs,
    randomization_ssim,
    run_randomization_scores,
    run_threshold,
    threshold_table,
)
from saliency_trust.models.randomize import (
    RANDOMIZATION_BLOCKS,
    TRUNCATED_NORMAL_SD,
    blocks_of_step,
    randomization_blocks,
    randomized_model,
)
from saliency_trust.models.registry import build_model
from saliency_trust.stats.randomization import TEST_COLUMNS, degradation_test, randomization_tests
from saliency_trust.storage.maps import (
    MapStore,
    compute_randomized_maps,
    randomized_store_target,
    read_randomized_maps,
    write_maps,
)

TOL = 1e-5


def _sk(a, b, data_range=1.0) -> float:
    return float(structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64), data_range=data_range))


def _smooth_maps(rng: np.random.Generator, n: int, h: int = 16, w: int = 16) -> np.ndarray:
    """N smooth maps in [0, 1] (one Gaussian blob each plus a little noise)."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for _ in range(n):
        cy, cx, sd = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, 5)
        m = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sd**2)) + 0.05 * rng.random((h, w))
        out.append((m - m.min()) / (m.max() - m.min()))
    return np.stack(out).astype(np.float32)


# =============================================================== models.randomize

# (arch, input_size for build_model): the ImageNet networks built small so the tests stay fast
ARCHS = [("simple_cnn", None), ("tiny_resnet", None), ("densenet121", 32), ("inception_v3", 80)]
SMALL = ["simple_cnn", "tiny_resnet"]


def _as_if_trained(model: nn.Module, seed: int = 0) -> nn.Module:
    """Move every parameter and BatchNorm statistic away from its initial value, as training would.

    Without this a freshly built model's BatchNorm weights (1) and biases (0) would equal their
    re-initialized values and "changed" could not be observed.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 + 0.1 * torch.randn(p.shape, generator=g))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) + 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 1.5)
                m.num_batches_tracked.fill_(7)
    return model.eval()


_MODELS: dict[str, nn.Module] = {}


def _model(arch: str) -> nn.Module:
    """One 'trained' model per architecture for the whole module (building the big ones takes a moment)."""
    if arch not in _MODELS:
        torch.manual_seed(123)
        _MODELS[arch] = _as_if_trained(build_model(arch, 1, input_size=dict(ARCHS)[arch]))
    return _MODELS[arch]


def _block_param_names(model: nn.Module, arch: str) -> dict[str, list[str]]:
    """Block name -> full parameter names (independently of the module under test: via named_parameters)."""
    out = {}
    for name, paths in RANDOMIZATION_BLOCKS[arch]:
        out[name] = [f"{path}.{n}" for path in paths for n, _ in model.get_submodule(path).named_parameters()]
    return out


def _block_state_names(model: nn.Module, arch: str) -> dict[str, list[str]]:
    """Block name -> full state-dict names (parameters and buffers)."""
    return {
        name: [f"{path}.{n}" for path in paths for n in model.get_submodule(path).state_dict()]
        for name, paths in RANDOMIZATION_BLOCKS[arch]
    }


def _changed(a: nn.Module, b: nn.Module) -> set[str]:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return {k for k in sa if not torch.equal(sa[k], sb[k])}


def _steps_to_check(arch: str) -> list[int]:
    n = len(randomization_blocks(arch))
    return list(range(1, n + 1)) if arch in SMALL else sorted({1, 2, n // 2, n})


@pytest.mark.parametrize("arch,input_size", ARCHS)
def test_blocks_cover_every_parameter_exactly_once(arch, input_size):
    model = _model(arch)
    per_block = _block_param_names(model, arch)
    listed = [n for names in per_block.values() for n in names]
    all_params = [n for n, _ in model.named_parameters()]
    assert len(listed) == len(set(listed)), "a parameter belongs to two blocks"
    assert set(listed) == set(all_params)
    assert len(listed) == len(all_params)
    assert all(per_block.values()), "a block without parameters"
    # every BatchNorm's running statistics are in a block too
    bn_buffers = {
        f"{m}.{b}"
        for m, mod in model.named_modules()
        if isinstance(mod, nn.modules.batchnorm._BatchNorm)
        for b in ("running_mean", "running_var")
    }
    state_listed = {n for names in _block_state_names(model, arch).values() for n in names}
    assert bn_buffers <= state_listed


def test_block_lists_output_first():
    assert randomization_blocks("simple_cnn") == [
        "fc",
        "features.block4",
        "features.block3",
        "features.block2",
        "features.block1",
    ]
    assert randomization_blocks("tiny_resnet") == ["fc", "layer4", "layer3", "layer2", "layer1", "stem"]
    assert randomization_blocks("densenet121")[0] == "classifier"
    assert randomization_blocks("densenet121")[-1] == "stem"
    assert randomization_blocks("inception_v3")[0] == "fc"
    assert randomization_blocks("inception_v3")[-1] == "Conv2d_1a_3x3"


def test_blocks_of_step():
    assert blocks_of_step("simple_cnn", "cascading", 1) == ["fc"]
    assert blocks_of_step("simple_cnn", "cascading", 3) == ["fc", "features.block4", "features.block3"]
    assert blocks_of_step("simple_cnn", "cascading", 5) == randomization_blocks("simple_cnn")
    assert blocks_of_step("simple_cnn", "independent", 1) == ["fc"]
    assert blocks_of_step("simple_cnn", "independent", 3) == ["features.block3"]
    assert blocks_of_step("tiny_resnet", "independent", 6) == ["stem"]


@pytest.mark.parametrize("arch,input_size", ARCHS)
def test_cascading_step_changes_exactly_the_first_k_blocks(arch, input_size):
    model = _model(arch)
    names = _block_state_names(model, arch)
    order = randomization_blocks(arch)
    for k in _steps_to_check(arch):
        blocks = blocks_of_step(arch, "cascading", k)
        assert blocks == order[:k]
        out = randomized_model(model, arch, blocks, seed=5)
        expected = {n for b in order[:k] for n in names[b]}
        changed = _changed(model, out)
        # every parameter and buffer of a re-initialized block differs; nothing else moves by a single bit
        assert changed == expected, (k, sorted(changed ^ expected)[:5])


@pytest.mark.parametrize("arch,input_size", ARCHS)
def test_independent_step_changes_only_that_block(arch, input_size):
    model = _model(arch)
    names = _block_state_names(model, arch)
    order = randomization_blocks(arch)
    for k in _steps_to_check(arch):
        blocks = blocks_of_step(arch, "independent", k)
        assert blocks == [order[k - 1]]
        out = randomized_model(model, arch, blocks, seed=5)
        assert _changed(model, out) == set(names[order[k - 1]])


@pytest.mark.parametrize("arch", ["tiny_resnet", "densenet121"])
@pytest.mark.parametrize("init", ["default", "truncated_normal"])
def test_batchnorm_reset_in_reinitialized_blocks(arch, init):
    model = _model(arch)
    order = randomization_blocks(arch)
    out = randomized_model(model, arch, order, seed=1, init=init)
    n_bn = 0
    for m in out.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n_bn += 1
            assert torch.equal(m.running_mean, torch.zeros_like(m.running_mean))
            assert torch.equal(m.running_var, torch.ones_like(m.running_var))
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
            assert int(m.num_batches_tracked) == 0
    assert n_bn > 0


@pytest.mark.parametrize("arch", SMALL)
def test_original_model_untouched(arch):
    model = _model(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        out = randomized_model(model, arch, randomization_blocks(arch), seed=2)
        assert out is not model
        assert model.training  # its mode is not changed either
        assert not out.training  # the copy is returned in eval mode
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
        # no storage is shared between the copy and the original
        ptrs = {p.data_ptr() for p in model.parameters()}
        assert not ptrs & {p.data_ptr() for p in out.parameters()}
    finally:
        model.eval()


def test_global_rng_state_untouched():
    model = _model("simple_cnn")
    torch.manual_seed(99)
    expected = torch.rand(5)
    torch.manual_seed(99)
    randomized_model(model, "simple_cnn", randomization_blocks("simple_cnn"), seed=3)
    assert torch.equal(torch.rand(5), expected)


@pytest.mark.parametrize("arch", SMALL)
@pytest.mark.parametrize("init", ["default", "truncated_normal"])
def test_same_seed_same_weights_different_seed_different(arch, init):
    model = _model(arch)
    blocks = randomization_blocks(arch)
    a = randomized_model(model, arch, blocks, seed=7, init=init)
    torch.manual_seed(12345)  # the global RNG state must not matter
    b = randomized_model(model, arch, blocks, seed=7, init=init)
    c = randomized_model(model, arch, blocks, seed=8, init=init)
    assert not _changed(a, b)
    weights = {n for n, p in model.named_parameters() if p.ndim > 1}  # conv / linear weights
    assert weights <= _changed(a, c)


@pytest.mark.parametrize("arch", SMALL + ["densenet121"])
def test_block_gets_same_weights_cascading_or_independent(arch):
    model = _model(arch)
    order = randomization_blocks(arch)
    names = _block_state_names(model, arch)
    full = randomized_model(model, arch, blocks_of_step(arch, "cascading", len(order)), seed=4).state_dict()
    half = randomized_model(model, arch, blocks_of_step(arch, "cascading", len(order) // 2), seed=4).state_dict()
    for k in range(1, len(order) + 1):
        if arch == "densenet121" and k not in (1, len(order)):
            continue
        single = randomized_model(model, arch, blocks_of_step(arch, "independent", k), seed=4).state_dict()
        for n in names[order[k - 1]]:
            assert torch.equal(single[n], full[n]), n
            if k <= len(order) // 2:
                assert torch.equal(single[n], half[n]), n


def test_cascade_order_does_not_matter_for_block_weights():
    model = _model("tiny_resnet")
    order = randomization_blocks("tiny_resnet")
    a = randomized_model(model, "tiny_resnet", order, seed=6)
    b = randomized_model(model, "tiny_resnet", order[::-1], seed=6)
    assert not _changed(a, b)


@pytest.mark.parametrize("arch", SMALL + ["densenet121"])
def test_truncated_normal_init(arch):
    model = _model(arch)
    out = randomized_model(model, arch, randomization_blocks(arch), seed=9, init="truncated_normal")
    bound = 2 * TRUNCATED_NORMAL_SD
    weights = []
    for m in out.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert m.weight.abs().max().item() <= bound + 1e-12
            weights.append(m.weight.detach().reshape(-1))
            if m.bias is not None:
                assert torch.equal(m.bias, torch.zeros_like(m.bias))
    w = torch.cat(weights).double()
    # sd of a normal(0, 0.01) truncated at +-2 sd, from scipy (independent of torch)
    expected_sd = TRUNCATED_NORMAL_SD * stats.truncnorm(-2, 2).std()
    assert w.mean().item() == pytest.approx(0.0, abs=5e-4)
    assert w.std().item() == pytest.approx(expected_sd, rel=0.05)


def test_truncated_normal_all_weights_inside_bound_on_inception():
    model = _model("inception_v3")
    out = randomized_model(model, "inception_v3", ["fc", "Mixed_7c", "Conv2d_1a_3x3"], seed=9, init="truncated_normal")
    for path in ("net.fc", "net.Mixed_7c", "net.Conv2d_1a_3x3"):
        for m in out.get_submodule(path).modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                assert m.weight.abs().max().item() <= 2 * TRUNCATED_NORMAL_SD + 1e-12
                assert m.bias is None or not m.bias.any()


def test_default_init_is_pytorch_default_kaiming_uniform():
    """PyTorch's default Conv2d / Linear weights lie in +-1/sqrt(fan_in) (kaiming_uniform, a=sqrt(5))."""
    model = _model("simple_cnn")
    out = randomized_model(model, "simple_cnn", randomization_blocks("simple_cnn"), seed=10)
    for m in out.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in = m.weight[0].numel()
            bound = 1 / math.sqrt(fan_in)
            assert m.weight.abs().max().item() <= bound + 1e-7
            assert m.weight.abs().max().item() > 0.5 * bound  # spread over the range, not tiny


def test_randomized_model_still_runs():
    model = _model("tiny_resnet")
    out = randomized_model(model, "tiny_resnet", randomization_blocks("tiny_resnet"), seed=0)
    y = out(torch.rand(2, 1, 32, 32))
    assert y.shape == (2, 1) and torch.isfinite(y).all()


def test_unknown_mode_step_init_block_arch_raise():
    with pytest.raises(ValueError, match="mode"):
        blocks_of_step("simple_cnn", "random", 1)
    for step in (0, 6, -1):
        with pytest.raises(ValueError, match="step"):
            blocks_of_step("simple_cnn", "cascading", step)
    with pytest.raises(ValueError, match="step"):
        blocks_of_step("simple_cnn", "independent", 6)
    model = _model("simple_cnn")
    with pytest.raises(ValueError, match="init"):
        randomized_model(model, "simple_cnn", ["fc"], seed=0, init="xavier")
    with pytest.raises(KeyError, match="layer9"):
        randomized_model(model, "simple_cnn", ["layer9"], seed=0)
    with pytest.raises(KeyError, match="no_such_arch"):
        randomization_blocks("no_such_arch")
    with pytest.raises(KeyError, match="no_such_arch"):
        blocks_of_step("no_such_arch", "cascading", 1)


# =============================================================== metrics.randomization


def test_randomization_ssim_table_equals_skimage_per_step_and_image():
    rng = np.random.default_rng(0)
    ids = ["b", "a", "c", "d"]
    steps = ["fc", "features.block4", "features.block3"]
    trained_maps = _smooth_maps(rng, len(ids))
    trained = dict(zip(ids, trained_maps))
    # step maps drift away from the trained maps step by step
    step_maps = np.stack(
        [
            np.clip(trained_maps + (k + 1) * 0.15 * rng.standard_normal(trained_maps.shape), 0, 1)
            for k in range(len(steps))
        ]
    ).astype(np.float32)
    table = randomization_ssim(trained, ids, steps, step_maps, "simple_cnn", "gradcam", "cascading")
    assert list(table.columns) == RANDOMIZATION_COLUMNS
    assert len(table) == len(steps) * len(ids)
    assert (table["metric"] == "ssim").all()
    assert (table["model"] == "simple_cnn").all() and (table["method"] == "gradcam").all()
    assert (table["mode"] == "cascading").all()
    for k, block in enumerate(steps):
        rows = table[table["step"] == k + 1]
        assert (rows["block"] == block).all()
        assert list(rows["image_id"]) == ids
        for j, image_id in enumerate(ids):
            v = rows.loc[rows["image_id"] == image_id, "value"].item()
            assert v == pytest.approx(_sk(step_maps[k, j], trained[image_id]), abs=TOL)


def test_randomization_ssim_trained_dict_may_hold_more_images():
    rng = np.random.default_rng(1)
    trained = dict(zip(["x", "y", "z"], _smooth_maps(rng, 3)))
    step_maps = _smooth_maps(rng, 2)[None]
    table = randomization_ssim(trained, ["z", "x"], ["fc"], step_maps, "m", "ig", "independent")
    assert list(table["image_id"]) == ["z", "x"]
    assert table["value"].tolist() == pytest.approx(
        [_sk(step_maps[0, 0], trained["z"]), _sk(step_maps[0, 1], trained["x"])], abs=TOL
    )


def test_randomization_ssim_missing_trained_image_raises_naming_it():
    rng = np.random.default_rng(2)
    trained = dict(zip(["a", "b"], _smooth_maps(rng, 2)))
    with pytest.raises(KeyError, match="'c'"):
        randomization_ssim(trained, ["a", "c"], ["fc"], _smooth_maps(rng, 2)[None], "m", "gradcam", "cascading")


def test_randomization_ssim_step_map_shape_mismatch_raises():
    rng = np.random.default_rng(3)
    trained = dict(zip(["a", "b"], _smooth_maps(rng, 2)))
    with pytest.raises(ValueError):
        randomization_ssim(trained, ["a", "b"], ["fc", "block4"], _smooth_maps(rng, 2)[None], "m", "g", "cascading")


def test_random_pairs_never_pair_an_image_with_itself():
    for n in (2, 3, 10):
        pairs = random_pairs(n, 5000, seed=n)
        assert pairs.shape == (5000, 2)
        assert (pairs[:, 0] != pairs[:, 1]).all()
        assert pairs.min() >= 0 and pairs.max() < n


def test_random_pairs_two_images():
    pairs = random_pairs(2, 200, seed=0)
    assert {tuple(p) for p in pairs} == {(0, 1), (1, 0)}


def test_random_pairs_uniform_coverage():
    n, n_pairs = 5, 40000
    pairs = random_pairs(n, n_pairs, seed=11)
    counts = np.zeros((n, n))
    np.add.at(counts, (pairs[:, 0], pairs[:, 1]), 1)
    off = counts[~np.eye(n, dtype=bool)]
    expected = n_pairs / (n * (n - 1))  # 2000 per ordered pair
    # chi-square goodness of fit against uniform over the 20 ordered pairs
    chi2 = ((off - expected) ** 2 / expected).sum()
    assert stats.chi2.sf(chi2, df=off.size - 1) > 1e-4
    assert np.abs(off / expected - 1).max() < 0.1
    # each image appears about equally often overall
    per_image = np.bincount(pairs.ravel(), minlength=n)
    assert np.abs(per_image / (2 * n_pairs / n) - 1).max() < 0.05


def test_random_pairs_deterministic_per_seed():
    np.testing.assert_array_equal(random_pairs(50, 300, 4), random_pairs(50, 300, 4))
    assert not np.array_equal(random_pairs(50, 300, 4), random_pairs(50, 300, 5))


@pytest.mark.parametrize("n", [0, 1])
def test_random_pairs_needs_two_images(n):
    with pytest.raises(ValueError, match="at least 2 images"):
        random_pairs(n, 10, 0)


def test_degradation_threshold_equals_skimage_loop_over_pairs():
    rng = np.random.default_rng(5)
    maps = _smooth_maps(rng, 12)
    mean, sd = degradation_threshold(maps, n_pairs=40, seed=17)
    pairs = random_pairs(12, 40, 17)
    ref = np.array([_sk(maps[i], maps[j]) for i, j in pairs])
    assert mean == pytest.approx(ref.mean(), abs=TOL)
    assert sd == pytest.approx(ref.std(ddof=1), abs=TOL)
    assert sd > 0


def test_degradation_threshold_single_pair_has_zero_sd():
    maps = _smooth_maps(np.random.default_rng(6), 3)
    mean, sd = degradation_threshold(maps, n_pairs=1, seed=0)
    i, j = random_pairs(3, 1, 0)[0]
    assert mean == pytest.approx(_sk(maps[i], maps[j]), abs=TOL)
    assert sd == 0.0


def test_threshold_table_one_row_per_model_method():
    rng = np.random.default_rng(7)
    trained = {
        ("cnn", "gradcam"): _smooth_maps(rng, 8),
        ("cnn", "ig"): _smooth_maps(rng, 8),
        ("resnet", "gradcam"): _smooth_maps(rng, 6),
    }
    table = threshold_table(trained, n_pairs=25, seed=3)
    assert list(table.columns) == THRESHOLD_COLUMNS
    assert len(table) == 3
    for _, row in table.iterrows():
        maps = trained[row["model"], row["method"]]
        pairs = random_pairs(len(maps), 25, stable_seed(3, "threshold", row["model"], row["method"]))
        ref = np.array([_sk(maps[i], maps[j]) for i, j in pairs])
        assert row["n_pairs"] == 25
        assert row["threshold"] == pytest.approx(ref.mean(), abs=TOL)
        assert row["sd"] == pytest.approx(ref.std(ddof=1), abs=TOL)


def test_run_threshold_and_run_randomization_scores_from_cache_files(tmp_path):
    rng = np.random.default_rng(8)
    ids = [f"im{k}" for k in range(6)]
    trained_maps = _smooth_maps(rng, len(ids))
    trained_path = tmp_path / "trained.h5"
    write_maps(trained_path, ids, trained_maps, trained_maps[:, None], "gradcam", {}, "sha", {"label": "abnormal"})
    steps = ["fc", "features.block4"]
    step_maps = np.stack([_smooth_maps(rng, len(ids)) for _ in steps])
    rand_path = tmp_path / "randomized.h5"
    compute_randomized_maps(
        rand_path,
        "gradcam",
        {},
        "sha",
        {"mode": "cascading"},
        ids,
        steps,
        lambda d, k, rows: (step_maps[k][rows], step_maps[k][rows][:, None]),
    )
    scores = tmp_path / "scores.csv"
    run_randomization_scores([trained_path], [rand_path], "simple_cnn", ["gradcam"], "cascading", 1.0, scores)
    table = pd.read_csv(scores, dtype={"image_id": str})
    assert list(table.columns) == RANDOMIZATION_COLUMNS and len(table) == len(steps) * len(ids)
    for _, row in table.iterrows():
        j = ids.index(row["image_id"])
        assert row["block"] == steps[row["step"] - 1]
        assert row["value"] == pytest.approx(_sk(step_maps[row["step"] - 1, j], trained_maps[j]), abs=TOL)

    thr = tmp_path / "thr.csv"
    run_threshold([str(trained_path)], ["simple_cnn"], ["gradcam"], 30, 2, 1.0, thr)
    t = pd.read_csv(thr)
    pairs = random_pairs(len(ids), 30, stable_seed(2, "threshold", "simple_cnn", "gradcam"))
    assert t["threshold"].item() == pytest.approx(
        np.mean([_sk(trained_maps[i], trained_maps[j]) for i, j in pairs]), abs=TOL
    )
    with pytest.raises(ValueError, match="same length"):
        run_threshold([str(trained_path)], ["a", "b"], ["gradcam"], 30, 2, 1.0, tmp_path / "x.csv")


# =============================================================== stats.randomization


@pytest.mark.parametrize("seed", range(4))
def test_one_sample_degradation_test_equals_scipy_and_hand_computed_t(seed):
    rng = np.random.default_rng(seed)
    values = rng.normal(0.3, 0.1, size=8 + 5 * seed)
    thr = 0.32
    res = degradation_test(values, thr, 0.1, 50, "one_sample")
    ref = stats.ttest_1samp(values, thr, alternative="less")
    assert res["statistic"] == pytest.approx(ref.statistic, rel=1e-12)
    assert res["p_value"] == pytest.approx(ref.pvalue, rel=1e-10)
    n = len(values)
    t_hand = (values.mean() - thr) / (values.std(ddof=1) / math.sqrt(n))
    assert res["statistic"] == pytest.approx(t_hand, rel=1e-12) and res["df"] == n - 1
    assert res["p_value"] == pytest.approx(stats.t.cdf(t_hand, df=n - 1), rel=1e-10)


@pytest.mark.parametrize("seed", range(4))
def test_welch_degradation_test_equals_scipy_two_sample_welch(seed):
    """From the pairs' summary statistics, the test equals scipy's Welch test on the raw pair SSIMs."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0.25, 0.05, size=10 + 3 * seed)
    pairs = rng.normal(0.3, 0.2, size=50)
    res = degradation_test(values, pairs.mean(), pairs.std(ddof=1), len(pairs), "welch")
    ref = stats.ttest_ind(values, pairs, equal_var=False, alternative="less")
    assert res["statistic"] == pytest.approx(ref.statistic, rel=1e-10)
    assert res["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert res["df"] == pytest.approx(ref.df, rel=1e-10)
    assert res["estimate"] == pytest.approx(values.mean() - pairs.mean())
    # one-sided upper bound matches the decision: below the threshold iff the bound is below 0
    assert (res["ci_high"] < 0) == (res["p_value"] < 0.05)


def test_degradation_test_hand_computed_small_case():
    values = np.array([0.1, 0.2, 0.3])  # mean 0.2, sd 0.1, n 3
    res = degradation_test(values, 0.5, 0.0, 50, "one_sample")
    t_hand = (0.2 - 0.5) / (0.1 / math.sqrt(3))  # -5.196...
    assert res["statistic"] == pytest.approx(t_hand, rel=1e-12)
    assert res["p_value"] == pytest.approx(stats.t.cdf(t_hand, df=2), rel=1e-10)
    assert res["p_value"] < 0.05
    # Welch with a threshold of sd 0.3 over 4 pairs: se = sqrt(0.01/3 + 0.09/4)
    w = degradation_test(values, 0.5, 0.3, 4, "welch")
    se = math.sqrt(0.01 / 3 + 0.09 / 4)
    assert w["se"] == pytest.approx(se) and w["statistic"] == pytest.approx(-0.3 / se)
    df = se**4 / ((0.01 / 3) ** 2 / 2 + (0.09 / 4) ** 2 / 3)
    assert w["df"] == pytest.approx(df) and w["p_value"] == pytest.approx(stats.t.cdf(-0.3 / se, df))
    assert w["p_value"] > res["p_value"]  # the threshold's uncertainty weakens the evidence


def test_degradation_test_zero_spread():
    below = degradation_test(np.full(5, 0.2), 0.5, 0.0, 50, "welch")
    assert (below["statistic"], below["p_value"]) == (-np.inf, 0.0)
    above = degradation_test(np.full(5, 0.8), 0.5, 0.0, 50, "one_sample")
    assert (above["statistic"], above["p_value"]) == (np.inf, 1.0)
    at = degradation_test(np.full(5, 0.5), 0.5, 0.0, 50, "one_sample")  # exactly at the threshold: not below
    assert at["statistic"] == 0.0 and at["p_value"] == 1.0
    # a control map (SSIM 1 everywhere) against a spread-out threshold: Welch still has a standard error
    control = degradation_test(np.ones(16), 0.3, 0.1, 50, "welch")
    assert control["se"] > 0 and control["p_value"] > 0.999


@pytest.mark.parametrize("values", [[], [0.3]])
def test_degradation_test_needs_two_values(values):
    with pytest.raises(ValueError, match="at least 2"):
        degradation_test(np.array(values), 0.5, 0.1, 50)
    with pytest.raises(ValueError, match="randomization.test"):
        degradation_test(np.array([0.1, 0.2]), 0.5, 0.1, 50, "z")


def _scores_table(rng) -> pd.DataFrame:
    rows = []
    for model in ("cnn", "resnet"):
        for method in ("gradcam", "ig"):
            for step, block, level in ((1, "fc", 0.9), (2, "block4", 0.5), (3, "block3", 0.1)):
                for i in range(10):
                    v = level + 0.05 * rng.standard_normal()
                    rows.append((f"im{i}", model, method, "cascading", 1, step, block, "ssim", v))
                    rows.append((f"im{i}", model, method, "cascading", 1, step, block, "other", 99.0))
    return pd.DataFrame(rows, columns=RANDOMIZATION_COLUMNS)


def test_randomization_tests_table():
    rng = np.random.default_rng(9)
    scores = _scores_table(rng)
    thresholds = pd.DataFrame(
        [
            ("cnn", "gradcam", 100, 0.5, 0.1),
            ("cnn", "ig", 100, 0.45, 0.1),
            ("resnet", "gradcam", 100, 0.6, 0.1),
            ("resnet", "ig", 100, 0.2, 0.1),
        ],
        columns=THRESHOLD_COLUMNS,
    )
    alpha = 0.05
    table = randomization_tests(scores, thresholds, alpha, test="one_sample")
    assert list(table.columns) == TEST_COLUMNS
    assert len(table) == 2 * 2 * 3  # one row per (model, method, step)
    assert not table.duplicated(["model", "method", "mode", "step"]).any()
    thr = thresholds.set_index(["model", "method"])["threshold"]
    for _, row in table.iterrows():
        v = scores[
            (scores["model"] == row["model"])
            & (scores["method"] == row["method"])
            & (scores["step"] == row["step"])
            & (scores["metric"] == "ssim")
        ]["value"].to_numpy()
        ref = stats.ttest_1samp(v, thr[row["model"], row["method"]], alternative="less")
        assert row["n_images"] == 10
        assert row["threshold"] == thr[row["model"], row["method"]]
        assert row["mean_ssim"] == pytest.approx(v.mean(), abs=1e-12)
        assert row["sd"] == pytest.approx(v.std(ddof=1), abs=1e-12)
        assert row["statistic"] == pytest.approx(ref.statistic, rel=1e-10)
        assert row["p_value"] == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-300)
        assert row["below"] == (row["p_value"] < alpha)
    # step 3 (ssim ~ 0.1) is below every threshold except resnet/ig's 0.2 where it is clearly below too;
    # step 1 (ssim ~ 0.9) is below none
    assert table.loc[table["step"] == 3, "below"].all()
    assert not table.loc[table["step"] == 1, "below"].any()
    assert table["below"].dtype == bool


def test_randomization_tests_alpha_decides_below():
    rng = np.random.default_rng(10)
    scores = _scores_table(rng)
    thresholds = pd.DataFrame(
        [(m, me, 10, 0.5, 0.1) for m in ("cnn", "resnet") for me in ("gradcam", "ig")], columns=THRESHOLD_COLUMNS
    )
    strict = randomization_tests(scores, thresholds, alpha=1e-300)
    loose = randomization_tests(scores, thresholds, alpha=1.0)
    assert (strict["test"] == "welch").all()  # the default
    assert (strict["below"] == (strict["p_value"] < 1e-300)).all()
    assert (loose["below"] == (loose["p_value"] < 1.0)).all()
    assert loose["below"].sum() >= strict["below"].sum()


def test_randomization_tests_missing_threshold_raises():
    scores = _scores_table(np.random.default_rng(11))
    thresholds = pd.DataFrame([("cnn", "gradcam", 10, 0.5, 0.1)], columns=THRESHOLD_COLUMNS)
    with pytest.raises(KeyError, match="model cnn, method ig"):
        randomization_tests(scores, thresholds)


# =============================================================== randomized-map cache


def _step_fn(maps: np.ndarray, calls: list | None = None):
    """compute_step of S x N x H x W maps (one draw) or D x S x N x H x W maps; records k (one draw) or (d, k)
    and the image rows asked for."""

    def compute_step(d: int, k: int, rows: list[int]):
        drawn = maps[d] if maps.ndim == 5 else maps
        if calls is not None:
            calls.append(((d, k) if maps.ndim == 5 else k, list(rows)))
        return drawn[k][rows], drawn[k][rows][:, None] * 2.0  # raw: K x 1 x H x W

    return compute_step


def test_compute_randomized_maps_writes_and_reads_back(tmp_path):
    rng = np.random.default_rng(0)
    ids, steps = ["c", "a", "b"], ["fc", "block4", "block3", "block2"]
    maps = np.stack([_smooth_maps(rng, 3, 12, 10) for _ in steps])  # S x N x H x W
    path = tmp_path / "rand" / "gradcam.h5"
    calls: list = []
    target = {"mode": "cascading"}
    n = compute_randomized_maps(path, "gradcam", {"a": 1}, "sha", target, ids, steps, _step_fn(maps, calls))
    assert n == 4 * 3
    assert calls == [(k, [0, 1, 2]) for k in range(4)]
    got_ids, got_steps, got = read_randomized_maps(path, method="gradcam")
    assert got_ids == ids and got_steps == steps
    assert got.shape == (1, 4, 3, 12, 10) and got.dtype == np.float32  # one draw
    np.testing.assert_array_equal(got[0], maps)
    with h5py.File(path) as h5:
        assert h5["raw"].shape == (1, 4, 3, 1, 12, 10)
        np.testing.assert_array_equal(h5["raw"][0, 2, 1, 0], maps[2, 1] * 2.0)
        assert json.loads(h5.attrs["target"]) == {**target, "steps": steps, "draws": [0]}
        assert json.loads(h5.attrs["params"]) == {"a": 1} and h5.attrs["model_sha256"] == "sha"
    assert [p.name for p in path.parent.iterdir()] == ["gradcam.h5"]  # no temporary file left behind


_RAND_TARGET = {
    "label": "abnormal",
    "output": "logit",
    "seed": 0,
    "randomization": {"mode": "cascading", "init": "default", "n_images": 0},
}


def _with(target: dict, **randomization) -> dict:
    return {**target, "randomization": {**target["randomization"], **randomization}}


def test_compute_randomized_maps_reuses_then_recomputes_on_change(tmp_path):
    rng = np.random.default_rng(1)
    ids, steps = ["a", "b"], ["fc", "block4"]
    maps = np.stack([_smooth_maps(rng, 2, 8, 8) for _ in steps])
    path = tmp_path / "x.h5"
    args = dict(method="ig", params={"n_steps": 8}, model_sha256="sha1", target=_RAND_TARGET, steps=steps)

    def run(compute_step, method, params, model_sha256, target, steps):
        path.unlink(missing_ok=True)  # Snakemake removes a rerun job's outputs: reuse is through the store
        store = MapStore(tmp_path / "store", method, params, model_sha256, randomized_store_target(target))
        return compute_randomized_maps(
            path, method, params, model_sha256, target, ids, steps, compute_step, image_keys=ids, store=store
        )

    assert run(_step_fn(maps), **args) == 4

    def must_not_run(d, k, rows):
        raise AssertionError("compute_step called although the store holds every map")

    assert run(must_not_run, **args) == 0
    np.testing.assert_array_equal(read_randomized_maps(path)[2][0], maps)

    changes = [
        {"params": {"n_steps": 16}},
        {"target": _with(_RAND_TARGET, mode="independent")},
        {"target": {**_RAND_TARGET, "seed": 1}},
        {"target": _with(_RAND_TARGET, init="truncated_normal")},
        {"model_sha256": "sha2"},
    ]
    for change in changes:
        calls: list = []
        new_maps = maps * 0.5
        assert run(_step_fn(new_maps, calls), **{**args, **change}) == 4, change
        assert calls == [(0, [0, 1]), (1, [0, 1])], change
        np.testing.assert_array_equal(read_randomized_maps(path)[2][0], new_maps)
        assert run(must_not_run, **{**args, **change}) == 0, change
        # and back to the original arguments: their maps are still in the store
        assert run(must_not_run, **args) == 0
        np.testing.assert_array_equal(read_randomized_maps(path)[2][0], maps)

    # another block at step 2: step 1 (fc) is the same entry, step 2 is computed
    calls = []
    assert run(_step_fn(maps * 0.5, calls), **{**args, "steps": ["fc", "block3"]}) == 2
    assert calls == [(1, [0, 1])]
    _, got_steps, got = read_randomized_maps(path)
    assert got_steps == ["fc", "block3"]
    np.testing.assert_array_equal(got[0], [maps[0], maps[1] * 0.5])
    # another image subset size: the same maps (n_images picks the images, their maps do not depend on it)
    assert run(must_not_run, **{**args, "target": _with(_RAND_TARGET, n_images=2)}) == 0
    with h5py.File(path) as h5:
        assert json.loads(h5.attrs["target"])["randomization"]["n_images"] == 2


def test_compute_randomized_maps_failing_step_leaves_no_file(tmp_path):
    rng = np.random.default_rng(2)
    ids, steps = ["a", "b"], ["fc", "block4", "block3"]
    maps = np.stack([_smooth_maps(rng, 2, 8, 8) for _ in steps])

    def fails_at_step_2(d, k, rows):
        if k == 1:
            raise RuntimeError("boom")
        return maps[k][rows], maps[k][rows][:, None]

    path = tmp_path / "sub" / "m.h5"
    with pytest.raises(RuntimeError, match="boom"):
        compute_randomized_maps(path, "gradcam", {}, "sha", {}, ids, steps, fails_at_step_2)
    assert not path.exists()
    assert list(path.parent.iterdir()) == []

    # an existing (valid) file is left untouched when a recompute fails
    compute_randomized_maps(path, "gradcam", {}, "sha", {}, ids, steps, _step_fn(maps))
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        compute_randomized_maps(path, "gradcam", {"changed": True}, "sha", {}, ids, steps, fails_at_step_2)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["m.h5"]


def test_compute_randomized_maps_nan_map_raises_naming_image(tmp_path):
    rng = np.random.default_rng(3)
    ids, steps = ["img_a", "img_b", "img_c"], ["fc", "block4"]
    maps = np.stack([_smooth_maps(rng, 3, 8, 8) for _ in steps])
    maps[1, 2, 4, 4] = np.nan  # step 2, image img_c
    path = tmp_path / "nan.h5"
    store = MapStore(tmp_path / "store", "gradcam", {}, "sha", {})
    with pytest.raises(FloatingPointError, match="img_c"):
        compute_randomized_maps(path, "gradcam", {}, "sha", {}, ids, steps, _step_fn(maps), store=store)
    assert not path.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["store"]
    step_entries = [[f"draw0/step{k + 1}-{block}/{i}" for i in ids] for k, block in enumerate(steps)]
    assert sorted(store.load(step_entries[0] + step_entries[1])) == sorted(step_entries[0])  # the NaN step: none


def test_read_randomized_maps_wrong_method_raises(tmp_path):
    maps = _smooth_maps(np.random.default_rng(4), 2, 8, 8)[None]
    path = tmp_path / "m.h5"
    compute_randomized_maps(path, "gradcam", {}, "sha", {}, ["a", "b"], ["fc"], _step_fn(maps))
    with pytest.raises(ValueError, match="gradcam"):
        read_randomized_maps(path, method="ig")


def test_compute_randomized_maps_recomputes_when_image_ids_change(tmp_path):
    rng = np.random.default_rng(5)
    steps = ["fc", "block4"]
    maps = np.stack([_smooth_maps(rng, 3, 8, 8) for _ in steps])
    path = tmp_path / "ids.h5"
    store = MapStore(tmp_path / "store", "gradcam", {}, "sha", {})

    def run(ids, calls):
        path.unlink(missing_ok=True)
        return compute_randomized_maps(path, "gradcam", {}, "sha", {}, ids, steps, _step_fn(maps, calls), store=store)

    assert run(["a", "b", "c"], []) == 6
    calls: list = []
    assert run(["x", "y", "z"], calls) == 6  # other images: nothing to reuse
    assert read_randomized_maps(path)[0] == ["x", "y", "z"]
    assert calls == [(0, [0, 1, 2]), (1, [0, 1, 2])]
    calls.clear()
    assert run(["a", "w", "c"], calls) == 2  # one new image: only it is computed, at each step
    assert calls == [(0, [1]), (1, [1])]
    got_ids, _, got = read_randomized_maps(path)
    assert got_ids == ["a", "w", "c"]
    np.testing.assert_array_equal(got[0], maps)  # row k of _step_fn's maps is image k of the call


def test_compute_randomized_maps_rejects_wrong_number_of_maps(tmp_path):
    rng = np.random.default_rng(6)
    steps = ["fc", "block4"]
    maps = np.stack([_smooth_maps(rng, 3, 8, 8) for _ in steps])  # 3 maps per step ...
    path = tmp_path / "n.h5"
    with pytest.raises(ValueError, match="3 maps and 3 raw attributions for 2 images"):
        compute_randomized_maps(  # ... 2 ids
            path, "gradcam", {}, "sha", {}, ["a", "b"], steps, lambda d, k, rows: (maps[k], maps[k][:, None])
        )
    assert not path.exists()
