"""Entry point: ``python launch.py --config=configs/X.py --workdir=DIR [--config.a.b=v] [--mode=train]``.

Re-running the same command resumes from the latest checkpoint in ``--workdir``.

Several hosts: the same command on every process, plus either ``--distributed`` (JAX detects SLURM, Open MPI, TPU pod
slices and other clusters from their environment) or ``--coordinator_address=HOST:PORT --num_processes=P
--process_id=I``. Each process then loads only its rows of every batch, the mesh spans every process's devices,
process 0 writes the shared files and Orbax writes checkpoints from all of them; ``--workdir`` must be on a
filesystem every process sees.
"""

import dataclasses
import re
import shlex
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from gdc import config as parse
from gdc import lock, studies
from gdc.errors import CheckpointError, ConfigError, StageInputError
from gdc.studies.carto import config as carto_config

config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, trackers and metrics.")
flags.DEFINE_string(
    "mode",
    "run",
    "run: one training run in --workdir. all: the whole study (probe, score, intervene, retrain, evaluate, report "
    "for every study.seeds); the other study modes run one stage. Family configs (configs/theory_*.py and the "
    "other families in gdc.studies.FAMILIES) take the modes their package lists, e.g. --mode=verify for theory.",
)
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() with cluster auto-detection.")
flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 (multi-process runs without auto-detection).")
flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's id in [0, num_processes) (with --coordinator_address).")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def initialize_distributed() -> None:
    """Joins JAX's distributed runtime when asked to; must run before anything touches the devices."""
    given = [FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id]
    if any(v is not None for v in given) and not all(v is not None for v in given):
        raise ConfigError("--coordinator_address, --num_processes and --process_id go together: give all three.")
    if FLAGS.coordinator_address is not None:
        if not 0 <= FLAGS.process_id < FLAGS.num_processes:
            raise ConfigError(f"--process_id={FLAGS.process_id}: need 0 <= process_id < --num_processes.")
        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    elif FLAGS.distributed:
        jax.distributed.initialize()


def override_error(argv: list[str], error: Exception) -> str | None:
    """The message for ml_collections' error about a ``--config.a.b`` override naming a field the config lacks.

    ml_collections raises a bare AttributeError or KeyError (with a "Did you mean" only for near misses) from deep
    inside flag parsing; this names the override and the fields its section allows. None: not such an error.
    """
    text = str(error.args[0] if error.args else error)
    names = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)
    missing = names[0] if names else ""
    given = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    flag = next((a for a in given if missing in a[len("--config.") :].split(".")), None)
    if flag is None:
        return None
    path = flag[len("--config.") :].split(".")
    if path[0] in carto_config.SECTIONS and len(path) > 1:
        allowed = f"; {path[0]} allows {[f.name for f in dataclasses.fields(carto_config.SECTIONS[path[0]])]}"
    elif missing == path[0]:
        allowed = f"; the config's top-level fields are {['seed', *carto_config.SECTIONS]} (or a family's section)"
    else:
        allowed = ""
    near = re.search(r'Did you mean "([^"]+)"', text)
    hint = f" Did you mean {near.group(1)!r}?" if near else ""
    return f"{flag}: the config has no field {missing!r}{allowed}.{hint}"


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing; an override naming an unknown field exits with status 2 like every config error."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError) as e:
        message = override_error(argv, e)
        if message is None:
            raise
        print(f"config error: {message}", file=sys.stderr)
        sys.exit(2)


# What launch prints and exits with for each expected failure (anything else is a bug and keeps its traceback).
FAILURES = {
    ConfigError: ("config error", 2),
    StageInputError: ("missing input", 1),
    CheckpointError: ("checkpoint error", 1),
    FloatingPointError: ("training stopped", 1),
}


def main(argv):
    del argv
    try:
        initialize_distributed()
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
    if FLAGS.verbosity == 0:  # Orbax logs every save at INFO: keep the console readable unless -v 1 is given.
        logging.set_verbosity(logging.WARNING)
    print(
        f"gdc: jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s), "
        f"{jax.process_count()} process(es)",
        flush=True,
    )
    try:
        name, family = studies.family_of(FLAGS.config)
        if FLAGS.mode not in family.MODES:
            raise ConfigError(f"--mode={FLAGS.mode}: a {name} config runs with --mode in {family.MODES}.")
        parse.check_workdir(FLAGS.workdir)
        command = " ".join(["python", *map(shlex.quote, sys.argv)])
        # One training run (--mode=run) takes the workdir lock itself; every study mode holds it here.
        with lock.hold(FLAGS.workdir, enabled=FLAGS.mode != "run" and jax.process_index() == 0):
            family.run(FLAGS.config, FLAGS.workdir, mode=FLAGS.mode, command=command)
        if FLAGS.mode != "run":
            print(f"done: --mode={FLAGS.mode} in {FLAGS.workdir}")
    except (ConfigError, StageInputError, CheckpointError, FloatingPointError) as e:
        prefix, status = next(v for k, v in FAILURES.items() if isinstance(e, k))
        print(f"{prefix}: {e}", file=sys.stderr)
        sys.exit(status)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
