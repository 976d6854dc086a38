"""The gradient worker: a model replica and this worker's shards, as a plain object.

`GradientWorker` knows nothing of Ray; the driver wraps it with `ray.remote`, which is why
its methods take and return plain arrays (the object store hands the parameter slices over
zero-copy). It keeps no training state between calls: everything a step needs arrives as
arguments or is a pure function of (seed, epoch, step, worker), so a restarted worker
recomputes exactly what the dead one would have. (The one exception is the error-feedback
residual of "topk" gradient compression, see compression.py.)
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from distnet.config import JobConfig
from distnet.distributed import mesh, sampling
from distnet.distributed.compression import Encoder, Sparse, nbytes
from distnet.fpenv import flush_denormals
from distnet.models import build_model


@dataclass
class WorkerReport:
    """What one worker step produced besides its gradient."""

    worker: int
    loss: float
    num_samples: int
    compute_s: float
    sent_bytes: int = 0  # gradient bytes this step puts on the wire (after compression)
    started: float = 0.0  # time.time() when the step began here (for the --trace timeline)
    data_s: float = 0.0  # of compute_s: parameters copied in, the minibatch read and prepared
    forward_s: float = 0.0  # of compute_s, after data_s: the forward pass up to the loss


class GradientWorker:
    """Computes gradients (and accuracies) on worker `index` of `num_workers`'s shards;
    `delay_s` is a test's straggler: a sleep in every gradient step (see hooks.py)."""

    def __init__(
        self,
        job: JobConfig,
        index: int,
        num_workers: int,
        batch: int,
        bounds: list[tuple[int, int]],
        delay_s: float = 0.0,
    ):
        from distnet.data.reader import open_split  # pyarrow only where it is used

        self.job, self.index, self.num_workers, self.batch = job, index, num_workers, batch
        self.bounds = bounds  # the parameter servers' slices of the flat vector
        self.delay_s = delay_s
        self._open_split = open_split
        # Opened (and checked) on first use, in a method: a bad shard is then the call's
        # DataError, which the driver reports in one line, not a dead actor's traceback.
        self._splits: dict = {}
        self.model = build_model(job.model, seed=job.seed)
        # Conv nets take (B, 3, 32, 32) images, fully connected nets (B, 3072) rows: the
        # reader hands out either (the same bytes) and flips and crops keep the layout.
        self.layout = "nchw" if len(self.model.input_shape) == 3 else "flat"
        self._X = None  # reused minibatch buffer
        self._grads: dict = {}  # reused gradient buffers (what is returned is copied out by Ray)
        self.encoder = Encoder(job.train.compression, job.train.topk_ratio)
        self.computed = 0  # gradients computed by this process (work done, kept or dropped)
        self.mesh = mesh.WorkerEnd()  # the mesh transport's connections, once connected

    def pid(self) -> int:
        return os.getpid()

    def num_rows(self) -> int:
        """This worker's training rows (opening its train shards, see `_split`)."""
        return self._split("train").num_rows

    def gradients_computed(self) -> int:
        """How many gradients this process has computed (restarts count from zero)."""
        return self.computed

    def compute_gradients(self, epoch: int, step_in_epoch: int, bn_state, *param_slices):
        """Loss and flat gradient on this worker's minibatch of (epoch, step_in_epoch).

        Returns one gradient slice per parameter server, then (with batchnorm) this
        worker's updated running statistics, then a WorkerReport.
        """
        return self._compute(self.index, self.batch, epoch, step_in_epoch, bn_state, param_slices)

    def compute_blocks(
        self, blocks: list[int], epoch: int, step_in_epoch: int, bn_state, *param_slices
    ):
        """Elastic training (elastic.py): `compute_gradients` of each of `blocks`, exactly as
        worker b of a fixed run of job.train.workers workers computes it (its rows, batch,
        batchnorm statistics, augmentation and dropout draws), the blocks' outputs one
        after another."""
        sizes = self.job.train.worker_batch_sizes()
        outputs = []
        for slot, block in enumerate(blocks):
            outputs += self._compute(
                block, sizes[block], epoch, step_in_epoch, bn_state, param_slices, slot
            )
        return tuple(outputs)

    def _compute(
        self, block, batch, epoch, step_in_epoch, bn_state, param_slices, slot: int = 0
    ) -> tuple:
        """compute_gradients as worker `block` with its `batch`; `slot`: which reused
        gradient buffer (one per block of a call: Ray copies the outputs out after it)."""
        start, started = time.perf_counter(), time.time()
        flush_denormals()  # per call: MXCSR is per thread, and Ray may call from any thread
        self._load(param_slices, bn_state)
        seed, train = self.job.seed, self._split("train", block)
        idx = sampling.batch_indices(seed, epoch, step_in_epoch, block, train.num_rows, batch)
        images, y = train.take(idx)
        aug = self.job.data
        if aug.augment_flip or aug.augment_crop_padding:
            from distnet.data.augment import augment

            rng = sampling.augment_rng(seed, epoch, step_in_epoch, block)
            images = augment(images, rng, aug.augment_flip, aug.augment_crop_padding)
        self._X = train.normalize(images, out=self._buffer(len(idx)))
        data_end = time.perf_counter()
        if self.model.use_dropout:
            self.model.dropout_param["seed"] = sampling.dropout_seed(
                seed, epoch, step_in_epoch, block
            )
        loss, grads = self.model.loss(self._X, y, grads_out=self._grads.get(slot))
        forward_s = self.model.forward_end - data_end
        self._grads[slot] = grads
        if self.delay_s:
            time.sleep(self.delay_s)
        flat = grads.vector
        outputs = [self.encoder.encode(k, flat[a:b]) for k, (a, b) in enumerate(self.bounds)]
        sent = sum(nbytes(out) for out in outputs)
        if bn_state is not None:
            outputs.append(self.model.get_bn_state())
        report = WorkerReport(
            block,
            float(loss),
            len(idx),
            time.perf_counter() - start,
            sent,
            started,
            data_s=data_end - start,
            forward_s=forward_s,
        )
        self.computed += 1
        return (*outputs, report)

    # --- the mesh transport (mesh.py) ------------------------------------------------
    def mesh_connect(self, generation: int, token: bytes, addresses: list) -> None:
        """Connect to every parameter server at its (ip, port), in server order, offering
        each a shared region that fits its parameter slice (and server 0 the statistics)."""
        itemsize, bn_bytes = self.model.params.vector.itemsize, self.model.get_bn_state().nbytes
        shared = [
            (b - a) * itemsize + (k == 0) * bn_bytes + 2 * mesh.ALIGN
            for k, (a, b) in enumerate(self.bounds)
        ]
        use = self.job.train.shared_memory
        self.mesh.connect(generation, token, self.index, addresses, shared if use else None)

    def mesh_step(self, generation: int, epoch: int, step_in_epoch: int, step: int):
        """One synchronous step over the mesh: the parameters (and batchnorm statistics)
        from every server straight into the model, `compute_gradients`' computation, then
        gradient slice k (and the statistics) to server k. Returns the WorkerReport. Any
        failure closes the mesh, so that the servers fail at once too."""
        self.mesh.check(generation)
        try:
            vector, bn_state = self.model.params.vector, self.model.get_bn_state()
            with_bn = bn_state.size > 0
            for k, ((a, b), conn) in enumerate(zip(self.bounds, self.mesh.conns, strict=True)):
                mesh.recv_array(conn, step, vector.dtype, b - a, out=vector[a:b])
                if k == 0 and with_bn:
                    mesh.recv_array(conn, step, bn_state.dtype, bn_state.size, out=bn_state)
            *outputs, report = self._compute(
                self.index,
                self.batch,
                epoch,
                step_in_epoch,
                bn_state if with_bn else None,
                None,
            )
            for k, conn in enumerate(self.mesh.conns):
                _send_payload(conn, step, outputs[k])
                if k == 0 and with_bn:
                    mesh.send_array(conn, step, outputs[-1])
            return report
        except BaseException:
            self.mesh.close()
            raise

    def mesh_steps(self, generation: int, positions: list[tuple[int, int, int]]) -> list:
        """`mesh_step` of each (epoch, step_in_epoch, step), in order: their reports."""
        return [self.mesh_step(generation, *position) for position in positions]

    def evaluate(
        self,
        split: str,
        max_samples: int | None,
        epoch: int,
        bn_state,
        *param_slices,
        block: int | None = None,
    ) -> tuple[int, int]:
        """(correct, total) of the model on this worker's share of `split` (elastic
        training: the share of worker `block`).

        `max_samples` (a per-worker count) evaluates a random subset, fixed per epoch.
        """
        index = self.index if block is None else block
        self._load(param_slices, bn_state)
        data = self._split(split, index)
        rows = np.arange(data.num_rows)
        if max_samples is not None and max_samples < data.num_rows:
            rows = sampling.eval_subsample(self.job.seed, epoch, index, data.num_rows, max_samples)
        correct = 0
        step = self.job.train.eval_batch_size
        for start in range(0, len(rows), step):
            X, y = data.batch(rows[start : start + step])
            correct += int(np.sum(np.argmax(self.model.loss(X), axis=1) == y))
        return correct, len(rows)

    def _split(self, name: str, index: int | None = None):
        """Worker `index`'s (default: this worker's) share of split `name`, opened (shard
        checksums checked when the job verifies) on first use; raises DataError naming a
        bad file."""
        key = (name, self.index if index is None else index)
        if key not in self._splits:
            self._splits[key] = self._open_split(
                self.job.data.path,
                name,
                key[1],
                self.num_workers,
                verify=self.job.data.verify,
                layout=self.layout,
            )
        return self._splits[key]

    def _load(self, param_slices, bn_state) -> None:
        """Parameters (None: received into the model already) and batchnorm statistics."""
        vector = self.model.params.vector
        for (a, b), values in zip(self.bounds, param_slices or (), strict=param_slices is not None):
            vector[a:b] = values
        if bn_state is not None:
            self.model.set_bn_state(bn_state)

    def _buffer(self, rows: int) -> np.ndarray:
        if self._X is None or self._X.shape[0] != rows:
            return None
        return self._X


def _send_payload(conn, step: int, payload) -> None:
    """A gradient slice as encoded: one dense frame, or top-k's indices then values."""
    if isinstance(payload, Sparse):
        mesh.send_array(conn, step, payload.indices)
        mesh.send_array(conn, step, payload.values)
    else:
        mesh.send_array(conn, step, payload)
