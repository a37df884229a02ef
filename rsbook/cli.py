"""Command line: ``python -m rsbook {train,certify,merge,analyze,run,benchmark} ...`` (also ``rsbook ...``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]

def _cmd_train(a):
    from rsbook.data import get_dataset
    from rsbook.models import get_model
    from rsbook.runner import parse_overrides
    from rsbook.train import fit, make_objective
    from rsbook.utils import seed_everything

    seed_everything(a.seed, threads=None)
    model = get_model(a.arch, a.dataset)
    objective = make_objective(a.objective, a.sigma, a.num_noise, **parse_overrides(a.objective_arg))
    train_set = get_dataset(a.dataset, "train", root=a.data_root, download=a.download)
    history = fit(model, train_set, objective, a.epochs, batch_size=a.batch_size, lr=a.lr, momentum=a.momentum,
                  weight_decay=a.weight_decay, schedule=a.schedule, step_size=a.step_size, gamma=a.gamma,
                  checkpoint=a.out, arch=a.arch, dataset=a.dataset, device=a.device, seed=a.seed,
                  num_workers=a.workers)
    print(json.dumps(history[-1]))


def _cmd_certify(a):
    from rsbook.certify import certify_dataset
    from rsbook.data import dataset_info, get_dataset
    from rsbook.models import load_checkpoint
    from rsbook.smooth import Smooth
    from rsbook.utils import default_device

    device = a.device or default_device()
    model, ckpt = load_checkpoint(a.checkpoint, map_location=device)
    model.to(device).eval()
    dataset = a.dataset or ckpt["dataset"]
    data = get_dataset(dataset, a.split, root=a.data_root)
    smooth = Smooth(model, dataset_info(dataset).num_classes, a.sigma, device=device)
    out = certify_dataset(smooth, data, a.n0, a.n, a.alpha, a.out, skip=a.skip, max_examples=a.max,
                          shard=a.shard, batch_size=a.batch_size, seed=a.seed)
    print(out)


def _cmd_merge(a):
    from rsbook.certify import merge_logs

    print(merge_logs(a.logs, a.out))


def _cmd_analyze(a):
    from rsbook.analysis import summary_table

    table = summary_table({Path(p).name: p for p in a.logs}, a.radii)
    print(table.round(3).to_string())


def _cmd_run(a):
    from rsbook.runner import parse_overrides, run_notebook

    print(run_notebook(a.notebook, preset=a.preset, params_file=a.params, overrides=parse_overrides(a.p),
                       run_dir=a.run_dir, kernel=a.kernel))


def _cmd_benchmark(a):
    from rsbook.benchmark import benchmark_certify

    result = benchmark_certify(a.arch, a.dataset, a.batch_size, a.n, a.n0, a.rounds, a.device)
    width = max(map(len, result))
    for k, v in result.items():
        print(f"{k:<{width}}  {v:,.3f}" if isinstance(v, float) else f"{k:<{width}}  {v}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rsbook", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a base classifier with one objective; checkpoint every epoch, resumable")
    t.add_argument("--dataset", required=True)
    t.add_argument("--arch", required=True)
    t.add_argument("--sigma", type=float, required=True)
    t.add_argument("--objective", default="gaussian", help="gaussian | smoothadv (see rsbook.train.OBJECTIVES)")
    t.add_argument("--num-noise", type=int, default=1, help="noise draws per example (m_train)")
    t.add_argument("--objective-arg", action="append", metavar="KEY=VALUE",
                   help="extra objective argument, e.g. epsilon=0.5 (repeatable)")
    t.add_argument("--epochs", type=int, default=90)
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=0.1)
    t.add_argument("--momentum", type=float, default=0.9)
    t.add_argument("--weight-decay", type=float, default=1e-4)
    t.add_argument("--schedule", default="step", choices=["step", "cosine", "constant"])
    t.add_argument("--step-size", type=int, default=30)
    t.add_argument("--gamma", type=float, default=0.1)
    t.add_argument("--out", required=True, help="checkpoint path (resumed if it exists)")
    t.add_argument("--data-root")
    t.add_argument("--download", action="store_true")
    t.add_argument("--device")
    t.add_argument("--workers", type=int, default=0)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=_cmd_train)

    c = sub.add_parser("certify", help="CERTIFY every example of a split into a resumable log")
    c.add_argument("--checkpoint", required=True)
    c.add_argument("--sigma", type=float, required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--dataset", help="default: the checkpoint's dataset")
    c.add_argument("--split", default="test")
    c.add_argument("--data-root")
    c.add_argument("--n0", type=int, default=100)
    c.add_argument("--n", type=int, default=100_000)
    c.add_argument("--alpha", type=float, default=0.001)
    c.add_argument("--batch-size", type=int, default=1000)
    c.add_argument("--skip", type=int, default=1)
    c.add_argument("--max", type=int)
    c.add_argument("--shard", help="i/k: certify the i-th of k disjoint slices")
    c.add_argument("--device")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=_cmd_certify)

    m = sub.add_parser("merge", help="merge shard logs into one")
    m.add_argument("out")
    m.add_argument("logs", nargs="+")
    m.set_defaults(func=_cmd_merge)

    an = sub.add_parser("analyze", help="ACR and certified accuracy of logs")
    an.add_argument("logs", nargs="+")
    an.add_argument("--radii", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
    an.set_defaults(func=_cmd_analyze)

    r = sub.add_parser("run", help="run a notebook with papermill from a preset or a YAML parameter file")
    r.add_argument("notebook")
    g = r.add_mutually_exclusive_group()
    g.add_argument("--preset")
    g.add_argument("--params", help="YAML file of parameters")
    r.add_argument("-p", action="append", metavar="KEY=VALUE", help="override one parameter (repeatable)")
    r.add_argument("--run-dir")
    r.add_argument("--kernel", default="python3")
    r.set_defaults(func=_cmd_run)

    b = sub.add_parser("benchmark", help="certification throughput vs raw forward passes and a naive counter")
    b.add_argument("--arch", default="digits_cnn")
    b.add_argument("--dataset", default="digits")
    b.add_argument("--batch-size", type=int, default=1000)
    b.add_argument("--n", type=int, default=20_000)
    b.add_argument("--n0", type=int, default=100)
    b.add_argument("--rounds", type=int, default=5)
    b.add_argument("--device")
    b.set_defaults(func=_cmd_benchmark)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"rsbook {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0
