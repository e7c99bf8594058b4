"""The docs say what the code does: the store layout table is the one the schema generates."""

from pathlib import Path

from kdpc.store.schema import array_table

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_record_format_layout_table_is_generated_from_the_array_specs():
    doc = (DOCS / "record-format.md").read_text()
    assert array_table() in doc


def test_minimal_zarr_decoder_of_the_format_doc_reads_a_recorded_store(tiny_store):
    """The decoder in record-format.md, run as written (plain zarr + numpy), gives the reader's log-probs."""
    import numpy as np

    from kdpc.store import RecordReader

    doc = (DOCS / "record-format.md").read_text()
    code = doc.split("Minimal decoder (zarr):", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(code.replace('"run.zarr"', repr(str(tiny_store))), scope)  # noqa: S102 - our own documentation
    reader = RecordReader(tiny_store)
    expected = reader.load_all()["logprobs"]
    np.testing.assert_allclose(scope["logprobs"], expected, atol=1e-5)
    assert (scope["sample"] == reader.load_all()["sample"]).all()
