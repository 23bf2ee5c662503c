"""`mlsys score` overlaps reading, scoring and writing (`mlsys.score.pipelined`): the same rows and verdicts as scoring
one chunk after the other, and an error anywhere in the file leaves no output, no temporary folder, no thread."""
import threading
from pathlib import Path
import polars as pl
import pytest
from mlsys.config import run_file
from mlsys.example import example_table
from mlsys.runtime import LoadedModel, scoring_contract
from mlsys.score import _batches, score_chunk, score_file


def _table(rows:int) -> pl.DataFrame:
    "The example table, target dropped, with fresh ids and a broken row every 37 (as text, so it can be)."
    t = example_table().drop('churn').with_columns(pl.col('tenure').cast(pl.String))
    t = pl.concat([t] * (rows // t.height + 1)).head(rows).with_columns(rownames=pl.int_range(rows, dtype=pl.Int64))
    return t.with_columns(pl.when(pl.int_range(pl.len()) % 37 == 5).then(pl.lit('soon')).otherwise('tenure')
                          .alias('tenure'))


def _read(folder:Path) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(p) for p in sorted(folder.glob('part-*.parquet'))])


def test_overlapped_scoring_writes_what_one_chunk_at_a_time_writes(example_model, tmp_path):
    "Many small chunks in flight at once: the same parts, rows, order, predictions and quarantine reasons."
    model = str(run_file(example_model, 'model'))
    data = tmp_path/'batch.parquet'
    _table(3_000).write_parquet(data)
    counts = score_file(data, tmp_path/'out', model=model, chunk_rows=97, coded=True)   # against a plain model below
    m = LoadedModel(Path(model).read_bytes(), counts['model_version'])
    c, key, offset, preds, quarantine = scoring_contract(m), m.contract.get('id_column'), 0, [], []
    for chunk in _batches(data, 97):
        p, q = score_chunk(m, c, key, chunk, offset)
        preds.append(p); quarantine.append(q); offset += chunk.height
    assert len(list((tmp_path/'out'/'predictions').glob('part-*.parquet'))) == len(preds) == 31
    assert _read(tmp_path/'out'/'predictions').equals(pl.concat(preds))
    assert _read(tmp_path/'out'/'quarantine').equals(pl.concat(quarantine))
    broken = list(range(5, 3_000, 37))
    assert (counts['scored'], counts['quarantined']) == (3_000 - len(broken), len(broken))
    assert _read(tmp_path/'out'/'quarantine')['_row'].to_list() == broken


def test_an_error_late_in_the_file_leaves_nothing_behind(example_model, tmp_path):
    "A CSV line with an extra field after 1,500 good rows: the reader's error reaches the caller, and nothing stays."
    lines = example_table().drop('churn').write_csv().splitlines()
    lines[1500] += ',extra'
    (tmp_path/'data').mkdir()
    (tmp_path/'data'/'ragged.csv').write_text('\n'.join(lines) + '\n')
    threads = threading.active_count()
    with pytest.raises(pl.exceptions.ComputeError, match='more fields'):
        score_file(tmp_path/'data'/'ragged.csv', tmp_path/'out'/'scored', model=str(run_file(example_model, 'model')),
                   chunk_rows=100)
    assert list((tmp_path/'out').iterdir()) == []          # no result, no temporary folder
    assert threading.active_count() == threads               # no step left running
