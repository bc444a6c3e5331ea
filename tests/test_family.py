"""gdc.family: the config parsing every experiment family shares; launch.py's family dispatch."""

import dataclasses
import subprocess
import sys

import pytest

from gdc import config as parse
from gdc.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class _Cfg:
    steps: int = 10
    lr: float = 0.1
    widths: tuple = (1.0, 2.0)
    name: str = "a"

    def validate(self) -> None:
        parse.int_at_least("toy", "steps", self.steps, 1)


def test_build_coerces_and_validates():
    seed, values = parse.seed_and_values({"seed": 3, "toy": {"lr": 1, "widths": [3, 4]}}, "toy")
    cfg = parse.build(_Cfg, "toy", values)
    assert seed == 3 and cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.widths == (3.0, 4.0) and all(isinstance(w, float) for w in cfg.widths)
    with pytest.raises(ConfigError, match=r"toy\.stepz is not a known field; toy allows \['lr', 'name'"):
        parse.build(_Cfg, "toy", {"stepz": 1})
    with pytest.raises(ConfigError, match=r"toy\.steps=0 must be an integer >= 1 \(set it with --config\.toy\.steps"):
        parse.build(_Cfg, "toy", {"steps": 0})
    with pytest.raises(ConfigError, match=r"toy\.widths=2 must be a tuple"):
        parse.build(_Cfg, "toy", {"widths": 2})
    with pytest.raises(ConfigError, match=r"toy\.name=3 must be a str"):
        parse.build(_Cfg, "toy", {"name": 3}, strict_types=True)
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \['train'\]"):
        parse.seed_and_values({"toy": {}, "train": {}}, "toy")
    with pytest.raises(ConfigError, match="seed=True: must be an int"):
        parse.seed_and_values({"seed": True}, "toy")


def test_launch_rejects_a_mode_the_family_does_not_have(repo_root, tmp_path):
    cmd = [
        sys.executable,
        "launch.py",
        "--config=configs/theory_convex.py:quick",
        f"--workdir={tmp_path}",
        "--mode=all",
    ]
    out = subprocess.run(cmd, cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "a theory config runs with --mode in ('verify',)" in out.stderr
