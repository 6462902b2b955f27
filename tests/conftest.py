"""Shared fixtures: a local HTTP server and an environment with no dataset roots; the
cores shared out between pytest-xdist's workers."""

from __future__ import annotations

import functools
import http.server
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def pytest_configure(config) -> None:
    """Under pytest-xdist, each worker (and each zoo process it starts) takes its share of
    the cores: N workers at full width each would thrash them."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        threads = str(max(1, len(os.sched_getaffinity(0)) // int(workers)))
        os.environ["OMP_NUM_THREADS"] = threads
        torch.set_num_threads(int(threads))


#: the files that take the most CPU seconds (measured per file, most first): run first, so
#: that under pytest-xdist (one file per worker) the short files fill in behind them
#: instead of one worker finishing alone
LONGEST_FIRST = ("test_distributed.py", "test_diffusion.py", "test_bench_runner.py",
                 "test_latent.py", "test_bench_compare.py", "test_diffusion_conditional.py",
                 "test_metrics_fidelity.py", "test_cli.py", "test_autoregressive.py",
                 "test_gan.py", "test_bench_report.py", "test_vae.py", "test_bench_curves.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a file


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    """One fresh metrics cache for the module (its metrics folder); no InceptionV3 weights
    anywhere. A module takes it with ``pytestmark = pytest.mark.usefixtures("cache_env")``."""
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("zoo-cache")
        mp.setenv("ZOO_CACHE", str(root))
        mp.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))
        mp.delenv("ZOO_INCEPTION_WEIGHTS", raising=False)
        yield root / "metrics"


@pytest.fixture
def one_thread():
    """torch on one thread for the test (results that depend on the thread count)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class UnhandledSignal(Exception):
    """A stop signal that zoo left to the test's own handler (``stop_signals``)."""


@pytest.fixture
def stop_signals():
    """SIGTERM and SIGHUP sent to this process by a test raise ``UnhandledSignal`` unless
    zoo handles them itself (without it their default would end the test run); the
    handlers are checked to be the test's again after it."""

    def unhandled(signum, frame):
        raise UnhandledSignal(signal.Signals(signum).name)

    stops = (signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, unhandled) for s in stops}
    yield
    try:
        assert all(signal.getsignal(s) is unhandled for s in stops), "handlers not restored"
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_server(monkeypatch) -> Iterator[Callable]:
    """``serve(directory or handler class) -> base URL`` of a ThreadingHTTPServer on 127.0.0.1."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    servers = []

    def serve(what: str | Path | type) -> str:
        if isinstance(what, type):
            handler = what
        else:
            handler = functools.partial(_QuietFiles, directory=str(what))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_roots(tmp_path, monkeypatch) -> Path:
    """No ``$ZOO_DATA_ROOT``, no mirror, no offline flag, and an empty home cache."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("ZOO_DATA_ROOT", "ZOO_DATA_MIRROR", "ZOO_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return home



@pytest.fixture
def tiny_suite(tmp_path) -> Callable[..., Path]:
    """``write(path=None, **overrides) -> path``: the tiny suite of ``helpers.tiny_suite``
    (same overrides) written to ``path``, by default ``tmp_path / "suite.toml"``."""
    from helpers import tiny_suite as text

    def write(path: str | Path | None = None, **overrides) -> Path:
        path = Path(path) if path is not None else tmp_path / "suite.toml"
        path.write_text(text(**overrides))
        return path

    return write
