"""`import saverkit` and the CLI load only what they use: ml_dtypes, the graph layer and the Saver come on
first need (each check runs in a fresh interpreter, since this one has imported everything already)."""

import json
import subprocess
import sys

import numpy as np
import pytest
from bundle_helpers import FIXTURES, manifest, tensor_sha256
from saverkit import bundle

HEAVY = ["ml_dtypes", "tensorflow", "matplotlib", "safetensors", "saverkit.framework", "saverkit.train.saver"]


def _fresh(code: str) -> dict:
    """Run `code` in a new interpreter; it leaves its findings in `out` (a dict), which comes back along
    with the heavy modules that ended up imported."""
    script = (
        "import json, sys\nout = {}\n" + code + "\n"
        f"out['heavy'] = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def float32_checkpoint(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("f32") / "model")
    bundle.write_bundle(prefix, ["w", "step"], [np.arange(6, dtype=np.float32).reshape(2, 3), np.float32(7)])
    return prefix


def test_import_saverkit_loads_no_heavy_module():
    out = _fresh("import saverkit\nout['float32'] = repr(saverkit.float32)")
    assert out["heavy"] == []
    assert out["float32"] == "saverkit.float32"


def test_ml_dtypes_resolve_on_first_need():
    out = _fresh(
        "import saverkit\n"
        "out['dtype'] = saverkit.bfloat16.name\n"  # the DType exists without ml_dtypes...
        "out['size'] = saverkit.bfloat16.size\n"
        "out['before'] = 'ml_dtypes' in sys.modules\n"
        "import numpy as np\n"
        "out['np'] = str(np.dtype(saverkit.dtypes.bfloat16.as_numpy_dtype))\n"  # ...its numpy type needs it
        "out['after'] = 'ml_dtypes' in sys.modules"
    )
    assert (out["dtype"], out["size"], out["before"], out["np"], out["after"]) == ("bfloat16", 2, False,
                                                                                  "bfloat16", True)


def test_as_dtype_of_an_ml_dtypes_type_works_before_saverkit_loaded_it():
    out = _fresh(
        "import ml_dtypes, numpy as np, saverkit\n"
        "out['a'] = saverkit.as_dtype(ml_dtypes.bfloat16).name\n"
        "out['b'] = saverkit.as_dtype(np.zeros(2, ml_dtypes.float8_e4m3fn).dtype).name\n"
        "out['c'] = saverkit.as_dtype(ml_dtypes.int4) is saverkit.int4"
    )
    assert (out["a"], out["b"], out["c"]) == ("bfloat16", "float8_e4m3fn", True)


def test_reading_a_float32_checkpoint_does_not_import_ml_dtypes(float32_checkpoint):
    out = _fresh(
        "import saverkit\n"
        f"r = saverkit.train.load_checkpoint({float32_checkpoint!r})\n"
        "out['w'] = r.get_tensor('w').tolist()\n"
        "out['step'] = float(r.get_tensor('step'))"
    )
    assert out == {"w": [[0, 1, 2], [3, 4, 5]], "step": 7.0, "heavy": []}


def test_reading_a_bfloat16_checkpoint_imports_ml_dtypes_and_reads_right_values():
    rel = "v1_dtypes/model.ckpt-7"
    records = manifest()["cases"]["v1_dtypes"]["checkpoints"][rel]
    out = _fresh(
        "import saverkit\n"
        f"r = saverkit.train.load_checkpoint({str(FIXTURES / rel)!r})\n"
        "v = r.get_tensor('bfloat16/v1')\n"
        "out['dtype'] = str(v.dtype)\n"
        "out['shape'] = list(v.shape)\n"
        "out['hex'] = v.tobytes().hex()\n"
        "out['scalar_type'] = type(r.get_tensor('bfloat16/v0')).__name__"
    )
    assert out["heavy"] == ["ml_dtypes"]
    assert out["dtype"] == "bfloat16" and out["shape"] == records["bfloat16/v1"]["shape"]
    assert out["scalar_type"] == "bfloat16"
    import ml_dtypes

    value = np.frombuffer(bytes.fromhex(out["hex"]), dtype=ml_dtypes.bfloat16).reshape(out["shape"])
    assert tensor_sha256(value, "bfloat16") == records["bfloat16/v1"]["sha256"]


@pytest.mark.parametrize("case", ["float32", "v1_dtypes"])
def test_cli_inspect_imports_neither_ml_dtypes_nor_the_graph_layer(case, float32_checkpoint):
    path = float32_checkpoint if case == "float32" else str(FIXTURES / "v1_dtypes")  # with bfloat16 tensors
    out = _fresh(
        "import contextlib, io\n"
        "from saverkit import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as f:\n"
        f"    out['code'] = cli.main(['inspect', {path!r}])\n"
        "out['text'] = f.getvalue()"
    )
    assert out["code"] == 0 and out["heavy"] == []
    assert ("bfloat16/v1" in out["text"]) == (case == "v1_dtypes")


def test_lazy_names_behave_like_the_eager_ones():
    out = _fresh(
        "import saverkit\n"
        "out['dir'] = all(n in dir(saverkit) for n in ('Graph', 'Variable', 'train', 'get_variable'))\n"
        "ns = {}\n"
        "exec('from saverkit import *', ns)\n"
        "out['star'] = sorted(n for n in ('Graph', 'Session', 'train', 'tuple', 'float32') if n in ns)\n"
        "out['same'] = saverkit.Variable is saverkit.framework.variables.Variable\n"
        "out['train'] = saverkit.train.Saver.__module__\n"
        "try:\n"
        "    saverkit.no_such_name\n"
        "except AttributeError as e:\n"
        "    out['missing'] = str(e)"
    )
    assert out["dir"] and out["same"]
    # As before: the graph names and `train` star-import; `tuple` does not (it would shadow the builtin).
    assert out["star"] == ["Graph", "Session", "train"]
    assert out["train"] == "saverkit.train.saver"
    assert out["missing"] == "module 'saverkit' has no attribute 'no_such_name'"
