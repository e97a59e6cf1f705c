"""3DPW evaluation metrics (spec 6): MPJPE, PA-MPJPE, MPVPE, and their exact aggregation.

All functions are batched torch, device-agnostic and gradient-free by intent (call them under
torch.no_grad()). The protocol itself is `mesh_metrics`; `MetricAccumulator` turns per-sample
values into per-split means that count every sample of the split exactly once.
"""
import csv
import json
import math
import os
import tempfile

import torch
import torch.distributed as dist

from common.body.joint_sets import H36M_EVAL14_IDX, H36M_ROOT_IDX

METRIC_NAMES = ("mpjpe", "pa_mpjpe", "mpvpe")


def similarity_procrustes(pred, gt):
    """Align `pred` onto `gt` with the best similarity transform (scale, proper rotation, translation).

    pred, gt: (B, J, 3), any unit. Returns the aligned prediction (B, J, 3) in pred's dtype.
    Spec 6: centre both; H = (A - mean A)^T (B - mean B) / J; H = U S V^T; R = V U^T, and when
    det R < 0 the last singular value and the last row of V^T are negated (so R stays a rotation);
    c = sum(S) / (total variance of A); t = mean B - c R mean A; result c R A + t.
    Computed in float64: the SVD of nearly-degenerate joint sets is where float32 loses digits.
    """
    a, b = pred.double(), gt.double()
    mean_a, mean_b = a.mean(dim=1, keepdim=True), b.mean(dim=1, keepdim=True)
    a_c, b_c = a - mean_a, b - mean_b
    h = a_c.transpose(1, 2) @ b_c / a.shape[1]  # (B, 3, 3)
    u, s, vt = torch.linalg.svd(h)
    rot = vt.transpose(1, 2) @ u.transpose(1, 2)
    flip = torch.linalg.det(rot) < 0
    sign = torch.ones_like(s)
    sign[flip, -1] = -1
    s = s * sign
    vt = vt * sign[:, :, None]
    rot = vt.transpose(1, 2) @ u.transpose(1, 2)
    var_a = a_c.pow(2).sum(dim=(1, 2)) / a.shape[1]
    # A prediction collapsed to one point has no scale to fit; c = 0 (aligned = mean of gt) is the limit.
    scale = torch.where(var_a > 0, s.sum(dim=1) / var_a.clamp_min(torch.finfo(var_a.dtype).tiny),
                        torch.zeros_like(var_a))
    aligned = scale[:, None, None] * a_c @ rot.transpose(1, 2) + mean_b
    return aligned.to(pred.dtype)


def mpjpe(pred, gt):
    """Mean per-joint Euclidean error. pred, gt: (B, J, 3). Returns (B,) in the input unit."""
    return torch.linalg.norm(pred - gt, dim=-1).mean(dim=-1)


def pa_mpjpe(pred, gt):
    """MPJPE after similarity Procrustes alignment of pred onto gt. (B, J, 3) -> (B,), input unit."""
    return mpjpe(similarity_procrustes(pred, gt), gt)


