"""The `saverkit` command line: inspect, diff, convert, end to end on TF-written fixtures."""

import base64
import hashlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from saverkit import cli
from saverkit import dtypes as sk_dtypes
from saverkit.bundle import BundleReader, write_bundle

FIXTURES = Path(__file__).parent / "fixtures" / "tf-2.21"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
DTYPES_PREFIX = FIXTURES / "v1_dtypes" / "model.ckpt-7"
_spec = importlib.util.spec_from_file_location(
    "hostile_npz", Path(__file__).parent / "hostile" / "hostile_npz.py")
hostile_npz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hostile_npz)


def manifest(case, prefix):
    return MANIFEST["cases"][case]["checkpoints"][f"{case}/{prefix}"]


def sha256_of(arr, dtype_name):
    """The manifest's digest (make_tf_fixtures.py): C-order LE bytes; strings as len(u64 LE) + bytes."""
    h = hashlib.sha256()
    if dtype_name == "string":
        for x in np.asarray(arr).reshape(-1):
            h.update(len(x).to_bytes(8, "little"))
            h.update(x)
    else:
        h.update(np.ascontiguousarray(arr).reshape(arr.shape).tobytes())
    return h.hexdigest()


def run(*argv):
    """saverkit in a subprocess, as users run it."""
    return subprocess.run([sys.executable, "-m", "saverkit", *map(str, argv)], capture_output=True, text=True,
                          timeout=120)


