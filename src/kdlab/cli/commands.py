"""Every ``kdlab`` command's arguments, and the handler that runs it, named as ``"module:function"``.

Only argparse and the standard library here: ``kdlab --help``, ``kdlab recipes`` and a mistyped argument must not
pay for torch (1.4 CPU-s to import, docs/performance.md). :func:`kdlab.cli.main` imports the chosen command's handler
module by that name once the arguments parse. The choices that a handler module also defines are repeated here as
literals; tests/cli/test_startup.py checks that each equals its source.
"""

from __future__ import annotations

import argparse

DATASETS = ("mnist1d", "cifar10", "cifar100", "tiny_imagenet", "imagenet", "imagefolder")  # kdlab.data.DATASETS
SOURCES = ("test", "train_clean", "train_aug", "distill_stream")  # kdlab.fidelity.sources.SOURCES
EXPORT_FORMATS = ("torchscript", "onnx")  # kdlab.models.export.FORMATS
PRECISIONS = ("float32", "float16", "topk")  # kdlab.teachers.store.PRECISIONS
MIRROR_ENV = "KDLAB_TEACHER_MIRROR"  # kdlab.teachers.published.MIRROR_ENV


def register(sub: argparse._SubParsersAction) -> None:
    """Add every command to ``sub`` (the parser's subcommands), in the order ``kdlab --help`` lists them."""
    for group in (_showcase, _train, _teachers, _teacher_cache, _evaluate, _export, _predict, _sweep):
        group(sub)


def _showcase(sub) -> None:
    d = sub.add_parser("demo", help="compare every method on MNIST-1D (teacher trained or reused from cache)")
    d.add_argument("--quick", action="store_true", help="a smaller version: 10 epochs, 1 seed (about 30 s on 2 cores)")
    d.add_argument("--seeds", type=int, default=None, help="seeds per method (default 3, 1 with --quick)")
    d.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars (the table is printed all the same)")
    d.add_argument("--features", action="store_true",
                   help="the feature methods' table instead (FitNets ... ReviewKD beside CE and KD; features.md)")
    d.set_defaults(handler="kdlab.cli.showcase:_demo")

    x = sub.add_parser("experiment", help="run a named experiment of the papers (configs/experiments/NAME.yaml) on "
                                          "any recipe, as a sweep (local or SLURM); rerun to resume")
    x.add_argument("name", nargs="?", help="experiment name (see --list) or a spec YAML file")
    x.add_argument("overrides", nargs="*", help="key=value overrides of every student (data.*/run.* reach the "
                                                "teachers too), e.g. run.device=cuda")
    x.add_argument("--list", action="store_true", help="list the experiments")
    x.add_argument("--pair", help="the spec's pair to run (default: its first; a bad one lists them)")
    x.add_argument("--recipe", help="student recipe (name or YAML) instead of the pair's")
    x.add_argument("--teacher-recipe", help="train the teacher(s) with this recipe instead of the pair's")
    x.add_argument("--quick", action="store_true",
                   help="fewer variants and seeds (and epochs on MNIST-1D; docs/experiments.md)")
    x.add_argument("--seeds", type=int, default=None, help="seeds per variant (default: the spec's, 3)")
    x.add_argument("--epochs", type=int, default=None,
                   help="student epochs, lr milestones scaled alike (default: the spec's on MNIST-1D, else the "
                        "recipe's)")
    x.add_argument("--teacher-epochs", type=int, default=None, help="teacher epochs (as --epochs)")
    x.add_argument("--out", default=None, help="output directory (default experiments/NAME[_PAIR][_quick])")
    _executor_arguments(x)
    x.add_argument("--no-progress", action="store_true", help="no progress bars (the table is printed all the same)")
    x.set_defaults(handler="kdlab.cli.showcase:_experiment")


