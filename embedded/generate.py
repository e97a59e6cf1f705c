"""Synthetic occluded-people data, written in the real on-disk formats so the real loaders read it.

`generate(out_dir, ...)` writes a data directory (point the config's data paths there):

    <out>/body_models/smpl/SMPL_{NEUTRAL,MALE,FEMALE}.pkl   the mannequin (embedded.mannequin), SMPL file layout
    <out>/body_models/J_regressor_extra.npy, J_regressor_h36m_correct.npy
    <out>/3DPW/imageFiles/<sequence>/image_<n>.jpg        test and crowd images
    <out>/3DPW/3DPW_latest_test.json                      'test' split: every annotated test person (3dpw)
    <out>/3DPW/3DPW_oc.json, 3DPW_pc.json                 its people occluded by objects / by other people
    <out>/3DPW/3DPW_latest_validation.json                'crowd' split (sequences courtyard_{hug,dancing}_00_synth)
    <out>/3DPW/3DPW_validation_crowd_hhrnet_result.json   detector-like COCO-17 poses of the crowd people
    <out>/MuCo/MuCo-3DHP.json, smpl_param.json, images/   'train' split in the MuCo-3DHP format (spec 5.3)
    <out>/MSCOCO/annotations/person_keypoints_train2017.json, MSCOCO_train_SMPL_NeuralAnnot.json, images/train2017/
                                                          the same training people as a 2D set in the MSCOCO format
    <out>/manifest.json                                   seed, sizes, generator version, counts, complete flag

Scenes (one image each): a pinhole camera 1.0-1.8 m above a flat floor, pitched slightly down; a procedural
background (textured floor and back wall or facade and sky, random shapes, smooth illumination, blob shadows);
1-4 people (3-4 in the crowd split) with random shapes, genders (neutral in the training split, whose loader uses
the neutral model) and plausible poses (per-joint anatomical limits, five pose families), standing on the floor at
3-10 m, often overlapping; 0-2 textured box / cylinder / panel occluders standing between the camera and a
person. Everything is rendered with the z-buffer renderer (common.renderer), so occlusion is real.

Who is annotated: in the 3DPW-style splits every person whose occlusion ratio is at most 0.85 (train: 0.7) and who
has enough visible joints; the others stay in the image as unannotated bystanders, as in real footage. The MuCo
loader keeps only the person closest to the camera, who is rarely occluded; so the training split annotates one
person per image, drawn among the annotatable ones, which gives occluded training samples too. The paper trains on
3D and 2D sets together (spec 4.4); the MSCOCO-format copy of the training split is its 2D set: the same people's
17 keypoints with COCO visibility flags (hidden keypoints labelled only half of the time, writers.COCO_HIDDEN_LABELLED)
and their SMPL parameters as NeuralAnnot fits. Its input poses thus have the face keypoints the test detectors
report, lack the joints they do not (head top, hands, toes), and miss hidden joints as the detectors do.

Per person: SMPL parameters in the camera frame (x right, y down, z forward, metres), the tight amodal box, the
z-buffer visibility of the 30 joints, occlusion ratios (hidden share of the amodal silhouette, split into hidden
by objects and by other people) and detector-like 2D poses (OpenPose-18 for 3DPW, COCO-17 for the crowd
HigherHRNet file): projected joints plus Gaussian noise scaled with the person's height; occluded joints dropped
or kept with low confidence and more noise; an occasional left/right swap; joints outside the image dropped.
With `detector_failures` (off by default), the test and crowd input poses also fail on hidden joints the way
detectors do under occlusion (embedded.detections.occlusion_failures: reported on the occluding person's joint or
on the occluding object, missed, or the limb's left and right swapped; rates FAILURE_*); the training split has no
input poses (its loader synthesises them from the ground truth), so only the evaluation changes; the training
config key synthetic_occlusion_failures makes those fail the same way under pasted occluders (data.occlusion_failures).
Extra fields (`synthetic` in each annotation) keep the noise-free OpenPose joints, the noise scale, swaps, failures
and occlusion numbers; the real loaders ignore them.

Determinism: image i of split s draws everything from np.random.default_rng([seed, s, i]), so changing a split's
size keeps the earlier images. The same seed gives byte-identical files (geometry in numpy float64; JPEGs from the
same OpenCV build).

The parts, one concept per module: embedded.poses (pose and shape priors), embedded.camera (camera and world frame),
embedded.bodies (the SMPL function in numpy, clothing regions), embedded.textures, embedded.scene (people and
objects placed, who is annotated), embedded.render (background, z-buffer composition, occlusion labels),
embedded.detections (detector noise and failures), embedded.writers (the 3DPW, MuCo and MSCOCO files). This module runs
them over the splits, in worker processes if asked, and keeps the manifest.
"""
import concurrent.futures
import contextlib
import functools
import json
import multiprocessing
import pathlib
import shutil
import tempfile
import time
import warnings

