"""Results: Parquet tables (the system of record) and TensorBoard runs, written from epoch records."""
