"""Quantization on the fetched model zoo: pare's QDQ output beside fp32 and ONNX Runtime's
quantize_static, every figure from one run on one machine.

For every model (ResNet-50, DenseNet-121, ShuffleNet, SqueezeNet, Inception-v2, VGG-19 by
default): 32 calibration inputs are made from the model's own test_data_set input (the zoo
ships one image per model): seeded shifts, flips, brightness changes and noise of it,
written in test_data_set layout. The same inputs calibrate

  - pare all:   `pare optimize --quantize all --calib DIR` (every layer that can be),
  - pare auto:  `pare optimize --quantize auto --calib DIR` (the default, budgeted mode),
  - quantize_static (QDQ, per-channel s8 weights, u8 activations, after onnx's opset
    upgrade to 13 and quant_pre_process), timed as wall clock beside pare's runs.

Reported per model: file size / fp32; ONNX Runtime latency / fp32 (ORT_ENABLE_ALL, one
thread, paired per-round ratios with a 95% bootstrap interval, as benches/ort_latency.py);
relative L2 error of the output against fp32 on 32 held-out inputs (other seeds of the same
transformations), both as deployed (ORT_ENABLE_ALL: the fused integer kernels) and in
reference semantics (ORT_DISABLE_ALL: each QDQ node as written); onnx.checker full check; and
the agreement of the two (integer kernels that saturate would show here).
On these random-weight zoo models any rounding is amplified, so 8 inputs were too few: the
same file's error moved from 0.30 to 0.55 between 8 and 32 inputs. Where the model ends in a
Softmax, the deployed error of its input (the logits) is reported too: the Softmax turns
logit errors of the same size into very different output errors depending on where they fall
near the top logit, so the logits say more about the quantization itself.

    .venv/bin/python benches/quantize.py --pare target/release/pare [--only resnet50 ...] [--json FILE]

Exit status 1 when an acceptance line of issue 5 fails: pare all larger than 0.27x fp32,
pare auto slower than fp32, pare all or auto with a larger deployed error than
quantize_static's, a checker failure, or ORT all/none disagreeing by more than the relative L2
pare declares for `--quantize` (0.1; the issue asks all and none to agree within the declared
tolerance). On these random-weight models that disagreement is mostly rounding: a tie the
fused kernel rounds the other way flips one level, and each later layer amplifies it, so it
does not vanish with any weight type (see the README's integer-kernel check).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ocr_accuracy import quantize_static_anchor  # noqa: E402
from ort_latency import median_interval, open_session, timed_rounds, verdict  # noqa: E402

ZOO = ROOT / ".cache" / "models" / "zoo"
MODELS = ("resnet50", "densenet121", "shufflenet", "squeezenet", "inception_v2", "vgg19")
CALIBRATION_SAMPLES = 32
HELD_OUT_SAMPLES = 32
MAX_SIZE_RATIO = 0.27
MAX_ORT_DISAGREEMENT = 0.1


def zoo_input(name):
    data = ZOO / name / "test_data_set_0" / "input_0.pb"
    return numpy_helper.to_array(onnx.load_tensor(str(data))).astype(np.float32)


def variations(image, count, seed):
    """Seeded shifts, flips, brightness/contrast changes and noise of one NCHW image."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        x = np.roll(image, shift=(int(rng.integers(-16, 17)), int(rng.integers(-16, 17))), axis=(2, 3))
        if rng.random() < 0.5:
            x = x[..., ::-1]
        x = x * rng.uniform(0.8, 1.2) + rng.uniform(-0.2, 0.2)
        x = x + rng.normal(0.0, 0.05, size=x.shape)
        out.append(np.ascontiguousarray(x, dtype=np.float32))
    return out


def without_initializer_inputs(model, folder):
    """The model as IR 4 without its initializers listed as graph inputs (IR 3 required that
    listing; quantize_static then treats them as inputs to feed and fails)."""
    proto = onnx.load(str(model))
    if proto.ir_version >= 4:
        return model
    initializers = {tensor.name for tensor in proto.graph.initializer}
    kept = [i for i in proto.graph.input if i.name not in initializers]
    del proto.graph.input[:]
    proto.graph.input.extend(kept)
    proto.ir_version = 4
    path = folder / "model.ir4.onnx"
    onnx.save(proto, str(path))
    return path


