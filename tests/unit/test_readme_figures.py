"""Figures README.md states about the local run that come from template.yaml: they must agree."""

from __future__ import annotations

import re

from local import template as tpl
from local.pool import pool_size

from tests.conftest import ROOT


def test_the_readme_s_pool_sizes_are_what_the_template_s_defaults_give(template):
    # Given the pool sizes README names, function by function ("4 for `CallbackFunction`")
    readme = " ".join((ROOT / "README.md").read_text().split())
    stated = {name: int(size) for size, name in re.findall(r"(\d+) for `(\w+Function)`", readme)}
    # When the local run sizes each pool from the template's defaults, with no override
    refs = tpl.parameter_defaults(template)
    sized = {name: pool_size(template, fn, refs, {}) for name, fn in tpl.functions(template).items()}
    # Then README names every function, with the size it gets
    assert stated == sized
