"`mlsys score --engine ray`: the scorer mapped over partitions by Ray Data (local Ray, 2 CPUs), against the local one."
import json
from pathlib import Path
import polars as pl
import pytest
import ray
from conftest import mlsys
from mlsys.config import run_file
from mlsys.distributed import score_file_ray
from mlsys.example import example_table
from mlsys.score import score_file


@pytest.fixture(scope='module')
def local_ray():
    "A local Ray with 2 CPUs for this module's tests."
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level='ERROR')
    yield
    ray.shutdown()


def _broken(path, every=500):
    "The example table without its target, every `every`-th row's tenure not a number and every 700th key missing."
    df = example_table().drop('churn').with_columns(pl.col('tenure').cast(pl.String))
    i = pl.int_range(pl.len())
    df = df.with_columns(pl.when(i % every == 3).then(pl.lit('soon')).otherwise('tenure').alias('tenure'),
                         pl.when(i % 700 == 5).then(None).otherwise('rownames').alias('rownames'))
    df.write_csv(path) if path.suffix == '.csv' else df.write_parquet(path)
    return df


def _same_result(a:Path, b:Path, rows:int):
    "Two scoring results hold the same part files, predictions and quarantine, and every row once."
    for part in ('predictions', 'quarantine'):
        assert sorted(p.name for p in (a/part).iterdir()) == sorted(p.name for p in (b/part).iterdir())
        assert pl.read_parquet(a/part).sort('_row').equals(pl.read_parquet(b/part).sort('_row'))
    p, q = pl.read_parquet(a/'predictions'), pl.read_parquet(a/'quarantine')
    assert sorted(p['_row'].to_list() + q['_row'].to_list()) == list(range(rows))     # conservation
    assert q['violations'].list.len().min() > 0                                       # each with its reasons
    m, want = (json.loads((d/'manifest.json').read_text()) for d in (a, b))
    keys = ('scored', 'quarantined', 'model_version')
    assert {k: m[k] for k in keys} == {k: want[k] for k in keys}
    assert m['inputs'] == want['inputs']


def test_ray_engine_scores_and_quarantines_as_the_local_scorer(tmp_path, example_model, local_ray):
    "Five partitions on two actors: the same predictions, the same quarantine with its reasons, the same parts."
    data, model = tmp_path/'batch.csv', str(run_file(example_model, 'model'))
    df = _broken(data)
    local = score_file(data, tmp_path/'local', model=model, chunk_rows=1500)
    res = score_file_ray(data, tmp_path/'ray', model=model, chunk_rows=1500)
    assert res['partitions'] == 5 and res['quarantined'] > 10
    assert {k: res[k] for k in local} == local and res['scored'] + res['quarantined'] == df.height
    _same_result(tmp_path/'ray', tmp_path/'local', df.height)
    assert json.loads((tmp_path/'ray'/'manifest.json').read_text())['engine'] == 'ray'
    with pytest.raises(FileExistsError, match='not empty'):
        score_file_ray(data, tmp_path/'ray', model=model)
    assert len(list(tmp_path.glob('.ray.*'))) == 0                          # no temporary folder left behind
    df.head(0).write_csv(tmp_path/'empty.csv')                               # a file of no rows: a manifest, no parts
    assert score_file_ray(tmp_path/'empty.csv', tmp_path/'ray0', model=model)['partitions'] == 0
    score_file(tmp_path/'empty.csv', tmp_path/'local0', model=model)
    assert [p.name for p in (tmp_path/'ray0').iterdir()] == [p.name for p in (tmp_path/'local0').iterdir()]


def test_cli_engine_ray_on_parquet_matches_local(tmp_path, example_model):
    "`mlsys score --engine ray` (its own local Ray) writes what `mlsys score` writes for a parquet file."
    data, model = tmp_path/'batch.parquet', run_file(example_model, 'model')
    df = _broken(data, every=300)
    outs = {}
    for engine in ('local', 'ray'):
        r = mlsys('score', '--data', data, '--out', tmp_path/engine, '--model', model, '--chunk-rows', 2500,
                  '--engine', engine)
        assert r.returncode == 0, r.stderr[-3000:]
        outs[engine] = json.loads(r.stdout.strip().splitlines()[-1])
    assert outs['ray']['partitions'] == 3
    assert {k: outs['ray'][k] for k in outs['local']} == outs['local']
    _same_result(tmp_path/'ray', tmp_path/'local', df.height)
