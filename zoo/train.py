"""The Trainer: budget, device, bf16 autocast, EMA, clipping, atomic checkpoints, resume.

A run directory holds ``run.json`` (what was trained, on what, with which options),
``checkpoint.pt`` (everything needed to resume: weights, EMA, optimizers, RNG, step),
``model.pt`` (the weights used for sampling: the EMA weights when EMA is on) and
``losses.csv`` (the format and ``load_run``: ``zoo.runs``). Resuming restores the data
order and every RNG, so a resumed run ends with the same weights as an uninterrupted one.

Under torchrun (a process group is initialized, see ``zoo.distributed``) the Trainer runs
DistributedDataParallel: ``batch_size`` is the global batch, each of the N ranks takes
every N-th image of it (rows rank, rank + N, ...) and the matching rows of the per-batch
noise (``GenerativeModel.batch_randn``), the modules of ``model.ddp_modules()`` are
wrapped so gradients are averaged in ``backward``, and rank 0 alone writes the run
directory and shows progress. N ranks then compute what one process computes on the
global batch, up to float rounding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from . import data as zdata
from . import distributed as zdist
from .card import write_card
from .core import (
    Batch,
    CheckpointError,
    ConfigError,
    DataError,
    GenerativeModel,
    TrainingDiverged,
    ZooError,
    atomic_write,
    config_from_dict,
    config_to_dict,
    eval_mode,
    first_line,
    first_non_finite,
    from_checkpoint_dict,
    save_torch,
    state_dict_mismatch,
    torch_load,
)
from .images import legible_scale, make_grid, save_grid
from .locks import exclusive
from .logs import SAMPLES_DIR, Logger, check_logger, make_logger
from .metrics import streaming_fid
from .nn.ema import EMA
from .nn.graphs import release_graphs
from .owndata import tensor_sha256
from .progress import Progress
from .runs import (
    CARD_FILE,
    CHECKPOINT_FILE,
    EVAL_FILE,
    LOSSES_FILE,
    MODEL_FILE,
    RUN_FILE,
    SAMPLES_FILE,
    check_folder,
    device_name,
    load_run,
    run_info,
)
from .sampling import sample_slices
from .trainconfig import TrainConfig
from .trainloop import LogWindow, TrainingClock, check_losses, due, mean_over_ranks


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for but torch sees no CUDA GPU")
    return zdist.device_for_rank(dev)


def _train_config(info: dict, path: Path) -> TrainConfig:
    """The TrainConfig recorded in a run.json (``zoo.runs.run_info``), checked as it was when
    written: anything wrong is a CheckpointError naming the file."""
    try:
        config = config_from_dict(TrainConfig, info["train_config"])
        config.validate()
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{path}: train_config: {first_line(e)}") from None
    return config


def _configured(config: TrainConfig, options: dict) -> TrainConfig:
    """``config`` with the training ``options`` set, checked (a tracker without its package
    too)."""
    for k, v in options.items():
        if not hasattr(config, k):
            valid = ", ".join(f.name for f in dataclasses.fields(TrainConfig))
            raise ConfigError(f"unknown training option {k!r}; valid options: {valid}")
        setattr(config, k, v)
    config.validate()
    check_logger(config.log)  # tensorboard without its package: refused here
    return config


class _ShardedBatches(zdata.BatchIterator):
    """This rank's images of each global batch of a ``BatchIterator``: rows rank, rank + N,
    ... (strided, so any contiguous split of the local batch, such as the GAN's critic
    chunks, is the same split of the global batch)."""

    def __init__(self, images, global_batch: int, rank: int, world: int, **kwargs):
        super().__init__(images, global_batch, **kwargs)
        self.shard_rank, self.shard_world = rank, world

    def indices(self, step: int) -> torch.Tensor:
        return super().indices(step)[self.shard_rank::self.shard_world]


class Trainer:
    """Trains a GenerativeModel on a dataset into a run directory.

    ``evaluator``: what ``eval_every`` evaluates with, a factory called like
    ``zoo.metrics.StreamingFID(dataset, "test", extractor, device=, root=)`` and returning an
    object with ``update(images)``, ``compute() -> float``, ``reset()`` and ``extractor``;
    None: ``zoo.metrics.streaming_fid`` (StreamingFID)."""

    def __init__(
        self,
        model: GenerativeModel,
        dataset: str,
        out: str | Path,
        config: TrainConfig | None = None,
        *,
        images: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        progress: bool | None = None,
        data_root: str | None = None,
        evaluator: Callable | None = None,
        **options,
    ):
        self.config = _configured(config or TrainConfig(), options)
        self.rank, self.world = zdist.rank(), zdist.world_size()
        b = self.config.batch_size
        if b % self.world:
            raise ConfigError(
                f"batch_size {b} is the global batch and must be divisible by the number of "
                f"processes ({self.world}); use e.g. {max(self.world, b - b % self.world)}"
            )
        self.model = model
        ds = zdata.spec(dataset)
        self.spec = ds
        self.dataset = str(ds)  # canonical: built-in name, or absolute path and options
        self.out = Path(out)
        self.progress = progress
        self.evaluator = evaluator
        #: the command line that started the run (``zoo train`` sets it; run.json and the
        #: model card's reproduce line show it); None: the card rebuilds one from the options
        self.command: str | None = None
        self.device = resolve_device(self.config.device)
        self.amp = self.config.amp if self.config.amp is not None else self.device.type == "cuda"
        own = images is None and not ds.builtin
        if images is None:
            images, labels = zdata.load(ds, "train", root=data_root)
        self.images = images
        #: int64 labels of the training images, UNLABELLED (-1) where the data has none
        self.labels = labels if labels is not None else Batch.unlabelled(images).labels
        self._check_data()
        #: sha256 of the training images and labels (run.json, the model card): an own
        #: dataset's split hash, else that of the images trained on
        self.dataset_sha256 = (zdata.content_hash(ds, "train") if own else tensor_sha256(
            images.cpu(), self.labels.cpu()))
        #: the names of the dataset's classes (run.json: ``zoo sample --labels`` writes them
        #: beside the grid rows and takes them for numbers); a folder's class subfolders, a
        #: built-in set's names, () where unknown (an array, images passed in)
        self.classes: tuple[str, ...] = (
            tuple(zdata.DATASETS[ds.source].classes) if ds.builtin
            else tuple(zdata.describe(ds, root=data_root)["classes"]) if own else ())
        self.data_root = data_root
        self.step = 0
        self.elapsed = 0.0
        self.saved_step: int | None = None  # the step of the checkpoint on disk
        self.hook = None  # test hook: called as hook(trainer) after every step

    def _check_data(self) -> None:
        """Refuse training images of another shape than the model's, fewer than one batch,
        or labels outside a class-conditional model's classes."""
        model, images, labels = self.model, self.images, self.labels
        if tuple(images.shape[1:]) != model.image_shape:
            raise ConfigError(
                f"{model.name} was built for images {model.image_shape}, "
                f"but {self.dataset} has {tuple(images.shape[1:])}"
            )
        if images.shape[0] < self.config.batch_size:
            raise DataError(
                f"{self.dataset} has {images.shape[0]} training images, fewer than one batch "
                f"of {self.config.batch_size}: add images or train with a batch size of at most "
                f"{images.shape[0]} (--batch-size)"
            )
        if model.conditional and len(labels):
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= model.num_classes:
                raise ConfigError(
                    f"{model.name} is class-conditional ({model.num_classes} classes) but "
                    f"{self.dataset}'s training labels run {lo}..{hi}"
                    + (" (-1: images without a label)" if lo < 0 else "")
                    + ": train it on labelled data (a folder of class subfolders), or "
                    "without conditional=true")

    # -- run directory ---------------------------------------------------------------------
    def _run_info(self) -> dict:
        return {
            "model": self.model.name,
            "family": self.model.family,
            "dataset": self.dataset,
            **({"dataset_sha256": self.dataset_sha256} if self.dataset_sha256 else {}),
            **({"classes": list(self.classes)} if self.classes else {}),
            "image_shape": list(self.model.image_shape),
            "model_config": config_to_dict(self.model.config),
            "train_config": dataclasses.asdict(self.config),
            "params": self.model.num_parameters(),
            "world_size": self.world,
            **({"command": self.command} if self.command else {}),
            # what samples.png and a plain `zoo sample` draw with
            "sampler": self.model.parse_sampler({}).label(),
        }

    @classmethod
    def resume(
        cls,
        out: str | Path,
        *,
        progress: bool | None = None,
        data_root: str | None = None,
        images: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        evaluator: Callable | None = None,
        **options,
    ) -> Trainer:
        """Rebuild the Trainer of the run in ``out`` from its checkpoint; ``options`` may
        extend the budget (steps, seconds) or change non-numerical options like device."""
        out = Path(out)
        info_path = out / RUN_FILE
        if not info_path.is_file():
            raise CheckpointError(f"{out} holds no zoo run ({RUN_FILE} is missing)")
        info = run_info(out)
        state = torch_load(out / CHECKPOINT_FILE, "training checkpoint")
        model = from_checkpoint_dict(state.get("model"), source=str(out / CHECKPOINT_FILE))
        config = _train_config(info, info_path)
        trainer = cls(
            model, info["dataset"], out, config, images=images, labels=labels, progress=progress,
            data_root=data_root, evaluator=evaluator, **options,
        )
        trainer._check_resumable(state)  # refused here, before the run is announced
        if json.loads(json.dumps(dataclasses.asdict(trainer.config))) == info["train_config"]:
            trainer.command = info.get("command")  # it still trains this run
        trainer._state_to_restore = state
        return trainer

    def _rank_rng(self) -> dict:
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return rng

    def _save(self, ema: EMA | None, optimizers: dict, noise: torch.Generator) -> None:
        """Write checkpoint.pt and model.pt atomically (checkpoint last: it marks success).
        A failure to write (a full disk, permissions) is one CheckpointError that says which
        checkpoint is kept.

        Under DDP every rank must call it (the RNG states of all ranks are gathered), and
        rank 0 writes."""
        rank_rng = zdist.all_gather_object(self._rank_rng())
        if not zdist.is_main():
            return
        target = self.out / MODEL_FILE
        try:
            if ema is not None:
                with ema.swapped():
                    self.model.save(target)
            else:
                self.model.save(target)
            state = {
                "model": self.model.checkpoint_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                "step": self.step,
                "elapsed": self.elapsed,
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "rng_noise": noise.get_state(),
                "rng_ranks": rank_rng,
            }
            target = self.out / CHECKPOINT_FILE
            save_torch(state, target)
        except OSError as e:
            kept = (f"the previous checkpoint (step {self.saved_step}) is kept"
                    if self.saved_step is not None else "no checkpoint had been written yet")
            raise CheckpointError(
                f"saving step {self.step} failed: cannot write {target} "
                f"({e.strerror or first_line(e)}); {kept}. Free some space (or fix the "
                "permissions) and resume the run (zoo train ... --resume)"
            ) from None
        self.saved_step = self.step

    def _check_resumable(self, state: dict, ema_shadow: dict | None = None,
                         optimizers: dict | None = None,
                         noise: torch.Generator | None = None) -> None:
        """Refuse a checkpoint that ``_restore`` could not load whole, before anything is
        loaded (``resume`` calls it with stand-ins: the model's optimizers and EMA weights)."""
        if optimizers is None:
            optimizers = self.model.configure_optimizers()
            if self.config.ema_decay:
                ema_shadow = self.model.ema_module().state_dict()
            noise = torch.Generator(device=self.device)
        problem = _resume_problem(state, ema_shadow, optimizers, noise)
        if problem is not None:
            raise CheckpointError(f"{self.out / CHECKPOINT_FILE} cannot be resumed: {problem}")

    def _restore(self, state: dict, ema: EMA | None, optimizers: dict,
                 noise: torch.Generator) -> None:
        where = f"{self.out / CHECKPOINT_FILE} cannot be resumed"
        self._check_resumable(state, ema.shadow if ema is not None else None, optimizers, noise)
        try:
            for k, opt in optimizers.items():
                opt.load_state_dict(state["optimizers"][k])
                _match_layouts(opt)
            if ema is not None and state.get("ema") is not None:
                ema.load_state_dict(state["ema"])
            self.step = int(state["step"])
            self.elapsed = float(state["elapsed"])
            if state.get("rng_noise") is not None:
                noise.set_state(state["rng_noise"])
            ranks = state.get("rng_ranks") or []
            if len(ranks) == self.world:
                torch.set_rng_state(ranks[self.rank]["cpu"])
                if "cuda" in ranks[self.rank] and self.device.type == "cuda":
                    torch.cuda.set_rng_state(ranks[self.rank]["cuda"], self.device)
            elif self.world == 1:
                torch.set_rng_state(state["rng_cpu"])
                if state.get("rng_cuda") and torch.cuda.is_available():
                    torch.cuda.set_rng_state_all(state["rng_cuda"])
            else:
                # resumed on another number of processes: data order and batch noise carry
                # over exactly; only in-network randomness (dropout) is reseeded
                torch.manual_seed(zdist.mix_seed(self.config.seed, (self.step + 1) * 4096
                                                 + self.rank))
        except (KeyError, ValueError, RuntimeError, TypeError, AttributeError, IndexError) as e:
            raise CheckpointError(f"{where}: {type(e).__name__}: {first_line(e)}") from None

    # -- the loop --------------------------------------------------------------------------
    def _done(self, clock: TrainingClock) -> bool:
        c = self.config
        if c.steps is not None and self.step >= c.steps:
            return True
        if c.seconds is None:
            return False
        # a time budget: ranks agree (any rank out of time stops all) so none is left waiting
        return zdist.any_rank(self.elapsed + clock.running() >= c.seconds)

    def fit(self) -> dict:
        """Train until the budget is spent; returns a summary of the run. The run directory
        is locked meanwhile (``zoo.locks``): a second writer gets an error naming this one."""
        with exclusive(check_folder(self.out), "run directory"):
            return self._fit()

    def _fit(self) -> dict:
        c = self.config
        state = getattr(self, "_state_to_restore", None)
        if state is None:
            _check_new_run(self.out)
            # in-network randomness (dropout) differs between ranks; batch noise does not
            # come from here but from the shared noise generator below
            rank_seed = zdist.mix_seed(c.seed, 1 + self.rank)
            torch.manual_seed(c.seed if self.world == 1 else rank_seed)
        main = zdist.is_main()
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
        model = self.model.place(self.device, self.config.channels_last)
        model.train()
        model.grad_clip = c.grad_clip
        optimizers = model.configure_optimizers()
        ema = EMA(model.ema_module(), c.ema_decay) if c.ema_decay else None
        # per-batch noise (latents, timesteps, reparameterization): the same stream on every
        # rank, drawn for the global batch and sliced like the data (GenerativeModel.batch_*)
        noise = torch.Generator(device=self.device).manual_seed(zdist.mix_seed(c.seed, 0))
        if state is not None:
            self._restore(state, ema, optimizers, noise)
        if main:
            text = json.dumps(self._run_info(), indent=2)
            atomic_write(self.out / RUN_FILE, lambda tmp: Path(tmp).write_text(text))
        compiled = list(model.ddp_modules().values()) if c.compile else []
        try:
            for module in compiled:
                # the module's own forward, compiled: state_dict keys and checkpoints are
                # unchanged. (Module.compile() was silently a no-op for an nn.Sequential with
                # torch 2.11 on CUDA: the GAN's networks trained eagerly.)
                module.forward = torch.compile(module.forward)
            model.attach_training(self._wrap(model, optimizers), noise, (self.rank, self.world))
            return self._loop(model, optimizers, ema, noise, state)
        finally:
            model.attach_training()
            for module in compiled:
                module.__dict__.pop("forward", None)  # back to the class's forward
            release_graphs(model)  # loops captured for evaluations during training

    def _wrap(self, model: GenerativeModel, optimizers: dict) -> dict:
        """DistributedDataParallel wrappers of ``model.ddp_modules()`` (none in one process)."""
        if self.world == 1:
            return {}
        modules = model.ddp_modules()
        covered = {id(p) for m in modules.values() for p in m.parameters()}
        trained = [p for o in optimizers.values() for g in o.param_groups for p in g["params"]]
        if any(id(p) not in covered for p in trained):
            raise ConfigError(
                f"{model.name}: ddp_modules() ({', '.join(modules)}) does not hold every "
                "parameter its optimizers train, so DDP could not average their gradients"
            )
        ids = [self.device.index] if self.device.type == "cuda" else None
        return {name: DistributedDataParallel(m, device_ids=ids) for name, m in modules.items()}

    def _loop(self, model, optimizers, ema, noise, state) -> dict:
        """Train step by step until the budget is spent, each step followed by its reports
        and periodic work; then the finish."""
        c = self.config
        batches = iter(self._batches())
        if state is not None:
            self.saved_step = self.step
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp
                    else contextlib.nullcontext())
        live = self._start_live(model, optimizers, ema, noise, resumed=state is not None)
        try:
            while not self._done(live.clock):
                x = next(batches)
                with autocast, _compile_errors(c.compile):
                    losses = model.train_step(x, optimizers)
                losses = mean_over_ranks(losses, self.world)  # logged, and checked on all
                check_losses(model.name, losses, c.max_loss)
                if ema is not None:
                    ema.update()
                self.step += 1
                live.clock.stepped()
                live.window.add(losses, x.images.shape[0] * self.world)
                self._report(live)
                self._periodic(live)
                if self.hook is not None:
                    self.hook(self)
        except TrainingDiverged as e:
            live.close()
            raise self._diverged(e, live.last_saved) from None
        except KeyboardInterrupt:
            self.elapsed += live.clock.lap()
            live.close()
            if self.world == 1:  # under DDP the ranks stop at different points: the last
                self._save(ema, optimizers, noise)  # periodic checkpoint is the one kept
            raise
        except Exception:
            live.close()  # the progress ends with the loop, whatever stopped it
            raise
        return self._finish(live)

    def _batches(self) -> zdata.BatchIterator:
        """This rank's batches from the current step on (under DDP: its rows of each)."""
        c = self.config
        if self.world == 1:
            return zdata.BatchIterator(
                self.images, c.batch_size, seed=c.seed, device=self.device, labels=self.labels,
                start_step=self.step,
            )
        return _ShardedBatches(
            self.images, c.batch_size, self.rank, self.world, seed=c.seed, labels=self.labels,
            device=self.device, start_step=self.step,
        )

    def _start_live(self, model, optimizers, ema, noise, resumed: bool) -> _Live:
        """The logger, the evaluator and the progress bar of this call; its clock starts."""
        c = self.config
        main = zdist.is_main()
        # rank 0 logs; on resume, what was logged after the checkpoint is dropped (those
        # steps are logged again)
        logger = make_logger(c.log, self.out, self.step if resumed else None) if main else Logger()
        logger.log_text("options", self._options_text(), self.step)
        evaluator = None
        if c.eval_every:
            with zdist.main_first():  # rank 0 fills the reference-feature cache
                evaluator = self._make_evaluator()
        bar = Progress(  # of the budget: steps, else seconds
            f"train {model.name}", c.steps if c.steps is not None else c.seconds,
            "step" if c.steps is not None else "s", enabled=self.progress,
            initial=self.step if c.steps is not None else min(self.elapsed, c.seconds))
        return _Live(model, optimizers, ema, noise, logger, bar, evaluator,
                     first_step=self.step, last_saved=self.step)

    def _report(self, live: _Live) -> None:
        """The mean losses and images/s to the log every ``log_every`` steps; the progress
        (steps or seconds of the budget) with the losses and images/s since the last log."""
        c = self.config
        ips, means = live.window.peek()
        live.bar.note(**means, **{"img/s": f"{ips:.0f}"})
        if due(self.step, c.log_every):
            self._log(live)
        if c.steps is not None:
            live.bar.update(1)
        else:
            live.bar.note(step=str(self.step))
            live.bar.set(round(min(self.elapsed + live.clock.running(), c.seconds), 1))

    def _log(self, live: _Live) -> None:
        """The mean losses and images/s of the steps since the last log point, logged at this
        step."""
        ips, row = live.window.take()
        live.logger.log_scalars(self.step, {"images_per_s": round(ips, 1), **row}, notes={
            "seconds": round(self.elapsed + live.clock.running(), 3)})

    def _periodic(self, live: _Live) -> None:
        """This step's evaluation, sample grid and checkpoint, each when due; evaluating
        and drawing the grid are not training time."""
        c = self.config
        if live.evaluator is not None and due(self.step, c.eval_every):
            with live.clock.paused():
                fid = self._evaluate(live.model, live.ema, live.evaluator, live.logger)
                live.bar.note(fid=fid)
        if zdist.is_main() and due(self.step, c.sample_every):
            with live.clock.paused():
                grid = self._sample_grid(live.model, live.ema)
                live.logger.log_images(self.step, "samples", grid)
                live.grid_step = self.step
        if due(self.step, c.checkpoint_every):
            self.elapsed += live.clock.lap()
            self._save(live.ema, live.optimizers, live.noise)
            live.last_saved = self.step

    def _diverged(self, e: TrainingDiverged, last_saved: int) -> TrainingDiverged:
        """The error that ends a diverged run: where it stopped, what is kept, what to do."""
        kept = (
            f"the last good checkpoint (step {last_saved}) is kept in {self.out}"
            if (self.out / CHECKPOINT_FILE).exists() else "no checkpoint had been written yet"
        )
        also = ", or raise max_loss if such losses are expected" if "beyond max_loss" in str(
            e) else ""
        return TrainingDiverged(
            f"{e} at step {self.step + 1}; training stopped and {kept}. "
            f"Lower the learning rate or enable gradient clipping (grad_clip){also}."
        )

    def _finish(self, live: _Live) -> dict:
        """The last checkpoint and the end-of-training grid; run.json and the model card say
        how far it trained. Returns the summary of this call."""
        c, model = self.config, live.model
        self.elapsed += live.clock.lap()
        live.bar.close()
        try:
            if live.window.count:  # the last step is logged, log_every or not
                self._log(live)
            self._save(live.ema, live.optimizers, live.noise)
            if zdist.is_main() and c.sample_n:  # the model card's grid, and the tracker's last
                grid = self._sample_grid(model, live.ema)
                save_grid(grid.unsqueeze(0), self.out / SAMPLES_FILE, nrow=1,
                          scale=legible_scale(*model.image_shape[1:]))
                if live.grid_step != self.step:
                    live.logger.log_images(self.step, "samples", grid)
        finally:
            live.logger.close()
        summary = {
            "model": model.name,
            "out": str(self.out),
            "steps": self.step,
            "seconds": self.elapsed,
            "images_per_s": self.step * c.batch_size / max(self.elapsed, 1e-9),
            # this call's first step alone (with --compile: compilation) and the steps
            # after it, checkpoints included (None with fewer than 2 steps)
            "first_step_seconds": live.clock.first_seconds,
            "steady_images_per_s": live.clock.steady_images_per_s(
                self.step - live.first_step - 1, c.batch_size),
        }
        if zdist.is_main():
            self._write_trained(summary)
        return summary

    def _write_trained(self, summary: dict) -> None:
        """run.json with how far the run trained and where; the model card says it in words."""
        info = {**self._run_info(), "trained": {
            "steps": self.step, "seconds": round(self.elapsed, 3),
            "images_per_s": round(summary["images_per_s"], 1),
            "device": device_name(self.device), "finished": time.strftime(
                "%Y-%m-%dT%H:%M:%S%z")}}
        text = json.dumps(info, indent=2)
        atomic_write(self.out / RUN_FILE, lambda tmp: Path(tmp).write_text(text))
        write_card(self.out)

    def _options_text(self) -> str:
        """The run's options (run.json's), as the tracker's text: a JSON code block."""
        return "```json\n" + json.dumps(self._run_info(), indent=2) + "\n```"

    def _sample_grid(self, model: GenerativeModel, ema: EMA | None) -> torch.Tensor:
        """A uint8 [C, H, W] grid of ``sample_n`` samples drawn with the EMA weights, the
        same seed every time (a conditional model: classes 0, 1, ... in turn). The RNG
        states are restored after it, so logging grids does not change what is trained."""
        c = self.config
        labels = (torch.arange(c.sample_n, device=self.device) % model.num_classes
                  if model.conditional else None)
        gpus = [self.device] if self.device.type == "cuda" else []
        with eval_mode(model), torch.random.fork_rng(devices=gpus), torch.no_grad(), (
                ema.swapped() if ema is not None else contextlib.nullcontext()):
            gen = torch.Generator(device=self.device).manual_seed(zdist.mix_seed(c.seed, 7))
            x = model.sample(c.sample_n, generator=gen,
                             **({"labels": labels} if labels is not None else {}))
        return make_grid(x.cpu())

    def _make_evaluator(self):
        """The evaluator of ``eval_every`` against the test split, built by the Trainer's
        ``evaluator`` factory, else StreamingFID."""
        factory = self.evaluator or streaming_fid
        return factory(self.spec, "test", self.config.eval_extractor, device=self.device,
                       root=self.data_root)

    def _evaluate(self, model: GenerativeModel, ema: EMA | None, evaluator,
                  logger: Logger) -> float:
        """FID of ``eval_n`` samples drawn with the EMA weights; logged (eval.csv).

        The samples are drawn in slices of ``batch_size``, slice i from its own generator
        seeded with ``mix_seed(seed, i)`` (``zoo.sampling.sample_slices``); under DDP rank r
        draws slices r, r + N, ... and the FID statistics are summed over ranks, so the
        figure does not depend on the number of processes. Sampling runs before the step's
        checkpoint, so a resumed run still matches an uninterrupted one.
        """
        c = self.config
        with eval_mode(model), (ema.swapped() if ema is not None else
                                contextlib.nullcontext()), torch.no_grad():
            for _, images in sample_slices(model, c.eval_n, c.batch_size, c.seed):
                evaluator.update(images)
        fid = evaluator.compute()
        evaluator.reset()
        logger.log_scalars(self.step, {"fid": float(f"{fid:.6g}")}, section="eval", notes={
            "n": c.eval_n, "extractor": evaluator.extractor.name,
            "extractor_sha256": evaluator.extractor.sha256})
        return fid


