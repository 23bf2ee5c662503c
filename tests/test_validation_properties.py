"Properties of validation: valid tables pass whole; each single defect is quarantined under its rule; reruns agree."
import csv, datetime as dt, io
import polars as pl
from hypothesis import HealthCheck, given, settings, strategies as st
from mlsys.config import sha256_file
from mlsys.data import ColumnRule, Contract, run_ingest, validate, write_validation
from mlsys.example import example_params

CONTRACT = Contract({
    'id': ColumnRule('int64', nullable=False),
    'x': ColumnRule('float64', nullable=False, min=-1e6, max=1e6),
    'n': ColumnRule('int64', min=-5, max=5),
    'color': ColumnRule('string', nullable=False, categories=['red', 'green', 'blue', 'light blue']),
    'flag': ColumnRule('bool'),
    'at': ColumnRule('datetime', nullable=False),
    'note': ColumnRule('string'),
}, id_column='id', time_column='at')

text = st.text(st.characters(codec='utf-8', exclude_categories=['Cs', 'Cc', 'Zs', 'Zl', 'Zp']), max_size=12)
row = st.fixed_dictionaries({
    'x': st.floats(-1e6, 1e6, allow_nan=False),
    'n': st.none() | st.integers(-5, 5),
    'color': st.sampled_from(CONTRACT.columns['color'].categories),
    'flag': st.none() | st.booleans(),
    'at': st.datetimes(dt.datetime(1970, 1, 1), dt.datetime(2100, 1, 1)).map(lambda d: d.replace(tzinfo=dt.timezone.utc)),
    'note': st.none() | text.filter(lambda s: s.strip() != ''),
})
tables = st.lists(row, min_size=1, max_size=40).map(
    lambda rows: pl.DataFrame([{'id': i * 7 + 1, **r} for i, r in enumerate(rows)],
                              schema={'id': pl.Int64, 'x': pl.Float64, 'n': pl.Int64, 'color': pl.String,
                                      'flag': pl.Boolean, 'at': pl.Datetime('us', 'UTC'), 'note': pl.String}))
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SLOW
@given(df=tables)
def test_valid_tables_are_never_quarantined(df, tmp_path):
    for source in (df, _csv(df, tmp_path)):
        res = validate(source, CONTRACT, max_quarantine_fraction=0)
        assert res.quarantine.height == 0 and res.violations.height == 0
        assert res.accepted['_row'].to_list() == list(range(df.height))
        assert res.accepted.drop('_row').equals(df)


def _csv(df, tmp_path, edit=None):
    "The table as a CSV file, with cell (row, column) replaced by a raw text value when `edit` is given."
    rows = list(csv.reader(io.StringIO(df.write_csv())))
    if edit:
        r, col, raw = edit
        rows[r + 1][df.columns.index(col)] = raw
    p = tmp_path/'t.csv'
    with open(p, 'w', newline='') as f: csv.writer(f, lineterminator='\n').writerows(rows)
    return p


MUTATIONS = {  # name: (column, raw CSV value or a function of the table and row, expected rules on the row)
    'wrong type': ('x', 'abc', {'type'}),
    'null': ('color', '', {'null'}),
    'out of range': ('n', '6', {'range'}),
    'unknown category': ('color', 'purple', {'category'}),
    'duplicate key': ('id', lambda df, r: str(df['id'][(r + 1) % df.height]), {'duplicate_key'}),
    'NaN': ('x', 'NaN', {'not_finite'}),
    'inf': ('x', '-inf', {'not_finite'}),
    'unparseable timestamp': ('at', 'not a time', {'type'}),
}


@SLOW
@given(df=tables.filter(lambda d: d.height >= 2), data=st.data(), kind=st.sampled_from(sorted(MUTATIONS)))
def test_each_single_mutation_is_quarantined_under_its_rule(df, data, kind, tmp_path):
    col, raw, rules = MUTATIONS[kind]
    r = data.draw(st.integers(0, df.height - 1), label='row')
    raw = raw(df, r) if callable(raw) else raw
    res = validate(_csv(df, tmp_path, (r, col, raw)), CONTRACT, max_quarantine_fraction=1)
    expected_rows = {r, (r + 1) % df.height} if kind == 'duplicate key' else {r}
    assert set(res.quarantine['_row']) == expected_rows
    assert set(res.accepted['_row']) == set(range(df.height)) - expected_rows
    got = res.violations.filter(pl.col('_row') == r)
    assert set(got['rule']) == rules and set(got['column']) == {col}
    assert got['value'].to_list() == ([raw] if kind != 'null' else [None])
    q = res.quarantine.filter(pl.col('_row') == r)
    assert q[col].to_list() == ([raw] if kind != 'null' else [None])   # kept as received


def test_rerun_gives_identical_outputs(tmp_path):
    src = tmp_path/'in.csv'
    src.write_text("id,x,n,color,flag,at,note\n1,0.5,1,red,true,2024-01-01T00:00:00Z,a\n2,abc,9,pink,maybe,never,\n"
                   "3,2.5,,blue,false,2024-03-01T12:00:00+01:00,\"with, comma\"\n3,1,1,red,,2024-01-01,x\n")
    outs = []
    for k in range(2):
        res = validate(src, CONTRACT, max_quarantine_fraction=1)
        recs = write_validation(res, tmp_path/f'out{k}')
        outs.append({r['role']: r['sha256'] for r in recs})
    assert outs[0] == outs[1]
    assert res.quarantine.height == 3 and res.accepted['_row'].to_list() == [0]


def test_ingest_job_is_idempotent(tmp_path):
    data = example_params(tmp_path)['data']
    hashes = []
    for k in range(2):
        run_ingest(data, tmp_path/f'run{k}', target='churn', id_column='rownames')
        hashes.append({p.name: sha256_file(p) for p in sorted((tmp_path/f'run{k}').glob('*.parquet'))}
                      | {'contract.json': sha256_file(tmp_path/f'run{k}'/'contract.json')})
    assert hashes[0] == hashes[1] and len(hashes[0]) == 4
