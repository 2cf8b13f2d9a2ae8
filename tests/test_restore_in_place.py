"""Saver.restore puts checkpoint bytes straight into variable buffers: no second copy of the payload.

Initialized variables are filled in place (RestoreV2 reads into their buffers); uninitialized ones adopt
the arrays RestoreV2 read, so a restore into a new session peaks at 1x the checkpoint size.
"""

import numpy as np
import pytest
import saverkit as sk
from saverkit import bundle
from saverkit.framework.variable_store import variable_key


def _graph(shapes):
    g = sk.Graph()
    with g.as_default():
        vs = [sk.Variable(sk.zeros(s, dtype=sk.float32), name=f"v{i}") for i, s in enumerate(shapes)]
        saver = sk.train.Saver(vs)
    return g, vs, saver


def _buffer(sess, var):
    return sess._variables._values[variable_key(var.op)]


@pytest.fixture
def saved(tmp_path):
    values = [np.arange(12, dtype=np.float32).reshape(3, 4), np.full((5,), 7.5, dtype=np.float32)]
    g, vs, saver = _graph([v.shape for v in values])
    with sk.Session(graph=g) as sess:
        sess.run([v.initializer for v in vs])
        for v, x in zip(vs, values, strict=True):
            v.load(x, sess)
        prefix = saver.save(sess, str(tmp_path / "ckpt"), write_meta_graph=False)
    return prefix, values


def test_restore_into_initialized_variables_reuses_their_buffers(saved):
    prefix, values = saved
    g, vs, saver = _graph([v.shape for v in values])
    with sk.Session(graph=g) as sess:
        sess.run([v.initializer for v in vs])
        before = [_buffer(sess, v) for v in vs]
        saver.restore(sess, prefix)
        assert all(_buffer(sess, v) is b for v, b in zip(vs, before, strict=True))
        for v, x in zip(vs, values, strict=True):
            np.testing.assert_array_equal(sess.run(v), x)


def test_restore_into_new_session_adopts_the_arrays_read(saved, monkeypatch):
    prefix, values = saved
    returned = []
    real = bundle.read_tensors

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        returned.extend(out)
        return out

    monkeypatch.setattr(bundle, "read_tensors", spy)
    g, vs, saver = _graph([v.shape for v in values])
    with sk.Session(graph=g) as sess:
        saver.restore(sess, prefix)
        assert [id(_buffer(sess, v)) for v in vs] == [id(a) for a in returned]
        for v, x in zip(vs, values, strict=True):
            np.testing.assert_array_equal(sess.run(v), x)
        # The adopted buffer is the variable's own: later assignments and restores write into it.
        buf = _buffer(sess, vs[1])
        vs[1].load(np.zeros(5, np.float32), sess)
        assert _buffer(sess, vs[1]) is buf and not buf.any()


def test_shape_mismatch_in_new_session_is_still_an_error(saved):
    prefix, values = saved
    g, vs, saver = _graph([(4, 3), (5,)])  # same names, v0 transposed
    with sk.Session(graph=g) as sess:
        with pytest.raises(sk.errors.InvalidArgumentError):
            saver.restore(sess, prefix)
        assert not sess.run(sk.is_variable_initialized(vs[0]))


def _string_graph(n):
    g = sk.Graph()
    with g.as_default():
        vs = [sk.Variable(sk.constant(np.full((n,), b"", dtype=object)), name=f"s{i}") for i in range(2)]
        saver = sk.train.Saver(vs)
    return g, vs, saver


def test_string_variables_are_restored_into_their_object_arrays(tmp_path):
    values = [np.array([b"a", b"", b"\x00b", b"c" * 70_000], dtype=object),
              np.array([b"x%d" % i for i in range(4)], dtype=object)]
    g, vs, saver = _string_graph(4)
    with sk.Session(graph=g) as sess:
        sess.run([v.initializer for v in vs])
        for v, x in zip(vs, values, strict=True):
            v.load(x, sess)
        prefix = saver.save(sess, str(tmp_path / "ckpt"), write_meta_graph=False)
    with sk.Session(graph=g) as sess:
        sess.run([v.initializer for v in vs])
        bufs = [_buffer(sess, v) for v in vs]
        before = sess.run(vs[0])  # a fetch taken before the restore must not change under the caller
        saver.restore(sess, prefix)
        assert [_buffer(sess, v) for v in vs] == bufs  # same arrays, new elements
        for v, x in zip(vs, values, strict=True):
            assert sess.run(v).tolist() == x.tolist()
        assert before.tolist() == [b""] * 4


def test_failed_string_restore_leaves_every_string_variable_as_it_was(tmp_path):
    values = [np.array([b"first%d" % i for i in range(4)], dtype=object),
              np.array([b"second%d" % i * 40 for i in range(4)], dtype=object)]
    g, vs, saver = _string_graph(4)
    with sk.Session(graph=g) as sess:
        sess.run([v.initializer for v in vs])
        for v, x in zip(vs, values, strict=True):
            v.load(x, sess)
        prefix = saver.save(sess, str(tmp_path / "ckpt"), write_meta_graph=False)
        entry = bundle.BundleReader(prefix)._core.entry("s1")
    with open(prefix + ".data-00000-of-00001", "r+b") as f:  # corrupt the last byte of s1
        f.seek(entry["offset"] + entry["size"] - 1)
        f.write(b"!")
    with sk.Session(graph=g) as sess:
        sess.run([v.initializer for v in vs])
        with pytest.raises(sk.errors.DataLossError):
            saver.restore(sess, prefix)
        for v in vs:  # s0 was read fine, but is not half-applied either
            assert sess.run(v).tolist() == [b""] * 4


def _restore_ctx(sess, saver):
    """The kernel context of the Saver's RestoreV2 op in ``sess``'s plan for the restore."""
    plan = next(p for p in sess._plans.values() if any(it.op.type == "RestoreV2" for it in p.template.items))
    return next(plan.context(i) for i, it in enumerate(plan.template.items) if it.op.type == "RestoreV2")


def test_batched_output_buffers_and_adoption_match_the_per_output_calls(saved):
    # RestoreV2 asks for all its buffers and adopts all its arrays in one pass each; the per-output
    # calls are the reference.
    prefix, values = saved
    g, vs, saver = _graph([v.shape for v in values])
    with sk.Session(graph=g) as sess:
        saver.restore(sess, prefix)  # binds the plan
        sess._variables._values.clear()
        sess.run(vs[0].initializer)  # v0 initialized, v1 not
        ctx = _restore_ctx(sess, saver)
        n = len(values)
        out = ctx.output_buffers(n)
        single = [ctx.output_buffer(i) for i in range(n)]
        assert all(o is b for o, b in zip(out, single, strict=True))
        assert out[0] is _buffer(sess, vs[0]) and out[1] is None
        fresh = [np.ones(3 * 4, np.float32).reshape(3, 4), np.ones(5, np.float32)]
        ctx.adopt_outputs(fresh, out)
        assert _buffer(sess, vs[0]) is out[0] and _buffer(sess, vs[1]) is fresh[1]
        # Same decisions as Ref.adopt through output_target, including refusing a view or a wrong shape.
        sess._variables._values.pop(variable_key(vs[1].op))
        read_only = np.ones(5, np.float32)
        read_only.flags.writeable = False
        for bad in (np.ones(10, np.float32)[:5], np.ones(6, np.float32), np.ones(5, np.float64), read_only):
            ctx.adopt_outputs([None, bad], [out[0], None])
            assert not ctx.output_target(1).adopt(bad)
            assert not sess.run(sk.is_variable_initialized(vs[1]))
