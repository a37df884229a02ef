"""What a notebook run will cost, before it is launched (``rsbook plan <notebook> --preset P``).

The plan reads the notebook's ``parameters`` cell and the preset, counts the models the
run trains, their epochs, the forward(+backward) passes of training and of
certification, and turns the counts into a wall-clock estimate with a short calibration
of the architecture on the current device. It is driven by parameter *names* shared by the
chapters (``dataset``, ``arch``, ``epochs``, ``sigmas``, ``methods``, ``seeds``, grids,
``n``, ``n0``, ``num_test``/``skip``/``max_examples``, ...) and ignores names it does not
know, so a new chapter's presets get a plan too; every count says what it was built from.

The estimate is a lower bound of the kind a cluster job is sized with: it counts the
network's passes only (no data loading, no evaluation on clean data, no Python overhead)
and assumes certification stops at ``n`` samples (ISS and other adaptive certifiers
usually stop earlier, so for them it is an upper bound on certification).
"""

from __future__ import annotations

import ast
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["Plan", "plan_notebook", "notebook_defaults", "calibrate", "format_seconds"]

#: (train, test) sizes of the datasets that live on disk (the in-memory ones are measured)
DATASET_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "imagenet": (1_281_167, 50_000),
                 "mnist": (60_000, 10_000)}
#: list-valued parameters whose every value is a separately trained model (multiplied together)
MODEL_AXES = ("sigmas", "methods", "objectives", "seeds", "lambdas", "lams", "families", "noise_families",
              "noises", "archs")
#: list-valued parameters whose every value is one more certification of each model (added up)
CERTIFY_VARIANTS = ("U_AD", "U_RD", "ias_fractions", "certifiers", "variants", "certify_sigmas")


