"""Command line: ``python -m rsbook {train,certify,merge,analyze,run,benchmark,status,plan} ...`` (also ``rsbook ...``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

__all__ = ["main", "build_parser"]


def _number_type(kind, low=None, low_open=False, high=None, high_open=False, what=""):
    """An argparse type: an int/float in a range, so a bad value is a one-line usage error naming the option."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}{what}, "
                                             f"got {text!r}") from None
        if kind is float and value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be a finite number{what}, got {text!r}")
        if (low is not None and (value <= low if low_open else value < low)) or (
                high is not None and (value >= high if high_open else value > high)):
            raise argparse.ArgumentTypeError(f"must be {what.strip(' ,') or 'in range'}, got {text!r}")
        return value
    return parse


POSITIVE_INT = _number_type(int, 1, what=" >= 1")
NONNEG_INT = _number_type(int, 0, what=" >= 0")
POSITIVE_FLOAT = _number_type(float, 0, low_open=True, what=" > 0")
NONNEG_FLOAT = _number_type(float, 0, what=" >= 0")
ALPHA = _number_type(float, 0, low_open=True, high=1, high_open=True,
                     what=" in the open interval (0, 1) (a failure probability)")
DECAY = _number_type(float, 0, low_open=True, high=1, what=" in (0, 1] (the factor the learning rate is multiplied by)")

def _cmd_train(a):
    from rsbook.certify import check_output_file
    from rsbook.data import get_dataset
    from rsbook.models import get_model
    from rsbook.runner import parse_overrides
    from rsbook.train import fit, make_objective
    from rsbook.utils import check_device, seed_everything

    device = check_device(a.device, "--device")
    check_output_file(a.out, "--out")
    seed_everything(a.seed, threads=None)
    model = get_model(a.arch, a.dataset)
    objective = make_objective(a.objective, a.sigma, a.num_noise, option_flag="--objective-arg",
                               **parse_overrides(a.objective_arg))
    train_set = get_dataset(a.dataset, "train", root=a.data_root, download=a.download)
    history = fit(model, train_set, objective, a.epochs, batch_size=a.batch_size, lr=a.lr, momentum=a.momentum,
                  weight_decay=a.weight_decay, schedule=a.schedule, step_size=a.step_size, gamma=a.gamma,
                  checkpoint=a.out, arch=a.arch, dataset=a.dataset, device=device, seed=a.seed,
                  num_workers=a.workers)
    _report_and_leave(json.dumps(history[-1]))


def _report_and_leave(line):
    """Print on rank 0 only (one line per torchrun job, not one per process) and leave the process group."""
    from rsbook.distributed import shutdown

    if int(os.environ.get("RANK", "0")) == 0:
        print(line)
    shutdown()


def _cmd_train_config(a):
    from rsbook.experiment import check_launch_spec, train_from_spec

    check_launch_spec(a.spec)
    train_from_spec(a.spec)
    _report_and_leave(f"trained {a.spec}")


def _cmd_certify(a):
    from rsbook.certify import certify_dataset, check_certifier_options, check_output_file
    from rsbook.data import dataset_info, get_dataset
    from rsbook.models import load_checkpoint
    from rsbook.runner import parse_overrides
    from rsbook.smooth import Smooth
    from rsbook.utils import check_device

    device = check_device(a.device, "--device")
    shard = resolve_shard(a.shard)
    fn, extra_columns = _certifier(a.certifier)
    options = parse_overrides(a.certifier_arg)
    check_certifier_options(a.certifier, options, "--certifier-arg")
    check_output_file(a.out, "--out")
    if Path(a.checkpoint).is_dir():
        raise ValueError(f"--checkpoint {a.checkpoint} is a directory; give the checkpoint file (.pth/.pth.tar)")
    model, ckpt = load_checkpoint(a.checkpoint, map_location=device, normalization=a.normalization)
    model.to(device).eval()
    dataset = a.dataset or ckpt["dataset"]
    _check_model_fits(ckpt, dataset)
    data = get_dataset(dataset, a.split, root=a.data_root)
    noise = a.sigma
    if a.noise != "gaussian" or a.noise_arg:
        from rsbook.noise import make_noise_family

        noise = make_noise_family(a.noise, a.sigma, dim=dataset_info(dataset).input_numel,
                                  option_flag="--noise-arg", **parse_overrides(a.noise_arg))
    smooth = Smooth(model, dataset_info(dataset).num_classes, noise, device=device, precision=a.precision,
                    channels_last=a.channels_last, compile=a.compile)
    def certify_fn(x):
        return fn(smooth, x, n0=a.n0, n=a.n, alpha=a.alpha, batch_size=a.batch_size, **options)

    settings = {"dataset": dataset, "split": a.split, "certifier": a.certifier, "certifier_args": options,
                "normalization": ckpt["normalization"]}
    out = certify_dataset(smooth, data, a.n0, a.n, a.alpha, a.out, skip=a.skip, max_examples=a.max,
                          shard=shard, batch_size=a.batch_size, seed=a.seed, certify_fn=certify_fn,
                          extra_columns=extra_columns, settings=settings,
                          info={"checkpoint": str(Path(a.checkpoint).resolve()), "device": str(device)})
    print(out)