def mesh_metrics(pred_mesh, gt_mesh, j_regressor_h36m, j_regressor_root):
    """The 3DPW protocol (spec 6) for a batch of people.

    pred_mesh: (B, V, 3) predicted mesh, metres, root-relative (the model's `smpl_mesh_cam`);
    gt_mesh: (B, V, 3) ground-truth mesh of the annotated gender, metres, camera frame (absolute);
    j_regressor_h36m: (17, V) Human3.6M regressor (data/Human36M/J_regressor_h36m_correct.npy);
    j_regressor_root: (V,) or (1, V), row 0 (Pelvis) of the model's J30 regressor.
    Returns {'mpjpe', 'pa_mpjpe', 'mpvpe'}: (B,) float64 tensors in MILLIMETRES.
    - joints: H36M joints of each mesh minus that mesh's own H36M pelvis; the 14 scored joints;
    - MPVPE: each mesh moved so that its J30-row-0 point is at the origin; mean vertex error.
    """
    if pred_mesh.shape != gt_mesh.shape or pred_mesh.dim() != 3 or pred_mesh.shape[-1] != 3:
        raise ValueError(f"mesh_metrics: expected pred and gt meshes of the same shape (B, V, 3), got "
                         f"{tuple(pred_mesh.shape)} and {tuple(gt_mesh.shape)}")
    n_verts = pred_mesh.shape[1]
    opts = dict(dtype=torch.float64, device=pred_mesh.device)
    reg_h36m = torch.as_tensor(j_regressor_h36m).to(**opts)
    reg_root = torch.as_tensor(j_regressor_root).to(**opts).reshape(1, -1)
    if reg_h36m.shape != (17, n_verts) or reg_root.shape[1] != n_verts:
        raise ValueError(f"mesh_metrics: regressors must be (17, {n_verts}) and ({n_verts},), got "
                         f"{tuple(reg_h36m.shape)} and {tuple(torch.as_tensor(j_regressor_root).shape)}")
    pred, gt = pred_mesh.to(**opts), gt_mesh.to(**opts)

    def eval_joints(mesh):
        joints = reg_h36m @ mesh  # (B, 17, 3)
        joints = joints - joints[:, H36M_ROOT_IDX:H36M_ROOT_IDX + 1]
        return joints[:, H36M_EVAL14_IDX]

    pred_joints, gt_joints = eval_joints(pred), eval_joints(gt)
    pred_centred, gt_centred = pred - reg_root @ pred, gt - reg_root @ gt
    return {
        "mpjpe": mpjpe(pred_joints, gt_joints) * 1000,
        "pa_mpjpe": pa_mpjpe(pred_joints, gt_joints) * 1000,
        "mpvpe": mpjpe(pred_centred, gt_centred) * 1000,
    }


