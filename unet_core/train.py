"""Training a U-Net on any folder of ``images/`` + ``masks/`` pairs.

What a run does (``python -m unet_core train --data DIR --out models/NAME.keras``):

1. reads every pair, applies the card's input normalisation, and splits the names
   deterministically (seeded) into train / validation / test, stratified by mask coverage
   (empty masks form their own stratum);
2. trains on random crops of ``crop`` x ``crop`` taken by one affine map per sample (random scale,
   shift, horizontal flip, optional vertical flip / 90-degree rotations), optionally composed with
   a smooth elastic deformation (``elastic``: random displacements on a coarse grid, bicubically
   interpolated, as in the U-Net paper), applied to image and mask together in one resampling,
   then brightness/contrast jitter on the image. Images smaller than the crop are
   mirror-padded (centred, as at inference), larger ones are cropped at random;
3. loss: BCE + soft Dice, then optionally a Lovász-hinge phase (an IoU surrogate), then
   optionally a symmetric Lovász phase (foreground and background IoU, so that empty masks get a
   gradient on every false positive, not only the worst one); each later phase starts from the
   best weights so far with a fresh optimizer; cosine learning-rate schedule per phase, early
   stopping on the validation metric;
   With ``init_from`` the run starts from a trained model's weights (fine-tuning): that model is
   scored on the validation split first and saved as the best so far, so the run ships new
   weights only if they beat it; a phase of 0 epochs is skipped.
4. checkpoints every epoch into ``RUN_DIR`` (``last.keras`` + ``state.json``, ``best.keras``) so
   ``--resume`` continues where it stopped; per-epoch metrics go to ``RUN_DIR/log.csv``;
5. optionally (``average_last``) keeps the weights of the final phase's last epochs and ships
   their mean (stochastic weight averaging) when it beats the best single epoch on validation;
6. at the end, sweeps thresholds on the validation split (with flip TTA if enabled) to pick the
   recommended threshold, scores the held-out test split at it, and writes the model (without
   optimizer) and its card, including the exact command that produced it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .calibrate import split_metrics
from .errors import UnetCoreError
from .evaluate import add_predictions
from .inference import Segmenter, normalise_input
from .io import find_pairs, load_pair
from .metrics import MIN_AREA_CANDIDATES, SweepAccumulator, check_select_metric
from .model import ModelCard, build_unet, from_keras


@dataclass
class TrainConfig:
    """Every knob of a training run, with its default."""

    data: str = ""
    out: str = "models/model.keras"
    run_dir: str | None = None           # default: runs/<name>
    name: str | None = None              # default: the output file's stem
    domain: str = "unknown"
    description: str = ""
    foreground: str = "foreground"
    data_terms: str = ""
    invert_masks: bool = False           # segment the complement (e.g. EM membranes)
    normalisation: str = "unit"
    padding_mode: str = "reflect"
    crop: int = 128                      # training patch size (and min_size of the card)
    base_filters: int = 16
    depth: int = 4
    dropout: float = 0.2
    residual: bool = True
    init_from: str | None = None         # start from this .keras model's weights (same
                                         # architecture); its validation score is the bar
    epochs: int = 40                     # BCE+Dice phase
    lovasz_epochs: int = 0               # Lovász-hinge phase after it
    sym_lovasz_epochs: int = 0           # symmetric Lovász phase after that
    batch_size: int = 16
    samples_per_epoch: int | None = None  # default: number of training images
    lr: float = 2e-3
    lovasz_lr: float = 5e-4
    sym_lovasz_lr: float = 3e-4
    min_lr_fraction: float = 0.03
    average_last: int = 0                # keep the last N epochs' weights of the final phase and
                                         # ship their mean (SWA) if it beats the best epoch on val
    patience: int = 10
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 42                       # weights initialisation and augmentation
    split_seed: int | None = None        # train/val/test split (default: seed); keep it fixed
                                         # to train several models on one split (an ensemble)
    hflip: bool = True
    vflip: bool = False
    rot90: bool = False
    scale_range: float = 0.1             # scale drawn from [1 - r, 1 + r]
    shift: int = 8                       # pixels of random shift for images smaller than crop
    brightness: float = 0.08
    contrast: float = 0.15
    elastic: float = 0.0                 # elastic deformation: std (pixels) of the random
                                         # displacements on a coarse grid; 0 disables
    elastic_grid: int = 3                # points per side of that grid (U-Net paper: 3 x 3)
    tta: bool = True
    select_metric: str = "tgs_metric"    # picks the recommended threshold / early stopping
    select_min_area: bool = True         # also pick a minimum-area rule on validation
                                         # (metrics.MIN_AREA_CANDIDATES; 0 unless it helps)
    max_images: int | None = None        # for quick tests
    threads: int | None = None
    verbose: int | None = None
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_name(self) -> str:
        return self.name or Path(self.out).stem

    @property
    def run_path(self) -> Path:
        return Path(self.run_dir or Path("runs") / self.model_name)


# -- data ------------------------------------------------------------------------------------
def load_dataset(cfg: TrainConfig) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Read all pairs -> (names, images float32 (H, W) normalised, masks float32 (H, W) 0/1)."""
    pairs = find_pairs(cfg.data, require_masks=True)
    if cfg.max_images:
        pairs = pairs[: cfg.max_images]
    names, images, masks = [], [], []
    for pair in pairs:
        img, mask = load_pair(pair)
        assert mask is not None
        if cfg.invert_masks:
            mask = ~mask
        names.append(pair.name)
        images.append(normalise_input(img, cfg.normalisation))
        masks.append(mask.astype(np.float32))
    return names, images, masks