def _train(sub) -> None:
    for name, teacher, text in (("teacher", True, "train a teacher (CE only) from a config"),
                                ("train", False, "distil a student from a config; resumes in the same out_dir")):
        t = sub.add_parser(name, help=text, epilog="kdlab teacher import FILE --arch NAME --out OUT.safetensors "
                           "converts published weights instead" if teacher else None)
        t.add_argument("config", help="YAML file or shipped recipe name (see `kdlab recipes`)")
        t.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=0.1 seed=1")
        t.set_defaults(handler=f"kdlab.cli.train:_{name}")

    c = sub.add_parser("config", help="print a config after overrides and validation")
    c.add_argument("config", nargs="?", default=None,
                   help="YAML file or shipped recipe name (default: the built-in defaults)")
    c.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=0.1 seed=1")
    c.set_defaults(handler="kdlab.cli.recipes:_config")

    r = sub.add_parser("recipes", help="list the shipped configs")
    r.add_argument("--long", action="store_true",
                   help="also show each recipe's opening comment (what is published, what is a default)")
    r.set_defaults(handler="kdlab.cli.recipes:_recipes")
    m = sub.add_parser("methods", help="list the registered methods, one line each")
    m.set_defaults(handler="kdlab.cli.recipes:_methods")
    p = sub.add_parser("plot", help="draw RUN/curves.png (loss terms, accuracy, agreement per epoch) of run directories")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (out_dir of `kdlab train`/`kdlab teacher`)")
    p.set_defaults(handler="kdlab.cli.plot:_plot")