import cv2

from embedded.bodies import load_bodies
from embedded.mannequin import write_mannequin
from embedded.scene import DEFAULT_IMAGE_SIZE
from embedded.writers import write_json, write_pw3d_split, write_train_split

GENERATOR_NAME = "jotr-synthetic"
GENERATOR_VERSION = 2  # 2: the MSCOCO-format copy of the training split
MANIFEST_FILE = "manifest.json"

# Subset rules (3DPW-OC / 3DPW-PC analogues): share of a person's amodal silhouette hidden by objects / people.
OC_MIN_OBJECT_OCCLUSION = 0.1
PC_MIN_PERSON_OCCLUSION = 0.1
OCCLUSION_LEVELS = ((0.0, 0.1), (0.1, 0.3), (0.3, 0.5), (0.5, 1.01))  # manifest counts per level


def _coco(images, annotations):
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]}


def _subset(images, annotations, keep):
    annotations = [a for a in annotations if keep(a["synthetic"])]
    used = {a["image_id"] for a in annotations}
    return _coco([i for i in images if i["id"] in used], annotations)


def _occlusion_counts(annotations):
    counts = {}
    for lo, hi in OCCLUSION_LEVELS:
        counts[f"{lo:.1f}-{min(hi, 1.0):.1f}"] = sum(lo <= a["synthetic"]["occlusion"] < hi for a in annotations)
    return counts


CHUNK_IMAGES = 100  # images per task of a parallel run


def _render_chunk(task, bodies):
    """One chunk of images (files written): the results of write_train_split or write_pw3d_split."""
    out, split, indices, seed, image_size, detector_failures = task
    if split == "train":
        return write_train_split(out, indices, seed, bodies, image_size, None)
    return write_pw3d_split(out, split, indices, seed, bodies, image_size, None, detector_failures)


_worker_bodies = None  # a worker process's body models, loaded once by _init_worker


def _init_worker(out):
    """Worker process set-up: one math thread (the workers are the parallelism) and the body models."""
    import torch

    global _worker_bodies
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _worker_bodies = load_bodies(out / "body_models")


def _chunk_in_worker(task):
    return _render_chunk(task, _worker_bodies)


def _render_chunks(out, sizes, seed, image_size, workers, log, detector_failures=False):
    """Every split's images, in `workers` processes (1 = here). Each image draws from its own RNG stream
    (seed, split, index), so the output does not depend on how the images are shared out. Returns
    {split: list of the chunks' results in index order}."""
    tasks = [(out, split, list(range(start, min(start + CHUNK_IMAGES, n))), seed, image_size, detector_failures)
             for split, n in sizes.items() for start in range(0, n, CHUNK_IMAGES)]
    by_split = {split: [] for split in sizes}
    with contextlib.ExitStack() as stack:
        if workers <= 1 or len(tasks) <= 1:
            results = map(functools.partial(_render_chunk, bodies=load_bodies(out / "body_models")), tasks)
        else:
            context = multiprocessing.get_context("spawn")  # no fork of a process that runs threaded math libraries
            pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(
                workers, mp_context=context, initializer=_init_worker, initargs=(out,)))
            results = pool.map(_chunk_in_worker, tasks)
        for (_, split, indices, *_), result in zip(tasks, results):
            by_split[split].append(result)
            if log:
                log(f"{split}: {indices[-1] + 1}/{sizes[split]} images")
    return by_split


