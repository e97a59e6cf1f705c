"""Train JOTR.

    python -m main.train --cfg main/configs/main_train.yaml [key=value ...]
    torchrun --nproc_per_node N -m main.train --cfg ... [key=value ...]     (one process per GPU, or CPU processes)

Writes output/<exp_name>/: config.yaml (the resolved config), checkpoint/last.pth.tar (resumable: model,
optimiser, scaler, loss weights, step, RNG states; written at each epoch end, at the end and on Ctrl-C/SIGTERM),
checkpoint/step_<N>.pth.tar (resumable, every save_every_steps steps / save_every_minutes minutes, the newest
keep_last_k kept), checkpoint/<testset>_best_ckpt.pth.tar (lowest MPJPE so far), log/train.log, log/tensorboard/,
results/*.json, results/<testset>_samples.csv (the latest evaluation's per-person metrics). `resume=<checkpoint>`
continues a run exactly, `resume=auto` from the newest checkpoint of the run's folder that loads (or from scratch);
`init_ckpt=<checkpoint>` starts from weights only (stage 2 starts from stage 1's last.pth.tar).
"""
import argparse
import dataclasses
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from common.errors import InputError, run_entry_point
from common.evaluation.metrics import format_table, write_results_json, write_samples_csv
from common.losses import JointContrastiveLoss
from common.model.vposer import load_vposer_weights
from common.renderer import overlay, render
from common.speed import inference_model, setup_cpu_process
from common.training.checkpoint import (
    FORMAT,
    LAST_NAME,
    load_checkpoint,
    load_model_state,
    newest_training_state,
    read_training_state,
    remove_partial_saves,
    rotate_step_checkpoints,
    save_atomic,
    step_checkpoint_name,
)
from common.training.distributed import (
    EpochSampler,
    all_reduce_max,
    broadcast_buffers,
    cleanup_distributed,
    init_distributed,
    is_distributed,
    rng_state,
    seed_everything,
    seed_worker,
    set_rng_state,
)
from common.training.engine import (
    RunLogger,
    StopRequest,
    TrainingObjective,
    build_optimizer,
    evaluate,
    loss_weights,
    set_epoch_lr,
    train_one_epoch,
)
from data.registry import build_train_dataset
from data.skip_unreadable import BadSampleCount, SkipUnreadable
from main.build import (
    build_body_model,
    build_gendered_body_models,
    build_h36m_regressor,
    build_joint_regressor,
    build_model,
    build_test_sets,
    resolve_device,
)
from main.config import add_config_args, config_from_args, save_config
from main.preflight import check_training_files


def run_evaluation(model, test_sets, smpl_by_gender, cfg, world, logger, step, best, checkpoint_dir, run_dir):
    """Evaluate every test set, update the per-set best checkpoints, log and write the results."""
    results = {}
    # One folded (and optionally compiled) copy for every test set.
    net = inference_model(model, cfg.compile, fuse=cfg.fast_inference)
    for name, test_set in test_sets.items():
        summary, samples, per_sample = evaluate(
            net, test_set.loader, smpl_by_gender=smpl_by_gender, h36m_regressor=test_set.h36m_regressor,
            device=world.device, amp=cfg.amp, fast_inference=cfg.fast_inference, expected_count=test_set.size,
            progress=world.is_main,
            desc=f"eval {name}", keep_samples=4 if world.is_main else 0, return_per_sample=True)
        results[name] = summary | test_set.loader.dataset.report()
        if world.is_main:  # the latest evaluation's per-person metrics
            write_samples_csv(run_dir / "results" / f"{name}_samples.csv", per_sample,
                              test_set.loader.dataset.describe)
        logger.images(f"eval/{name}/overlay", crop_overlays(samples, model.body_model.faces, cfg), step)
        logger.scalars(f"eval/{name}", {k: v for k, v in summary.items() if k != "n"}, step)
        if world.is_main and summary["mpjpe"] < best.get(name, float("inf")):
            best[name] = summary["mpjpe"]
            save_atomic({"format": FORMAT, "model": model.state_dict(), "step": step, "metrics": summary},
                        checkpoint_dir / f"{name}_best_ckpt.pth.tar")
    if world.is_main and results:
        logger.info(f"evaluation at step {step}:\n{format_table(results)}")
        write_results_json(run_dir / "results" / f"eval_step{step:07d}.json", results)
        write_results_json(run_dir / "results" / "latest.json", results)
    return results


