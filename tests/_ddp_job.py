"""The 2-process job of ``tests/test_distributed.py``, launched as
``torchrun --nproc_per_node=2 tests/_ddp_job.py OUT_DIR``.

torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; ``fit``
detects them, initialises gloo, wraps the model in DistributedDataParallel and shards the data.
Each rank runs every scenario and saves what it saw to ``OUT_DIR/rank{r}.pt``; the test compares.
(Not collected by pytest: the name does not start with ``test_``.)
"""
import contextlib
import io
import os
import sys
from pathlib import Path

import torch

N_TRAIN = 1256  # even: both ranks get 628 images, no image is repeated to pad a rank
# A 6-epoch recipe on which the smoke ViT at 16 px (4 tokens of 8 x 8) reaches ~90% test accuracy.
VIT_CFG = dict(epochs=6, batch_size=64, lr=1e-2, warmup_epochs=1, progress=False, seed=0)


def digits(n=N_TRAIN, augment=False):
    from survey_lib.data import DigitsDataset

    ds = DigitsDataset(train=True, img_size=16, augment=augment)
    ds.images, ds.targets = ds.images[:n], ds.targets[:n]
    return ds, DigitsDataset(train=False, img_size=16)


def vit(seed=0):
    from survey_lib.recipes.vit import vit_for_profile
    from survey_lib.train import seed_everything

    seed_everything(seed)
    return vit_for_profile("smoke", img_size=16)


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    import survey_lib.train as T
    from survey_lib import distributed as D
    from survey_lib.train import TrainConfig, fit

    rank = int(os.environ["RANK"])
    out = {"rank_before_init": D.get_rank(), "world_before_init": D.get_world_size()}
    saves = []
    real_save = T.save_checkpoint
    T.save_checkpoint = lambda path, state: (saves.append(str(path)), real_save(path, state))[1]

    # 1. the ViT on the digits, with a checkpoint: fit initialises the process group itself
    train, test = digits()
    model = vit()
    h = fit(model, train, test, TrainConfig(**VIT_CFG, checkpoint_path=str(out_dir / "vit.pt")))
    out.update(backend=torch.distributed.get_backend(), world=D.get_world_size(), rows=h.rows,
               step_losses=h.step_losses, state=_state(model), saves=list(saves),
               mean_of_ranks=D.all_reduce_mean(float(rank)), main=D.is_main_process())

    # 2. a global batch size that does not split over the ranks is refused, on every rank alike
    try:
        fit(vit(), train, None, TrainConfig(**{**VIT_CFG, "batch_size": 63}))
    except ValueError as e:
        out["batch_error"] = str(e)

    # 3. resume: a run interrupted after its first epoch (its second evaluation raises on every rank)
    #    then resumed must repeat the uninterrupted run's losses, both ranks' augmentation included
    small, _ = digits(n=256, augment=True)
    cfg = dict(epochs=3, batch_size=64, lr=3e-3, progress=False, seed=1)
    full = fit(vit(), small, None, TrainConfig(**cfg), eval_fn=lambda m: {})

    class Stop(Exception):
        pass

    calls = {"n": 0}

    def stop_at_second_eval(m):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Stop
        return {}

    ckpt = out_dir / "interrupted.pt"
    try:
        fit(vit(), small, None, TrainConfig(**cfg, checkpoint_path=str(ckpt)), eval_fn=stop_at_second_eval)
    except Stop:
        pass
    # each rank starts from a different random model: everything must come from rank 0's checkpoint
    resumed = fit(vit(seed=100 + rank), small, None, TrainConfig(**cfg, checkpoint_path=str(ckpt)), eval_fn=lambda m: {})
    out.update(full_losses=full.step_losses, resumed_losses=resumed.step_losses)

    # 4. DINO: a wrapper with an EMA teacher (on_train_step_end), a loss whose centre is all-reduced,
    #    BatchNorm in the head, multi-crop batches from a DataLoader with its own collate_fn
    from survey_lib.data import DigitsDataset
    from survey_lib.models.vit import VisionTransformer
    from survey_lib.recipes.dino import DINO_CONFIGS, digits_loader
    from survey_lib.objectives.dino import build_dino, dino_step
    from survey_lib.train import seed_everything

    dc = DINO_CONFIGS["smoke"]
    seed_everything(0)
    dino = build_dino(VisionTransformer(**dc["vit"]), dc["vit"]["embed_dim"], 2, n_local_crops=dc["crops"]["n_local_crops"],
                      momentum_teacher=dc["momentum_teacher"], **dc["head"], **dc["loss"])
    base = torch.utils.data.Subset(DigitsDataset(train=True, img_size=32), range(128))
    dh = fit(dino, digits_loader(base, dc["crops"], 64, seed=0), config=TrainConfig(epochs=2, batch_size=64, progress=False),
             step_fn=dino_step)
    out.update(dino_rows=dh.rows, dino_teacher=_state(dino.teacher), dino_student=_state(dino.student),
               dino_center=dino.loss.center.clone(), dino_steps=int(dino.step_count))

    # 5. the command line: `survey train vit --profile smoke` prints on rank 0 only, closes the group
    from survey_lib.cli import main as survey

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = survey(["train", "vit", "--profile", "smoke", "--checkpoint", str(out_dir / "cli.pt")])
    out.update(cli_code=code, cli_stdout=printed.getvalue(), cli_group_closed=not torch.distributed.is_initialized())
    torch.save(out, out_dir / f"rank{rank}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