def _check_model_fits(ckpt: dict, dataset: str) -> None:
    """A checkpoint's model certifies only inputs of the shape and classes it was built for."""
    from rsbook.data import dataset_info

    built, given = dataset_info(ckpt["dataset"]), dataset_info(dataset)
    if built.input_shape != given.input_shape or built.num_classes != given.num_classes:
        def show(info):
            return f"{'x'.join(map(str, info.input_shape))} inputs, {info.num_classes} classes"
        raise ValueError(f"the checkpoint's model ({ckpt['arch']}) was built for {ckpt['dataset']} "
                         f"({show(built)}); --dataset {dataset} has {show(given)}")


def _cmd_merge(a):
    from rsbook.certify import merge_logs

    print(merge_logs(a.logs, a.out))


def _cmd_analyze(a):
    from rsbook.analysis import summary_table

    table = summary_table({p: p for p in a.logs}, a.radii)  # keyed by the path given: two full.tsv stay two
    print(table.round(3).to_string())


def _cmd_run(a):
    from rsbook.runner import parse_overrides, run_notebook

    run_dir = run_notebook(a.notebook, preset=a.preset, params_file=a.params, overrides=parse_overrides(a.p),
                           run_dir=a.run_dir, kernel=a.kernel)
    print(f"done: {run_dir} (parameters.yaml, the executed {Path(a.notebook).name}, checkpoints, logs, figures)")


def _cmd_benchmark(a):
    from rsbook.benchmark import benchmark_precisions
    from rsbook.utils import check_device

    a.device = None if a.device is None else str(check_device(a.device, "--device"))
    if a.checkpoint is not None and not Path(a.checkpoint).is_file():
        raise FileNotFoundError(f"--checkpoint {a.checkpoint}: no such file")

    table = benchmark_precisions(a.arch, a.dataset, a.precision, a.batch_size, a.n, a.n0, a.rounds, a.device,
                                 a.sigma, a.channels_last, a.compile, a.checkpoint, a.disagreement_inputs,
                                 a.disagreement_n)
    first = table.iloc[0]
    print(f"device {first['device']}, arch {first['arch']}, batch {a.batch_size}, n0 + n = {a.n0} + {a.n}, "
          f"median of {a.rounds} rounds, {first['threads']} threads, channels_last={a.channels_last}, "
          f"compile={a.compile}")
    cols = {"precision": "precision", "raw_samples_per_s": "raw/s", "certify_samples_per_s": "certify/s",
            "naive_samples_per_s": "naive/s", "certify_over_raw": "certify/raw",
            "certify_over_naive": "certify/naive", "seconds_per_image": "s/image",
            "disagree_with_fp32": "disagree vs fp32"}
    print(table[list(cols)].rename(columns=cols).to_string(
        index=False, float_format=lambda v: f"{v:,.0f}" if abs(v) >= 100 else f"{v:.4g}"))
    print(f"disagree vs fp32: fraction of {int(first['disagreement_samples']):,} noisy inputs "
          f"({a.disagreement_inputs} images x {a.disagreement_n} draws) classified differently than in float32")


def _import_all() -> None:
    """Import every rsbook module once, so each paper module has registered its objectives and certifiers."""
    import importlib
    import pkgutil

    import rsbook

    for info in pkgutil.iter_modules(rsbook.__path__):
        if info.name not in ("__main__", "cli"):
            importlib.import_module(f"rsbook.{info.name}")


def _certifier(name):
    """``(fn, extra_columns)`` of a registered certifier (:data:`rsbook.certify.CERTIFIERS`)."""
    from rsbook._checks import check_choice
    from rsbook.certify import CERTIFIERS

    if name not in CERTIFIERS:
        _import_all()
    check_choice(name, CERTIFIERS, "certifier")
    return CERTIFIERS[name]


