"""TensorShape: partially known shapes."""

import pytest
from saverkit import TensorShape
from saverkit.framework import tensor_shape
from saverkit.protobuf import tensor_shape_pb2


def test_known_and_unknown():
    s = TensorShape([2, None, 3])
    assert s.dims == [2, None, 3] and s.rank == 3 and s.ndims == 3 and len(s) == 3
    assert s.as_list() == [2, None, 3] and not s.is_fully_defined() and s.num_elements() is None
    assert s[1] is None and s[0] == 2 and s[1:].as_list() == [None, 3]
    u = TensorShape(None)
    assert u.rank is None and u.dims is None and not u.is_fully_defined()
    with pytest.raises(ValueError):
        u.as_list()
    f = TensorShape((4, 5))
    assert f.is_fully_defined() and f.num_elements() == 20
    assert TensorShape([]).num_elements() == 1
    assert str(s) == "(2, None, 3)" and str(u) == "<unknown>" and str(TensorShape([7])) == "(7,)"


def test_compatibility_and_merging():
    a = TensorShape([None, 3])
    b = TensorShape([2, None])
    assert a.is_compatible_with(b) and a.merge_with(b).as_list() == [2, 3]
    assert not a.is_compatible_with([2, 4]) and not a.is_compatible_with([3])
    assert a.is_compatible_with(None) and TensorShape(None).merge_with(a) == a
    with pytest.raises(ValueError, match="not compatible"):
        a.merge_with([1, 4])
    assert a.concatenate([5]).as_list() == [None, 3, 5]
    assert tensor_shape.unknown_shape(2).as_list() == [None, None]
    assert TensorShape(None).with_rank(2).as_list() == [None, None]
    with pytest.raises(ValueError, match="rank 3"):
        a.with_rank(3)


def test_equality_and_hash():
    assert TensorShape([1, 2]) == TensorShape((1, 2)) == [1, 2]
    assert TensorShape([None]) != TensorShape([1])
    assert hash(TensorShape([1, 2])) == hash(TensorShape([1, 2]))


def test_proto_round_trip():
    for s in (TensorShape([2, None]), TensorShape(None), TensorShape([])):
        p = s.as_proto()
        assert isinstance(p, tensor_shape_pb2.TensorShapeProto)
        assert TensorShape(p) == s
    assert TensorShape([None]).as_proto().dim[0].size == -1


def test_rejects_bad_dims():
    with pytest.raises(ValueError):
        TensorShape([-3])
    with pytest.raises(TypeError):
        TensorShape("ab")
