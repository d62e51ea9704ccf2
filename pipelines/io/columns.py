"""The bookkeeping columns a batch carries between source, validation and sink; never in a dataset.

Sources add where each row came from (`_source` file, `_source_row` with 1 = first data row,
`_source_order` to sort rows in input order across files) and `_parse_error` for a row they
could not read; validation adds `_errors` (JSON, null when valid) and `_raw` (the raw values of
an invalid row).
"""

SOURCE_COLUMNS = ("_source", "_source_row", "_source_order", "_parse_error")
ERRORS_COLUMN = "_errors"
RAW_COLUMN = "_raw"
