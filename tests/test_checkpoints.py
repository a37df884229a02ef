"""Released checkpoints in Cohen et al.'s format (locuslab/smoothing) load as they are.

The writer modules below are built in the test from the reference layout's description
(``Sequential(stateless normalisation, net)``; CIFAR ResNets ``conv1, bn1, layer1..3, fc``
with ``downsample`` = 1x1 conv + BN; ImageNet ResNet-50 = torchvision's inside
``DataParallel``), randomised everywhere (BatchNorm statistics included), saved the way the
reference ``train.py`` saves (``epoch``, ``arch``, ``state_dict``, ``optimizer``; no
``dataset``), and the logits of rsbook's loaded model must equal the writer's.
"""

import pytest
import torch
from torch import nn

from rsbook.cli import main
from rsbook.models import get_model, load_checkpoint, save_checkpoint


class _StatelessNormalize(nn.Module):
    # like the reference layer: mean/std are plain attributes, so nothing lands in the state dict
    def __init__(self, mean, std):
        super().__init__()
        self.m = torch.tensor(mean).view(1, -1, 1, 1)
        self.s = torch.tensor(std).view(1, -1, 1, 1)

    def forward(self, x):
        return (x - self.m) / self.s


class _RefBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):
        y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        y += x if self.downsample is None else self.downsample(x)
        return self.relu(y)


class _RefCifarResNet(nn.Module):
    def __init__(self, depth):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(*[_RefBlock(16, 16, 1) for _ in range(n)])
        self.layer2 = nn.Sequential(_RefBlock(16, 32, 2), *[_RefBlock(32, 32, 1) for _ in range(n - 1)])
        self.layer3 = nn.Sequential(_RefBlock(32, 64, 2), *[_RefBlock(64, 64, 1) for _ in range(n - 1)])
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x))))))
        return self.fc(self.avgpool(x).flatten(1))


CIFAR = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _randomise(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                fresh = torch.rand(t.shape, generator=gen) * 0.5 + 0.75 if "running_var" in name or (
                    name.endswith("weight") and t.dim() == 1) else torch.randn(t.shape, generator=gen) * 0.1
                t.copy_(fresh)
    return module.eval()


def _save_reference(path, arch, model, legacy=False):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.save({"epoch": 90, "arch": arch, "state_dict": model.state_dict(), "optimizer": opt.state_dict()},
               path, _use_new_zipfile_serialization=not legacy)
    return path


def test_reference_cifar_resnet_key_names_are_ours():
    ref = nn.Sequential(_StatelessNormalize(*CIFAR), _RefCifarResNet(110))
    ours = get_model("cifar_resnet110", "cifar10")
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert "1.layer2.0.downsample.0.weight" in ours.state_dict()
    assert "1.layer1.0.downsample.0.weight" not in ours.state_dict()


@pytest.mark.parametrize("legacy", [False, True])
def test_reference_cifar_checkpoint_gives_the_same_logits(tmp_path, legacy):
    writer = _randomise(nn.Sequential(_StatelessNormalize(*CIFAR), _RefCifarResNet(20)))
    path = _save_reference(tmp_path / "checkpoint.pth.tar", "cifar_resnet20", writer, legacy=legacy)
    model, ckpt = load_checkpoint(path)
    assert ckpt["dataset"] == "cifar10" and ckpt["epoch"] == 90 and "optimizer" in ckpt
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = writer(x)
    with torch.inference_mode():
        got = model.eval()(x)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5)
    assert expected.std() > 0.01  # the comparison is not between two constants


def test_reference_imagenet_checkpoint_has_the_dataparallel_prefix(tmp_path):
    import torchvision

    net = torchvision.models.resnet50(weights=None)
    writer = _randomise(nn.Sequential(_StatelessNormalize(*IMAGENET), nn.DataParallel(net)))
    assert "1.module.conv1.weight" in writer.state_dict()
    path = _save_reference(tmp_path / "checkpoint.pth.tar", "resnet50", writer)
    model, ckpt = load_checkpoint(path)
    assert ckpt["dataset"] == "imagenet"
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), writer(x), atol=1e-4, rtol=1e-4)


