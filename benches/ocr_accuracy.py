"""Task accuracy and ONNX Runtime latency of the trained PP-OCR recognizer and direction
classifier (fp32, candidates such as pare's quantized output, and ONNX Runtime's own
quantize_static as the anchor to beat), measured on rendered text lines.

Data. Text lines are rendered with PIL in the DejaVu fonts (Sans, Sans Bold, Serif, Mono),
dark text on a white or light gray background, with seeded text, font, size, shade and
padding, so a seed gives the same lines everywhere. The fonts come from the pinned
matplotlib wheel (golden/requirements-bench.txt), so every machine renders the same
pixels; without matplotlib, Debian's fonts-dejavu-core directory is used, or `--fonts`.
A line is one or two words of ASCII letters and digits, 4-12 characters in all, drawn
from an alphabet without the glyphs DejaVu itself draws alike (I/l/1, O/0/o), so a
reader can tell every line apart. Two disjoint sets are made: calibration (`--calib-lines`,
seed `--calib-seed`) and held-out evaluation (`--eval-lines`, seed `--eval-seed`); for the
classifier exactly half the lines of each set, chosen by the seed, are turned by 180°.

Preprocessing is rapidocr-onnxruntime 1.4.4's (the package the models come from), for one
line at a time: BGR (the lines are gray, so RGB is the same), resize to height 48 keeping the aspect ratio (squeezed when wider
than the input), scale to (x/255 - 0.5)/0.5, CHW, zero padding on the right to 48x320
(recognizer) or 48x192 (classifier). The recognizer's output is CTC-decoded as rapidocr
does: argmax per time step, repeats collapsed, blank (class 0) dropped, class i+1 is line
i of the model's `character` metadata and the last class is a space. Spaces at either end
of the decoded text (the model reads blank margins as spaces) are dropped.

Measures, per model, on the held-out set:
  cls  accuracy: fraction of lines whose 0/180 label is right;
  rec  string accuracy: fraction of lines decoded exactly (case-sensitive), and mean
       character error rate (edit distance / length of the rendered text);
  both accuracy delta vs the fp32 model in percentage points, and ONNX Runtime latency
       (ORT_ENABLE_ALL, `--threads` intra-op threads, CPU, batch 1) timed as
       benches/ort_latency.py does: all models of a kind side by side in shuffled
       order per round, median of the paired per-round ratio to fp32 with a seeded 95%
       bootstrap interval, and a second fp32 session as an A/A control of placement noise.

`--write-calib DIR` writes the calibration inputs exactly as fed to the models, in ONNX's
layout DIR/{rec,cls}/test_data_set_K/input_0.pb (TensorProto named after the model's
input), plus DIR/{rec,cls}/inputs.npy (all K stacked) and DIR/lines.json (texts, turns).
`--baseline DIR` builds ONNX Runtime's quantize_static models into DIR and evaluates them
as the anchor beside fp32 and the candidates. Three steps per model: upgrade to opset 13
(onnx.version_converter; the models are opset 11 / 12 and per-channel DequantizeLinear
needs `axis`, without it quantize_static writes invalid models), quant_pre_process (ONNX
Runtime's basic graph optimizations, which turn the models' Constant-node weights into
initializers quantize_static can see and fold BatchNormalization, then ONNX shape
inference; its symbolic shape inference fails on both models and is skipped), then
quantize_static (QDQ, per-channel QInt8 weights, QUInt8 activations, MinMax calibration
on the calibration set). `--reference` also scores every model with ORT_DISABLE_ALL, the
QDQ reference semantics, which tells a quantization error from the runtime's int8
kernels (fused under ORT_ENABLE_EXTENDED and above) departing from that semantics.

Exit status 1 when a candidate (not the anchor) loses more than `--max-drop-rec` /
`--max-drop-cls` points, or with `--no-slower` is slower than fp32 (its ratio interval
lies above 1 + margin, margin being the larger of `--margin` and the A/A control's reach).

    .venv/bin/python benches/ocr_accuracy.py --baseline /tmp/ocr-anchor \\
        [--rec pare_rec.onnx ...] [--cls pare_cls.onnx ...] [--max-drop-rec 2] [--no-slower]
    .venv/bin/python benches/ocr_accuracy.py --write-calib /tmp/ocr-calib --calib-only
"""