def notebook_defaults(notebook: str | os.PathLike) -> dict[str, Any]:
    """The assignments of the notebook's cell tagged ``parameters``, evaluated without running the notebook.

    Literals are read with :func:`ast.literal_eval`; a constant expression such as
    ``0.5 / 255`` is evaluated with no names available; anything else is kept as its source.
    """
    notebook = Path(notebook)
    if not notebook.exists():
        raise FileNotFoundError(f"notebook not found: {notebook}")
    cells = json.loads(notebook.read_text())["cells"]
    source = next(("".join(c["source"]) for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if source is None:
        raise ValueError(f"{notebook.name} has no cell tagged 'parameters'")
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                try:
                    out[node.targets[0].id] = eval(compile(ast.Expression(node.value), "<parameters>", "eval"),
                                                   {"__builtins__": {}}, {})
                except Exception:
                    out[node.targets[0].id] = ast.get_source_segment(source, node.value)
    return out


def format_seconds(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``7.2 h``, ``12.3 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@dataclass
class Plan:
    """Counts and estimate of one notebook run; ``str(plan)`` is the printed table."""

    notebook: str
    preset: str | None
    dataset: str
    arch: str
    models: int
    epochs: int
    train_images: int | None
    train_passes: float
    certified_models: int
    certified_examples: int | None
    samples_per_example: int
    certify_passes: float
    attack_passes: float
    device: str | None = None
    train_rate: float | None = None
    infer_rate: float | None = None
    seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        def num(v):
            return "unknown" if v is None else (f"{v:,.0f}" if v < 1e7 else f"{v:.2e}")

        rows = [("models to train", num(self.models)), ("epochs per model", num(self.epochs)),
                ("training images", num(self.train_images)), ("training passes (fwd+bwd)", num(self.train_passes)),
                ("certified models", num(self.certified_models)),
                ("certified examples per model", num(self.certified_examples)),
                ("samples per example", num(self.samples_per_example)),
                ("certification passes (fwd)", num(self.certify_passes))]
        if self.attack_passes:
            rows.append(("attack passes (fwd+bwd)", num(self.attack_passes)))
        if self.seconds is not None:
            rows += [("calibration", f"{self.device}: {self.train_rate:,.0f} train / {self.infer_rate:,.0f} "
                                     "inference samples per s"),
                     ("estimated wall-clock", format_seconds(self.seconds))]
        width = max(len(r[0]) for r in rows)
        title = f"plan: {self.notebook}" + (f" --preset {self.preset}" if self.preset else "")
        lines = [title, f"dataset {self.dataset}, arch {self.arch}"]
        lines += [f"  {k:<{width}}  {v}" for k, v in rows]
        lines += [f"  - {note}" for note in self.notes]
        return "\n".join(lines)


def _as_list(value) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _number(params, *names, default=None):
    for name in names:
        value = params.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    return default


def _dataset_sizes(dataset: str, data_root=None) -> tuple[int | None, int | None]:
    """Train/test sizes: the standard ones, or measured (in-memory datasets; a given ``data_root``)."""
    if dataset in DATASET_SIZES and (data_root is None or dataset == "imagenet"):
        return DATASET_SIZES[dataset]  # listing ImageNet's 1.3M files would take minutes
    try:
        from rsbook.data import get_dataset

        return (len(get_dataset(dataset, "train", root=data_root)),
                len(get_dataset(dataset, "test", root=data_root)))
    except Exception:  # a dataset on disk we cannot read here
        return DATASET_SIZES.get(dataset, (None, None))


def _mean(values, default):
    values = [v for v in _as_list(values) if isinstance(v, (int, float))]
    return sum(values) / len(values) if values else default


def _count_models(p: Mapping, notes: list[str]) -> tuple[int, float]:
    """Number of trained models and their mean cost factor (noisy copies x (1 + attack steps))."""
    from rsbook.certify import parse_shard

    if p.get("checkpoint") is not None:
        notes.append("certifies the given checkpoint; nothing is trained")
        return 0, 1.0
    if "checkpoint" in p and p.get("dataset") not in ("digits", "toy2d"):
        notes.append("certifies an existing model of this dataset: pass -p checkpoint=PATH (nothing is trained)")
        return 0, 1.0
    m = _number(p, "m_train", "num_noise", default=1)
    seeds = p.get("seeds")
    axes = {k: len(_as_list(p[k])) for k in MODEL_AXES if k in p and k != "seeds" and _as_list(p[k])}
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        axes["seeds"] = seeds
    elif _as_list(seeds):
        axes["seeds"] = len(_as_list(seeds))
    base = math.prod(axes.values()) if axes else 1
    methods = [x for x in _as_list(p.get("methods", p.get("objectives"))) if isinstance(x, str)] or ["gaussian"]
    cost = [m * (1 + _number(p, f"{meth}_steps", default=0)) for meth in methods]
    total_cost = base * sum(cost) / len(cost)
    how = [" x ".join(f"{k} {v}" for k, v in axes.items()) or "1"]
    n_seeds = axes.get("seeds", 1)
    extra = 0
    ablation_steps = _number(p, f"{p.get('ablation_method')}_steps", default=0)
    for key, value in p.items():
        if key.startswith("ablation_") and isinstance(value, (list, tuple)) and value:
            extra += len(value) * n_seeds
            draws = _mean(value, m) if "m_train" in key else m  # an m_train ablation changes the draws
            total_cost += len(value) * n_seeds * draws * (1 + ablation_steps)
            how.append(f"{key} {len(value)}")
    grids = {k: v for k, v in p.items() if "grid" in k and isinstance(v, Mapping) and v}
    for key, grid in grids.items():
        size = math.prod(len(_as_list(v)) for v in grid.values())
        shard = next((v for k, v in p.items() if "shard" in k and isinstance(v, str) and "/" in v), None)
        try:
            i, k = parse_shard(shard) or (0, 1)
        except ValueError:
            shard = None
        if shard:
            size = len(range(i, size, k))
            how.append(f"{key} {size} (this shard {shard})")
        else:
            how.append(f"{key} {size}")
        extra += size
        steps = _mean(grid.get("steps"), 0)
        total_cost += size * _mean(grid.get("m_train"), m) * (1 + steps)
    models = base + extra
    notes.append(f"models = {' + '.join(how)}")
    return models, (total_cost / models if models else 1.0)


def _count_certification(p: Mapping, test_size: int | None, notes: list[str]) -> tuple[int | None, int]:
    skip = int(_number(p, "skip", "test_skip", "certify_skip", default=1) or 1)
    limit = _number(p, "max_examples", "num_test", "n_examples", "num_examples", "certify_examples")
    examples = None if test_size is None else len(range(0, test_size, skip))
    if limit is not None:
        examples = int(limit) if examples is None else min(examples, int(limit))
    ns = [v for v in _as_list(p.get("n", p.get("k_bar"))) if isinstance(v, (int, float))]
    n0s = [v for v in _as_list(p.get("n0", p.get("k0"))) if isinstance(v, (int, float))]
    if not n0s and "k0_fraction" in p and ns:
        n0s = [p["k0_fraction"] * v for v in ns]
    variants = 1 + sum(len(_as_list(p[k])) for k in CERTIFY_VARIANTS if k in p)
    samples = int(round(sum(ns) + (sum(n0s) if len(n0s) == len(ns) else (n0s[0] if n0s else 0) * len(ns))))
    limit_text = "" if limit is None else f", at most {int(limit)}"
    notes.append(f"certification: test examples with skip={skip}{limit_text}; per example n0 + n summed over "
                 f"{len(ns)} sample size(s), x {variants} certifier variant(s)")
    return examples, samples * variants


def calibrate(arch: str, dataset: str, device=None, train_batch: int = 256, infer_batch: int = 1000,
              seconds: float = 2.0) -> dict:
    """Measured samples per second of one SGD step (train) and of forward passes (inference) for ``arch``.

    The batch doubles from 2 up to the run's batch size while one batch takes less than
    ``seconds / 8`` (a CPU runs an ImageNet ResNet-50 a few images at a time), then is timed
    for at least two batches and ``seconds / 4``; the rates are per sample.
    """
    import torch

    from rsbook.data import dataset_info
    from rsbook.models import get_model

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    info = dataset_info(dataset)
    model = get_model(arch, dataset).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step(b):
        x = torch.rand(b, *info.input_shape, device=device)
        y = torch.randint(0, info.num_classes, (b,), device=device)
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def infer(b):
        model.eval()
        with torch.inference_mode():
            model(torch.rand(b, *info.input_shape, device=device)).argmax(1)

    def timed(fn, b):
        start = time.perf_counter()
        fn(b)
        sync()
        return time.perf_counter() - start

    rates = {}
    for name, fn, cap in (("train", train_step, train_batch), ("infer", infer, infer_batch)):
        b = 2  # BatchNorm in train mode needs > 1 sample
        timed(fn, b)  # warm-up
        while b < cap and timed(fn, b) < seconds / 8:  # grow the batch until one takes a noticeable time
            b = min(cap, 2 * b)
        elapsed, done = 0.0, 0
        while done < 2 * b or elapsed < seconds / 4:
            elapsed += timed(fn, b)
            done += b
        rates[name] = done / elapsed
    return {"device": str(device), "train_per_s": rates["train"], "infer_per_s": rates["infer"]}


def plan_notebook(notebook: str | os.PathLike, preset: str | None = None, params_file=None,
                  overrides: Mapping | None = None, calibrate_device: bool = True, device=None,
                  calibration_seconds: float = 2.0) -> Plan:
    """The :class:`Plan` of running ``notebook`` with a preset / parameter file / overrides."""
    from rsbook.runner import load_parameters

    notebook = Path(notebook)
    params = {**notebook_defaults(notebook), **load_parameters(notebook, preset, params_file), **dict(overrides or {})}
    dataset, arch = str(params.get("dataset", "digits")), str(params.get("arch", "digits_cnn"))
    notes: list[str] = []
    train_size, test_size = _dataset_sizes(dataset, params.get("data_root"))
    models, cost = _count_models(params, notes)
    epochs = int(_number(params, "epochs", "train_epochs", default=0)) if models else 0
    train_passes = float(models * epochs * (train_size or 0) * cost)
    certified = models or 1
    examples, samples = _count_certification(params, test_size, notes)
    certify_passes = float(certified * (examples or 0) * samples)
    attack = 0.0
    if "num_attack" in params and "attack_steps" in params:
        draws = _number(params, "m_test", default=1) + sum(_as_list(params.get("m_test_sweep")))
        attack = float(params["num_attack"] * params["attack_steps"] * draws)
        notes.append("attacks (one attacked model, approximate): num_attack x attack_steps x "
                     "(m_test + sum(m_test_sweep)) fwd+bwd passes")
    if train_size is None:
        notes.append(f"size of dataset {dataset!r} unknown: training and certification passes not counted")
    plan = Plan(str(notebook.name), preset, dataset, arch, models, epochs, train_size, train_passes, certified,
                examples, samples, certify_passes, attack)
    plan.notes = notes
    if calibrate_device:
        try:
            rates = calibrate(arch, dataset, device, int(_number(params, "batch_size", default=256)),
                              int(_number(params, "certify_batch", "batch", default=1000)), calibration_seconds)
        except (ValueError, RuntimeError) as err:
            notes.append(f"no calibration: {err}")
        else:
            plan.device, plan.train_rate, plan.infer_rate = rates["device"], rates["train_per_s"], rates["infer_per_s"]
            plan.seconds = (train_passes + attack) / plan.train_rate + certify_passes / plan.infer_rate
            notes.append("wall-clock = passes / calibrated rates; excludes data loading and evaluation")
    return plan