#: what a new run writes over in its directory (besides run.json, which marks it as a run)
_RUN_WRITES = (MODEL_FILE, CARD_FILE, SAMPLES_FILE, LOSSES_FILE, EVAL_FILE, SAMPLES_DIR)


def _check_new_run(out: Path) -> None:
    """Refuse to start a new run in ``out`` over what it holds: a run (resumed instead), or,
    in a directory that is not a zoo run, files of the names a run writes (a project's
    README.md, say), which training would replace. An empty or new directory is fine."""
    if (out / CHECKPOINT_FILE).exists():
        raise ConfigError(f"{out} already holds a run; resume it (zoo train ... --resume) "
                          "or choose another --out")
    if (out / RUN_FILE).exists():
        return  # a run stopped before its first checkpoint: its files are zoo's own
    replaced = [n + "/" if n == SAMPLES_DIR else n for n in _RUN_WRITES
                if os.path.lexists(out / n)]
    if replaced:
        raise ConfigError(f"{out} is not a zoo run ({RUN_FILE} is missing) but holds "
                          f"{', '.join(replaced)}, which training would replace; train into an "
                          "empty or new directory (--out), or move those files away")


@contextlib.contextmanager
def _compile_errors(compiling: bool):
    """With ``compile`` on, a failure of torch.compile (no C compiler for inductor on the
    CPU, an unsupported operation) as a ConfigError that says what to do."""
    if not compiling:
        yield
        return
    from torch._dynamo.exc import BackendCompilerFailed, TorchRuntimeError, Unsupported

    try:
        yield
    except (BackendCompilerFailed, TorchRuntimeError, Unsupported) as e:
        raise ConfigError(
            f"torch.compile failed ({type(e).__name__}: {first_line(e)[:300]}); train without "
            "--compile (train.compile = false), or on the CPU install a C++ compiler "
            "(inductor builds its kernels with one)"
        ) from None


