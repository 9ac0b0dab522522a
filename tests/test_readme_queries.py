"""Every query the README shows runs against a real search's output and answers something."""

import re
from pathlib import Path

import duckdb
import pandas as pd

README = (Path(__file__).parent.parent / "README.md").read_text()


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_pandas_queries_run(finished_search):
    _, out = finished_search
    (code,) = [b for b in blocks("python") if "read_parquet" in b]
    namespace = {}
    exec(code.replace('"runs/quickstart"', repr(str(out))), namespace)
    assert len(namespace["best"]) >= 1 and namespace["best"]["final_val_robust_acc"].between(0, 1).all()
    assert {"dense", "ticket"} <= set(namespace["curves"].columns)
    assert namespace["by_width"]["count"].sum() >= 1
    assert namespace["spent"]["count"].sum() == len(namespace["trials"])
    assert namespace["spent"]["trained"].sum() == namespace["trials"]["trained_epochs"].sum() > 0


def test_duckdb_query_runs(finished_search):
    _, out = finished_search
    (query,) = blocks("sql")
    frame = duckdb.sql(query.replace("runs/quickstart", str(out))).df()
    assert len(frame) >= 1 and (frame["best_robust_acc"].diff().dropna() <= 0).all()


def test_every_reader_sees_every_column(finished_search):
    import polars as pl
    import pyarrow.dataset as ds

    _, out = finished_search
    pandas_columns = list(pd.read_parquet(out / "epochs").columns)
    assert ds.dataset(out / "epochs", format="parquet").schema.names == pandas_columns
    assert pl.read_parquet(str(out / "epochs" / "*.parquet")).columns == pandas_columns
    duck = duckdb.sql(f"SELECT * FROM read_parquet('{out}/epochs/*.parquet', union_by_name = true) LIMIT 1").df()
    assert list(duck.columns) == pandas_columns
    assert "node" in pandas_columns and "trial_id" in pandas_columns