def resolve_shard(shard, environ=None):
    """``--shard``: ``None``, ``"i/k"``, or ``"auto"`` = this Slurm array task's slice.

    ``auto`` reads ``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT`` (and
    ``SLURM_ARRAY_TASK_MIN``, so ``--array=1-8`` works as well as ``--array=0-7``).
    """
    from rsbook.certify import parse_shard

    if shard != "auto":
        return parse_shard(shard)
    env = os.environ if environ is None else environ
    try:
        task, count = int(env["SLURM_ARRAY_TASK_ID"]), int(env["SLURM_ARRAY_TASK_COUNT"])
    except KeyError as err:
        raise ValueError(f"--shard auto needs the Slurm array variables ({err.args[0]} is not set): run it "
                         "inside `sbatch --array=0-<k-1>`, or give --shard i/k") from None
    except ValueError:
        raise ValueError("--shard auto: SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT must be integers, got "
                         f"{env.get('SLURM_ARRAY_TASK_ID')!r}/{env.get('SLURM_ARRAY_TASK_COUNT')!r}") from None
    return parse_shard((task - int(env.get("SLURM_ARRAY_TASK_MIN", 0)), count))


def _log_indices(path) -> list[int]:
    """The ``idx`` of every complete row of a certification log (read only: a half-written row is skipped)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"log not found: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a certification log")
    text = path.read_text()
    lines = text.split("\n")[:-1]  # the part after the last newline is incomplete (or empty)
    if not lines:
        return []
    header = lines[0].split("\t")
    if "idx" not in header:
        raise ValueError(f"{path} is not a certification log: its header {header} has no 'idx' column")
    col = header.index("idx")
    return [int(line.split("\t")[col]) for line in lines[1:] if line.strip()]


def _ranges(values) -> str:
    """``[0, 1, 2, 5, 7, 8]`` (positions in the expected list) -> ``"0-2, 5, 7-8"``."""
    parts, run = [], []
    for pos, value in values:
        if run and pos == run[-1][0] + 1:
            run.append((pos, value))
            continue
        if run:
            parts.append(f"{run[0][1]}-{run[-1][1]}" if len(run) > 1 else f"{run[0][1]}")
        run = [(pos, value)]
    if run:
        parts.append(f"{run[0][1]}-{run[-1][1]}" if len(run) > 1 else f"{run[0][1]}")
    return ", ".join(parts)


def _cmd_status(a):
    from collections import Counter

    from rsbook.certify import check_same_run, select_indices

    per_log = {p: _log_indices(p) for p in a.logs}
    record = check_same_run(a.logs, "report one run's status")
    skip, max_examples = a.skip, a.max
    if record is not None:  # the logs say which rows their run has; a different --skip/--max is another run
        recorded = record["selection"]
        for option, given, key in (("--skip", skip, "skip"), ("--max", max_examples, "max_examples")):
            if given is not None and given != recorded.get(key):
                raise ValueError(f"{option} {given} differs from the run's {key}={recorded.get(key)!r} "
                                 f"recorded with {a.logs[0]}; leave it out or give the recorded value")
        skip, max_examples = recorded.get("skip", 1), recorded.get("max_examples")
    counts = Counter(i for rows in per_log.values() for i in rows)
    for p, rows in per_log.items():
        print(f"{p}: {len(rows)} rows")
    repeated = sorted(i for i, c in counts.items() if c > 1)
    if repeated:
        print(f"warning: {len(repeated)} indices appear in more than one log (overlapping shards?), "
              f"first {repeated[:5]}")
    length = a.length
    if length is None and a.dataset is not None:
        from rsbook.data import get_dataset

        length = len(get_dataset(a.dataset, a.split, root=a.data_root))
    if record is not None:
        recorded_length = record["settings"].get("length")
        if length is not None and recorded_length is not None and length != recorded_length:
            raise ValueError(f"the logs certify a split of {recorded_length} examples, not {length}")
        length = recorded_length if length is None else length
    if length is None:
        done = sorted(counts)
        print(f"done: {len(done)} indices ({_ranges(enumerate(done)) or 'none'}); give --length or --dataset "
              "(with --skip/--max as certified) to list the missing ones")
        return 0
    expected = select_indices(length, skip or 1, max_examples)
    missing = [(pos, i) for pos, i in enumerate(expected) if i not in counts]
    print(f"done: {len(expected) - len(missing)}/{len(expected)} indices of the run")
    if missing:
        print(f"missing ({len(missing)}): {_ranges(missing)}")
        return 1
    print("complete: merge with `rsbook merge OUT " + " ".join(str(p) for p in a.logs) + "`")
    return 0


def _cmd_plan(a):
    from rsbook.plan import plan_notebook
    from rsbook.runner import parse_overrides

    from rsbook.utils import check_device

    device = None if a.device is None else check_device(a.device, "--device")
    plan = plan_notebook(a.notebook, preset=a.preset, params_file=a.params, overrides=parse_overrides(a.p),
                         calibrate_device=not a.no_calibration, device=device,
                         calibration_seconds=a.calibration_seconds)
    print(json.dumps(plan.to_dict(), indent=1) if a.json else plan)


def _notebook_arguments(parser) -> None:
    """A notebook and its parameters: a preset or a YAML file, then ``-p KEY=VALUE`` overrides."""
    parser.add_argument("notebook")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--preset")
    group.add_argument("--params", help="YAML file of parameters")
    parser.add_argument("-p", action="append", metavar="KEY=VALUE", help="override one parameter (repeatable)")


class _Parser(argparse.ArgumentParser):
    """Bad input is one line (the error and where to read more), exit status 2, as for every other error."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rsbook", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a base classifier with one objective; checkpoint every epoch, resumable")
    t.add_argument("--dataset", required=True)
    t.add_argument("--arch", required=True)
    t.add_argument("--sigma", type=POSITIVE_FLOAT, required=True, help="noise level of training (std of the Gaussian)")
    t.add_argument("--objective", default="gaussian",
                   help="training method, one of: " + ", ".join(_registered("objectives")))
    t.add_argument("--num-noise", type=POSITIVE_INT, default=1, help="noise draws per example (m_train)")
    t.add_argument("--objective-arg", action="append", metavar="KEY=VALUE",
                   help="extra objective argument, e.g. epsilon=0.5 (repeatable)")
    t.add_argument("--epochs", type=POSITIVE_INT, default=90)
    t.add_argument("--batch-size", type=POSITIVE_INT, default=256)
    t.add_argument("--lr", type=POSITIVE_FLOAT, default=0.1)
    t.add_argument("--momentum", type=NONNEG_FLOAT, default=0.9)
    t.add_argument("--weight-decay", type=NONNEG_FLOAT, default=1e-4)
    t.add_argument("--schedule", default="step", choices=["step", "cosine", "constant"])
    t.add_argument("--step-size", type=POSITIVE_INT, default=30)
    t.add_argument("--gamma", type=DECAY, default=0.1)
    t.add_argument("--out", required=True, help="checkpoint path (resumed if it exists)")
    t.add_argument("--data-root")
    t.add_argument("--download", action="store_true")
    t.add_argument("--device")
    t.add_argument("--workers", type=NONNEG_INT, default=0)
    t.add_argument("--seed", type=NONNEG_INT, default=0)
    t.set_defaults(func=_cmd_train)

    c = sub.add_parser("certify", help="CERTIFY every example of a split into a resumable log")
    c.add_argument("--checkpoint", required=True)
    c.add_argument("--sigma", type=POSITIVE_FLOAT, required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--dataset", help="default: the checkpoint's dataset")
    c.add_argument("--split", default="test", choices=["train", "test"])
    c.add_argument("--data-root")
    c.add_argument("--n0", type=POSITIVE_INT, default=100)
    c.add_argument("--n", type=POSITIVE_INT, default=100_000)
    c.add_argument("--alpha", type=ALPHA, default=0.001)
    c.add_argument("--batch-size", type=POSITIVE_INT, default=1000)
    c.add_argument("--skip", type=POSITIVE_INT, default=1)
    c.add_argument("--max", type=POSITIVE_INT)
    c.add_argument("--shard", help="i/k: certify the i-th of k disjoint slices; auto: this Slurm array task's")
    c.add_argument("--device")
    c.add_argument("--seed", type=NONNEG_INT, default=0)
    c.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="inference precision of the base classifier (certificates hold for it as run)")
    c.add_argument("--channels-last", action="store_true", help="channels_last memory layout")
    c.add_argument("--compile", action="store_true", help="run the base classifier through torch.compile")
    c.add_argument("--certifier", default="certify",
                   help="certification procedure, one of: " + ", ".join(_registered("certifiers")))
    c.add_argument("--certifier-arg", action="append", metavar="KEY=VALUE", help="certifier option (repeatable)")
    c.add_argument("--noise", default="gaussian", help="noise family (rsbook.noise.NOISE_FAMILIES) of scale --sigma")
    c.add_argument("--noise-arg", action="append", metavar="KEY=VALUE", help="noise family option, e.g. k=10")
    c.add_argument("--normalization", choices=["standardize", "center"],
                   help="override the model's input normalisation (center: SmoothAdv's released models)")
    c.set_defaults(func=_cmd_certify)

    m = sub.add_parser("merge", help="merge shard logs into one")
    m.add_argument("out")
    m.add_argument("logs", nargs="+")
    m.set_defaults(func=_cmd_merge)

    an = sub.add_parser("analyze", help="ACR and certified accuracy of logs")
    an.add_argument("logs", nargs="+")
    an.add_argument("--radii", type=NONNEG_FLOAT, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
    an.set_defaults(func=_cmd_analyze)

    r = sub.add_parser("run", help="run a notebook with papermill from a preset or a YAML parameter file")
    _notebook_arguments(r)
    r.add_argument("--run-dir")
    r.add_argument("--kernel", default="python3")
    r.set_defaults(func=_cmd_run)

    b = sub.add_parser("benchmark", help="certification throughput vs raw forward passes and a naive counter")
    b.add_argument("--arch", default="digits_cnn")
    b.add_argument("--dataset", default="digits")
    b.add_argument("--batch-size", type=POSITIVE_INT, default=1000)
    b.add_argument("--n", type=POSITIVE_INT, default=20_000)
    b.add_argument("--n0", type=POSITIVE_INT, default=100)
    b.add_argument("--rounds", type=POSITIVE_INT, default=5)
    b.add_argument("--device")
    b.add_argument("--sigma", type=POSITIVE_FLOAT, default=0.5)
    b.add_argument("--precision", nargs="+", default=["float32", "bfloat16", "float16"],
                   choices=["float32", "bfloat16", "float16"])
    b.add_argument("--channels-last", action="store_true")
    b.add_argument("--compile", action="store_true")
    b.add_argument("--checkpoint", help="benchmark a trained model (its arch and dataset)")
    b.add_argument("--disagreement-inputs", type=POSITIVE_INT, default=10, help="test images for the fp32 disagreement")
    b.add_argument("--disagreement-n", type=POSITIVE_INT, default=1000, help="noise draws per image for it")
    b.set_defaults(func=_cmd_benchmark)

    tc = sub.add_parser("train-config", help="train one experiment-helper run from its launch.json (used under "
                                             "torchrun by rsbook.experiment.train_run(gpus=N))")
    tc.add_argument("spec")
    tc.set_defaults(func=_cmd_train_config)

    st = sub.add_parser("status", help="which indices of a (sharded) certification run are done")
    st.add_argument("logs", nargs="+", help="the run's shard logs")
    st.add_argument("--length", type=POSITIVE_INT, help="size of the certified split (default: recorded with the logs)")
    st.add_argument("--dataset", help="... or the dataset, to read its size")
    st.add_argument("--split", default="test", choices=["train", "test"])
    st.add_argument("--data-root")
    st.add_argument("--skip", type=POSITIVE_INT, help="as given to certify (default: recorded with the logs, else 1)")
    st.add_argument("--max", type=POSITIVE_INT, help="as given to certify (default: recorded with the logs)")
    st.set_defaults(func=_cmd_status)

    pl = sub.add_parser("plan", help="what a notebook preset will train and certify, and how long it will take")
    _notebook_arguments(pl)
    pl.add_argument("--device", help="device to calibrate on (default: cuda if available)")
    pl.add_argument("--no-calibration", action="store_true", help="counts only, no timing")
    pl.add_argument("--calibration-seconds", type=POSITIVE_FLOAT, default=2.0)
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=_cmd_plan)
    return p


