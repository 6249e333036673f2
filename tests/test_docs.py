"""The package's docs agree with its code: every dimension a shape comment uses is in the legend."""

import pathlib
import re

import littlebaby.nn

PACKAGE = pathlib.Path(littlebaby.nn.__file__).resolve().parent.parent
# a shape comment closes a line of code: "# (B, T, C)", "# (B, NH, Tq, s1) scores", "# (N * K,) a view"
SHAPE_COMMENT = re.compile(r"\S\s+# \(((?:[A-Za-z0-9_ *+/-]+, )*[A-Za-z0-9_ *+/-]+,?)\)")


def legend_symbols():
    legend = littlebaby.nn.__doc__.split("Dimensions", 1)[1].split("Conventions", 1)[0]
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", legend))


def test_every_dimension_of_a_shape_comment_is_in_the_legend():
    symbols, used = legend_symbols(), {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for shape in SHAPE_COMMENT.findall(line):
                for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", shape):
                    used.setdefault(name, f"{path.relative_to(PACKAGE)}:{number}")
    assert len(used) > 15, "the shape comments were not found: the pattern is wrong"
    missing = {name: where for name, where in used.items() if name not in symbols}
    assert not missing, f"dimensions used in shape comments but not in littlebaby/nn/__init__.py's legend: {missing}"
