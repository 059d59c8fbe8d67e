import json
import re

import numpy as np
import pytest

from latentrag import Hit, InvalidInputError
from latentrag._optional import require
from latentrag.errors import check_positive_int, check_query


def test_hit_defaults_and_plain_float_score():
    h = Hit("a", "text", np.float32(0.5))
    assert h.metadata == {}
    assert type(h.score) is float
    json.dumps({"score": h.score, "metadata": h.metadata})


def test_hit_copy_does_not_share_metadata():
    h = Hit("a", "t", 1.0, {"x": 1})
    c = h.copy(score=2.0)
    c.meta["x"] = 2
    assert h.meta == {"x": 1} and c.score == 2.0 and c.id == "a"


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True, None])
def test_positive_int_errors_name_the_value(bad):
    with pytest.raises(InvalidInputError, match=re.escape(f"k must be a positive integer, got {bad!r}.")):
        check_positive_int("k", bad)


def test_query_checks():
    with pytest.raises(ValueError, match="query must be a non-empty string, got '  '"):
        check_query("  ")
    with pytest.raises(ValueError, match="query must be a str, got int"):
        check_query(3)


def test_require_names_the_extra():
    with pytest.raises(ImportError, match=re.escape('install it with: pip install "latentrag[milvus]"')):
        require("latentrag_no_such_module", "milvus")
    with pytest.raises(ValueError, match="unknown extra 'nope'"):
        require("json", "nope")


def test_core_import_does_not_import_frameworks():
    import subprocess
    import sys

    code = (
        "import sys, latentrag, latentrag.retrievers, latentrag.compressors, latentrag.integrations;"
        "bad=[m for m in sys.modules if m.startswith(('langchain', 'llama_index'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