def test_unknown_arch_or_missing_key_is_named(tmp_path):
    writer = nn.Sequential(_StatelessNormalize(*CIFAR), _RefCifarResNet(20))
    path = _save_reference(tmp_path / "a.pth", "lenet", writer)
    with pytest.raises(ValueError, match="unknown architecture 'lenet'.*valid choices"):
        load_checkpoint(path)
    state = writer.state_dict()
    del state["1.layer3.2.bn2.running_var"]
    torch.save({"arch": "cifar_resnet20", "state_dict": state}, tmp_path / "b.pth")
    with pytest.raises(ValueError, match=r"missing key\(s\) 1\.layer3\.2\.bn2\.running_var"):
        load_checkpoint(tmp_path / "b.pth")
    torch.save({"arch": "cifar_resnet110", "state_dict": writer.state_dict()}, tmp_path / "c.pth")
    with pytest.raises(ValueError, match="does not match architecture 'cifar_resnet110'.*missing"):
        load_checkpoint(tmp_path / "c.pth")


def _old_rsbook_layout(state, blocks_per_stage):
    """The key names rsbook used before adopting the reference layout."""
    old = {"0.mean": torch.zeros(1, 3), "0.std": torch.ones(1, 3)}
    for key, value in state.items():
        parts = key.split(".")
        if parts[1] in ("conv1", "bn1"):
            key = ".".join(["1", parts[1][:-1]] + parts[2:])
        elif parts[1].startswith("layer"):
            index = (int(parts[1][5:]) - 1) * blocks_per_stage + int(parts[2])
            rest = ["shortcut" if p == "downsample" else p for p in parts[3:]]
            key = ".".join(["1", "layers", str(index)] + rest)
        old[key] = value
    return old


def test_old_rsbook_checkpoints_still_load(tmp_path):
    model = _randomise(get_model("cifar_resnet20", "cifar10"))
    old = _old_rsbook_layout(model.state_dict(), 3)
    assert "1.layers.6.shortcut.0.weight" in old and "1.conv.weight" in old
    torch.save({"arch": "cifar_resnet20", "dataset": "cifar10", "state_dict": old, "epoch": 4}, tmp_path / "o.pth")
    loaded, ckpt = load_checkpoint(tmp_path / "o.pth")
    assert ckpt["upgraded_from_old_layout"] and set(ckpt["state_dict"]) == set(model.state_dict())
    x = torch.rand(3, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(loaded.eval()(x), model(x))
    # digits models only lose the normalisation statistics
    digits = get_model("digits_cnn", "digits")
    save_checkpoint(tmp_path / "d.pth", digits, "digits_cnn", "digits")
    blob = torch.load(tmp_path / "d.pth", weights_only=True)
    blob["state_dict"].update({"0.mean": torch.zeros(1, 1), "0.std": torch.ones(1, 1)})
    torch.save(blob, tmp_path / "d.pth")
    assert load_checkpoint(tmp_path / "d.pth")[1]["upgraded_from_old_layout"]


def test_center_normalisation_for_smoothadv_models():
    x = torch.full((1, 3, 32, 32), 0.5)
    std = get_model("cifar_resnet20", "cifar10")[0](x)
    centered = get_model("cifar_resnet20", "cifar10", normalization="center")[0](x)
    assert torch.allclose(centered[0, :, 0, 0], torch.tensor([0.5 - m for m in CIFAR[0]]))
    assert torch.allclose(std[0, :, 0, 0], torch.tensor([(0.5 - m) / s for m, s in zip(*CIFAR)]))


def test_reference_checkpoint_certifies_through_the_cli(tmp_path, tiny_cifar10, capsys):
    writer = _randomise(nn.Sequential(_StatelessNormalize(*CIFAR), _RefCifarResNet(20)))
    path = _save_reference(tmp_path / "checkpoint.pth.tar", "cifar_resnet20", writer)
    out = tmp_path / "cert.tsv"
    assert main(["certify", "--checkpoint", str(path), "--sigma", "0.25", "--n0", "10", "--n", "50",
                 "--batch-size", "50", "--max", "2", "--data-root", str(tiny_cifar10), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 3