import argparse
import json
import math
import random
import string
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper, version_converter
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benches"))
from ort_latency import median_interval, open_session, timed_rounds, verdict  # noqa: E402

OCR_MODELS = ROOT / ".cache" / "models" / "ocr"
SYSTEM_FONTS = Path("/usr/share/fonts/truetype/dejavu")
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")
# Letters and digits, less the ones DejaVu draws (nearly) alike: I l 1, O 0 o.
ALPHABET = "".join(c for c in string.ascii_letters + string.digits if c not in "Il1O0o")
INPUT_WIDTH = {"rec": 320, "cls": 192}  # model input is 1 x 3 x 48 x width
INPUT_HEIGHT = 48
CLS_LABELS = ("0", "180")
ANCHOR = "quantize_static"
QDQ_OPSET = 13  # the first opset whose QuantizeLinear / DequantizeLinear take `axis`
CONTROL = "fp32 (second session)"


def die(message):
    """Bad input or a missing file: say so and exit with status 2 (1 means a failed check)."""
    print(f"ocr_accuracy: {message}", file=sys.stderr)
    raise SystemExit(2)


# --------------------------------------------------------------------------------------
# rendered text lines
# --------------------------------------------------------------------------------------

class Line:
    """One rendered text line: its text, its upright BGR image (H x W x 3, uint8) and
    whether the classifier sees it turned by 180°."""

    def __init__(self, text, image, turned):
        self.text, self.image, self.turned = text, image, turned


def font_dir(override):
    """The DejaVu font directory: `override`, else the pinned matplotlib wheel's, else Debian's."""
    candidates = [Path(override)] if override else []
    try:
        import matplotlib
        candidates.append(Path(matplotlib.get_data_path()) / "fonts" / "ttf")
    except ImportError:
        pass
    candidates.append(SYSTEM_FONTS)
    for folder in candidates:
        if all((folder / name).is_file() for name in FONT_FILES):
            return folder
    die(f"no DejaVu fonts ({', '.join(FONT_FILES)}) in any of {', '.join(map(str, candidates))}: "
        "pip install -r golden/requirements-bench.txt")


def random_text(rng):
    """One or two words of ALPHABET, 4-12 characters in all (a single space between words)."""
    length = rng.randint(4, 12)
    if length >= 7 and rng.random() < 0.5:
        first = rng.randint(2, length - 3)
        return " ".join("".join(rng.choice(ALPHABET) for _ in range(n)) for n in (first, length - 1 - first))
    return "".join(rng.choice(ALPHABET) for _ in range(length))


def render(text, font, rng):
    """`text` in `font`, dark on white or light gray, with a few pixels of padding: BGR uint8."""
    ascent, descent = font.getmetrics()
    left, _, right, _ = font.getbbox(text)
    pad_x, pad_y = rng.randint(2, 10), rng.randint(1, 6)
    background = rng.choice((255, 255, rng.randint(200, 245)))
    ink = rng.randint(0, 60)
    image = Image.new("L", (right - left + 2 * pad_x, ascent + descent + 2 * pad_y), background)
    ImageDraw.Draw(image).text((pad_x - left, pad_y), text, fill=ink, font=font)
    gray = np.asarray(image)
    return np.repeat(gray[:, :, None], 3, axis=2)