def write_calibration(feeds, folder):
    for k, feed in enumerate(feeds):
        sample = folder / f"test_data_set_{k}"
        sample.mkdir(parents=True)
        (sample / "input_0.pb").write_bytes(numpy_helper.from_array(feed).SerializeToString())


def reference_session(path):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def outputs(session, feeds):
    name = session.get_inputs()[0].name
    return [session.run(None, {name: feed})[0].astype(np.float64) for feed in feeds]


def logits(path, feeds):
    """The deployed (ORT_ENABLE_ALL, one thread) values the model's last Softmax reads, or None
    when it has no Softmax."""
    model = onnx.load(str(path))
    softmaxes = [node for node in model.graph.node if node.op_type == "Softmax"]
    if not softmaxes:
        return None
    model.graph.output.append(onnx.helper.make_tensor_value_info(softmaxes[-1].input[0], onnx.TensorProto.FLOAT, None))
    session = open_session(model.SerializeToString(), 1)
    name = session.get_inputs()[0].name
    return [session.run(None, {name: feed})[-1].astype(np.float64) for feed in feeds]


def rel_l2(reference, candidate):
    # The same values may come in another shape (an opset-9 Softmax over [1, C, 1, 1]
    # reads its input flattened to [1, C] once the opset is raised).
    num = sum(float(np.sum((r - c.reshape(r.shape)) ** 2)) for r, c in zip(reference, candidate))
    den = sum(float(np.sum(r ** 2)) for r in reference)
    return (num / den) ** 0.5 if den > 0 else float("inf")


def checker(path):
    try:
        onnx.checker.check_model(str(path), full_check=True)
        return "ok"
    except Exception as error:  # noqa: BLE001 (any checker complaint is the result)
        return str(error).splitlines()[0][:200]


def run_pare(pare, model, mode, calib, output, shape_arg):
    started = time.perf_counter()
    command = [str(pare), "optimize", str(model), "-o", str(output), "--quantize", mode, "--calib", str(calib),
               "--no-verify", "--input-shape", shape_arg]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pare {mode} failed on {model}:\n{result.stderr}")
    return time.perf_counter() - started


def measure(name, pare, args, work):
    model = ZOO / name / "model.onnx"
    meta = json.loads((ZOO / name / "meta.json").read_text())
    image = zoo_input(name)
    calibration = variations(image, CALIBRATION_SAMPLES, seed=1)
    held_out = variations(image, HELD_OUT_SAMPLES, seed=2)
    calib_dir = work / name / "calib"
    write_calibration(calibration, calib_dir)

    variants = {"fp32": model}
    seconds = {}
    for mode in ("all", "auto"):
        path = work / name / f"pare_{mode}.onnx"
        seconds[f"pare {mode}"] = run_pare(pare, model, mode, calib_dir, path, meta["input_shape_arg"])
        variants[f"pare {mode}"] = path
    anchor_input = without_initializer_inputs(model, work / name)
    started = time.perf_counter()
    variants["quantize_static"] = quantize_static_anchor(anchor_input, calibration, work / name, name)
    seconds["quantize_static"] = time.perf_counter() - started

    fp32_size = model.stat().st_size
    reference = outputs(reference_session(model), held_out)
    reference_logits = logits(model, held_out)
    rows = {}
    for label, path in variants.items():
        session = reference_session(path)
        row = {"size_ratio": path.stat().st_size / fp32_size, "checker": checker(path)}
        as_written, deployed = outputs(session, held_out), outputs(open_session(path, 1), held_out)
        row["rel_l2"] = rel_l2(reference, as_written)
        row["rel_l2_deployed"] = rel_l2(reference, deployed)
        if reference_logits is not None:
            row["logits_rel_l2_deployed"] = rel_l2(reference_logits, logits(path, held_out))
        if label != "fp32":
            row["ort_all_vs_none_rel_l2"] = rel_l2(as_written, deployed)
            row["seconds_to_quantize"] = seconds[label]
        rows[label] = row

    sessions = {label: open_session(path, 1) for label, path in variants.items()}
    feed = {sessions["fp32"].get_inputs()[0].name: held_out[0]}
    for session in sessions.values():
        session.run(None, feed)
    times = timed_rounds(sessions, feed, args.rounds, 1, seed=3)
    for label in variants:
        ratio = times[label] / times["fp32"]
        median, low, high = median_interval(ratio, seed=4)
        rows[label]["latency_ms"] = float(np.median(times[label]) * 1e3)
        rows[label]["latency_vs_fp32"] = [median, low, high]
        rows[label]["verdict_vs_fp32"] = verdict(low, high, args.margin) if label != "fp32" else "-"
    qs = times["quantize_static"] / times["fp32"]
    for label in ("pare all", "pare auto"):
        ratio = times["quantize_static"] / times[label]
        median, low, high = median_interval(ratio, seed=5)
        rows[label]["speedup_vs_quantize_static"] = [median, low, high]
    rows["quantize_static"]["faster_than_fp32"] = bool(np.quantile(qs, 0.5) < 1.0)
    return rows


