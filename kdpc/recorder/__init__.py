"""The record stage: run a frozen teacher once over many shape-level views and store its outputs."""

from .run import RecordConfig, record

__all__ = ["RecordConfig", "record"]