def _teachers(sub) -> None:
    f = sub.add_parser("teacher fetch", help="download and convert a published teacher once (repdistiller:<arch>, "
                                   "torchvision:<arch>[.<weights>]); teacher.checkpoint=NAME then uses it")
    f.add_argument("names", nargs="*", metavar="NAME", help="e.g. repdistiller:resnet32x4, torchvision:resnet34")
    f.add_argument("--list", action="store_true", help="list the published teachers, their files and checksums")
    f.add_argument("--url", default=None,
                   help="take the published file from here instead: a mirror's URL or a copy's path; or set "
                        f"${MIRROR_ENV} to a base URL or folder that has the files")
    f.add_argument("--root", default=None, help="data directory (default $KDLAB_DATA or ~/.cache/kdlab); the "
                                                "teachers go to ROOT/teachers/")
    f.set_defaults(handler="kdlab.cli.teachers:_fetch")
    p = sub.add_parser("teacher import", help="convert published teacher weights (torchvision .pth, RepDistiller's "
                                              "ckpt_epoch_240.pth, safetensors) into a kdlab model.safetensors")
    p.add_argument("file", help="the weights: .pth/.pt/.tar (read with torch.load(weights_only=True)) or .safetensors")
    p.add_argument("--arch", required=True, help="kdlab model name, e.g. resnet32x4 or resnet34")
    p.add_argument("--out", required=True, help="the kdlab weights file to write (.safetensors, must not exist)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="expected class count (default: read off the file's classifier)")
    p.set_defaults(handler="kdlab.cli.teachers:_import")


def _teacher_cache(sub) -> None:
    p = sub.add_parser("teacher cache", help="store a teacher's outputs on a crop schedule of a streamed data set, "
                                             "once, for every later student (FKD); resumable, shards under torchrun")
    p.add_argument("config", help="the student's run config (its data, teacher, epochs and seed), or a recipe name")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.root=/data/imagenet")
    p.add_argument("--precision", required=True, choices=PRECISIONS,
                   help="float32: exact (4 bytes x classes per view); float16: half of that, rounded; topk: FKD's "
                        "top-k log-probabilities and the remaining mass (4k+4 bytes per view), for methods that "
                        "accept it (kd, ce)")
    p.add_argument("--k", type=int, default=10, help="classes kept per view with --precision topk (default 10)")
    p.add_argument("--out", default=None, help="the store's directory (default: teacher.cache.store)")
    p.add_argument("--epochs", type=int, default=None, help="epochs of crops (default: optim.epochs)")
    p.add_argument("--schedule-seed", type=int, default=None,
                   help="seed of the crop schedule (default: the config's seed)")
    p.add_argument("--chunk-size", type=int, default=256, help="crops per teacher forward (default 256)")
    p.set_defaults(handler="kdlab.cli.teacher_cache:_cache")


def _evaluate(sub) -> None:
    e = sub.add_parser("eval", help="accuracy and teacher–student fidelity of a run or of checkpoints on a test set")
    e.add_argument("run", nargs="?", default=None,
                   help="a run directory: its config.yaml gives the data and the teacher, model.safetensors the model")
    e.add_argument("--student", default=None,
                   help="student weights (default: RUN/model.safetensors); a run's file reads its run's config.yaml")
    e.add_argument("--teacher", action="append",
                   help="teacher weights (repeat for an ensemble; default: a student run's teacher.checkpoint)")
    e.add_argument("--arch", default=None,
                   help="zoo architecture of the student, for weights that do not record it (e.g. from kdlab.fit)")
    e.add_argument("--teacher-arch", default=None,
                   help="zoo architecture of the teacher, for weights that do not record it (torchvision's .pth)")
    e.add_argument("--data", default=None, choices=list(DATASETS),
                   help="data set whose test split is used, for weight files outside a run (default mnist1d)")
    e.add_argument("--root", default=None, help="dataset directory (default $KDLAB_DATA or ~/.cache/kdlab)")
    e.add_argument("--image-size", type=int, default=224, help="crop side for imagenet/imagefolder (the training "
                                                                 "run's data.image_size)")
    e.add_argument("--temperature", type=float, default=None, help="also report KL at this temperature")
    e.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    e.add_argument("--json", default=None, metavar="PATH",
                   help="also write the full report as JSON to PATH ('-': print only the JSON, to stdout)")
    e.set_defaults(handler="kdlab.cli.evaluate:_eval")

    f = sub.add_parser("fidelity", help="fidelity report of checkpoints on named sources, with an optional "
                                        "independent-student control")
    f.add_argument("--student", help="student model.safetensors (default: --run DIR/model.safetensors)")
    f.add_argument("--teacher", action="append", help="teacher model.safetensors (repeat for an ensemble)")
    f.add_argument("--control", help="a student distilled the same way from an independent teacher")
    f.add_argument("--run", help="training out_dir: its config.yaml gives data, distill_data, teacher and τ; "
                                 "needed for the distill_stream source")
    f.add_argument("--sources", default="test,train_clean,train_aug",
                   help=f"comma-separated subset of {','.join(SOURCES)}")
    f.add_argument("--data", default="mnist1d", choices=list(DATASETS), help="dataset (without --run)")
    f.add_argument("--root", default=None, help="dataset directory (without --run)")
    f.add_argument("--image-size", type=int, default=224, help="crop side for imagenet/imagefolder (without --run)")
    f.add_argument("--temperature", type=float, default=None,
                   help="also report KL at this (training) temperature; default: the run's method temperature")
    f.add_argument("--ensemble-rule", choices=["prob", "tempered_prob", "logit"], default=None,
                   help="how several teachers are combined (default: the run's teacher.ensemble_rule, else prob)")
    f.add_argument("--batch-size", type=int, default=512, help="evaluation batch size (default 512)")
    f.add_argument("--seed", type=int, default=0, help="seed of the train_aug pass")
    f.add_argument("--cka", action="store_true", help="add linear CKA of pooled features (test, train_clean)")
    f.add_argument("--bins", type=int, default=10,
                   help="fidelity per teacher-confidence and teacher-entropy bin, in this many equal-count bins "
                        "(default 10; 0: off)")
    f.add_argument("--plot", default=None, metavar="PATH",
                   help="draw the per-bin fidelity of the first source (accuracy, agreement, KL per bin) as a PNG")
    f.add_argument("--json", default=None, help="write the report to this JSON file")
    f.set_defaults(handler="kdlab.cli.evaluate:_fidelity")


def _export(sub) -> None:
    e = sub.add_parser("export", help="write a run's network as TorchScript or ONNX (runs without kdlab)")
    e.add_argument("run", help="a run directory (its model.safetensors and model.json) or a kdlab weights file")
    e.add_argument("--format", choices=EXPORT_FORMATS, default="torchscript",
                   help="torchscript (PyTorch only) or onnx (needs pip install \"kdlab[onnx]\"); default torchscript")
    e.add_argument("--out", default=None, help="output file (default: model.pt / model.onnx beside the weights)")
    e.add_argument("--arch", default=None, help="zoo architecture, for weights that do not record it")
    e.add_argument("--input-shape", default=None,
                   help="shape of one input sample, e.g. 3,32,32 (default: the run's model.json)")
    e.set_defaults(handler="kdlab.cli.export:_export")


def _predict(sub) -> None:
    p = sub.add_parser("predict", help="top classes of image files, by name and probability (a run's model.json)")
    p.add_argument("run", help="a run directory (its model.safetensors and model.json) or a weights file of a run")
    p.add_argument("images", nargs="+", help="image files (any format Pillow reads)")
    p.add_argument("--top", type=int, default=3, help="how many classes to print per image (default 3)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler="kdlab.cli.predict:_predict")


def _executor_arguments(s) -> None:
    """Where the cells of a sweep (or an experiment) run: locally or on SLURM."""
    s.add_argument("--jobs", type=int, help="local: cells at once (default: one per visible GPU, else 1)")
    s.add_argument("--threads", type=int, help="CPU threads per cell (default: the cores divided by --jobs)")
    s.add_argument("--executor", choices=("local", "slurm", "submitit-local"), default="local",
                   help="where cells run: worker processes here (default), SLURM array jobs through submitit, or "
                        "submitit's local executor (the SLURM job code as local processes)")
    s.add_argument("--procs-per-cell", type=int, help="processes (GPUs) per cell; > 1 runs each under torchrun")
    s.add_argument("--partition", help="slurm: partition")
    s.add_argument("--gpus-per-cell", type=int, help="slurm: GPUs per cell (default: --procs-per-cell)")
    s.add_argument("--cpus-per-cell", type=int, help="slurm: CPUs per cell (default 8)")
    s.add_argument("--time", type=int, help="slurm: time limit per job in minutes (requeued and resumed after)")
    s.add_argument("--array-parallelism", type=int, help="slurm: cells running at once (default 64)")
    s.add_argument("--no-wait", action="store_true", help="slurm: submit and return; rerun to collect")


def _sweep(sub) -> None:
    s = sub.add_parser("sweep", help="run recipes x seeds as ordinary runs, locally (--jobs) or on SLURM; rerun to "
                                     "resume")
    s.add_argument("spec", nargs="?", help="sweep spec YAML (recipes, seeds, overrides, teachers, out, slurm)")
    s.add_argument("--recipes", nargs="+", help="recipe names, files or patterns (e.g. 'cifar100/*/kd')")
    s.add_argument("--seeds", help="number of seeds (3 → 0,1,2) or a list (0,3,4)")
    s.add_argument("--set", dest="overrides", nargs="+", metavar="KEY=VALUE", help="overrides for every cell")
    s.add_argument("--teachers", choices=("auto", "train", "given"), help="train the recipes' teachers as cells, "
                   "use the given checkpoints, or auto (given where the file exists)")
    s.add_argument("--out", help="sweep directory (cells in OUT/<recipe>/seed<k>; default runs/sweeps/<spec>)")
    _executor_arguments(s)
    s.add_argument("--dry-run", action="store_true", help="list the cells and their state; run nothing")
    s.add_argument("--no-table", action="store_true", help="do not print the table at the end")
    s.add_argument("--no-progress", action="store_true", help="no progress bar over cells")
    s.set_defaults(handler="kdlab.cli.sweep:_sweep")

    t = sub.add_parser("table", help="paper-style table of runs (mean ± std over seeds) beside the published numbers")
    t.add_argument("runs", nargs="+", help="run directories, or directories holding runs (a sweep, demo_out)")
    t.add_argument("--format", action="append", default=[], metavar="md,csv,png",
                   help="what to write (default md); png needs --out")
    t.add_argument("--out", help="write OUT.md / OUT.csv / OUT.png instead of printing")
    t.add_argument("--published", help="published numbers (default: the shipped configs/published.yaml)")
    t.set_defaults(handler="kdlab.cli.sweep:_table")