def make_lines(count, seed, fonts, exclude=()):
    """`count` seeded lines, none of whose texts is in `exclude`; exactly half turned."""
    rng = random.Random(seed)
    lines = []
    while len(lines) < count:
        text = random_text(rng)
        if text in exclude or any(line.text == text for line in lines):
            continue
        font = ImageFont.truetype(str(rng.choice(fonts)), rng.randint(26, 38))
        lines.append(Line(text, render(text, font, rng), False))
    for index in rng.sample(range(count), count // 2):
        lines[index].turned = True
    return lines


def preprocess(image, width):
    """rapidocr's resize_norm_img: height 48 keeping aspect (at most `width`), (x/255-0.5)/0.5,
    CHW, zero padding on the right; returns 1 x 3 x 48 x width float32."""
    height, original_width = image.shape[:2]
    resized_width = min(width, math.ceil(INPUT_HEIGHT * original_width / height))
    resized = np.asarray(Image.fromarray(image).resize((resized_width, INPUT_HEIGHT), Image.BILINEAR))
    normalized = (resized.astype(np.float32).transpose(2, 0, 1) / 255 - 0.5) / 0.5
    padded = np.zeros((1, 3, INPUT_HEIGHT, width), dtype=np.float32)
    padded[0, :, :, :resized_width] = normalized
    return padded


def model_inputs(kind, lines):
    """The fed inputs of every line for the model kind ("rec" or "cls")."""
    if kind == "rec":
        return [preprocess(line.image, INPUT_WIDTH["rec"]) for line in lines]
    return [preprocess(np.ascontiguousarray(line.image[::-1, ::-1]) if line.turned else line.image,
                       INPUT_WIDTH["cls"]) for line in lines]


# --------------------------------------------------------------------------------------
# decoding and scores
# --------------------------------------------------------------------------------------

def character_classes(model_path):
    """Class index -> character: blank, the model's `character` metadata lines, a space."""
    model = onnx.load(str(model_path), load_external_data=False)
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    if "character" not in metadata:
        die(f"{model_path}: no `character` metadata (the PP-OCR recognizer's dictionary)")
    return ["<blank>"] + metadata["character"].splitlines() + [" "]


def ctc_decode(probabilities, classes):
    """Greedy CTC: argmax per time step, collapse repeats, drop blank (class 0)."""
    best = probabilities.argmax(axis=-1)
    kept = [index for step, index in enumerate(best) if index != 0 and (step == 0 or index != best[step - 1])]
    return "".join(classes[index] for index in kept)


def edit_distance(a, b):
    row = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, char_b in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (char_a != char_b))
    return row[len(b)]


def input_name(model_path):
    """The first graph input that is not an initializer (IR 3 lists initializers as inputs)."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}
    return next(i.name for i in graph.input if i.name not in initializers)


def score(kind, session, feeds, lines, classes):
    """Accuracy (percent) and the misread lines (text, what the model said); rec adds the
    mean character error rate."""
    name = session.get_inputs()[0].name
    outputs = [session.run(None, {name: feed})[0][0] for feed in feeds]
    if kind == "cls":
        said = [CLS_LABELS[int(output.argmax())] for output in outputs]
        truth = [CLS_LABELS[line.turned] for line in lines]
    else:
        said = [ctc_decode(output, classes).strip(" ") for output in outputs]
        truth = [line.text for line in lines]
    wrong = [(line.text, answer) for line, answer, right in zip(lines, said, truth) if answer != right]
    result = {"accuracy": 100.0 * (1 - len(wrong) / len(lines)), "errors": wrong}
    if kind == "rec":
        result["cer"] = float(np.mean([edit_distance(a, t) / len(t) for a, t in zip(said, truth)]))
    return result


def reference_session(path, threads):
    """A session with every graph optimization off: ONNX's reference QDQ semantics."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------------------
# calibration files and the quantize_static anchor
# --------------------------------------------------------------------------------------

def write_calibration(folder, lines, fp32):
    """DIR/{rec,cls}/test_data_set_K/input_0.pb and inputs.npy, DIR/lines.json."""
    for kind, model_path in fp32.items():
        feeds = model_inputs(kind, lines)
        name = input_name(model_path)
        for index, feed in enumerate(feeds):
            case = folder / kind / f"test_data_set_{index}"
            case.mkdir(parents=True, exist_ok=True)
            (case / "input_0.pb").write_bytes(numpy_helper.from_array(feed, name).SerializeToString())
        np.save(folder / kind / "inputs.npy", np.concatenate(feeds))
    (folder / "lines.json").write_text(json.dumps(
        [{"text": line.text, "cls_label": CLS_LABELS[line.turned]} for line in lines], indent=1))