def _resume_problem(state: dict, ema_shadow: dict | None, optimizers: dict,
                    noise: torch.Generator) -> str | None:
    """What keeps a training checkpoint from being resumed, in words (None: nothing): every
    entry ``_restore`` reads present and of the right kind, each optimizer's state fitting
    its parameters (fused Adam reads a moment of another shape out of bounds), the EMA's
    shadow fitting the model, and every tensor finite."""
    for key, what in (("optimizers", "optimizer state"), ("step", "step count"),
                      ("elapsed", "training time"), ("rng_cpu", "CPU RNG state")):
        if key not in state:
            return f"it has no {what} ({key!r})"
    step, elapsed = state["step"], state["elapsed"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return f"its step count is {step!r}, not an integer >= 0"
    if isinstance(elapsed, bool) or not isinstance(elapsed, int | float) or not (
            math.isfinite(elapsed) and elapsed >= 0):
        return f"its training time is {elapsed!r}, not a number of seconds >= 0"
    saved = state["optimizers"]
    if not isinstance(saved, dict):
        return f"its optimizers' state is a {type(saved).__name__}, not a dict"
    for name, opt in optimizers.items():
        if name not in saved:
            return (f"it has no state for optimizer {name!r} (it holds "
                    f"{', '.join(map(repr, saved)) or 'none'})")
        problem = _optimizer_problem(opt, saved[name])
        if problem is not None:
            return f"optimizer {name!r}: {problem}"
    if ema_shadow is not None and state.get("ema") is not None:
        saved_ema = state["ema"]
        if not isinstance(saved_ema, dict):
            return f"its EMA state is a {type(saved_ema).__name__}, not a dict"
        for key, what in (("updates", "update count"), ("shadow", "averaged weights")):
            if key not in saved_ema:
                return f"its EMA state has no {what} ({key!r})"
        updates = saved_ema["updates"]
        if isinstance(updates, bool) or not isinstance(updates, int) or updates < 0:
            return f"its EMA update count is {updates!r}, not an integer >= 0"
        problem = state_dict_mismatch(ema_shadow, saved_ema["shadow"])
        if problem is not None:
            return f"its EMA weights do not match the model: {problem}"
        bad = first_non_finite(saved_ema["shadow"])
        if bad is not None:
            return f"its EMA weights hold NaN or Inf, the first in {bad}"
    for key, like in (("rng_cpu", torch.get_rng_state()), ("rng_noise", noise.get_state())):
        value = state.get(key)
        if key == "rng_noise" and value is None:
            continue
        if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or (
                value.shape != like.shape):
            return (f"its RNG state {key!r} is not a uint8 tensor of shape {tuple(like.shape)} "
                    f"(got {_describe_value(value)})")
    return None


def _describe_value(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} {tuple(value.shape)}"
    return type(value).__name__


def _optimizer_problem(opt: torch.optim.Optimizer, saved) -> str | None:
    """What keeps ``saved`` (an optimizer's ``state_dict()`` read from a file) from being
    loaded into ``opt``, in words; None when it fits."""
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict) or not isinstance(
            saved.get("param_groups"), list):
        return "its state is not a dict with 'state' and 'param_groups'"
    groups = saved["param_groups"]
    if len(groups) != len(opt.param_groups):
        return (f"it has {len(groups)} parameter groups, the model's optimizer "
                f"{len(opt.param_groups)}")
    params = {}
    for i, (mine, theirs) in enumerate(zip(opt.param_groups, groups, strict=True)):
        if not isinstance(theirs, dict) or not isinstance(theirs.get("params"), list):
            return f"parameter group {i} has no list of parameters"
        if len(theirs["params"]) != len(mine["params"]):
            return (f"parameter group {i} has {len(theirs['params'])} parameters, the model's "
                    f"{len(mine['params'])}")
        for key, value in mine.items():
            if key == "params":
                continue
            if key not in theirs:
                if isinstance(value, bool) or value is None:
                    continue  # a flag newer than the checkpoint: torch fills in its default
                return f"parameter group {i} has no {key!r}"
            bad = _hyperparameter_problem(value, theirs[key])
            if bad is not None:
                return f"parameter group {i}: {key} {bad}"
        for pid, p in zip(theirs["params"], mine["params"], strict=True):
            if isinstance(pid, bool) or not isinstance(pid, int) or pid in params:
                return f"parameter group {i} lists parameter ids that are not distinct integers"
            params[pid] = p
    required = {"step", "exp_avg", "exp_avg_sq"} if isinstance(opt, torch.optim.Adam) else set()
    for pid, st in saved["state"].items():
        if pid not in params:
            return f"it holds state for parameter {pid!r}, which no parameter group lists"
        if not isinstance(st, dict):
            return f"the state of parameter {pid} is a {type(st).__name__}, not a dict"
        p = params[pid]
        need = required | ({"max_exp_avg_sq"} if required and _amsgrad(opt, p) else set())
        missing = sorted(need - set(st))
        if missing:
            return f"the state of parameter {pid} {tuple(p.shape)} has no {missing[0]!r}"
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                if key == "step" or value.dim() == 0:
                    if value.numel() != 1 or not bool(torch.isfinite(value.float()).all()):
                        return (f"{key} of parameter {pid} is {_describe_value(value)}, not one "
                                "finite number")
                    continue
                if tuple(value.shape) != tuple(p.shape) or not value.is_floating_point():
                    return (f"{key} of parameter {pid} is {_describe_value(value)}, but the "
                            f"parameter is {p.dtype} {tuple(p.shape)}")
                if not bool(torch.isfinite(value).all()):
                    return f"{key} of parameter {pid} {tuple(p.shape)} holds NaN or Inf"
                if key in _SQUARES and bool((value < 0).any()):
                    return (f"{key} of parameter {pid} {tuple(p.shape)} holds negative values "
                            "(a running mean of squared gradients is >= 0)")
            elif isinstance(value, bool) or not isinstance(value, int | float) or not (
                    math.isfinite(value)):
                return f"{key} of parameter {pid} is {value!r}, not a tensor or a finite number"
    return None


