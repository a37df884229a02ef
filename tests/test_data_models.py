"""Every dataset and architecture builds; loaders read the real on-disk formats; checkpoints round-trip."""

import pytest
import torch

from rsbook.data import DATASETS, dataset_info, get_dataset
from rsbook.models import ARCHITECTURES, NormalizeLayer, get_model, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("name,train,test", [("digits", 1437, 360), ("toy2d", 1500, 300)])
def test_bundled_datasets(name, train, test):
    tr, te = get_dataset(name, "train"), get_dataset(name, "test")
    assert len(tr) == train and len(te) == test
    x, y = tr[0]
    assert x.shape == dataset_info(name).input_shape and x.dtype == torch.float32
    xs = torch.stack([tr[i][0] for i in range(len(tr))])
    assert 0.0 <= float(xs.min()) and float(xs.max()) <= 1.0
    labels = {int(tr[i][1]) for i in range(len(tr))}
    assert labels == set(range(dataset_info(name).num_classes))


def test_digits_split_is_fixed_and_disjoint():
    a, b = get_dataset("digits", "train"), get_dataset("digits", "train")
    assert torch.equal(a.tensors[0], b.tensors[0])
    te = get_dataset("digits", "test")
    train_rows = {tuple(r.flatten().tolist()) for r in a.tensors[0]}
    overlap = sum(tuple(r.flatten().tolist()) in train_rows for r in te.tensors[0])
    assert overlap <= 5  # the UCI set has a few exact duplicate images, no shared indices


def test_cifar10_reads_the_python_pickle_format(tiny_cifar10):
    tr, te = get_dataset("cifar10", "train", root=tiny_cifar10), get_dataset("cifar10", "test", root=tiny_cifar10)
    assert len(tr) == 20 and len(te) == 6
    x, y = te[0]
    assert x.shape == (3, 32, 32) and 0 <= float(x.min()) and float(x.max()) <= 1 and 0 <= y < 10


def test_imagenet_reads_an_image_folder(tiny_imagenet):
    val = get_dataset("imagenet", "test", root=tiny_imagenet)
    assert len(val) == 4 and val.classes == ["n01440764", "n01443537"]
    x, y = val[0]
    assert x.shape == (3, 224, 224)
    assert get_dataset("imagenet", "train", root=tiny_imagenet)[0][0].shape == (3, 224, 224)


@pytest.mark.parametrize("name", ["cifar10", "imagenet"])
def test_missing_data_says_what_to_put_where(name, tmp_path):
    with pytest.raises(FileNotFoundError, match="expected") as err:
        get_dataset(name, "test", root=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_builds_and_classifies(arch):
    dataset = ARCHITECTURES[arch][0]
    info = dataset_info(dataset)
    model = get_model(arch, dataset).eval()
    assert isinstance(model[0], NormalizeLayer)
    with torch.inference_mode():
        out = model(torch.rand(2, *info.input_shape))
    assert out.shape == (2, info.num_classes)


def test_resnet110_has_110_layers():
    model = get_model("cifar_resnet110", "cifar10")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) + len(linears) == 110


def test_normalization_is_inside_the_model():
    layer = NormalizeLayer((0.5, 0.25), (0.5, 0.25))
    x = torch.tensor([[[[1.0]], [[0.5]]]])
    assert torch.allclose(layer(x), torch.tensor([[[[1.0]], [[1.0]]]]))


def test_checkpoint_round_trip(tmp_path):
    model = get_model("digits_cnn", "digits")
    path = save_checkpoint(tmp_path / "m.pth", model, "digits_cnn", "digits", epoch=3)
    loaded, ckpt = load_checkpoint(path)
    assert ckpt["epoch"] == 3
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(model.eval()(x), loaded.eval()(x))


def test_corrupt_checkpoint_is_reported(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(bad)
    good = save_checkpoint(tmp_path / "ok.pth", get_model("digits_cnn", "digits"), "digits_cnn", "digits")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(truncated)
    torch.save({"weights": 1}, tmp_path / "foreign.pth")
    with pytest.raises(ValueError, match="lacks the keys"):
        load_checkpoint(tmp_path / "foreign.pth")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.pth")


def test_registry_covers_all_datasets():
    assert set(DATASETS) == {"digits", "toy2d", "cifar10", "imagenet"}