def _merge(chunks):
    """Concatenate the chunks' lists and merge their dicts, in order."""
    merged = []
    for parts in zip(*chunks):
        if isinstance(parts[0], dict):
            merged.append({k: v for part in parts for k, v in part.items()})
        else:
            merged.append([x for part in parts for x in part])
    return merged


# ----------------------------------------------------------------------------------------------------------------------
# Entry points


def _settings(seed, n_train, n_test, n_crowd, image_size, detector_failures):
    return {"generator": GENERATOR_NAME, "generator_version": GENERATOR_VERSION, "seed": int(seed),
            "sizes": {"train": int(n_train), "test": int(n_test), "crowd": int(n_crowd)},
            "image_size": [int(image_size[0]), int(image_size[1])], "detector_failures": bool(detector_failures)}


_OUTPUTS = ("body_models", "3DPW", "MuCo", "MSCOCO")


def read_manifest(out_dir):
    """The manifest of a generated directory, or None."""
    path = pathlib.Path(out_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    with open(path) as f:
        manifest = json.load(f)
    return manifest if isinstance(manifest, dict) and manifest.get("generator") == GENERATOR_NAME else None


def _prepare(out, manifest):
    """Refuse a directory holding data the generator did not write; clear the outputs of an earlier run."""
    if out.exists() and manifest is None:
        foreign = [p.name for p in out.iterdir() if p.name in _OUTPUTS or p.name == MANIFEST_FILE]
        if foreign:
            raise FileExistsError(f"{out} already holds {', '.join(sorted(foreign))} without a synthetic-data "
                                  f"manifest ({MANIFEST_FILE}); refusing to overwrite what may be real data. Choose "
                                  f"another output directory.")
    if manifest is not None:
        for name in _OUTPUTS:
            if (out / name).exists():
                shutil.rmtree(out / name)
    out.mkdir(parents=True, exist_ok=True)


def generate(out_dir, seed=0, n_train=2000, n_test=500, n_crowd=100, image_size=DEFAULT_IMAGE_SIZE, force=False,
             log=None, workers=1, detector_failures=False):
    """Write the synthetic data directory `out_dir` (module docstring) and return its manifest.

    n_train / n_test / n_crowd: images per split (train: one annotated person each; test and crowd: every
    annotatable person); image_size (H, W) pixels. When `out_dir` already holds a complete output of the same
    settings (manifest match), nothing is regenerated unless `force`. A directory with a body_models/, 3DPW/, MuCo/
    or MSCOCO/ that this generator did not write is refused. `log`: optional callable(str) for progress messages.
    workers: processes rendering images in parallel (the output is the same for any number).
    detector_failures: the test and crowd input poses also fail on hidden joints as detectors do
    (occlusion_failures: reported on the occluder, missed, left/right swapped); images and ground truth unchanged.
    """
    out = pathlib.Path(out_dir)
    settings = _settings(seed, n_train, n_test, n_crowd, image_size, detector_failures)
    manifest = read_manifest(out)
    if manifest is not None and not force and manifest.get("complete") and \
            all(manifest.get(k) == v for k, v in settings.items()):
        if log:
            log(f"{out} already holds this output (manifest matches); nothing to do (force=True regenerates)")
        return manifest
    _prepare(out, manifest)
    # Written first so that an interrupted run's leftovers are recognised (and replaced) by the next run.
    write_json(out / MANIFEST_FILE, dict(settings, complete=False))
    start = time.perf_counter()
    write_mannequin(out / "body_models")
    counts = {}

    sizes = {"test": n_test, "crowd": n_crowd, "train": n_train}
    chunks = _render_chunks(out, sizes, seed, image_size, workers, log, detector_failures)
    test_images, test_anns, _ = _merge(chunks["test"]) if n_test else ([], [], {})
    pw3d = out / "3DPW"
    files = {
        "3DPW_latest_test.json": _coco(test_images, test_anns),
        "3DPW_oc.json": _subset(test_images, test_anns, lambda s: s["object_occlusion"] >= OC_MIN_OBJECT_OCCLUSION),
        "3DPW_pc.json": _subset(test_images, test_anns, lambda s: s["person_occlusion"] >= PC_MIN_PERSON_OCCLUSION),
    }
    crowd_images, crowd_anns, hhrnet = _merge(chunks["crowd"]) if n_crowd else ([], [], {})
    files["3DPW_latest_validation.json"] = _coco(crowd_images, crowd_anns)
    for name, content in files.items():
        write_json(pw3d / name, content)
    write_json(pw3d / "3DPW_validation_crowd_hhrnet_result.json", hhrnet)
    counts["test"] = {"images": len(test_images), "annotations": len(test_anns),
                      "3dpw-oc": len(files["3DPW_oc.json"]["annotations"]),
                      "3dpw-pc": len(files["3DPW_pc.json"]["annotations"]),
                      "occlusion_levels": _occlusion_counts(test_anns)}
    counts["crowd"] = {"images": len(crowd_images), "annotations": len(crowd_anns),
                       "occlusion_levels": _occlusion_counts(crowd_anns)}
    train_images, train_anns, fits, coco_anns, coco_fits = _merge(chunks["train"]) if n_train else ([], [], {}, [], {})
    write_json(out / "MuCo" / "MuCo-3DHP.json", _coco(train_images, train_anns))
    write_json(out / "MuCo" / "smpl_param.json", fits)
    coco_images = [{k: image[k] for k in ("id", "file_name", "width", "height")} for image in train_images]
    write_json(out / "MSCOCO" / "annotations" / "person_keypoints_train2017.json", _coco(coco_images, coco_anns))
    write_json(out / "MSCOCO" / "annotations" / "MSCOCO_train_SMPL_NeuralAnnot.json", coco_fits)
    counts["train"] = {"images": len(train_images), "annotations": len(train_anns),
                       "occlusion_levels": _occlusion_counts(train_anns)}
    empty = [name for name, count in (("3DPW_oc.json", counts["test"]["3dpw-oc"]),
                                      ("3DPW_pc.json", counts["test"]["3dpw-pc"])) if n_test and not count]
    if empty:
        warnings.warn(f"{out}: {' and '.join(empty)} hold no person with only {n_test} test images; generate more "
                      f"test images to evaluate the occlusion subsets", stacklevel=2)

    seconds = time.perf_counter() - start
    manifest = dict(settings, complete=True, counts=counts, seconds=round(seconds, 1))
    write_json(out / MANIFEST_FILE, manifest)
    if log:
        log(f"wrote {out}: {n_train} train, {n_test} test, {n_crowd} crowd images in {seconds:.0f} s")
    return manifest


def measure_speed(n_images=40, image_size=DEFAULT_IMAGE_SIZE, seed=0, split="test"):
    """Generation speed of `split` scenes including JPEG and annotation writing, excluding the one-off body model
    setup: {'images_per_second': wall clock, 'images_per_cpu_second': per second of this process's CPU time
    (= per core when the math libraries run single-threaded)}. For the benchmark script."""
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp)
        write_mannequin(out / "body_models")
        bodies = load_bodies(out / "body_models")
        wall, cpu = time.perf_counter(), time.process_time()
        if split == "train":
            write_train_split(out, range(n_images), seed, bodies, image_size, None)
        else:
            write_pw3d_split(out, split, range(n_images), seed, bodies, image_size, None)
        return {"images_per_second": n_images / (time.perf_counter() - wall),
                "images_per_cpu_second": n_images / (time.process_time() - cpu)}
