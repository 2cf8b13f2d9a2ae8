"""String ops: StringJoin and StaticRegexFullMatch."""

import numpy as np
import pytest
import saverkit as sk
from saverkit import errors
from saverkit.framework import string_ops


@pytest.fixture(autouse=True)
def graph():
    with sk.Graph().as_default() as g:
        yield g


def run(fetches, feed=None):
    with sk.Session() as sess:
        return sess.run(fetches, feed)


def test_string_join_scalars_and_vectors(graph):
    j = sk.string_join(["a", "b", "c"], separator="-")
    assert j.op.type == "StringJoin" and j.op.get_attr("N") == 3 and j.op.get_attr("separator") == b"-"
    assert j.shape.as_list() == []
    v = sk.string_join([sk.constant(["x", "y"]), "_tail"])
    assert v.shape.as_list() == [2]
    assert run(j) == b"a-b-c"
    assert run(v).tolist() == [b"x_tail", b"y_tail"]


def test_string_join_shape_mismatch(graph):
    a = sk.placeholder(sk.string, [None])
    b = sk.placeholder(sk.string, [None])
    with pytest.raises(errors.InvalidArgumentError, match="shapes do not match"):
        run(sk.string_join([a, b]), {a: ["1", "2"], b: ["1"]})


def test_regex_full_match(graph):
    m = string_ops.regex_full_match(sk.constant(["s3://bucket/x", "/local/x"]), "^s3://.*")
    assert m.op.type == "StaticRegexFullMatch" and m.dtype == sk.bool
    assert run(m).tolist() == [True, False]
    assert run(string_ops.regex_full_match("abc", "ab")) == np.bool_(False)
