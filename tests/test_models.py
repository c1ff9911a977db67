"""Architecture registry and training loop (docs/outputs.md)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from saliency_trust.models.registry import ARCHITECTURES, build_model, get_architecture, get_submodule
from saliency_trust.models.train import (
    TrainSettings,
    load_checkpoint,
    predict,
    save_checkpoint,
    train_classifier,
)

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "arch,size,input_size",
    [("simple_cnn", 32, None), ("tiny_resnet", 32, None), ("inception_v3", 40, 80), ("densenet121", 32, 32)],
)
def test_every_architecture_builds_runs_and_has_its_gradcam_layer(arch, size, input_size):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=2, input_size=input_size).eval()
    x = torch.rand(2, 1, size, size)
    feats = {}
    layer = get_submodule(model, get_architecture(arch).gradcam_layer)
    handle = layer.register_forward_hook(lambda m, i, o: feats.setdefault("a", o))
    with torch.no_grad():
        y = model(x)
    handle.remove()
    assert y.shape == (2, 2) and torch.isfinite(y).all()
    assert feats["a"].ndim == 4  # a spatial conv block, as Grad-CAM needs


def test_registry_refuses_unknown_architecture():
    with pytest.raises(KeyError, match="unknown architecture 'vgg'"):
        build_model("vgg", 1)


def test_pretrained_weights_come_only_from_a_local_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_model("densenet121", 1, input_size=32, pretrained_weights=missing)
    torch.manual_seed(1)
    imagenet = torchvision.models.densenet121(weights=None)  # stands in for ImageNet weights: 1000 classes
    path = tmp_path / "densenet121.pth"
    torch.save(imagenet.state_dict(), path)
    model = build_model("densenet121", 1, input_size=32, pretrained_weights=path)
    w_ref = imagenet.features.conv0.weight
    assert torch.equal(model.net.features.conv0.weight, w_ref)
    assert model.net.classifier.out_features == 1  # the head is new, not the 1000-class one


def test_pretrained_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match="not a 'densenet121' state dict"):
        build_model("densenet121", 1, input_size=32, pretrained_weights=path)


def test_training_loss_falls_and_is_deterministic(tiny_dataset):
    settings = TrainSettings(epochs=4, patience=10, lr=3e-3, batch_size=16)
    m1, h1, met1 = train_classifier(tiny_dataset, "simple_cnn", settings, seed=3, device=CPU)
    assert h1["train_loss"].iloc[-1] < h1["train_loss"].iloc[0]
    assert list(h1.columns) == ["epoch", "train_loss", "val_loss", "train_auc", "val_auc", "seconds"]
    assert met1["val_auc"] == pytest.approx(h1["val_auc"].max())
    assert 0.0 <= met1["test_auc"] <= 1.0
    m2, h2, _ = train_classifier(tiny_dataset, "simple_cnn", settings, seed=3, device=CPU)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    np.testing.assert_array_equal(h1["train_loss"], h2["train_loss"])
    m3, _, _ = train_classifier(tiny_dataset, "simple_cnn", settings, seed=4, device=CPU)
    assert not torch.equal(m1.fc.weight, m3.fc.weight)


def test_early_stopping_keeps_the_best_epoch(tiny_dataset):
    settings = TrainSettings(epochs=30, patience=1, lr=3e-3, batch_size=16)
    model, hist, met = train_classifier(tiny_dataset, "tiny_resnet", settings, seed=5, device=CPU)
    # patience 1: training stops at the first epoch that does not improve on the best one
    assert len(hist) == min(met["best_epoch"] + 1, 30)
    # The returned weights are those of the best epoch: their validation AUC is the best one.
    from saliency_trust.models.train import mean_auc

    va = tiny_dataset.indices("val")
    p = predict(model, tiny_dataset.images[va], CPU)
    assert mean_auc(tiny_dataset.labels()[va], p) == pytest.approx(hist["val_auc"].max(), abs=1e-6)


def test_checkpoint_round_trip(tmp_path, tiny_dataset):
    settings = TrainSettings(epochs=1, batch_size=16)
    model, _, _ = train_classifier(tiny_dataset, "tiny_resnet", settings, seed=1, device=CPU)
    path = tmp_path / "model.pt"
    save_checkpoint(model, "tiny_resnet", tiny_dataset.label_names, settings, path)
    loaded, payload = load_checkpoint(path)
    assert payload["arch"] == "tiny_resnet" and payload["label_names"] == ["abnormal"]
    np.testing.assert_array_equal(
        predict(model, tiny_dataset.images[:8], CPU), predict(loaded, tiny_dataset.images[:8], CPU)
    )


def test_own_architectures_use_one_relu_module_per_activation():
    # Hook-based guided backprop needs a distinct nn.ReLU module at every activation.
    for arch in ("simple_cnn", "tiny_resnet"):
        model = build_model(arch, 1)
        relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
        assert len(relus) == len({id(m) for m in relus}) >= 4
        assert all(not m.inplace for m in relus)


def test_registry_lists_the_papers_architectures():
    assert {"inception_v3", "densenet121", "simple_cnn", "tiny_resnet"} <= set(ARCHITECTURES)