def stratified_split(coverage: np.ndarray, val_fraction: float, test_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic split of indices into (train, val, test), stratified by coverage.

    Strata: empty masks, then coverage quintiles of the non-empty ones. Each stratum is shuffled
    with ``seed`` and cut by the fractions, so every split has the same share of empty masks.
    """
    rng = np.random.default_rng(seed)
    strata = np.zeros(len(coverage), dtype=int)
    nonempty = coverage > 0
    if nonempty.sum() >= 5:
        edges = np.quantile(coverage[nonempty], [0.2, 0.4, 0.6, 0.8])
        strata[nonempty] = 1 + np.searchsorted(edges, coverage[nonempty], side="right")
    train, val, test = [], [], []
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        n_val = int(round(len(idx) * val_fraction))
        test.extend(idx[:n_test])
        val.extend(idx[n_test : n_test + n_val])
        train.extend(idx[n_test + n_val :])
    return np.sort(train), np.sort(val), np.sort(test)


def elastic_displacement(size: int, std: float, grid: int,
                         rng: np.random.Generator) -> np.ndarray:
    """A smooth random displacement field, float64 (2, size, size), in pixels.

    Displacements drawn from N(0, ``std``) at the points of a ``grid`` x ``grid`` lattice spanning
    the crop are interpolated bicubically to every pixel (the U-Net paper's elastic deformation:
    3 x 3 grid, std 10 px). ``grid`` must be at least 2.
    """
    from scipy import ndimage

    if grid < 2:
        raise UnetCoreError(f"elastic_grid is {grid}; accepted: an integer >= 2")
    coarse = rng.normal(0.0, std, (2, grid, grid))
    at = np.linspace(0.0, grid - 1.0, size)
    rows, cols = np.meshgrid(at, at, indexing="ij")
    return np.stack([ndimage.map_coordinates(coarse[k], [rows, cols], order=3, mode="nearest")
                     for k in range(2)])


def augment_pair(image: np.ndarray, mask: np.ndarray, cfg: TrainConfig,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random (crop, crop) training sample from an (H, W) image and its (H, W) 0/1 mask."""
    from scipy import ndimage

    c = cfg.crop
    h, w = image.shape
    s = 1.0 + rng.uniform(-cfg.scale_range, cfg.scale_range) if cfg.scale_range else 1.0
    span = c * s

    def start(size: int) -> float:
        if size >= span:
            return float(rng.uniform(0, size - span))
        centre = (size - span) / 2.0
        return float(np.floor(centre) + rng.integers(-cfg.shift, cfg.shift + 1))

    offset = np.array([start(h), start(w)])
    if cfg.elastic > 0:
        # output pixel (i, j) samples the input at offset + s * (i, j) + displacement(i, j)
        coords = (offset[:, None, None] + s * np.indices((c, c), dtype=np.float64)
                  + elastic_displacement(c, cfg.elastic, cfg.elastic_grid, rng))
        img = ndimage.map_coordinates(image, coords, order=1, mode="mirror")
        msk = ndimage.map_coordinates(mask, coords, order=0, mode="mirror")
    else:
        matrix = np.array([s, s])
        img = ndimage.affine_transform(image, matrix, offset, output_shape=(c, c), order=1,
                                       mode="mirror")
        msk = ndimage.affine_transform(mask, matrix, offset, output_shape=(c, c), order=0,
                                       mode="mirror")
    if cfg.hflip and rng.random() < 0.5:
        img, msk = img[:, ::-1], msk[:, ::-1]
    if cfg.vflip and rng.random() < 0.5:
        img, msk = img[::-1], msk[::-1]
    if cfg.rot90:
        k = int(rng.integers(0, 4))
        img, msk = np.rot90(img, k), np.rot90(msk, k)
    contrast = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
    bright = rng.uniform(-cfg.brightness, cfg.brightness)
    mean = float(img.mean())
    img = np.clip((img - mean) * contrast + mean + bright, 0.0, 1.0)
    return img.astype(np.float32), msk.astype(np.float32)


def make_sequence(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], cfg: TrainConfig,
                  seed: int):
    """A keras.utils.PyDataset of augmented batches ((B, c, c, 1), (B, c, c, 1)) float32."""
    import keras

    n_samples = cfg.samples_per_epoch or len(images)

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = 0

        def __len__(self) -> int:
            return max(1, n_samples // cfg.batch_size)

        def __getitem__(self, i: int):
            rng = np.random.default_rng([seed, self.epoch, i])
            idx = rng.integers(0, len(images), cfg.batch_size)
            pairs = [augment_pair(images[j], masks[j], cfg, rng) for j in idx]
            x = np.stack([p[0] for p in pairs])[..., None]
            y = np.stack([p[1] for p in pairs])[..., None]
            return x, y

        def on_epoch_end(self) -> None:
            self.epoch += 1

    return Batches()


# -- losses ----------------------------------------------------------------------------------
def bce_dice_loss(y_true, y_pred):
    """Binary cross-entropy + (1 - soft Dice per image); (B, H, W, 1) float32 -> (B,)."""
    import tensorflow as tf

    eps = 1e-6
    p = tf.clip_by_value(y_pred, eps, 1.0 - eps)
    bce = -tf.reduce_mean(y_true * tf.math.log(p) + (1 - y_true) * tf.math.log(1 - p),
                          axis=[1, 2, 3])
    inter = tf.reduce_sum(y_true * y_pred, axis=[1, 2, 3])
    total = tf.reduce_sum(y_true + y_pred, axis=[1, 2, 3])
    dice = (2.0 * inter + 1.0) / (total + 1.0)
    return bce + (1.0 - dice)


def _lovasz_grad(gt_sorted):
    import tensorflow as tf

    gts = tf.reduce_sum(gt_sorted)
    intersection = gts - tf.cumsum(gt_sorted)
    union = gts + tf.cumsum(1.0 - gt_sorted)
    jaccard = 1.0 - intersection / union
    return tf.concat((jaccard[0:1], jaccard[1:] - jaccard[:-1]), 0)


def _lovasz_logits(y_pred):
    import tensorflow as tf

    eps = 1e-6
    p = tf.clip_by_value(y_pred, eps, 1.0 - eps)
    return tf.math.log(p) - tf.math.log(1.0 - p)


def _lovasz_per_image(logits, y_true):
    """Lovász hinge of each image: (B, H, W, 1) logits and 0/1 labels -> (B,) float32."""
    import tensorflow as tf

    def one(args):
        lg, lb = args
        lg = tf.reshape(lg, [-1])
        lb = tf.reshape(lb, [-1])
        signs = 2.0 * lb - 1.0
        errors = 1.0 - lg * signs
        errors_sorted, perm = tf.nn.top_k(errors, k=tf.shape(errors)[0])
        gt_sorted = tf.gather(lb, perm)
        grad = _lovasz_grad(gt_sorted)
        return tf.tensordot(tf.nn.elu(errors_sorted) + 1.0, tf.stop_gradient(grad), 1)

    return tf.map_fn(one, (logits, y_true), fn_output_signature=tf.float32)


def lovasz_hinge_loss(y_true, y_pred):
    """Lovász hinge (Berman et al. 2018), per image, on logits recovered from probabilities.

    (B, H, W, 1) float32 -> (B,). Uses the elu+1 smoothing popular in the TGS competition. On an
    empty mask only the single worst false positive gets a gradient.
    """
    return _lovasz_per_image(_lovasz_logits(y_pred), y_true)


def symmetric_lovasz_loss(y_true, y_pred):
    """Mean of the Lovász hinge on the foreground and on the background, per image.

    (B, H, W, 1) float32 -> (B,). The background term is the foreground term of the inverted
    problem (logits negated, labels flipped), so an empty mask is scored as a full background IoU
    and every false positive gets a gradient.
    """
    logits = _lovasz_logits(y_pred)
    return 0.5 * (_lovasz_per_image(logits, y_true) + _lovasz_per_image(-logits, 1.0 - y_true))


# -- evaluation ------------------------------------------------------------------------------
def sweep_split(segmenter: Segmenter, images: Sequence[np.ndarray], masks: Sequence[np.ndarray],
                names: Sequence[str]):
    """Threshold sweep of a model over a split -> SweepResult (images already normalised)."""
    acc = SweepAccumulator()
    for s in range(0, len(images), 32):
        add_predictions(acc, segmenter, images[s : s + 32],
                        [m > 0.5 for m in masks[s : s + 32]], names[s : s + 32])
    return acc.result()


def command_line(argv: Sequence[str]) -> str:
    """The shell command that ran ``python -m unet_core`` with ``argv`` (for model cards)."""
    return "python -m unet_core " + " ".join(shlex.quote(a) for a in argv)


def _card_for(cfg: TrainConfig, tta: bool) -> ModelCard:
    return ModelCard(
        name=cfg.model_name, domain=cfg.domain, description=cfg.description,
        foreground=cfg.foreground, input_size=None, multiple_of=2**cfg.depth,
        min_size=cfg.crop, channels=1, normalisation=cfg.normalisation,
        padding_mode=cfg.padding_mode, threshold=0.5, output="probability", tta=tta,
        truth_inverted=bool(cfg.invert_masks))


# -- the run ---------------------------------------------------------------------------------
def train(cfg: TrainConfig, resume: bool = False) -> ModelCard:
    """Run (or resume) a training run; returns the written model card."""
    check_select_metric(cfg.select_metric)
    if cfg.elastic < 0 or (cfg.elastic > 0 and cfg.elastic_grid < 2):
        raise UnetCoreError(f"elastic {cfg.elastic} px on a {cfg.elastic_grid}-point grid; "
                            "accepted: elastic >= 0 (0 disables) and elastic_grid >= 2")
    if cfg.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(2, cfg.threads))
    import keras

    keras.utils.set_random_seed(cfg.seed)
    run = cfg.run_path
    run.mkdir(parents=True, exist_ok=True)
    state_path = run / "state.json"
    t_start = time.time()

    names, images, masks = load_dataset(cfg)
    if len(names) < 3:
        raise UnetCoreError(f"{cfg.data}: need at least 3 image/mask pairs to train, found "
                            f"{len(names)}")
    coverage = np.array([m.mean() for m in masks])
    split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
    tr, va, te = stratified_split(coverage, cfg.val_fraction, cfg.test_fraction, split_seed)
    if len(va) == 0:
        va = tr[-1:]
    split = {"train": [names[i] for i in tr], "val": [names[i] for i in va],
             "test": [names[i] for i in te]}
    (run / "split.json").write_text(json.dumps(split))
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    print(f"[train] {len(names)} pairs: {len(tr)} train, {len(va)} val, {len(te)} test "
          f"({(coverage == 0).mean():.0%} empty masks)", flush=True)

    mark = [time.time()]  # wall-clock accounting across resumes: add time since last mark
    state: dict[str, Any] = {"epoch": 0, "phase": "bce_dice", "best": -1.0, "best_epoch": -1,
                             "wait": 0, "elapsed_s": 0.0}
    custom = {"bce_dice_loss": bce_dice_loss, "lovasz_hinge_loss": lovasz_hinge_loss,
              "symmetric_lovasz_loss": symmetric_lovasz_loss}
    if resume and state_path.is_file() and (run / "last.keras").is_file():
        state = json.loads(state_path.read_text())
        model = keras.models.load_model(run / "last.keras", custom_objects=custom, compile=True)
        print(f"[train] resumed at epoch {state['epoch']} ({state['phase']})", flush=True)
    else:
        model = build_unet(base_filters=cfg.base_filters, depth=cfg.depth, dropout=cfg.dropout,
                           residual=cfg.residual, name=cfg.model_name)
        if cfg.init_from:
            load_init_weights(model, cfg.init_from)
            # recorded now: the file may be overwritten by the end (out == init_from)
            state["initialised_from"] = init_record(cfg.init_from)
        model.compile(optimizer=keras.optimizers.Adam(cfg.lr), loss=bce_dice_loss)
        if (run / "log.csv").exists():
            (run / "log.csv").unlink()
    print(f"[train] model {model.count_params():,} parameters", flush=True)

    segmenter = Segmenter(from_keras(model, _card_for(cfg, tta=False), cfg.model_name),
                          batch_size=32, backend="tensorflow")  # live weights: no export
    val_imgs = [images[i] for i in va]
    val_masks = [masks[i] for i in va]
    val_names = [names[i] for i in va]
    verbose = cfg.verbose if cfg.verbose is not None else (1 if sys.stdout.isatty() else 2)
    if cfg.init_from and state["best_epoch"] < 0:
        # the starting weights are the bar to beat: scored on validation, saved as the best
        res = sweep_split(segmenter, val_imgs, val_masks, val_names)
        state.update(best=float(getattr(res, cfg.select_metric).max()), best_epoch=0)
        model.save(run / "best.keras")
        model.save(run / "last.keras")
        state_path.write_text(json.dumps(state))
        print(f"[train] initial weights from {cfg.init_from}: val {cfg.select_metric} "
              f"{state['best']:.4f}", flush=True)
    losses = {"bce_dice": bce_dice_loss, "lovasz": lovasz_hinge_loss,
              "lovasz_sym": symmetric_lovasz_loss}
    phases = [("bce_dice", cfg.epochs, cfg.lr)] if cfg.epochs > 0 or not cfg.init_from else []
    if cfg.lovasz_epochs > 0:
        phases.append(("lovasz", cfg.lovasz_epochs, cfg.lovasz_lr))
    if cfg.sym_lovasz_epochs > 0:
        phases.append(("lovasz_sym", cfg.sym_lovasz_epochs, cfg.sym_lovasz_lr))
    order = [name for name, _, _ in phases]

    class Checkpoint(keras.callbacks.Callback):
        """Validation sweep, best/last checkpoints, early stopping and the CSV log."""

        def __init__(self, phase: str, end: int) -> None:
            super().__init__()
            self.phase = phase
            self.end = end
            self.t0 = time.time()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = dict(logs or {})
            res = sweep_split(segmenter, val_imgs, val_masks, val_names)
            best_i = res.best_index(cfg.select_metric)
            score = float(getattr(res, cfg.select_metric)[best_i])
            at_half = res.summary_at(0.5)
            row = {"epoch": epoch + 1, "phase": self.phase, "loss": logs.get("loss"),
                   "lr": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
                   "val_iou@0.5": at_half["iou"], "val_tgs@0.5": at_half["tgs_metric"],
                   "val_best_threshold": float(res.thresholds[best_i]),
                   f"val_best_{cfg.select_metric}": score,
                   "epoch_s": round(time.time() - self.t0, 1)}
            self.t0 = time.time()
            log_path = run / "log.csv"
            new = not log_path.exists()
            with log_path.open("a", newline="") as f:
                wr = csv.DictWriter(f, fieldnames=list(row))
                if new:
                    wr.writeheader()
                wr.writerow(row)
            print("[epoch] " + " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in row.items()), flush=True)
            state["epoch"] = epoch + 1
            state["phase"] = self.phase
            if score > state["best"]:
                state.update(best=score, best_epoch=epoch + 1, wait=0)
                self.model.save(run / "best.keras")
            else:
                state["wait"] += 1
            now = time.time()
            state["elapsed_s"] = state.get("elapsed_s", 0.0) + (now - mark[0])
            mark[0] = now
            if (cfg.average_last > 0 and self.phase == order[-1]
                    and epoch + 1 > self.end - cfg.average_last):
                (run / "snapshots").mkdir(exist_ok=True)
                self.model.save_weights(run / "snapshots" / f"epoch_{epoch + 1:03d}.weights.h5")
            self.model.save(run / "last.keras")
            state_path.write_text(json.dumps(state))
            if state["wait"] >= cfg.patience:
                print(f"[train] early stop: no gain for {cfg.patience} epochs", flush=True)
                self.model.stop_training = True

    epoch0 = 0
    for phase, n_epochs, lr in phases:
        start, end = epoch0, epoch0 + n_epochs
        epoch0 = end
        done_phase = state["phase"] in order and order.index(state["phase"]) > order.index(phase)
        if state["epoch"] >= end or done_phase:
            continue
        if phase != "bce_dice" and state["phase"] != phase:
            # A later phase starts from the best weights so far with a fresh optimizer.
            best = keras.models.load_model(run / "best.keras", custom_objects=custom,
                                           compile=False)
            model.set_weights(best.get_weights())
            model.compile(optimizer=keras.optimizers.Adam(lr), loss=losses[phase])
            state.update(phase=phase, wait=0)
        elif state["wait"] >= cfg.patience and phase == "bce_dice":
            continue

        def schedule(epoch: int, _lr: float, start: int = start, n: int = n_epochs,
                     base: float = lr) -> float:
            t = min(1.0, max(0.0, (epoch - start) / max(1, n - 1)))
            lo = base * cfg.min_lr_fraction
            return float(lo + 0.5 * (base - lo) * (1 + math.cos(math.pi * t)))

        seq = make_sequence([images[i] for i in tr], [masks[i] for i in tr], cfg,
                            seed=cfg.seed + 1000 * order.index(phase))
        seq.epoch = state["epoch"]
        model.fit(seq, epochs=end, initial_epoch=max(start, state["epoch"]), verbose=verbose,
                  callbacks=[keras.callbacks.LearningRateScheduler(schedule),
                             Checkpoint(phase, end)])
        state["wait"] = 0 if phase == "bce_dice" else state["wait"]

    # -- finish: best weights, threshold on val, honest score on test, model + card ----------
    best = keras.models.load_model(run / "best.keras", custom_objects=custom, compile=False)
    final = build_unet(base_filters=cfg.base_filters, depth=cfg.depth, dropout=cfg.dropout,
                       residual=cfg.residual, name=cfg.model_name)
    final.set_weights(best.get_weights())
    card = _card_for(cfg, tta=cfg.tta)
    seg = Segmenter(from_keras(final, card, cfg.model_name), batch_size=32, backend="tensorflow")
    val_res = sweep_split(seg, val_imgs, val_masks, val_names)
    weights_from = (f"best epoch {state['best_epoch']}" if state["best_epoch"] != 0 else
                    f"the initial weights from {cfg.init_from} (no epoch beat them on validation)")
    averaged = average_snapshots(cfg, run, epoch0)
    if averaged is not None:
        avg_model, first, last = averaged
        avg_seg = Segmenter(from_keras(avg_model, card, cfg.model_name), batch_size=32,
                            backend="tensorflow")
        avg_res = sweep_split(avg_seg, val_imgs, val_masks, val_names)
        avg_score, best_score = (float(getattr(r, cfg.select_metric).max())
                                 for r in (avg_res, val_res))
        print(f"[train] mean of epochs {first}-{last}: val {cfg.select_metric} {avg_score:.4f} "
              f"vs best epoch {best_score:.4f}", flush=True)
        if avg_score > best_score:
            final, seg, val_res = avg_model, avg_seg, avg_res
            weights_from = f"mean of the weights of epochs {first}-{last} (SWA)"
    test_res = sweep_split(seg, [images[i] for i in te], [masks[i] for i in te],
                           [names[i] for i in te]) if len(te) else None
    card.threshold, card.min_area, metrics = split_metrics(
        val_res, test_res, cfg.select_metric,
        MIN_AREA_CANDIDATES if cfg.select_min_area else (0,))
    card.metrics = metrics
    card.architecture = {"type": "residual U-Net" if cfg.residual else "U-Net",
                         "base_filters": cfg.base_filters, "depth": cfg.depth,
                         "dropout": cfg.dropout, "parameters": int(final.count_params())}
    card.training = {
        "data": str(cfg.data), "terms": cfg.data_terms, "pairs": len(names),
        "split": {"train": len(tr), "val": len(va), "test": len(te), "seed": split_seed,
                  "stratified_by": "mask coverage (empty masks separate)"},
        "epochs_run": int(state["epoch"]), "best_epoch": int(state["best_epoch"]),
        "weights": weights_from,
        **({"initialised_from": state["initialised_from"]}
           if "initialised_from" in state else {}),
        "loss": "BCE + soft Dice" + (" then Lovász hinge" if cfg.lovasz_epochs else "")
                + (" then symmetric Lovász hinge" if cfg.sym_lovasz_epochs else ""),
        "augmentation": {k: getattr(cfg, k) for k in ("hflip", "vflip", "rot90", "scale_range",
                                                      "shift", "brightness", "contrast")}
                        | ({"elastic": cfg.elastic, "elastic_grid": cfg.elastic_grid}
                           if cfg.elastic > 0 else {}),
        "invert_masks": bool(cfg.invert_masks),
        "crop": cfg.crop, "batch_size": cfg.batch_size,
        "wall_time_s": round(float(state.get("elapsed_s", time.time() - t_start)), 1),
        "command": cfg.command,
        "held_out_names": str(Path(cfg.out).with_suffix(".heldout.txt").name),
        "split_names": str(Path(cfg.out).with_suffix(".split.json").name),
    }
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    final.save(out)
    card.save(out.with_suffix(".json"))
    out.with_suffix(".heldout.txt").write_text("\n".join(split["test"]) + "\n")
    out.with_suffix(".split.json").write_text(json.dumps(split) + "\n")
    print(f"[train] wrote {out} and its card; threshold {card.threshold}; min area "
          f"{card.min_area} px; "
          f"metrics {json.dumps(metrics)}", flush=True)
    return card


def load_init_weights(model: Any, path: str) -> None:
    """Copy the weights of the model at ``path`` into ``model`` (same architecture), or raise
    UnetCoreError saying what differs."""
    from .model import load_model

    if Path(path).suffix.lower() == ".onnx":
        raise UnetCoreError(f"init_from {path}: training starts from Keras weights; accepted: "
                            "a .keras or .h5 model of the same architecture")
    src = load_model(path).model
    theirs, ours = src.get_weights(), model.get_weights()
    shapes = [w.shape for w in theirs]
    if shapes != [w.shape for w in ours]:
        raise UnetCoreError(
            f"init_from {path}: its architecture differs from this config's "
            f"({src.count_params():,} vs {model.count_params():,} parameters, {len(theirs)} vs "
            f"{len(ours)} weight arrays); accepted: a model built with the same base_filters, "
            "depth and residual setting")
    model.set_weights(theirs)


def init_record(path: str) -> dict[str, str]:
    """What a fine-tuned card says about its starting weights: path and SHA-256 of the file."""
    import hashlib

    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"model": str(path), "sha256": digest}