def call(capsys, *argv):
    """saverkit in-process: (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_matches_manifest(prefix, expected, names=None):
    with BundleReader(str(prefix)) as r:
        entries = r.entries()
        for name in names if names is not None else expected:
            rec = expected[name]
            dtype, shape = entries[name]
            assert (dtype.name, list(shape)) == (rec["dtype"], rec["shape"]), name
            assert sha256_of(r.read(name), rec["dtype"]) == rec["sha256"], name


# --- inspect -------------------------------------------------------------------------------------------

def test_inspect_lists_names_dtypes_shapes_and_bytes_of_every_tensor(capsys):
    code, out, err = call(capsys, "inspect", DTYPES_PREFIX)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["name", "dtype", "shape", "bytes"]
    expected = manifest("v1_dtypes", "model.ckpt-7")
    rows = {}
    for line in lines[1:-1]:
        m = re.fullmatch(r"(\S+)\s+(\S+)\s+(\[[\d, ]*\])\s+([\d,]+)", line)
        assert m, line
        rows[m[1]] = (m[2], json.loads(m[3]), int(m[4].replace(",", "")))
    assert list(rows) == sorted(expected)
    total = 0
    for name, rec in expected.items():
        if rec["dtype"] == "string":
            size = sum(len(base64.b64decode(x)) for x in rec["b64"])
        else:
            size = int(np.prod(rec["shape"])) * sk_dtypes.as_dtype(rec["dtype"]).np_dtype.itemsize
        assert rows[name] == (rec["dtype"], rec["shape"], size), name
        total += size
    elements = sum(int(np.prod(r["shape"])) for r in expected.values())
    assert lines[-1].startswith(f"total: {len(expected)} tensors, {elements:,} elements, {total:,} bytes")


@pytest.mark.parametrize("form", ["prefix", "directory", "index", "data", "meta"])
def test_inspect_accepts_prefix_directory_or_any_checkpoint_file(capsys, form):
    path = {"prefix": DTYPES_PREFIX, "directory": DTYPES_PREFIX.parent,
            "index": f"{DTYPES_PREFIX}.index", "data": f"{DTYPES_PREFIX}.data-00000-of-00001",
            "meta": f"{DTYPES_PREFIX}.meta"}[form]
    assert call(capsys, "inspect", path) == call(capsys, "inspect", DTYPES_PREFIX)


def test_inspect_tensor_prints_its_values(capsys):
    code, out, _ = call(capsys, "inspect", DTYPES_PREFIX, "--tensor", "float32/v2", "--tensor", "string/mat")
    assert code == 0
    f32 = manifest("v1_dtypes", "model.ckpt-7")["float32/v2"]
    strings = manifest("v1_dtypes", "model.ckpt-7")["string/mat"]
    expected_f32 = np.frombuffer(bytes.fromhex(f32["hex"]), "<f4")
    expected_str = np.array([base64.b64decode(x) for x in strings["b64"]], dtype=object).reshape(3, 2)
    assert out == ("tensor_name: float32/v2  dtype: float32  shape: [7]\n" + repr(expected_f32) + "\n"
                   "tensor_name: string/mat  dtype: string  shape: [3, 2]\n" + repr(expected_str) + "\n")


def test_inspect_full_prints_whole_arrays(capsys):
    prefix = FIXTURES / "v1_sharded" / "model.ckpt"  # dev0/a has 2112 elements: numpy elides above 1000
    _, short, _ = call(capsys, "inspect", prefix, "--tensor", "dev0/a")
    _, full, _ = call(capsys, "inspect", prefix, "--tensor", "dev0/a", "--full")
    assert "..." in short and "..." not in full
    values = np.array(re.findall(r"-?\d+\.\d*(?:e[-+]\d+)?", full.split("\n", 1)[1]), dtype=np.float32)
    with BundleReader(str(prefix)) as r:
        assert values.size == 64 * 33
        np.testing.assert_allclose(values, r.read("dev0/a").reshape(-1), rtol=1e-6)


def test_inspect_all_prints_every_tensor(capsys):
    code, out, _ = call(capsys, "inspect", FIXTURES / "v1_partitioned", "--all")
    assert code == 0
    assert re.findall(r"^tensor_name: (\S+)", out, re.M) == ["emb", "plain", "wide"]


def test_inspect_unknown_tensor_suggests_close_names(capsys):
    code, out, err = call(capsys, "inspect", DTYPES_PREFIX, "--tensor", "bfloat16/v2")
    assert code == 2 and out == ""
    assert err == (f"saverkit inspect: error: {DTYPES_PREFIX}: no tensor named 'bfloat16/v2'; "
                   "did you mean 'bfloat16/v1', 'bfloat16/v0', 'float16/v1'?\n")


def test_directory_without_state_file_uses_newest_complete_checkpoint(capsys, tmp_path):
    d = Path(shutil.copytree(FIXTURES / "v1_max_to_keep", tmp_path / "run"))
    (d / "checkpoint").unlink()
    code, out, err = call(capsys, "inspect", d)
    assert code == 0 and "step" in out
    assert err == (f"saverkit: warning: {d}: no 'checkpoint' state file; using the newest complete "
                   f"checkpoint {d / 'model.ckpt-4'}\n")


def test_directory_whose_state_file_names_a_missing_checkpoint_falls_back(capsys, tmp_path):
    d = Path(shutil.copytree(FIXTURES / "v1_max_to_keep", tmp_path / "run"))
    (d / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-9"\n')
    code, out, err = call(capsys, "inspect", d)
    assert code == 0 and "step" in out
    assert err == (f"saverkit: warning: {d}: its 'checkpoint' state file names {d / 'model.ckpt-9'}, which "
                   f"does not exist; using the newest complete checkpoint {d / 'model.ckpt-4'}\n")


@pytest.mark.parametrize("content", ["garbage\n", 'all_model_checkpoint_paths: "x"\n'])
def test_directory_with_unusable_state_file_falls_back(capsys, tmp_path, content):
    d = Path(shutil.copytree(FIXTURES / "v1_max_to_keep", tmp_path / "run"))
    (d / "checkpoint").write_text(content)
    code, out, err = call(capsys, "inspect", d)
    assert code == 0 and "step" in out
    assert err.endswith(f"saverkit: warning: {d}: its 'checkpoint' state file is unusable; using the newest "
                        f"complete checkpoint {d / 'model.ckpt-4'}\n")


def test_moved_directory_is_followed_with_a_one_line_warning(tmp_path):
    from saverkit import train

    old = Path(shutil.copytree(FIXTURES / "v1_max_to_keep", tmp_path / "old"))
    train.update_checkpoint_state(old, str(old / "model.ckpt-4"))
    new = old.rename(tmp_path / "new")
    proc = run("inspect", new)
    assert proc.returncode == 0 and "step" in proc.stdout
    assert proc.stderr.count("\n") == 1
    assert re.fullmatch(r"saverkit: warning: .*no longer exist.*old/model.ckpt-4 -> .*new/model.ckpt-4\n",
                        proc.stderr)


# --- subprocess / console script -----------------------------------------------------------------------

def test_python_dash_m_saverkit_matches_main(capsys):
    proc = run("inspect", FIXTURES / "tf2_object")
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout == call(capsys, "inspect", FIXTURES / "tf2_object")[1]


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "saverkit"
    proc = subprocess.run([str(script), "diff", DTYPES_PREFIX, DTYPES_PREFIX.parent], capture_output=True,
                          text=True, timeout=120)
    assert (proc.returncode, proc.stdout) == (0, "identical: 38 tensors\n")


def test_usage_error_exits_2():
    proc = run("inspect")
    assert proc.returncode == 2 and "required: path" in proc.stderr


@pytest.mark.parametrize("case", ["missing", "not_a_checkpoint", "empty_dir", "bad_npz", "bad_safetensors",
                                  "truncated_index", "corrupt_data", "npz_with_pickles"])
def test_bad_paths_give_one_line_errors_without_traceback(tmp_path, case):
    target = tmp_path / case
    if case == "not_a_checkpoint":
        target.write_text("hello")
    elif case == "empty_dir":
        target.mkdir()
    elif case == "bad_npz":
        target = tmp_path / "bad.npz"
        target.write_bytes(b"PK not really")
    elif case == "bad_safetensors":
        target = tmp_path / "bad.safetensors"
        target.write_bytes(b"\xff" * 16)
    elif case in ("truncated_index", "corrupt_data"):
        d = Path(shutil.copytree(FIXTURES / "v1_max_to_keep", target))
        if case == "truncated_index":
            (d / "model.ckpt-4.index").write_bytes((d / "model.ckpt-4.index").read_bytes()[:30])
        else:
            data = d / "model.ckpt-4.data-00000-of-00001"
            raw = bytearray(data.read_bytes())
            raw[-1] ^= 0x40
            data.write_bytes(bytes(raw))
        target = d / "model.ckpt-4"
    elif case == "npz_with_pickles":
        target = tmp_path / "obj.npz"
        np.savez(target, a=np.array([1, "x"], dtype=object))
    proc = run("inspect", target, "--all") if case == "corrupt_data" else run("inspect", target)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("saverkit inspect: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(tmp_path) in lines[0]


def test_npz_entry_claiming_more_data_than_it_holds_is_rejected_before_allocating(capsys, tmp_path):
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (10**6, 10**6)})
    with zipfile.ZipFile(tmp_path / "huge.npz", "w") as zf:
        zf.writestr("w.npy", header.getvalue() + b"\0" * 64)
    code, out, err = call(capsys, "inspect", tmp_path / "huge.npz", "--tensor", "w")
    assert code == 2
    assert err == (f"saverkit inspect: error: {tmp_path / 'huge.npz'}: entry 'w' claims shape "
                   "[1000000, 1000000] of float64 (8000000000000 bytes) but holds only 64 bytes of "
                   "data\n")


# --- hostile .npz / .safetensors inputs (tests/hostile/hostile_npz.py builds the ZIPs by hand) -------------

def _npy(arr):
    out = io.BytesIO()
    np.lib.format.write_array(out, arr, allow_pickle=False)
    return out.getvalue()


def _npz(path, members):
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name + ".npy", data)
    return path


def _one_line_error(code, out, err, command, path):
    assert code == 2, out
    assert err.count("\n") == 1 and err.startswith(f"saverkit {command}: error: {path}: "), err
    assert "'w'" in err and not re.search(r"\b(TypeError|ValueError|MemoryError)\b", err), err
    return err


@pytest.mark.parametrize("array, declared, stored", [
    (np.arange(3, dtype="f4"), "string", "float32"),
    (np.array([b"abcd", b"efgh"]), "float32", "S4"),  # same width: once silently reinterpreted
    (np.arange(3, dtype="i8"), "resource", "int64"),
    (np.arange(3, dtype="f4"), "bfloat16", "float32"),
    (np.arange(3, dtype="i4"), "float32", "int32"),  # not a bit pattern saverkit writes (those are uint)
])
@pytest.mark.parametrize("command", [["inspect"], ["inspect", "--all"], ["convert", "OUT"]])
def test_npz_declaring_an_impossible_dtype_is_a_one_line_error(capsys, tmp_path, array, declared, stored,
                                                                 command):
    path = _npz(tmp_path / "lie.npz", {"w": _npy(array), cli.NPZ_DTYPES_KEY: _npy(
        np.array(json.dumps({"w": declared}).encode()))})
    argv = [a if a != "OUT" else tmp_path / "out" for a in command]
    err = _one_line_error(*call(capsys, argv[0], path, *argv[1:]), argv[0], path)
    assert err.endswith(f"entry 'w' is stored as {stored}, which cannot hold the {declared} that "
                        f"{cli.NPZ_DTYPES_KEY} declares for it\n")
    assert not (tmp_path / "out.index").exists()


def test_npz_declared_dtype_must_be_a_dtype_name(capsys, tmp_path):
    # json 1 once passed as_dtype(1), float32, silently.
    path = _npz(tmp_path / "enum.npz", {"w": _npy(np.arange(3, dtype="i4")),
                                        cli.NPZ_DTYPES_KEY: _npy(np.array(b'{"w": 1}'))})
    err = _one_line_error(*call(capsys, "inspect", path), "inspect", path)
    assert err.endswith(f"{cli.NPZ_DTYPES_KEY} gives 'w' the unknown dtype 1\n")


@pytest.mark.parametrize("shape", [(-5,), (3, -5)])
@pytest.mark.parametrize("command", [["inspect"], ["inspect", "--all"], ["convert", "OUT"]])
def test_npz_header_with_a_negative_dimension_is_rejected(capsys, tmp_path, shape, command):
    path = _npz(tmp_path / "neg.npz", {"w": hostile_npz.npy_header(shape) + b"\0" * 64})
    argv = [a if a != "OUT" else tmp_path / "out" for a in command]
    err = _one_line_error(*call(capsys, argv[0], path, *argv[1:]), argv[0], path)
    assert err.endswith(f"entry 'w' has a negative dimension in its shape {list(shape)}\n")


def _zeros_bomb(path, shape, n_zeros, file_size=None):
    """An .npz of one ZIP_DEFLATED member 'w': a .npy header claiming ``shape`` of float32, then
    ``n_zeros`` zero bytes; the ZIP directory says ``file_size`` (default: the truth)."""
    stream, crc, size = hostile_npz.zeros_bomb(hostile_npz.npy_header(shape), n_zeros)
    hostile_npz.zip_with_member(path, "w.npy", stream, crc, size if file_size is None else file_size)
    return path


GiB = 1 << 30


def test_npz_deflate_bomb_is_refused_before_allocating_in_a_memory_limited_process(tmp_path):
    """10 GiB of zeros in a 10 MiB file, every size telling the truth: under an address-space limit the
    allocation fails at once, and the error names the file, the entry and the size."""
    resource = pytest.importorskip("resource")
    path = _zeros_bomb(tmp_path / "bomb.npz", (10 * GiB // 4,), 10 * GiB)
    assert path.stat().st_size < 12 << 20

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 * GiB, 3 * GiB))

    proc = subprocess.run([sys.executable, "-m", "saverkit", "convert", path, tmp_path / "out.npz"],
                          capture_output=True, text=True, timeout=120, preexec_fn=limit)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr
    assert lines[0].startswith(f"saverkit convert: error: {path}: entry 'w' (shape [2684354560] of float32) "
                               "needs 10.0 GiB of memory: "), lines[0]
    assert not (tmp_path / "out.npz").exists()


def test_npz_deflate_bomb_bigger_than_free_memory_is_refused_without_allocating(capsys, tmp_path,
                                                                                  monkeypatch):
    import tracemalloc

    path = _zeros_bomb(tmp_path / "bomb.npz", (10 * GiB // 4,), 10 * GiB)
    monkeypatch.setattr(cli, "_available_memory", lambda: 4 * GiB)
    tracemalloc.start()
    try:
        code, out, err = call(capsys, "inspect", path, "--tensor", "w")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20
    _one_line_error(code, out, err, "inspect", path)
    assert err.endswith("entry 'w' (shape [2684354560] of float32) needs 10.0 GiB of memory: only 4.0 GiB "
                        "is available\n")


def test_npz_directory_claiming_more_than_deflate_can_expand_is_refused(capsys, tmp_path):
    import tracemalloc

    # Header and directory both say 10 GiB; the member's stream expands to 1 MiB.
    path = _zeros_bomb(tmp_path / "lie.npz", (10 * GiB // 4,), 1 << 20, file_size=10 * GiB + 128)
    tracemalloc.start()
    try:
        code, out, err = call(capsys, "convert", path, tmp_path / "out.npz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20  # the 10 GiB the header promises was never asked for
    _one_line_error(code, out, err, "convert", path)
    assert "the ZIP directory claims 10737418368 bytes deflated into" in err
    assert "more than deflate can expand" in err


def test_npz_member_holding_less_than_its_header_promises_is_data_loss(capsys, tmp_path):
    import zlib

    # Plausible sizes everywhere (random data does not compress), but the stream ends after 1 MiB of the
    # 4 MiB the header and the directory promise.
    header = hostile_npz.npy_header((1 << 20,))
    payload = header + np.random.default_rng(0).bytes(1 << 20)
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    stream = comp.compress(payload) + comp.flush()
    path = tmp_path / "short.npz"
    hostile_npz.zip_with_member(path, "w.npy", stream, zlib.crc32(payload), len(header) + (4 << 20))
    code, out, err = call(capsys, "convert", path, tmp_path / "out.npz")
    _one_line_error(code, out, err, "convert", path)
    assert err.endswith("entry 'w' claims shape [1048576] of float32 (4194304 bytes) but holds only "
                        "1048576 bytes of data\n")


def test_npz_member_expanding_beyond_its_header_is_read_only_as_far_as_the_header_says(capsys, tmp_path):
    import tracemalloc

    # A 10-element header followed by 10 GiB of zeros: reading stops after the 40 bytes promised.
    path = _zeros_bomb(tmp_path / "tail.npz", (10,), 10 * GiB)
    tracemalloc.start()
    try:
        code, out, err = call(capsys, "convert", path, tmp_path / "out.npz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (code, err) == (0, "") and peak < 64 << 20
    np.testing.assert_array_equal(np.load(tmp_path / "out.npz")["w"], np.zeros(10, np.float32))


def test_npz_with_a_bad_crc_is_data_loss(capsys, tmp_path):
    import zlib

    payload = _npy(np.arange(1000, dtype="f4"))
    comp = zlib.compressobj(6, zlib.DEFLATED, -15)
    path = tmp_path / "crc.npz"
    hostile_npz.zip_with_member(path, "w.npy", comp.compress(payload) + comp.flush(),
                                zlib.crc32(payload) ^ 1, len(payload))
    code, out, err = call(capsys, "inspect", path, "--tensor", "w")
    _one_line_error(code, out, err, "inspect", path)
    assert "Bad CRC-32" in err


def test_npz_from_a_big_endian_machine_reads_in_native_order(capsys, tmp_path):
    path = _npz(tmp_path / "be.npz", {"w": _npy(np.arange(3, dtype=">f4"))})
    assert call(capsys, "convert", path, tmp_path / "out")[0] == 0
    with BundleReader(str(tmp_path / "out")) as r:
        np.testing.assert_array_equal(r.read("w"), np.arange(3, dtype="f4"))


def _safetensors(path, header, data=b""):
    import struct

    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize("header, data, message", [
    ({"w": {"dtype": "F32", "shape": [-5], "data_offsets": [0, 4]}}, b"\0" * 4, "expected usize"),
    ({"w": {"dtype": "F32", "shape": [2**32, 2**32], "data_offsets": [0, 0]}}, b"", "overflow"),
    ({"w": {"dtype": "U8", "shape": [2**63, 2], "data_offsets": [0, 0]}}, b"", "overflow"),
    ({"w": {"dtype": "F32", "shape": [10], "data_offsets": [0, 40]}}, b"\0" * 8, "not fully covered"),
    ({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "not fully covered"),
    ({"w": {"dtype": "F32", "shape": [0, 2**62], "data_offsets": [0, 0]}}, b"", "too big"),
])
@pytest.mark.parametrize("command", [["inspect", "--all"], ["convert", "OUT"]])
def test_safetensors_header_lying_about_sizes_is_a_one_line_error(capsys, tmp_path, header, data, message,
                                                                   command):
    pytest.importorskip("safetensors")
    path = _safetensors(tmp_path / "lie.safetensors", header, data)
    argv = [a if a != "OUT" else tmp_path / "out" for a in command]
    code, out, err = call(capsys, argv[0], path, *argv[1:])
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert err.startswith(f"saverkit {argv[0]}: error: {path}: "), err


def test_safetensors_header_longer_than_the_file_is_a_one_line_error(capsys, tmp_path):
    import struct

    pytest.importorskip("safetensors")
    path = tmp_path / "long.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    code, out, err = call(capsys, "inspect", path)
    assert code == 2 and err == (f"saverkit inspect: error: {path}: not a readable .safetensors file (Error "
                                 "while deserializing header: header too large)\n")


def test_traceback_flag_shows_the_exception(tmp_path):
    proc = run("--traceback", "inspect", tmp_path / "missing")
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "CliError" in proc.stderr


# --- convert -------------------------------------------------------------------------------------------

def test_npz_round_trip_preserves_every_tensor_bit_for_bit(capsys, tmp_path):
    expected = manifest("v1_dtypes", "model.ckpt-7")
    code, out, err = call(capsys, "convert", DTYPES_PREFIX, tmp_path / "m.npz")
    assert (code, out, err) == (0, f"wrote {tmp_path / 'm.npz'}: 38 tensors\n", "")
    code, out, err = call(capsys, "convert", tmp_path / "m.npz", tmp_path / "back" / "model")
    assert (code, err) == (0, "")
    assert_matches_manifest(tmp_path / "back" / "model", expected)
    assert call(capsys, "diff", DTYPES_PREFIX, tmp_path / "back" / "model")[0] == 0


def test_npz_is_plain_numpy_without_pickles(capsys, tmp_path):
    call(capsys, "convert", DTYPES_PREFIX, tmp_path / "m.npz")
    expected = manifest("v1_dtypes", "model.ckpt-7")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as z:
        assert sorted(z.files) == sorted([*expected, cli.NPZ_DTYPES_KEY])
        declared = json.loads(z[cli.NPZ_DTYPES_KEY][()])
        assert declared == {"bfloat16/v0": "bfloat16", "bfloat16/v1": "bfloat16"}
        assert z["bfloat16/v1"].dtype == np.uint16  # the bit patterns
        assert z["float32/v0"].shape == () and z["complex128/v1"].dtype == np.complex128
        assert z["string/mat"].dtype.kind == "S"
        for name, rec in expected.items():
            if name not in declared:
                arr = z[name]
                if rec["dtype"] == "string":
                    arr = arr.astype(object)
                assert list(arr.shape) == rec["shape"] and sha256_of(arr, rec["dtype"]) == rec["sha256"], name


def test_string_with_trailing_nul_is_skipped_with_a_warning(capsys, tmp_path):
    write_bundle(str(tmp_path / "src"), ["ok", "nul", "x"],
                 [np.array([b"a", b""], dtype=object), np.array([b"a\0"], dtype=object), np.arange(3)])
    code, out, err = call(capsys, "convert", tmp_path / "src", tmp_path / "o.npz")
    assert code == 0 and out == f"wrote {tmp_path / 'o.npz'}: 2 tensors, 1 skipped\n"
    assert "skipping string tensor 'nul': an element ends with a NUL byte" in err
    with np.load(tmp_path / "o.npz") as z:
        assert sorted(z.files) == ["ok", "x"]
        assert z["ok"].tolist() == [b"a", b""]


def test_quantized_tensors_keep_their_dtype_through_npz(capsys, tmp_path):
    values = np.array([-3, 0, 7], dtype=np.int8)
    write_bundle(str(tmp_path / "src"), ["q"], [values], dtypes=[sk_dtypes.qint8])
    call(capsys, "convert", tmp_path / "src", tmp_path / "q.npz")
    call(capsys, "convert", tmp_path / "q.npz", tmp_path / "back")
    with BundleReader(str(tmp_path / "back")) as r:
        assert r.entries()["q"][0] == sk_dtypes.qint8
        assert r.read("q").view(np.int8).tolist() == [-3, 0, 7]


def test_ml_dtypes_tensors_travel_through_npz_as_declared_bit_patterns(capsys, tmp_path):
    import ml_dtypes

    kinds = ["float8_e4m3fn", "float8_e5m2", "int4", "uint4", "float4_e2m1fn"]
    arrays = [np.array([1, 2, 3, 0.5 if k.startswith("float") else 0], getattr(ml_dtypes, k)) for k in kinds]
    write_bundle(str(tmp_path / "src"), kinds, arrays)
    assert call(capsys, "convert", tmp_path / "src", tmp_path / "m.npz")[0] == 0
    with np.load(tmp_path / "m.npz") as z:
        assert json.loads(z[cli.NPZ_DTYPES_KEY][()]) == {k: k for k in kinds}
        assert all(z[k].dtype == np.uint8 for k in kinds)
    assert call(capsys, "convert", tmp_path / "m.npz", tmp_path / "back")[0] == 0
    with BundleReader(str(tmp_path / "back")) as r:
        for k, a in zip(kinds, arrays, strict=True):
            back = r.read(k)
            assert back.dtype == a.dtype and back.tobytes() == a.tobytes(), k
    assert call(capsys, "diff", tmp_path / "src", tmp_path / "m.npz")[0] == 0


def test_safetensors_round_trip_of_numeric_tensors(capsys, tmp_path):
    from safetensors.numpy import load_file

    expected = manifest("v1_dtypes", "model.ckpt-7")
    code, out, err = call(capsys, "convert", DTYPES_PREFIX, tmp_path / "m.safetensors")
    skipped = sorted(n for n, r in expected.items() if r["dtype"] in ("string", "complex128"))
    assert code == 0 and out == f"wrote {tmp_path / 'm.safetensors'}: 32 tensors, 6 skipped\n"
    assert [re.search(r"tensor '(.*)':", line)[1] for line in err.splitlines()] == skipped
    loaded = load_file(tmp_path / "m.safetensors")
    assert loaded["bfloat16/v1"].dtype.name == "bfloat16" and loaded["float32/v0"].shape == ()
    kept = sorted(set(expected) - set(skipped))
    assert sorted(loaded) == kept
    for name in kept:
        assert sha256_of(loaded[name], expected[name]["dtype"]) == expected[name]["sha256"], name
    assert call(capsys, "convert", tmp_path / "m.safetensors", tmp_path / "back")[0] == 0
    assert_matches_manifest(tmp_path / "back", expected, kept)
    code, out, _ = call(capsys, "diff", DTYPES_PREFIX, tmp_path / "back")
    assert code == 1 and out.splitlines()[:-1] == [
        f"only in A: {n} ({expected[n]['dtype']} {cli._shape_str(expected[n]['shape'])})" for n in skipped]


def test_safetensors_without_the_package_is_a_clear_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    code, out, err = call(capsys, "convert", DTYPES_PREFIX, tmp_path / "m.safetensors")
    assert code == 2 and not (tmp_path / "m.safetensors").exists()
    assert err == ("saverkit convert: error: the .safetensors format needs the 'safetensors' package: "
                   "pip install safetensors (or saverkit[safetensors])\n")


@pytest.mark.parametrize("case", ["v1_sharded/model.ckpt", "v1_partitioned/model.ckpt", "tf2_object/ckpt-4"])
def test_convert_to_tf_checkpoint_keeps_sliced_sharded_and_object_checkpoints(capsys, tmp_path, case):
    name, prefix = case.split("/")
    assert call(capsys, "convert", FIXTURES / case, tmp_path / "out")[0] == 0
    assert_matches_manifest(tmp_path / "out", manifest(name, prefix))


def test_convert_refuses_to_overwrite_without_force(capsys, tmp_path):
    (tmp_path / "m.npz").write_bytes(b"old")
    code, _, err = call(capsys, "convert", DTYPES_PREFIX, tmp_path / "m.npz")
    assert code == 2 and "already exists (pass --force to overwrite)" in err
    assert (tmp_path / "m.npz").read_bytes() == b"old"
    call(capsys, "convert", FIXTURES / "v1_max_to_keep", tmp_path / "ckpt")
    assert call(capsys, "convert", DTYPES_PREFIX, tmp_path / "ckpt")[0] == 2
    assert call(capsys, "convert", DTYPES_PREFIX, tmp_path / "m.npz", "--force")[0] == 0
    assert call(capsys, "convert", DTYPES_PREFIX, tmp_path / "ckpt", "--force")[0] == 0
    assert call(capsys, "diff", DTYPES_PREFIX, tmp_path / "ckpt")[0] == 0
    assert sorted(os.listdir(tmp_path)) == ["ckpt.data-00000-of-00001", "ckpt.index", "m.npz"]


@pytest.mark.parametrize("fmt", ["", ".npz"])
def test_convert_into_an_existing_directory_is_refused_before_writing(capsys, tmp_path, fmt):
    out = tmp_path / f"out{fmt}"
    out.mkdir()
    code, stdout, err = call(capsys, "convert", DTYPES_PREFIX, out, "--force")
    assert code == 2 and stdout == ""
    assert f"{out}: is an existing directory" in err and str(out / "model") in err
    assert sorted(os.listdir(tmp_path)) == [out.name] and os.listdir(out) == []


def test_failed_npz_write_leaves_no_partial_file(capsys, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np.lib.format, "write_array", boom)
    code, _, err = call(capsys, "convert", DTYPES_PREFIX, tmp_path / "m.npz")
    assert code == 2
    assert err == f"saverkit convert: error: {tmp_path / 'm.npz'}: cannot write: No space left on device\n"
    assert os.listdir(tmp_path) == []


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_line_on_a_terminal_only(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_PROGRESS_DELAY", 0.0)
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert cli.main(["convert", str(DTYPES_PREFIX), str(tmp_path / "a.npz")]) == 0
    shown = terminal.getvalue()
    assert shown.startswith("\rconvert 0/38 (0%) bfloat16/v0")
    assert re.search(r"\r {19,}\r$", shown)  # the line is wiped at the end
    assert "\n" not in shown
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert cli.main(["convert", str(DTYPES_PREFIX), str(tmp_path / "b.npz")]) == 0
    assert sys.stderr.getvalue() == ""


def test_progress_waits_before_showing_anything():
    terminal = FakeTerminal()
    progress = cli.Progress("x", 10, terminal)  # default delay: quick runs print nothing
    progress.update(3, "t")
    progress.close()
    assert terminal.getvalue() == ""


# --- diff ----------------------------------------------------------------------------------------------

def test_diff_of_a_checkpoint_with_itself_is_identical(capsys):
    for case in ("v1_dtypes", "v1_sharded", "v1_partitioned", "tf2_object"):
        assert call(capsys, "diff", FIXTURES / case, FIXTURES / case) == (
            0, f"identical: {len(next(iter(MANIFEST['cases'][case]['checkpoints'].values())))} tensors\n", "")


def test_diff_reports_every_kind_of_difference(capsys, tmp_path):
    src = FIXTURES / "v1_dtypes" / "model.ckpt-7"
    with BundleReader(str(src)) as r:
        tensors = {n: r.read(n) for n in r.entries()}
    tensors["float64/v1"] = tensors["float64/v1"].copy()
    tensors["float64/v1"][2, 1] += 0.5
    tensors["float64/v1"][4, 0] -= 0.25
    tensors["int64/v1"] = tensors["int64/v1"].copy()
    extreme = np.iinfo(np.int64)
    tensors["int64/v1"][0, 0] = extreme.max if tensors["int64/v1"][0, 0] < 0 else extreme.min
    tensors["string/vec"] = tensors["string/vec"].copy()
    tensors["string/vec"][1] = b"changed"
    tensors["int8/v1"] = tensors["int8/v1"].astype(np.int16)  # dtype change
    tensors["float32/v2"] = tensors["float32/v2"][:5]  # shape change
    del tensors["global_step"]
    tensors["extra"] = np.zeros(2, np.float32)
    write_bundle(str(tmp_path / "m"), list(tensors), list(tensors.values()))
    with BundleReader(str(src)) as r:
        original_int = int(r.read("int64/v1")[0, 0])
    new_int = int(tensors["int64/v1"][0, 0])

    code, out, err = call(capsys, "diff", src, tmp_path / "m")
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        "only in A: global_step (int64 [])",
        "only in B: extra (float32 [2])",
        "shape differs: float32/v2: [7] vs [5]",
        "values differ: float64/v1: 2 of 15 elements differ, max abs diff 0.5",
        f"values differ: int64/v1: 1 of 15 elements differ, max abs diff {abs(new_int - original_int)}",
        "dtype differs: int8/v1: int8 vs int16",
        "values differ: string/vec: 1 of 9 strings differ",
        "7 difference(s); 37 tensors in both, 1 only in A, 1 only in B",
    ]
    assert call(capsys, "diff", "-q", src, tmp_path / "m") == (1, "", "")
    assert run("diff", src, tmp_path / "m").returncode == 1


def test_diff_across_formats(capsys, tmp_path):
    call(capsys, "convert", DTYPES_PREFIX, tmp_path / "m.npz")
    assert call(capsys, "diff", DTYPES_PREFIX, tmp_path / "m.npz") == (0, "identical: 38 tensors\n", "")


@pytest.mark.parametrize("a,b,dtype,expected", [
    ([0.0, 1.0], [-0.0, 1.0], "float32", "1 of 2 elements differ, max abs diff 0"),
    ([np.nan, 1.0], [np.nan, 2.0], "float64", "1 of 2 elements differ, max abs diff 1"),
    ([np.nan, 1.0], [0.0, 1.0], "float64", "1 of 2 elements differ (1 involve NaN)"),
    ([np.inf], [1.0], "float16", "1 of 1 elements differ, max abs diff inf"),
    ([-(2**63)], [2**63 - 1], "int64", f"1 of 1 elements differ, max abs diff {2**64 - 1}"),
    ([0, 255], [255, 255], "uint8", "1 of 2 elements differ, max abs diff 255"),
    ([True, False], [True, True], "bool", "1 of 2 elements differ"),
    ([1 + 1j], [1 + 4j], "complex128", "1 of 1 elements differ, max abs diff 3"),
    ([1.5, 2.0], [1.5, 2.0], "bfloat16", None),
    ([1.0, 2.0], [1.0, 3.0], "bfloat16", "1 of 2 elements differ, max abs diff 1"),
])
def test_compare_values(a, b, dtype, expected):
    dt = sk_dtypes.as_dtype(dtype)
    assert cli.compare_values(np.array(a, dt.np_dtype), np.array(b, dt.np_dtype), dt) == expected


# --- TensorFlow interop --------------------------------------------------------------------------------

@pytest.mark.tf
def test_tensorflow_reads_checkpoints_converted_from_npz(capsys, tmp_path):
    import tensorflow as tf

    call(capsys, "convert", DTYPES_PREFIX, tmp_path / "m.npz")
    call(capsys, "convert", tmp_path / "m.npz", tmp_path / "tfout")
    reader = tf.train.load_checkpoint(str(tmp_path / "tfout"))
    expected = manifest("v1_dtypes", "model.ckpt-7")
    assert reader.get_variable_to_shape_map().keys() == expected.keys()
    for name, rec in expected.items():
        value = reader.get_tensor(name)
        assert reader.get_variable_to_dtype_map()[name].name == rec["dtype"]
        value = np.asarray(value, dtype=object if rec["dtype"] == "string" else None)
        assert sha256_of(value, rec["dtype"]) == rec["sha256"], name
