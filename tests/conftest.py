import json, os, signal, socket, subprocess, sys, time, venv
from pathlib import Path
from types import SimpleNamespace
import httpx
import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Bytecode written on first import, here and in every kernel and subprocess the tests start (their environments are
# installed with --no-compile): with PYTHONDONTWRITEBYTECODE set, each of them compiled torch and the rest again.
os.environ.pop('PYTHONDONTWRITEBYTECODE', None)
sys.dont_write_bytecode = False


@pytest.fixture
def home(tmp_path, monkeypatch):
    "A fresh mlsys home for the test, through the environment (so subprocesses see it too)."
    h = tmp_path/'home'
    monkeypatch.setenv('MLSYS_PATHS_HOME', str(h))
    return h


# The longest files first (their totals in a quiet run, longest-processing-time first): with `pytest -n 2 --dist
# loadfile --no-loadscope-reorder` (scripts/test) each worker takes whole files in this order, so the two end at about
# the same time; the rest follow in their usual order. Without --no-loadscope-reorder, xdist orders files by their
# number of tests instead.
FIRST = ['test_tasks', 'test_pipeline', 'test_serve', 'test_jobs', 'test_airflow', 'test_monitor', 'test_wheel',
         'test_hostile', 'test_train', 'test_core_install', 'test_feature_store', 'test_registry']


def pytest_collection_modifyitems(items):
    "Run the longest test files first."
    rank = lambda item: FIRST.index(item.module.__name__) if item.module.__name__ in FIRST else len(FIRST)
    items.sort(key=rank)    # sort is stable: within a file, and among the rest, the order is pytest's


def once(tmp_path_factory, name:str, make) -> str:
    "`make(folder)` run once for the whole session, whichever xdist worker asks first; the others wait and reuse it."
    root = tmp_path_factory.getbasetemp()
    if os.environ.get('PYTEST_XDIST_WORKER'): root = root.parent     # the workers' common temporary folder
    done = root/f'{name}.json'
    with FileLock(str(root/f'{name}.lock')):
        if not done.exists():
            (root/name).mkdir(exist_ok=True)
            done.write_text(json.dumps(str(make(root/name))))
    return json.loads(done.read_text())


@pytest.fixture(scope='session')
def example_model(tmp_path_factory) -> Path:
    "A run directory where ingest, features, train and export ran once on the example, small and fast: for all tests."
    from mlsys.data import run_ingest
    from mlsys.example import example_run
    from mlsys.export import run_export
    from mlsys.features import run_features
    from mlsys.train import run_train
    return Path(once(tmp_path_factory, 'example-run', lambda d: example_run(
        run_ingest, run_features, run_train, run_export, run_dir=d,
        max_epochs=2, trials=0, search={}, repeats=10, settings={'tracking.mode': 'disabled'})))


def _build_wheel(dist:Path) -> Path:
    "Build the mlsys wheel from this checkout into `dist`."
    subprocess.run([sys.executable, '-m', 'build', '--wheel', '--outdir', str(dist), str(ROOT)], check=True,
                   capture_output=True, timeout=600)
    return next(dist.glob('mlsys-*.whl'))


@pytest.fixture(scope='session')
def wheel(tmp_path_factory) -> Path:
    "The mlsys wheel built from this checkout."
    return Path(once(tmp_path_factory, 'dist', _build_wheel))


def new_venv(path:Path, *requirements) -> SimpleNamespace:
    "A new virtual environment at `path` with `requirements` installed (torch pinned to the CPU build)."
    venv.create(path, with_pip=True)
    r = subprocess.run([str(path/'bin'/'python'), '-m', 'pip', 'install', '-q', '--no-compile',   # bytecode on import
                        '-c', str(ROOT/'constraints.txt'), *map(str, requirements)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return SimpleNamespace(venv=path, bin=path/'bin')


@pytest.fixture(scope='session')
def wheel_venv(tmp_path_factory, wheel):
    "A new virtual environment with the mlsys wheel and all its extras, nbdev and pytest installed."
    path = Path(once(tmp_path_factory, 'wheel', lambda d: new_venv(d/'venv', f'{wheel}[all]', 'nbdev>=3.3',
                                                                      'pytest>=8').venv))
    return SimpleNamespace(venv=path, bin=path/'bin', wheel=wheel)


def mlsys(*args, cwd=None, env=None, exe=None):
    "Run the `mlsys` command; the completed process."
    return subprocess.run([str(exe or BIN/'mlsys'), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env or os.environ.copy(), timeout=600)


def free_port() -> int:
    "A free TCP port on loopback."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def server_env(home, **extra) -> dict:
    "A server's environment: no MLSYS_* from outside (but the settings file), its own home, fast reloads, `extra`."
    env = {k: v for k, v in os.environ.items() if not k.startswith('MLSYS_') or k == 'MLSYS_SETTINGS'}
    env |= dict(MLSYS_PATHS_HOME=str(home), MLSYS_SERVE_RELOAD_SECONDS='0.2', MLSYS_TRACKING_MODE='disabled')
    return env | {k: str(v) for k, v in extra.items()}


class Served:
    "A running `mlsys serve` process on loopback and a client for it."
    def __init__(self, home, registry, wait_ready=True, env=None, exe=None, **flags):
        self.port, self.home = free_port(), Path(home)
        args = [str(exe or BIN/'mlsys'), 'serve', '--port', str(self.port), '--registry', str(registry)]
        for k, v in flags.items(): args += [f"--{k.replace('_', '-')}", str(v)]
        self.proc = subprocess.Popen(args, env=server_env(home, **(env or {})), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.base = f'http://127.0.0.1:{self.port}'
        self.client = httpx.Client(base_url=self.base, timeout=60)
        self.wait(lambda: self.client.get('/healthz').status_code == 200)
        if wait_ready: self.wait(lambda: self.client.get('/readyz').status_code == 200)

    def wait(self, cond, timeout=60):
        "Poll `cond` until it holds; fail if the server died."
        end = time.time() + timeout
        while time.time() < end:
            try:
                if cond(): return
            except httpx.TransportError: pass
            assert self.proc.poll() is None, self.proc.stderr.read()
            time.sleep(0.05)
        raise TimeoutError('condition not met')

    def stop(self):
        "SIGTERM, and wait for the drain (the prediction log is flushed on the way out)."
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(90)