def failures(name, rows):
    found = []
    if rows["pare all"]["size_ratio"] > MAX_SIZE_RATIO:
        found.append(f"{name}: pare all is {rows['pare all']['size_ratio']:.3f}x fp32 in size")
    if rows["pare auto"]["verdict_vs_fp32"] == "slower":
        found.append(f"{name}: pare auto is slower than fp32")
    for label in ("pare all", "pare auto"):
        if rows[label]["rel_l2_deployed"] > rows["quantize_static"]["rel_l2_deployed"] * 1.0001:
            found.append(f"{name}: {label} deployed rel L2 {rows[label]['rel_l2_deployed']:.4f} > "
                         f"quantize_static's {rows['quantize_static']['rel_l2_deployed']:.4f}")
        if rows[label]["ort_all_vs_none_rel_l2"] > MAX_ORT_DISAGREEMENT:
            found.append(f"{name}: {label} ORT all vs none rel L2 {rows[label]['ort_all_vs_none_rel_l2']:.4f}")
        if rows[label]["checker"] != "ok":
            found.append(f"{name}: {label} checker: {rows[label]['checker']}")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pare", type=Path, default=ROOT / "target" / "release" / "pare")
    parser.add_argument("--only", nargs="*", default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--margin", type=float, default=0.03)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results, problems = {}, []
    with tempfile.TemporaryDirectory(prefix="pare-quantize-") as tmp:
        for name in args.only:
            rows = measure(name, args.pare, args, Path(tmp))
            results[name] = rows
            problems += failures(name, rows)
            print(f"\n{name}")
            print(f"  {'variant':16} {'size':>7} {'latency':>9} {'vs fp32 [95% CI]':>24} {'rel L2':>8} "
                  f"{'deployed':>8} {'logits':>7} {'ORT all/none':>12} {'quantize s':>10} checker")
            for label, row in rows.items():
                lat = row["latency_vs_fp32"]
                agree = row.get("ort_all_vs_none_rel_l2")
                took = row.get("seconds_to_quantize")
                logit = row.get("logits_rel_l2_deployed")
                print(f"  {label:16} {row['size_ratio']:6.3f}x {row['latency_ms']:7.2f}ms "
                      f"{lat[0]:6.3f} [{lat[1]:.3f},{lat[2]:.3f}] {row['verdict_vs_fp32']:>6} "
                      f"{row['rel_l2']:8.4f} {row['rel_l2_deployed']:8.4f} "
                      f"{'' if logit is None else f'{logit:7.4f}':>7} "
                      f"{'' if agree is None else f'{agree:12.5f}':>12} "
                      f"{'' if took is None else f'{took:10.1f}':>10} {row['checker']}")
            for label in ("pare all", "pare auto"):
                s = rows[label]["speedup_vs_quantize_static"]
                print(f"  {label} vs quantize_static: {s[0]:.3f}x faster [{s[1]:.3f},{s[2]:.3f}]")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    for problem in problems:
        print("FAIL", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
