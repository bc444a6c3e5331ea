"""Test setup: 8 forced CPU devices (set before JAX initialises), rank promotion raises, shared fixtures."""

import faulthandler
import importlib.util
import os
import sys
import threading

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
# 8 CPU devices share the host's few cores. With asynchronous dispatch several programs can be in flight at once,
# each holding some of XLA's CPU threads while its collectives wait for the rest; on a loaded 2-core machine that
# deadlocked once (XLA aborts after a 40 s rendezvous timeout). Synchronous dispatch runs one program at a time.
jax.config.update("jax_cpu_enable_async_dispatch", False)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 300  # as pyproject.toml's ``timeout`` for pytest-timeout

if importlib.util.find_spec("pytest_timeout") is None:
    # Without pytest-timeout a hung test would hang the run: print every thread's stack and exit instead.

    def _expire(item) -> None:
        capman = item.config.pluginmanager.getplugin("capturemanager")
        if capman is not None:  # the real stderr, not the test's captured one
            capman.suspend_global_capture(in_=True)
        sys.stderr.write(f"\n+++ Timeout: {item.nodeid} ran past {TIMEOUT_S} s +++\n")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(1)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        timer = threading.Timer(TIMEOUT_S, _expire, (item,))
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()


@pytest.fixture(scope="session")
def repo_root() -> str:
    return REPO


def tiny_config(arg: str = "mlp", **overrides):
    """configs/tiny.py as a typed RunConfig; ``overrides`` are ``section=dict(field=value)``."""
    from configs import common, tiny
    from gdc.studies.carto import config as carto_config

    c = tiny.get_config(arg)
    common.update(c, **overrides)
    return carto_config.from_mapping(c)
