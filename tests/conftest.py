import os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture
def home(tmp_path, monkeypatch):
    "A fresh mlsys home for the test, through the environment (so subprocesses see it too)."
    h = tmp_path/'home'
    monkeypatch.setenv('MLSYS_PATHS_HOME', str(h))
    return h


def mlsys(*args, cwd=None, env=None, exe=None):
    "Run the `mlsys` command; the completed process."
    return subprocess.run([str(exe or BIN/'mlsys'), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env or os.environ.copy(), timeout=600)
