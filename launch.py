"""Entry point: ``python launch.py --config=configs/X.py --workdir=DIR [--config.a.b=v] [--mode=train]``.

Re-running the same command resumes from the latest checkpoint in ``--workdir``.
"""

import importlib
import os
import shlex
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from gdc import config as config_lib
from gdc.errors import ConfigError

config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, trackers and metrics.")
STUDY_MODES = ("run", "all", "train", "score", "intervene", "retrain", "evaluate", "report")
# Experiment families beside GenDataCarto: a config holding one of these top-level sections is handed whole to
# that package's ``run(config, workdir, mode=..., command=...)``; the package's ``MODES`` lists its modes.
FAMILIES = {
    "theory": "gdc.theory",
    "lm_audit": "gdc.lm_audit",
    "classify": "gdc.classify",
    "ssl": "gdc.ssl",
    "icl": "gdc.icl",
    "tabular": "gdc.tabular",
}
flags.DEFINE_string(
    "mode",
    "run",
    "run: one training run in --workdir. all: the whole study (probe, score, intervene, retrain, evaluate, report "
    "for every study.seeds); the other study modes run one stage. Family configs (configs/theory_*.py and the "
    "other families in launch.FAMILIES) take the modes their package lists, e.g. --mode=verify for theory.",
)
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    if FLAGS.verbosity == 0:  # Orbax logs every save at INFO: keep the console readable unless -v 1 is given.
        logging.set_verbosity(logging.WARNING)
    print(
        f"gdc: jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
        f"{jax.process_count()} process(es)",
        flush=True,
    )
    try:
        family = next((name for name in FAMILIES if name in FLAGS.config), None)
        if family is not None:  # a family config holds seed and its own section: its package reads it.
            package = importlib.import_module(FAMILIES[family])
            if FLAGS.mode not in package.MODES:
                raise ConfigError(f"--mode={FLAGS.mode}: a {family} config runs with --mode in {package.MODES}.")
            config_lib.check_workdir(FLAGS.workdir)
            command = " ".join(["python", *map(shlex.quote, sys.argv)])
            package.run(FLAGS.config, FLAGS.workdir, mode=FLAGS.mode, command=command)
            print(f"done: --mode={FLAGS.mode} in {FLAGS.workdir}")
            return
        if FLAGS.mode not in STUDY_MODES:
            raise ConfigError(f"--mode={FLAGS.mode} is not one of {STUDY_MODES}.")
        cfg = config_lib.from_mapping(FLAGS.config, device_count=jax.device_count())
        config_lib.check_workdir(FLAGS.workdir)
        if FLAGS.mode == "run":
            from gdc.train import loop

            result = loop.train(cfg, FLAGS.workdir)
            print(f"done: step {int(result.state.step)}, metrics {result.last_metrics}")
        else:
            from gdc.pipelines import study

            with open(os.path.join(FLAGS.workdir, "commands.txt"), "a") as f:  # the report cites how it was made
                f.write(" ".join(["python", *map(shlex.quote, sys.argv)]) + "\n")
            study.run(cfg, FLAGS.workdir, FLAGS.mode)
            print(f"done: --mode={FLAGS.mode} in {FLAGS.workdir}")
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
