"""Bad input fails at once, naming the parameter and the valid choices."""

import pytest
import torch

from rsbook.data import get_dataset
from rsbook.models import get_model
from rsbook.noise import Gaussian, make_noise
from rsbook.smooth import Smooth
from rsbook.train import GaussianAugmentation, fit


@pytest.fixture
def smooth():
    return Smooth(torch.nn.Linear(4, 3), 3, 0.5)


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"unknown dataset 'mnist'; valid choices: digits, toy2d, cifar10, imagenet"):
        get_dataset("mnist", "train")
    with pytest.raises(ValueError, match="unknown split 'val'; valid choices: train, test"):
        get_dataset("digits", "val")


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'vgg'; valid choices: cifar_resnet20"):
        get_model("vgg", "cifar10")
    with pytest.raises(ValueError, match=r"not built for dataset 'digits' \(it takes imagenet\); architectures for digits: digits_cnn"):
        get_model("resnet50", "digits")


@pytest.mark.parametrize("sigma", [0, -0.5, float("inf"), "abc"])
def test_sigma_must_be_positive(sigma):
    with pytest.raises(ValueError, match="sigma must be a"):
        Gaussian(sigma)
    with pytest.raises(ValueError, match="sigma"):
        Smooth(torch.nn.Linear(4, 3), 3, sigma) if not isinstance(sigma, str) else Gaussian(sigma)


def test_noise_type():
    with pytest.raises(TypeError, match="noise must be"):
        make_noise("gaussian")


@pytest.mark.parametrize("alpha", [0, 1, -1, 2])
def test_alpha_must_be_in_unit_interval(smooth, alpha):
    x = torch.zeros(4)
    with pytest.raises(ValueError, match=r"alpha must lie in the open interval \(0, 1\)"):
        smooth.certify(x, 10, 100, alpha)
    with pytest.raises(ValueError, match="alpha"):
        smooth.predict(x, 100, alpha)


@pytest.mark.parametrize("name,kwargs", [("n0", dict(n0=0, n=100)), ("n", dict(n0=10, n=0)), ("n", dict(n0=10, n=-5)),
                                         ("n", dict(n0=10, n=2.5)), ("batch_size", dict(n0=10, n=10, batch_size=0))])
def test_sample_counts_must_be_positive(smooth, name, kwargs):
    with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
        smooth.certify(torch.zeros(4), alpha=0.01, **kwargs)


def test_training_arguments():
    model = get_model("toy_mlp", "toy2d")
    data = get_dataset("toy2d", "train")
    with pytest.raises(ValueError, match="unknown schedule 'linear'; valid choices: step, cosine, constant"):
        fit(model, data, GaussianAugmentation(0.1), 1, schedule="linear", progress=False)
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        fit(model, data, GaussianAugmentation(0.1), 0, progress=False)
    with pytest.raises(ValueError, match="needs arch= and dataset="):
        fit(model, data, GaussianAugmentation(0.1), 1, checkpoint="x.pth", progress=False)
    with pytest.raises(ValueError, match="num_noise must be an integer >= 1"):
        GaussianAugmentation(0.1, num_noise=0)
