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


@pytest.fixture(scope='session')
def example_model(tmp_path_factory):
    "A run directory where ingest, features, train and export ran once on the example, small and fast: for all tests."
    from mlsys.data import run_ingest
    from mlsys.example import example_run
    from mlsys.export import run_export
    from mlsys.features import run_features
    from mlsys.train import run_train
    return example_run(run_ingest, run_features, run_train, run_export, run_dir=tmp_path_factory.mktemp('example-run'),
                       max_epochs=2, trials=0, search={}, repeats=10, settings={'tracking.mode': 'disabled'})


def mlsys(*args, cwd=None, env=None, exe=None):
    "Run the `mlsys` command; the completed process."
    return subprocess.run([str(exe or BIN/'mlsys'), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env or os.environ.copy(), timeout=600)
