"""The one training loop: it learns, it is seeded, and a resumed run equals an uninterrupted one."""

import pytest
import torch

from rsbook.data import get_dataset
from rsbook.models import get_model, load_checkpoint
from rsbook.train import GaussianAugmentation, evaluate_accuracy, fit, noisy_copies
from rsbook.noise import Gaussian


class CrashAt(GaussianAugmentation):
    """Gaussian augmentation that 'kills the job' when epoch ``crash_epoch`` starts."""

    def __init__(self, crash_epoch):
        super().__init__(0.05, num_noise=2)
        self.crash_epoch = crash_epoch

    def start_epoch(self, epoch, epochs):
        if epoch == self.crash_epoch:
            raise KeyboardInterrupt


def train(epochs, checkpoint=None, seed=0, objective=None):
    torch.manual_seed(123)  # same initial weights
    model = get_model("toy_mlp", "toy2d")
    objective = objective or GaussianAugmentation(0.05, num_noise=2)
    history = fit(model, get_dataset("toy2d", "train"), objective, epochs,
                  batch_size=128, lr=0.05, schedule="cosine", checkpoint=checkpoint, arch="toy_mlp",
                  dataset="toy2d", seed=seed, progress=False, device="cpu")
    return model, history


def test_gaussian_training_learns_under_noise():
    model, history = train(8)
    assert history[-1]["loss"] < history[0]["loss"]
    acc = evaluate_accuracy(model, get_dataset("toy2d", "test"), noise=0.05)
    assert acc > 0.85  # three classes: chance is 1/3


def test_resume_equals_uninterrupted(tmp_path):
    straight, _ = train(4)
    ckpt = tmp_path / "model.pth"
    with pytest.raises(KeyboardInterrupt):
        train(4, checkpoint=ckpt, objective=CrashAt(2))  # killed after two finished epochs
    _, state = load_checkpoint(ckpt)
    assert state["epoch"] == 1 and len(state["history"]) == 2
    resumed, history = train(4, checkpoint=ckpt)   # the same command again, now for 4 epochs
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_different_seeds_differ():
    a, _ = train(1, seed=0)
    b, _ = train(1, seed=1)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_noisy_copies_layout_and_reuse():
    x = torch.arange(6.0).view(3, 2)
    y = torch.tensor([0, 1, 2])
    inputs, targets, draws = noisy_copies(x, y, Gaussian(1.0), 4)
    assert inputs.shape == (12, 2) and targets.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert torch.allclose(inputs.view(3, 4, 2) - x.unsqueeze(1), draws, atol=1e-6)
    again, _, _ = noisy_copies(x, y, Gaussian(1.0), 4, noise_draws=draws)
    assert torch.equal(again, inputs)


@pytest.mark.parametrize("m", [1, 3])
def test_gaussian_objective_is_mean_cross_entropy_over_draws(m):
    model = torch.nn.Linear(2, 3)
    x, y = torch.rand(5, 2), torch.tensor([0, 1, 2, 0, 1])
    torch.manual_seed(0)
    out = GaussianAugmentation(0.3, m)(model, x, y)
    torch.manual_seed(0)
    inputs, targets, _ = noisy_copies(x, y, Gaussian(0.3), m)
    expected = torch.nn.functional.cross_entropy(model(inputs), targets)
    assert torch.allclose(out.loss, expected) and out.logits.shape == (5 * m, 3)
