"""The command line: ``fastgossip demo`` runs, reports, and stops on Ctrl-C."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import pytest

from fastgossip.cli import build_parser, main, run_demo
from fastgossip.fanout import Fanout


async def test_demo_converges_and_summarises() -> None:
    out = io.StringIO()
    ok = await run_demo(nodes=6, fanout=Fanout.bounded(2), interval=0.02, keys=10, seed=3, out=out)
    text = out.getvalue()
    assert ok
    assert "converged: 60/60 node-keys current" in text
    for field in ("rounds", "bytes sent", "frames sent", "connections opened"):
        assert field in text
    assert "round " in text


async def test_the_demo_runs_encrypted() -> None:
    out = io.StringIO()
    ok = await run_demo(nodes=4, interval=0.02, keys=5, seed=4, out=out, encrypt=True)
    text = out.getvalue()
    assert ok and "encrypted with a new cluster key" in text
    assert "converged: 20/20 node-keys current" in text


def test_parser_options_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(
        ["demo", "--nodes", "7", "--fanout", "sqrt", "--interval", "0.5", "--keys", "3"]
    )
    assert (args.nodes, args.fanout, args.interval, args.keys) == (7, Fanout.SQRT, 0.5, 3)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--fanout", "many"])
    assert "'sqrt'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--nodes", "0"])
    assert main([]) == 2  # no command: help, and a usage exit code


def test_ctrl_c_stops_cleanly() -> None:
    """SIGINT while the cluster runs: a clean exit (130), no traceback."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        # rounds every 1000 s: the demo waits, so it is surely running when interrupted
        [sys.executable, "-m", "fastgossip", "demo", "--nodes", "3", "--interval", "1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        first = proc.stdout.readline()  # the banner: the demo is running
        assert "3 nodes" in first
        deadline = time.monotonic() + 10
        proc.send_signal(signal.SIGINT)
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() == 130
        err = proc.stderr.read()
        assert "interrupted" in err and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
