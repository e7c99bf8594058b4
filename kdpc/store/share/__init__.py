"""Sharing record stores: byte-level ``copy`` / ``pack`` / ``unpack`` (``transfer``) and array-level ``merge`` /
``convert`` (``combine``). Every function takes paths or URLs (``kdpc.store.locations``) and raises ``KdpcError``
with one line saying what is wrong."""

from .combine import MergeReport, convert_store, merge_stores
from .transfer import CopyReport, copy_store, pack_store, unpack_store

__all__ = ["CopyReport", "MergeReport", "convert_store", "copy_store", "merge_stores", "pack_store", "unpack_store"]
