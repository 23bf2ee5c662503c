"Properties of validation: valid tables pass whole; each single defect is quarantined under its rule; reruns agree."
import csv, datetime as dt, io, math
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
    'at': st.datetimes(dt.datetime(1970, 1, 1), dt.datetime(2100, 1, 1))
            .map(lambda d: d.replace(tzinfo=dt.timezone.utc)),
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


# A typed table (no text to parse) checked row by row in plain Python: the oracle the one-pass validation must match.
RULES = Contract({
    'id': ColumnRule('int64', nullable=False),
    'x': ColumnRule('float64', nullable=False, min=-10, max=10),
    'y': ColumnRule('float64', nullable=True, min=0),
    'n': ColumnRule('int64', nullable=True, min=-5, max=5),
    'color': ColumnRule('string', nullable=False, categories=['red', 'blue']),
    'flag': ColumnRule('bool', nullable=False),
}, id_column='id')
floats = st.none() | st.sampled_from([0.0, -0.0, 1.5, 10.0, 11.0, -11.0, float('nan'), float('inf'), -float('inf')])
typed_rows = st.lists(st.fixed_dictionaries({
    'id': st.none() | st.integers(0, 4), 'x': floats, 'y': floats, 'n': st.none() | st.integers(-7, 7),
    'color': st.none() | st.sampled_from(['red', 'blue', 'green', 'Red']), 'flag': st.none() | st.booleans(),
}), min_size=1, max_size=30)


def _oracle(rows, c):
    "Every (row, rule, column) broken, checked one cell at a time; a cell that is not finite reports only that."
    keys = [r[c.id_column] for r in rows]
    out = set()
    for i, r in enumerate(rows):
        for col, rule in c.columns.items():
            x = r[col]
            if isinstance(x, float) and not math.isfinite(x): out.add((i, 'not_finite', col)); continue
            if x is None and not rule.nullable: out.add((i, 'null', col))
            if x is not None and rule.min is not None and x < rule.min: out.add((i, 'range', col))
            if x is not None and rule.max is not None and x > rule.max: out.add((i, 'range', col))
            if x is not None and rule.categories is not None and x not in rule.categories: out.add((i, 'category', col))
            if col == c.id_column and keys.count(x) > 1: out.add((i, 'duplicate_key', col))
    return out


@SLOW
@given(rows=typed_rows)
def test_one_pass_matches_a_row_by_row_oracle(rows):
    df = pl.DataFrame(rows, schema={'id': pl.Int64, 'x': pl.Float64, 'y': pl.Float64, 'n': pl.Int64, 'color': pl.String,
                                    'flag': pl.Boolean})
    res = validate(df, RULES, max_quarantine_fraction=1)
    expected = _oracle(rows, RULES)
    assert set(res.violations.select('_row', 'rule', 'column').rows()) == expected
    assert res.violations.height == len(expected)                      # each broken rule once
    assert set(res.quarantine['_row']) == {r for r, _, _ in expected}
    assert set(res.accepted['_row']) == set(range(len(rows))) - {r for r, _, _ in expected}
    for q in res.quarantine.iter_rows(named=True):                    # each quarantined row carries its reasons
        mine = {(ru, co) for r, ru, co in expected if r == q['_row']}
        assert {(v['rule'], v['column']) for v in q['violations']} == mine


def test_a_timestamp_is_read_as_its_column_is(tmp_path):
    "Text timestamps parse in the format of their column: a row that would parse alone is still a `type` defect."
    src = tmp_path/'t.csv'
    src.write_text("id,x,n,color,flag,at,note\n1,0.5,1,red,true,2024-01-01,a\n2,1,1,red,true,2024-01-02,a\n"
                   "3,1,1,red,true,2024-01-03T10:00:00+02:00,a\n4,1,1,red,true,2024-01-04,a\n")
    res = validate(src, CONTRACT, max_quarantine_fraction=1)
    assert res.violations.rows() == [(2, 'type', 'at', '2024-01-03T10:00:00+02:00')]
    assert res.accepted['_row'].to_list() == [0, 1, 3] and res.quarantine['_row'].to_list() == [2]