def crop_overlays(samples, faces, cfg):
    """Predicted meshes drawn over their input crops with the crop camera: (N, H, W, 3) uint8."""
    images = []
    for img, mesh, _ in samples:
        crop = (img.permute(1, 2, 0).numpy() * 255).clip(0, 255).astype(np.uint8)
        rendered = render([(mesh.numpy(), faces)], cfg.focal, cfg.princpt, cfg.input_img_shape)
        images.append(overlay(crop, rendered, alpha=0.7))
    return np.stack(images) if images else np.zeros((0, *cfg.input_img_shape, 3), np.uint8)


def numpy_free_rng_state():
    """rng_state() with numpy's array converted to a list, so checkpoints load with weights_only=True."""
    state = rng_state()
    kind, keys, pos, has_gauss, cached = state["numpy"]
    state["numpy"] = (kind, keys.tolist(), pos, has_gauss, cached)
    return state


def rng_states_of_all_processes():
    """[rank 0's state, rank 1's, ...]: every process calls this at the same point (it is a collective)."""
    state = numpy_free_rng_state()
    if not is_distributed():
        return [state]
    states = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states


def restore_rng_state(state):
    kind, keys, pos, has_gauss, cached = state["numpy"]
    state = dict(state, numpy=(kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    set_rng_state(state)


def save_training_state(path, objective, optimizer, scaler, step, cfg, best, rng_states, finished=False):
    """A resumable checkpoint; `finished`: the run reached its last step (resume=auto then has nothing to do)."""
    save_atomic({
        "format": FORMAT, "model": objective.model.state_dict(), "loss_weights": objective.awl.state_dict(),
        "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "step": step,
        "config": dataclasses.asdict(cfg), "rng": rng_states, "best": best,
        "contrastive_rng": objective.nce_generator.get_state(), "finished": finished,
    }, path)


# Config fields a resumed run must share with its checkpoint: they change the network's parameters or the sequence
# of training batches, so continuing with other values would silently be another experiment.
SAME_RUN_KEYS = (
    "resnet_type", "input_img_shape", "output_hm_shape", "enc_layers", "dec_layers", "hidden_dim", "nheads",
    "dim_feedforward", "voxel_dim_feedforward", "pose_head", "image_gate", "trainset_3d", "trainset_2d",
    "train_batch_size", "seed", "with_contrastive",
)


def check_same_run(saved_cfg, cfg, path):
    """ValueError naming every SAME_RUN_KEYS field whose value differs between the checkpoint and `cfg`."""
    current = dataclasses.asdict(cfg)
    differing = []
    for key in SAME_RUN_KEYS:
        theirs, ours = saved_cfg.get(key), current[key]
        if isinstance(theirs, (list, tuple)) and isinstance(ours, (list, tuple)):
            theirs, ours = list(theirs), list(ours)
        if theirs != ours:
            differing.append(f"{key}: checkpoint {theirs!r}, this run {ours!r}")
    if differing:
        raise InputError(f"{path} belongs to another configuration, refusing to resume from it:\n  "
                         + "\n  ".join(differing) + "\nUse the checkpoint's values, or another exp_name (or "
                         "init_ckpt=<checkpoint> to start a new run from its weights).")


def find_resume_state(resume, checkpoint_dir, world, logger):
    """(path, state) of the checkpoint to resume from, or (None, None) to start fresh. resume: '' (fresh), 'auto'
    (the newest loadable checkpoint of checkpoint_dir; rank 0 chooses, every process loads the same file) or a path.
    """
    if not resume:
        return None, None
    if resume != "auto":
        if not Path(resume).is_file():
            raise FileNotFoundError(f"resume={resume}: no such checkpoint (use resume=auto to continue the run in "
                                    f"output/<exp_name>/checkpoint/ if it has one)")
        return Path(resume), read_training_state(resume)
    path = None
    if world.is_main:
        for partial in remove_partial_saves(checkpoint_dir):
            logger.info(f"removed {partial}, the unfinished write of an interrupted save")
        path, state = newest_training_state(checkpoint_dir, logger.info)
    if world.distributed:
        shared = [str(path) if path else None]
        dist.broadcast_object_list(shared, src=0)
        path = Path(shared[0]) if shared[0] else None
        if path is not None and not world.is_main:
            state = read_training_state(path)
    if path is None:
        logger.info(f"resume=auto: no checkpoint in {checkpoint_dir}, starting fresh")
        return None, None
    return path, state


@dataclasses.dataclass
class TrainResult:
    exit_code: int  # 0, or 128 + signal number when stopped by SIGINT/SIGTERM (a resumable checkpoint was written)
    step: int
    model: torch.nn.Module


def train(cfg):
    """Train with the values of `cfg` (main.config.Config). Returns a TrainResult."""
    setup_cpu_process(cfg.reuse_cpu_memory)  # denormals flushed, freed memory kept for reuse
    world = init_distributed(resolve_device(cfg.device))
    seed_everything(cfg.seed + world.rank)
    run_dir = Path(cfg.output_dir) / cfg.exp_name
    checkpoint_dir = run_dir / "checkpoint"
    logger = RunLogger(run_dir / "log", enabled=world.is_main)
    if world.is_main:
        save_config(cfg, run_dir / "config.yaml")
    logger.info(f"run {cfg.exp_name}: {world.world_size} process(es) on {world.device}, amp={cfg.amp}")

    body_model = build_body_model(cfg)
    model = build_model(cfg, body_model=body_model)
    resume_path, state = find_resume_state(cfg.resume, checkpoint_dir, world, logger)
    # With a checkpoint to resume, the weights (and everything else) come from it, loaded below.
    if resume_path is not None:
        check_same_run(state["config"], cfg, resume_path)
    elif cfg.init_ckpt:
        load_checkpoint(model, cfg.init_ckpt)
        logger.info(f"initial weights from {cfg.init_ckpt}")
    elif model.vposer is not None:
        logger.info(f"VPoser weights from {load_vposer_weights(model.vposer, cfg.vposer_path)}")
    model.to(world.device)

    contrastive = None
    if cfg.with_contrastive:
        contrastive = JointContrastiveLoss(
            temperature=cfg.nce_temperature, intra_anchors=cfg.intra_anchors, intra_positives=cfg.intra_positives,
            intra_negatives=cfg.intra_negatives, inter_anchors=cfg.inter_anchors,
            inter_positives=cfg.inter_positives, inter_negatives=cfg.inter_negatives, hm_shape=cfg.output_hm_shape)
    objective = TrainingObjective(model, contrastive, cfg.intra_weight, cfg.inter_weight, cfg.output_hm_shape,
                                  seed=cfg.seed, loss_multipliers=cfg.loss_multipliers).to(world.device)
    optimizer = build_optimizer(objective, cfg.lr, cfg.lr_backbone, cfg.weight_decay, cfg.lr_transformer,
                                cfg.lr_image_gate)
    scaler = torch.amp.GradScaler(world.device.type, init_scale=cfg.init_scale, enabled=cfg.amp == "fp16")

    step, best = 0, {}
    if resume_path is not None:
        load_model_state(model, state["model"], resume_path)
        objective.awl.load_state_dict(state["loss_weights"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        step, best = state["step"], state.get("best", {})
        objective.nce_generator.set_state(state["contrastive_rng"])
        rng_states = state["rng"]
        if len(rng_states) != world.world_size:
            logger.info(f"the checkpoint holds RNG states of {len(rng_states)} process(es), this run has "
                        f"{world.world_size}: weights and data order resume exactly, random draws do not")
        restore_rng_state(rng_states[world.rank % len(rng_states)])
        logger.info(f"resumed {resume_path} at step {step}")
        saved = state["config"]
        if state.get("finished") and (saved["end_epoch"], saved["total_steps"]) == (cfg.end_epoch, cfg.total_steps):
            logger.info(f"{resume_path}: this run already finished at step {step}; nothing to do")
            logger.close()
            return TrainResult(0, step, model)
        del state  # the optimiser and model hold their own copies now

    if world.distributed:
        if world.device.type == "cuda":  # SyncBatchNorm has no CPU implementation
            objective = torch.nn.SyncBatchNorm.convert_sync_batchnorm(objective)
        ddp = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[world.device.index] if world.device.type == "cuda" else None)
    else:
        ddp = objective

    # The datasets get their own CPU body model: they run in DataLoader workers, the network may be on a GPU.
    data_body_model = build_body_model(cfg)
    h36m = build_h36m_regressor(cfg, body_model.arrays["v_template"].shape[0])
    train_set = build_train_dataset(
        cfg.trainset_3d, cfg.trainset_2d, data_dir=cfg.data_dir, body_model=data_body_model,
        joint_regressor_30=build_joint_regressor(cfg, data_body_model), h36m_regressor=h36m,
        input_img_shape=cfg.input_img_shape, output_hm_shape=cfg.output_hm_shape, bbox_3d_size=cfg.bbox_3d_size,
        update_bbox=cfg.update_bbox, augment=True, seed=cfg.seed, official_crowdpose_flip=cfg.official_crowdpose_flip,
        official_crowdpose_fit_filter=cfg.official_crowdpose_fit_filter, occlusion_prob=cfg.synthetic_occlusion_prob,
        occlusion_failures=cfg.synthetic_occlusion_failures)
    train_set = SkipUnreadable(train_set)
    sampler = EpochSampler(len(train_set), cfg.train_batch_size, cfg.seed, world.rank, world.world_size)
    steps_per_epoch = sampler.batches_per_epoch()

    def log_any_rank(message):  # every process's skipped files, not only rank 0's
        if world.is_main:
            logger.info(message)
        else:
            print(f"[rank {world.rank}] {message}", file=sys.stderr, flush=True)

    bad_samples = BadSampleCount(steps_per_epoch * cfg.train_batch_size, cfg.max_bad_samples_fraction, log_any_rank)
    if steps_per_epoch == 0:
        raise ValueError(f"the training set has {len(train_set)} samples, fewer than one batch of "
                         f"{cfg.train_batch_size} per process; lower train_batch_size")
    test_sets = build_test_sets(cfg, world, body_model.arrays["v_template"].shape[0])
    smpl_by_gender = build_gendered_body_models(cfg, world.device) if test_sets else {}
    last_step = min(cfg.end_epoch * steps_per_epoch, cfg.total_steps or float("inf"))
    logger.info(f"{len(train_set)} training samples, {steps_per_epoch} steps per epoch, training to step "
                f"{last_step}; test sets: {', '.join(test_sets) or 'none'}")

    evaluated_at = [None]
    saved_at = [time.monotonic()]

    def save_resumable(path, step):
        """Every process calls it (the RNG states are gathered); rank 0 writes."""
        rng_states = rng_states_of_all_processes()  # each process resumes with its own RNG streams
        if world.is_main:
            start = time.monotonic()
            save_training_state(path, objective, optimizer, scaler, step, cfg, best, rng_states,
                                finished=step >= last_step)
            logger.info(f"saved {path} at step {step} ({time.monotonic() - start:.1f} s)")
        saved_at[0] = time.monotonic()

    def interval_save_due(step):
        if step % steps_per_epoch == 0 or step >= last_step:
            return False  # the end-of-epoch / end-of-run save writes last.pth.tar at this step anyway
        if cfg.save_every_steps and step % cfg.save_every_steps == 0:
            return True
        if cfg.save_every_minutes:
            # Every process must take the same decision (the save is a collective): any process's clock decides.
            elapsed = time.monotonic() - saved_at[0] >= 60 * cfg.save_every_minutes
            return bool(all_reduce_max([float(elapsed)], world.device)[0])
        return False

    def maybe_evaluate(step):
        if test_sets and evaluated_at[0] != step:
            broadcast_buffers(model)
            run_evaluation(model, test_sets, smpl_by_gender, cfg, world, logger, step, best, checkpoint_dir,
                           run_dir)
            evaluated_at[0] = step

    def on_step(step, terms):
        if step % cfg.print_every == 0 or step == 1:
            logger.scalars("train", terms, step)
            logger.scalars("loss_weight", loss_weights(objective), step)
            logger.scalars("lr", {g["name"]: g["lr"] for g in optimizer.param_groups}, step)
            logger.info(f"step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in terms.items()))
        if cfg.eval_every_steps and step % cfg.eval_every_steps == 0:
            maybe_evaluate(step)
        if interval_save_due(step):
            save_resumable(checkpoint_dir / step_checkpoint_name(step), step)
            if world.is_main:
                rotate_step_checkpoints(checkpoint_dir, cfg.keep_last_k)

    with StopRequest() as stop:
        while step < last_step:
            epoch, start_batch = divmod(step, steps_per_epoch)
            set_epoch_lr(optimizer, epoch, cfg.lr_dec_epoch, cfg.lr_dec_factor)
            sampler.set_epoch(epoch, start_batch)
            train_set.set_epoch(epoch)
            bad_samples.start_epoch(epoch)
            # Its own generator: creating the loader must not consume the global RNG (exact resume).
            loader = DataLoader(train_set, batch_size=cfg.train_batch_size, sampler=sampler,
                                num_workers=cfg.num_thread, worker_init_fn=seed_worker, drop_last=True,
                                generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch),
                                pin_memory=world.device.type == "cuda")
            step, stop_requested = train_one_epoch(
                ddp, loader, optimizer, scaler, device=world.device, step=step, amp=cfg.amp, max_norm=cfg.max_norm,
                total_steps=last_step, stop=stop, on_step=on_step, progress=world.is_main,
                desc=f"epoch {epoch}", warmup_steps=cfg.warmup_steps, bad_samples=bad_samples,
                image_only_steps=cfg.image_only_steps, image_only_prob=cfg.image_only_prob)
            broadcast_buffers(model)
            if not stop_requested and (step % steps_per_epoch == 0 or step == last_step):
                maybe_evaluate(step)  # after every epoch and at the end (spec 4.6)
            save_resumable(checkpoint_dir / LAST_NAME, step)
            if stop_requested:
                logger.info(f"stopped by a signal at step {step}; resume=auto (or resume={checkpoint_dir / LAST_NAME})"
                            f" continues")
                logger.close()
                return TrainResult(128 + (stop.signal or signal.SIGTERM), step, model)
    logger.info(f"finished at step {step}; checkpoint {checkpoint_dir / LAST_NAME}")
    logger.close()
    return TrainResult(0, step, model)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    cfg = config_from_args(parser.parse_intermixed_args(argv))
    check_training_files(cfg)  # all that is missing, at once, before any work
    try:
        exit_code = train(cfg).exit_code
    except BaseException:
        cleanup_distributed(graceful=False)
        raise
    cleanup_distributed()
    return exit_code


if __name__ == "__main__":
    run_entry_point(main)
