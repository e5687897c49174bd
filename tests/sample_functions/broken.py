"""Fails while being imported, as a function with a missing dependency does."""

from __future__ import annotations

import importlib

importlib.import_module(".does_not_exist", __package__)