def quantize_static_anchor(model_path, feeds, folder, kind):
    """ONNX Runtime's quant_pre_process + quantize_static (QDQ, per-channel QInt8 weights,
    QUInt8 activations) calibrated on `feeds`; returns the quantized model's path."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.pending = iter([{input_name(model_path): feed} for feed in feeds])

        def get_next(self):
            return next(self.pending, None)

    upgraded = folder / f"{kind}.opset{QDQ_OPSET}.onnx"
    prepared = folder / f"{kind}.preprocessed.onnx"
    quantized = folder / f"{kind}.{ANCHOR}.onnx"
    # Per-channel DequantizeLinear needs opset 13 (`axis`); the models are opset 11 / 12, and
    # quantize_static would write invalid models without this upgrade.
    onnx.save(version_converter.convert_version(onnx.load(str(model_path)), QDQ_OPSET), str(upgraded))
    # Symbolic shape inference fails on both models (an assertion on cls' Concat, "incomplete"
    # on rec), so it is skipped; ONNX shape inference and the runtime's optimizations still run.
    quant_pre_process(str(upgraded), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(quantized), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return quantized


# --------------------------------------------------------------------------------------
# one model kind: accuracy and latency of fp32, the anchor and the candidates
# --------------------------------------------------------------------------------------

def measure(kind, models, lines, classes, args):
    """`models`: label -> (path, role) with role fp32 / anchor / candidate, fp32 first.
    Returns one row per model with accuracy, its delta to fp32 and latency."""
    feeds = model_inputs(kind, lines)
    sessions = {label: open_session(path, args.threads) for label, (path, _) in models.items()}
    fp32_label = next(iter(models))
    sessions[CONTROL] = open_session(models[fp32_label][0], args.threads)
    scores = {label: score(kind, sessions[label], feeds, lines, classes) for label in models}
    if args.reference:
        for label, (path, _) in models.items():
            reference = score(kind, reference_session(path, args.threads), feeds, lines, classes)
            scores[label]["reference"] = {key: value for key, value in reference.items() if key != "errors"}
    timing_feed = {sessions[fp32_label].get_inputs()[0].name: feeds[0]}
    for session in sessions.values():
        for _ in range(3):
            session.run(None, timing_feed)
    times = timed_rounds(sessions, timing_feed, args.rounds, args.batch, args.seed)
    control = median_interval(times[CONTROL] / times[fp32_label], args.seed)
    margin = max(args.margin, control[2] - 1.0)
    rows = []
    for label, (path, role) in models.items():
        middle, low, high = median_interval(times[label] / times[fp32_label], args.seed)
        rows.append({"kind": kind, "model": label, "path": str(path), "role": role, **scores[label],
                     "delta_points": scores[label]["accuracy"] - scores[fp32_label]["accuracy"],
                     "median_ms": float(np.median(times[label])) * 1e3,
                     "over_fp32": {"median": middle, "low": low, "high": high,
                                   "verdict": verdict(low, high, margin)},
                     "control": {"median": control[0], "low": control[1], "high": control[2]}})
    return rows


def report(row):
    cer = f" CER {row['cer']:.4f}" if row["kind"] == "rec" else ""
    reference = f"  (reference {row['reference']['accuracy']:6.2f}%)" if "reference" in row else ""
    timing = row["over_fp32"]
    print(f"  {row['role']:9} {row['model']:24} acc {row['accuracy']:6.2f}% ({row['delta_points']:+6.2f} pts)"
          f"{cer}{reference}  {row['median_ms']:7.2f} ms  x{timing['median']:.3f} "
          f"[{timing['low']:.3f},{timing['high']:.3f}] {timing['verdict']}", flush=True)


def failures(row, args):
    """Why a candidate row fails the requested checks (empty when it passes)."""
    if row["role"] != "candidate":
        return []
    found = []
    max_drop = args.max_drop_rec if row["kind"] == "rec" else args.max_drop_cls
    if max_drop is not None and -row["delta_points"] > max_drop:
        found.append(f"{row['kind']} {row['model']}: loses {-row['delta_points']:.2f} points (max {max_drop})")
    if args.no_slower and row["over_fp32"]["verdict"] == "slower":
        timing = row["over_fp32"]
        found.append(f"{row['kind']} {row['model']}: slower than fp32, x{timing['median']:.3f} "
                     f"[{timing['low']:.3f},{timing['high']:.3f}]")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rec", action="append", default=[], help="a candidate recognizer (repeatable)")
    parser.add_argument("--cls", action="append", default=[], help="a candidate classifier (repeatable)")
    parser.add_argument("--fp32-rec", default=str(OCR_MODELS / "ppocr_rec" / "model.onnx"))
    parser.add_argument("--fp32-cls", default=str(OCR_MODELS / "ppocr_cls" / "model.onnx"))
    parser.add_argument("--baseline", metavar="DIR", help="also build and evaluate quantize_static's models here")
    parser.add_argument("--write-calib", metavar="DIR", help="write the calibration inputs here")
    parser.add_argument("--calib-only", action="store_true", help="stop after --write-calib")
    parser.add_argument("--calib-lines", type=int, default=32)
    parser.add_argument("--calib-seed", type=int, default=1)
    parser.add_argument("--eval-lines", type=int, default=200)
    parser.add_argument("--eval-seed", type=int, default=2)
    parser.add_argument("--reference", action="store_true",
                        help="also score every model with ORT_DISABLE_ALL (reference QDQ semantics)")
    parser.add_argument("--fonts", metavar="DIR", help="a folder with " + ", ".join(FONT_FILES))
    parser.add_argument("--rounds", type=int, default=30, help="latency rounds")
    parser.add_argument("--batch", type=int, default=3, help="runs per model per round")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--margin", type=float, default=0.0,
                        help="a ratio interval must clear 1 + margin to count as slower")
    parser.add_argument("--seed", type=int, default=0, help="latency shuffle and bootstrap seed")
    parser.add_argument("--max-drop-rec", type=float, metavar="POINTS",
                        help="fail when a candidate's string accuracy drops more than this")
    parser.add_argument("--max-drop-cls", type=float, metavar="POINTS",
                        help="fail when a candidate's classifier accuracy drops more than this")
    parser.add_argument("--no-slower", action="store_true", help="fail when a candidate is slower than fp32")
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args()
    if args.calib_only and not args.write_calib:
        parser.error("--calib-only needs --write-calib DIR")
    for path in [args.fp32_rec, args.fp32_cls, *args.rec, *args.cls]:
        if not Path(path).is_file():
            die(f"{path}: no such model (the cached ones come from scripts/fetch_models.py --groups ocr)")

    started = time.perf_counter()
    fonts = font_dir(args.fonts)
    font_paths = [fonts / name for name in FONT_FILES]
    fp32 = {"rec": Path(args.fp32_rec), "cls": Path(args.fp32_cls)}
    calibration = make_lines(args.calib_lines, args.calib_seed, font_paths)
    evaluation = make_lines(args.eval_lines, args.eval_seed, font_paths, {line.text for line in calibration})
    print(f"fonts {fonts}; {len(calibration)} calibration lines (seed {args.calib_seed}), "
          f"{len(evaluation)} held-out lines (seed {args.eval_seed})")
    if args.write_calib:
        write_calibration(Path(args.write_calib), calibration, fp32)
        print(f"calibration inputs written to {args.write_calib}")
        if args.calib_only:
            return 0

    candidates = {"rec": args.rec, "cls": args.cls}
    classes = character_classes(fp32["rec"])
    print(f"ONNX Runtime {ort.__version__}, ORT_ENABLE_ALL, {args.threads} thread(s), batch 1, "
          f"{args.rounds} rounds x {args.batch} runs, models shuffled per round")
    rows = []
    for kind in ("cls", "rec"):
        models = {"fp32": (fp32[kind], "fp32")}
        if args.baseline:
            folder = Path(args.baseline)
            folder.mkdir(parents=True, exist_ok=True)
            anchor = quantize_static_anchor(fp32[kind], model_inputs(kind, calibration), folder, kind)
            models[ANCHOR] = (anchor, "anchor")
        for path in candidates[kind]:
            models[path] = (Path(path), "candidate")
        print(f"{kind} ({'0/180 accuracy' if kind == 'cls' else 'string accuracy'}, delta vs fp32; "
              f"latency median ms, ratio to fp32 [95% interval])")
        kind_rows = measure(kind, models, evaluation, classes, args)
        for row in kind_rows:
            report(row)
        print(f"  A/A control x{kind_rows[0]['control']['median']:.3f} "
              f"[{kind_rows[0]['control']['low']:.3f},{kind_rows[0]['control']['high']:.3f}]")
        rows.extend(kind_rows)

    failed = [reason for row in rows for reason in failures(row, args)]
    for reason in failed:
        print("FAIL", reason)
    seconds = time.perf_counter() - started
    if args.json:
        settings = {key: value for key, value in vars(args).items() if key != "json"}
        Path(args.json).write_text(json.dumps({"settings": settings, "fonts": str(fonts),
                                               "onnxruntime": ort.__version__, "seconds": seconds,
                                               "models": rows, "failures": failed}, indent=1))
    print(f"ocr accuracy: {len(rows)} models in {seconds:.0f} s, {len(failed)} check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