def _registered(kind: str) -> list[str]:
    """Names in the objective or certifier registry, with every paper module imported (they register there)."""
    _import_all()
    if kind == "objectives":
        from rsbook.train import OBJECTIVES

        return sorted(OBJECTIVES)
    from rsbook.certify import CERTIFIERS

    return sorted(CERTIFIERS)


#: how each subcommand lets its user point at the data, for the messages of a missing dataset
_DATA_OPTION = {"run": "pass -p data_root=DIR", "plan": "pass -p data_root=DIR"}


def main(argv=None) -> int:
    import warnings

    args = build_parser().parse_args(argv)
    # a warning for the user (a half-written log line, ...) reads as one line, not as a source location
    plain_format = warnings.formatwarning
    warnings.formatwarning = lambda message, category, *rest, **kw: (
        f"rsbook {args.command}: warning: {message}\n" if category is UserWarning
        else plain_format(message, category, *rest, **kw))
    try:
        code = args.func(args)
    except (ValueError, FileNotFoundError) as err:
        from rsbook.data import DatasetNotFound

        if isinstance(err, DatasetNotFound):
            err = err.message(root=_DATA_OPTION.get(args.command, "pass --data-root DIR"),
                              download="pass --download (rsbook train)")
        print(f"rsbook {args.command}: error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:
        from rsbook.runner import NotebookFailed

        if not isinstance(err, NotebookFailed):
            raise
        print(f"rsbook {args.command}: failed: {err}", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = plain_format
    return code or 0
