"""tf.lookup.StaticHashTable models made by TensorFlow's converter (CALL_ONCE, HASHTABLE,
HASHTABLE_IMPORT, HASHTABLE_FIND, HASHTABLE_SIZE; string tensors) against TFLite's builtin
kernels (BUILTIN_REF has no hash table kernels), over several invokes."""

import numpy as np
import pytest
from tflite_ref import _convert_quietly, make_interpreter

import qengine

pytestmark = [pytest.mark.tf, pytest.mark.slow]  # TensorFlow SavedModel export: ~15 s

CASES = {  # name: (key dtype, value dtype, keys, values, default, lookups)
    "int64_to_string": ("int64", "string", [3, 7, 11], ["three", "", "eleven"], "?",
                        [np.array([7, 5, 3], np.int64), np.array([11], np.int64)]),
    "string_to_int64": ("string", "int64", ["a", "bb", "ccc"], [1, 2, 3], -1,
                        [np.array([b"bb", b"z", b"a"]), np.array([b"ccc", b""])]),
}


def _table_module(kd, vd, keys, values, default):
    import tensorflow as tf

    class Table(tf.Module):
        def __init__(self):
            init = tf.lookup.KeyValueTensorInitializer(tf.constant(keys, kd),
                                                       tf.constant(values, vd))
            self.table = tf.lookup.StaticHashTable(init, default_value=tf.constant(default, vd))

        @tf.function
        def __call__(self, x):
            return self.table.lookup(x), self.table.size()

    return Table()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import tensorflow as tf

    built = {}
    for name, (kd, vd, keys, values, default, _) in CASES.items():
        module = _table_module(kd, vd, keys, values, default)
        signature = module.__call__.get_concrete_function(tf.TensorSpec((None,), kd))
        path = str(tmp_path_factory.mktemp(name))
        tf.saved_model.save(module, path, signatures=signature)
        built[name] = _convert_quietly(tf.lite.TFLiteConverter.from_saved_model(path))
    return built


@pytest.mark.parametrize("name", list(CASES))
def test_static_hash_table_matches_tflite(models, name):
    data = models[name]
    ops = {op.opcode.name for s in qengine.load(data).subgraphs for op in s.operators}
    assert {"HASHTABLE", "HASHTABLE_IMPORT", "HASHTABLE_FIND", "HASHTABLE_SIZE"} <= ops
    tfl = make_interpreter(data, resolver="nodelegate")
    (tin,) = tfl.get_input_details()
    interpreter = qengine.Interpreter(data)
    for x in CASES[name][5] * 2:
        tfl.resize_tensor_input(tin["index"], x.shape)
        tfl.allocate_tensors()
        tfl.set_tensor(tin["index"], x)
        tfl.invoke()
        got = interpreter.run(x)
        for d in tfl.get_output_details():
            want = tfl.get_tensor(d["index"])
            assert got[d["name"]].shape == want.shape
            assert got[d["name"]].tolist() == want.tolist(), d["name"]