def average_snapshots(cfg: TrainConfig, run: Path, end: int) -> tuple[Any, int, int] | None:
    """A fresh model holding the mean weights of the final phase's last ``cfg.average_last``
    epochs (``RUN_DIR/snapshots``), with (first, last) epoch; None if fewer than two exist.

    Batch-norm moving statistics are averaged too: the snapshots come from the end of a cosine
    schedule, close together in weight space, where that approximation holds well.
    """
    if cfg.average_last < 2:
        return None
    found = []
    for path in sorted((run / "snapshots").glob("epoch_*.weights.h5")):
        epoch = int(path.name[6:9])
        if end - cfg.average_last < epoch <= end:
            found.append((epoch, path))
    if len(found) < 2:
        return None
    total: list[np.ndarray] | None = None
    model = build_unet(base_filters=cfg.base_filters, depth=cfg.depth, dropout=cfg.dropout,
                       residual=cfg.residual, name=cfg.model_name)
    for _, path in found:
        model.load_weights(path)
        weights = [np.asarray(w, np.float64) for w in model.get_weights()]
        total = weights if total is None else [a + b for a, b in zip(total, weights, strict=True)]
    assert total is not None
    model.set_weights([(w / len(found)).astype(np.float32) for w in total])
    return model, found[0][0], found[-1][0]


def config_from_args(args: Any, argv: Sequence[str]) -> TrainConfig:
    """TrainConfig from a JSON config file (optional) overridden by explicit CLI options."""
    data: dict[str, Any] = {}
    if getattr(args, "config", None):
        try:
            data = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UnetCoreError(f"{args.config}: not a readable JSON config ({exc})") from None
    known = TrainConfig.__dataclass_fields__
    unknown = set(data) - set(known)
    if unknown:
        raise UnetCoreError(f"config has unknown keys {sorted(unknown)}; accepted: "
                            f"{', '.join(sorted(known))}")
    for key in known:
        val = getattr(args, key, None)
        if val is not None:
            data[key] = val
    data["command"] = command_line(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return TrainConfig(**data)
