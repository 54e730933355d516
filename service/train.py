"""`python -m service.train --model zfnet --dataset digits --epochs 3 [knob=value ...]`: train
one configuration without Ray, a line per epoch (service.training.loop.fit)."""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import ValidationError

from service import cli
from service.cli import Exit
from service.config.data import DataConfig
from service.config.train import TrainConfig
from service.training.loop import fit


def _parse_assignments(pairs: list[str]) -> dict[str, Any]:
    flat = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"{pair!r}: expected key=value (e.g. conv1_kernel=7, lrn=false)")
        flat[key.strip()] = yaml.safe_load(value)  # 7 -> int, false -> bool, [1, 2] -> list
    return flat


def main(argv: list[str] | None = None) -> int:
    """`python -m service.train --model zfnet --dataset digits --epochs 3 [knob=value ...]`."""
    parser = cli.parser("train", __doc__)
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--root", help="dataset directory (torchvision datasets, imagefolder)")
    parser.add_argument("--download", action="store_true", help="download a missing dataset")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, help="default: TrainConfig's (64)")
    parser.add_argument("--lr", type=float, help="default: TrainConfig's (0.05)")
    parser.add_argument("--optimizer", choices=["sgd", "adamw"])
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--checkpoint-dir", help="keep each epoch's checkpoint here")
    parser.add_argument("--resume", help="checkpoint directory to continue from")
    parser.add_argument("--json", action="store_true", help="print each epoch as a JSON line")
    parser.add_argument("settings", nargs="*", metavar="key=value",
                        help="model knobs or training/data fields, e.g. conv1_kernel=7 lrn=false")
    args = parser.parse_args(argv)
    try:
        given = {"batch_size": args.batch_size, "lr": args.lr, "optimizer": args.optimizer,
                 "seed": args.seed, "device": args.device}
        cfg = TrainConfig(model=args.model, epochs=args.epochs,
                          data=DataConfig(dataset=args.dataset, root=args.root,
                                          download=args.download),
                          **{k: v for k, v in given.items() if v is not None})
        cfg = cfg.with_overrides(_parse_assignments(args.settings))
    except (ValidationError, ValueError) as err:
        print(f"error: {_one_line(err)}")
        return Exit.BAD_INPUT

    def show(metrics: dict[str, Any], _ckpt: str | None) -> None:
        if args.json:
            print(json.dumps(metrics), flush=True)
            return
        print(f"epoch {metrics['epoch']:3d}  train_loss {metrics['train_loss']:.4f}  "
              f"val_loss {metrics['val_loss']:.4f}  val_acc {metrics['val_acc']:.4f}  "
              f"lr {metrics['lr']:.5f}  {metrics['epoch_s']:.2f}s  "
              f"{metrics['images_per_s']:.0f} img/s  {metrics['status']}", flush=True)

    try:
        final = fit(cfg, show, resume_from=args.resume, checkpoint_root=args.checkpoint_dir)
    except (ValueError, FileNotFoundError) as err:  # data problems (DataError is a ValueError)
        print(f"error: {_one_line(err)}")
        return Exit.BAD_INPUT
    return Exit.DIVERGED if final.get("status") == "diverged" else Exit.OK


def _one_line(err: Exception) -> str:
    if isinstance(err, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}"
                         for e in err.errors())
    return str(err)


if __name__ == "__main__":
    raise SystemExit(main())