class MetricAccumulator:
    """Per-sample metric values keyed by sample id, reduced to per-split means.

    Usage: add() every batch on every process, merge() once at the end (gathers all processes' values in
    a distributed run), then summary(). Each id is counted once: a repeated id (the padding a
    DistributedSampler adds so every rank gets the same count, or a rank's results gathered twice) keeps
    its first value. With `expected_count` the ids must be exactly 0..expected_count-1; a missing or
    unexpected id raises instead of silently shrinking the evaluation.
    """

    def __init__(self, expected_count=None):
        self.expected_count = expected_count
        self._values = {}  # sample id -> {metric name: float}

    def add(self, per_sample, sample_ids):
        """per_sample: {name: (B,) tensor/array}; sample_ids: (B,) ints (the dataset index, meta 'idx')."""
        ids = [int(i) for i in torch.as_tensor(sample_ids).reshape(-1).tolist()]
        columns = {name: torch.as_tensor(v).detach().reshape(-1).double().cpu().tolist()
                   for name, v in per_sample.items()}
        for name, column in columns.items():
            if len(column) != len(ids):
                raise ValueError(f"MetricAccumulator.add: '{name}' has {len(column)} values for {len(ids)} ids")
        for row, sample_id in enumerate(ids):
            self._values.setdefault(sample_id, {name: column[row] for name, column in columns.items()})

    def merge(self):
        """Gather every process's values into every process (no-op unless torch.distributed is up)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self._values)
        merged = {}
        for rank_values in gathered:  # rank order, so every process keeps the same first value
            for sample_id, values in rank_values.items():
                merged.setdefault(sample_id, values)
        self._values = merged

    def __len__(self):
        return len(self._values)

    def per_sample(self):
        """{sample id: {metric name: value}} of every sample added (after merge(): of all processes), by id."""
        return {sample_id: dict(self._values[sample_id]) for sample_id in sorted(self._values)}

    def summary(self):
        """Means over unique samples: {'mpjpe', 'pa_mpjpe', 'mpvpe' (whatever was added), 'n'}."""
        if not self._values:
            raise ValueError("MetricAccumulator.summary: no sample was evaluated")
        if self.expected_count is not None:
            missing = sorted(set(range(self.expected_count)) - self._values.keys())
            unexpected = sorted(self._values.keys() - set(range(self.expected_count)))
            if missing or unexpected:
                raise ValueError(f"MetricAccumulator: expected sample ids 0..{self.expected_count - 1}; "
                                 f"{len(missing)} missing (first: {missing[:10]}), "
                                 f"{len(unexpected)} unexpected (first: {unexpected[:10]})")
        names = next(iter(self._values.values())).keys()
        result = {name: math.fsum(v[name] for v in self._values.values()) / len(self._values) for name in names}
        result["n"] = len(self._values)
        return result


def format_table(results, paper=None):
    """A plain-text table of per-split results, optionally beside the published numbers.

    results: {split: summary} (summary as from MetricAccumulator.summary, millimetres; a summary with the test
        set's report(), e.g. data.pw3d.PW3D.report, also shows its input pose source and the people it excluded);
    paper: {split: {'mpjpe', 'pa_mpjpe', 'mpvpe'}} published numbers; a missing split or value prints n/a.
    """
    with_input = any("pose_source" in summary for summary in results.values())
    header = ["split", "n"] + (["input"] if with_input else [])
    for name in METRIC_NAMES:
        label = {"mpjpe": "MPJPE", "pa_mpjpe": "PA-MPJPE", "mpvpe": "MPVPE"}[name]
        header += [label] if paper is None else [label, "paper", "diff"]
    rows = []
    for split, summary in results.items():
        row = [split, str(summary.get("n", ""))] + ([summary.get("pose_source", "")] if with_input else [])
        for name in METRIC_NAMES:
            ours = summary.get(name)
            row.append("n/a" if ours is None else f"{ours:.1f}")
            if paper is not None:
                published = (paper.get(split) or {}).get(name)
                row.append("n/a" if published is None else f"{published:.1f}")
                row.append("n/a" if published is None or ours is None else f"{ours - published:+.1f}")
        rows.append(row)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in [header] + rows]
    lines.insert(1, "-" * len(lines[0]))
    notes = [f"{split}: {count} people excluded ({reason}), as in the official evaluation"
             for split, summary in results.items() for reason, count in (summary.get("excluded") or {}).items()]
    input_note = ["(input: the 2D pose detector whose poses the set was evaluated with)"] if with_input else []
    return "\n".join(lines + notes + ["(millimetres; lower is better)"] + input_note)


def _write_atomic(path, write):
    """Call write(text file) on a temporary file beside `path`, then move it into place (all or nothing)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=os.path.splitext(path)[1])
    try:
        with os.fdopen(fd, "w", newline="") as f:
            write(f)
        os.replace(tmp_path, path)
    except BaseException:
        os.unlink(tmp_path)
        raise


SAMPLE_COLUMNS = ("index", "ann_id", "img_path", "pose_source") + METRIC_NAMES


def write_samples_csv(path, per_sample, describe):
    """Every person's metrics of one test set as CSV, one row per sample id in order: index (the sample id),
    ann_id, img_path, pose_source (from describe(sample id), e.g. data.pw3d.PW3D.describe) and mpjpe, pa_mpjpe,
    mpvpe in millimetres. per_sample: {sample id: {metric: value}} (common.training.engine.evaluate's
    return_per_sample).
    Written atomically."""
    def write(f):
        writer = csv.DictWriter(f, fieldnames=SAMPLE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for sample_id in sorted(per_sample):
            values = {name: repr(float(v)) for name, v in per_sample[sample_id].items()}
            writer.writerow({**describe(sample_id), **values, "index": sample_id})

    _write_atomic(path, write)


def write_results_json(path, results):
    """Write {split: summary} to `path` atomically (a complete old or new file, never a partial one)."""
    plain = {split: {k: (v.item() if hasattr(v, "item") else v) for k, v in summary.items()}
             for split, summary in results.items()}

    def write(f):
        json.dump(plain, f, indent=2, sort_keys=True)
        f.write("\n")

    _write_atomic(path, write)