#: Adam's optimizer state of running means of squared gradients (never negative)
_SQUARES = ("exp_avg_sq", "max_exp_avg_sq")


def _amsgrad(opt: torch.optim.Optimizer, p: torch.Tensor) -> bool:
    return any(g.get("amsgrad") for g in opt.param_groups if any(q is p for q in g["params"]))


def _hyperparameter_problem(mine, theirs) -> str | None:
    """How a saved hyperparameter (lr, betas, eps, flags) fails to be like ``mine``."""
    def finite(v) -> bool:
        if isinstance(v, torch.Tensor):
            return v.numel() == 1 and bool(torch.isfinite(v.float()).all())
        return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)

    if isinstance(mine, bool) or mine is None:
        return None if theirs is None or isinstance(theirs, bool) else f"is {theirs!r}"
    if isinstance(mine, int | float | torch.Tensor):
        return None if finite(theirs) and float(theirs) >= 0 else \
            f"is {theirs!r}, not a finite number >= 0"
    if isinstance(mine, tuple | list):
        if not isinstance(theirs, tuple | list) or len(theirs) != len(mine) or not all(
                finite(v) for v in theirs):
            return f"is {theirs!r}, not {len(mine)} finite numbers"
    return None


def _match_layouts(optimizer: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (Adam's moments) its parameter's memory layout.

    A checkpoint keeps the layout it was trained in (channels_last on CUDA), and a run may
    resume in the other one; fused Adam reads parameter and state as flat memory, so a
    state tensor in another layout would be updated against the wrong elements."""
    for param, st in optimizer.state.items():
        for key, value in st.items():
            if (isinstance(value, torch.Tensor) and value.shape == param.shape
                    and value.stride() != param.stride()):
                st[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)


@dataclasses.dataclass
class _Live:
    """What one ``fit`` call trains and reports with."""

    model: GenerativeModel
    optimizers: dict
    ema: EMA | None
    noise: torch.Generator
    logger: Logger
    bar: Progress
    evaluator: object | None
    first_step: int  # this call's first step pays compilation and warm-up
    last_saved: int  # the step of the last checkpoint written
    grid_step: int | None = None  # the step of the last sample grid logged
    clock: TrainingClock = dataclasses.field(default_factory=TrainingClock)
    window: LogWindow = dataclasses.field(default_factory=LogWindow)

    def close(self) -> None:
        self.bar.close()
        self.logger.close()


__all__ = ["CHECKPOINT_FILE", "EVAL_FILE", "LOSSES_FILE", "MODEL_FILE", "RUN_FILE",
           "TrainConfig", "Trainer", "load_run", "run_info", "resolve_device", "ZooError"]
