"""Plugins: user code that registers models and datasets, imported before any command runs.

Three ways in, all explicit: ``kdpc --plugin my_pkg.my_module ...`` (repeatable), ``plugins: [my_pkg.my_module]`` in
any ``--config`` file, and the entry-point group ``kdpc.plugins`` of installed packages (loaded by every ``kdpc``
command unless ``KDPC_NO_PLUGIN_AUTOLOAD=1``). A plugin module calls ``kdpc.data.register_dataset`` /
``kdpc.models.register_model`` at import time.

Every registration remembers where it came from (``plugin_of``), so stores and checkpoints can say which plugin made
their data. kdpc never imports a module because a store or checkpoint names it: it tells the user which
``--plugin`` to pass instead.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Iterable

from .errors import KdpcError, exception_line

ENTRY_POINT_GROUP = "kdpc.plugins"
NO_AUTOLOAD_ENV = "KDPC_NO_PLUGIN_AUTOLOAD"

_loading: list[str] = []  # the plugin being imported (a stack: a plugin may load another)
_loaded: dict[str, str] = {}  # plugin -> how it was asked for
_origins: dict[tuple[str, str], str] = {}  # (kind, name) -> plugin or module that registered it


def note_registration(kind: str, name: str, module: str | None) -> None:
    """Called by the model and dataset registries: remember which plugin (or user module) registered ``name``.
    kdpc's own registrations (which a plugin's first ``import kdpc...`` may trigger) are nobody's."""
    if not module or module == "kdpc" or module.startswith("kdpc."):
        return
    _origins[(kind, name)] = _loading[-1] if _loading else module


def plugin_of(kind: str, name: str) -> str | None:
    """The plugin (or user module) that registered model/dataset ``name``; None for kdpc's own."""
    return _origins.get((kind, name))


def loaded_plugins() -> dict[str, str]:
    return dict(_loaded)


def importable_from_cwd() -> None:
    """User code in the current folder is importable, as with ``python -m`` (the ``kdpc`` script alone would not
    see it)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def import_user_module(module: str, what: str) -> object:
    """Import ``module`` for ``what`` (e.g. "plugin my_pkg.x"); one ``KdpcError`` line if it is missing or fails."""
    if not module or not all(part.isidentifier() for part in module.split(".")):
        raise KdpcError(f"{what}: {module!r} is not a Python module name like my_pkg.my_module")
    importable_from_cwd()
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise KdpcError(f"{what}: no module named {exc.name!r} (run kdpc from the folder that holds it, add it to "
                            "PYTHONPATH or pip install its package)") from None
        raise KdpcError(f"{what} failed to import: {exception_line(exc)}") from None
    except KdpcError:
        raise
    except Exception as exc:  # the user's module raised while importing: say which one and what
        raise KdpcError(f"{what} failed to import: {exception_line(exc)}") from None


def load_plugin(module: str, source: str = "--plugin") -> None:
    """Import a plugin module (once); registrations during the import are credited to it."""
    if module in _loaded:
        return
    _loading.append(module)
    try:
        import_user_module(module, f"plugin {module}")
    finally:
        _loading.pop()
    _loaded[module] = source


def load_plugins(modules: Iterable[str], source: str = "--plugin") -> None:
    for module in modules:
        load_plugin(str(module).strip(), source)


def load_entry_points() -> None:
    """Import every installed ``kdpc.plugins`` entry point (a module, or a callable that is then called)."""
    if os.environ.get(NO_AUTOLOAD_ENV, "").strip() not in ("", "0"):
        return
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        name = f"{ep.value} (entry point {ep.name!r})"
        if ep.value in _loaded:
            continue
        _loading.append(ep.value)
        try:
            target = ep.load()
            if callable(target):
                target()
        except KdpcError:
            raise
        except Exception as exc:
            raise KdpcError(f"plugin {name} failed to load: {exception_line(exc)} (set {NO_AUTOLOAD_ENV}=1 to start "
                            "kdpc without installed plugins)") from None
        finally:
            _loading.pop()
        _loaded[ep.value] = "entry point"


def missing_hint(kind: str, name: str, plugin: str | None) -> str:
    """What to tell a user whose store/checkpoint names a model or dataset that is not registered here."""
    if plugin:
        return f"{kind} {name!r} comes from plugin {plugin!r}, which is not loaded; pass --plugin {plugin}"
    return f"{kind} {name!r} is not registered; if it comes from your own code, pass --plugin your_module"
