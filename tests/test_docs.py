"""The docs say what the code does: the store layout table is the one the schema generates."""

from pathlib import Path

from kdpc.store.schema import array_table

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_record_format_layout_table_is_generated_from_the_array_specs():
    doc = (DOCS / "record-format.md").read_text()
    assert array_table() in doc
